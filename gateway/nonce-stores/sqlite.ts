// SQLite double-spend store (`sqlite:PATH`): the embedded default. It survives restarts (a nonce
// committed before a SIGKILL is still spent afterwards) and is shared by every gateway process on
// one machine that opens the same file (`--workers N`). Semantics: ./types.ts.
//
// Atomicity across processes: reserve runs as one `BEGIN IMMEDIATE` transaction, which takes the
// database's write lock before reading, so two processes can never both see "no entry" and both
// answer "new". Other writers wait for the lock up to `busy_timeout`; beyond that the operation
// fails with PP_ERR_STORE_UNAVAILABLE (the gate answers 503: fail closed).
//
// Group writes: commits are written at the end of the event-loop turn (`setImmediate`), all of
// that turn's in one write transaction; a reserve asked for while such a write is due joins it
// instead of being a transaction of its own (under load, most do), and one asked for while none
// is due is written at once. A write transaction costs SQLite its locks and a WAL append whatever
// it holds, while each row in it costs a fraction of that (bench/tokens-gateway.ts). The reserves
// of a group run first, in the order they were asked for, and each does exactly what it would do
// alone, so the answers are the same; a reserve is answered only after its transaction committed.
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
  /** One write transaction for the reserves and commits of one event-loop turn (reserves first, in order). */
  writeMany: (reserves: readonly PendingReserve[], commits: readonly PendingCommit[]) => ReserveOutcome[];
  /** A reserve on its own (when no group write is due in this turn). */
  reserveNow: (nonce: Uint8Array, digest: Uint8Array, expiresAtMs: number, now: number) => ReserveOutcome;
  /** Release as one write transaction (one holder less; delete when none is left). */
  releaseOne: (nonce: Uint8Array, digest: Uint8Array) => void;
}

interface PendingCommit {
  nonce: Buffer;
  digest: Buffer;
}

interface PendingReserve {
  nonce: Buffer;
  digest: Buffer;
  expiresAtMs: number;
  now: number;
  resolve: (outcome: ReserveOutcome) => void;
  reject: (e: unknown) => void;
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
  #pendingReserves: PendingReserve[] = [];
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
      // Inside a write transaction (taken with BEGIN IMMEDIATE: the write lock is held before the
      // read, so the check-then-insert is atomic across processes, not only within this one).
      const reserveOne = (nonce: Uint8Array, digest: Uint8Array, expiresAtMs: number, now: number): ReserveOutcome => {
        // An entry never starts out dead (a caller's clock may be behind ours).
        const expiresAt = Math.max(expiresAtMs, now + MIN_ENTRY_TTL_MS);
        // The common case (a fresh token): one INSERT. When the nonce is there already (a retry,
        // a double spend, an expired entry), the check decides.
        if (st.insertIfAbsent.run(nonce, digest, expiresAt).changes === 1) return "new";
        const row = st.select.get(nonce);
        if (row !== undefined && row.expires_at > now) {
          if (!equalBytes(row.digest, digest)) return "spent";
          if (row.committed === 0) st.addHolder.run(nonce);
          return "retry";
        }
        st.insert.run(nonce, digest, expiresAt);
        return "new";
      };
      const reserveTx = db.transaction(reserveOne);
      const writeTx = db.transaction((reserves: readonly PendingReserve[], commits: readonly PendingCommit[]): ReserveOutcome[] => {
        const outcomes = reserves.map((r) => reserveOne(r.nonce, r.digest, r.expiresAtMs, r.now));
        for (const c of commits) st.commit.run(c.nonce, c.digest);
        return outcomes;
      });
      const releaseTx = db.transaction((nonce: Uint8Array, digest: Uint8Array) => {
        if (st.release.run(nonce, digest).changes > 0) st.deleteIfFree.run(nonce);
      });
      this.#db = db;
      this.#st = {
        ...st,
        writeMany: (reserves, commits) => writeTx.immediate(reserves, commits),
        reserveNow: (n, g, e, now) => {
          // A fresh token: one autocommit INSERT, itself atomic, costs less than a transaction
          // around it; anything else takes the transaction.
          if (st.insertIfAbsent.run(n, g, Math.max(e, now + MIN_ENTRY_TTL_MS)).changes === 1) return "new";
          return reserveTx.immediate(n, g, e, now);
        },
        releaseOne: (n, g) => releaseTx.immediate(n, g),
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
    if (!this.#flushScheduled) {
      // No group write due in this turn: write now, as the only transaction.
      try {
        this.#purgeIfDue(st, now);
        return st.reserveNow(asBuffer(nonce), asBuffer(digest), expiresAtMs, now);
      } catch (e) {
        return this.#fail(e, "reserve");
      }
    }
    // A group write is due at the end of this turn (commits are waiting): join it. Copies: the
    // caller's buffers may change before then.
    const pending = { nonce: Buffer.from(nonce), digest: Buffer.from(digest), expiresAtMs, now };
    return new Promise<ReserveOutcome>((resolve, reject) => this.#pendingReserves.push({ ...pending, resolve, reject }));
  }

  #purgeIfDue(st: Statements, now: number): void {
    if (now < this.#nextPurgeAtMs) return;
    this.#nextPurgeAtMs = now + this.#purgeIntervalMs;
    st.purge.run(now);
  }

  /**
   * Commits are written with the next group, not on their own: a commit only has to make sure the
   * entry is never released, and an entry whose holder does not release it is never deleted anyway
   * (see ./types.ts), so a commit still pending when the process dies leaves the token bound to
   * its request, exactly as a committed one. Within this process, release() treats a pending
   * commit as written.
   */
  async commit(nonce: Uint8Array, digest: Uint8Array): Promise<void> {
    this.#statements();
    const key = hexOf(nonce);
    this.#pendingCommits.set(key, { nonce: Buffer.from(nonce), digest: Buffer.from(digest) });
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => this.#flush());
  }

  /** Writes the pending reserves and commits in one transaction and answers the reserves. */
  #flush(): void {
    this.#flushScheduled = false;
    const reserves = this.#pendingReserves;
    if (reserves.length === 0 && this.#pendingCommits.size === 0) return;
    const commits = [...this.#pendingCommits.values()];
    this.#pendingReserves = [];
    this.#pendingCommits.clear();
    let outcomes: ReserveOutcome[];
    try {
      const st = this.#statements();
      if (reserves.length > 0) this.#purgeIfDue(st, this.#now());
      outcomes = st.writeMany(reserves, commits);
    } catch (e) {
      // Every reserve of the group fails closed; the commits' entries stay reserved: still bound
      // to their requests (fail safe, nothing to undo).
      if (isConnectionBroken(e) && !(e instanceof ProtocolError)) this.#drop();
      const err = e instanceof ProtocolError ? e : new ProtocolError("PP_ERR_STORE_UNAVAILABLE", "sqlite nonce store: reserve failed", { cause: e });
      for (const r of reserves) r.reject(err);
      return;
    }
    reserves.forEach((r, i) => r.resolve(outcomes[i]!));
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
      this.#flush();
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
