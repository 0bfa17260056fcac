// The built-in attester (RFC 9576 §3.2, §3.5.2): a client proves it is attested with a bearer
// credential (RFC 6750 `Authorization: Bearer <credential>`), and each credential gets at most
// `tokensPerWindow` tokens per window. That quota is what turns tokens into Sybil resistance.
//
// Credentials are compared as SHA-256 digests with timingSafeEqual against every configured one
// (no early exit), so response time does not reveal how much of a guess was right. A credential
// is never logged nor used as a metric label: internally it is known by its index.
// Quota state is in memory: a restart gives every credential a fresh window.

import { createHash, timingSafeEqual } from "node:crypto";
import { ProtocolError } from "../core/errors.js";
import type { AttesterConfig } from "./config.js";

/** What a 401 carries (RFC 6750 §3). */
export const BEARER_CHALLENGE = "Bearer";

interface Window {
  startMs: number;
  /** Tokens issued plus tokens being issued in this window. */
  used: number;
}

/** A reservation of one token of quota: commit once issued, release if issuance failed. */
export interface QuotaReservation {
  release(): void;
}

/**
 * What the token-request route needs: the Attester below, or (in `veil issuer --workers N`) one
 * that asks the primary process, which holds the quota of every worker (issuer/cluster.ts).
 */
export interface QuotaAttester {
  authenticate(authorization: string | undefined): number;
  reserve(credential: number): QuotaReservation | Promise<QuotaReservation>;
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s, "utf8").digest();
}

export class Attester {
  readonly #digests: Buffer[];
  readonly #tokensPerWindow: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  readonly #windows = new Map<number, Window>();

  constructor(config: AttesterConfig, now: () => number = Date.now) {
    this.#digests = config.credentials.map(digest);
    this.#tokensPerWindow = config.tokensPerWindow;
    this.#windowMs = config.windowSec * 1000;
    this.#now = now;
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
   * Takes one token of `credential`'s quota, or throws ISSUER_ERR_QUOTA (429 with Retry-After:
   * the seconds until the window ends). The window starts at the credential's first token.
   */
  reserve(credential: number): QuotaReservation {
    const now = this.#now();
    let w = this.#windows.get(credential);
    if (w === undefined || now >= w.startMs + this.#windowMs) {
      w = { startMs: now, used: 0 };
      this.#windows.set(credential, w);
    }
    if (w.used >= this.#tokensPerWindow) {
      const retryAfter = Math.max(1, Math.ceil((w.startMs + this.#windowMs - now) / 1000));
      throw new ProtocolError("ISSUER_ERR_QUOTA", `quota of ${this.#tokensPerWindow} tokens per window used`, {
        headers: { "retry-after": String(retryAfter) },
      });
    }
    w.used++;
    const window = w;
    let released = false;
    return {
      release: () => {
        if (!released && this.#windows.get(credential) === window) window.used--;
        released = true;
      },
    };
  }
}
