import { describe, expect, it } from "vitest";
import { MemoryRateLimiter, RedisRateLimiter, clientKey } from "../../../relay/rate-limit.js";
import type { Redis } from "ioredis";

describe("clientKey", () => {
  it("keeps IPv4 addresses and unwraps IPv4-mapped IPv6", () => {
    expect(clientKey("192.0.2.7", 64)).toBe("192.0.2.7");
    expect(clientKey("::ffff:192.0.2.7", 64)).toBe("192.0.2.7");
  });

  it("counts IPv6 clients per prefix", () => {
    const a = clientKey("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64);
    const b = clientKey("2001:db8:1:2::1", 64);
    const c = clientKey("2001:db8:1:3::1", 64);
    expect(a).toBe("2001:db8:1:2::/64");
    expect(b).toBe(a);
    expect(c).not.toBe(a);
    expect(clientKey("2001:db8:1:2:aaaa::1", 48)).toBe("2001:db8:1::/48");
    expect(clientKey("2001:db8::1", 128)).toBe("2001:db8::1");
    expect(clientKey("::1", 64)).toBe("0:0:0:0::/64");
    expect(clientKey("fe80::1%eth0", 64)).toBe("fe80:0:0:0::/64");
    expect(clientKey("::192.0.2.1", 112)).toBe("0:0:0:0:0:0:c000::/112");
  });
});

describe("MemoryRateLimiter", () => {
  it("allows perClientPerWindow requests per client, then answers with the seconds left", () => {
    let now = 60_000 * 10 + 15_000; // 15 s into a window
    const l = new MemoryRateLimiter({ perClientPerWindow: 2, windowMs: 60_000, now: () => now });
    expect(l.hit("a")).toBeUndefined();
    expect(l.hit("a")).toBeUndefined();
    expect(l.hit("a")).toBe(45);
    expect(l.hit("b")).toBeUndefined();
    now += 44_500;
    expect(l.hit("a")).toBe(1);
  });

  it("forgets every address when its window ends", () => {
    let now = 0;
    const l = new MemoryRateLimiter({ perClientPerWindow: 1, windowMs: 1000, now: () => now });
    l.hit("a");
    l.hit("b");
    expect(l.size).toBe(2);
    expect(l.hit("a")).toBe(1);
    now = 1000;
    expect(l.size).toBe(0);
    expect(l.hit("a")).toBeUndefined();
    expect(l.size).toBe(1);
  });
});

describe("RedisRateLimiter", () => {
  const fakeRedis = {} as Redis;
  it("keys counters by a keyed hash: stable across replicas with the same secret, never the address", () => {
    const secret = new TextEncoder().encode("shared");
    const a = new RedisRateLimiter({ perClientPerWindow: 1, windowMs: 1000, redis: fakeRedis, prefix: "p:", keySecret: secret });
    const b = new RedisRateLimiter({ perClientPerWindow: 1, windowMs: 1000, redis: fakeRedis, prefix: "p:", keySecret: secret });
    const other = new RedisRateLimiter({ perClientPerWindow: 1, windowMs: 1000, redis: fakeRedis, prefix: "p:", keySecret: new TextEncoder().encode("x") });
    const k = a.keyFor("192.0.2.7", 5);
    expect(k).toBe(b.keyFor("192.0.2.7", 5));
    expect(k).not.toBe(other.keyFor("192.0.2.7", 5));
    expect(k).not.toBe(a.keyFor("192.0.2.7", 6));
    expect(k).not.toBe(a.keyFor("192.0.2.8", 5));
    expect(k).not.toContain("192.0.2.7");
    expect(k.startsWith("p:5:")).toBe(true);
  });

  it("lets requests through when the store fails, and reports it", async () => {
    const errors: unknown[] = [];
    const broken = {
      multi: () => ({ incr: () => ({ pexpire: () => ({ exec: () => Promise.reject(new Error("down")) }) }) }),
    } as unknown as Redis;
    const l = new RedisRateLimiter({ perClientPerWindow: 1, windowMs: 1000, redis: broken, prefix: "p:", keySecret: new Uint8Array(32), onError: (e) => errors.push(e) });
    expect(await l.hit("a")).toBeUndefined();
    expect(errors).toHaveLength(1);
  });
});
