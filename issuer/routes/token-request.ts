// POST /token-request: one URL, one handler per request media type (Content-Type):
//
//   application/private-token-request (RFC 9578 §5.2 type 1/5, §6.2 type 2)
//       -> 200 application/private-token-response
//   application/private-token-amortized-batch-request (draft-ietf-privacypass-batched-tokens,
//       types 1 and 5: one proof for the batch)
//       -> 200 application/private-token-amortized-batch-response
//   application/private-token-generic-batch-request (the same draft: TokenRequests of any type)
//       -> 200 (all issued) or 206 (some entries absent) application/private-token-generic-batch-response,
//          400 when none was issued (the draft's status)
//   application/private-credential-request (ARC) -> ./credential-request.ts
//
// Order of checks: media type (415), attester credential (401 + WWW-Authenticate: Bearer), the
// request itself (422: malformed, unsupported token type, unknown truncated key id, an amortized
// batch over maxBatchTokens, a blinded message out of range or not a group element: RFC 9578 and
// the draft "MUST return ... 422"), then the quota, then signing. The attester counts every token
// of a batch. A quota that allows fewer tokens than a generic batch asks for issues what it allows
// and leaves the rest absent (206); an amortized batch is all or nothing (its response has no
// absent entries): 429 when the quota cannot cover it. A quota already used up is 429 with
// Retry-After either way. A refused request or entry costs no quota.
//
// Another kind of token request adds its media type to HANDLERS below: one entry, one function.

import type { FastifyInstance } from "fastify";
import { ProtocolError, isProtocolError } from "../../core/errors.js";
import { mediaTypeOf } from "../../core/http-fields.js";
import {
  decodeAmortizedBatchTokenRequest,
  decodeGenericBatchTokenRequest,
  encodeGenericBatchTokenResponse,
  type OptionalTokenResponse,
} from "../../core/privacypass/batch.js";
import { MEDIA_TYPES, decodeTokenRequest, peekTokenRequestType, type TokenRequest } from "../../core/privacypass/issuance.js";
import { TOKEN_TYPE } from "../../core/privacypass/token-type.js";
import { ARC_MEDIA_TYPES } from "../../core/privacypass/arc/index.js";
import { methodNotAllowed } from "../../server/problem-handler.js";
import { authenticateRequest, type QuotaAttester } from "../attester.js";
import type { IssuerKey, IssuerKeyStore } from "../key-store.js";
import type { Signer } from "../signer.js";
import { signAmortizedBatch, signTokenRequest } from "../signer.js";
import { answerCredentialRequest } from "./credential-request.js";

export const TOKEN_REQUEST_PATH = "/token-request";

export interface TokenRequestRouteOptions {
  keys: IssuerKeyStore;
  attester: QuotaAttester;
  /** Most tokens one batched request may ask for (config maxBatchTokens). */
  maxBatchTokens: number;
  /** Tokens issued, by type (`count` of them; default 1). */
  onIssued(tokenType: number, count?: number): void;
  /** Entries of a generic batch left absent, by reason (an error code). */
  onAbsent(reason: string, count: number): void;
}

/** What a handler answers: status, media type and body. */
interface Answer {
  status: number;
  mediaType: string;
  body: Uint8Array;
}

type Handler = (body: Uint8Array, quotaKey: string, options: TokenRequestRouteOptions) => Promise<Answer>;

/** The request media types served here, each with its handler. */
const HANDLERS: ReadonlyMap<string, Handler> = new Map([
  [MEDIA_TYPES.tokenRequest, issueSingle],
  [MEDIA_TYPES.amortizedBatchRequest, issueAmortizedBatch],
  [MEDIA_TYPES.genericBatchRequest, issueGenericBatch],
]);

/** The request media types of this route (the app registers a raw-body parser for each). */
export const TOKEN_REQUEST_MEDIA_TYPES: readonly string[] = [...HANDLERS.keys(), ARC_MEDIA_TYPES.credentialRequest];

function hex4(tokenType: number): string {
  return `0x${tokenType.toString(16).padStart(4, "0")}`;
}

/** A malformed message: 422 with the decoder's reason. */
function malformed(e: unknown, what: string): ProtocolError {
  return new ProtocolError("ISSUER_ERR_REQUEST", isProtocolError(e) ? `${what}: ${e.message}` : what, { cause: e });
}

/** The key (with a token signer: not an ARC key) a request names, or the 422 that says why there is none. */
function keyFor(keys: IssuerKeyStore, tokenType: number, truncatedTokenKeyId: number): IssuerKey & { signer: Signer } {
  if (!keys.issues(tokenType)) throw new ProtocolError("ISSUER_ERR_TOKEN_TYPE", `token type ${hex4(tokenType)} is not issued here`);
  const key = keys.find(tokenType, truncatedTokenKeyId);
  if (key === undefined || !hasTokenSigner(key)) throw new ProtocolError("ISSUER_ERR_KEY_UNKNOWN", "no current key has this truncated key id");
  return key;
}

function hasTokenSigner(key: IssuerKey): key is IssuerKey & { signer: Signer } {
  return key.signer.tokenType === TOKEN_TYPE.BLIND_RSA_2048 || key.signer.tokenType === TOKEN_TYPE.VOPRF_P384 || key.signer.tokenType === TOKEN_TYPE.VOPRF_RISTRETTO255;
}

async function issueSingle(body: Uint8Array, quotaKey: string, options: TokenRequestRouteOptions): Promise<Answer> {
  let tokenType: number;
  try {
    tokenType = peekTokenRequestType(body);
  } catch (e) {
    throw malformed(e, "TokenRequest");
  }
  if (!options.keys.issues(tokenType)) throw new ProtocolError("ISSUER_ERR_TOKEN_TYPE", `token type ${hex4(tokenType)} is not issued here`);
  let req: TokenRequest;
  try {
    req = decodeTokenRequest(body);
  } catch (e) {
    throw malformed(e, "TokenRequest");
  }
  const key = keyFor(options.keys, req.tokenType, req.truncatedTokenKeyId);
  const reservation = await options.attester.reserve(quotaKey);
  let response: Uint8Array;
  try {
    response = signTokenRequest(key.signer, req);
  } catch (e) {
    reservation.release();
    throw e;
  }
  options.onIssued(req.tokenType, 1);
  return { status: 200, mediaType: MEDIA_TYPES.tokenResponse, body: response };
}

async function issueAmortizedBatch(body: Uint8Array, quotaKey: string, options: TokenRequestRouteOptions): Promise<Answer> {
  let req;
  try {
    req = decodeAmortizedBatchTokenRequest(body);
  } catch (e) {
    throw malformed(e, "AmortizedBatchTokenRequest");
  }
  const key = keyFor(options.keys, req.tokenType, req.truncatedTokenKeyId);
  const n = req.blindedMsgs.length;
  if (n > options.maxBatchTokens) {
    throw new ProtocolError("ISSUER_ERR_BATCH_TOO_LARGE", `${n} tokens asked; this issuer issues at most ${options.maxBatchTokens} at once`);
  }
  const reservation = await options.attester.reserve(quotaKey, n);
  if (reservation.granted < n) {
    reservation.release();
    throw new ProtocolError("ISSUER_ERR_QUOTA", `the quota has ${reservation.granted} tokens left in this window; ask for at most that many`);
  }
  let response: Uint8Array;
  try {
    if (key.signer.tokenType === TOKEN_TYPE.BLIND_RSA_2048) throw new ProtocolError("ISSUER_ERR_TOKEN_TYPE");
    response = signAmortizedBatch(key.signer, req);
  } catch (e) {
    reservation.release();
    throw e;
  }
  options.onIssued(req.tokenType, n);
  return { status: 200, mediaType: MEDIA_TYPES.amortizedBatchResponse, body: response };
}

async function issueGenericBatch(body: Uint8Array, quotaKey: string, options: TokenRequestRouteOptions): Promise<Answer> {
  let requests: TokenRequest[];
  try {
    requests = decodeGenericBatchTokenRequest(body);
  } catch (e) {
    throw malformed(e, "GenericBatchTokenRequest");
  }
  if (requests.length === 0) throw new ProtocolError("ISSUER_ERR_REQUEST", "GenericBatchTokenRequest: no token requests");
  const out: OptionalTokenResponse[] = requests.map(() => undefined);
  const absent = new Map<string, number>();
  const refuse = (reason: string): void => {
    absent.set(reason, (absent.get(reason) ?? 0) + 1);
  };
  // Entries this issuer can sign (type, key, within the batch limit), in order.
  const candidates: { index: number; key: IssuerKey & { signer: Signer } }[] = [];
  for (const [index, req] of requests.entries()) {
    if (candidates.length >= options.maxBatchTokens) {
      refuse("ISSUER_ERR_BATCH_TOO_LARGE");
      continue;
    }
    try {
      candidates.push({ index, key: keyFor(options.keys, req.tokenType, req.truncatedTokenKeyId) });
    } catch (e) {
      refuse(isProtocolError(e) ? e.code : "INTERNAL_ERR");
    }
  }
  let issued = 0;
  if (candidates.length > 0) {
    const reservation = await options.attester.reserve(quotaKey, candidates.length);
    for (const [i, c] of candidates.entries()) {
      if (i >= reservation.granted) {
        refuse("ISSUER_ERR_QUOTA");
        continue;
      }
      const req = requests[c.index]!;
      try {
        out[c.index] = { tokenType: req.tokenType, tokenResponse: signTokenRequest(c.key.signer, req) };
        issued++;
        options.onIssued(req.tokenType, 1);
      } catch (e) {
        reservation.release(1);
        refuse(isProtocolError(e) ? e.code : "INTERNAL_ERR");
      }
    }
  }
  for (const [reason, count] of absent) options.onAbsent(reason, count);
  if (issued === 0) {
    const reasons = [...absent.keys()].join(", ");
    throw new ProtocolError("ISSUER_ERR_BATCH_REFUSED", `none of the ${requests.length} token requests was issued (${reasons})`);
  }
  return {
    status: issued === requests.length ? 200 : 206,
    mediaType: MEDIA_TYPES.genericBatchResponse,
    body: encodeGenericBatchTokenResponse(out),
  };
}

export function registerTokenRequestRoute(app: FastifyInstance, options: TokenRequestRouteOptions): void {
  const { keys, attester } = options;
  app.post(TOKEN_REQUEST_PATH, async (request, reply) => {
    const type = mediaTypeOf(request.headers["content-type"]);
    const handler = HANDLERS.get(type);
    if (!Buffer.isBuffer(request.body) || (handler === undefined && type !== ARC_MEDIA_TYPES.credentialRequest)) {
      throw new ProtocolError("HTTP_ERR_MEDIA_TYPE", `send one of ${TOKEN_REQUEST_MEDIA_TYPES.join(", ")}`);
    }
    if (handler === undefined) {
      return answerCredentialRequest(request, reply, new Uint8Array(request.body.buffer, request.body.byteOffset, request.body.byteLength), options);
    }
    const quotaKey = await authenticateRequest(attester, request.headers.authorization, request.log);
    await keys.refresh();
    const body = new Uint8Array(request.body.buffer, request.body.byteOffset, request.body.byteLength);
    const answer = await handler(body, quotaKey, options);
    request.veilOutcome = answer.status === 200 ? "issued" : "partial";
    return reply
      .code(answer.status)
      .header("content-type", answer.mediaType)
      .header("cache-control", "no-store")
      .send(Buffer.from(answer.body.buffer, answer.body.byteOffset, answer.body.byteLength));
  });
  methodNotAllowed(app, TOKEN_REQUEST_PATH, ["POST"]);
}
