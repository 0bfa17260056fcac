// RFC 9458 §6.5 replay protection by Date, optional per gateway (`replay.windowSec`).
//
// §6.5.1: clients send Date in the inner request; the gateway refuses one whose Date is outside its
// window and remembers the `enc` of every request it accepted within the window, so a replay inside
// the window fails too. The window is not secret (§6.5.1). §6.5.2: the refusal is a 400 with the
// `date` problem type, carrying the gateway's Date so the client can retry once, and
// `Cache-Control: no-store` because the answer depends on the Date.
//
// The encapsulations seen live in the nonce store (gateway/nonce-stores/), under a digest with a
// label of its own so they can never collide with token nonces; replicas sharing the store share
// the memory. The store failing fails closed (503), as for tokens.

import { createHash } from "node:crypto";
import { headerValues, type Field } from "../core/bhttp/index.js";
import { ProtocolError } from "../core/errors.js";
import type { NonceStore } from "../core/privacypass/index.js";

const ENC_LABEL = "veil ohttp enc v1";

export interface ReplayGuardOptions {
  windowSec: number;
  store: NonceStore;
  now?: () => number;
}

export class ReplayGuard {
  readonly #windowMs: number;
  readonly #store: NonceStore;
  readonly #now: () => number;

  constructor(o: ReplayGuardOptions) {
    this.#windowMs = o.windowSec * 1000;
    this.#store = o.store;
    this.#now = o.now ?? Date.now;
  }

  /** Throws GATEWAY_ERR_DATE (Date missing or outside the window) or GATEWAY_ERR_REPLAYED (enc seen before). */
  async check(headers: readonly Field[], enc: Uint8Array): Promise<void> {
    const now = this.#now();
    const dates = headerValues(headers, "date");
    const date = dates.length === 1 ? Date.parse(dates[0]!) : NaN;
    if (!Number.isFinite(date) || Math.abs(date - now) > this.#windowMs) {
      throw new ProtocolError("GATEWAY_ERR_DATE", dates.length === 0 ? "the inner request has no Date" : "the inner request's Date is outside the gateway's window", {
        // Problem answers carry Cache-Control: no-store already (server/problem-handler.ts).
        headers: { date: new Date(now).toUTCString() },
      });
    }
    const key = new Uint8Array(createHash("sha256").update(ENC_LABEL).update(enc).digest());
    // Kept until the Date could no longer be accepted, whichever side of the window it was on.
    const outcome = await this.#store.reserve(key, key, date + this.#windowMs + 1000);
    if (outcome !== "new") throw new ProtocolError("GATEWAY_ERR_REPLAYED");
    await this.#store.commit(key, key);
  }

  async close(): Promise<void> {
    await this.#store.close();
  }
}
