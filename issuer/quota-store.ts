// Where the attester keeps each credential's token count for its current window
// (config `attester.store`):
//
// - "memory": in this process; a restart gives every credential a fresh window.
// - "sqlite:PATH": a SQLite file. The count survives restarts and is shared by every issuer process
//   that opens the same file. A take is ONE statement (INSERT ... ON CONFLICT DO UPDATE ... WHERE
//   ... RETURNING), atomic under SQLite's write lock, so two processes can never together issue
//   more than tokensPerWindow in one window. WAL, busy_timeout as the gateway's nonce store
//   (gateway/nonce-stores/sqlite.ts). Rows of ended windows are purged.
//
// Rows are keyed by a domain-separated SHA-256 of the credential (see Attester), never by the
// credential itself. Store errors are ISSUER_ERR_STORE_UNAVAILABLE (503): fail closed.

import type Database from "better-sqlite3";
import { closeQuietly, isConnectionBroken, openSqlite } from "../server/sqlite.js";
import { ProtocolError } from "../core/errors.js";

export const QUOTA_STORE_DEFAULTS = Object.freeze({
  /** How long to wait for another process's write lock before failing closed (503). */
  busyTimeoutMs: 5_000,
  /** Ended windows are purged at most this often. */
  purgeIntervalMs: 60_000,
});

/** The outcome of one take: `ok` when a token of quota was taken; the window it counts in. */
export interface QuotaTake {
  ok: boolean;
  windowStartMs: number;
}

export interface QuotaStore {
  /**
   * Atomically takes one token of `key`'s quota in its current window (a window starts at the
   * first token after the previous one ended and lasts `windowMs`), unless `limit` are used.
   */
  take(key: string, nowMs: number, windowMs: number, limit: number): QuotaTake;
  /** Gives back a token taken in the window starting at `windowStartMs` (no-op if it has ended). */
  giveBack(key: string, windowStartMs: number): void;
  /** Deletes the rows of windows ended by `nowMs`. */
  purge(nowMs: number, windowMs: number): void;
  close(): void;
}

export class MemoryQuotaStore implements QuotaStore {
  readonly #windows = new Map<string, { startMs: number; used: number }>();

  take(key: string, nowMs: number, windowMs: number, limit: number): QuotaTake {
    let w = this.#windows.get(key);
    if (w === undefined || nowMs >= w.startMs + windowMs) {
      w = { startMs: nowMs, used: 0 };
      this.#windows.set(key, w);
    }
    if (w.used >= limit) return { ok: false, windowStartMs: w.startMs };
    w.used++;
    return { ok: true, windowStartMs: w.startMs };
  }

  giveBack(key: string, windowStartMs: number): void {
    const w = this.#windows.get(key);
    if (w !== undefined && w.startMs === windowStartMs && w.used > 0) w.used--;
  }

  purge(nowMs: number, windowMs: number): void {
    for (const [k, w] of this.#windows) if (nowMs >= w.startMs + windowMs) this.#windows.delete(k);
  }

  close(): void {
    this.#windows.clear();
  }
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS veil_attester_quota (
  credential TEXT PRIMARY KEY,
  window_start INTEGER NOT NULL,
  used INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS veil_attester_quota_window_start ON veil_attester_quota (window_start);
`;

/* One statement: a new row, a rolled-over window, or one more token in the current window when
 * below the limit; no row comes back when the quota is used (the WHERE refuses the update).
 * In DO UPDATE, bare columns are the existing row's. */
const TAKE = `
INSERT INTO veil_attester_quota (credential, window_start, used) VALUES (@key, @now, 1)
ON CONFLICT (credential) DO UPDATE SET
  window_start = CASE WHEN @now >= window_start + @windowMs THEN @now ELSE window_start END,
  used = CASE WHEN @now >= window_start + @windowMs THEN 1 ELSE used + 1 END
WHERE @now >= window_start + @windowMs OR used < @limit
RETURNING window_start
`;

interface TakeParams {
  key: string;
  now: number;
  windowMs: number;
  limit: number;
}

interface Statements {
  take: Database.Statement<[TakeParams], { window_start: number }>;
  current: Database.Statement<[string], { window_start: number }>;
  giveBack: Database.Statement<[string, number]>;
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
        take: db.prepare<[TakeParams], { window_start: number }>(TAKE),
        current: db.prepare<[string], { window_start: number }>("SELECT window_start FROM veil_attester_quota WHERE credential = ?"),
        giveBack: db.prepare<[string, number]>(
          "UPDATE veil_attester_quota SET used = used - 1 WHERE credential = ? AND window_start = ? AND used > 0",
        ),
        purge: db.prepare<[number, number]>("DELETE FROM veil_attester_quota WHERE window_start + ? <= ?"),
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
    throw new ProtocolError("ISSUER_ERR_STORE_UNAVAILABLE", `attester quota store: ${what} failed`, {
      cause: e,
      headers: { "retry-after": "1" },
    });
  }

  #drop(): void {
    const db = this.#db;
    this.#db = undefined;
    this.#st = undefined;
    closeQuietly(db);
  }

  take(key: string, nowMs: number, windowMs: number, limit: number): QuotaTake {
    try {
      const st = this.#open();
      const row = st.take.get({ key, now: nowMs, windowMs, limit });
      if (row !== undefined) return { ok: true, windowStartMs: row.window_start };
      return { ok: false, windowStartMs: st.current.get(key)?.window_start ?? nowMs };
    } catch (e) {
      return this.#fail(e, "take");
    }
  }

  giveBack(key: string, windowStartMs: number): void {
    try {
      this.#open().giveBack.run(key, windowStartMs);
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

/** The store of config `attester.store`: "memory" or "sqlite:PATH". */
export function openQuotaStore(spec: string): QuotaStore {
  if (spec === "memory") return new MemoryQuotaStore();
  if (spec.startsWith("sqlite:")) return new SqliteQuotaStore(spec.slice("sqlite:".length));
  throw new ProtocolError("CFG_ERR_INVALID", "attester.store: expected memory or sqlite:PATH");
}
