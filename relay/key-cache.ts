// The relay's copy of a gateway's key configurations (application/ohttp-keys, RFC 9458 §3.2).
//
// One copy per route, fetched from the gateway by the relay itself (never on behalf of a client, so
// the fetch carries nothing of any client), served byte for byte the same to everyone who asks.
// It lets clients check that the gateway shows everyone the same keys (design.md "Keys"); it is not
// where clients get keys they trust (RFC 9458 §6.1: those are authenticated as the gateway's).
//
// Freshness follows the gateway's Cache-Control max-age (clamped to keyCache.minMaxAgeSec ..
// maxMaxAgeSec; defaultMaxAgeSec without one). An expired copy is refetched when next asked for;
// concurrent requests share that one fetch, so they all get the same bytes. If the gateway cannot be
// reached, the stale copy is served for up to staleIfErrorSec past its expiry (RFC 5861's
// stale-if-error), and the fetch is retried at most every retrySec.

import { createHash } from "node:crypto";
import type { Dispatcher } from "undici";
import { ProtocolError } from "../core/errors.js";
import type { KeyCacheConfig } from "./config.js";
import { isMediaType } from "./http1.js";

export const KEYS_MEDIA_TYPE = "application/ohttp-keys";

export interface KeySnapshot {
  /** The key configurations exactly as the gateway sent them. */
  body: Buffer;
  /** Strong validator of `body`. */
  etag: string;
  /** Remaining freshness in seconds (0 when a stale copy is served). */
  maxAgeSec: number;
}

export interface KeyCacheOptions {
  /** The keys URL (its origin is the dispatcher's). */
  url: URL;
  dispatcher: Dispatcher;
  /** Extra request headers: only the operator's own auth header. */
  headers?: Readonly<Record<string, string>>;
  config: KeyCacheConfig;
  fetchTimeoutMs: number;
  maxBytes: number;
  now?: () => number;
  /** Told about each failed fetch (for the log). */
  onError?: (e: ProtocolError) => void;
}

interface Entry {
  body: Buffer;
  etag: string;
  expiresAt: number;
}

/** Cache-Control max-age (or 0 for no-store / no-cache), if present. */
export function maxAgeOf(cacheControl: string | undefined): number | undefined {
  if (cacheControl === undefined) return undefined;
  let result: number | undefined;
  for (const part of cacheControl.split(",")) {
    const [rawName, rawValue] = part.split("=", 2) as [string, string | undefined];
    const name = rawName.trim().toLowerCase();
    if (name === "no-store" || name === "no-cache") return 0;
    if (name === "max-age" && rawValue !== undefined) {
      const v = rawValue.trim().replace(/^"(.*)"$/, "$1");
      if (/^\d{1,10}$/.test(v)) result = Number(v);
    }
  }
  return result;
}

/**
 * Checks the framing of an application/ohttp-keys body: one or more key configurations, each with
 * a 2-byte length prefix, nothing left over (RFC 9458 §3.2: clients discard a collection that is not
 * correctly encoded, so caching one would only break them). The configurations themselves are
 * passed through untouched: judging them is the client's job.
 */
export function checkKeysFraming(body: Uint8Array): boolean {
  if (body.length === 0) return false;
  let at = 0;
  while (at < body.length) {
    if (at + 2 > body.length) return false;
    const len = (body[at]! << 8) | body[at + 1]!;
    // Key Config: key id (1), KEM id (2), public key (>= 1), suites length (2), one suite (4).
    if (len < 10) return false;
    at += 2 + len;
  }
  return at === body.length;
}

function unavailable(detail: string, cause?: unknown): ProtocolError {
  return new ProtocolError("RELAY_ERR_KEYS_UNAVAILABLE", detail, cause === undefined ? {} : { cause });
}

export class KeyCache {
  readonly #o: KeyCacheOptions;
  readonly #now: () => number;
  #entry: Entry | undefined;
  #inflight: Promise<void> | undefined;
  #retryAt = 0;

  constructor(opts: KeyCacheOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
  }

  /** Starts a fetch in the background (at start-up). */
  prefetch(): void {
    void this.#refresh();
  }

  /** The copy to serve, refetching it first if it expired. Throws RELAY_ERR_KEYS_UNAVAILABLE. */
  async get(): Promise<KeySnapshot> {
    const entry = this.#entry;
    const now = this.#now();
    if (entry !== undefined && now < entry.expiresAt) return this.#snapshot(entry, now);
    if (now >= this.#retryAt) {
      await this.#refresh();
      const fresh = this.#entry;
      // Just fetched (even with max-age 0): serve it.
      if (fresh !== undefined && fresh !== entry) return this.#snapshot(fresh, this.#now());
    }
    const stale = this.#entry;
    if (stale !== undefined && this.#now() < stale.expiresAt + this.#o.config.staleIfErrorSec * 1000) {
      return this.#snapshot(stale, this.#now());
    }
    throw unavailable("the gateway's key configurations could not be fetched");
  }

  #snapshot(e: Entry, now: number): KeySnapshot {
    return { body: e.body, etag: e.etag, maxAgeSec: Math.max(0, Math.floor((e.expiresAt - now) / 1000)) };
  }

  #refresh(): Promise<void> {
    this.#inflight ??= this.#fetch()
      .then((entry) => {
        // Keep the same Buffer when nothing changed: the served bytes stay identical objects too.
        this.#entry = this.#entry !== undefined && this.#entry.etag === entry.etag ? { ...entry, body: this.#entry.body } : entry;
        this.#retryAt = 0;
      })
      .catch((e: unknown) => {
        const err = e instanceof ProtocolError ? e : unavailable("fetch failed", e);
        this.#retryAt = this.#now() + this.#o.config.retrySec * 1000;
        this.#o.onError?.(err);
      })
      .finally(() => {
        this.#inflight = undefined;
      });
    return this.#inflight;
  }

  async #fetch(): Promise<Entry> {
    const { url, dispatcher, fetchTimeoutMs, maxBytes, config } = this.#o;
    let res: Dispatcher.ResponseData;
    const signal = AbortSignal.timeout(fetchTimeoutMs);
    try {
      res = await dispatcher.request({
        origin: url.origin,
        path: `${url.pathname}${url.search}`,
        method: "GET",
        headers: { accept: KEYS_MEDIA_TYPE, ...this.#o.headers },
        headersTimeout: fetchTimeoutMs,
        bodyTimeout: fetchTimeoutMs,
        signal,
      });
    } catch (e) {
      throw unavailable("the gateway could not be reached", e);
    }
    try {
      if (res.statusCode !== 200) throw unavailable(`the gateway answered ${res.statusCode}`);
      const type = res.headers["content-type"];
      if (!isMediaType(typeof type === "string" ? type : undefined, KEYS_MEDIA_TYPE)) throw unavailable(`the gateway's answer is not ${KEYS_MEDIA_TYPE}`);
      const chunks: Buffer[] = [];
      let total = 0;
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        total += chunk.length;
        if (total > maxBytes) throw unavailable("the gateway's key configurations exceed limits.maxKeysBytes");
        chunks.push(chunk);
      }
      const body = Buffer.concat(chunks, total);
      if (!checkKeysFraming(body)) throw unavailable("the gateway's key configurations are malformed");
      const cc = res.headers["cache-control"];
      const declared = maxAgeOf(Array.isArray(cc) ? cc.join(",") : cc);
      const maxAgeSec = Math.min(config.maxMaxAgeSec, Math.max(config.minMaxAgeSec, declared ?? config.defaultMaxAgeSec));
      const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 32)}"`;
      return { body, etag, expiresAt: this.#now() + maxAgeSec * 1000 };
    } catch (e) {
      res.body.destroy();
      if (e instanceof ProtocolError) throw e;
      throw unavailable("reading the gateway's key configurations failed", e);
    }
  }
}
