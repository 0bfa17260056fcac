// The built-in attester (RFC 9576 §3.2, §3.5.2): a client proves it is attested with a bearer
// credential (RFC 6750 `Authorization: Bearer <credential>`), and each credential gets at most
// `tokensPerWindow` tokens per window. That quota is what turns tokens into Sybil resistance.
//
// Credentials are compared as SHA-256 digests with timingSafeEqual against every configured one
// (no early exit), so response time does not reveal how much of a guess was right. A credential
// is never logged nor used as a metric label: internally it is known by its index.
// Quota state is in the configured store (issuer/quota-store.ts): "memory" (a restart gives every
// credential a fresh window) or "sqlite:PATH" (survives restarts, shared by the processes on the
// file). The store knows a credential by a domain-separated SHA-256 digest, never the credential.

import { createHash, timingSafeEqual } from "node:crypto";
import { ProtocolError } from "../core/errors.js";
import type { AttesterConfig } from "./config.js";
import { QUOTA_STORE_DEFAULTS, openQuotaStore, type QuotaStore } from "./quota-store.js";

/** What a 401 carries (RFC 6750 §3). */
export const BEARER_CHALLENGE = "Bearer";

/**
 * A reservation of quota for `granted` tokens (1 to the number asked): kept once issued; what was
 * not issued (signing failed) is released, all of it or `count` tokens.
 */
export interface QuotaReservation {
  readonly granted: number;
  release(count?: number): void;
}

/**
 * What the token-request route needs: the Attester below, or (in `veil issuer --workers N`) one
 * that asks the primary process, which holds the quota of every worker (issuer/cluster.ts).
 */
export interface QuotaAttester {
  authenticate(authorization: string | undefined): number;
  /** Reserves up to `count` tokens (default 1); see Attester.reserve. */
  reserve(credential: number, count?: number): QuotaReservation | Promise<QuotaReservation>;
}

/**
 * A reservation of `granted` tokens whose release gives back at most what is still held:
 * `giveBack(count, stillHeld)` is called once per release that gives anything back.
 */
export function quotaReservation(granted: number, giveBack: (count: number, stillHeld: number) => void): QuotaReservation {
  let held = granted;
  return {
    granted,
    release: (n = held) => {
      const back = Math.min(held, Math.max(0, Math.floor(n)));
      if (back === 0) return;
      held -= back;
      giveBack(back, held);
    },
  };
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s, "utf8").digest();
}

/** The key of a credential's row in the quota store (not the bare digest compared above). */
function storeKey(credential: string): string {
  return createHash("sha256").update("veil attester quota v1\0", "utf8").update(credential, "utf8").digest("hex");
}

export class Attester {
  readonly #digests: Buffer[];
  readonly #tokensPerWindow: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  readonly #keys: string[];
  readonly #store: QuotaStore;
  #nextPurgeAtMs: number;

  /** `store` overrides config.store (tests inject a failing one). */
  constructor(config: AttesterConfig, now: () => number = Date.now, store?: QuotaStore) {
    this.#digests = config.credentials.map(digest);
    this.#keys = config.credentials.map(storeKey);
    this.#tokensPerWindow = config.tokensPerWindow;
    this.#windowMs = config.windowSec * 1000;
    this.#now = now;
    this.#store = store ?? openQuotaStore(config.store);
    this.#nextPurgeAtMs = now();
  }

  /** Closes the quota store. */
  close(): void {
    this.#store.close();
  }

  /**
   * The index of the credential in `Authorization: Bearer <credential>`; ISSUER_ERR_UNAUTHORIZED
   * (401 with `WWW-Authenticate: Bearer`) when it is missing, malformed or unknown.
   */
  authenticate(authorization: string | undefined): number {
    const m = authorization === undefined ? null : /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(authorization);
    const presented = m?.[1];
    if (presented === undefined) {
      throw new ProtocolError("ISSUER_ERR_UNAUTHORIZED", "send Authorization: Bearer <credential>", {
        headers: { "www-authenticate": BEARER_CHALLENGE },
      });
    }
    const d = digest(presented);
    let found = -1;
    for (let i = 0; i < this.#digests.length; i++) {
      // No early exit: every configured credential is compared.
      if (timingSafeEqual(d, this.#digests[i]!) && found === -1) found = i;
    }
    if (found === -1) {
      throw new ProtocolError("ISSUER_ERR_UNAUTHORIZED", "credential not recognised", {
        headers: { "www-authenticate": BEARER_CHALLENGE },
      });
    }
    return found;
  }

  /**
   * Takes up to `count` tokens of `credential`'s quota: as many as are left (a batch may get
   * fewer than it asked), or throws ISSUER_ERR_QUOTA (429 with Retry-After: the seconds until
   * the window ends) when none is left. The window starts at the credential's first token.
   * A store failure is ISSUER_ERR_STORE_UNAVAILABLE (503): no token without a counted quota.
   */
  reserve(credential: number, count = 1): QuotaReservation {
    if (!Number.isSafeInteger(count) || count < 1) throw new ProtocolError("INTERNAL_ERR", "reserve: count must be a positive integer");
    const now = this.#now();
    const key = this.#keys[credential];
    if (key === undefined) throw new ProtocolError("ISSUER_ERR_UNAUTHORIZED", "credential not recognised");
    if (now >= this.#nextPurgeAtMs) {
      this.#nextPurgeAtMs = now + QUOTA_STORE_DEFAULTS.purgeIntervalMs;
      try {
        this.#store.purge(now, this.#windowMs);
      } catch {
        // A failed purge only leaves old rows behind; the take below reports the store.
      }
    }
    const taken = this.#store.take(key, now, this.#windowMs, this.#tokensPerWindow, count);
    if (taken.taken === 0) {
      const retryAfter = Math.max(1, Math.ceil((taken.windowStartMs + this.#windowMs - now) / 1000));
      throw new ProtocolError("ISSUER_ERR_QUOTA", `quota of ${this.#tokensPerWindow} tokens per window used`, {
        headers: { "retry-after": String(retryAfter) },
      });
    }
    return quotaReservation(taken.taken, (back) => {
      try {
        this.#store.giveBack(key, taken.windowStartMs, back);
      } catch {
        // The tokens stay counted: fail closed.
      }
    });
  }
}
