// The double-spend store (RFC 9577 §2.2, RFC 9576 §3.4): one interface, implemented in
// gateway/nonce-stores/ (memory, SQLite, Redis).
//
// A nonce is reserved for the request it pays for (bound to a digest of that request), then either
// committed (something reached the target) or released (nothing did: the token is as good as new).
// The same token with the identical request is a retry and is let through again; with any other
// request it is spent.

/** "new": first use; "retry": same digest, reserved or committed before; "spent": another digest. */
export type NonceReservation = "new" | "retry" | "spent";

export interface NonceStore {
  /**
   * Atomically reserve `nonce` for the request with `digest`, keeping the entry at least until
   * `expiresAtMs` (epoch milliseconds). Throws a ProtocolError PP_ERR_STORE_UNAVAILABLE when the
   * store cannot be reached (the gate then fails closed).
   */
  reserve(nonce: Uint8Array, digest: Uint8Array, expiresAtMs: number): Promise<NonceReservation>;
  /** Marks the reservation spent for good (something reached the target). */
  commit(nonce: Uint8Array, digest: Uint8Array): Promise<void>;
  /** Drops the reservation; only if nothing reached the target. A no-op for another digest. */
  release(nonce: Uint8Array, digest: Uint8Array): Promise<void>;
  /** Resolves when the store is reachable (readiness checks). */
  ping(): Promise<void>;
  close(): Promise<void>;
}
