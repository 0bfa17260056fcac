// The one catalogue of Veil's error codes: code -> HTTP status, RFC 9457 problem type, title.
//
// Users (and tests) match on `err.code`, never on `instanceof` or the message. Every code here is
// documented in the README's error table, and a test keeps the two in step. Add new codes here,
// in the section of their area, with a status a client can act on.

export interface ErrorSpec {
  /** HTTP status the error maps to when it is answered to a client. */
  readonly status: number;
  /** RFC 9457 problem type URI. */
  readonly type: string;
  /** Short, stable, human-readable summary (RFC 9457 "title"). */
  readonly title: string;
}

const VEIL = "urn:veil:error:";
/** RFC 9458 §5.3 / §9.5: "Oblivious HTTP key configuration not acceptable". */
export const OHTTP_KEY_PROBLEM = "https://iana.org/assignments/http-problem-types#ohttp-key";
/** RFC 9458 §6.5.2 / §9.4: "Date Not Acceptable". */
export const DATE_PROBLEM = "https://iana.org/assignments/http-problem-types#date";

function spec(status: number, title: string, type?: string): ErrorSpec {
  return { status, title, type: type ?? "" };
}

const CATALOGUE = {
  // Binary HTTP (RFC 9292) decoding.
  BHTTP_ERR_TRUNCATED: spec(400, "Binary HTTP message is truncated"),
  BHTTP_ERR_FORMAT: spec(400, "Binary HTTP message is malformed"),
  BHTTP_ERR_TOO_LARGE: spec(400, "Binary HTTP message exceeds a decoding limit"),

  // Oblivious HTTP (RFC 9458) key configurations and encapsulation.
  OHTTP_ERR_KEY_UNKNOWN: spec(400, "Unknown key identifier", OHTTP_KEY_PROBLEM),
  OHTTP_ERR_SUITE_UNSUPPORTED: spec(400, "Key does not offer this HPKE suite", OHTTP_KEY_PROBLEM),
  OHTTP_ERR_TRUNCATED: spec(400, "Encapsulated message is truncated"),
  OHTTP_ERR_FORMAT: spec(400, "Encapsulated message is malformed"),
  OHTTP_ERR_DECRYPT: spec(400, "Encapsulated message could not be decrypted"),
  OHTTP_ERR_KEY_CONFIG: spec(400, "Key configuration is malformed"),
  OHTTP_ERR_CONTEXT_USED: spec(500, "Response context was already used"),
  OHTTP_ERR_CHUNK_TOO_LARGE: spec(400, "Encapsulated chunk exceeds the size limit"),

  // Plain HTTP checks done before decapsulation (by the gateway, relay and issuer).
  HTTP_ERR_NOT_FOUND: spec(404, "No such resource"),
  HTTP_ERR_METHOD: spec(405, "Method not allowed"),
  HTTP_ERR_MEDIA_TYPE: spec(415, "Unsupported media type"),
  HTTP_ERR_NOT_ACCEPTABLE: spec(406, "No acceptable representation"),
  HTTP_ERR_TOO_LARGE: spec(413, "Request body too large"),
  HTTP_ERR_HEADERS_TOO_LARGE: spec(431, "Request header fields too large"),
  HTTP_ERR_BAD_REQUEST: spec(400, "Bad request"),
  HTTP_ERR_TIMEOUT: spec(408, "Request not received in time"),
  HTTP_ERR_RATE_LIMITED: spec(429, "Too many requests"),
  HTTP_ERR_OVERLOADED: spec(503, "Server is at capacity"),
  HTTP_ERR_UNAVAILABLE: spec(503, "Server is shutting down or not ready"),

  // Gateway decisions after decapsulation (answered sealed).
  GATEWAY_ERR_EXPECT: spec(417, "Expect: 100-continue is not supported"),
  GATEWAY_ERR_DATE: spec(400, "Date Not Acceptable", DATE_PROBLEM),
  GATEWAY_ERR_REPLAYED: spec(400, "Encapsulated request was already received"),
  GATEWAY_ERR_TARGET_FORBIDDEN: spec(403, "Target is not allowed"),
  GATEWAY_ERR_POLICY: spec(403, "Request is outside the gateway policy"),
  GATEWAY_ERR_TOO_MANY_REPORTS: spec(413, "Upload carries more reports than one token pays for"),
  GATEWAY_ERR_UPSTREAM_UNREACHABLE: spec(502, "Target could not be reached"),
  GATEWAY_ERR_UPSTREAM_FAILED: spec(502, "Target connection failed"),
  GATEWAY_ERR_UPSTREAM_TIMEOUT: spec(504, "Target did not answer in time"),
  GATEWAY_ERR_UPSTREAM_TOO_LARGE: spec(502, "Target answer exceeds the size limit"),

  // DAP uploads (draft-ietf-ppm-dap-18): the Report framing of an upload body.
  DAP_ERR_TRUNCATED: spec(400, "DAP upload is truncated"),
  DAP_ERR_FORMAT: spec(400, "DAP upload is malformed"),

  // Privacy Pass (RFC 9576/9577/9578): wire decoding, the token gate, the nonce store.
  PP_ERR_TRUNCATED: spec(400, "Privacy Pass structure is truncated"),
  PP_ERR_FORMAT: spec(400, "Privacy Pass structure is malformed"),
  PP_ERR_TOKEN_MISSING: spec(401, "A Privacy Pass token is required"),
  PP_ERR_TOKEN_MALFORMED: spec(401, "Privacy Pass token is malformed"),
  PP_ERR_TOKEN_TYPE: spec(401, "Privacy Pass token type is not accepted"),
  PP_ERR_TOKEN_KEY: spec(401, "Privacy Pass token key is not trusted"),
  PP_ERR_TOKEN_CHALLENGE: spec(401, "Privacy Pass token is for another challenge"),
  PP_ERR_TOKEN_SIGNATURE: spec(401, "Privacy Pass token signature is invalid"),
  PP_ERR_TOKEN_REPLAYED: spec(401, "Privacy Pass token was already spent"),
  PP_ERR_STORE_UNAVAILABLE: spec(503, "Token store is unavailable"),
  PP_ERR_ISSUER_UNAVAILABLE: spec(503, "Issuer keys are unavailable"),
  PP_ERR_LIMIT_EXCEEDED: spec(429, "ARC presentation limit reached for this context"),
  PP_ERR_STORE_LOST: spec(503, "Token store lost its data: tokens of earlier issuer keys are refused"),

  // Issuer and attester (RFC 9578 §5-6).
  ISSUER_ERR_UNAUTHORIZED: spec(401, "Credential missing or not recognised"),
  ISSUER_ERR_QUOTA: spec(429, "Token quota for this credential is exhausted"),
  ISSUER_ERR_REQUEST: spec(422, "Token request is malformed"),
  ISSUER_ERR_KEY_UNKNOWN: spec(422, "Token request names an unknown key"),
  ISSUER_ERR_TOKEN_TYPE: spec(422, "Token type is not issued here"),
  ISSUER_ERR_BATCH_TOO_LARGE: spec(422, "Batch asks for more tokens than the issuer issues at once"),
  ISSUER_ERR_BATCH_REFUSED: spec(400, "No token of the batch was issued"),
  ISSUER_ERR_STORE_UNAVAILABLE: spec(503, "Attester quota store is unavailable"),
  ISSUER_ERR_JWKS_UNAVAILABLE: spec(503, "Identity provider keys are unavailable"),

  // Relay (RFC 9458 §5, Oblivious Relay Resource).
  RELAY_ERR_UPSTREAM_UNREACHABLE: spec(502, "Gateway could not be reached"),
  RELAY_ERR_UPSTREAM_TIMEOUT: spec(504, "Gateway did not answer in time"),
  RELAY_ERR_UPSTREAM_FAILED: spec(502, "Gateway connection failed"),
  RELAY_ERR_UPSTREAM_INVALID: spec(502, "Gateway answer is malformed or too large"),
  RELAY_ERR_KEYS_UNAVAILABLE: spec(502, "Gateway key configurations are unavailable"),

  // Client library: what failed, from the client's point of view.
  CLIENT_ERR_RELAY_UNREACHABLE: spec(502, "Relay could not be reached"),
  CLIENT_ERR_RELAY_REFUSED: spec(502, "Relay or gateway refused the request"),
  CLIENT_ERR_KEY_CONFIG_REFUSED: spec(400, "Gateway refused the key configuration"),
  CLIENT_ERR_KEYS_INCONSISTENT: spec(400, "Relay and gateway key configurations differ"),
  CLIENT_ERR_KEYS_UNAVAILABLE: spec(502, "Gateway key configurations could not be fetched"),
  CLIENT_ERR_CREDENTIAL_REFUSED: spec(401, "Issuer refused the credential"),
  CLIENT_ERR_QUOTA_EXHAUSTED: spec(429, "Issuer quota exhausted"),
  CLIENT_ERR_ISSUER_FAILED: spec(502, "Issuer could not issue tokens"),
  CLIENT_ERR_TOKEN_REFUSED: spec(401, "Gateway refused the token"),
  CLIENT_ERR_CHALLENGE: spec(401, "Gateway challenge is unusable"),
  CLIENT_ERR_RATE_LIMITED: spec(429, "Relay rate limit reached"),
  CLIENT_ERR_TIMEOUT: spec(504, "Relay did not answer in time"),
  CLIENT_ERR_BAD_RESPONSE: spec(502, "Gateway response could not be decapsulated or decoded"),

  // Configuration (server start-up and the command line).
  CFG_ERR_INVALID: spec(500, "Configuration is invalid"),
  CFG_ERR_KEY_FILE: spec(500, "Key file is invalid or unsafe"),
  CFG_ERR_KEY_FILE_LOCKED: spec(409, "Key file is locked by another veil command (veil keys, or the issuer changing its key file)"),

  // Anything unexpected: details go to the log, never to the client.
  INTERNAL_ERR: spec(500, "Internal server error"),
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof CATALOGUE;

/** The catalogue with every problem type filled in (urn:veil:error:CODE unless RFC-defined). */
export const ERRORS: Readonly<Record<ErrorCode, ErrorSpec>> = Object.freeze(
  Object.fromEntries(
    Object.entries(CATALOGUE).map(([code, s]) => [
      code,
      Object.freeze({ ...s, type: s.type === "" ? VEIL + code : s.type }),
    ]),
  ) as Record<ErrorCode, ErrorSpec>,
);

export interface ProtocolErrorOptions {
  cause?: unknown;
  /** Extra response headers (e.g. WWW-Authenticate, Retry-After); safe to send to the client. */
  headers?: Readonly<Record<string, string>>;
}

/**
 * The one error class of Veil. `message` (the detail) is written by Veil and safe to show a client;
 * a wrapped foreign error lives only in `cause`, which never leaves the process except to the log.
 */
export class ProtocolError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: ErrorCode, detail?: string, options: ProtocolErrorOptions = {}) {
    super(detail ?? ERRORS[code].title, options.cause === undefined ? {} : { cause: options.cause });
    this.name = "ProtocolError";
    this.code = code;
    this.status = ERRORS[code].status;
    this.headers = options.headers ?? {};
  }

  get title(): string {
    return ERRORS[this.code].title;
  }

  get type(): string {
    return ERRORS[this.code].type;
  }
}

export function isProtocolError(e: unknown): e is ProtocolError {
  return e instanceof ProtocolError;
}

/** Wraps anything thrown by a library into a ProtocolError (the original kept only as `cause`). */
export function wrapError(e: unknown, code: ErrorCode = "INTERNAL_ERR", detail?: string): ProtocolError {
  if (e instanceof ProtocolError) return e;
  return new ProtocolError(code, detail, { cause: e });
}
