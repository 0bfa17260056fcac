// The issuer's configuration: the JSON file of `veil issuer --config FILE` (this shape is a
// contract: listen, name, keys, tokenTypes, keyLifetimeSec, attester), plus explicit limits,
// overridable with VEIL_ISSUER_<PATH> environment variables (e.g. VEIL_ISSUER_LISTEN_PORT=9000,
// VEIL_ISSUER_ATTESTER_CREDENTIALS='["..."]' to keep credentials out of the file). Validated once,
// then frozen. This is the only issuer file that reads process.env.

import { ProtocolError } from "../core/errors.js";
import { ARC_TOKEN_TYPE, TOKEN_TYPE } from "../core/privacypass/token-type.js";
import { httpLimitsSchema, listenSchema, loadConfig, parseConfig, type ConfigOf, type Schema } from "../server/config.js";
import { corsSchema } from "../server/cors.js";
import { isLoopbackUrl } from "../server/http-fetch.js";
import { JWT_ALGORITHMS } from "./jwt.js";

/** Every default of the issuer, in one place. */
export const DEFAULTS = Object.freeze({
  /** Port of `veil issuer` (relay 8080, gateway 8081). */
  port: 8082,
  /** A TokenRequest is at most 259 bytes (type 2): 32 KiB holds a generic batch of maxBatchTokens
   *  (100 * 259 bytes) and nothing much else. */
  maxRequestBytes: 32_768,
  /** Most tokens one batched request may ask for (amortized: 422 above; generic: the rest absent). */
  maxBatchTokens: 100,
  /** The key file: created with mode 0600 on first start. */
  keys: "data/issuer-keys.json",
  /** Type 2 (Blind RSA 2048, publicly verifiable) is the default (docs/architecture.md, "Tokens and challenges"). */
  tokenTypes: [TOKEN_TYPE.BLIND_RSA_2048] as number[],
  /** A token key is good for a week from its not-before (the gateway's default is the same). */
  keyLifetimeSec: 604_800,
  /** Tokens per credential per window: the Sybil-resistance budget of one client. */
  tokensPerWindow: 100,
  /** The quota window: one day. */
  windowSec: 86_400,
  /** Quota counts in memory (backwards compatible); `veil start` uses sqlite:<data dir>/attester.db. */
  attesterStore: "memory",
  /** Static bearer credentials: today's attester, so configs without `kind` keep working. */
  attesterKind: "credentials",
  /** JWT signature algorithms accepted by default (asymmetric: the identity provider signs, we verify). */
  jwtAlgorithms: ["ES256", "RS256", "EdDSA"] as string[],
  /** The JWT claim that names the client (one quota per value). */
  quotaClaim: "sub",
  /** Relative to the directory URL, as RFC 9578 §4 allows. */
  issuerRequestUri: "/token-request",
  /** Longest Cache-Control max-age of the directory (it is also never longer than the time until
   *  the directory next changes, so caches see a successor key as soon as it is published). */
  directoryMaxAgeSec: 3600,
});

/** RFC 6750 §2.1 b64token: what can follow "Bearer " in an Authorization header. */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

export const ISSUER_SCHEMA = {
  listen: listenSchema(DEFAULTS.port),
  limits: httpLimitsSchema({ maxRequestBytes: DEFAULTS.maxRequestBytes }),
  name: {
    kind: "string",
    pattern: /^[^\s/,]+$/,
    expect: "an issuer name (host name, e.g. issuer.example)",
    doc: "Issuer name, as origins put it in TokenChallenge.issuer_name.",
  },
  keys: { kind: "string", default: DEFAULTS.keys, doc: "Token key file (created with mode 0600 if missing; refused if group/others can read it)." },
  tokenTypes: {
    kind: "list",
    default: DEFAULTS.tokenTypes,
    minItems: 1,
    items: { kind: "int", min: 1, max: ARC_TOKEN_TYPE, doc: "1 = VOPRF (P-384), 2 = Blind RSA (2048), 5 = VOPRF (ristretto255), 58796 = ARC (P-256)." },
    doc: "Token types issued, preferred first: 2 (Blind RSA, publicly verifiable), 1 (VOPRF P-384), 5 (VOPRF ristretto255) and/or 58796 (ARC rate-limited credentials, 0xE5AC; the attester counts one credential as one token).",
  },
  maxBatchTokens: {
    kind: "int",
    default: DEFAULTS.maxBatchTokens,
    min: 1,
    max: 10_000,
    doc: "Most tokens one batched request may ask for: an amortized batch over it is refused (422); generic batch entries beyond it are left absent.",
  },
  keyLifetimeSec: {
    kind: "int",
    default: DEFAULTS.keyLifetimeSec,
    min: 60,
    doc: "A token key lives this long from its not-before; its successor is published half a lifetime ahead (shared with the gateway).",
  },
  attester: {
    kind: "object",
    doc: "The built-in attester: bearer credentials or JWTs, with a token quota each.",
    fields: {
      kind: {
        kind: "string",
        default: DEFAULTS.attesterKind,
        oneOf: ["credentials", "jwt"],
        doc: "credentials: static bearer credentials; jwt: JWTs from the service's identity provider, checked against its JWK Set.",
      },
      credentials: {
        kind: "list",
        minItems: 1,
        optional: true,
        secret: true,
        items: { kind: "string", pattern: B64TOKEN, expect: "a bearer credential (RFC 6750 b64token)", secret: true, doc: "A credential." },
        doc: "kind credentials: credentials clients present as `Authorization: Bearer <credential>` (required for that kind).",
      },
      jwks: {
        kind: "string",
        optional: true,
        pattern: /^(https|http):\/\/\S+$/,
        expect: "an https URL (http only on loopback)",
        doc: "kind jwt: URL of the identity provider's JWK Set, cached by its caching headers (https; http only on a loopback address).",
      },
      issuer: { kind: "string", optional: true, doc: "kind jwt: the `iss` claim every JWT must carry." },
      audience: { kind: "string", optional: true, doc: "kind jwt: the `aud` claim every JWT must contain." },
      algorithms: {
        kind: "list",
        default: DEFAULTS.jwtAlgorithms,
        minItems: 1,
        items: { kind: "string", oneOf: JWT_ALGORITHMS, doc: "A JWS algorithm." },
        doc: "kind jwt: accepted signature algorithms (asymmetric only: none and HMAC are never accepted).",
      },
      quotaClaim: {
        kind: "string",
        default: DEFAULTS.quotaClaim,
        pattern: /^\S+$/,
        expect: "a claim name",
        doc: "kind jwt: the claim whose value gets a quota (a JWT without it is refused).",
      },
      tokensPerWindow: { kind: "int", default: DEFAULTS.tokensPerWindow, min: 1, doc: "Tokens one credential (or quota claim value) may get per window (429 after)." },
      windowSec: { kind: "int", default: DEFAULTS.windowSec, min: 1, doc: "Length of the quota window, from the credential's first token in it." },
      store: {
        kind: "string",
        default: DEFAULTS.attesterStore,
        pattern: /^(memory|sqlite:.+|rediss?:\/\/\S+)$/,
        expect: "memory, sqlite:PATH or redis://HOST:PORT",
        secret: true,
        doc: "Where token counts live: memory (a restart resets every quota), sqlite:PATH (survives restarts, shared by the issuers on the file) or redis://HOST:PORT (shared by every issuer on every machine).",
      },
      storeKeyFile: {
        kind: "string",
        optional: true,
        doc: "Key of the keyed hashes naming quotas in the store (mode 0600, created if missing; default PATH.key for sqlite:PATH; required for redis, the same file on every issuer).",
      },
    },
  },
  issuerRequestUri: {
    kind: "string",
    default: DEFAULTS.issuerRequestUri,
    pattern: /^(\/|https:\/\/|http:\/\/)\S*$/,
    expect: "an absolute URL or a path",
    doc: "issuer-request-uri published in the directory (RFC 9578 §4).",
  },
  directoryMaxAgeSec: {
    kind: "int",
    default: DEFAULTS.directoryMaxAgeSec,
    min: 1,
    doc: "Longest Cache-Control max-age of the directory (it is also capped by the next key change).",
  },
  cors: corsSchema("GET /.well-known/private-token-issuer-directory and POST /token-request"),
  logLevel: { kind: "string", default: "info", oneOf: ["fatal", "error", "warn", "info", "debug", "trace", "silent"], doc: "Log level." },
} as const satisfies Schema;

/** The issuer's configuration, as ISSUER_SCHEMA defines it (server/config.ts says how to add a field). */
export type IssuerConfig = ConfigOf<typeof ISSUER_SCHEMA>;
export type AttesterConfig = IssuerConfig["attester"];

/** Cross-field rules the schema cannot express. */
function checkIssuerConfig(c: IssuerConfig): IssuerConfig {
  const issued: readonly number[] = [TOKEN_TYPE.VOPRF_P384, TOKEN_TYPE.BLIND_RSA_2048, TOKEN_TYPE.VOPRF_RISTRETTO255, ARC_TOKEN_TYPE];
  const bad = c.tokenTypes.findIndex((t) => !issued.includes(t));
  if (bad >= 0) throw new ProtocolError("CFG_ERR_INVALID", `tokenTypes[${bad}]: ${c.tokenTypes[bad]} is not 1, 2, 5 or ${ARC_TOKEN_TYPE}`);
  if (new Set(c.tokenTypes).size !== c.tokenTypes.length) {
    throw new ProtocolError("CFG_ERR_INVALID", "tokenTypes: each token type may appear once");
  }
  checkAttesterConfig(c.attester);
  return c;
}

/** The fields each attester kind needs, and none of the other kind's. */
function checkAttesterConfig(a: AttesterConfig): void {
  if (a.kind === "credentials") {
    if (a.credentials === undefined) throw new ProtocolError("CFG_ERR_INVALID", 'attester.credentials: is required (kind "credentials")');
    if (new Set(a.credentials).size !== a.credentials.length) {
      throw new ProtocolError("CFG_ERR_INVALID", "attester.credentials: duplicate credential");
    }
    for (const f of ["jwks", "issuer", "audience"] as const) {
      if (a[f] !== undefined) throw new ProtocolError("CFG_ERR_INVALID", `attester.${f}: only for kind "jwt"`);
    }
  } else {
    if (a.credentials !== undefined) throw new ProtocolError("CFG_ERR_INVALID", 'attester.credentials: only for kind "credentials"');
    for (const f of ["jwks", "issuer", "audience"] as const) {
      if (a[f] === undefined) throw new ProtocolError("CFG_ERR_INVALID", `attester.${f}: is required (kind "jwt")`);
    }
    const url = new URL(a.jwks!);
    if (url.protocol !== "https:" && !isLoopbackUrl(url)) {
      throw new ProtocolError("CFG_ERR_INVALID", "attester.jwks: must be an https URL (http only on a loopback address)");
    }
  }
  if (a.store.startsWith("redis") && a.storeKeyFile === undefined) {
    throw new ProtocolError("CFG_ERR_INVALID", "attester.storeKeyFile: is required with a redis store (every issuer must use the same key file)");
  }
}

/** Validates a parsed JSON config (no environment unless given), e.g. in tests. */
export function parseIssuerConfig(raw: unknown, env?: Readonly<Record<string, string | undefined>>): IssuerConfig {
  return checkIssuerConfig(parseConfig(ISSUER_SCHEMA, raw, env === undefined ? {} : { env, envPrefix: "VEIL_ISSUER_" }));
}

/** `veil issuer --config FILE`: the file plus VEIL_ISSUER_* environment overrides. */
export function loadIssuerConfig(file: string | undefined): IssuerConfig {
  return checkIssuerConfig(loadConfig(ISSUER_SCHEMA, file, { env: process.env, envPrefix: "VEIL_ISSUER_" }));
}
