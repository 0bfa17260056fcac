// The relay's copy of a gateway's key configurations (application/ohttp-keys, RFC 9458 §3.2).
//
// One copy per route, fetched from the gateway by the relay itself (never on behalf of a client, so
// the fetch carries nothing of any client), served byte for byte the same to everyone who asks.
// It lets clients check that the gateway shows everyone the same keys (docs/architecture.md, "Keys"); it is not
// where clients get keys they trust (RFC 9458 §6.1: those are authenticated as the gateway's).
//
// Freshness follows the gateway's Cache-Control max-age (clamped to keyCache.minMaxAgeSec ..
// maxMaxAgeSec; defaultMaxAgeSec without one). An expired copy is refetched when next asked for;
// concurrent requests share that one fetch, so they all get the same bytes. If the gateway cannot be
// reached, the stale copy is served for up to staleIfErrorSec past its expiry (RFC 5861's
// stale-if-error), and the fetch is retried at most every retrySec.
//
// Key rotation: a client that finds the relay's copy different from the gateway's asks again with
// Cache-Control: no-cache (client/key-source.ts); a copy older than revalidateMinSec is then
// refetched first. The copy stays one for everyone: a revalidation replaces it for every client, so
// a gateway that answered the relay's fetch with a key of its own would show it to all of them.

import { createHash } from "node:crypto";
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { ProtocolError } from "../core/errors.js";
import { isMediaType, maxAgeSec } from "../core/http-fields.js";
import type { KeyCacheConfig } from "./config.js";

export const KEYS_MEDIA_TYPE = "application/ohttp-keys";

export interface KeySnapshot {
  /** The key configurations exactly as the gateway sent them. */
  body: Buffer;
  /** Strong validator of `body`. */
  etag: string;
  /** Remaining freshness in seconds (0 when a stale copy is served). */
  maxAgeSec: number;
}

export interface FetchedKeys {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface KeyFetchOptions {
  url: URL;
  /** Extra request headers: only the operator's own auth header. */
  headers?: Readonly<Record<string, string>>;
  /** For an https URL: CA(s) instead of the system store, client certificate (mTLS). */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  connectMs: number;
  /** Deadline of the whole fetch. */
  timeoutMs: number;
  maxBytes: number;
}

/**
 * One GET of a gateway's key configurations on a fresh connection (a fetch every few minutes does
 * not need a pool; node:http keeps the relay free of a second HTTP client library in memory).
 */
export function fetchKeys(o: KeyFetchOptions): Promise<FetchedKeys> {
  return new Promise((resolve, reject) => {
    const isTls = o.url.protocol === "https:";
    const send = isTls ? httpsRequest : httpRequest;
    let settled = false;
    const fail = (e: ProtocolError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      req.destroy();
      reject(e);
    };
    const req = send(o.url, {
      method: "GET",
      agent: false,
      headers: { accept: KEYS_MEDIA_TYPE, ...o.headers },
      ...(isTls ? { ...o.tls, rejectUnauthorized: true } : {}),
    });
    const deadline = setTimeout(() => fail(unavailable("the gateway did not answer in time")), o.timeoutMs);
    req.on("socket", (socket) => {
      const connectTimer = setTimeout(() => fail(unavailable("no connection to the gateway in time")), o.connectMs);
      socket.once(isTls ? "secureConnect" : "connect", () => clearTimeout(connectTimer));
      socket.once("close", () => clearTimeout(connectTimer));
    });
    req.on("error", (e) => fail(unavailable("the gateway could not be reached", e)));
    req.on("response", (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let total = 0;
      res.on("data", (c: Buffer) => {
        total += c.length;
        if (total > o.maxBytes) fail(unavailable("the gateway's key configurations exceed limits.maxKeysBytes"));
        else chunks.push(c);
      });
      res.on("error", (e) => fail(unavailable("reading the gateway's key configurations failed", e)));
      res.on("end", () => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks, total) });
      });
    });
    req.end();
  });
}

export interface KeyCacheOptions {
  /** Fetches the gateway's key configurations (fetchKeys in production). */
  fetch: () => Promise<FetchedKeys>;
  config: KeyCacheConfig;
  now?: () => number;
  /** Told about each failed fetch (for the log). */
  onError?: (e: ProtocolError) => void;
}

interface Entry {
  body: Buffer;
  etag: string;
  expiresAt: number;
  fetchedAt: number;
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

  /**
   * The copy to serve, refetching it first if it expired, or if `revalidate` (the client asked for
   * no-cache) and it is at least revalidateMinSec old. Throws RELAY_ERR_KEYS_UNAVAILABLE.
   */
  async get(revalidate = false): Promise<KeySnapshot> {
    const entry = this.#entry;
    const now = this.#now();
    const mayRevalidate = revalidate && entry !== undefined && now - entry.fetchedAt >= this.#o.config.revalidateMinSec * 1000;
    if (entry !== undefined && now < entry.expiresAt && !mayRevalidate) return this.#snapshot(entry, now);
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
    const { config } = this.#o;
    let res: FetchedKeys;
    try {
      res = await this.#o.fetch();
    } catch (e) {
      throw e instanceof ProtocolError ? e : unavailable("the gateway could not be reached", e);
    }
    if (res.status !== 200) throw unavailable(`the gateway answered ${res.status}`);
    const type = res.headers["content-type"];
    if (!isMediaType(type, KEYS_MEDIA_TYPE)) throw unavailable(`the gateway's answer is not ${KEYS_MEDIA_TYPE}`);
    if (!checkKeysFraming(res.body)) throw unavailable("the gateway's key configurations are malformed");
    const declared = maxAgeSec(res.headers["cache-control"]);
    const freshSec = Math.min(config.maxMaxAgeSec, Math.max(config.minMaxAgeSec, declared ?? config.defaultMaxAgeSec));
    const etag = `"${createHash("sha256").update(res.body).digest("base64url").slice(0, 32)}"`;
    const now = this.#now();
    return { body: res.body, etag, expiresAt: now + freshSec * 1000, fetchedAt: now };
  }
}
