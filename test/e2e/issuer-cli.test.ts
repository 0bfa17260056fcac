// `node bin/veil.js issuer --config FILE` as an operator runs it (needs `npm run build`): the key
// file is created with mode 0600, an unsafe one is refused, the directory is served.
import { chmodSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { tempDir } from "../helpers/issuer.js";
import { startIssuerProcess, writeIssuerConfig } from "../helpers/issuer-process.js";
import { startVeil, stopAll } from "../helpers/veil-process.js";

let tmp: ReturnType<typeof tempDir> | undefined;
afterEach(async () => {
  await stopAll();
  tmp?.remove();
});

describe("veil issuer", () => {
  it("creates the key file 0600, serves the directory, and refuses the file once others can read it", async () => {
    tmp = tempDir();
    const keys = join(tmp.dir, "data", "issuer-keys.json");
    const config = writeIssuerConfig(tmp.dir, {
      keys,
      tokenTypes: [2],
      keyLifetimeSec: 604800,
      attester: { credentials: ["client-credential-1"], tokensPerWindow: 100, windowSec: 86400 },
    });
    const { issuer: first, url } = await startIssuerProcess(config);
    expect(statSync(keys).mode & 0o777).toBe(0o600);
    const res = await fetch(`${url}/.well-known/private-token-issuer-directory`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/private-token-issuer-directory");
    expect(first.stdout() + first.stderr()).not.toContain("client-credential-1");
    expect(await first.stop("SIGTERM")).toBe(0);

    chmodSync(keys, 0o644);
    const second = startVeil(["issuer", "--config", config]);
    expect(await second.exited).toBe(1);
    expect(second.stdout() + second.stderr()).toMatch(/veil issuer: .*issuer-keys\.json: is accessible by group or others \(mode 644\); run: chmod 600/);
  });
});
