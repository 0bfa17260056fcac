// The "jwt" attester: a client proves it is attested with a JWT (RFC 7519) from the service's
// identity provider, sent as `Authorization: Bearer <JWT>` (RFC 6750). Verified with `jose`:
//
// - signature with a key of the provider's JWK Set (RFC 7517), chosen by `kid`/`alg`/`kty`;
// - only the configured asymmetric algorithms (never `none`, never HMAC: a JWT whose header says
//   HS256 is refused before any key is looked at, so a public key can never be used as an HMAC
//   secret: no key confusion);
// - `iss` and `aud` equal to the configured values, `exp` required, `exp`/`nbf` with a small clock
//   skew (JWT_DEFAULTS.clockSkewSec);
// - the quota claim (`sub` by default) present, a non-empty string (or a number).
//
// A refused JWT is ISSUER_ERR_UNAUTHORIZED (401) with `WWW-Authenticate: Bearer
// error="invalid_token"` (RFC 6750 §3.1); the reason is a fixed phrase (never the token, never a
// claim value) that the route logs.
//
// The JWK Set is fetched from `jwks` and cached by its caching headers (RFC 9111: max-age, Age,
// ETag revalidation), within bounds; a JWT naming a `kid` that is not in the cached set triggers
// one refetch (at most every JWT_DEFAULTS.minRefetchMs, so made-up kids cannot make the issuer
// hammer the provider). A failed or malformed fetch keeps the last good set; before any set was
// fetched, JWTs get ISSUER_ERR_JWKS_UNAVAILABLE (503).

import { createLocalJWKSet, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey } from "jose";
import { ProtocolError } from "../core/errors.js";
import { CACHE_DEFAULTS, CachedDocument } from "../server/cached-document.js";
import { fetchBounded, type DocumentFetcher } from "../server/http-fetch.js";

export const JWT_DEFAULTS = Object.freeze({
  /** Accepted difference between the provider's clock and ours for exp and nbf. */
  clockSkewSec: 30,
  ...CACHE_DEFAULTS,
  /** Largest JWK Set accepted (a few keys are a few KiB). */
  maxJwksBytes: 256 * 1024,
  /** Longest JWT accepted (bytes of the Authorization header value). */
  maxJwtBytes: 8 * 1024,
});

/** Signature algorithms a JWT attester may accept: asymmetric only (config validates against it). */
export const JWT_ALGORITHMS = ["ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA", "Ed25519"] as const;

export interface JwtAttesterConfig {
  jwks: string;
  issuer: string;
  audience: string;
  algorithms: readonly string[];
  quotaClaim: string;
}

export interface JwksDeps {
  fetcher?: DocumentFetcher;
  now?: () => number;
  /** Called with a safe description when a fetch fails (for the log). */
  onEvent?: (event: { what: string; detail: string }) => void;
}

/** The identity provider's JWK Set, cached by its HTTP caching headers; the last good set is kept. */
export class JwksCache {
  readonly url: string;
  readonly #doc: CachedDocument<JWTVerifyGetKey>;

  constructor(url: string, deps: JwksDeps = {}) {
    this.url = url;
    const onEvent = deps.onEvent ?? (() => {});
    this.#doc = new CachedDocument(
      {
        url,
        accept: "application/jwk-set+json, application/json",
        label: "JWK Set",
        defaultMaxAgeSec: JWT_DEFAULTS.defaultMaxAgeSec,
        minMaxAgeSec: JWT_DEFAULTS.minMaxAgeSec,
        maxMaxAgeSec: JWT_DEFAULTS.maxMaxAgeSec,
        fetchTimeoutMs: JWT_DEFAULTS.fetchTimeoutMs,
        maxBytes: JWT_DEFAULTS.maxJwksBytes,
        minRefetchMs: JWT_DEFAULTS.minRefetchMs,
        maxRetryDelayMs: JWT_DEFAULTS.maxRetryDelayMs,
        bypassCacheOnRefetch: false,
      },
      {
        fetcher: deps.fetcher ?? fetchBounded,
        now: deps.now ?? Date.now,
        parse: (body) => createLocalJWKSet(parseJwks(body)),
        onFailure: (e) => onEvent({ what: "JWK Set fetch failed: keeping the last good set", detail: e instanceof Error ? e.message : "error" }),
      },
    );
  }

  /** True once a JWK Set was fetched (readiness). */
  get fetched(): boolean {
    return this.#doc.fetched;
  }

  /** The current key set; fetches (or revalidates) first when stale, keeping the last good one. */
  async keys(): Promise<JWTVerifyGetKey> {
    const refresh = this.#doc.refreshIfStale();
    // A stale set is used while it is revalidated; only the very first fetch is waited for.
    if (this.#doc.value === undefined) await refresh;
    const keys = this.#doc.value;
    if (keys === undefined) {
      throw new ProtocolError("ISSUER_ERR_JWKS_UNAVAILABLE", "the identity provider's JWK Set could not be fetched", {
        headers: { "retry-after": "5" },
      });
    }
    return keys;
  }

  /** A refetch because a JWT named a key we do not know; rate-limited. Resolves when done. */
  async refetchForUnknownKey(): Promise<void> {
    await this.#doc.refetchForUnknownKey();
  }

  /** Fetches (or revalidates) now; single-flight; never throws (failures keep the last set). */
  refresh(): Promise<void> {
    return this.#doc.refresh();
  }
}

/** A JWK Set document: `{"keys": [...]}` (RFC 7517 §5); jose checks each key when it is used. */
function parseJwks(body: Uint8Array): JSONWebKeySet {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    throw new Error("JWK Set is not JSON");
  }
  const keys = (doc as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys) || keys.some((k) => typeof k !== "object" || k === null || Array.isArray(k))) {
    throw new Error("JWK Set has no keys list");
  }
  return doc as JSONWebKeySet;
}

/** Fixed phrases for why a JWT was refused (logged, and sent as the problem's detail). */
function refusalReason(e: unknown): string {
  if (e instanceof joseErrors.JWTExpired) return "JWT expired";
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    if (e.claim === "nbf") return "JWT not yet valid (nbf)";
    return `JWT claim ${JSON.stringify(e.claim)} ${e.reason === "missing" ? "missing" : "not accepted"}`;
  }
  if (e instanceof joseErrors.JOSEAlgNotAllowed) return "JWT algorithm not accepted";
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return "JWT signature does not verify";
  if (e instanceof joseErrors.JWKSNoMatchingKey) return "JWT names no key of the identity provider";
  if (e instanceof joseErrors.JWKSMultipleMatchingKeys) return "JWT names no single key of the identity provider";
  if (e instanceof joseErrors.JOSENotSupported) return "JWT uses an unsupported algorithm or key";
  return "JWT is malformed";
}

function invalidToken(reason: string, cause?: unknown): ProtocolError {
  return new ProtocolError("ISSUER_ERR_UNAUTHORIZED", reason, {
    ...(cause === undefined ? {} : { cause }),
    headers: { "www-authenticate": 'Bearer error="invalid_token"' },
  });
}

/** Verifies bearer JWTs against the provider's JWK Set; returns the value of the quota claim. */
export class JwtVerifier {
  readonly #config: JwtAttesterConfig;
  readonly #jwks: JwksCache;
  readonly #now: () => number;

  constructor(config: JwtAttesterConfig, deps: JwksDeps = {}) {
    this.#config = config;
    this.#jwks = new JwksCache(config.jwks, deps);
    this.#now = deps.now ?? Date.now;
  }

  get jwks(): JwksCache {
    return this.#jwks;
  }

  /** The quota claim's value (as a string) of a good JWT; ISSUER_ERR_UNAUTHORIZED otherwise. */
  async verify(jwt: string): Promise<string> {
    if (jwt.length > JWT_DEFAULTS.maxJwtBytes) throw invalidToken("JWT too long");
    let keys = await this.#jwks.keys();
    const getKey: JWTVerifyGetKey = async (header, token) => {
      try {
        return await keys(header, token);
      } catch (e) {
        if (!(e instanceof joseErrors.JWKSNoMatchingKey)) throw e;
        // A key the provider added since our copy: refetch once (rate-limited), then try again.
        await this.#jwks.refetchForUnknownKey();
        keys = await this.#jwks.keys();
        return keys(header, token);
      }
    };
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(jwt, getKey, {
        issuer: this.#config.issuer,
        audience: this.#config.audience,
        algorithms: [...this.#config.algorithms],
        requiredClaims: ["exp"],
        clockTolerance: JWT_DEFAULTS.clockSkewSec,
        currentDate: new Date(this.#now()),
      }));
    } catch (e) {
      if (e instanceof ProtocolError) throw e;
      throw invalidToken(refusalReason(e), e);
    }
    const value = payload[this.#config.quotaClaim];
    if (typeof value === "number" && Number.isFinite(value)) return String(value);
    if (typeof value !== "string" || value === "") throw invalidToken(`JWT claim ${JSON.stringify(this.#config.quotaClaim)} missing`);
    return value;
  }
}
