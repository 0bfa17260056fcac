// Rate limits shared by relay replicas through a real Redis (Debian's redis-server, started on a
// free loopback port and stopped by this test).

import { request } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import { startStandIn, type StandIn } from "../helpers/relay-gateway-stand-in.js";
import { startTestRelay, type TestRelay } from "../helpers/relay-harness.js";
import { until } from "../helpers/wait.js";

const OHTTP_REQ = "message/ohttp-req";
let redis: TestRedis;

beforeAll(async () => {
  redis = await startRedis({ volatile: true });
});
afterAll(() => redis.stop());

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function replica(gw: StandIn, rateLimit: Record<string, unknown>): Promise<TestRelay> {
  const r = await startTestRelay({ routes: [{ path: "/gw", gateway: `${gw.url}/gateway` }], rateLimit: { store: redis.url, ...rateLimit } });
  cleanups.push(() => r.stop());
  // Ready once Redis is connected.
  await until(async () => {
    const res = await request(`${r.url}/readyz`);
    await res.body.dump();
    return res.statusCode === 200;
  }, "the relay to be ready");
  return r;
}

const post = (url: string) => request(`${url}/gw`, { method: "POST", body: "x", headers: { "content-type": OHTTP_REQ } });

describe("relay rate limit in Redis", () => {
  it("shares counts between replicas and answers 429 with Retry-After", async () => {
    const gw = await startStandIn();
    cleanups.push(() => gw.close());
    const rl = { perClientPerWindow: 2, windowMs: 60_000, keySecret: "replicas-share-this", redisPrefix: `t1:${Date.now()}:` };
    const a = await replica(gw, rl);
    const b = await replica(gw, rl);
    expect((await post(a.url)).statusCode).toBe(200);
    expect((await post(b.url)).statusCode).toBe(200);
    const third = await post(a.url);
    expect(third.statusCode).toBe(429);
    const retryAfter = Number(third.headers["retry-after"]);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(await third.body.json()).toMatchObject({ code: "HTTP_ERR_RATE_LIMITED" });
    expect((await post(b.url)).statusCode).toBe(429);
    expect(gw.requests).toHaveLength(2);
  });

  it("stores no client address in Redis, and keys expire with their window", async () => {
    const gw = await startStandIn();
    cleanups.push(() => gw.close());
    const prefix = `t2:${Date.now()}:`;
    const a = await replica(gw, { perClientPerWindow: 5, windowMs: 60_000, keySecret: "s", redisPrefix: prefix });
    await (await post(a.url)).body.dump();
    const keys = await redis.command(`KEYS ${prefix}*`);
    expect(keys).toContain(prefix);
    expect(keys).not.toContain("127.0.0.1");
    const key = /(t2:\S+)/.exec(keys)![1]!;
    const ttl = Number(/:(-?\d+)/.exec(await redis.command(`PTTL ${key}`))![1]);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(61_000);
  });

  it("lets requests through when Redis goes away, and reports not ready", async () => {
    const gw = await startStandIn();
    cleanups.push(() => gw.close());
    const a = await replica(gw, { perClientPerWindow: 1, windowMs: 60_000, keySecret: "s", redisPrefix: `t3:${Date.now()}:` });
    await redis.stop();
    try {
      for (let i = 0; i < 3; i++) expect((await post(a.url)).statusCode).toBe(200);
      const ready = await request(`${a.url}/readyz`);
      expect(ready.statusCode).toBe(503);
      expect(await ready.body.json()).toMatchObject({ failing: ["rateLimitStore"] });
      const metrics = await (await request(`${a.url}/metrics`)).body.text();
      expect(metrics).toMatch(/veil_relay_rate_limit_store_errors_total\{[^}]*\} [1-9]/);
    } finally {
      await redis.restart();
    }
  });
});
