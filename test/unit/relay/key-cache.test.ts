import { describe, expect, it } from "vitest";
import { ProtocolError } from "../../../core/errors.js";
import type { KeyCacheConfig } from "../../../relay/config.js";
import { KeyCache, checkKeysFraming, type FetchedKeys } from "../../../relay/key-cache.js";
import { fakeKeyConfigs } from "../../helpers/relay-gateway-stand-in.js";

const CONFIG: KeyCacheConfig = { defaultMaxAgeSec: 300, minMaxAgeSec: 10, maxMaxAgeSec: 86_400, staleIfErrorSec: 600, retrySec: 5, revalidateMinSec: 1 };

function answer(body: Buffer, cacheControl?: string, extra: Partial<FetchedKeys> = {}): FetchedKeys {
  const headers: FetchedKeys["headers"] = { "content-type": "application/ohttp-keys" };
  if (cacheControl !== undefined) headers["cache-control"] = cacheControl;
  return { status: 200, headers, body, ...extra };
}

function harness(config: Partial<KeyCacheConfig> = {}) {
  const t = { now: 1_000_000 };
  let next: () => Promise<FetchedKeys> = async () => answer(fakeKeyConfigs(1), "max-age=60");
  let fetches = 0;
  const errors: ProtocolError[] = [];
  const cache = new KeyCache({
    fetch: () => {
      fetches++;
      return next();
    },
    config: { ...CONFIG, ...config },
    now: () => t.now,
    onError: (e) => errors.push(e),
  });
  return {
    cache,
    t,
    errors,
    get fetches() {
      return fetches;
    },
    set: (f: () => Promise<FetchedKeys>) => (next = f),
  };
}

const down = async (): Promise<FetchedKeys> => {
  throw new ProtocolError("RELAY_ERR_KEYS_UNAVAILABLE", "refused");
};

describe("KeyCache", () => {
  it("refetches a fresh copy for a client asking to revalidate only once it is revalidateMinSec old, for everyone", async () => {
    const h = harness();
    await h.cache.get();
    h.set(async () => answer(fakeKeyConfigs(2), "max-age=60"));
    // Younger than revalidateMinSec: served from the cache, also when asked to revalidate.
    h.t.now += 999;
    expect((await h.cache.get(true)).body.equals(fakeKeyConfigs(1))).toBe(true);
    expect(h.fetches).toBe(1);
    h.t.now += 1;
    const all = await Promise.all([h.cache.get(true), h.cache.get(true)]);
    expect(h.fetches).toBe(2);
    for (const s of all) expect(s.body.equals(fakeKeyConfigs(2))).toBe(true);
    // The new copy is the one every client gets now, without revalidating.
    expect((await h.cache.get()).body.equals(fakeKeyConfigs(2))).toBe(true);
    // A revalidation that fails keeps serving the fresh copy.
    h.set(down);
    h.t.now += 5_000;
    expect((await h.cache.get(true)).body.equals(fakeKeyConfigs(2))).toBe(true);
  });

  it("serves the same bytes to everyone and fetches once for concurrent requests", async () => {
    const h = harness();
    const all = await Promise.all(Array.from({ length: 10 }, () => h.cache.get()));
    expect(h.fetches).toBe(1);
    for (const s of all) {
      expect(s.body).toBe(all[0]!.body);
      expect(s.etag).toBe(all[0]!.etag);
    }
    expect(all[0]!.body.equals(fakeKeyConfigs(1))).toBe(true);
    expect(all[0]!.maxAgeSec).toBe(60);
  });

  it("follows the gateway's max-age: fresh copies are not refetched, expired ones are", async () => {
    const h = harness();
    await h.cache.get();
    h.t.now += 59_000;
    expect((await h.cache.get()).maxAgeSec).toBe(1);
    expect(h.fetches).toBe(1);
    h.set(async () => answer(fakeKeyConfigs(2), "max-age=120"));
    h.t.now += 1_000;
    const s = await h.cache.get();
    expect(h.fetches).toBe(2);
    expect(s.body.equals(fakeKeyConfigs(2))).toBe(true);
    expect(s.maxAgeSec).toBe(120);
  });

  it("clamps max-age and uses the default without one", async () => {
    const h = harness({ minMaxAgeSec: 30, maxMaxAgeSec: 3600 });
    h.set(async () => answer(fakeKeyConfigs(), "max-age=1"));
    expect((await h.cache.get()).maxAgeSec).toBe(30);
    const h2 = harness({ maxMaxAgeSec: 3600 });
    h2.set(async () => answer(fakeKeyConfigs(), "public, max-age=999999"));
    expect((await h2.cache.get()).maxAgeSec).toBe(3600);
    const h3 = harness();
    h3.set(async () => answer(fakeKeyConfigs()));
    expect((await h3.cache.get()).maxAgeSec).toBe(300);
  });

  it("serves the stale copy while the gateway is down, retrying at most every retrySec", async () => {
    const h = harness();
    const first = await h.cache.get();
    h.set(down);
    h.t.now += 61_000;
    const stale = await h.cache.get();
    expect(stale.body).toBe(first.body);
    expect(stale.maxAgeSec).toBe(0);
    expect(h.fetches).toBe(2);
    expect(h.errors).toHaveLength(1);
    h.t.now += 1_000;
    await h.cache.get();
    expect(h.fetches).toBe(2); // within retrySec: no new attempt
    h.t.now += 5_000;
    await h.cache.get();
    expect(h.fetches).toBe(3);
    h.set(async () => answer(fakeKeyConfigs(1), "max-age=60"));
    h.t.now += 5_000;
    expect((await h.cache.get()).maxAgeSec).toBe(60);
  });

  it("stops serving a stale copy staleIfErrorSec after it expired", async () => {
    const h = harness({ staleIfErrorSec: 100, retrySec: 0 });
    await h.cache.get();
    h.set(down);
    h.t.now += 60_000 + 99_000;
    await expect(h.cache.get()).resolves.toBeDefined();
    h.t.now += 2_000;
    await expect(h.cache.get()).rejects.toMatchObject({ code: "RELAY_ERR_KEYS_UNAVAILABLE" });
  });

  it("fails with RELAY_ERR_KEYS_UNAVAILABLE when it never had a copy", async () => {
    const h = harness();
    h.set(down);
    await expect(h.cache.get()).rejects.toMatchObject({ code: "RELAY_ERR_KEYS_UNAVAILABLE" });
  });

  it.each([
    ["a non-200 answer", answer(fakeKeyConfigs(), undefined, { status: 503 })],
    ["another media type", { ...answer(fakeKeyConfigs()), headers: { "content-type": "text/html" } }],
    ["a badly framed body", answer(Buffer.from([0x00, 0x30, 0x01]))],
    ["an empty body", answer(Buffer.alloc(0))],
  ])("does not cache %s", async (_what, bad) => {
    const h = harness();
    h.set(async () => bad);
    await expect(h.cache.get()).rejects.toMatchObject({ code: "RELAY_ERR_KEYS_UNAVAILABLE" });
    expect(h.errors).toHaveLength(1);
  });

  it("keeps serving the last good copy when the gateway starts sending garbage", async () => {
    const h = harness({ retrySec: 0 });
    const good = await h.cache.get();
    h.set(async () => answer(Buffer.from("<html>")));
    h.t.now += 61_000;
    expect((await h.cache.get()).body).toBe(good.body);
  });
});

describe("checkKeysFraming", () => {
  it("accepts length-prefixed configurations and refuses anything else", () => {
    const one = fakeKeyConfigs(1);
    expect(checkKeysFraming(one)).toBe(true);
    expect(checkKeysFraming(Buffer.concat([one, fakeKeyConfigs(2)]))).toBe(true);
    expect(checkKeysFraming(one.subarray(0, one.length - 1))).toBe(false);
    expect(checkKeysFraming(Buffer.concat([one, Buffer.from([0])]))).toBe(false);
    expect(checkKeysFraming(new Uint8Array(0))).toBe(false);
    expect(checkKeysFraming(Buffer.from([0, 0]))).toBe(false);
  });
});
