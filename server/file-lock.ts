// An exclusive lock on a file that processes change by read-modify-write (`<file>.lock`): the
// gateway's key file (`veil keys`) and the issuer's (the running issuer's scheduled steps and
// `veil issuer rotate --now`). Without it, two writers at once would both read the old file and
// the last atomic rename would silently drop the other's change. Readers take no lock: every
// write is an atomic rename, so a reader always sees a whole file, old or new.
//
// The lock file holds its holder's pid and start time (JSON, mode 0600, created with
// O_CREAT|O_EXCL). A lock whose holder is gone is taken over; a live holder is waited for, then
// the command fails with CFG_ERR_KEY_FILE_LOCKED naming the lock file.

import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { ProtocolError } from "../core/errors.js";

/** How long a command waits for another process's lock on a file before failing. */
export const FILE_LOCK_WAIT_MS = 5_000;
const LOCK_POLL_MS = 25;

export interface FileLockOptions {
  /** Longest wait for a lock another process holds (default FILE_LOCK_WAIT_MS). */
  waitMs?: number;
  /** Called once when the lock is held by another live process and the wait begins. */
  onWait?: (holder: string) => void;
}

interface LockHolder {
  pid: number;
  startedAt: string;
}

/** The lock's text, or undefined once it is gone. */
function readLock(lock: string): string | undefined {
  try {
    return readFileSync(lock, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

function parseHolder(text: string): LockHolder | undefined {
  try {
    const v: unknown = JSON.parse(text);
    if (typeof v === "object" && v !== null && "pid" in v && "startedAt" in v && typeof v.pid === "number" && Number.isInteger(v.pid) && v.pid > 0 && typeof v.startedAt === "string") {
      return { pid: v.pid, startedAt: v.startedAt };
    }
  } catch {
    // half-written or foreign: treated as held (see below)
  }
  return undefined;
}

/**
 * Whether `pid` names a running process. Only ESRCH ("no such process") counts as dead: EPERM means
 * it exists under another user. A live pid is respected even if it might be an unrelated process
 * that reused a dead holder's pid: taking a lock from a command that is still writing would bring
 * back the lost update the lock exists to prevent, whereas a wrongly respected lock only makes the
 * command fail with a message naming the lock file to remove.
 */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

/** Creates `path` exclusively (O_CREAT|O_EXCL, mode 0600) holding `text`; false if it exists. */
function createExclusive(path: string, text: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, "wx", 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw e;
  }
  try {
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
  return true;
}

/**
 * Removes a lock whose holder died, if it still holds exactly `seen`. The check and the unlink run
 * under `<lock>.break` so that two waiters taking over the same stale lock cannot have the second
 * one delete the fresh lock the first one has just created. The break file lives for microseconds;
 * one left by a process that died inside that window is removed the same way (by its dead pid).
 */
function breakStaleLock(lock: string, seen: string): void {
  const breaker = `${lock}.break`;
  if (!createExclusive(breaker, JSON.stringify({ pid: process.pid, startedAt: new Date().toISOString() }))) {
    const text = readLock(breaker);
    const holder = text === undefined ? undefined : parseHolder(text);
    if (holder !== undefined && !isAlive(holder.pid)) unlinkSync(breaker);
    return;
  }
  try {
    if (readLock(lock) === seen) unlinkSync(lock);
  } finally {
    unlinkSync(breaker);
  }
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/**
 * Takes `<file>.lock` (waiting up to `waitMs` for a live holder; taking over one whose process is
 * gone) and returns its release. The commands are synchronous between reads and writes, so the
 * wait blocks the thread (Atomics.wait) rather than the event loop's timers.
 */
export function lockFile(file: string, opts: FileLockOptions = {}): () => void {
  const lock = `${file}.lock`;
  const waitMs = opts.waitMs ?? FILE_LOCK_WAIT_MS;
  const deadline = Date.now() + waitMs;
  const mine = JSON.stringify({ pid: process.pid, startedAt: new Date().toISOString() } satisfies LockHolder);
  let waiting = false;
  for (;;) {
    try {
      if (createExclusive(lock, mine)) break;
    } catch (e) {
      throw new ProtocolError("CFG_ERR_KEY_FILE", `${file}: cannot create lock ${lock} (${(e as NodeJS.ErrnoException).code ?? "error"})`, { cause: e });
    }
    const text = readLock(lock);
    if (text === undefined) continue; // released between our attempt and the read
    const holder = parseHolder(text);
    if (holder !== undefined && !isAlive(holder.pid)) {
      breakStaleLock(lock, text);
      continue;
    }
    const who = holder === undefined ? "an unknown process" : `pid ${holder.pid} (since ${holder.startedAt})`;
    if (Date.now() >= deadline) {
      throw new ProtocolError(
        "CFG_ERR_KEY_FILE_LOCKED",
        `${file}: locked by ${who}; gave up after ${waitMs / 1000} s (if no veil command is changing this file, remove ${lock})`,
      );
    }
    if (!waiting) {
      waiting = true;
      opts.onWait?.(`${file}: locked by ${who}; waiting up to ${waitMs / 1000} s`);
    }
    Atomics.wait(sleeper, 0, 0, Math.min(LOCK_POLL_MS, Math.max(1, deadline - Date.now())));
  }
  return () => {
    // Only our own lock is removed (a lock is never taken from a live holder, so this is a guard).
    if (readLock(lock) === mine) unlinkSync(lock);
  };
}

/** Runs `fn` (a read-modify-write of `file`) holding the file's lock for its whole duration. */
export async function withFileLock<T>(file: string, fn: () => T | Promise<T>, opts: FileLockOptions = {}): Promise<T> {
  const release = lockFile(file, opts);
  try {
    return await fn();
  } finally {
    release();
  }
}
