// POST /token-request (RFC 9578 §5.2 type 1, §6.2 type 2):
//   application/private-token-request -> 200 application/private-token-response.
// ARC credential requests (application/private-credential-request) are answered on the same URL
// by ./credential-request.ts.
//
// Order of checks: media type (415), attester credential (401 + WWW-Authenticate: Bearer), the
// request itself (422: malformed, unsupported token type, unknown truncated key id, blinded
// message out of range or not a group element: RFC 9578 "MUST return ... 422"), then the quota
// (429 + Retry-After; a refused request costs no quota), then signing.

import type { FastifyInstance } from "fastify";
import { ProtocolError, isProtocolError } from "../../core/errors.js";
import { isMediaType } from "../../core/http-fields.js";
import { MEDIA_TYPES, decodeTokenRequest, peekTokenRequestType } from "../../core/privacypass/issuance.js";
import { methodNotAllowed } from "../../server/problem-handler.js";
import { authenticateRequest, type QuotaAttester } from "../attester.js";
import type { IssuerKeyStore } from "../key-store.js";
import { signTokenRequest } from "../signer.js";
import { ARC_MEDIA_TYPES } from "../../core/privacypass/arc/index.js";
import { ARC_TOKEN_TYPE } from "../../core/privacypass/token-type.js";
import { answerCredentialRequest } from "./credential-request.js";

export const TOKEN_REQUEST_PATH = "/token-request";

export interface TokenRequestRouteOptions {
  keys: IssuerKeyStore;
  attester: QuotaAttester;
  onIssued(tokenType: number): void;
}

export function registerTokenRequestRoute(app: FastifyInstance, options: TokenRequestRouteOptions): void {
  const { keys, attester } = options;
  app.post(TOKEN_REQUEST_PATH, async (request, reply) => {
    const arc = isMediaType(request.headers["content-type"], ARC_MEDIA_TYPES.credentialRequest);
    if ((!arc && !isMediaType(request.headers["content-type"], MEDIA_TYPES.tokenRequest)) || !Buffer.isBuffer(request.body)) {
      throw new ProtocolError("HTTP_ERR_MEDIA_TYPE", `send ${MEDIA_TYPES.tokenRequest} or ${ARC_MEDIA_TYPES.credentialRequest}`);
    }
    if (arc) {
      return answerCredentialRequest(request, reply, new Uint8Array(request.body.buffer, request.body.byteOffset, request.body.byteLength), options);
    }
    const quotaKey = await authenticateRequest(attester, request.headers.authorization, request.log);
    await keys.refresh();
    const body = new Uint8Array(request.body.buffer, request.body.byteOffset, request.body.byteLength);
    let tokenType: number;
    try {
      tokenType = peekTokenRequestType(body);
    } catch (e) {
      throw new ProtocolError("ISSUER_ERR_REQUEST", "TokenRequest is truncated", { cause: e });
    }
    if (!keys.issues(tokenType)) {
      throw new ProtocolError("ISSUER_ERR_TOKEN_TYPE", `token type 0x${tokenType.toString(16).padStart(4, "0")} is not issued here`);
    }
    let tokenRequest;
    try {
      tokenRequest = decodeTokenRequest(body);
    } catch (e) {
      throw new ProtocolError("ISSUER_ERR_REQUEST", isProtocolError(e) ? e.message : undefined, { cause: e });
    }
    const key = keys.find(tokenRequest.tokenType, tokenRequest.truncatedTokenKeyId);
    if (key === undefined || key.signer.tokenType === ARC_TOKEN_TYPE) throw new ProtocolError("ISSUER_ERR_KEY_UNKNOWN", "no current key has this truncated key id");
    const reservation = await attester.reserve(quotaKey);
    let response: Uint8Array;
    try {
      response = signTokenRequest(key.signer, tokenRequest);
    } catch (e) {
      reservation.release();
      throw e;
    }
    options.onIssued(tokenRequest.tokenType);
    request.veilOutcome = "issued";
    return reply
      .header("content-type", MEDIA_TYPES.tokenResponse)
      .header("cache-control", "no-store")
      .send(Buffer.from(response.buffer, response.byteOffset, response.byteLength));
  });
  methodNotAllowed(app, TOKEN_REQUEST_PATH, ["POST"]);
}
