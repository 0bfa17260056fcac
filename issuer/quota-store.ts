// Where the attester keeps each credential's token count for its current window
// (config `attester.store`):
//
// - "memory": in this process; a restart gives every credential a fresh window.
// - "sqlite:PATH": a SQLite file. The count survives restarts and is shared by every issuer process
//   that opens the same file. A take is one statement (an UPDATE within the current window, else
//   INSERT ... ON CONFLICT DO UPDATE ... WHERE ... RETURNING), each atomic under SQLite's write
//   lock and granting only what the limit leaves, so two processes can never together issue more
//   than tokensPerWindow in one window. WAL, busy_timeout as the gateway's nonce store
//   (gateway/nonce-stores/sqlite.ts). Rows of ended windows are purged.
// - "redis://HOST:PORT" (or rediss://): one count per (quota key, window) in Redis, shared by every
//   issuer process on every machine. A take is ONE Lua script, which Redis runs atomically, so
//   issuers together never grant more than tokensPerWindow in a window. A window's entry expires
//   with the window (PEXPIREAT). The script also checks that every issuer hashes with the same
//   `attester.storeKeyFile` (a check value next to the counts): issuers with different keys
//   would each count a client apart, and multiply its budget; such a take fails (503).
//
// Entries are keyed by the quota key (a keyed hash of the credential or claim, see Attester),
// never by the credential itself. Store errors are ISSUER_ERR_STORE_UNAVAILABLE (503): fail closed.

import { createHmac } from "node:crypto";
import type Database from "better-sqlite3";
import { closeQuietly, isConnectionBroken, loadSqlite, openSqlite } from "../server/sqlite.js";
import type { Redis } from "ioredis";
import { closeRedis, connectFailClosed, type FailClosedRedis } from "../server/redis.js";
import { ProtocolError } from "../core/errors.js";

export const QUOTA_STORE_DEFAULTS = Object.freeze({
  /** How long to wait for another process's write lock before failing closed (503). */
  busyTimeoutMs: 5_000,
  /** Ended windows are purged at most this often. */
  purgeIntervalMs: 60_000,
  /** Redis: a command that takes longer fails (503) instead of hanging the token request. */
  redisCommandTimeoutMs: 1_000,
  /** Redis: TCP connect timeout. */
  redisConnectTimeoutMs: 1_000,
  /** Redis: counts are `${prefix}${quota key}`; the key check value is `${prefix}key-check`. */
  redisKeyPrefix: "veil:quota:",
});

/** The outcome of one take: how many tokens of quota were taken (0 when none was left); the window they count in. */
export interface QuotaTake {
  taken: number;
  windowStartMs: number;
}

export interface QuotaStore {
  /**
   * Atomically takes up to `count` tokens of `key`'s quota in its current window (a window starts
   * at the first token after the previous one ended and lasts `windowMs`): as many as are left
   * under `limit`, possibly none.
   */
  take(key: string, nowMs: number, windowMs: number, limit: number, count: number): QuotaTake | Promise<QuotaTake>;
  /** Gives back `count` tokens taken in the window starting at `windowStartMs` (no-op if it has ended). */
  giveBack(key: string, windowStartMs: number, count: number): void | Promise<void>;
  /** Deletes the entries of windows ended by `nowMs`. */
  purge(nowMs: number, windowMs: number): void | Promise<void>;
  close(): void | Promise<void>;
}

function unavailable(what: string, cause: unknown): ProtocolError {
  return new ProtocolError("ISSUER_ERR_STORE_UNAVAILABLE", `attester quota store: ${what} failed`, { cause, headers: { "retry-after": "1" } });
}

export class MemoryQuotaStore implements QuotaStore {
  readonly #windows = new Map<string, { startMs: number; used: number }>();

  take(key: string, nowMs: number, windowMs: number, limit: number, count: number): QuotaTake {
    let w = this.#windows.get(key);
    if (w === undefined || nowMs >= w.startMs + windowMs) {
      w = { startMs: nowMs, used: 0 };
      this.#windows.set(key, w);
    }
    const taken = Math.max(0, Math.min(count, limit - w.used));
    w.used += taken;
    return { taken, windowStartMs: w.startMs };
  }

  giveBack(key: string, windowStartMs: number, count: number): void {
    const w = this.#windows.get(key);
    if (w !== undefined && w.startMs === windowStartMs) w.used = Math.max(0, w.used - count);
  }

  purge(nowMs: number, windowMs: number): void {
    for (const [k, w] of this.#windows) if (nowMs >= w.startMs + windowMs) this.#windows.delete(k);
  }

  close(): void {
    this.#windows.clear();
  }
}

/* v2: quota keys are keyed hashes (v1's were unkeyed digests), and a take can be of a batch. */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS veil_attester_quota_v2 (
  quota_key TEXT PRIMARY KEY,
  window_start INTEGER NOT NULL,
  used INTEGER NOT NULL,
  last_taken INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS veil_attester_quota_v2_window_start ON veil_attester_quota_v2 (window_start);
`;

/* One statement: a new row, a rolled-over window, or up to @count more tokens in the current
 * window, as many as the limit leaves; `last_taken` records how many this take got. No row comes
 * back when the quota is used (the WHERE refuses the update). In DO UPDATE, bare columns are the
 * existing row's. */
const TAKE = `
INSERT INTO veil_attester_quota_v2 (quota_key, window_start, used, last_taken) VALUES (@key, @now, min(@count, @limit), min(@count, @limit))
ON CONFLICT (quota_key) DO UPDATE SET
  window_start = CASE WHEN @now >= window_start + @windowMs THEN @now ELSE window_start END,
  used = CASE WHEN @now >= window_start + @windowMs THEN min(@count, @limit) ELSE min(used + @count, @limit) END,
  last_taken = CASE WHEN @now >= window_start + @windowMs THEN min(@count, @limit) ELSE min(used + @count, @limit) - used END
WHERE @now >= window_start + @windowMs OR used < @limit
RETURNING window_start, last_taken
`;

/* The common case as a plain UPDATE that leaves window_start alone: more tokens in a current
 * window that has some left. TAKE above does the same, but it assigns window_start, which makes
 * SQLite rewrite the row's window_start index entry (one more page written to the WAL on every
 * take: about a third of a take's cost). No row comes back when the window has ended, the quota
 * is used or the key is new; TAKE then decides. Each statement is atomic on its own and grants
 * only what the limit leaves, so running one after the other grants no more than TAKE alone. */
const TAKE_IN_WINDOW = `
UPDATE veil_attester_quota_v2 SET
  used = min(used + @count, @limit),
  last_taken = min(used + @count, @limit) - used
WHERE quota_key = @key AND @now < window_start + @windowMs AND used < @limit
RETURNING window_start, last_taken
`;

interface TakeParams {
  key: string;
  now: number;
  windowMs: number;
  limit: number;
  count: number;
}

interface Statements {
  takeInWindow: Database.Statement<[TakeParams], { window_start: number; last_taken: number }>;
  take: Database.Statement<[TakeParams], { window_start: number; last_taken: number }>;
  current: Database.Statement<[string], { window_start: number }>;
  giveBack: Database.Statement<[number, string, number]>;
  purge: Database.Statement<[number, number]>;
}

export class SqliteQuotaStore implements QuotaStore {
  readonly path: string;
  readonly #busyTimeoutMs: number;
  #db: Database.Database | undefined;
  #st: Statements | undefined;
  #closed = false;

  constructor(path: string, options: { busyTimeoutMs?: number } = {}) {
    if (path === "") throw new ProtocolError("CFG_ERR_INVALID", "attester.store: empty sqlite path");
    loadSqlite("attester.store sqlite:PATH");
    this.path = path;
    this.#busyTimeoutMs = options.busyTimeoutMs ?? QUOTA_STORE_DEFAULTS.busyTimeoutMs;
    // Open now so a bad path shows up at start, but do not throw: every take retries the open
    // and fails closed (503) until it works.
    try {
      this.#open();
    } catch {
      // #st stays undefined
    }
  }

  #open(): Statements {
    if (this.#closed) throw new Error("closed");
    if (this.#st !== undefined) return this.#st;
    const db = openSqlite(this.path, { busyTimeoutMs: this.#busyTimeoutMs, synchronous: "normal", schema: SCHEMA });
    try {
      const st: Statements = {
        takeInWindow: db.prepare<[TakeParams], { window_start: number; last_taken: number }>(TAKE_IN_WINDOW),
        take: db.prepare<[TakeParams], { window_start: number; last_taken: number }>(TAKE),
        current: db.prepare<[string], { window_start: number }>("SELECT window_start FROM veil_attester_quota_v2 WHERE quota_key = ?"),
        giveBack: db.prepare<[number, string, number]>(
          "UPDATE veil_attester_quota_v2 SET used = max(0, used - ?) WHERE quota_key = ? AND window_start = ?",
        ),
        purge: db.prepare<[number, number]>("DELETE FROM veil_attester_quota_v2 WHERE window_start + ? <= ?"),
      };
      this.#db = db;
      this.#st = st;
      return st;
    } catch (e) {
      closeQuietly(db);
      throw e;
    }
  }

  #fail(e: unknown, what: string): never {
    if (isConnectionBroken(e)) this.#drop();
    throw unavailable(what, e);
  }

  #drop(): void {
    const db = this.#db;
    this.#db = undefined;
    this.#st = undefined;
    closeQuietly(db);
  }

  take(key: string, nowMs: number, windowMs: number, limit: number, count: number): QuotaTake {
    try {
      const st = this.#open();
      const params = { key, now: nowMs, windowMs, limit, count };
      const row = st.takeInWindow.get(params) ?? st.take.get(params);
      if (row !== undefined) return { taken: row.last_taken, windowStartMs: row.window_start };
      return { taken: 0, windowStartMs: st.current.get(key)?.window_start ?? nowMs };
    } catch (e) {
      return this.#fail(e, "take");
    }
  }

  giveBack(key: string, windowStartMs: number, count: number): void {
    try {
      this.#open().giveBack.run(count, key, windowStartMs);
    } catch (e) {
      this.#fail(e, "give back");
    }
  }

  purge(nowMs: number, windowMs: number): void {
    try {
      this.#open().purge.run(windowMs, nowMs);
    } catch (e) {
      this.#fail(e, "purge");
    }
  }

  close(): void {
    this.#closed = true;
    this.#drop();
  }
}

// A window's entry is a hash: s = window start (ms), u = tokens used. KEYS[1] the entry,
// KEYS[2] the key check value; ARGV: now, windowMs, limit, count, check value.
const REDIS_TAKE = `
local check = redis.call('GET', KEYS[2])
if not check then redis.call('SET', KEYS[2], ARGV[5])
elseif check ~= ARGV[5] then return redis.error_reply('VEIL_STORE_KEY_MISMATCH another issuer uses another attester.storeKeyFile') end
local now, windowMs, limit, count = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local e = redis.call('HMGET', KEYS[1], 's', 'u')
local s, u = tonumber(e[1]), tonumber(e[2])
if not s or not u or now >= s + windowMs then s = now; u = 0 end
local t = math.max(0, math.min(count, limit - u))
if t > 0 then
  redis.call('HSET', KEYS[1], 's', s, 'u', u + t)
  redis.call('PEXPIREAT', KEYS[1], s + windowMs)
end
return {s, t}
`;
const REDIS_GIVE_BACK = `
local e = redis.call('HMGET', KEYS[1], 's', 'u')
if e[1] == ARGV[1] and tonumber(e[2]) then
  redis.call('HSET', KEYS[1], 'u', math.max(0, tonumber(e[2]) - tonumber(ARGV[2])))
end
return 1
`;

interface RedisQuotaScripts {
  veilQuotaTake(entry: string, check: string, now: number, windowMs: number, limit: number, count: number, checkValue: string): Promise<[number, number]>;
  veilQuotaGiveBack(entry: string, windowStartMs: string, count: number): Promise<number>;
}

/** Counts in Redis, shared by every issuer on every machine (see the top of this file). */
export class RedisQuotaStore implements QuotaStore {
  readonly #conn: FailClosedRedis;
  readonly #scripts: RedisQuotaScripts;
  readonly #prefix: string;
  readonly #checkValue: string;
  #closed = false;

  /** `storeKey`: the key of the quota keys; only a check value derived from it is stored. */
  constructor(url: string, storeKey: Uint8Array, options: { keyPrefix?: string } = {}) {
    this.#prefix = options.keyPrefix ?? QUOTA_STORE_DEFAULTS.redisKeyPrefix;
    this.#checkValue = createHmac("sha256", storeKey).update("veil attester store key check", "utf8").digest("hex");
    this.#conn = connectFailClosed(url, {
      commandTimeoutMs: QUOTA_STORE_DEFAULTS.redisCommandTimeoutMs,
      connectTimeoutMs: QUOTA_STORE_DEFAULTS.redisConnectTimeoutMs,
    }, "attester.store redis://");
    const redis: Redis = this.#conn.redis;
    redis.defineCommand("veilQuotaTake", { numberOfKeys: 2, lua: REDIS_TAKE });
    redis.defineCommand("veilQuotaGiveBack", { numberOfKeys: 1, lua: REDIS_GIVE_BACK });
    this.#scripts = redis as unknown as RedisQuotaScripts;
  }

  async #run<T>(what: string, op: () => Promise<T>): Promise<T> {
    if (this.#closed) throw unavailable(what, new Error("closed"));
    // The first connection attempt (bounded by the connect timeout) is waited for; later outages fail fast.
    await this.#conn.ready;
    try {
      return await op();
    } catch (e) {
      throw unavailable(what, e);
    }
  }

  async take(key: string, nowMs: number, windowMs: number, limit: number, count: number): Promise<QuotaTake> {
    const [start, taken] = await this.#run("take", () =>
      this.#scripts.veilQuotaTake(this.#prefix + key, this.#prefix + "key-check", nowMs, windowMs, limit, count, this.#checkValue),
    );
    return { taken: Number(taken), windowStartMs: Number(start) };
  }

  async giveBack(key: string, windowStartMs: number, count: number): Promise<void> {
    await this.#run("give back", () => this.#scripts.veilQuotaGiveBack(this.#prefix + key, String(windowStartMs), count));
  }

  /** Entries expire with their window (PEXPIREAT): nothing to purge. */
  purge(): void {}

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await closeRedis(this.#conn);
  }
}

/** The store of config `attester.store`: "memory", "sqlite:PATH" or "redis://..." (keyed with `storeKey`). */
export function openQuotaStore(spec: string, storeKey: Uint8Array): QuotaStore {
  if (spec === "memory") return new MemoryQuotaStore();
  if (spec.startsWith("sqlite:")) return new SqliteQuotaStore(spec.slice("sqlite:".length));
  if (spec.startsWith("redis://") || spec.startsWith("rediss://")) return new RedisQuotaStore(spec, storeKey);
  throw new ProtocolError("CFG_ERR_INVALID", "attester.store: expected memory, sqlite:PATH or redis://HOST:PORT");
}
