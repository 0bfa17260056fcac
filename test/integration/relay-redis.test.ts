// Rate limits shared by relay replicas through a real Redis (Debian's redis-server, started on a
// free loopback port and stopped by this test).

import { spawn, type ChildProcess } from "node:child_process";
import { connect, createServer } from "node:net";
import { request } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startStandIn, type StandIn } from "../helpers/relay-gateway-stand-in.js";
import { startTestRelay, type TestRelay } from "../helpers/relay-harness.js";

const OHTTP_REQ = "message/ohttp-req";
let redis: ChildProcess | undefined;
let redisPort = 0;

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Sends one inline command to Redis and returns the raw reply. */
function redisCommand(line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(redisPort, "127.0.0.1");
    let out = "";
    s.on("data", (c: Buffer) => {
      out += c.toString();
      // Inline replies end with CRLF; arrays are short here.
      setTimeout(() => {
        s.destroy();
        resolve(out);
      }, 50);
    });
    s.on("error", reject);
    s.write(`${line}\r\n`);
  });
}

async function startRedis(): Promise<void> {
  redisPort = await freePort();
  redis = spawn("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  for (let i = 0; i < 100; i++) {
    try {
      if ((await redisCommand("PING")).startsWith("+PONG")) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("redis-server did not start");
}

function stopRedis(): Promise<void> {
  const r = redis;
  redis = undefined;
  if (r === undefined || r.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    r.once("exit", () => resolve());
    r.kill("SIGTERM");
  });
}

beforeAll(startRedis);
afterAll(stopRedis);

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function replica(gw: StandIn, rateLimit: Record<string, unknown>): Promise<TestRelay> {
  const r = await startTestRelay({ routes: [{ path: "/gw", gateway: `${gw.url}/gateway` }], rateLimit: { store: `redis://127.0.0.1:${redisPort}`, ...rateLimit } });
  cleanups.push(() => r.stop());
  // Ready once Redis is connected.
  for (let i = 0; i < 100; i++) {
    const res = await request(`${r.url}/readyz`);
    await res.body.dump();
    if (res.statusCode === 200) return r;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error("relay not ready");
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
    const keys = await redisCommand(`KEYS ${prefix}*`);
    expect(keys).toContain(prefix);
    expect(keys).not.toContain("127.0.0.1");
    const key = /(t2:\S+)/.exec(keys)![1]!;
    const ttl = Number(/:(-?\d+)/.exec(await redisCommand(`PTTL ${key}`))![1]);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(61_000);
  });

  it("lets requests through when Redis goes away, and reports not ready", async () => {
    const gw = await startStandIn();
    cleanups.push(() => gw.close());
    const a = await replica(gw, { perClientPerWindow: 1, windowMs: 60_000, keySecret: "s", redisPrefix: `t3:${Date.now()}:` });
    await stopRedis();
    try {
      for (let i = 0; i < 3; i++) expect((await post(a.url)).statusCode).toBe(200);
      const ready = await request(`${a.url}/readyz`);
      expect(ready.statusCode).toBe(503);
      expect(await ready.body.json()).toMatchObject({ failing: ["rateLimitStore"] });
      const metrics = await (await request(`${a.url}/metrics`)).body.text();
      expect(metrics).toMatch(/veil_relay_rate_limit_store_errors_total\{[^}]*\} [1-9]/);
    } finally {
      await startRedis();
    }
  });
});
