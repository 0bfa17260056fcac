// Privacy Pass tokens for the client (RFC 9576 architecture, RFC 9577 challenge/redemption,
// RFC 9578 issuance).
//
// The gateway's challenges can be learned ahead of time (docs/architecture.md, "Tokens and challenges"): a tokenless request
// to an upload route earns a sealed 401 whose `WWW-Authenticate: PrivateToken` names the issuer,
// the token key, an empty or epoch-derived redemption context and an `origin_info` naming the
// target. For each such challenge the source keeps a stock of tokens, fetched from the issuer in
// batches (at start-up via `prepare`, and in the background when the stock runs low after a
// random delay), so the time a token is issued says little about when a report is uploaded.
//
// Every token is used for one request only: `take()` hands it out and forgets it. Resending the
// same report after an uncertain failure reuses its token: that is oblivious-fetch.ts's business.
//
// ARC challenges (token type 0xE5AC, with a rate-limit) need no stock: one credential per
// (issuer, credential context) makes each token on demand (./arc-credentials.ts).

import { equalBytes, fromBase64Url } from "../core/bytes.js";
import { ProtocolError, isProtocolError, wrapError } from "../core/errors.js";
import { isMediaType } from "../core/http-fields.js";
import {
  ARC_TOKEN_TYPE,
  ISSUER_DIRECTORY_PATH,
  MEDIA_TYPES,
  TOKEN_TYPE,
  createTokenRequest,
  decodeTokenChallenge,
  parseWwwAuthenticate,
  type TokenChallenge,
} from "../core/privacypass/index.js";
import { createBatchTokenRequest } from "../core/privacypass/batch-client.js";
import { Secret } from "../core/secret.js";
import { readCapped } from "./key-source.js";
import { ArcCredentials, type ArcChallenge } from "./arc-credentials.js";
import { defaultFetch, invalid, nonNegativeInt, positiveInt, secureUrl, type FetchLike } from "./options.js";

/** Defaults of the token source. */
export const TOKEN_SOURCE_DEFAULTS = Object.freeze({
  /** Tokens fetched per batch: enough for a typical reporting session without asking again. */
  batch: 10,
  /** Tokens asked for in one batched request (the issuer's default maxBatchTokens is 100). */
  tokensPerRequest: 100,
  /** Single token requests in flight at once when the issuer serves no batches. */
  concurrency: 4,
  /** Largest random delay before a background refill, so refills do not follow uploads in time. */
  refillJitterMs: 5_000,
  /** Timeout of one issuer request. */
  timeoutMs: 15_000,
  /** Issuer directory and token responses are small (a few KiB at most). */
  maxIssuerBytes: 64 * 1024,
});

export interface TokenSourceOptions {
  /** The issuer's base URL (its directory is at /.well-known/private-token-issuer-directory). */
  issuer: string | URL;
  /** The attester credential, sent as `Authorization: Bearer <credential>` to the issuer only. */
  credential: string;
  /** Tokens per batch (default 10). */
  batch?: number;
  /** Refill in the background once the stock is at or below this (default: a third of `batch`). */
  lowWater?: number;
  /** Token requests in flight during a batch (default 4). */
  concurrency?: number;
  /** If set, challenges must name this issuer (`issuer_name`). */
  issuerName?: string;
  /**
   * Token types this client accepts (default: all it supports: 2, 1 and ARC 0xE5AC = 58796);
   * the gateway's challenges of other types are skipped, its order of preference is kept.
   */
  tokenTypes?: readonly number[];
  /**
   * Tokens the caller expects to need in all (e.g. the number of reports of a run): batches and
   * background refills never fetch beyond it, so no tokens are left over. A request that finds the
   * stock empty still gets one (e.g. to resend a report after the leader rotated its key).
   */
  budget?: number;
  /** Largest random delay (ms) before a background refill (default 5000; 0 refills at once). */
  refillJitterMs?: number;
  /** Timeout of each issuer request (default 15 s). */
  timeoutMs?: number;
  fetch?: FetchLike;
  /** Random number in [0, 1) for the refill jitter (injected by tests). */
  random?: () => number;
}

export interface TokenSourceStats {
  /** Tokens in stock, over all challenges. */
  stock: number;
  /** Tokens (and ARC credentials) obtained from the issuer so far. */
  issued: number;
  /** Issuer requests that failed. */
  failures: number;
  /** Known challenges (by origin). */
  challenges: number;
}

export interface TokenSource {
  /**
   * A token for a request to `url`, or undefined when no challenge is known for its origin yet.
   * Fetches a batch first when the stock is empty (issuer errors are thrown: credential refused,
   * quota exhausted with Retry-After, issuer failed).
   */
  take(url: URL): Promise<Uint8Array | undefined>;
  /**
   * Handles the `WWW-Authenticate` of a 401 for a request to `url`: picks the first PrivateToken
   * challenge this client can satisfy, checks it (origin_info names `url`'s authority if non-empty,
   * RFC 9577 §2.1; the token key is in the issuer's directory) and makes it the challenge for that
   * origin. Throws CLIENT_ERR_CHALLENGE when no challenge is usable.
   */
  learn(url: URL, wwwAuthenticate: string): Promise<void>;
  /** Fills the stock of `url`'s challenge to a full batch (start-up; awaits the issuer). */
  fill(url: URL): Promise<void>;
  /** True when a challenge is known for `url`'s origin. */
  knows(url: URL): boolean;
  stats(): TokenSourceStats;
  /** Stops background refills. */
  close(): void;
}

interface DirectoryKey {
  tokenType: number;
  tokenKey: Uint8Array;
  notBeforeSec: number | undefined;
}

interface Directory {
  requestUri: URL;
  keys: DirectoryKey[];
}

interface ChallengeEntry {
  challenge: Uint8Array;
  decoded: TokenChallenge;
  tokenKey: Uint8Array;
  /** ARC challenges only: their rate-limit (tokens are made on demand, never stocked). */
  arc: ArcChallenge | undefined;
  /** ARC: the last take() found the limit reached and no new credential, and asked the gateway. */
  arcProbing: boolean;
  stock: Uint8Array[];
  filling: Promise<void> | undefined;
  refillTimer: ReturnType<typeof setTimeout> | undefined;
  /** The error of the last failed batch, thrown when the stock is empty. */
  lastError: ProtocolError | undefined;
}

const SUPPORTED_TYPES: ReadonlySet<number> = new Set([TOKEN_TYPE.BLIND_RSA_2048, TOKEN_TYPE.VOPRF_P384, TOKEN_TYPE.VOPRF_RISTRETTO255, ARC_TOKEN_TYPE]);

/** Thrown by postToIssuer when the issuer does not know a batch media type (415 or 404). */
const BATCH_UNSUPPORTED = new ProtocolError("CLIENT_ERR_ISSUER_FAILED", "the issuer does not serve batched token requests");

/** Wildcard key for challenges with an empty origin_info (good for every origin). */
const ANY_ORIGIN = "*";

function parseDirectory(json: unknown, base: URL): Directory {
  const bad = (what: string): ProtocolError => new ProtocolError("CLIENT_ERR_ISSUER_FAILED", `issuer directory: ${what}`);
  if (typeof json !== "object" || json === null) throw bad("not a JSON object");
  const o = json as Record<string, unknown>;
  const uri = o["issuer-request-uri"];
  if (typeof uri !== "string") throw bad("issuer-request-uri is missing");
  let requestUri: URL;
  try {
    requestUri = new URL(uri, base);
  } catch {
    throw bad("issuer-request-uri is not a URL");
  }
  const list = o["token-keys"];
  if (!Array.isArray(list)) throw bad("token-keys is missing");
  const keys: DirectoryKey[] = [];
  for (const k of list as unknown[]) {
    if (typeof k !== "object" || k === null) continue;
    const e = k as Record<string, unknown>;
    const tokenType = e["token-type"];
    const key = typeof e["token-key"] === "string" ? fromBase64Url(e["token-key"]) : undefined;
    const nb = e["not-before"];
    if (typeof tokenType !== "number" || key === undefined) continue;
    keys.push({ tokenType, tokenKey: key, notBeforeSec: typeof nb === "number" ? nb : undefined });
  }
  return { requestUri, keys };
}

function originMatches(originInfo: readonly string[], url: URL): boolean {
  const host = url.host.toLowerCase();
  const hostname = url.hostname.toLowerCase();
  return originInfo.some((o) => {
    const n = o.trim().toLowerCase();
    return n === host || n === hostname;
  });
}

export function createTokenSource(options: TokenSourceOptions): TokenSource {
  const issuer = secureUrl("issuer", options.issuer);
  // A header value: visible ASCII only (no whitespace or control characters that could split it).
  if (typeof options.credential !== "string" || !/^[\x21-\x7e]+$/.test(options.credential)) {
    throw invalid("credential", "must be a non-empty string of visible ASCII characters");
  }
  const credential = new Secret(options.credential);
  const batch = positiveInt("batch", options.batch, TOKEN_SOURCE_DEFAULTS.batch, 1000);
  const lowWater = nonNegativeInt("lowWater", options.lowWater, Math.floor(batch / 3), batch - 1);
  const concurrency = positiveInt("concurrency", options.concurrency, TOKEN_SOURCE_DEFAULTS.concurrency, 64);
  const jitterMs = nonNegativeInt("refillJitterMs", options.refillJitterMs, TOKEN_SOURCE_DEFAULTS.refillJitterMs);
  const timeoutMs = positiveInt("timeoutMs", options.timeoutMs, TOKEN_SOURCE_DEFAULTS.timeoutMs);
  const doFetch = options.fetch ?? defaultFetch();
  const random = options.random ?? Math.random;
  const budget = options.budget === undefined ? Infinity : positiveInt("budget", options.budget, 1);
  const accepted = new Set(options.tokenTypes ?? SUPPORTED_TYPES);
  if (accepted.size === 0 || [...accepted].some((t) => !SUPPORTED_TYPES.has(t))) {
    throw invalid("tokenTypes", `must list some of ${[...SUPPORTED_TYPES].join(", ")}`);
  }

  const entries = new Map<string, ChallengeEntry>();
  let directory: Directory | undefined;
  let directoryLoading: Promise<Directory> | undefined;
  let closed = false;
  const counters = { issued: 0, failures: 0 };

  async function loadDirectory(): Promise<Directory> {
    directoryLoading ??= (async () => {
      const url = new URL(ISSUER_DIRECTORY_PATH, issuer);
      let res: Response;
      try {
        res = await doFetch(url.href, {
          method: "GET",
          headers: { accept: MEDIA_TYPES.issuerDirectory },
          redirect: "error",
          credentials: "omit",
          signal: AbortSignal.timeout(timeoutMs),
        });
      } catch (e) {
        throw wrapError(e, "CLIENT_ERR_ISSUER_FAILED", "the issuer directory could not be fetched");
      }
      if (!res.ok) {
        await res.body?.cancel().catch(() => {});
        throw new ProtocolError("CLIENT_ERR_ISSUER_FAILED", `the issuer answered ${res.status} for its directory`);
      }
      const bytes = await readCapped(res, TOKEN_SOURCE_DEFAULTS.maxIssuerBytes, "CLIENT_ERR_ISSUER_FAILED");
      let json: unknown;
      try {
        json = JSON.parse(new TextDecoder().decode(bytes));
      } catch (e) {
        throw wrapError(e, "CLIENT_ERR_ISSUER_FAILED", "issuer directory: not JSON");
      }
      const d = parseDirectory(json, url);
      // The token request goes to the issuer's origin only: the credential must not leak elsewhere.
      if (d.requestUri.origin !== issuer.origin) {
        throw new ProtocolError("CLIENT_ERR_ISSUER_FAILED", "issuer directory: issuer-request-uri is on another origin");
      }
      directory = d;
      return d;
    })().finally(() => {
      directoryLoading = undefined;
    });
    return directoryLoading;
  }

  async function directoryHas(tokenType: number, tokenKey: Uint8Array): Promise<boolean> {
    const has = (d: Directory): boolean => d.keys.some((k) => k.tokenType === tokenType && equalBytes(k.tokenKey, tokenKey));
    if (directory !== undefined && has(directory)) return true;
    // A key we have not seen: the issuer may have rotated since we last looked.
    return has(await loadDirectory());
  }

  /** POSTs an issuance request with the attester credential; the 200 body, or the issuer's refusal as an error. */
  /**
   * POSTs `request` to the issuer; the body of a 200 (or of any status in `okStatuses`) of media
   * type `accept`. With `batch`, a 415 or 404 throws BATCH_UNSUPPORTED (the caller falls back).
   */
  async function postToIssuer(request: Uint8Array, contentType: string, accept: string, batch = false): Promise<Uint8Array> {
    const dir = directory ?? (await loadDirectory());
    let res: Response;
    try {
      res = await doFetch(dir.requestUri.href, {
        method: "POST",
        headers: {
          "content-type": contentType,
          accept,
          authorization: `Bearer ${credential.reveal()}`,
        },
        body: new Uint8Array(request),
        redirect: "error",
        // No cookies: the credential is the only thing that identifies the client to the issuer.
        credentials: "omit",
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (e) {
      throw wrapError(e, "CLIENT_ERR_ISSUER_FAILED", "the issuer could not be reached");
    }
    // draft-ietf-privacypass-batched-tokens: 206 is a generic batch with absent entries.
    if (res.status !== 200 && !(batch && res.status === 206)) {
      await res.body?.cancel().catch(() => {});
      if (batch && (res.status === 415 || res.status === 404)) throw BATCH_UNSUPPORTED;
      if (res.status === 401 || res.status === 403) {
        throw new ProtocolError("CLIENT_ERR_CREDENTIAL_REFUSED", `the issuer refused the credential (${res.status})`);
      }
      if (res.status === 429) {
        const retryAfter = res.headers.get("retry-after");
        throw new ProtocolError(
          "CLIENT_ERR_QUOTA_EXHAUSTED",
          `the issuer's token quota for this credential is exhausted${retryAfter === null ? "" : `; retry after ${retryAfter} s`}`,
          retryAfter === null ? {} : { headers: { "retry-after": retryAfter } },
        );
      }
      // 422: a key the issuer no longer has (RFC 9578 §6.2): look at its directory again next time.
      if (res.status === 422) directory = undefined;
      throw new ProtocolError("CLIENT_ERR_ISSUER_FAILED", `the issuer answered ${res.status} to a token request`);
    }
    if (!isMediaType(res.headers.get("content-type"), accept)) {
      await res.body?.cancel().catch(() => {});
      throw new ProtocolError("CLIENT_ERR_ISSUER_FAILED", `the issuer's answer is not ${accept}`);
    }
    return readCapped(res, TOKEN_SOURCE_DEFAULTS.maxIssuerBytes, "CLIENT_ERR_ISSUER_FAILED");
  }

  const arc = new ArcCredentials(postToIssuer);

  async function issueOne(entry: ChallengeEntry): Promise<Uint8Array> {
    const pending = await createTokenRequest(entry.challenge, entry.tokenKey);
    const body = await postToIssuer(pending.request, MEDIA_TYPES.tokenRequest, MEDIA_TYPES.tokenResponse);
    try {
      return await pending.finalize(body);
    } catch (e) {
      // A new error, not wrapError: that would pass core's PP_ERR_* code through (found by fuzzing).
      throw new ProtocolError("CLIENT_ERR_ISSUER_FAILED", "the issuer's token response does not verify", { cause: e });
    }
  }

  /** Whether the issuer serves batched requests (until it answers one with 415 or 404). */
  let batchSupported = true;

  /** Up to `n` tokens in one batched request (generic for type 2, amortized for types 1 and 5). */
  async function issueBatch(entry: ChallengeEntry, n: number): Promise<Uint8Array[]> {
    const pending = await createBatchTokenRequest(entry.challenge, entry.tokenKey, n);
    const body = await postToIssuer(pending.request, pending.requestMediaType, pending.responseMediaType, true);
    try {
      return await pending.finalize(body);
    } catch (e) {
      throw new ProtocolError("CLIENT_ERR_ISSUER_FAILED", "the issuer's batch token response does not verify", { cause: e });
    }
  }

  /** Tokens a batch may still fetch under the budget (at least `floor`). */
  function allowed(n: number, floor = 0): number {
    return Math.max(floor, Math.min(n, budget - counters.issued));
  }

  /**
   * Adds up to `n` tokens to the entry's stock; one batch at a time per entry. The tokens come in
   * batched requests of at most tokensPerRequest each; an issuer that does not serve batches
   * (415 or 404) gets single requests from then on, `concurrency` at a time.
   */
  function runBatch(entry: ChallengeEntry, n: number): Promise<void> {
    if (n <= 0) return Promise.resolve();
    entry.filling ??= (async () => {
      let firstError: ProtocolError | undefined;
      let left = n;
      while (left > 0 && batchSupported && firstError === undefined && !closed) {
        const k = Math.min(left, TOKEN_SOURCE_DEFAULTS.tokensPerRequest);
        try {
          const tokens = await issueBatch(entry, k);
          left -= k;
          counters.issued += tokens.length;
          if (current(entry)) entry.stock.push(...tokens);
          // A 206: the issuer refused some (e.g. the quota ran out); do not insist now.
          if (tokens.length < k) break;
        } catch (e) {
          if (e === BATCH_UNSUPPORTED) {
            batchSupported = false;
            break;
          }
          counters.failures++;
          firstError = isProtocolError(e) ? e : wrapError(e, "CLIENT_ERR_ISSUER_FAILED");
        }
      }
      if (batchSupported || firstError !== undefined) {
        entry.lastError = firstError;
        return;
      }
      n = left;
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < n && firstError === undefined && !closed) {
          next++;
          try {
            const token = await issueOne(entry);
            counters.issued++;
            if (current(entry)) entry.stock.push(token);
          } catch (e) {
            counters.failures++;
            firstError ??= isProtocolError(e) ? e : wrapError(e, "CLIENT_ERR_ISSUER_FAILED");
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
      entry.lastError = firstError;
    })().finally(() => {
      entry.filling = undefined;
    });
    return entry.filling;
  }

  /** Whether the entry is still the challenge of some origin (a replaced one gets no tokens). */
  function current(entry: ChallengeEntry): boolean {
    for (const e of entries.values()) if (e === entry) return true;
    return false;
  }

  function scheduleRefill(entry: ChallengeEntry): void {
    if (closed || entry.filling !== undefined || entry.refillTimer !== undefined) return;
    const delay = jitterMs === 0 ? 0 : Math.floor(random() * jitterMs);
    const t = setTimeout(() => {
      entry.refillTimer = undefined;
      if (closed || !current(entry) || entry.stock.length > lowWater) return;
      // A background refill's failure is remembered and surfaces only if the stock runs dry.
      void runBatch(entry, allowed(batch - entry.stock.length));
    }, delay);
    (t as unknown as { unref?: () => void }).unref?.();
    entry.refillTimer = t;
  }

  function entryFor(url: URL): ChallengeEntry | undefined {
    return entries.get(url.host.toLowerCase()) ?? entries.get(ANY_ORIGIN);
  }

  return {
    async take(url) {
      const entry = entryFor(url);
      if (entry === undefined) return undefined;
      if (entry.arc !== undefined) {
        try {
          const token = await arc.token(entry.arc);
          entry.arcProbing = false;
          return token;
        } catch (e) {
          // The limit is reached in this context and the quota allows no new credential: first
          // let the request go without a token, so the gateway's 401 shows whether its challenge
          // has moved on (e.g. the next epoch: a new context); only then report the quota.
          if (isProtocolError(e) && e.code === "CLIENT_ERR_QUOTA_EXHAUSTED" && !entry.arcProbing) {
            entry.arcProbing = true;
            return undefined;
          }
          entry.arcProbing = false;
          throw e;
        }
      }
      if (entry.stock.length === 0) {
        // Foreground: wait for a running batch, or start one.
        if (entry.filling !== undefined) await entry.filling;
        if (entry.stock.length === 0) {
          entry.lastError = undefined;
          await runBatch(entry, allowed(batch, 1));
        }
        if (entry.stock.length === 0) {
          throw entry.lastError ?? new ProtocolError("CLIENT_ERR_ISSUER_FAILED", "no token could be obtained");
        }
      }
      const token = entry.stock.shift()!;
      if (entry.stock.length <= lowWater && allowed(batch) > 0) scheduleRefill(entry);
      return token;
    },

    async learn(url, wwwAuthenticate) {
      const offered = parseWwwAuthenticate(wwwAuthenticate);
      let reason = "the gateway's 401 carries no PrivateToken challenge";
      for (const c of offered) {
        let decoded: TokenChallenge;
        try {
          decoded = decodeTokenChallenge(c.challenge);
        } catch {
          reason = "the gateway's challenge is malformed";
          continue;
        }
        // Unknown (e.g. greased, RFC 9577 §4.1) token types are skipped, not fatal.
        if (!accepted.has(decoded.tokenType)) {
          reason = "the gateway offers no token type this client supports";
          continue;
        }
        // RFC 9577 §2.1: a non-empty origin_info must name the origin the client talked to.
        if (decoded.originInfo.length > 0 && !originMatches(decoded.originInfo, url)) {
          reason = `the gateway's challenge is for another origin than ${url.host}`;
          continue;
        }
        if (options.issuerName !== undefined && decoded.issuerName !== options.issuerName) {
          reason = "the gateway's challenge names another issuer";
          continue;
        }
        if (decoded.tokenType === ARC_TOKEN_TYPE && (c.rateLimit === undefined || c.rateLimit < 2)) {
          reason = "the gateway's ARC challenge has no usable rate-limit";
          continue;
        }
        if (!(await directoryHas(decoded.tokenType, c.tokenKey))) {
          reason = "the gateway's token key is not in the issuer's directory";
          continue;
        }
        const key = decoded.originInfo.length === 0 ? ANY_ORIGIN : url.host.toLowerCase();
        const old = entries.get(key);
        if (old !== undefined && equalBytes(old.challenge, c.challenge) && equalBytes(old.tokenKey, c.tokenKey) && old.arc?.rateLimit === c.rateLimit) return;
        if (old?.refillTimer !== undefined) clearTimeout(old.refillTimer);
        entries.set(key, {
          challenge: c.challenge,
          decoded,
          tokenKey: c.tokenKey,
          arc:
            decoded.tokenType === ARC_TOKEN_TYPE && c.rateLimit !== undefined
              ? { challenge: c.challenge, decoded, tokenKey: c.tokenKey, rateLimit: c.rateLimit }
              : undefined,
          arcProbing: false,
          stock: [],
          filling: undefined,
          refillTimer: undefined,
          lastError: undefined,
        });
        if (key === ANY_ORIGIN) entries.delete(url.host.toLowerCase());
        return;
      }
      throw new ProtocolError("CLIENT_ERR_CHALLENGE", reason);
    },

    async fill(url) {
      const entry = entryFor(url);
      if (entry === undefined) return;
      if (entry.arc !== undefined) return arc.prepare(entry.arc);
      if (entry.filling !== undefined) await entry.filling;
      if (entry.stock.length >= batch) return;
      await runBatch(entry, allowed(batch - entry.stock.length));
      if (entry.stock.length === 0 && entry.lastError !== undefined) throw entry.lastError;
    },

    knows(url) {
      return entryFor(url) !== undefined;
    },

    stats() {
      let stock = 0;
      for (const e of new Set(entries.values())) stock += e.stock.length;
      return { stock, issued: counters.issued + arc.issued, failures: counters.failures, challenges: entries.size };
    },

    close() {
      closed = true;
      for (const e of entries.values()) {
        if (e.refillTimer !== undefined) clearTimeout(e.refillTimer);
        e.refillTimer = undefined;
      }
    },
  };
}
