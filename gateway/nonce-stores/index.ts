// `openNonceStore(spec)`: the double-spend store named by the gateway's `tokens.store` setting.
//   "memory"               in-process (tests; forgets everything on restart)
//   "sqlite:PATH"          SQLite file (default; shared by the processes of one machine)
//   "sqlite:PATH?synchronous=full"   ... with an fsync per write (survives power loss too)
//   "redis://HOST:PORT/DB" or "rediss://..."   Redis (several machines)

import { ProtocolError } from "../../core/errors.js";
import { MemoryNonceStore, type MemoryNonceStoreOptions } from "./memory.js";
import { RedisNonceStore, type RedisNonceStoreOptions } from "./redis.js";
import { SqliteNonceStore, type SqliteNonceStoreOptions } from "./sqlite.js";
import type { NonceStore } from "./types.js";

export type { NonceStore, ReserveOutcome, NonceStoreOptions } from "./types.js";
export { NONCE_STORE_DEFAULTS } from "./types.js";
export { MemoryNonceStore } from "./memory.js";
export { SqliteNonceStore } from "./sqlite.js";
export { RedisNonceStore } from "./redis.js";

export type OpenNonceStoreOptions = MemoryNonceStoreOptions & SqliteNonceStoreOptions & RedisNonceStoreOptions;

/** A short description of the store for logs: the kind only (a Redis URL can carry a password). */
export function describeNonceStore(spec: string): string {
  if (spec === "memory") return "memory";
  if (spec.startsWith("sqlite:")) return "sqlite";
  if (spec.startsWith("redis://") || spec.startsWith("rediss://")) return "redis";
  return "unknown";
}

/** Throws CFG_ERR_INVALID for a spec that names no backend (checked at start-up). */
export function openNonceStore(spec: string, options: OpenNonceStoreOptions = {}): NonceStore {
  if (spec === "memory") return new MemoryNonceStore(options);
  if (spec.startsWith("sqlite:")) {
    const rest = spec.slice("sqlite:".length);
    const q = rest.indexOf("?");
    const path = q < 0 ? rest : rest.slice(0, q);
    const params = new URLSearchParams(q < 0 ? "" : rest.slice(q + 1));
    let synchronous = options.synchronous;
    for (const [k, v] of params) {
      if (k === "synchronous" && (v === "normal" || v === "full")) synchronous = v;
      else throw new ProtocolError("CFG_ERR_INVALID", `tokens.store: unknown sqlite option ${JSON.stringify(k)} (known: synchronous=normal|full)`);
    }
    if (path === "") throw new ProtocolError("CFG_ERR_INVALID", "tokens.store: sqlite:PATH needs a path");
    return new SqliteNonceStore(path, { ...options, ...(synchronous === undefined ? {} : { synchronous }) });
  }
  if (spec.startsWith("redis://") || spec.startsWith("rediss://")) {
    try {
      new URL(spec);
    } catch {
      throw new ProtocolError("CFG_ERR_INVALID", "tokens.store: malformed redis URL");
    }
    return new RedisNonceStore(spec, options);
  }
  throw new ProtocolError("CFG_ERR_INVALID", 'tokens.store: expected "memory", "sqlite:PATH" or "redis://HOST:PORT"');
}
