// Token (RFC 9577 §2.2) and AuthenticatorInput (RFC 9578 §5.4, §6.4).
//
//   struct {
//       uint16_t token_type;
//       uint8_t nonce[32];
//       uint8_t challenge_digest[32];
//       uint8_t token_key_id[Nid];
//       uint8_t authenticator[Nk];
//   } Token;
//
// AuthenticatorInput is the same struct without `authenticator`: the first 98 bytes of a Token.

import { ByteReader, ByteWriter } from "../bytes.js";
import { ProtocolError } from "../errors.js";
import { tokenTypeSizes } from "./token-type.js";

export interface Token {
  tokenType: number;
  /** 32 random bytes chosen by the client: the double-spend key. */
  nonce: Uint8Array;
  /** SHA-256 of the TokenChallenge the token answers. */
  challengeDigest: Uint8Array;
  /** SHA-256 of the issuer's token key (Nid = 32). */
  tokenKeyId: Uint8Array;
  /** Nk bytes for known types; for other types, whatever follows the token key id. */
  authenticator: Uint8Array;
}

export const NONCE_LENGTH = 32;
export const CHALLENGE_DIGEST_LENGTH = 32;
export const TOKEN_KEY_ID_LENGTH = 32;
/** token_type + nonce + challenge_digest + token_key_id. */
export const AUTHENTICATOR_INPUT_LENGTH = 2 + NONCE_LENGTH + CHALLENGE_DIGEST_LENGTH + TOKEN_KEY_ID_LENGTH;

function checkLength(b: Uint8Array, n: number, what: string): void {
  if (b.length !== n) throw new ProtocolError("PP_ERR_FORMAT", `${what} must be ${n} bytes`);
}

/** The AuthenticatorInput struct: the message the issuer signs (type 2) or evaluates (type 1). */
export function encodeAuthenticatorInput(t: Omit<Token, "authenticator">): Uint8Array {
  checkLength(t.nonce, NONCE_LENGTH, "nonce");
  checkLength(t.challengeDigest, CHALLENGE_DIGEST_LENGTH, "challenge_digest");
  checkLength(t.tokenKeyId, TOKEN_KEY_ID_LENGTH, "token_key_id");
  if (!Number.isInteger(t.tokenType) || t.tokenType < 0 || t.tokenType > 0xffff) {
    throw new ProtocolError("PP_ERR_FORMAT", "token_type out of range");
  }
  return new ByteWriter(AUTHENTICATOR_INPUT_LENGTH)
    .u16(t.tokenType)
    .bytes(t.nonce)
    .bytes(t.challengeDigest)
    .bytes(t.tokenKeyId)
    .finish();
}

export function encodeToken(t: Token): Uint8Array {
  const sizes = tokenTypeSizes(t.tokenType);
  if (sizes !== undefined) checkLength(t.authenticator, sizes.Nk, "authenticator");
  else if (t.authenticator.length === 0) throw new ProtocolError("PP_ERR_FORMAT", "authenticator is empty");
  const input = encodeAuthenticatorInput(t);
  const out = new Uint8Array(input.length + t.authenticator.length);
  out.set(input);
  out.set(t.authenticator, input.length);
  return out;
}

/**
 * Strict for known token types (exactly Nk authenticator bytes, no trailing bytes). The length of
 * an unknown type's authenticator is not known, so for those everything after the token key id
 * (at least one byte) is returned as the authenticator; the caller rejects the type.
 * The fields are copies: they do not alias `b`.
 */
export function decodeToken(b: Uint8Array): Token {
  const r = new ByteReader(b, "PP_ERR_TRUNCATED", "PP_ERR_FORMAT");
  const tokenType = r.u16("token_type");
  const nonce = r.bytes(NONCE_LENGTH, "nonce").slice();
  const challengeDigest = r.bytes(CHALLENGE_DIGEST_LENGTH, "challenge_digest").slice();
  const tokenKeyId = r.bytes(TOKEN_KEY_ID_LENGTH, "token_key_id").slice();
  const sizes = tokenTypeSizes(tokenType);
  let authenticator: Uint8Array;
  if (sizes !== undefined) {
    authenticator = r.bytes(sizes.Nk, "authenticator").slice();
    r.end("Token");
  } else {
    authenticator = r.rest().slice();
    if (authenticator.length === 0) throw new ProtocolError("PP_ERR_TRUNCATED", "authenticator: missing");
  }
  return { tokenType, nonce, challengeDigest, tokenKeyId, authenticator };
}
