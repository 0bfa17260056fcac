// Privacy Pass issuance and redemption for ARC (draft-ietf-privacypass-arc-protocol-01, token type
// 0xE5AC): key ids, the request and presentation contexts, and the wire structs around the
// ARC(P-256) messages of ./credential.ts and ./presentation.ts.

import { sha256 } from "@noble/hashes/sha2.js";
import { ByteWriter, concatBytes } from "../../bytes.js";
import { ProtocolError } from "../../errors.js";
import type { TokenChallenge } from "../challenge.js";
import { ARC_TOKEN_TYPE } from "../token-type.js";
import {
  CREDENTIAL_REQUEST_LENGTH,
  CREDENTIAL_RESPONSE_LENGTH,
  decodeCredentialRequest,
  decodeCredentialResponse,
  encodeCredentialRequest,
  encodeCredentialResponse,
  encodeServerPublicKey,
  type CredentialRequest,
  type CredentialResponse,
  type ServerPublicKey,
} from "./credential.js";
import { arcReader } from "./group.js";
import { decodePresentation, encodePresentation, presentationLength, type Presentation } from "./presentation.js";

export const ARC_MEDIA_TYPES = {
  /** arc-protocol §6.1 */
  credentialRequest: "application/private-credential-request",
  /** arc-protocol §6.2 */
  credentialResponse: "application/private-credential-response",
} as const;

/** Nid: issuer key ids are SHA-256 digests. */
export const ISSUER_KEY_ID_LENGTH = 32;

/** issuer_key_id = SHA-256(SerializeServerPublicKey(pkI)) (arc-protocol §4). */
export function issuerKeyId(publicKey: ServerPublicKey | Uint8Array): Uint8Array {
  return sha256(publicKey instanceof Uint8Array ? publicKey : encodeServerPublicKey(publicKey));
}

const utf8 = new TextEncoder();

function lp16(b: Uint8Array): Uint8Array {
  if (b.length > 0xffff) throw new ProtocolError("PP_ERR_FORMAT", "field longer than 65535 bytes");
  return concatBytes(Uint8Array.of(b.length >> 8, b.length & 0xff), b);
}

function contextOf(challenge: TokenChallenge, third: Uint8Array, keyId: Uint8Array): Uint8Array {
  if (keyId.length !== ISSUER_KEY_ID_LENGTH) throw new ProtocolError("PP_ERR_FORMAT", "issuer_key_id must be 32 bytes");
  return concatBytes(lp16(utf8.encode(challenge.issuerName)), lp16(utf8.encode(challenge.originInfo.join(","))), lp16(third), keyId);
}

/**
 * request_context = lp16(issuer_name) || lp16(origin_info) || lp16(credential_context) || issuer_key_id:
 * what the credential is bound to (arc-protocol §6.1).
 */
export function requestContext(challenge: TokenChallenge, keyId: Uint8Array): Uint8Array {
  return contextOf(challenge, challenge.credentialContext ?? new Uint8Array(0), keyId);
}

/**
 * presentation_context = lp16(issuer_name) || lp16(origin_info) || lp16(redemption_context) || issuer_key_id:
 * the context whose presentations the limit counts (arc-protocol §7.1).
 */
export function presentationContext(challenge: TokenChallenge, keyId: Uint8Array): Uint8Array {
  return contextOf(challenge, challenge.redemptionContext, keyId);
}

//   struct {
//     uint16_t token_type = 0xE5AC;
//     uint8_t truncated_issuer_key_id;
//     uint8_t encoded_request[Nrequest];
//   } CredentialRequest;
export interface ArcCredentialRequest {
  /** The last byte of the issuer key id. */
  truncatedIssuerKeyId: number;
  request: CredentialRequest;
}

export const ARC_CREDENTIAL_REQUEST_LENGTH = 3 + CREDENTIAL_REQUEST_LENGTH;

export function encodeArcCredentialRequest(r: ArcCredentialRequest): Uint8Array {
  if (!Number.isInteger(r.truncatedIssuerKeyId) || r.truncatedIssuerKeyId < 0 || r.truncatedIssuerKeyId > 0xff) {
    throw new ProtocolError("PP_ERR_FORMAT", "truncated_issuer_key_id out of range");
  }
  return new ByteWriter(ARC_CREDENTIAL_REQUEST_LENGTH).u16(ARC_TOKEN_TYPE).u8(r.truncatedIssuerKeyId).bytes(encodeCredentialRequest(r.request)).finish();
}

/** Strict: token type 0xE5AC, exactly Nrequest bytes, valid points (otherwise the issuer answers 422). */
export function decodeArcCredentialRequest(b: Uint8Array): ArcCredentialRequest {
  const r = arcReader(b);
  const tokenType = r.u16("token_type");
  if (tokenType !== ARC_TOKEN_TYPE) throw new ProtocolError("PP_ERR_FORMAT", "token_type is not ARC (0xE5AC)");
  const truncatedIssuerKeyId = r.u8("truncated_issuer_key_id");
  const request = decodeCredentialRequest(r.bytes(CREDENTIAL_REQUEST_LENGTH, "encoded_request"));
  r.end("CredentialRequest");
  return { truncatedIssuerKeyId, request };
}

//   struct { uint8_t encoded_response[Nresponse]; } CredentialResponse;
export const ARC_CREDENTIAL_RESPONSE_LENGTH = CREDENTIAL_RESPONSE_LENGTH;

export function encodeArcCredentialResponse(r: CredentialResponse): Uint8Array {
  return encodeCredentialResponse(r);
}

export function decodeArcCredentialResponse(b: Uint8Array): CredentialResponse {
  return decodeCredentialResponse(b);
}

//   struct {
//     uint16_t token_type = 0xE5AC;
//     uint32_t presentation_nonce;
//     uint8_t challenge_digest[32];
//     uint8_t issuer_key_id[Nid];
//     uint8_t presentation[Npresentation];
//   } Token;
//
// presentation_nonce is the nonce of the presentation in clear, as the protocol draft defines
// it, although the crypto draft hides the nonce in nonceCommit; the gate never relies on it (the
// range proof and the tag do the work).
export interface ArcToken {
  presentationNonce: number;
  challengeDigest: Uint8Array;
  issuerKeyId: Uint8Array;
  presentation: Presentation;
}

export function encodeArcToken(t: ArcToken): Uint8Array {
  if (!Number.isInteger(t.presentationNonce) || t.presentationNonce < 0 || t.presentationNonce > 0xffffffff) {
    throw new ProtocolError("PP_ERR_FORMAT", "presentation_nonce out of range");
  }
  if (t.challengeDigest.length !== 32) throw new ProtocolError("PP_ERR_FORMAT", "challenge_digest must be 32 bytes");
  if (t.issuerKeyId.length !== ISSUER_KEY_ID_LENGTH) throw new ProtocolError("PP_ERR_FORMAT", "issuer_key_id must be 32 bytes");
  const presentation = encodePresentation(t.presentation);
  return new ByteWriter(2 + 4 + 32 + ISSUER_KEY_ID_LENGTH + presentation.length)
    .u16(ARC_TOKEN_TYPE)
    .u32(t.presentationNonce)
    .bytes(t.challengeDigest)
    .bytes(t.issuerKeyId)
    .bytes(presentation)
    .finish();
}

/** Strict: an ARC token whose presentation is exactly Npresentation for `presentationLimit`. */
export function decodeArcToken(b: Uint8Array, presentationLimit: number): ArcToken {
  const r = arcReader(b);
  const tokenType = r.u16("token_type");
  if (tokenType !== ARC_TOKEN_TYPE) throw new ProtocolError("PP_ERR_FORMAT", "token_type is not ARC (0xE5AC)");
  const presentationNonce = r.u32("presentation_nonce");
  const challengeDigest = r.bytes(32, "challenge_digest").slice();
  const issuerKeyId = r.bytes(ISSUER_KEY_ID_LENGTH, "issuer_key_id").slice();
  const presentation = decodePresentation(r.bytes(presentationLength(presentationLimit), "presentation"), presentationLimit);
  r.end("Token");
  return { presentationNonce, challengeDigest, issuerKeyId, presentation };
}
