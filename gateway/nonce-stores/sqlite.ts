// SQLite double-spend store (`sqlite:PATH`): the embedded default. It survives restarts (a nonce
// committed before a SIGKILL is still spent afterwards) and is shared by every gateway process on
// one machine that opens the same file (`--workers N`). Semantics: ./types.ts.
//
// Atomicity across processes: reserve runs as one `BEGIN IMMEDIATE` transaction, which takes the
// database's write lock before reading, so two processes can never both see "no entry" and both
// answer "new". Other writers wait for the lock up to `busy_timeout`; beyond that the operation
// fails with PP_ERR_STORE_UNAVAILABLE (the gate answers 503: fail closed).
//
// Durability: WAL with synchronous=NORMAL: a committed transaction survives a process crash
// (SIGKILL); only an OS crash or power loss may lose the last few. `sqlite:PATH?synchronous=full`
// trades an fsync per upload for surviving those too.

import type Database from "better-sqlite3";
import { closeQuietly, isConnectionBroken, loadSqlite, openSqlite } from "../../server/sqlite.js";
import { ProtocolError } from "../../core/errors.js";
import { equalBytes } from "../../core/bytes.js";
import { MIN_ENTRY_TTL_MS, NONCE_STORE_DEFAULTS, type NonceStore, type NonceStoreOptions, type ReserveOutcome } from "./types.js";

export interface SqliteNonceStoreOptions extends NonceStoreOptions {
  /** How long to wait for another process's write lock (ms) before failing closed. */
  busyTimeoutMs?: number;
  /** PRAGMA synchronous: "normal" (default, crash-safe) or "full" (also power-loss-safe). */
  synchronous?: "normal" | "full";
}

interface Row {
  digest: Uint8Array;
  committed: number;
  holders: number;
  expires_at: number;
}

/* The schema. `WITHOUT ROWID`: the 32-byte nonce is the key; `expires_at` is indexed for purges. */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS veil_nonces (
  nonce BLOB PRIMARY KEY,
  digest BLOB NOT NULL,
  committed INTEGER NOT NULL,
  holders INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS veil_nonces_expires_at ON veil_nonces (expires_at);
`;

/** Most rows one purge deletes (a purge holds the write lock; keep it short). */
const PURGE_BATCH = 10_000;

interface Statements {
  select: Database.Statement<[Uint8Array], Row>;
  insert: Database.Statement<[Uint8Array, Uint8Array, number]>;
  insertIfAbsent: Database.Statement<[Uint8Array, Uint8Array, number]>;
  addHolder: Database.Statement<[Uint8Array]>;
  commit: Database.Statement<[Uint8Array, Uint8Array]>;
  release: Database.Statement<[Uint8Array, Uint8Array]>;
  deleteIfFree: Database.Statement<[Uint8Array]>;
  purge: Database.Statement<[number]>;
  reserve: (nonce: Uint8Array, digest: Uint8Array, expiresAtMs: number, now: number) => ReserveOutcome;
  /** One write transaction for a batch of commits. */
  commitMany: (batch: readonly PendingCommit[]) => void;
  /** Release as one write transaction (one holder less; delete when none is left). */
  releaseOne: (nonce: Uint8Array, digest: Uint8Array) => void;
}

interface PendingCommit {
  nonce: Buffer;
  digest: Buffer;
}

export class SqliteNonceStore implements NonceStore {
  readonly path: string;
  readonly #now: () => number;
  readonly #purgeIntervalMs: number;
  readonly #busyTimeoutMs: number;
  readonly #synchronous: "normal" | "full";
  #db: Database.Database | undefined;
  #st: Statements | undefined;
  #nextPurgeAtMs: number;
  #closed = false;
  readonly #pendingCommits = new Map<string, PendingCommit>();
  #flushScheduled = false;

  constructor(path: string, options: SqliteNonceStoreOptions = {}) {
    if (path === "") throw new ProtocolError("CFG_ERR_INVALID", "sqlite nonce store: empty path");
    loadSqlite("tokens.store sqlite:PATH");
    this.path = path;
    this.#now = options.now ?? Date.now;
    this.#purgeIntervalMs = options.purgeIntervalMs ?? NONCE_STORE_DEFAULTS.purgeIntervalMs;
    this.#busyTimeoutMs = options.busyTimeoutMs ?? NONCE_STORE_DEFAULTS.busyTimeoutMs;
    this.#synchronous = options.synchronous ?? "normal";
    this.#nextPurgeAtMs = this.#now() + this.#purgeIntervalMs;
    // Open now so a misconfigured path shows up at start (readiness fails), but do not throw:
    // an unreachable store is answered with 503 per request, and reopened when it is back.
    try {
      this.#open();
    } catch {
      // #open left #db undefined; every operation retries and reports PP_ERR_STORE_UNAVAILABLE.
    }
  }

  #open(): Statements {
    if (this.#st !== undefined) return this.#st;
    const db = openSqlite(this.path, { busyTimeoutMs: this.#busyTimeoutMs, synchronous: this.#synchronous, schema: SCHEMA });
    try {
      const st = {
        select: db.prepare<[Uint8Array], Row>("SELECT digest, committed, holders, expires_at FROM veil_nonces WHERE nonce = ?"),
        insert: db.prepare<[Uint8Array, Uint8Array, number]>(
          "INSERT OR REPLACE INTO veil_nonces (nonce, digest, committed, holders, expires_at) VALUES (?, ?, 0, 1, ?)",
        ),
        insertIfAbsent: db.prepare<[Uint8Array, Uint8Array, number]>(
          "INSERT INTO veil_nonces (nonce, digest, committed, holders, expires_at) VALUES (?, ?, 0, 1, ?) ON CONFLICT (nonce) DO NOTHING",
        ),
        addHolder: db.prepare<[Uint8Array]>("UPDATE veil_nonces SET holders = holders + 1 WHERE nonce = ? AND committed = 0"),
        commit: db.prepare<[Uint8Array, Uint8Array]>("UPDATE veil_nonces SET committed = 1 WHERE nonce = ? AND digest = ?"),
        release: db.prepare<[Uint8Array, Uint8Array]>(
          "UPDATE veil_nonces SET holders = holders - 1 WHERE nonce = ? AND digest = ? AND committed = 0",
        ),
        deleteIfFree: db.prepare<[Uint8Array]>("DELETE FROM veil_nonces WHERE nonce = ? AND committed = 0 AND holders <= 0"),
        purge: db.prepare<[number]>(
          `DELETE FROM veil_nonces WHERE nonce IN (SELECT nonce FROM veil_nonces WHERE expires_at <= ? LIMIT ${PURGE_BATCH})`,
        ),
      };
      // BEGIN IMMEDIATE: the write lock is taken before the read, so the check-then-insert is
      // atomic across processes, not only within this one.
      const reserveTx = db.transaction((nonce: Uint8Array, digest: Uint8Array, expiresAtMs: number, now: number): ReserveOutcome => {
        const row = st.select.get(nonce);
        if (row !== undefined && row.expires_at > now) {
          if (!equalBytes(row.digest, digest)) return "spent";
          if (row.committed === 0) st.addHolder.run(nonce);
          return "retry";
        }
        // An entry never starts out dead (a caller's clock may be behind ours).
        st.insert.run(nonce, digest, Math.max(expiresAtMs, now + MIN_ENTRY_TTL_MS));
        return "new";
      });
      const commitTx = db.transaction((batch: readonly PendingCommit[]) => {
        for (const c of batch) st.commit.run(c.nonce, c.digest);
      });
      const releaseTx = db.transaction((nonce: Uint8Array, digest: Uint8Array) => {
        if (st.release.run(nonce, digest).changes > 0) st.deleteIfFree.run(nonce);
      });
      this.#db = db;
      this.#st = {
        ...st,
        commitMany: (batch) => commitTx.immediate(batch),
        releaseOne: (n, g) => releaseTx.immediate(n, g),
        reserve: (n, g, e, now) => {
          // Fast path, the common case (a fresh token): one autocommit INSERT, itself atomic. When
          // the nonce is there already (a retry, a double spend, an expired entry), the full
          // check-then-write transaction decides.
          if (st.insertIfAbsent.run(n, g, Math.max(e, now + MIN_ENTRY_TTL_MS)).changes === 1) return "new";
          return reserveTx.immediate(n, g, e, now);
        },
      };
      return this.#st;
    } catch (e) {
      closeQuietly(db);
      throw e;
    }
  }

  #fail(e: unknown, what: string): never {
    if (isConnectionBroken(e)) this.#drop();
    throw new ProtocolError("PP_ERR_STORE_UNAVAILABLE", `sqlite nonce store: ${what} failed`, { cause: e });
  }

  #drop(): void {
    const db = this.#db;
    this.#db = undefined;
    this.#st = undefined;
    closeQuietly(db);
  }

  #statements(): Statements {
    if (this.#closed) throw new ProtocolError("PP_ERR_STORE_UNAVAILABLE", "sqlite nonce store is closed");
    try {
      return this.#open();
    } catch (e) {
      return this.#fail(e, "open");
    }
  }

  async reserve(nonce: Uint8Array, digest: Uint8Array, expiresAtMs: number): Promise<ReserveOutcome> {
    const st = this.#statements();
    const now = this.#now();
    try {
      if (now >= this.#nextPurgeAtMs) {
        this.#nextPurgeAtMs = now + this.#purgeIntervalMs;
        st.purge.run(now);
      }
      return st.reserve(asBuffer(nonce), asBuffer(digest), expiresAtMs, now);
    } catch (e) {
      return this.#fail(e, "reserve");
    }
  }

  /**
   * Commits are written in batches, one write transaction per event-loop turn, not one each: a
   * commit only has to make sure the entry is never released, and an entry whose holder does not
   * release it is never deleted anyway (see ./types.ts), so a commit still pending when the process
   * dies leaves the token bound to its request, exactly as a committed one. Within this process,
   * release() treats a pending commit as written.
   */
  async commit(nonce: Uint8Array, digest: Uint8Array): Promise<void> {
    this.#statements();
    const key = hexOf(nonce);
    this.#pendingCommits.set(key, { nonce: Buffer.from(nonce), digest: Buffer.from(digest) });
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flushCommits());
    }
  }

  #flushCommits(): void {
    this.#flushScheduled = false;
    if (this.#pendingCommits.size === 0) return;
    const batch = [...this.#pendingCommits.values()];
    this.#pendingCommits.clear();
    try {
      this.#statements().commitMany(batch);
    } catch (e) {
      // The entries stay reserved: still bound to their requests (fail safe, nothing to undo).
      if (isConnectionBroken(e)) this.#drop();
    }
  }

  async release(nonce: Uint8Array, digest: Uint8Array): Promise<void> {
    const st = this.#statements();
    const pending = this.#pendingCommits.get(hexOf(nonce));
    if (pending !== undefined && equalBytes(pending.digest, digest)) return; // committed
    try {
      st.releaseOne(asBuffer(nonce), asBuffer(digest));
    } catch (e) {
      this.#fail(e, "release");
    }
  }

  async ping(): Promise<void> {
    const st = this.#statements();
    try {
      st.select.get(Buffer.alloc(32));
    } catch (e) {
      this.#fail(e, "ping");
    }
  }

  async close(): Promise<void> {
    if (!this.#closed) {
      this.#flushCommits();
      this.#closed = true;
    }
    this.#drop();
  }
}

function hexOf(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

/** A Buffer view of exactly the bytes of `b` (no copy), as better-sqlite3 binds Buffers as BLOBs. */
function asBuffer(b: Uint8Array): Buffer {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}
