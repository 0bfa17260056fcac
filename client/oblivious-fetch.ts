// createObliviousFetch(): a function with fetch's signature that sends every request through an
// Oblivious HTTP relay (RFC 9458), encrypted to the gateway, with a Privacy Pass token (RFC 9577)
// inside the encrypted request when the gateway asks for one.
//
//   fetch(url, init) -> Binary HTTP request (+ Authorization: PrivateToken) -> encapsulate
//     -> POST <relay> message/ohttp-req -> 200 message/ohttp-res -> decapsulate -> Response
//
// What the relay and the gateway say *unsealed* (RFC 9458 §5.2: errors before decapsulation) is
// turned into typed errors (CLIENT_ERR_*); what the target or the gateway says *sealed* is
// returned as the Response, unchanged, as a DAP client expects.
//
// Retries, each with a fresh HPKE context (RFC 9458 §4.3 contexts are single use):
// - once after the gateway refuses our key configuration (§5.3 `ohttp-key` problem, or 422, §6.4),
//   with the configuration refetched;
// - once after a sealed 401 PrivateToken challenge, with a fresh token for that challenge;
// - up to `retries` times after an uncertain failure (a sealed 5xx, the relay's 502/503/504, a
//   network error or timeout), for idempotent methods and token-bearing requests only. The resend
//   carries the same token: the gateway binds a token's nonce to a digest of method, URL and body,
//   and accepts the same token again only for the identical request. A token stays bound to its
//   request until a definite answer arrives, so a caller that resends the same report later (same
//   bytes) reuses it too; any other request gets a new token.

import { encodeRequest, decodeResponse, padToMultiple, type BhttpResponse, type Field } from "../core/bhttp/index.js";
import { concatBytes, toHex } from "../core/bytes.js";
import { DATE_PROBLEM, OHTTP_KEY_PROBLEM, ProtocolError, isProtocolError, wrapError } from "../core/errors.js";
import { isMediaType, mediaTypeOf } from "../core/http-fields.js";
import { MEDIA_TYPES, encapsulateRequest } from "../core/ohttp/index.js";
import { formatAuthorization } from "../core/privacypass/index.js";
import { PROBLEM_MEDIA_TYPE } from "../core/problem.js";
import { KeySource, readCapped, type LoadedKeys } from "./key-source.js";
import { chunkedExchange, type ChunkedOutcome } from "./chunked.js";
import { field, hasStreamBody, toBhttpRequest, toOutgoingRequest, toResponse, toStreamedRequest, type OutgoingRequest } from "./messages.js";
import { defaultFetch, invalid, nonNegativeInt, positiveInt, secureUrl, sleep, type FetchLike } from "./options.js";
import type { TokenSource } from "./token-source.js";

/** Defaults of createObliviousFetch. */
export const OBLIVIOUS_FETCH_DEFAULTS = Object.freeze({
  /** One relay exchange (relay + gateway + target); a DAP upload normally takes milliseconds. */
  timeoutMs: 30_000,
  /** Resends after an uncertain failure (idempotent or token-bearing requests only). */
  retries: 1,
  /** Pause before the first resend; doubled for each further one. */
  retryDelayMs: 500,
  /** Largest encapsulated response read from the relay (the gateway caps target answers at 256 KiB). */
  maxResponseBytes: 1024 * 1024,
  /** Tokens kept bound to requests that may be resent (oldest dropped first). */
  maxBoundTokens: 256,
});

export interface ObliviousFetchOptions {
  /** The relay resource for this gateway (e.g. https://relay.example/leader-gateway). */
  relay: string | URL;
  /** The gateway's own /ohttp-keys URL (HTTPS; http only on loopback), or pinned application/ohttp-keys bytes. */
  keys: string | URL | Uint8Array;
  /** Privacy Pass tokens (createTokenSource); without it no token is ever sent. */
  tokens?: TokenSource;
  /**
   * Compare the keys with the relay's copy and refuse to send if they differ: `true` uses
   * `<relay>/ohttp-keys`, a URL names another copy. Off by default.
   */
  relayKeys?: boolean | string | URL;
  fetch?: FetchLike;
  /** Timeout of one relay exchange in ms (default 30 s). */
  timeoutMs?: number;
  /** Resends after an uncertain failure (default 1). */
  retries?: number;
  retryDelayMs?: number;
  maxResponseBytes?: number;
  /**
   * Which requests carry a token without being asked (default: every method but GET, HEAD and
   * OPTIONS; under the gateway's DAP policy that is the report upload). Any request still gets
   * one after a 401 PrivateToken challenge.
   */
  needsToken?: (method: string, url: URL) => boolean;
  /** Clock for the key cache and the inner Date (ms since the epoch). */
  now?: () => number;
  /**
   * Send requests as chunked OHTTP (draft-ietf-ohai-chunked-ohttp-08). Default: only those whose
   * body is a ReadableStream; small bodies go as one `message/ohttp-req`. `true`: every request.
   */
  chunked?: boolean;
  /** Pad inner requests with zero bytes to a multiple of this many bytes (RFC 9292 §3.8); 0: none. */
  padToBytes?: number;
  /**
   * Send Date in the inner request (RFC 9458 §6.5.1; default true). A gateway refusing it with the
   * `date` problem gets one resend, freshly encapsulated, carrying the gateway's Date (§6.5.2).
   */
  date?: boolean;
}

export interface ObliviousFetchStats {
  requests: number;
  /** Relay exchanges (including retries). */
  exchanges: number;
  keyRefreshes: number;
  /** Resends after uncertain failures. */
  resends: number;
  /** Requests retried after a 401 PrivateToken challenge. */
  challengeRetries: number;
  /** Requests resent once with the gateway's Date after a `date` problem. */
  dateRetries: number;
}

export interface ObliviousFetch {
  (input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /**
   * Gets ready to upload to `url` (an upload route such as <leader>/tasks/<id>/reports): learns the
   * gateway's challenge with one tokenless request (answered by a sealed 401), then fetches a batch
   * of tokens, so issuance is not tied in time to the uploads. Loads the keys too. Without a
   * token source it only loads the keys.
   */
  prepare(url: string | URL, opts?: { method?: string }): Promise<void>;
  /** The key configurations in use (loading them if needed). */
  keys(): Promise<LoadedKeys>;
  stats(): ObliviousFetchStats;
}

/** Whether an exchange's failure leaves it unknown if the target processed the request. */
interface Failure {
  error: ProtocolError;
  /** Worth resending (the request may not have arrived, or a resend is harmless). */
  resend: boolean;
  /** The gateway refused the key configuration: refetch it. */
  keyRefused: boolean;
}

const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]);
const NO_TOKEN_BY_DEFAULT = new Set(["GET", "HEAD", "OPTIONS"]);
const encoder = new TextEncoder();

/** SHA-256 over method, URL and body: the same request gets the same token. */
async function requestDigest(r: OutgoingRequest): Promise<string> {
  const head = encoder.encode(`${r.method}\n${r.url.href}\n`);
  const d = await crypto.subtle.digest("SHA-256", new Uint8Array(concatBytes(head, r.body)));
  return toHex(new Uint8Array(d));
}

function hasPrivateTokenChallenge(b: Pick<BhttpResponse, "status" | "headers">): string | undefined {
  if (b.status !== 401) return undefined;
  const h = field(b.headers, "www-authenticate");
  return h !== undefined && /(^|[\s,])privatetoken(\s|$)/i.test(h) ? h : undefined;
}

/** The inner fields Veil adds: the token and the Date (RFC 9458 §6.5.1). */
function innerFields(token: Uint8Array | undefined, date: string | undefined): Field[] {
  const extra: Field[] = [];
  if (token !== undefined) extra.push(["authorization", formatAuthorization(token)]);
  if (date !== undefined) extra.push(["date", date]);
  return extra;
}

/** The gateway's Date when it refused ours (RFC 9458 §6.5.2: a 400 `date` problem carrying Date). */
function dateRefusal(b: Pick<BhttpResponse, "status" | "headers" | "body">): string | undefined {
  if (b.status !== 400 || problemType(b.body, field(b.headers, "content-type") ?? null) !== DATE_PROBLEM) return undefined;
  return field(b.headers, "date");
}

/** `title`/`detail` of a problem document written by Veil (safe to show), for error messages. */
function problemSummary(body: Uint8Array, contentType: string | null | undefined): string | undefined {
  if (!isMediaType(contentType, PROBLEM_MEDIA_TYPE)) return undefined;
  try {
    const p = JSON.parse(new TextDecoder().decode(body)) as { type?: unknown; title?: unknown; detail?: unknown };
    const parts = [p.title, p.detail].filter((x): x is string => typeof x === "string" && x.length > 0 && x.length < 300);
    return parts.length === 0 ? undefined : parts.join(": ");
  } catch {
    return undefined;
  }
}

function problemType(body: Uint8Array, contentType: string | null): string | undefined {
  if (!isMediaType(contentType, PROBLEM_MEDIA_TYPE)) return undefined;
  try {
    const t = (JSON.parse(new TextDecoder().decode(body)) as { type?: unknown }).type;
    return typeof t === "string" ? t : undefined;
  } catch {
    return undefined;
  }
}

/** The relay's own answer, or the gateway's before decapsulation (RFC 9458 §5.2), as a Failure. */
function unsealedFailure(res: Response, body: Uint8Array, contentType: string | null): Failure {
  const summary = problemSummary(body, contentType);
  const said = `${res.status}${summary === undefined ? "" : ` (${summary})`}`;
  if ((res.status === 400 && problemType(body, contentType) === OHTTP_KEY_PROBLEM) || res.status === 422) {
    return { error: new ProtocolError("CLIENT_ERR_KEY_CONFIG_REFUSED", `the gateway refused the key configuration: ${said}`), resend: false, keyRefused: true };
  }
  const retryAfter = res.headers.get("retry-after");
  const headers = retryAfter === null ? {} : { headers: { "retry-after": retryAfter } };
  if (res.status === 429) {
    return { error: new ProtocolError("CLIENT_ERR_RATE_LIMITED", `the relay is rate limiting this client: ${said}`, headers), resend: false, keyRefused: false };
  }
  if (res.status === 200) {
    return { error: new ProtocolError("CLIENT_ERR_BAD_RESPONSE", `the relay answered 200 with ${mediaTypeOf(contentType) || "no content type"}`), resend: false, keyRefused: false };
  }
  // 502/504: the gateway failed or was slow (it may have processed the request); 503: busy.
  const resend = res.status === 502 || res.status === 503 || res.status === 504;
  return { error: new ProtocolError("CLIENT_ERR_RELAY_REFUSED", `the relay answered ${said}`, headers), resend, keyRefused: false };
}

export function createObliviousFetch(options: ObliviousFetchOptions): ObliviousFetch {
  const relay = secureUrl("relay", options.relay);
  const keysOption = options.keys instanceof Uint8Array ? options.keys : secureUrl("keys", options.keys);
  let relayKeys: URL | undefined;
  if (options.relayKeys === true) relayKeys = new URL(relay.href.replace(/\/+$/, "") + "/ohttp-keys");
  else if (options.relayKeys !== undefined && options.relayKeys !== false) relayKeys = secureUrl("relayKeys", options.relayKeys);
  const doFetch = options.fetch ?? defaultFetch();
  const timeoutMs = positiveInt("timeoutMs", options.timeoutMs, OBLIVIOUS_FETCH_DEFAULTS.timeoutMs);
  const retries = nonNegativeInt("retries", options.retries, OBLIVIOUS_FETCH_DEFAULTS.retries, 10);
  const retryDelayMs = nonNegativeInt("retryDelayMs", options.retryDelayMs, OBLIVIOUS_FETCH_DEFAULTS.retryDelayMs);
  const maxResponseBytes = positiveInt("maxResponseBytes", options.maxResponseBytes, OBLIVIOUS_FETCH_DEFAULTS.maxResponseBytes);
  if (options.needsToken !== undefined && typeof options.needsToken !== "function") throw invalid("needsToken", "must be a function");
  const needsToken = options.needsToken ?? ((method: string) => !NO_TOKEN_BY_DEFAULT.has(method));
  const tokens = options.tokens;
  const now = options.now ?? Date.now;
  const keySource = new KeySource({
    keys: keysOption,
    relayKeys,
    fetch: doFetch,
    now,
    timeoutMs,
  });
  const stats: ObliviousFetchStats = { requests: 0, exchanges: 0, keyRefreshes: 0, resends: 0, challengeRetries: 0, dateRetries: 0 };
  const padToBytes = nonNegativeInt("padToBytes", options.padToBytes, 0);
  const sendDate = options.date ?? true;
  const chunkedAlways = options.chunked === true;
  /** digest of a request -> the token it carried, while a resend of it is possible. */
  const bound = new Map<string, Uint8Array>();

  function bind(digest: string, token: Uint8Array): void {
    bound.delete(digest);
    bound.set(digest, token);
    if (bound.size > OBLIVIOUS_FETCH_DEFAULTS.maxBoundTokens) bound.delete(bound.keys().next().value!);
  }

  /** One encapsulate -> relay -> decapsulate round trip. */
  async function roundTrip(keys: LoadedKeys, inner: Uint8Array, signal: AbortSignal | undefined): Promise<BhttpResponse | Failure> {
    stats.exchanges++;
    const { encapsulated, response: ctx } = await encapsulateRequest(keys.config, inner);
    const timeout = AbortSignal.timeout(timeoutMs);
    const any = (AbortSignal as { any?: (s: AbortSignal[]) => AbortSignal }).any;
    const combined = signal === undefined ? timeout : any !== undefined ? any([signal, timeout]) : timeout;
    let res: Response;
    try {
      res = await doFetch(relay.href, {
        method: "POST",
        headers: { "content-type": MEDIA_TYPES.request, accept: MEDIA_TYPES.response },
        body: new Uint8Array(encapsulated),
        redirect: "error",
        // No cookies or HTTP authentication to the relay: nothing that could identify the client.
        credentials: "omit",
        signal: combined,
      });
    } catch (e) {
      if (signal?.aborted === true) throw signal.reason;
      if (timeout.aborted) return { error: new ProtocolError("CLIENT_ERR_TIMEOUT", undefined, { cause: e }), resend: true, keyRefused: false };
      return { error: wrapError(e, "CLIENT_ERR_RELAY_UNREACHABLE"), resend: true, keyRefused: false };
    }
    let body: Uint8Array;
    try {
      body = await readCapped(res, maxResponseBytes, "CLIENT_ERR_BAD_RESPONSE");
    } catch (e) {
      if (signal?.aborted === true) throw signal.reason;
      const err = timeout.aborted ? new ProtocolError("CLIENT_ERR_TIMEOUT", undefined, { cause: e }) : wrapError(e, "CLIENT_ERR_BAD_RESPONSE");
      return { error: err, resend: true, keyRefused: false };
    }
    const contentType = res.headers.get("content-type");
    if (res.status === 200 && isMediaType(contentType, MEDIA_TYPES.response)) {
      try {
        return decodeResponse(await ctx.decapsulateResponse(body));
      } catch (e) {
        // A sealed answer we cannot open or decode: say so, whatever core/ohttp or core/bhttp called it.
        const error = new ProtocolError("CLIENT_ERR_BAD_RESPONSE", "the gateway's answer could not be decapsulated or decoded", { cause: e });
        return { error, resend: false, keyRefused: false };
      }
    }
    return unsealedFailure(res, body, contentType);
  }

  /** Sends one inner request, with the key-refresh retry and the uncertain-failure resends. */
  async function exchange(req: OutgoingRequest, token: Uint8Array | undefined): Promise<BhttpResponse> {
    const encode = (date: string | undefined): Uint8Array => {
      const message = encodeRequest(toBhttpRequest(req, innerFields(token, date)));
      return padToMultiple(message, padToBytes);
    };
    let inner = encode(sendDate ? new Date(now()).toUTCString() : undefined);
    const mayResend = token !== undefined || IDEMPOTENT.has(req.method);
    let keys = await keySource.current();
    let refreshed = false;
    let dateRetried = false;
    let resends = 0;
    for (;;) {
      const out = await roundTrip(keys, inner, req.signal);
      if (!("error" in out)) {
        const gatewayDate = dateRefusal(out);
        if (gatewayDate !== undefined && sendDate && !dateRetried) {
          // RFC 9458 §6.5.2: once, freshly encapsulated, with the gateway's Date, which is kept
          // for nothing else (no clock offset is remembered).
          dateRetried = true;
          stats.dateRetries++;
          inner = encode(gatewayDate);
          continue;
        }
        if (out.status >= 500 && mayResend && resends < retries) {
          resends++;
          stats.resends++;
          await sleep(retryDelayMs * 2 ** (resends - 1));
          continue;
        }
        return out;
      }
      if (out.keyRefused) {
        if (refreshed || keySource.pinned) throw out.error;
        refreshed = true;
        stats.keyRefreshes++;
        keys = await keySource.refresh(keys);
        continue;
      }
      if (out.resend && mayResend && resends < retries) {
        resends++;
        stats.resends++;
        await sleep(retryDelayMs * 2 ** (resends - 1));
        continue;
      }
      throw out.error;
    }
  }

  /** A request sent as chunked OHTTP: streamed, so sent once (no resends, no retries). */
  async function streamedFetch(input: RequestInfo | URL, init: RequestInit | undefined): Promise<Response> {
    const req = toStreamedRequest(input, init);
    const callerAuthorization = req.headers.some(([n]) => n === "authorization");
    const token = !callerAuthorization && tokens !== undefined && needsToken(req.method, req.url) ? await tokens.take(req.url) : undefined;
    const keys = await keySource.current();
    stats.exchanges++;
    let out: ChunkedOutcome;
    try {
      out = await chunkedExchange(req, {
        relay,
        config: keys.config,
        fetch: doFetch,
        extra: innerFields(token, sendDate ? new Date(now()).toUTCString() : undefined),
        padToBytes,
        signal: req.signal,
      });
    } catch (e) {
      if (req.signal?.aborted === true) throw req.signal.reason;
      throw wrapError(e, "CLIENT_ERR_RELAY_UNREACHABLE");
    }
    if (!out.ok) {
      const body = await readCapped(out.res, maxResponseBytes, "CLIENT_ERR_BAD_RESPONSE");
      throw unsealedFailure(out.res, body, out.res.headers.get("content-type")).error;
    }
    // A challenge cannot be answered with this body (it is gone); the next request will carry a token.
    const challenge = hasPrivateTokenChallenge({ status: out.head.status, headers: out.head.headers });
    if (tokens !== undefined && challenge !== undefined) await tokens.learn(req.url, challenge);
    return toResponse({ status: out.head.status, headers: out.head.headers, body: out.body });
  }

  async function obliviousFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    stats.requests++;
    if (chunkedAlways || hasStreamBody(input, init)) return streamedFetch(input, init);
    const req = await toOutgoingRequest(input, init);
    const callerAuthorization = req.headers.some(([n]) => n === "authorization");
    const source = callerAuthorization ? undefined : tokens;
    let digest: string | undefined;
    let token: Uint8Array | undefined;
    if (source !== undefined && needsToken(req.method, req.url)) {
      digest = await requestDigest(req);
      token = bound.get(digest) ?? (await source.take(req.url));
      if (token !== undefined) bind(digest, token);
    }
    let answer: BhttpResponse;
    try {
      answer = await exchange(req, token);
      const challenge = source === undefined ? undefined : hasPrivateTokenChallenge(answer);
      if (source !== undefined && challenge !== undefined) {
        // The gateway wants a (new) token: learn its challenge and retry once with a fresh token.
        if (digest !== undefined) bound.delete(digest);
        await source.learn(req.url, challenge);
        stats.challengeRetries++;
        digest ??= await requestDigest(req);
        const fresh = await source.take(req.url);
        if (fresh === undefined) throw new ProtocolError("CLIENT_ERR_CHALLENGE", "no token source entry for this origin after its challenge");
        bind(digest, fresh);
        answer = await exchange(req, fresh);
        if (hasPrivateTokenChallenge(answer) !== undefined) {
          bound.delete(digest);
          const why = problemSummary(answer.body, field(answer.headers, "content-type"));
          throw new ProtocolError("CLIENT_ERR_TOKEN_REFUSED", `the gateway refused a fresh token${why === undefined ? "" : `: ${why}`}`);
        }
      }
    } catch (e) {
      // A token stays bound after an uncertain failure: resending the same request reuses it.
      if (digest !== undefined && isProtocolError(e) && !["CLIENT_ERR_RELAY_UNREACHABLE", "CLIENT_ERR_TIMEOUT", "CLIENT_ERR_RELAY_REFUSED", "CLIENT_ERR_BAD_RESPONSE"].includes(e.code)) {
        bound.delete(digest);
      }
      throw e;
    }
    // A definite answer spends the token; after a sealed 5xx the same request may come again.
    if (digest !== undefined && answer.status < 500) bound.delete(digest);
    return toResponse(answer);
  }

  const f = obliviousFetch as ObliviousFetch;
  f.prepare = async (url, opts = {}) => {
    const target = new URL(url);
    await keySource.current();
    if (tokens === undefined) return;
    if (!tokens.knows(target)) {
      // A tokenless request to an upload route: the gate answers a sealed 401 with its challenge
      // before anything reaches the target.
      const probe: OutgoingRequest = { method: opts.method ?? "PUT", url: target, headers: [], body: new Uint8Array(0), signal: undefined };
      const answer = await exchange(probe, undefined);
      const challenge = hasPrivateTokenChallenge(answer);
      if (challenge === undefined) return; // this gateway does not ask for tokens here
      await tokens.learn(target, challenge);
    }
    await tokens.fill(target);
  };
  f.keys = () => keySource.current();
  f.stats = () => ({ ...stats });
  return f;
}
