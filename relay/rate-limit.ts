// Per-client rate limits of the relay, keyed by client address (RFC 9458 §6.2.1 allows a relay to
// limit abusive clients). Fixed windows aligned to the clock: every count of a window is dropped
// when the window ends, so a client address lives only as long as its window.
//
// - MemoryRateLimiter (the default): one Map per window, in this process only.
// - RedisRateLimiter: counters shared by every replica using the same Redis. The address itself is
//   never stored there: the key is a keyed hash (HMAC-SHA-256) of the window and the address, with a
//   secret that every replica shares (rateLimit.keySecret), so the same client gets the same key on
//   every replica, different keys in different windows, and whoever reads Redis learns no address.
//   If Redis cannot be reached the request is let through (fail open: a rate-limit store outage must
//   not take the relay down) and the failure is counted and logged.

import { createHmac } from "node:crypto";
import { isIPv4, isIPv6 } from "node:net";
import type { Redis } from "ioredis";

export interface RateLimiter {
  /**
   * Counts one request of the client at `address`. Returns undefined when it is allowed, otherwise
   * the number of seconds until its window ends (for Retry-After). Synchronous for the memory store.
   */
  hit(address: string): number | undefined | Promise<number | undefined>;
  /** Throws when the store cannot be used (readiness). */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The unit a limit applies to: an IPv4 address (also when written as IPv4-mapped IPv6), or the
 * first `ipv6PrefixBits` bits of an IPv6 address (one host can use a whole /64 at will).
 */
export function clientKey(address: string, ipv6PrefixBits: number): string {
  if (!address.includes(":")) return address; // IPv4 (or unknown)
  if (address.startsWith("::ffff:") && isIPv4(address.slice(7))) return address.slice(7);
  if (!isIPv6(address) || ipv6PrefixBits >= 128) return address;
  const groups = expandIPv6(address);
  if (groups === undefined) return address;
  const out: string[] = [];
  let bits = ipv6PrefixBits;
  for (const g of groups) {
    if (bits <= 0) break;
    const keep = Math.min(16, bits);
    out.push(((g >> (16 - keep)) << (16 - keep)).toString(16));
    bits -= keep;
  }
  return `${out.join(":")}::/${ipv6PrefixBits}`;
}

function expandIPv6(address: string): number[] | undefined {
  let a = address;
  const zone = a.indexOf("%");
  if (zone >= 0) a = a.slice(0, zone);
  // An embedded IPv4 address (RFC 4291 §2.2, form 3) becomes two hex groups.
  const lastColon = a.lastIndexOf(":");
  const last = a.slice(lastColon + 1);
  if (last.includes(".")) {
    if (!isIPv4(last)) return undefined;
    const p = last.split(".").map(Number);
    a = `${a.slice(0, lastColon + 1)}${((p[0]! << 8) | p[1]!).toString(16)}:${((p[2]! << 8) | p[3]!).toString(16)}`;
  }
  const halves = a.split("::");
  if (halves.length > 2) return undefined;
  const head = halves[0] === "" ? [] : halves[0]!.split(":");
  const tail = halves.length === 1 || halves[1] === "" ? [] : halves[1]!.split(":");
  const zeros = halves.length === 2 ? 8 - head.length - tail.length : 0;
  if (zeros < 0) return undefined;
  const groups = [...head, ...new Array<string>(zeros).fill("0"), ...tail].map((g) => (/^[0-9a-fA-F]{1,4}$/.test(g) ? parseInt(g, 16) : -1));
  return groups.length === 8 && groups.every((g) => g >= 0) ? groups : undefined;
}

export interface WindowOptions {
  perClientPerWindow: number;
  windowMs: number;
  now?: () => number;
}

/** Seconds until the window that contains `now` ends (at least 1). */
function retryAfterSec(now: number, windowMs: number): number {
  const end = (Math.floor(now / windowMs) + 1) * windowMs;
  return Math.max(1, Math.ceil((end - now) / 1000));
}

export class MemoryRateLimiter implements RateLimiter {
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  #window = -1;
  #counts = new Map<string, number>();

  constructor(opts: WindowOptions) {
    this.#limit = opts.perClientPerWindow;
    this.#windowMs = opts.windowMs;
    this.#now = opts.now ?? Date.now;
  }

  hit(address: string): number | undefined {
    const now = this.#now();
    const w = Math.floor(now / this.#windowMs);
    if (w !== this.#window) {
      // A new window: the previous window's addresses are forgotten.
      this.#window = w;
      this.#counts = new Map();
    }
    const n = (this.#counts.get(address) ?? 0) + 1;
    this.#counts.set(address, n);
    return n > this.#limit ? retryAfterSec(now, this.#windowMs) : undefined;
  }

  /** Clients counted in the current window (for tests and metrics; never the addresses). */
  get size(): number {
    return Math.floor(this.#now() / this.#windowMs) === this.#window ? this.#counts.size : 0;
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    this.#counts = new Map();
  }
}

export interface RedisRateLimiterOptions extends WindowOptions {
  /** The client (a promise while ioredis is being loaded). */
  redis: Redis | Promise<Redis>;
  prefix: string;
  /** Secret of the keyed hash of addresses: the same on every replica. */
  keySecret: Uint8Array;
  /** Called when the store fails (the request is allowed). */
  onError?: (e: unknown) => void;
}

export class RedisRateLimiter implements RateLimiter {
  readonly #o: RedisRateLimiterOptions;
  readonly #now: () => number;
  #redis: Redis | undefined;

  constructor(opts: RedisRateLimiterOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    void Promise.resolve(opts.redis).then(
      (r) => (this.#redis = r),
      () => {},
    );
  }

  async #client(): Promise<Redis> {
    return this.#redis ?? (await this.#o.redis);
  }

  /** The Redis key of `address` in window `w`: no address, unlinkable across windows. */
  keyFor(address: string, w: number): string {
    const mac = createHmac("sha256", this.#o.keySecret).update(`${w}\n${address}`).digest("base64url").slice(0, 22);
    return `${this.#o.prefix}${w}:${mac}`;
  }

  async hit(address: string): Promise<number | undefined> {
    const now = this.#now();
    const { windowMs, perClientPerWindow } = this.#o;
    const w = Math.floor(now / windowMs);
    const key = this.keyFor(address, w);
    try {
      // The key expires shortly after its window ends (the slack covers clock skew between replicas).
      const redis = this.#redis ?? (await this.#client());
      const res = await redis
        .multi()
        .incr(key)
        .pexpire(key, (w + 1) * windowMs - now + 1000)
        .exec();
      const count = res?.[0]?.[1];
      if (typeof count !== "number") throw new Error(res?.[0]?.[0]?.message ?? "no reply");
      return count > perClientPerWindow ? retryAfterSec(now, windowMs) : undefined;
    } catch (e) {
      this.#o.onError?.(e);
      return undefined;
    }
  }

  async ping(): Promise<void> {
    await (await this.#client()).ping();
  }

  async close(): Promise<void> {
    (await this.#client()).disconnect();
  }
}
