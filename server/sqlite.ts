// Opening the SQLite files that several processes share (the gateway's nonce store, the issuer's
// quota store): parent folder created, busy_timeout, WAL journal, synchronous level, schema.
// Both stores open lazily and reopen after a broken connection; they fail closed (503) meanwhile.

import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import type Database from "better-sqlite3";
import { requireOptional } from "./optional-dependency.js";

export interface SqliteOpenOptions {
  /** How long to wait for another process's write lock (ms). */
  busyTimeoutMs: number;
  /** PRAGMA synchronous: "normal" (crash-safe under WAL) or "full" (also power-loss-safe). */
  synchronous: "normal" | "full";
  /** CREATE TABLE IF NOT EXISTS ... statements. */
  schema: string;
}

let loaded: typeof Database | undefined;

/**
 * better-sqlite3 (an optional dependency, loaded on first use). The stores call it in their
 * constructors, so a sqlite: setting without the package fails at start-up, naming `purpose`.
 */
export function loadSqlite(purpose: string): typeof Database {
  loaded ??= requireOptional<typeof Database>("better-sqlite3", purpose);
  return loaded;
}

/** SQLite errors after which the connection is closed and reopened on the next operation. */
export function isConnectionBroken(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return true;
  return !(code === "SQLITE_BUSY" || code.startsWith("SQLITE_BUSY_") || code === "SQLITE_LOCKED");
}

/** Closes a connection that may already be broken (closing it may fail too; it is dropped either way). */
export function closeQuietly(db: Database.Database | undefined): void {
  try {
    db?.close();
  } catch {
    // already broken
  }
}

/** Opens `path` (creating its folder, mode 0700) with WAL and the schema; throws what SQLite throws. */
export function openSqlite(path: string, options: SqliteOpenOptions): Database.Database {
  const Sqlite = loadSqlite("a sqlite: store");
  try {
    // The default paths (under data/) must work on a fresh checkout.
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  } catch {
    // reported by the open below
  }
  let db: Database.Database | undefined;
  try {
    db = new Sqlite(path, { timeout: options.busyTimeoutMs });
    db.pragma(`busy_timeout = ${options.busyTimeoutMs}`);
    // journal_mode needs a lock that the busy handler may not wait for: retry a few times.
    for (let attempt = 0; ; attempt++) {
      try {
        db.pragma("journal_mode = WAL");
        break;
      } catch (e) {
        if (attempt >= 20 || isConnectionBroken(e)) throw e;
      }
    }
    db.pragma(`synchronous = ${options.synchronous === "full" ? "FULL" : "NORMAL"}`);
    db.exec(options.schema);
    return db;
  } catch (e) {
    closeQuietly(db);
    throw e;
  }
}
