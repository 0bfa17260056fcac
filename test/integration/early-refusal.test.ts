// An upload the gateway refuses before reading it (413: its Content-Length is over the gateway's
// limits.maxRequestBytes but within the relay's) reaches the client as the gateway's 413 problem
// document, every time. The gateway answers as soon as it has the head, while the relay is still
// sending the body; closing the connection right away (what node:http does after Fastify's
// Connection: close) leaves unread bytes, and the kernel's reset then often destroyed the answer
// before the relay had read it: the relay's write failed (EPIPE) and the client got a 502
// RELAY_ERR_UPSTREAM_FAILED (12 of 30 uploads of 4 MiB, measured). The gateway now closes in
// stages (server/lifecycle.ts, lingerOnClose). Real processes (needs a built dist/), so that relay
// and gateway run in their own event loops as deployed.

import { mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeKeyFile } from "../../gateway/key-file.js";
import { makeKeyData } from "../helpers/gateway-fixture.js";
import { killAllVeilChildren, spawnVeil, type VeilChild } from "../helpers/veil-child.js";

const UPLOADS = 16;
const BODY = Buffer.alloc(4 * 1024 * 1024, 7);

const dir = mkdtempSync(join(tmpdir(), "veil-early-refusal-"));
let relay: VeilChild;
let gateway: VeilChild;

beforeAll(async () => {
  const keyFile = join(dir, "gateway-keys.json");
  writeKeyFile(keyFile, (await makeKeyData([{ keyId: 1 }])).data);
  gateway = await spawnVeil("gateway", join(dir, "gateway.json"), {
    listen: { host: "127.0.0.1", port: 0 },
    keys: keyFile,
    policy: "targets-only",
    targets: { "https://t.example": "http://127.0.0.1:9" },
    tokens: { required: false },
    limits: { maxRequestBytes: 1024 * 1024 },
  });
  relay = await spawnVeil("relay", join(dir, "relay.json"), {
    listen: { host: "127.0.0.1", port: 0 },
    routes: [{ path: "/gw", gateway: `${gateway.url}/gateway` }],
    limits: { maxRequestBytes: 16 * 1024 * 1024 },
    rateLimit: { perClientPerWindow: 0 },
  });
}, 60_000);

afterAll(async () => {
  await killAllVeilChildren();
  rmSync(dir, { recursive: true, force: true });
});

function post(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "POST", headers: { "content-type": "message/ohttp-req", "content-length": BODY.length } }, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end(BODY);
  });
}

describe("an upload the gateway refuses by its declared size", () => {
  it("reaches the client through the relay as the gateway's 413, every time", async () => {
    const answers: { status: number; body: string }[] = [];
    for (let i = 0; i < UPLOADS; i++) answers.push(await post(`${relay.url}/gw`));
    for (const a of answers) {
      expect(a.status).toBe(413);
      expect(JSON.parse(a.body)).toMatchObject({ status: 413, code: "HTTP_ERR_TOO_LARGE" });
    }
    expect(relay.child.exitCode).toBeNull();
    expect(gateway.child.exitCode).toBeNull();
  }, 60_000);

  it("is answered by the gateway with its 413 and an orderly close while the body is still coming", async () => {
    const socket = connect({ port: gateway.port, host: "127.0.0.1", allowHalfOpen: true });
    let received = "";
    socket.on("data", (d: Buffer) => (received += d.toString()));
    const closed = new Promise<{ error: string | undefined }>((resolve) => {
      let error: string | undefined;
      socket.on("error", (e: NodeJS.ErrnoException) => (error = e.code));
      socket.on("close", () => resolve({ error }));
    });
    const ended = new Promise<void>((resolve) => socket.once("end", resolve));
    socket.write(`POST /gateway HTTP/1.1\r\nHost: gw\r\nContent-Type: message/ohttp-req\r\nContent-Length: ${BODY.length}\r\n\r\n`);
    // The answer (and the gateway's FIN) comes while the body is still being sent.
    socket.write(BODY.subarray(0, 64 * 1024));
    await ended;
    expect(received).toMatch(/^HTTP\/1\.1 413 /);
    expect(received).toContain('"code":"HTTP_ERR_TOO_LARGE"');
    // The gateway still reads what follows: more of the body, then our close, without a reset.
    socket.write(BODY.subarray(64 * 1024, 1024 * 1024));
    socket.end();
    expect((await closed).error).toBeUndefined();
  });
});
