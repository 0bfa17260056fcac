// The double-spend store behind the token gate (RFC 9577 §2.2, RFC 9576 §3.4: "Origins SHOULD
// implement some form of double-spend prevention that prevents a token with the same nonce from
// being redeemed twice"), as three real backends: memory (tests), SQLite (one machine), Redis
// (several machines). The shape is the `NonceStore` contract of core/privacypass; this file adds
// the refinements the gate relies on and documents the semantics all three backends share.
//
// An entry is keyed by the token's 32-byte nonce and bound to a digest of the request the token
// paid for (method, target, body). It is either a reservation (a request holding it is in flight,
// or was in flight when its process crashed) or committed (the request reached the aggregator).
//
// - reserve(nonce, digest, expiresAtMs):
//     no live entry               -> create a reservation (one holder)          -> "new"
//     live entry, same digest     -> (if still a reservation, one more holder)  -> "retry"
//     live entry, another digest                                                -> "spent"
//   Atomic across every process sharing the store: of 25 concurrent reserves of one nonce with 25
//   digests, exactly one is "new".
// - commit(nonce, digest): the request reached the aggregator: the entry becomes committed and
//   stays bound to `digest` until it expires, whatever happens next. (The holder the committing
//   request took at reserve time is never given back, so the entry can never be deleted by
//   releases: that is what makes it spent. The committed flag records it; a backend may write it
//   lazily, e.g. SQLite batches commits, without weakening anything.)
// - release(nonce, digest): nothing of this request reached the aggregator: one holder less; when
//   no holder is left and nothing committed it, the entry is deleted and the token is as good as
//   new. Why holders rather than a plain delete: a retry of the identical request may be in flight
//   at the same time as the first attempt; the first attempt failing to connect must not free the
//   token while the retry is being delivered (that would let a third request with another body be
//   "new" and two different reports ride on one token).
// - A reservation left by a crash (a holder that never commits or releases) keeps the token bound
//   to its request until the entry expires: only a retry of that request can use it.
// - Entries expire at `expiresAtMs` (the token key's lifetime end, or its epoch's, plus clock skew:
//   after that the gate refuses the token anyway); expired entries are purged periodically.
// - Every method throws ProtocolError PP_ERR_STORE_UNAVAILABLE when the store cannot be reached
//   or written: the gate then fails closed (503), never open.

import type { NonceReservation, NonceStore } from "../../core/privacypass/nonce-store.js";

export type { NonceStore };
/** "new" | "retry" | "spent" (core/privacypass's NonceReservation). */
export type ReserveOutcome = NonceReservation;

/**
 * The store lost entries it had accepted (a Redis restart without persistence, FLUSHALL, a failover
 * to an empty replica, eviction): any spend recorded before `lostAtMs` may have been forgotten.
 * What the gate does about it: gateway/store-loss.ts.
 */
export interface StoreLoss {
  /** When the loss was noticed (epoch ms; shared by every gateway on the store). */
  lostAtMs: number;
  /** What was noticed, for the log and the metric label: "marker_missing" or "evicted_keys". */
  reason: "marker_missing" | "evicted_keys";
  /** Read from the marker at start-up (an earlier loss), rather than noticed by this process. */
  fromMarker?: boolean;
}

/** What every backend accepts (injected clock for tests). */
export interface NonceStoreOptions {
  /** Milliseconds since the epoch (default Date.now). */
  now?: () => number;
  /** How often expired entries are purged (on the next operation after this interval). */
  purgeIntervalMs?: number;
  /** Told when the store notices that it lost data (only stores that can notice: Redis). */
  onLoss?: (loss: StoreLoss) => void;
}

export const NONCE_STORE_DEFAULTS = Object.freeze({
  /** Purge expired entries at most this often: a purge scans, so not on every operation. */
  purgeIntervalMs: 60_000,
  /** Memory store: most live entries; when full of unexpired entries it refuses (fails closed). */
  maxEntries: 1_000_000,
  /** SQLite: how long a writer waits for another process's write lock before giving up (503). */
  busyTimeoutMs: 2_000,
  /** Redis: a command that takes longer fails (503) instead of hanging the upload. */
  redisCommandTimeoutMs: 1_000,
  /** Redis: TCP connect timeout. */
  redisConnectTimeoutMs: 1_000,
  /** Redis: keys are `${prefix}${hex(nonce)}`; the loss marker is `${prefix}marker` (not a nonce: hex has no "r"). */
  redisKeyPrefix: "veil:nonce:",
  /** Redis: INFO evicted_keys and the persistence settings are checked at most this often. */
  redisHealthCheckMs: 1_000,
});

/** A new entry lives at least this long, whatever expiresAtMs says (guards clock differences). */
export const MIN_ENTRY_TTL_MS = 1_000;
