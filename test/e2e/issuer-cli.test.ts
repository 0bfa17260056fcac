// `node bin/veil.js issuer --config FILE` as an operator runs it (needs `npm run build`): the key
// file is created with mode 0600, an unsafe one is refused, the directory is served.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { tempDir } from "../helpers/issuer.js";

const VEIL = join(import.meta.dirname, "../../bin/veil.js");

function run(args: string[]): { child: ChildProcess; out: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [VEIL, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, out: () => out, exited };
}

async function waitFor(pred: () => boolean, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > until) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 50));
  }
}

let started: ChildProcess | undefined;
let tmp: ReturnType<typeof tempDir> | undefined;
afterEach(() => {
  if (started !== undefined && started.exitCode === null) started.kill("SIGTERM");
  started = undefined;
  tmp?.remove();
});

describe("veil issuer", () => {
  it("creates the key file 0600, serves the directory, and refuses the file once others can read it", async () => {
    tmp = tempDir();
    const keys = join(tmp.dir, "data", "issuer-keys.json");
    const config = join(tmp.dir, "issuer.json");
    writeFileSync(
      config,
      JSON.stringify({
        listen: { host: "127.0.0.1", port: 0 },
        name: "issuer.example",
        keys,
        tokenTypes: [2],
        keyLifetimeSec: 604800,
        attester: { credentials: ["client-credential-1"], tokensPerWindow: 100, windowSec: 86400 },
      }),
    );
    const first = run(["issuer", "--config", config]);
    started = first.child;
    await waitFor(() => /"msg":"issuer listening"/.test(first.out()));
    expect(statSync(keys).mode & 0o777).toBe(0o600);
    const url = /"url":"(http:\/\/[^"]+)"/.exec(first.out())![1]!;
    const res = await fetch(`${url}/.well-known/private-token-issuer-directory`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/private-token-issuer-directory");
    expect(first.out()).not.toContain("client-credential-1");
    first.child.kill("SIGTERM");
    expect(await first.exited).toBe(0);

    chmodSync(keys, 0o644);
    const second = run(["issuer", "--config", config]);
    started = second.child;
    expect(await second.exited).toBe(1);
    expect(second.out()).toMatch(/veil issuer: .*issuer-keys\.json: is accessible by group or others \(mode 644\); run: chmod 600/);
  });
});
