// ARC issuance on the token-request URL (draft-ietf-privacypass-arc-protocol-01 §6):
//   application/private-credential-request -> 200 application/private-credential-response.
//
// Same order of checks as token requests: attester credential (401), the request (422: malformed,
// not issued here, unknown truncated key id, points that are not valid, a request proof that
// does not verify: the draft's "MUST return ... 422"), then the quota (429). The attester counts
// credentials: one issuance is one unit of the quota, however many presentations it allows.

import type { FastifyReply, FastifyRequest } from "fastify";
import { ProtocolError, isProtocolError } from "../../core/errors.js";
import { ARC_TOKEN_TYPE } from "../../core/privacypass/token-type.js";
import { ARC_MEDIA_TYPES, decodeArcCredentialRequest, type ArcCredentialRequest } from "../../core/privacypass/arc/index.js";
import { authenticateRequest, type QuotaAttester } from "../attester.js";
import type { IssuerKeyStore } from "../key-store.js";

export interface CredentialRequestOptions {
  keys: IssuerKeyStore;
  attester: QuotaAttester;
  onIssued(tokenType: number): void;
}

export async function answerCredentialRequest(
  request: FastifyRequest,
  reply: FastifyReply,
  body: Uint8Array,
  options: CredentialRequestOptions,
): Promise<FastifyReply> {
  const { keys, attester } = options;
  const quotaKey = await authenticateRequest(attester, request.headers.authorization, request.log);
  await keys.refresh();
  if (!keys.issues(ARC_TOKEN_TYPE)) throw new ProtocolError("ISSUER_ERR_TOKEN_TYPE", "ARC credentials (0xE5AC) are not issued here");
  let req: ArcCredentialRequest;
  try {
    req = decodeArcCredentialRequest(body);
  } catch (e) {
    throw new ProtocolError("ISSUER_ERR_REQUEST", isProtocolError(e) ? `CredentialRequest: ${e.message}` : undefined, { cause: e });
  }
  const key = keys.find(ARC_TOKEN_TYPE, req.truncatedIssuerKeyId);
  if (key === undefined || key.signer.tokenType !== ARC_TOKEN_TYPE) {
    throw new ProtocolError("ISSUER_ERR_KEY_UNKNOWN", "no current ARC key has this truncated key id");
  }
  const reservation = await attester.reserve(quotaKey);
  let response: Uint8Array;
  try {
    response = key.signer.respond(req.request);
  } catch (e) {
    reservation.release();
    throw e;
  }
  options.onIssued(ARC_TOKEN_TYPE);
  request.veilOutcome = "issued";
  return reply
    .header("content-type", ARC_MEDIA_TYPES.credentialResponse)
    .header("cache-control", "no-store")
    .send(Buffer.from(response.buffer, response.byteOffset, response.byteLength));
}
