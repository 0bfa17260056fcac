// Issuance messages (RFC 9578 §5.1-5.3 for type 1, §6.1-6.3 for type 2; type 5 has the type 1
// layout with ristretto255 sizes), and the media types. Batches are in ./batch.ts.
//
// Type 1 (VOPRF P-384):                      Type 2 (Blind RSA 2048):
//   struct {                                   struct {
//     uint16_t token_type = 0x0001;              uint16_t token_type = 0x0002;
//     uint8_t truncated_token_key_id;            uint8_t truncated_token_key_id;
//     uint8_t blinded_msg[Ne];                   uint8_t blinded_msg[Nk];
//   } TokenRequest;                            } TokenRequest;
//
//   struct {                                   struct {
//     uint8_t evaluate_msg[Ne];                  uint8_t blind_sig[Nk];
//     uint8_t evaluate_proof[Ns+Ns];           } TokenResponse;
//   } TokenResponse;

import { ByteReader, ByteWriter } from "../bytes.js";
import { ProtocolError } from "../errors.js";
import { TOKEN_TYPE, tokenTypeSizes, type TokenType } from "./token-type.js";

export const MEDIA_TYPES = {
  /** RFC 9578 §8.2.1 */
  tokenRequest: "application/private-token-request",
  /** RFC 9578 §8.2.2 */
  tokenResponse: "application/private-token-response",
  /** RFC 9578 §8.2.3 */
  issuerDirectory: "application/private-token-issuer-directory",
  /** draft-ietf-privacypass-batched-tokens, IANA media types (./batch.ts) */
  amortizedBatchRequest: "application/private-token-amortized-batch-request",
  amortizedBatchResponse: "application/private-token-amortized-batch-response",
  genericBatchRequest: "application/private-token-generic-batch-request",
  genericBatchResponse: "application/private-token-generic-batch-response",
} as const;

/** RFC 9578 §4: the well-known path of the issuer directory. */
export const ISSUER_DIRECTORY_PATH = "/.well-known/private-token-issuer-directory";

export interface TokenRequest {
  tokenType: TokenType;
  /** The last byte of the token key id (RFC 9578 §5.1/§6.1). */
  truncatedTokenKeyId: number;
  /** Ne = 49 bytes (type 1) or Nk = 256 bytes (type 2). */
  blindedMsg: Uint8Array;
}

/** Types 1 and 5: evaluate_msg (Ne: 49 or 32 bytes) and evaluate_proof (2*Ns: 96 or 64 bytes). */
export interface VoprfTokenResponse {
  tokenType: typeof TOKEN_TYPE.VOPRF_P384 | typeof TOKEN_TYPE.VOPRF_RISTRETTO255;
  evaluateMsg: Uint8Array;
  evaluateProof: Uint8Array;
}

/** Type 2: blind_sig (256 bytes). */
export interface BlindRsaTokenResponse {
  tokenType: typeof TOKEN_TYPE.BLIND_RSA_2048;
  blindSig: Uint8Array;
}

export type TokenResponse = VoprfTokenResponse | BlindRsaTokenResponse;

/** The truncated token key id: the least significant byte of the token key id. */
export function truncateTokenKeyId(tokenKeyId: Uint8Array): number {
  const last = tokenKeyId[tokenKeyId.length - 1];
  if (last === undefined) throw new ProtocolError("PP_ERR_FORMAT", "token key id is empty");
  return last;
}

export function encodeTokenRequest(req: TokenRequest): Uint8Array {
  const sizes = tokenTypeSizes(req.tokenType);
  if (sizes === undefined) throw new ProtocolError("PP_ERR_FORMAT", "unsupported token type");
  if (req.blindedMsg.length !== sizes.blindedMsgLength) {
    throw new ProtocolError("PP_ERR_FORMAT", `blinded_msg must be ${sizes.blindedMsgLength} bytes`);
  }
  if (!Number.isInteger(req.truncatedTokenKeyId) || req.truncatedTokenKeyId < 0 || req.truncatedTokenKeyId > 0xff) {
    throw new ProtocolError("PP_ERR_FORMAT", "truncated_token_key_id out of range");
  }
  return new ByteWriter(3 + req.blindedMsg.length)
    .u16(req.tokenType)
    .u8(req.truncatedTokenKeyId)
    .bytes(req.blindedMsg)
    .finish();
}

/** The token type of a TokenRequest (its first two bytes), without decoding the rest. */
export function peekTokenRequestType(b: Uint8Array): number {
  return new ByteReader(b, "PP_ERR_TRUNCATED", "PP_ERR_FORMAT").u16("token_type");
}

/**
 * Strict: a supported token type, exactly the blinded message length of that type, no trailing
 * bytes. An unsupported type is PP_ERR_FORMAT. `blindedMsg` is a copy.
 */
export function decodeTokenRequest(b: Uint8Array): TokenRequest {
  const r = new ByteReader(b, "PP_ERR_TRUNCATED", "PP_ERR_FORMAT");
  const tokenType = r.u16("token_type");
  const sizes = tokenTypeSizes(tokenType);
  if (sizes === undefined) {
    throw new ProtocolError("PP_ERR_FORMAT", `unsupported token type 0x${tokenType.toString(16).padStart(4, "0")}`);
  }
  const truncatedTokenKeyId = r.u8("truncated_token_key_id");
  const blindedMsg = r.bytes(sizes.blindedMsgLength, "blinded_msg").slice();
  r.end("TokenRequest");
  return { tokenType: tokenType as TokenType, truncatedTokenKeyId, blindedMsg };
}

export function encodeTokenResponse(res: TokenResponse): Uint8Array {
  if (res.tokenType !== TOKEN_TYPE.BLIND_RSA_2048) {
    const sizes = tokenTypeSizes(res.tokenType)!;
    const Ne = sizes.blindedMsgLength;
    const proofLength = sizes.responseLength - Ne;
    if (res.evaluateMsg.length !== Ne || res.evaluateProof.length !== proofLength) {
      throw new ProtocolError("PP_ERR_FORMAT", `evaluate_msg must be ${Ne} bytes and evaluate_proof ${proofLength}`);
    }
    return new ByteWriter(sizes.responseLength).bytes(res.evaluateMsg).bytes(res.evaluateProof).finish();
  }
  if (res.blindSig.length !== 256) throw new ProtocolError("PP_ERR_FORMAT", "blind_sig must be 256 bytes");
  return res.blindSig.slice();
}

/** Strict: the exact response length of `tokenType`, no trailing bytes. Fields are copies. */
export function decodeTokenResponse(tokenType: number, b: Uint8Array): TokenResponse {
  const r = new ByteReader(b, "PP_ERR_TRUNCATED", "PP_ERR_FORMAT");
  if (tokenType === TOKEN_TYPE.VOPRF_P384 || tokenType === TOKEN_TYPE.VOPRF_RISTRETTO255) {
    const sizes = tokenTypeSizes(tokenType)!;
    const evaluateMsg = r.bytes(sizes.blindedMsgLength, "evaluate_msg").slice();
    const evaluateProof = r.bytes(sizes.responseLength - sizes.blindedMsgLength, "evaluate_proof").slice();
    r.end("TokenResponse");
    return { tokenType, evaluateMsg, evaluateProof };
  }
  if (tokenType === TOKEN_TYPE.BLIND_RSA_2048) {
    const blindSig = r.bytes(256, "blind_sig").slice();
    r.end("TokenResponse");
    return { tokenType, blindSig };
  }
  throw new ProtocolError("PP_ERR_FORMAT", "unsupported token type");
}
