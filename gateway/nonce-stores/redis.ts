// Redis double-spend store (`redis://...`, `rediss://...`): shared by gateways on several machines.
// Semantics: ./types.ts. Each operation is one Lua script, which Redis runs atomically, so a
// reserve's check-then-set cannot interleave with another gateway's. Entries expire with PEXPIRE
// (Redis purges them itself). Connection: server/redis.ts (no offline queue, command timeout:
// an upload gets a prompt 503 while Redis is down, never a wait).
//
// Noticing that Redis forgot spends (a restart without persistence, FLUSHALL, a failover to an
// empty replica, eviction):
// - A marker key (`<prefix>marker`, no expiry) holds "<random id>:<lostAtMs>". The first gateway on
//   an empty store writes it with lostAtMs 0. Every reserve checks, inside its script, that the
//   marker is the one this process knows before it touches the nonce: a missing or different
//   marker answers "lost" and writes nothing. So a loss is noticed by the first reserve after it,
//   or by the first readiness check (ping), which reads the marker too.
// - On "lost", the gateway re-creates the marker with lostAtMs = now (or adopts the one another
//   gateway already re-created, with that gateway's lostAtMs), tells `onLoss`, and retries the
//   reserve. Every gateway sharing the store thus learns of the loss, with the same lostAtMs, and
//   a gateway started later reads it from the marker. gateway/store-loss.ts decides which tokens
//   are refused after it.
// - Eviction leaves the marker (it is the most recently used key) but forgets nonces: INFO
//   evicted_keys is compared with its value at start-up at most every `redisHealthCheckMs`, on
//   reserves and readiness checks; a rise is a loss too (the marker is rewritten so the other
//   gateways learn it).
// - Start-up check (`durability: "verify"`, the default): `maxmemory-policy` must be `noeviction`
//   and `appendonly` must be `yes`, read with CONFIG GET; otherwise, or when CONFIG GET is refused
//   (managed Redis often blocks it), the store refuses to start (CFG_ERR_INVALID). The check is
//   repeated on readiness checks; a store found unsafe later answers 503 until it is fixed.
//   `durability: "trust"` skips the settings check (the operator vouches for them); the marker
//   is kept either way.

import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { ProtocolError } from "../../core/errors.js";
import { toHex } from "../../core/bytes.js";
import { closeRedis, connectFailClosed, type FailClosedRedis } from "../../server/redis.js";
import { MIN_ENTRY_TTL_MS, NONCE_STORE_DEFAULTS, type NonceStore, type NonceStoreOptions, type ReserveOutcome, type StoreLoss } from "./types.js";

export type StoreDurability = "verify" | "trust";

export interface RedisNonceStoreOptions extends NonceStoreOptions {
  commandTimeoutMs?: number;
  connectTimeoutMs?: number;
  keyPrefix?: string;
  /** "verify" (default): refuse Redis settings that allow silent loss; "trust": do not check them. */
  durability?: StoreDurability;
}

// A nonce's entry is a hash: d = hex digest of the request it paid for, c = committed (0/1),
// h = holders (requests in flight with it; see ./types.ts). KEYS[2] is the marker, ARGV[3] the
// marker this process knows.
const RESERVE = `
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return 'lost' end
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
// Replaces the marker this process knew (ARGV[1]; "" at start-up) by ARGV[2], unless another
// gateway already replaced it: then that one stays. Returns the marker in force.
const RENEW_MARKER = `
local m = redis.call('GET', KEYS[1])
if not m or m == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return m
`;

interface Scripts {
  veilReserve(key: string, marker: string, digest: string, ttlMs: number, expected: string): Promise<string>;
  veilCommit(key: string, digest: string): Promise<number>;
  veilRelease(key: string, digest: string): Promise<number>;
  veilRenewMarker(marker: string, known: string, next: string): Promise<string>;
}

function markerValue(lostAtMs: number): string {
  return `${randomBytes(12).toString("hex")}:${lostAtMs}`;
}

function lostAtOf(marker: string): number {
  const n = Number(marker.slice(marker.indexOf(":") + 1));
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

/** The values of `CONFIG GET name` (ioredis answers [name, value]). */
async function configGet(redis: Redis, name: string): Promise<string> {
  const r = (await redis.call("CONFIG", "GET", name));
  if (!Array.isArray(r) || typeof r[1] !== "string") throw new Error(`CONFIG GET ${name}: no value`);
  return r[1];
}

function evictedKeysOf(info: string): number {
  const m = /(?:^|\r?\n)evicted_keys:(\d+)/.exec(info);
  return m === null ? 0 : Number(m[1]);
}

export class RedisNonceStore implements NonceStore {
  readonly #conn: FailClosedRedis;
  readonly #redis: Redis;
  readonly #scripts: Scripts;
  readonly #now: () => number;
  readonly #prefix: string;
  readonly #markerKey: string;
  readonly #durability: StoreDurability;
  readonly #onLoss: (loss: StoreLoss) => void;
  /** The marker this process knows; undefined until the store was set up on a connection. */
  #marker: string | undefined;
  #setup: Promise<void> | undefined;
  /** Why the settings are unsafe (verify mode), or undefined. */
  #unsafe: string | undefined;
  #evictedKeys: number | undefined;
  #nextHealthCheckMs = 0;
  #renewing: Promise<void> | undefined;
  #loss: StoreLoss | undefined;
  #closed = false;

  constructor(url: string, options: RedisNonceStoreOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#prefix = options.keyPrefix ?? NONCE_STORE_DEFAULTS.redisKeyPrefix;
    this.#markerKey = `${this.#prefix}marker`;
    this.#durability = options.durability ?? "verify";
    this.#onLoss = options.onLoss ?? (() => {});
    this.#conn = connectFailClosed(url, {
      commandTimeoutMs: options.commandTimeoutMs ?? NONCE_STORE_DEFAULTS.redisCommandTimeoutMs,
      connectTimeoutMs: options.connectTimeoutMs ?? NONCE_STORE_DEFAULTS.redisConnectTimeoutMs,
    }, "tokens.store redis://");
    this.#redis = this.#conn.redis;
    this.#redis.defineCommand("veilReserve", { numberOfKeys: 2, lua: RESERVE });
    this.#redis.defineCommand("veilCommit", { numberOfKeys: 1, lua: COMMIT });
    this.#redis.defineCommand("veilRelease", { numberOfKeys: 1, lua: RELEASE });
    this.#redis.defineCommand("veilRenewMarker", { numberOfKeys: 1, lua: RENEW_MARKER });
    this.#scripts = this.#redis as unknown as Scripts;
  }

  /** Resolves once the first connection attempt has finished (successfully or not). */
  get connected(): Promise<void> {
    return this.#conn.ready;
  }

  /** The latest loss this store noticed (or read from the marker), if any. */
  get loss(): StoreLoss | undefined {
    return this.#loss;
  }

  /**
   * Start-up: connects, checks the settings (verify mode) and reads or writes the marker. Throws
   * CFG_ERR_INVALID when Redis is reachable and its settings allow silent loss, or cannot be read.
   * An unreachable Redis is not fatal: the same set-up runs before the first operation that
   * reaches it, and every operation fails closed (503) until it succeeds.
   */
  async start(): Promise<void> {
    await this.#conn.ready;
    if (this.#redis.status !== "ready") return;
    await this.#ensureSetUp();
    if (this.#unsafe !== undefined) throw new ProtocolError("CFG_ERR_INVALID", this.#unsafe);
  }

  #ensureSetUp(): Promise<void> {
    this.#setup ??= this.#setUp().catch((e: unknown) => {
      this.#setup = undefined;
      throw e;
    });
    return this.#setup;
  }

  async #setUp(): Promise<void> {
    await this.#checkSettings();
    const info = await this.#redis.info("stats");
    this.#evictedKeys = evictedKeysOf(info);
    const marker = await this.#scripts.veilRenewMarker(this.#markerKey, "", markerValue(0));
    this.#marker = marker;
    const lostAtMs = lostAtOf(marker);
    // A gateway started after a loss learns it from the marker.
    if (lostAtMs > 0) this.#noteLoss({ lostAtMs, reason: "marker_missing", fromMarker: true });
  }

  /** verify mode: noeviction and appendonly yes, read with CONFIG GET; sets or clears #unsafe. */
  async #checkSettings(): Promise<void> {
    if (this.#durability === "trust") return;
    let policy: string;
    let appendonly: string;
    try {
      policy = await configGet(this.#redis, "maxmemory-policy");
      appendonly = await configGet(this.#redis, "appendonly");
    } catch {
      this.#unsafe =
        'tokens.store: Redis refused CONFIG GET, so the gateway cannot check that it keeps spent tokens (maxmemory-policy noeviction, appendonly yes); allow CONFIG GET, or set tokens.storeDurability to "trust" if you have checked them yourself';
      return;
    }
    const problems: string[] = [];
    if (policy !== "noeviction") problems.push(`maxmemory-policy is ${policy} (it may evict spent tokens; set noeviction)`);
    if (appendonly !== "yes") problems.push("appendonly is no (a restart forgets every spent token; set appendonly yes)");
    this.#unsafe =
      problems.length === 0
        ? undefined
        : `tokens.store: Redis settings allow tokens to be spent twice: ${problems.join("; ")}; or set tokens.storeDurability to "trust" to accept that risk`;
  }

  #noteLoss(loss: StoreLoss): void {
    if (this.#loss !== undefined && this.#loss.lostAtMs >= loss.lostAtMs) return;
    this.#loss = loss;
    this.#onLoss(loss);
  }

  /** Re-creates the marker after a loss (or adopts the one another gateway re-created). */
  #renewMarker(reason: StoreLoss["reason"]): Promise<void> {
    this.#renewing ??= (async () => {
      const known = this.#marker ?? "";
      const marker = await this.#scripts.veilRenewMarker(this.#markerKey, known, markerValue(this.#now()));
      this.#marker = marker;
      this.#noteLoss({ lostAtMs: lostAtOf(marker) || this.#now(), reason });
    })().finally(() => {
      this.#renewing = undefined;
    });
    return this.#renewing;
  }

  /** At most every redisHealthCheckMs: evictions since start-up are a loss; settings re-read. */
  async #healthCheck(force: boolean): Promise<void> {
    const now = this.#now();
    if (!force && now < this.#nextHealthCheckMs) return;
    this.#nextHealthCheckMs = now + NONCE_STORE_DEFAULTS.redisHealthCheckMs;
    const evicted = evictedKeysOf(await this.#redis.info("stats"));
    // The counter restarts with Redis (which the marker notices): only a rise means eviction.
    if (this.#evictedKeys !== undefined && evicted > this.#evictedKeys) await this.#renewMarker("evicted_keys");
    this.#evictedKeys = evicted;
    if (force) await this.#checkSettings();
  }

  async #run<T>(what: string, op: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new ProtocolError("PP_ERR_STORE_UNAVAILABLE", "redis nonce store is closed");
    // The first connection attempt (bounded by connectTimeoutMs) is waited for; later outages fail fast.
    await this.#conn.ready;
    try {
      await this.#ensureSetUp();
    } catch (e) {
      throw new ProtocolError("PP_ERR_STORE_UNAVAILABLE", `redis nonce store: ${what} failed`, { cause: e });
    }
    if (this.#unsafe !== undefined) throw new ProtocolError("PP_ERR_STORE_UNAVAILABLE", this.#unsafe);
    try {
      return await op();
    } catch (e) {
      throw new ProtocolError("PP_ERR_STORE_UNAVAILABLE", `redis nonce store: ${what} failed`, { cause: e });
    }
  }

  #key(nonce: Uint8Array): string {
    return this.#prefix + toHex(nonce);
  }

  async reserve(nonce: Uint8Array, digest: Uint8Array, expiresAtMs: number): Promise<ReserveOutcome> {
    const ttlMs = Math.max(MIN_ENTRY_TTL_MS, Math.ceil(expiresAtMs - this.#now()));
    const key = this.#key(nonce);
    const d = toHex(digest);
    const out = await this.#run("reserve", async () => {
      const [answer] = await Promise.all([this.#scripts.veilReserve(key, this.#markerKey, d, ttlMs, this.#marker!), this.#healthCheck(false)]);
      if (answer !== "lost") return answer;
      await this.#renewMarker("marker_missing");
      return this.#scripts.veilReserve(key, this.#markerKey, d, ttlMs, this.#marker!);
    });
    if (out === "new" || out === "retry" || out === "spent") return out;
    throw new ProtocolError("PP_ERR_STORE_UNAVAILABLE", "redis nonce store: unexpected reserve answer");
  }

  async commit(nonce: Uint8Array, digest: Uint8Array): Promise<void> {
    await this.#run("commit", () => this.#scripts.veilCommit(this.#key(nonce), toHex(digest)));
  }

  async release(nonce: Uint8Array, digest: Uint8Array): Promise<void> {
    await this.#run("release", () => this.#scripts.veilRelease(this.#key(nonce), toHex(digest)));
  }

  /**
   * Readiness: reachable, settings still safe (verify mode), no eviction since the last check, and
   * the marker still the one this process knows: a gateway that serves no token for a while learns
   * of a loss (or of another gateway's renewal of the marker) at its next readiness check, not only
   * at its next token, so its snapshot of the keys held at the loss is taken closer to the loss.
   */
  async ping(): Promise<void> {
    await this.#run("ping", async () => {
      await this.#redis.ping();
      await this.#healthCheck(true);
      if ((await this.#redis.get(this.#markerKey)) !== this.#marker) await this.#renewMarker("marker_missing");
    });
    if (this.#unsafe !== undefined) throw new ProtocolError("PP_ERR_STORE_UNAVAILABLE", this.#unsafe);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await closeRedis(this.#conn);
  }
}
