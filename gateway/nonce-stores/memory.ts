// In-memory double-spend store: one process only (tests, single-process demos). Bounded: at most
// `maxEntries` live entries; when full of unexpired entries it fails closed (PP_ERR_STORE_UNAVAILABLE)
// rather than forgetting a spent nonce. Semantics: ./types.ts.

import { ProtocolError } from "../../core/errors.js";
import { MIN_ENTRY_TTL_MS, NONCE_STORE_DEFAULTS, type NonceStore, type NonceStoreOptions, type ReserveOutcome } from "./types.js";

/** Node's native hex encoder (this store is Node-only; it is on every upload's path). */
function hexOf(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

interface Entry {
  digest: string;
  committed: boolean;
  holders: number;
  expiresAtMs: number;
}

export interface MemoryNonceStoreOptions extends NonceStoreOptions {
  maxEntries?: number;
}

export class MemoryNonceStore implements NonceStore {
  readonly #entries = new Map<string, Entry>();
  readonly #now: () => number;
  readonly #purgeIntervalMs: number;
  readonly #maxEntries: number;
  #nextPurgeAtMs: number;
  #closed = false;

  constructor(options: MemoryNonceStoreOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#purgeIntervalMs = options.purgeIntervalMs ?? NONCE_STORE_DEFAULTS.purgeIntervalMs;
    this.#maxEntries = options.maxEntries ?? NONCE_STORE_DEFAULTS.maxEntries;
    if (!Number.isInteger(this.#maxEntries) || this.#maxEntries < 1) throw new RangeError("maxEntries must be a positive integer");
    this.#nextPurgeAtMs = this.#now() + this.#purgeIntervalMs;
  }

  /** Live entries (expired ones not yet purged included). */
  get size(): number {
    return this.#entries.size;
  }

  #check(): void {
    if (this.#closed) throw new ProtocolError("PP_ERR_STORE_UNAVAILABLE", "nonce store is closed");
  }

  #live(key: string, now: number): Entry | undefined {
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    if (e.expiresAtMs <= now) {
      this.#entries.delete(key);
      return undefined;
    }
    return e;
  }

  #purge(now: number): void {
    for (const [k, e] of this.#entries) if (e.expiresAtMs <= now) this.#entries.delete(k);
    this.#nextPurgeAtMs = now + this.#purgeIntervalMs;
  }

  async reserve(nonce: Uint8Array, digest: Uint8Array, expiresAtMs: number): Promise<ReserveOutcome> {
    this.#check();
    const now = this.#now();
    if (now >= this.#nextPurgeAtMs) this.#purge(now);
    const key = hexOf(nonce);
    const d = hexOf(digest);
    const e = this.#live(key, now);
    if (e !== undefined) {
      if (e.digest !== d) return "spent";
      if (!e.committed) e.holders++;
      return "retry";
    }
    if (this.#entries.size >= this.#maxEntries) {
      this.#purge(now);
      if (this.#entries.size >= this.#maxEntries) {
        throw new ProtocolError("PP_ERR_STORE_UNAVAILABLE", "nonce store is full");
      }
    }
    // An entry never starts out dead (a caller's clock may be behind ours).
    this.#entries.set(key, { digest: d, committed: false, holders: 1, expiresAtMs: Math.max(expiresAtMs, now + MIN_ENTRY_TTL_MS) });
    return "new";
  }

  async commit(nonce: Uint8Array, digest: Uint8Array): Promise<void> {
    this.#check();
    const e = this.#live(hexOf(nonce), this.#now());
    if (e !== undefined && e.digest === hexOf(digest)) e.committed = true;
  }

  async release(nonce: Uint8Array, digest: Uint8Array): Promise<void> {
    this.#check();
    const key = hexOf(nonce);
    const e = this.#live(key, this.#now());
    if (e === undefined || e.committed || e.digest !== hexOf(digest)) return;
    e.holders--;
    if (e.holders <= 0) this.#entries.delete(key);
  }

  async ping(): Promise<void> {
    this.#check();
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#entries.clear();
  }
}
