// attester.store "redis://...": one count per (quota key, window) shared by every issuer process,
// on a real redis-server. Two `veil issuer` processes (needs a built dist/) share one quota of
// 150 under 400 concurrent token requests; Redis down fails closed (503); an issuer with another
// storeKeyFile is refused rather than counting apart.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromBase64Url } from "../../core/bytes.js";
import { createTokenRequest, encodeTokenChallenge } from "../../core/privacypass/index.js";
import { Attester } from "../../issuer/attester.js";
import { parseIssuerConfig } from "../../issuer/config.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import { startIssuerProcess, writeIssuerConfig } from "../helpers/issuer-process.js";
import { stopAll } from "../helpers/veil-process.js";
import { until } from "../helpers/wait.js";

const dir = mkdtempSync(join(tmpdir(), "veil-redis-quota-"));
let redis: TestRedis;

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  await stopAll();
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("attester.store redis://", () => {
  it("two veil issuer processes on one redis-server grant exactly 150 of 400 concurrent requests against a quota of 150", async () => {
    const storeKeyFile = join(dir, "attester-store.key");
    const config = writeIssuerConfig(dir, { attester: { credentials: ["cred-1"], tokensPerWindow: 150, windowSec: 3600, store: redis.url, storeKeyFile } });
    // The first creates the key file and the store key file; the second reads both.
    const { issuer: first, url: firstUrl } = await startIssuerProcess(config);
    const { issuer: second, url: secondUrl } = await startIssuerProcess(config);
    const urls = [firstUrl, secondUrl];

    const d = (await (await request(`${urls[0]}/.well-known/private-token-issuer-directory`)).body.json()) as {
      "token-keys": { "token-type": number; "token-key": string; "not-before": number }[];
    };
    const key = d["token-keys"].find((k) => k["token-type"] === 2 && k["not-before"] <= Date.now() / 1000)!;
    const challenge = encodeTokenChallenge({ tokenType: 2, issuerName: "issuer.example", redemptionContext: new Uint8Array(0), originInfo: [] });
    const bodies = await Promise.all(Array.from({ length: 400 }, async () => (await createTokenRequest(challenge, fromBase64Url(key["token-key"])!)).request));
    const agent = new Agent({ connections: 64 });
    try {
      const statuses = await Promise.all(
        bodies.map(async (body, i) => {
          const r = await request(`${urls[i % 2]}/token-request`, {
            method: "POST",
            dispatcher: agent,
            headers: { "content-type": "application/private-token-request", authorization: "Bearer cred-1" },
            body: Buffer.from(body),
          });
          await r.body.dump();
          return r.statusCode;
        }),
      );
      const tally: Record<number, number> = {};
      for (const s of statuses) tally[s] = (tally[s] ?? 0) + 1;
      expect(tally).toEqual({ 200: 150, 429: 250 });
      // Both processes issued some (the count really is shared, not one process doing all).
      const metrics = await Promise.all(urls.map(async (u) => (await request(`${u}/metrics`, { dispatcher: agent })).body.text()));
      const issued = metrics.map((m) => Number(/veil_issuer_tokens_issued_total\{token_type="blind_rsa_2048"[^}]*\} (\d+)/.exec(m)?.[1] ?? "0"));
      expect(issued[0]! + issued[1]!).toBe(150);
      expect(Math.min(...issued)).toBeGreaterThan(0);
      // Redis holds keyed hashes, never the credential.
      const stored = await redis.command("KEYS *");
      expect(stored).not.toContain("cred-1");
    } finally {
      await agent.close();
      expect(await first.stop("SIGTERM")).toBe(0);
      expect(await second.stop("SIGTERM")).toBe(0);
    }
  }, 120_000);

  it("fails closed with 503 while Redis is down, and counts again once it is back", async () => {
    await redis.command("FLUSHALL");
    const storeKeyFile = join(dir, "down.key");
    const config = parseIssuerConfig({ name: "i", attester: { credentials: ["c"], tokensPerWindow: 2, store: redis.url, storeKeyFile } }).attester;
    const a = new Attester(config);
    try {
      const c = await a.authenticate("Bearer c");
      expect((await a.reserve(c)).granted).toBe(1);
      await redis.stop();
      await expect(a.reserve(c)).rejects.toMatchObject({ code: "ISSUER_ERR_STORE_UNAVAILABLE", status: 503 });
      await redis.restart();
      // The client reconnects by itself (at most a second apart): wait for the first success.
      let granted = 0;
      await until(async () => {
        try {
          granted = (await a.reserve(c)).granted;
          return true;
        } catch (e) {
          expect(e).toMatchObject({ code: "ISSUER_ERR_STORE_UNAVAILABLE" });
          return false;
        }
      }, "the store to be reachable again");
      expect(granted).toBe(1);
    } finally {
      await a.close();
    }
  }, 30_000);

  it("refuses (503) an issuer whose storeKeyFile differs from the one the store was first used with", async () => {
    await redis.command("FLUSHALL");
    const make = (file: string): Attester =>
      new Attester(parseIssuerConfig({ name: "i", attester: { credentials: ["c"], store: redis.url, storeKeyFile: join(dir, file) } }).attester);
    const a = make("one.key");
    const b = make("two.key");
    try {
      await a.reserve(await a.authenticate("Bearer c"));
      await expect(b.reserve(await b.authenticate("Bearer c"))).rejects.toMatchObject({ code: "ISSUER_ERR_STORE_UNAVAILABLE" });
      await a.reserve(await a.authenticate("Bearer c"));
    } finally {
      await a.close();
      await b.close();
    }
  });
});
