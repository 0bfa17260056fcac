// Where the attester keeps each credential's token count for its current window
// (config `attester.store`):
//
// - "memory": in this process; a restart gives every credential a fresh window.
// - "sqlite:PATH": a SQLite file. The count survives restarts and is shared by every issuer process
//   that opens the same file. A take (of one token, or of a batch: as many as the quota has left)
//   is ONE immediate transaction, atomic under SQLite's write lock, so two processes can never
//   together issue more than tokensPerWindow in one window. WAL, busy_timeout as the gateway's nonce store
//   (gateway/nonce-stores/sqlite.ts). Rows of ended windows are purged.
//
// Rows are keyed by a domain-separated SHA-256 of the credential (see Attester), never by the
// credential itself. Store errors are ISSUER_ERR_STORE_UNAVAILABLE (503): fail closed.

import type Database from "better-sqlite3";
import { closeQuietly, isConnectionBroken, loadSqlite, openSqlite } from "../server/sqlite.js";
import { ProtocolError } from "../core/errors.js";

export const QUOTA_STORE_DEFAULTS = Object.freeze({
  /** How long to wait for another process's write lock before failing closed (503). */
  busyTimeoutMs: 5_000,
  /** Ended windows are purged at most this often. */
  purgeIntervalMs: 60_000,
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
  take(key: string, nowMs: number, windowMs: number, limit: number, count: number): QuotaTake;
  /** Gives back `count` tokens taken in the window starting at `windowStartMs` (no-op if it has ended). */
  giveBack(key: string, windowStartMs: number, count: number): void;
  /** Deletes the rows of windows ended by `nowMs`. */
  purge(nowMs: number, windowMs: number): void;
  close(): void;
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

const SCHEMA = `
CREATE TABLE IF NOT EXISTS veil_attester_quota (
  credential TEXT PRIMARY KEY,
  window_start INTEGER NOT NULL,
  used INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS veil_attester_quota_window_start ON veil_attester_quota (window_start);
`;

/* A take is one IMMEDIATE transaction (it holds SQLite's write lock from its first statement):
 * read the row, then write the new window start and count. Another process's take waits for the
 * lock (busy_timeout) and then sees this one's count, so grants never add up past the limit. */
const SET = `
INSERT INTO veil_attester_quota (credential, window_start, used) VALUES (@key, @windowStart, @used)
ON CONFLICT (credential) DO UPDATE SET window_start = excluded.window_start, used = excluded.used
`;

interface SetParams {
  key: string;
  windowStart: number;
  used: number;
}

interface Statements {
  take: (key: string, nowMs: number, windowMs: number, limit: number, count: number) => QuotaTake;
  giveBack: Database.Statement<[number, string, number]>;
  purge: Database.Statement<[number, number]>;
}

/** The take of the SQLite store, as one IMMEDIATE transaction (see SET). */
function takeTransaction(
  db: Database.Database,
  current: Database.Statement<[string], { window_start: number; used: number }>,
  set: Database.Statement<[SetParams]>,
): Statements["take"] {
  const tx = db.transaction((key: string, nowMs: number, windowMs: number, limit: number, count: number): QuotaTake => {
    const row = current.get(key);
    const fresh = row === undefined || nowMs >= row.window_start + windowMs;
    const windowStart = fresh ? nowMs : row.window_start;
    const used = fresh ? 0 : row.used;
    const taken = Math.max(0, Math.min(count, limit - used));
    if (taken > 0 || fresh) set.run({ key, windowStart, used: used + taken });
    return { taken, windowStartMs: windowStart };
  });
  return (key, nowMs, windowMs, limit, count) => tx.immediate(key, nowMs, windowMs, limit, count);
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
      const current = db.prepare<[string], { window_start: number; used: number }>(
        "SELECT window_start, used FROM veil_attester_quota WHERE credential = ?",
      );
      const st: Statements = {
        take: takeTransaction(db, current, db.prepare<[SetParams]>(SET)),
        giveBack: db.prepare<[number, string, number]>(
          "UPDATE veil_attester_quota SET used = MAX(0, used - ?) WHERE credential = ? AND window_start = ?",
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

  take(key: string, nowMs: number, windowMs: number, limit: number, count: number): QuotaTake {
    try {
      return this.#open().take(key, nowMs, windowMs, limit, count);
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

/** The store of config `attester.store`: "memory" or "sqlite:PATH". */
export function openQuotaStore(spec: string): QuotaStore {
  if (spec === "memory") return new MemoryQuotaStore();
  if (spec.startsWith("sqlite:")) return new SqliteQuotaStore(spec.slice("sqlite:".length));
  throw new ProtocolError("CFG_ERR_INVALID", "attester.store: expected memory or sqlite:PATH");
}
