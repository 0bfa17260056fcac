// A small document a server keeps a copy of, fetched over HTTP and cached by its caching headers
// (RFC 9111): the gateway's copy of each issuer directory (gateway/issuer-directory.ts) and the
// issuer's copy of the identity provider's JWK Set (issuer/jwt.ts). One behaviour for both:
//
// - fresh for Cache-Control max-age minus Age, within bounds (server/http-fetch.ts freshnessSec);
//   then revalidated with If-None-Match (ETag), and a 304 extends the freshness of the copy held;
// - a failed or malformed fetch keeps the last good copy and is retried after 1 s, doubling up to
//   `maxRetryDelayMs`;
// - a refetch because the copy lacks something a client named (an unknown key id) happens at most
//   once per `minRefetchMs`, so made-up ids cannot make the server hammer the document's origin;
// - fetches are single-flight, and no timers: refreshes are started by the callers' lookups.

import { freshnessSec, type DocumentFetcher, type FreshnessBounds } from "./http-fetch.js";

/** The caching defaults both documents use (each adds its own size limit). */
export const CACHE_DEFAULTS = Object.freeze({
  /** Freshness when the document comes without max-age (RFC 9111 heuristic freshness, kept short). */
  defaultMaxAgeSec: 300,
  /** Never refetch a fresh document more often than this, whatever max-age says (no-cache too). */
  minMaxAgeSec: 10,
  /** Never trust a copy longer than this without revalidating it. */
  maxMaxAgeSec: 86_400,
  /** Unknown key ids trigger a refetch at most this often. */
  minRefetchMs: 10_000,
  /** After a failed fetch, retry after 1 s, doubling up to this. */
  maxRetryDelayMs: 60_000,
  /** Whole fetch deadline (connect, headers, body). */
  fetchTimeoutMs: 5_000,
});

export interface CachedDocumentOptions extends FreshnessBounds {
  url: string;
  /** The request's Accept field. */
  accept: string;
  /** What the document is, for error messages ("issuer directory"). */
  label: string;
  /** Whole fetch deadline (connect, headers, body). */
  fetchTimeoutMs: number;
  /** Largest document accepted. */
  maxBytes: number;
  /** A refetch for an unknown id happens at most this often. */
  minRefetchMs: number;
  /** After a failed fetch, retry after 1 s, doubling up to this. */
  maxRetryDelayMs: number;
  /** Whether a refetch for an unknown id asks caches on the way for a fresh copy (no-cache). */
  bypassCacheOnRefetch: boolean;
}

export interface CachedDocumentDeps<T> {
  fetcher: DocumentFetcher;
  now: () => number;
  /** Turns a 200 answer's body into the value kept (throws when malformed); `now` is the fetch's end. */
  parse: (body: Uint8Array, now: number) => T;
  /** Called when a fetch fails (the last good copy is kept). */
  onFailure: (error: unknown) => void;
}

/** Thrown (and given to onFailure) when the document's origin answers neither 200 nor 304. */
export class DocumentStatusError extends Error {
  readonly status: number;
  constructor(label: string, status: number) {
    super(`${label} answered ${status}`);
    this.status = status;
  }
}

const FIRST_RETRY_DELAY_MS = 1_000;

/** The cached copy of one document; `value` is the last good one (undefined until the first). */
export class CachedDocument<T> {
  readonly #o: CachedDocumentOptions;
  readonly #deps: CachedDocumentDeps<T>;
  #value: T | undefined;
  #fetched = false;
  #etag: string | undefined;
  #freshUntilMs = 0;
  #nextAttemptMs = 0;
  #retryDelayMs = FIRST_RETRY_DELAY_MS;
  #lastForcedMs = -Infinity;
  #inflight: Promise<void> | undefined;

  constructor(options: CachedDocumentOptions, deps: CachedDocumentDeps<T>) {
    this.#o = options;
    this.#deps = deps;
  }

  /** True once a copy was fetched. */
  get fetched(): boolean {
    return this.#fetched;
  }

  /** The last good copy. */
  get value(): T | undefined {
    return this.#value;
  }

  /** Starts a refresh if the copy is stale and no retry delay is running; else the fetch under way, if any. */
  refreshIfStale(): Promise<void> | undefined {
    const now = this.#deps.now();
    if (now < this.#freshUntilMs || now < this.#nextAttemptMs) return this.#inflight;
    return this.refresh();
  }

  /** A refetch because a client named something the copy lacks; rate-limited (undefined: none). */
  refetchForUnknownKey(): Promise<void> | undefined {
    const now = this.#deps.now();
    if (this.#inflight !== undefined) return this.#inflight;
    if (now - this.#lastForcedMs < this.#o.minRefetchMs || now < this.#nextAttemptMs) return undefined;
    this.#lastForcedMs = now;
    return this.refresh({ bypassCache: this.#o.bypassCacheOnRefetch });
  }

  /**
   * Fetches (or revalidates) now; single-flight; never throws (failures keep the last copy).
   * `bypassCache`: asks caches on the way for a fresh copy (Cache-Control: no-cache).
   */
  refresh(options: { bypassCache?: boolean } = {}): Promise<void> {
    this.#inflight ??= this.#refresh(options.bypassCache === true).finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  async #refresh(bypassCache: boolean): Promise<void> {
    const headers: Record<string, string> = { accept: this.#o.accept };
    if (bypassCache) headers["cache-control"] = "no-cache";
    if (this.#etag !== undefined && this.#fetched) headers["if-none-match"] = this.#etag;
    try {
      const res = await this.#deps.fetcher(this.#o.url, { headers, timeoutMs: this.#o.fetchTimeoutMs, maxBytes: this.#o.maxBytes });
      const now = this.#deps.now();
      if (res.status === 304 && this.#fetched) {
        this.#freshUntilMs = now + 1000 * freshnessSec(res.headers, this.#o);
      } else if (res.status === 200) {
        this.#value = this.#deps.parse(res.body, now);
        this.#etag = res.headers.get("etag") ?? undefined;
        this.#fetched = true;
        this.#freshUntilMs = now + 1000 * freshnessSec(res.headers, this.#o);
      } else {
        throw new DocumentStatusError(this.#o.label, res.status);
      }
      this.#retryDelayMs = FIRST_RETRY_DELAY_MS;
      this.#nextAttemptMs = 0;
    } catch (e) {
      this.#nextAttemptMs = this.#deps.now() + this.#retryDelayMs;
      this.#retryDelayMs = Math.min(this.#o.maxRetryDelayMs, this.#retryDelayMs * 2);
      this.#deps.onFailure(e);
    }
  }
}
