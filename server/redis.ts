// The Redis connection of the stores that fail closed (the gateway's nonce store, the issuer's
// quota store): commands never queue while Redis is unreachable (`enableOfflineQueue: false`)
// and time out after `commandTimeoutMs`, so a request gets a prompt 503 instead of waiting on a
// reconnect; reconnects go on forever, at most once a second, so the store comes back with Redis.

import type { Redis } from "ioredis";
import { requireOptional } from "./optional-dependency.js";

export interface FailClosedRedisOptions {
  commandTimeoutMs: number;
  connectTimeoutMs: number;
}

export interface FailClosedRedis {
  redis: Redis;
  /** Resolves once the first connection attempt has finished (successfully or not). */
  ready: Promise<void>;
}

/** `purpose` names the setting that needs Redis, for the error when ioredis is not installed. */
export function connectFailClosed(url: string, options: FailClosedRedisOptions, purpose: string): FailClosedRedis {
  // ioredis is an optional dependency, loaded only for a redis:// store.
  const ioredis = requireOptional<typeof import("ioredis")>("ioredis", purpose);
  const redis = new ioredis.Redis(url, {
    lazyConnect: true,
    // Why not ioredis's defaults (queue commands while disconnected, retry each 20 times): a
    // request must get an answer promptly; failing closed with 503 is the answer when Redis is down.
    enableOfflineQueue: false,
    // Commands issued in the same tick (concurrent requests) go out in one write.
    enableAutoPipelining: true,
    maxRetriesPerRequest: 0,
    commandTimeout: options.commandTimeoutMs,
    connectTimeout: options.connectTimeoutMs,
    retryStrategy: (times: number) => Math.min(50 * times, 1_000),
  });
  // Without a listener, ioredis's connection errors would be unhandled 'error' events. They are
  // reported per operation by the store.
  redis.on("error", () => {});
  const ready = redis.connect().catch(() => {
    // Not fatal: retryStrategy keeps trying; operations fail closed until it succeeds.
  });
  return { redis, ready };
}

/** Closes the connection (QUIT, or a hard disconnect when Redis is gone). */
export async function closeRedis(c: FailClosedRedis): Promise<void> {
  await c.ready;
  try {
    await c.redis.quit();
  } catch {
    c.redis.disconnect();
  }
}
