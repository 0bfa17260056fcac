// Redis double-spend store (`redis://...`, `rediss://...`): shared by gateways on several machines.
// Semantics: ./types.ts. Each operation is one Lua script, which Redis runs atomically, so a
// reserve's check-then-set cannot interleave with another gateway's. Entries expire with PEXPIRE
// (Redis purges them itself).
//
// Operating notes:
// - Keep Redis's `maxmemory-policy` at `noeviction` (its default): an evicting policy could forget
//   a spent nonce. With noeviction a full Redis refuses writes, and the gate fails closed (503).
// - Commands never queue while Redis is unreachable (`enableOfflineQueue: false`) and time out
//   after `commandTimeoutMs`: an upload gets a prompt 503 instead of waiting on a reconnect.

import type { Redis } from "ioredis";
import { requireOptional } from "../../server/optional-dependency.js";
import { ProtocolError } from "../../core/errors.js";
import { toHex } from "../../core/bytes.js";
import { MIN_ENTRY_TTL_MS, NONCE_STORE_DEFAULTS, type NonceStore, type NonceStoreOptions, type ReserveOutcome } from "./types.js";

export interface RedisNonceStoreOptions extends NonceStoreOptions {
  commandTimeoutMs?: number;
  connectTimeoutMs?: number;
  keyPrefix?: string;
}

// A nonce's entry is a hash: d = hex digest of the request it paid for, c = committed (0/1),
// h = holders (requests in flight with it; see ./types.ts).
const RESERVE = `
local e = redis.call('HMGET', KEYS[1], 'd', 'c')
if not e[1] then
  redis.call('HSET', KEYS[1], 'd', ARGV[1], 'c', '0', 'h', '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'new'
end
if e[1] ~= ARGV[1] then return 'spent' end
if e[2] == '0' then redis.call('HINCRBY', KEYS[1], 'h', 1) end
return 'retry'
`;
const COMMIT = `
if redis.call('HGET', KEYS[1], 'd') == ARGV[1] then redis.call('HSET', KEYS[1], 'c', '1') end
return 1
`;
const RELEASE = `
local e = redis.call('HMGET', KEYS[1], 'd', 'c')
if e[1] == ARGV[1] and e[2] == '0' then
  if redis.call('HINCRBY', KEYS[1], 'h', -1) <= 0 then redis.call('DEL', KEYS[1]) end
end
return 1
`;

interface Scripts {
  veilReserve(key: string, digest: string, ttlMs: number): Promise<string>;
  veilCommit(key: string, digest: string): Promise<number>;
  veilRelease(key: string, digest: string): Promise<number>;
}

export class RedisNonceStore implements NonceStore {
  readonly #redis: Redis;
  readonly #scripts: Scripts;
  readonly #now: () => number;
  readonly #prefix: string;
  readonly #ready: Promise<void>;
  #closed = false;

  constructor(url: string, options: RedisNonceStoreOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#prefix = options.keyPrefix ?? NONCE_STORE_DEFAULTS.redisKeyPrefix;
    // ioredis is an optional dependency, loaded only for a redis:// store.
    const ioredis = requireOptional<typeof import("ioredis")>("ioredis", "tokens.store redis://");
    this.#redis = new ioredis.Redis(url, {
      lazyConnect: true,
      // Why not ioredis's defaults (queue commands while disconnected, retry each 20 times): an
      // upload must get an answer promptly; failing closed with 503 is the answer when Redis is down.
      enableOfflineQueue: false,
      // Commands issued in the same tick (concurrent uploads) go out in one write.
      enableAutoPipelining: true,
      maxRetriesPerRequest: 0,
      commandTimeout: options.commandTimeoutMs ?? NONCE_STORE_DEFAULTS.redisCommandTimeoutMs,
      connectTimeout: options.connectTimeoutMs ?? NONCE_STORE_DEFAULTS.redisConnectTimeoutMs,
      // Keep reconnecting forever, at most once a second: the store comes back when Redis does.
      retryStrategy: (times: number) => Math.min(50 * times, 1_000),
    });
    // Without a listener, ioredis's connection errors would be unhandled 'error' events. They are
    // reported per operation (PP_ERR_STORE_UNAVAILABLE) and by ping() for readiness.
    this.#redis.on("error", () => {});
    this.#redis.defineCommand("veilReserve", { numberOfKeys: 1, lua: RESERVE });
    this.#redis.defineCommand("veilCommit", { numberOfKeys: 1, lua: COMMIT });
    this.#redis.defineCommand("veilRelease", { numberOfKeys: 1, lua: RELEASE });
    this.#scripts = this.#redis as unknown as Scripts;
    this.#ready = this.#redis.connect().catch(() => {
      // Not fatal: retryStrategy keeps trying; operations fail closed until it succeeds.
    });
  }

  /** Resolves once the first connection attempt has finished (successfully or not). */
  get connected(): Promise<void> {
    return this.#ready;
  }

  #key(nonce: Uint8Array): string {
    return this.#prefix + toHex(nonce);
  }

  async #run<T>(what: string, op: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new ProtocolError("PP_ERR_STORE_UNAVAILABLE", "redis nonce store is closed");
    // The first connection attempt (bounded by connectTimeoutMs) is waited for; later outages fail fast.
    await this.#ready;
    try {
      return await op();
    } catch (e) {
      throw new ProtocolError("PP_ERR_STORE_UNAVAILABLE", `redis nonce store: ${what} failed`, { cause: e });
    }
  }

  async reserve(nonce: Uint8Array, digest: Uint8Array, expiresAtMs: number): Promise<ReserveOutcome> {
    const ttlMs = Math.max(MIN_ENTRY_TTL_MS, Math.ceil(expiresAtMs - this.#now()));
    const out = await this.#run("reserve", () => this.#scripts.veilReserve(this.#key(nonce), toHex(digest), ttlMs));
    if (out === "new" || out === "retry" || out === "spent") return out;
    throw new ProtocolError("PP_ERR_STORE_UNAVAILABLE", "redis nonce store: unexpected reserve answer");
  }

  async commit(nonce: Uint8Array, digest: Uint8Array): Promise<void> {
    await this.#run("commit", () => this.#scripts.veilCommit(this.#key(nonce), toHex(digest)));
  }

  async release(nonce: Uint8Array, digest: Uint8Array): Promise<void> {
    await this.#run("release", () => this.#scripts.veilRelease(this.#key(nonce), toHex(digest)));
  }

  async ping(): Promise<void> {
    await this.#run("ping", () => this.#redis.ping());
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#ready;
    try {
      await this.#redis.quit();
    } catch {
      this.#redis.disconnect();
    }
  }
}
