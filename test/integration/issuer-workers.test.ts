// `veil issuer --workers 2` (needs a built dist/): the workers publish one directory (the primary
// owns the key file), and a credential's quota holds across workers, not per worker.

import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { afterAll, describe, expect, it } from "vitest";
import { fromBase64Url } from "../../core/bytes.js";
import { createTokenRequest, encodeTokenChallenge } from "../../core/privacypass/index.js";
import { logLine, startVeil, stopAll } from "../helpers/veil-process.js";

const dir = mkdtempSync(join(tmpdir(), "veil-issuer-workers-"));
afterAll(async () => {
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
});

describe("veil issuer --workers 2", () => {
  it("serves one directory from every worker and enforces a credential's quota across them", async () => {
    const config = join(dir, "issuer.json");
    const keys = join(dir, "issuer-keys.json");
    writeFileSync(config, JSON.stringify({ listen: { host: "127.0.0.1", port: 0 }, name: "issuer.example", keys, attester: { credentials: ["cred-1"], tokensPerWindow: 6 } }));
    const p = startVeil(["issuer", "--config", config, "--workers", "2"]);
    try {
      await p.waitFor('"msg":"all workers ready"');
      await p.waitFor('"msg":"issuer listening"');
      const url = logLine(p.stdout(), "issuer listening")!.url as string;
      expect(statSync(keys).mode & 0o777).toBe(0o600);

      // New connections, so the kernel spreads them over both workers.
      const directories = new Set<string>();
      for (let i = 0; i < 12; i++) {
        const r = await request(`${url}/.well-known/private-token-issuer-directory`, { reset: true });
        directories.add(await r.body.text());
      }
      expect(directories.size).toBe(1);
      const d = JSON.parse([...directories][0]!) as { "token-keys": { "token-type": number; "token-key": string; "not-before": number }[] };
      const now = Date.now() / 1000;
      const key = d["token-keys"].find((k) => k["token-type"] === 2 && k["not-before"] <= now)!;
      const challenge = encodeTokenChallenge({ tokenType: 2, issuerName: "issuer.example", redemptionContext: new Uint8Array(0), originInfo: [] });

      const statuses: number[] = [];
      for (let i = 0; i < 10; i++) {
        const { request: body } = await createTokenRequest(challenge, fromBase64Url(key["token-key"])!);
        const r = await request(`${url}/token-request`, {
          method: "POST",
          reset: true,
          headers: { "content-type": "application/private-token-request", authorization: "Bearer cred-1" },
          body: Buffer.from(body),
        });
        await r.body.dump();
        statuses.push(r.statusCode);
      }
      expect(statuses.filter((s) => s === 200)).toHaveLength(6);
      expect(statuses.filter((s) => s === 429)).toHaveLength(4);
    } finally {
      expect(await p.stop("SIGTERM")).toBe(0);
    }
  }, 120_000);
});
