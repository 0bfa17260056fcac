// `node bin/veil.js relay --config FILE` as operators run it (needs `npm run build` first).

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startStandIn, type StandIn } from "../helpers/relay-gateway-stand-in.js";

const VEIL = join(import.meta.dirname, "../../bin/veil.js");
let dir = "";
let gw: StandIn;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "veil-relay-cli-"));
  gw = await startStandIn();
});
afterAll(async () => {
  await gw.close();
  rmSync(dir, { recursive: true, force: true });
});

function writeConfig(name: string, config: unknown): string {
  const file = join(dir, name);
  writeFileSync(file, JSON.stringify(config));
  return file;
}

describe("veil relay", () => {
  it("relays with the issue's config shape and stops cleanly on SIGTERM", async () => {
    const file = writeConfig("relay.json", {
      listen: { host: "127.0.0.1", port: 0 },
      routes: [{ path: "/leader-gateway", gateway: `${gw.url}/gateway`, keys: `${gw.url}/ohttp-keys` }],
    });
    const child = spawn(process.execPath, [VEIL, "relay", "--config", file], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no start: ${out}`)), 20_000);
      child.stdout.on("data", (c: Buffer) => {
        out += c.toString();
        const m = /"url":"(http:\/\/[^"]+)"[^\n]*relay listening/.exec(out);
        if (m !== null) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
      child.stderr.on("data", (c: Buffer) => (out += c.toString()));
    });
    const res = await request(`${url}/leader-gateway`, { method: "POST", body: "cli", headers: { "content-type": "message/ohttp-req" } });
    expect(res.statusCode).toBe(200);
    expect(await res.body.text()).toBe("res:cli");
    const keys = await request(`${url}/leader-gateway/ohttp-keys`);
    expect(keys.statusCode).toBe(200);
    await keys.body.dump();
    const code = await new Promise<number | null>((resolve) => {
      child.once("exit", (c) => resolve(c));
      child.kill("SIGTERM");
    });
    expect(code).toBe(0);
    // Lines are batched: everything is written by the time the process exits.
    expect(out).toContain('"route":"/leader-gateway","method":"POST","status":200,"outcome":"forwarded"');
  });

  it("prints the effective config with secrets redacted", () => {
    const file = writeConfig("secret.json", {
      routes: [{ path: "/gw", gateway: "https://gw.example/gateway", authHeader: { name: "x-relay-auth", value: "operator-secret" } }],
    });
    const r = spawnSync(process.execPath, [VEIL, "relay", "--config", file, "--print-config"], { encoding: "utf8", env: { ...process.env, VEIL_RELAY_LISTEN_PORT: "9999" } });
    expect(r.status).toBe(0);
    const printed = JSON.parse(r.stdout) as { listen: { port: number }; routes: { authHeader: { value: string } }[] };
    expect(printed.listen.port).toBe(9999);
    expect(printed.routes[0]!.authHeader.value).toBe("[redacted]");
    expect(r.stdout).not.toContain("operator-secret");
  });

  it("refuses an invalid config with a message naming the field", () => {
    const file = writeConfig("bad.json", { routes: [{ path: "/gw", gatewy: "http://x/" }] });
    const r = spawnSync(process.execPath, [VEIL, "relay", "--config", file], { encoding: "utf8" });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("routes[0].gatewy");
  });
});
