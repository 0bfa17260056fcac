// Batched issuance messages of draft-ietf-privacypass-batched-tokens (TLS presentation language
// with variable-size vector lengths: a QUIC varint of the vector's byte length, minimal encoding
// required; optional<T> is a presence octet 0 or 1, then T).
//
// Amortized privately verifiable batch (token types 0x0001 and 0x0005: one proof for all):
//
//   struct { uint8_t blinded_msg[Ne]; } BlindedMessage;
//   struct {
//     uint16_t token_type;
//     uint8_t truncated_token_key_id;
//     BlindedMessage blinded_msgs<V>;
//   } AmortizedBatchTokenRequest;
//
//   struct { uint8_t evaluated_msg[Ne]; } EvaluatedMessage;
//   struct {
//     EvaluatedMessage evaluated_msgs<V>;
//     uint8_t evaluated_proof[Ns + Ns];
//   } AmortizedBatchTokenResponse;
//
// Generic batch (TokenRequests of any type, each starting with its own uint16 token_type):
//
//   struct { GenericTokenRequest generic_token_requests<V>; } GenericBatchTokenRequest;
//   struct { uint16_t token_type; TokenResponse token_response; } GenericTokenResponse;
//   struct { optional<GenericTokenResponse> generic_token_response; } OptionalTokenResponse;
//   struct { OptionalTokenResponse optional_token_responses<V>; } GenericBatchTokenResponse;
//
// An absent OptionalTokenResponse is a TokenRequest the issuer failed or refused to issue.

import { ByteReader, ByteWriter } from "../bytes.js";
import { ProtocolError } from "../errors.js";
import { decodeTokenRequest, type TokenRequest } from "./issuance.js";
import { TOKEN_TYPE, tokenTypeSizes } from "./token-type.js";

/** The privately verifiable token types of the amortized batch. */
export type AmortizedTokenType = typeof TOKEN_TYPE.VOPRF_P384 | typeof TOKEN_TYPE.VOPRF_RISTRETTO255;

export function isAmortizedTokenType(t: number): t is AmortizedTokenType {
  return t === TOKEN_TYPE.VOPRF_P384 || t === TOKEN_TYPE.VOPRF_RISTRETTO255;
}

export interface AmortizedBatchTokenRequest {
  tokenType: AmortizedTokenType;
  truncatedTokenKeyId: number;
  /** Nr serialized blinded elements, Ne bytes each. */
  blindedMsgs: Uint8Array[];
}

export interface AmortizedBatchTokenResponse {
  evaluatedMsgs: Uint8Array[];
  evaluatedProof: Uint8Array;
}

function reader(b: Uint8Array): ByteReader {
  return new ByteReader(b, "PP_ERR_TRUNCATED", "PP_ERR_FORMAT");
}

function minimalVarintLength(v: number): number {
  return v < 0x40 ? 1 : v < 0x4000 ? 2 : v < 0x40000000 ? 4 : 8;
}

/** A `<V>` vector: its byte length as a minimal varint, then those bytes (a view). */
function readVector(r: ByteReader, what: string): Uint8Array {
  const at = r.offset;
  const n = r.varint(what);
  if (r.offset - at !== minimalVarintLength(n)) throw new ProtocolError("PP_ERR_FORMAT", `${what}: length is not minimally encoded`);
  return r.bytes(n, what);
}

/** Splits a vector of fixed-size items. */
function split(v: Uint8Array, size: number, what: string): Uint8Array[] {
  if (v.length % size !== 0) throw new ProtocolError("PP_ERR_FORMAT", `${what}: ${v.length} bytes is not a whole number of ${size}-byte items`);
  const out: Uint8Array[] = [];
  for (let i = 0; i < v.length; i += size) out.push(v.slice(i, i + size));
  return out;
}

function vectorOf(items: readonly Uint8Array[]): ByteWriter {
  const len = items.reduce((n, x) => n + x.length, 0);
  const w = new ByteWriter(len + 8).varint(len);
  for (const x of items) w.bytes(x);
  return w;
}

function amortizedSizes(tokenType: number): { Ne: number; proofLength: number } {
  if (!isAmortizedTokenType(tokenType)) {
    throw new ProtocolError("PP_ERR_FORMAT", `token type 0x${tokenType.toString(16).padStart(4, "0")} has no amortized batch`);
  }
  const s = tokenTypeSizes(tokenType)!;
  return { Ne: s.blindedMsgLength, proofLength: s.responseLength - s.blindedMsgLength };
}

export function encodeAmortizedBatchTokenRequest(req: AmortizedBatchTokenRequest): Uint8Array {
  const { Ne } = amortizedSizes(req.tokenType);
  if (req.blindedMsgs.length === 0 || req.blindedMsgs.some((m) => m.length !== Ne)) {
    throw new ProtocolError("PP_ERR_FORMAT", `blinded_msgs must be one or more ${Ne}-byte elements`);
  }
  const body = vectorOf(req.blindedMsgs).finish();
  return new ByteWriter(3 + body.length).u16(req.tokenType).u8(req.truncatedTokenKeyId).bytes(body).finish();
}

/** Strict: a privately verifiable type, at least one whole element, no trailing bytes. Copies. */
export function decodeAmortizedBatchTokenRequest(b: Uint8Array): AmortizedBatchTokenRequest {
  const r = reader(b);
  const tokenType = r.u16("token_type");
  const { Ne } = amortizedSizes(tokenType);
  const truncatedTokenKeyId = r.u8("truncated_token_key_id");
  const blindedMsgs = split(readVector(r, "blinded_msgs"), Ne, "blinded_msgs");
  r.end("AmortizedBatchTokenRequest");
  if (blindedMsgs.length === 0) throw new ProtocolError("PP_ERR_FORMAT", "blinded_msgs is empty");
  return { tokenType: tokenType as AmortizedTokenType, truncatedTokenKeyId, blindedMsgs };
}

export function encodeAmortizedBatchTokenResponse(tokenType: AmortizedTokenType, res: AmortizedBatchTokenResponse): Uint8Array {
  const { Ne, proofLength } = amortizedSizes(tokenType);
  if (res.evaluatedMsgs.some((m) => m.length !== Ne) || res.evaluatedProof.length !== proofLength) {
    throw new ProtocolError("PP_ERR_FORMAT", `evaluated_msgs must be ${Ne}-byte elements and evaluated_proof ${proofLength} bytes`);
  }
  return vectorOf(res.evaluatedMsgs).bytes(res.evaluatedProof).finish();
}

/** Strict: whole elements of `tokenType`, the proof, no trailing bytes. Copies. */
export function decodeAmortizedBatchTokenResponse(tokenType: number, b: Uint8Array): AmortizedBatchTokenResponse {
  const { Ne, proofLength } = amortizedSizes(tokenType);
  const r = reader(b);
  const evaluatedMsgs = split(readVector(r, "evaluated_msgs"), Ne, "evaluated_msgs");
  const evaluatedProof = r.bytes(proofLength, "evaluated_proof").slice();
  r.end("AmortizedBatchTokenResponse");
  return { evaluatedMsgs, evaluatedProof };
}

/** `requests`: encoded TokenRequests (each checked by decodeTokenRequest). */
export function encodeGenericBatchTokenRequest(requests: readonly Uint8Array[]): Uint8Array {
  for (const r of requests) decodeTokenRequest(r);
  return vectorOf(requests).finish();
}

/**
 * Strict: each GenericTokenRequest is a TokenRequest of a type whose size is known here (1, 2 or
 * 5; another type cannot be delimited: PP_ERR_FORMAT), no trailing bytes. An empty list is
 * allowed by the syntax; the issuer decides what to do with it.
 */
export function decodeGenericBatchTokenRequest(b: Uint8Array): TokenRequest[] {
  const r = reader(b);
  const list = reader(readVector(r, "generic_token_requests"));
  r.end("GenericBatchTokenRequest");
  const out: TokenRequest[] = [];
  while (!list.done) {
    const tokenType = list.u16("token_type");
    const sizes = tokenTypeSizes(tokenType);
    if (sizes === undefined) {
      throw new ProtocolError("PP_ERR_FORMAT", `generic_token_requests[${out.length}]: unsupported token type 0x${tokenType.toString(16).padStart(4, "0")}`);
    }
    const truncatedTokenKeyId = list.u8("truncated_token_key_id");
    const blindedMsg = list.bytes(sizes.blindedMsgLength, "blinded_msg").slice();
    out.push({ tokenType: tokenType as TokenRequest["tokenType"], truncatedTokenKeyId, blindedMsg });
  }
  return out;
}

/** One entry of a GenericBatchTokenResponse: the TokenResponse bytes of its type, or absent. */
export type OptionalTokenResponse = { tokenType: number; tokenResponse: Uint8Array } | undefined;

export function encodeGenericBatchTokenResponse(responses: readonly OptionalTokenResponse[]): Uint8Array {
  return vectorOf(
    responses.map((x) =>
      x === undefined ? Uint8Array.of(0) : new ByteWriter(3 + x.tokenResponse.length).u8(1).u16(x.tokenType).bytes(x.tokenResponse).finish(),
    ),
  ).finish();
}

/** Strict: presence octets 0 or 1, known types with their exact response size, no trailing bytes. */
export function decodeGenericBatchTokenResponse(b: Uint8Array): OptionalTokenResponse[] {
  const r = reader(b);
  const list = reader(readVector(r, "optional_token_responses"));
  r.end("GenericBatchTokenResponse");
  const out: OptionalTokenResponse[] = [];
  while (!list.done) {
    const present = list.u8("present");
    if (present === 0) {
      out.push(undefined);
      continue;
    }
    if (present !== 1) throw new ProtocolError("PP_ERR_FORMAT", `optional_token_responses[${out.length}]: presence octet ${present}`);
    const tokenType = list.u16("token_type");
    const sizes = tokenTypeSizes(tokenType);
    if (sizes === undefined) throw new ProtocolError("PP_ERR_FORMAT", `optional_token_responses[${out.length}]: unknown token type ${tokenType}`);
    out.push({ tokenType, tokenResponse: list.bytes(sizes.responseLength, "token_response").slice() });
  }
  return out;
}
