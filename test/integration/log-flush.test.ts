// A server stopped with SIGTERM right after answering writes every request's log line before it
// exits, although lines are buffered (server/logging.ts). A real `veil relay` process, a stand-in
// gateway behind it.

import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Pool } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { killAllVeilChildren, spawnVeil, type VeilChild } from "../helpers/veil-child.js";

const dir = mkdtempSync(join(tmpdir(), "veil-log-flush-"));
let stand: Server;
let standUrl: string;

beforeAll(async () => {
  // Answers every POST like a gateway would (the relay does not look inside).
  stand = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "message/ohttp-res", "content-length": "3" });
      res.end("abc");
    });
  });
  await new Promise<void>((resolve) => stand.listen(0, "127.0.0.1", resolve));
  standUrl = `http://127.0.0.1:${(stand.address() as AddressInfo).port}/gateway`;
});

afterAll(async () => {
  await killAllVeilChildren();
  await new Promise((r) => stand.close(r));
  rmSync(dir, { recursive: true, force: true });
});

/** Request lines and whether "stopped" was logged, from everything the child wrote. */
function logged(child: VeilChild): { requests: number; stopped: boolean } {
  const lines = child.output.join("").split("\n").filter((l) => l.startsWith("{"));
  const parsed = lines.map((l) => JSON.parse(l) as { msg?: string });
  return { requests: parsed.filter((l) => l.msg === "request").length, stopped: parsed.some((l) => l.msg === "stopped") };
}

describe("buffered request log lines", () => {
  it("are all written when the relay is stopped with SIGTERM right after its last answer", async () => {
    const relay = await spawnVeil("relay", join(dir, "relay.json"), {
      listen: { host: "127.0.0.1", port: 0 },
      routes: [{ path: "/gw", gateway: standUrl }],
      rateLimit: { perClientPerWindow: 0 },
    });
    const client = new Pool(relay.url, { connections: 8 });
    const n = 40;
    try {
      const answers = await Promise.all(
        Array.from({ length: n }, async () => {
          const res = await client.request({ method: "POST", path: "/gw", headers: { "content-type": "message/ohttp-req" }, body: "x".repeat(50) });
          await res.body.text();
          return res.statusCode;
        }),
      );
      expect(answers.every((s) => s === 200)).toBe(true);
      const exit = await relay.kill("SIGTERM");
      expect(exit.code).toBe(0);
      expect(logged(relay)).toEqual({ requests: n, stopped: true });
    } finally {
      await client.close();
    }
  });
});
