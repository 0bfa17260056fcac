// `node bin/veil.js keys ...` and `node bin/veil.js gateway --config FILE` as an operator runs them
// (needs `npm run build`): key file creation, serving, SIGHUP reload, refusals, SIGTERM.

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { decodeKeyConfigs } from "../../core/ohttp/index.js";
import { until } from "../helpers/wait.js";

const VEIL = new URL("../../bin/veil.js", import.meta.url).pathname;
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill("SIGKILL");
});

function veil(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [VEIL, ...args], { encoding: "utf8", timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Starts the gateway and waits for its "gateway listening" line; returns its URL. */
function startGateway(configFile: string): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(process.execPath, [VEIL, "gateway", "--config", configFile], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let out = "";
  return new Promise((resolve, reject) => {
    const onData = (b: Buffer) => {
      out += b.toString();
      const m = /"url":"(http:\/\/[^"]+)".*"msg":"gateway listening"/.exec(out);
      if (m !== null) resolve({ child, url: m[1]!, output: () => out });
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", (b: Buffer) => (out += b.toString()));
    child.once("exit", (code) => reject(new Error(`gateway exited with ${code}: ${out}`)));
  });
}

async function keyIds(url: string): Promise<number[]> {
  const res = await fetch(`${url}/ohttp-keys`);
  return decodeKeyConfigs(new Uint8Array(await res.arrayBuffer())).map((c) => c.keyId);
}

function config(dir: string, extra: Record<string, unknown> = {}): string {
  const file = join(dir, "gateway.json");
  writeFileSync(
    file,
    JSON.stringify({
      listen: { host: "127.0.0.1", port: 0 },
      keys: join(dir, "keys.json"),
      targets: { "https://leader.example": "http://127.0.0.1:9" },
      policy: "dap",
      tokens: { required: false },
      ...extra,
    }),
  );
  return file;
}

describe("veil keys and veil gateway on the command line", () => {
  it("serves the keys of a generated file and picks up a rotation on SIGHUP, then stops on SIGTERM", async () => {
    const dir = mkdtempSync(join(tmpdir(), "veil-cli-"));
    const keys = join(dir, "keys.json");
    expect(veil(["keys", "generate", "--out", keys]).status).toBe(0);
    expect(statSync(keys).mode & 0o777).toBe(0o600);
    const gw = await startGateway(config(dir));
    expect(await keyIds(gw.url)).toEqual([1]);
    expect(veil(["keys", "generate", "--out", keys]).status).toBe(0);
    gw.child.kill("SIGHUP");
    await until(() => gw.output().includes("key file reloaded"), "the key file to be reloaded");
    expect(await keyIds(gw.url)).toEqual([2]);
    const list = veil(["keys", "list", keys]);
    expect(list.stdout).toMatch(/^1\tx25519\tretired/m);
    expect(list.stdout).toMatch(/^2\tx25519\tactive/m);
    const exited = new Promise<number | null>((r) => gw.child.once("exit", r));
    gw.child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });

  it("refuses to start with a group-readable key file or a config with an unknown field", () => {
    const dir = mkdtempSync(join(tmpdir(), "veil-cli-"));
    const keys = join(dir, "keys.json");
    veil(["keys", "generate", "--out", keys]);
    chmodSync(keys, 0o644);
    const open = veil(["gateway", "--config", config(dir)]);
    expect(open.status).toBe(1);
    expect(open.stderr).toContain("chmod 600");
    chmodSync(keys, 0o600);
    const bad = veil(["gateway", "--config", config(dir, { polcy: "dap" })]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('did you mean "policy"');
  });
});
