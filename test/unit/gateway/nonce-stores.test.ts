import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isProtocolError } from "../../../core/errors.js";
import {
  MemoryNonceStore,
  RedisNonceStore,
  SqliteNonceStore,
  openNonceStore,
  describeNonceStore,
  type NonceStore,
} from "../../../gateway/nonce-stores/index.js";
import type { StoreLoss } from "../../../gateway/nonce-stores/types.js";
import { startRedis, type TestRedis } from "../../helpers/redis.js";

const dir = mkdtempSync(join(tmpdir(), "veil-nonce-"));
let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const nonce = (): Uint8Array => new Uint8Array(randomBytes(32));
const digest = (): Uint8Array => new Uint8Array(randomBytes(32));
const HOUR = 3_600_000;

async function expectUnavailable(p: Promise<unknown>): Promise<void> {
  const e: unknown = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(isProtocolError(e) ? e.code : e).toBe("PP_ERR_STORE_UNAVAILABLE");
}

interface Backend {
  name: string;
  open(now?: () => number): NonceStore;
}
let fileNo = 0;
const backends: Backend[] = [
  { name: "memory", open: (now) => new MemoryNonceStore(now === undefined ? {} : { now }) },
  { name: "sqlite", open: (now) => new SqliteNonceStore(join(dir, `s${fileNo++}.db`), now === undefined ? {} : { now }) },
  { name: "redis", open: (now) => new RedisNonceStore(redis.url, now === undefined ? {} : { now }) },
];

describe.each(backends)("$name nonce store", (backend) => {
  const withStore = async (fn: (s: NonceStore, clock: { t: number }) => Promise<void>): Promise<void> => {
    const clock = { t: Date.now() };
    const s = backend.open(() => clock.t);
    try {
      await fn(s, clock);
    } finally {
      await s.close();
    }
  };

  it("answers new for a first use, retry for the same request, spent for another", () =>
    withStore(async (s, c) => {
      const n = nonce();
      const d = digest();
      expect(await s.reserve(n, d, c.t + HOUR)).toBe("new");
      expect(await s.reserve(n, d, c.t + HOUR)).toBe("retry");
      expect(await s.reserve(n, digest(), c.t + HOUR)).toBe("spent");
    }));

  it("keeps a committed nonce bound to its request: retry for it, spent for any other", () =>
    withStore(async (s, c) => {
      const n = nonce();
      const d = digest();
      expect(await s.reserve(n, d, c.t + HOUR)).toBe("new");
      await s.commit(n, d);
      await s.release(n, d); // a release after commit changes nothing
      expect(await s.reserve(n, d, c.t + HOUR)).toBe("retry");
      expect(await s.reserve(n, digest(), c.t + HOUR)).toBe("spent");
    }));

  it("makes a released token as good as new, for any request", () =>
    withStore(async (s, c) => {
      const n = nonce();
      const d = digest();
      expect(await s.reserve(n, d, c.t + HOUR)).toBe("new");
      await s.release(n, d);
      const other = digest();
      expect(await s.reserve(n, other, c.t + HOUR)).toBe("new");
      expect(await s.reserve(n, d, c.t + HOUR)).toBe("spent");
    }));

  it("ignores a release or commit naming another request", () =>
    withStore(async (s, c) => {
      const n = nonce();
      const d = digest();
      expect(await s.reserve(n, d, c.t + HOUR)).toBe("new");
      await s.release(n, digest());
      await s.commit(n, digest());
      expect(await s.reserve(n, digest(), c.t + HOUR)).toBe("spent");
      await s.release(n, d);
      await s.release(nonce(), d); // unknown nonce: nothing happens
      await s.commit(nonce(), d);
      expect(await s.reserve(n, digest(), c.t + HOUR)).toBe("new");
    }));

  it("keeps the token bound while a retry of the same request is still in flight", () =>
    withStore(async (s, c) => {
      const n = nonce();
      const d = digest();
      expect(await s.reserve(n, d, c.t + HOUR)).toBe("new");
      expect(await s.reserve(n, d, c.t + HOUR)).toBe("retry");
      await s.release(n, d); // the first attempt could not connect
      expect(await s.reserve(n, digest(), c.t + HOUR)).toBe("spent");
      await s.commit(n, d); // the retry got through
      await s.release(n, d);
      expect(await s.reserve(n, digest(), c.t + HOUR)).toBe("spent");
      expect(await s.reserve(n, d, c.t + HOUR)).toBe("retry");
    }));

  it("frees the token once every attempt of a request released it", () =>
    withStore(async (s, c) => {
      const n = nonce();
      const d = digest();
      expect(await s.reserve(n, d, c.t + HOUR)).toBe("new");
      expect(await s.reserve(n, d, c.t + HOUR)).toBe("retry");
      await s.release(n, d);
      await s.release(n, d);
      expect(await s.reserve(n, digest(), c.t + HOUR)).toBe("new");
    }));

  it("gives exactly one of 25 concurrent reservations of one nonce for 25 requests", () =>
    withStore(async (s, c) => {
      const n = nonce();
      const outcomes = await Promise.all(Array.from({ length: 25 }, () => s.reserve(n, digest(), c.t + HOUR)));
      expect(outcomes.filter((o) => o === "new")).toHaveLength(1);
      expect(outcomes.filter((o) => o === "spent")).toHaveLength(24);
    }));

  it("accepts nonce and digest given as subarrays of larger buffers", () =>
    withStore(async (s, c) => {
      const big = new Uint8Array(randomBytes(100));
      const n = big.subarray(3, 35);
      const d = big.subarray(40, 72);
      expect(await s.reserve(n, d, c.t + HOUR)).toBe("new");
      expect(await s.reserve(new Uint8Array(n), new Uint8Array(d), c.t + HOUR)).toBe("retry");
      expect(await s.reserve(new Uint8Array(n), big.subarray(41, 73), c.t + HOUR)).toBe("spent");
    }));

  it("answers ping while reachable and fails closed once closed", async () => {
    const s = backend.open();
    await s.ping();
    await s.close();
    await expectUnavailable(s.reserve(nonce(), digest(), Date.now() + HOUR));
    await expectUnavailable(s.ping());
  });
});

describe("expiry", () => {
  it.each(["memory", "sqlite"])("%s: forgets an entry once it expires, not before", async (kind) => {
    const clock = { t: 1_700_000_000_000 };
    const s = kind === "memory" ? new MemoryNonceStore({ now: () => clock.t }) : new SqliteNonceStore(join(dir, "exp.db"), { now: () => clock.t });
    const n = nonce();
    const d = digest();
    expect(await s.reserve(n, d, clock.t + 1000)).toBe("new");
    await s.commit(n, d);
    clock.t += 999;
    expect(await s.reserve(n, digest(), clock.t + 1000)).toBe("spent");
    clock.t += 1;
    expect(await s.reserve(n, digest(), clock.t + 1000)).toBe("new");
    await s.close();
  });

  it("memory: purges expired entries periodically", async () => {
    const clock = { t: 0 };
    const s = new MemoryNonceStore({ now: () => clock.t, purgeIntervalMs: 100 });
    for (let i = 0; i < 10; i++) await s.reserve(nonce(), digest(), 1500);
    expect(s.size).toBe(10);
    clock.t = 1500;
    await s.reserve(nonce(), digest(), 5000);
    expect(s.size).toBe(1);
  });

  it("sqlite: purges expired rows periodically", async () => {
    const clock = { t: 0 };
    const path = join(dir, "purge.db");
    const s = new SqliteNonceStore(path, { now: () => clock.t, purgeIntervalMs: 100 });
    for (let i = 0; i < 10; i++) await s.reserve(nonce(), digest(), 1500);
    const count = (): number => {
      const db = new Database(path, { readonly: true });
      const n = (db.prepare("SELECT count(*) AS n FROM veil_nonces").get() as { n: number }).n;
      db.close();
      return n;
    };
    expect(count()).toBe(10);
    clock.t = 1500;
    await s.reserve(nonce(), digest(), 5000);
    expect(count()).toBe(1);
    await s.close();
  });

  it("redis: sets the entry's expiry from the given time", async () => {
    const clock = { t: 1_700_000_000_000 };
    const s = new RedisNonceStore(redis.url, { now: () => clock.t, keyPrefix: "veil:test:" });
    const n = nonce();
    expect(await s.reserve(n, digest(), clock.t + 60_000)).toBe("new");
    const pttl = Number((await redis.command(`PTTL veil:test:${Buffer.from(n).toString("hex")}`)).slice(1));
    expect(pttl).toBeGreaterThan(55_000);
    expect(pttl).toBeLessThanOrEqual(60_000);
    await s.close();
  });
});

describe("memory store bounds", () => {
  it("fails closed when full of unexpired entries instead of forgetting one", async () => {
    const clock = { t: 0 };
    const s = new MemoryNonceStore({ now: () => clock.t, maxEntries: 3 });
    const kept = [nonce(), nonce(), nonce()];
    const d = digest();
    for (const n of kept) expect(await s.reserve(n, d, 1000)).toBe("new");
    await expectUnavailable(s.reserve(nonce(), d, 1000));
    for (const n of kept) expect(await s.reserve(n, digest(), 1000)).toBe("spent");
    clock.t = 1000;
    expect(await s.reserve(nonce(), d, 2000)).toBe("new");
  });
});

describe("sqlite store", () => {
  it("keeps spent nonces and crash-left reservations across a reopen", async () => {
    const path = join(dir, "restart.db");
    const a = new SqliteNonceStore(path);
    const spent = nonce();
    const reserved = nonce();
    const d1 = digest();
    const d2 = digest();
    expect(await a.reserve(spent, d1, Date.now() + HOUR)).toBe("new");
    await a.commit(spent, d1);
    expect(await a.reserve(reserved, d2, Date.now() + HOUR)).toBe("new");
    await a.close(); // as if the process died here, without releasing
    const b = new SqliteNonceStore(path);
    expect(await b.reserve(spent, digest(), Date.now() + HOUR)).toBe("spent");
    expect(await b.reserve(spent, d1, Date.now() + HOUR)).toBe("retry");
    expect(await b.reserve(reserved, digest(), Date.now() + HOUR)).toBe("spent");
    expect(await b.reserve(reserved, d2, Date.now() + HOUR)).toBe("retry");
    await b.close();
  });

  /**
   * Two stores on one file; `a` reserved and committed one token, and its commit is batched: not
   * written before the next event-loop turn.
   */
  async function twoStoresWithPendingCommit(file: string) {
    const path = join(dir, file);
    const a = new SqliteNonceStore(path);
    const b = new SqliteNonceStore(path);
    const n = nonce();
    const d = digest();
    expect(await a.reserve(n, d, Date.now() + HOUR)).toBe("new");
    await a.commit(n, d);
    return { a, b, n, d };
  }

  it("keeps a token bound to its request even when its commit was never written (a crash right after)", async () => {
    const { a, b, n, d } = await twoStoresWithPendingCommit("pending.db"); // commit not written yet
    expect(await b.reserve(n, digest(), Date.now() + HOUR)).toBe("spent");
    expect(await b.reserve(n, d, Date.now() + HOUR)).toBe("retry");
    await b.release(n, d); // the retry could not connect: the first holder still holds it
    expect(await b.reserve(n, digest(), Date.now() + HOUR)).toBe("spent");
    await a.close();
    await b.close();
  });

  it("gives reserves that join a pending group write the answers they get alone, written once the group is", async () => {
    // A group write is now due on `a`: the reserves below join it.
    const { a, b, n: committed, d: cd } = await twoStoresWithPendingCommit("group.db");
    const n = nonce();
    const d = digest();
    const outcomes = await Promise.all([
      a.reserve(n, d, Date.now() + HOUR),
      a.reserve(n, digest(), Date.now() + HOUR),
      a.reserve(n, d, Date.now() + HOUR),
      a.reserve(committed, digest(), Date.now() + HOUR),
      a.reserve(committed, cd, Date.now() + HOUR),
      ...Array.from({ length: 10 }, () => a.reserve(nonce(), digest(), Date.now() + HOUR)),
    ]);
    expect(outcomes).toEqual(["new", "spent", "retry", "spent", "retry", ...Array.from({ length: 10 }, () => "new")]);
    // Written: another connection sees the group's reservation (two holders) and the commit.
    expect(await b.reserve(n, digest(), Date.now() + HOUR)).toBe("spent");
    await a.release(n, d);
    await a.release(n, d);
    expect(await b.reserve(n, digest(), Date.now() + HOUR)).toBe("new");
    await b.release(committed, cd); // committed: a release changes nothing
    expect(await b.reserve(committed, digest(), Date.now() + HOUR)).toBe("spent");
    await a.close();
    await b.close();
  });

  it("fails every reserve of a group closed when the group cannot be written", async () => {
    const path = join(dir, "group-fail.db");
    const a = new SqliteNonceStore(path, { busyTimeoutMs: 50 });
    const n = nonce();
    const d = digest();
    expect(await a.reserve(n, d, Date.now() + HOUR)).toBe("new");
    // Another process holds the write lock past the busy timeout.
    const other = new Database(path);
    other.exec("BEGIN IMMEDIATE");
    try {
      await a.commit(n, d);
      const fresh = nonce();
      const group = [a.reserve(fresh, digest(), Date.now() + HOUR), a.reserve(nonce(), digest(), Date.now() + HOUR)];
      await Promise.all(group.map(expectUnavailable));
    } finally {
      other.exec("ROLLBACK");
      other.close();
    }
    // Nothing of the failed group was written; the store works again once the lock is free.
    expect(await a.reserve(n, digest(), Date.now() + HOUR)).toBe("spent");
    await a.close();
  });

  it("shares state between two connections to one file", async () => {
    const path = join(dir, "shared.db");
    const a = new SqliteNonceStore(path);
    const b = new SqliteNonceStore(path);
    const n = nonce();
    const outcomes = await Promise.all(Array.from({ length: 25 }, (_, i) => (i % 2 === 0 ? a : b).reserve(n, digest(), Date.now() + HOUR)));
    expect(outcomes.filter((o) => o === "new")).toHaveLength(1);
    await a.close();
    await b.close();
  });

  it("creates the file's directory", async () => {
    const s = new SqliteNonceStore(join(dir, "new-dir", "deeper", "n.db"));
    expect(await s.reserve(nonce(), digest(), Date.now() + HOUR)).toBe("new");
    await s.close();
  });

  it("uses WAL journaling", async () => {
    const path = join(dir, "wal.db");
    const s = new SqliteNonceStore(path);
    await s.ping();
    const db = new Database(path, { readonly: true });
    expect(db.pragma("journal_mode", { simple: true })).toBe("wal");
    db.close();
    await s.close();
  });

  it("fails closed when the path is not a database file", async () => {
    const path = join(dir, "garbage.db");
    writeFileSync(path, Buffer.alloc(4096, 0x41));
    const s = new SqliteNonceStore(path);
    await expectUnavailable(s.ping());
    await expectUnavailable(s.reserve(nonce(), digest(), Date.now() + HOUR));
    await s.close();
  });

  it("fails closed when the path cannot be opened, and works once it can", async () => {
    const sub = join(dir, "later");
    writeFileSync(sub, "a file where the directory should be");
    const s = new SqliteNonceStore(join(sub, "n.db"));
    await expectUnavailable(s.reserve(nonce(), digest(), Date.now() + HOUR));
    rmSync(sub);
    mkdirSync(sub);
    expect(await s.reserve(nonce(), digest(), Date.now() + HOUR)).toBe("new");
    await s.close();
  });

  it("fails closed when another process holds the write lock past the busy timeout", async () => {
    const path = join(dir, "locked.db");
    const s = new SqliteNonceStore(path, { busyTimeoutMs: 50 });
    await s.ping();
    const other = new Database(path);
    other.exec("BEGIN EXCLUSIVE");
    await expectUnavailable(s.reserve(nonce(), digest(), Date.now() + HOUR));
    other.exec("COMMIT");
    other.close();
    expect(await s.reserve(nonce(), digest(), Date.now() + HOUR)).toBe("new");
    await s.close();
  });
});

describe("redis store", () => {
  it("fails closed while Redis is down and recovers when it is back", async () => {
    const own = await startRedis();
    const s = new RedisNonceStore(own.url, { commandTimeoutMs: 300 });
    try {
      await s.ping();
      const n = nonce();
      const d = digest();
      expect(await s.reserve(n, d, Date.now() + HOUR)).toBe("new");
      await own.stop();
      await expectUnavailable(s.reserve(nonce(), digest(), Date.now() + HOUR));
      await expectUnavailable(s.ping());
      await own.restart();
      // ioredis reconnects on its own (at most a second between attempts).
      await expect.poll(() => s.ping().then(() => true, () => false), { timeout: 5000, interval: 50 }).toBe(true);
      expect(await s.reserve(nonce(), digest(), Date.now() + HOUR)).toBe("new");
    } finally {
      await s.close();
      await own.stop();
    }
  });

  it("notices a loss at a readiness check, without a token, and learns another gateway's renewal the same way", async () => {
    const own = await startRedis();
    const losses: StoreLoss[][] = [[], []];
    const [a, b] = [0, 1].map((i) => new RedisNonceStore(own.url, { keyPrefix: "ping-loss:", onLoss: (l) => losses[i]!.push(l) })) as [RedisNonceStore, RedisNonceStore];
    try {
      await a.ping();
      await b.ping();
      expect(a.loss).toBeUndefined();
      await own.command("FLUSHALL");
      const before = Date.now();
      await a.ping();
      expect(losses[0]).toHaveLength(1);
      expect(losses[0]![0]!.reason).toBe("marker_missing");
      expect(losses[0]![0]!.lostAtMs).toBeGreaterThanOrEqual(before);
      // b finds the marker a re-created: the same loss, with a's time.
      await b.ping();
      expect(losses[1]!.map((l) => l.lostAtMs)).toEqual([losses[0]![0]!.lostAtMs]);
      // Nothing changed since: no further loss.
      await a.ping();
      expect(losses[0]).toHaveLength(1);
    } finally {
      await a.close();
      await b.close();
      await own.stop();
    }
  });

  it("fails closed promptly when Redis was never reachable", async () => {
    const s = new RedisNonceStore("redis://127.0.0.1:1", { connectTimeoutMs: 200 });
    await expectUnavailable(s.reserve(nonce(), digest(), Date.now() + HOUR));
    await s.close();
  });
});

describe("openNonceStore", () => {
  it("opens each backend from its spec", async () => {
    const stores = [openNonceStore("memory"), openNonceStore(`sqlite:${join(dir, "spec.db")}?synchronous=full`), openNonceStore(redis.url)];
    expect(stores[0]).toBeInstanceOf(MemoryNonceStore);
    expect(stores[1]).toBeInstanceOf(SqliteNonceStore);
    expect(stores[2]).toBeInstanceOf(RedisNonceStore);
    for (const s of stores) {
      await s.ping();
      await s.close();
    }
  });

  it.each(["", "mem", "sqlite:", "sqlite:x.db?journal=off", "redis://[", "postgres://x"])("rejects the spec %j", (spec) => {
    let code: string | undefined;
    try {
      openNonceStore(spec);
    } catch (e) {
      code = isProtocolError(e) ? e.code : "other";
    }
    expect(code).toBe("CFG_ERR_INVALID");
  });

  it("describes a store without its URL (which can carry a password)", () => {
    expect(describeNonceStore("redis://:secret@host:6379")).toBe("redis");
    expect(describeNonceStore("sqlite:/var/lib/veil/n.db")).toBe("sqlite");
  });
});

describe("clock differences", () => {
  it.each(["memory", "sqlite"])("%s: never creates an entry that is already expired", async (kind) => {
    const s = kind === "memory" ? new MemoryNonceStore() : new SqliteNonceStore(join(dir, "past.db"));
    const n = nonce();
    expect(await s.reserve(n, digest(), Date.now() - HOUR)).toBe("new");
    expect(await s.reserve(n, digest(), Date.now() + HOUR)).toBe("spent");
    await s.close();
  });
});
