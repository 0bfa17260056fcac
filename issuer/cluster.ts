// `veil issuer --workers N`: what the workers share through the primary process.
//
// - Token keys: the primary opens the key file (creating it on first start) and rotates it on
//   schedule; the workers' key stores are followers that re-read the file when it changes, so every
//   worker publishes the same directory and no two processes generate a key for the same slot.
// - The attester's quota: a credential's quota is per issuer, not per worker (N workers must not
//   mean N times the tokens). The primary holds the quota windows; a worker authenticates the
//   client itself and asks the primary for each reservation, by quota key (a keyed hash, never the
//   credential), over the IPC channel (a round trip of well under a millisecond, against the RSA
//   signature that follows it).

import cluster, { type Worker } from "node:cluster";
import { ProtocolError, isProtocolError } from "../core/errors.js";
import type { Stoppable } from "../server/cluster.js";
import { safeError, type Logger } from "../server/logging.js";
import { Attester, quotaReservation, type QuotaAttester, type QuotaReservation } from "./attester.js";
import type { AttesterConfig, IssuerConfig } from "./config.js";
import { IssuerKeyStore } from "./key-store.js";

interface ReserveRequest {
  type: "veil:quota-reserve";
  id: number;
  quotaKey: string;
  count: number;
}
interface ReserveAnswer {
  type: "veil:quota-answer";
  id: number;
  ok: boolean;
  /** Tokens granted (ok). */
  granted?: number;
  /** The refusal's error code (ISSUER_ERR_QUOTA or ISSUER_ERR_STORE_UNAVAILABLE). */
  code?: string;
  detail?: string;
  retryAfter?: string;
}
interface ReleaseMessage {
  type: "veil:quota-release";
  id: number;
  /** Tokens given back (absent: all still held). */
  count?: number;
}
type QuotaMessage = ReserveRequest | ReserveAnswer | ReleaseMessage;

function isQuotaMessage(m: unknown): m is QuotaMessage {
  const t = (m as { type?: unknown } | null)?.type;
  return t === "veil:quota-reserve" || t === "veil:quota-answer" || t === "veil:quota-release";
}

export const ISSUER_CLUSTER_DEFAULTS = Object.freeze({
  /** A worker waits this long for the primary's quota answer, then answers 503. */
  quotaTimeoutMs: 5_000,
  /** A reservation not released within this time was used (the token was issued). */
  releaseWindowMs: 60_000,
});

/** In the primary: answers the workers' quota requests from one Attester. Returns a stop function. */
export function serveQuota(attester: Attester): () => void {
  const held = new Map<string, { reservation: QuotaReservation; atMs: number }>();
  const onReserve = async (worker: Worker, m: ReserveRequest, key: string): Promise<void> => {
    let answer: ReserveAnswer;
    try {
      const reservation = await attester.reserve(m.quotaKey, m.count);
      held.set(key, { reservation, atMs: Date.now() });
      answer = { type: "veil:quota-answer", id: m.id, ok: true, granted: reservation.granted };
    } catch (e) {
      answer = { type: "veil:quota-answer", id: m.id, ok: false };
      if (isProtocolError(e)) {
        answer.code = e.code;
        answer.detail = e.message;
        const retryAfter = e.headers["retry-after"];
        if (retryAfter !== undefined) answer.retryAfter = retryAfter;
      }
    }
    if (worker.isConnected()) worker.send(answer);
  };
  const onMessage = (worker: Worker, m: unknown): void => {
    if (!isQuotaMessage(m)) return;
    const key = `${worker.id}/${m.id}`;
    if (m.type === "veil:quota-reserve") void onReserve(worker, m, key);
    else if (m.type === "veil:quota-release") {
      held.get(key)?.reservation.release(m.count);
      if (m.count === undefined) held.delete(key);
    }
  };
  // Reservations that were never released were spent: forget them.
  const sweep = setInterval(() => {
    const before = Date.now() - ISSUER_CLUSTER_DEFAULTS.releaseWindowMs;
    for (const [k, v] of held) if (v.atMs < before) held.delete(k);
  }, ISSUER_CLUSTER_DEFAULTS.releaseWindowMs);
  sweep.unref();
  cluster.on("message", onMessage);
  return () => {
    clearInterval(sweep);
    cluster.off("message", onMessage);
  };
}

/** In a worker: authenticates locally, reserves quota at the primary. */
export class RemoteAttester implements QuotaAttester {
  readonly #local: Attester;
  readonly #pending = new Map<number, (a: ReserveAnswer | undefined) => void>();
  #nextId = 0;

  constructor(config: AttesterConfig) {
    // Only to authenticate (with the same quota keys as the primary): the quota is the primary's.
    this.#local = new Attester(config, { store: null });
    process.on("message", (m: unknown) => {
      if (isQuotaMessage(m) && m.type === "veil:quota-answer") this.#pending.get(m.id)?.(m);
    });
  }

  authenticate(authorization: string | undefined): Promise<string> {
    return this.#local.authenticate(authorization);
  }

  ready(): Promise<void> {
    return this.#local.ready();
  }

  async reserve(quotaKey: string, count = 1): Promise<QuotaReservation> {
    const id = this.#nextId++;
    const answer = await new Promise<ReserveAnswer | undefined>((resolve) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        resolve(undefined);
      }, ISSUER_CLUSTER_DEFAULTS.quotaTimeoutMs);
      this.#pending.set(id, (a) => {
        clearTimeout(timer);
        this.#pending.delete(id);
        resolve(a);
      });
      const request: ReserveRequest = { type: "veil:quota-reserve", id, quotaKey, count };
      if (process.send === undefined || !process.connected) {
        clearTimeout(timer);
        this.#pending.delete(id);
        resolve(undefined);
        return;
      }
      process.send(request);
    });
    if (answer === undefined) {
      throw new ProtocolError("HTTP_ERR_UNAVAILABLE", "quota service unavailable", { headers: { "retry-after": "1" } });
    }
    if (!answer.ok && answer.code !== "ISSUER_ERR_QUOTA") {
      // A store failure (or anything else) at the primary: fail closed with a 503.
      throw new ProtocolError("ISSUER_ERR_STORE_UNAVAILABLE", undefined, { headers: { "retry-after": "1" } });
    }
    if (!answer.ok) {
      throw new ProtocolError("ISSUER_ERR_QUOTA", answer.detail, answer.retryAfter === undefined ? {} : { headers: { "retry-after": answer.retryAfter } });
    }
    return quotaReservation(Math.max(1, Math.min(count, answer.granted ?? 1)), (back, stillHeld) => {
      const m: ReleaseMessage = stillHeld === 0 ? { type: "veil:quota-release", id } : { type: "veil:quota-release", id, count: back };
      if (process.connected) process.send?.(m);
    });
  }
}

/**
 * The primary's part of `veil issuer --workers N`: creates or loads the key file and rotates it on
 * schedule, and serves the quota. Started before the workers are forked.
 */
export async function startIssuerPrimary(config: IssuerConfig, log: Logger): Promise<Stoppable> {
  const keys = await IssuerKeyStore.open({ file: config.keys, tokenTypes: config.tokenTypes, keyLifetimeSec: config.keyLifetimeSec });
  const everyMs = Math.min(60_000, Math.max(1000, (config.keyLifetimeSec * 1000) / 8));
  const timer = setInterval(() => {
    keys.refresh().catch((e: unknown) => log.error({ err: safeError(e) }, "key rotation failed"));
  }, everyMs);
  timer.unref();
  const attester = new Attester(config.attester);
  const stopQuota = serveQuota(attester);
  return {
    async stop() {
      clearInterval(timer);
      stopQuota();
      await attester.close();
    },
  };
}
