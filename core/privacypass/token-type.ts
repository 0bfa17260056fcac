// Privacy Pass token types (RFC 9578 §5, §6; IANA "Privacy Pass Token Types").

/** The token types Veil issues and verifies. */
export const TOKEN_TYPE = {
  /** RFC 9578 §5: VOPRF (P-384, SHA-384), privately verifiable. */
  VOPRF_P384: 0x0001,
  /** RFC 9578 §6: Blind RSA (2048-bit), publicly verifiable. */
  BLIND_RSA_2048: 0x0002,
  /**
   * VOPRF (ristretto255, SHA-512), privately verifiable: registered by
   * draft-ietf-privacypass-batched-tokens (issued like type 1, RFC 9578 §5, singly or in
   * amortized batches).
   */
  VOPRF_RISTRETTO255: 0x0005,
} as const;

export type TokenType = (typeof TOKEN_TYPE)[keyof typeof TOKEN_TYPE];

/**
 * ARC(P-256), draft-ietf-privacypass-arc-protocol-01: rate-limited credentials. Its challenge,
 * issuance messages and token differ from types 1 and 2 (see ./arc/protocol.ts).
 */
export const ARC_TOKEN_TYPE = 0xe5ac;

/** Sizes of one token type (RFC 9578 §5 and §6, "Token Type" registry entries). */
export interface TokenTypeSizes {
  /** Nk: authenticator length in a Token. */
  readonly Nk: number;
  /** Nid: token key id length (always 32: SHA-256). */
  readonly Nid: number;
  /** Length of `blinded_msg` in a TokenRequest (Ne = 49 for type 1, Nk = 256 for type 2, Ne = 32 for type 5). */
  readonly blindedMsgLength: number;
  /** Length of a TokenResponse (Ne + 2*Ns = 145 for type 1, Nk = 256 for type 2, 96 for type 5). */
  readonly responseLength: number;
}

/** Type 1: Ne = 49 (compressed P-384 point), Ns = 48, Nk = Nh = 48. */
export const VOPRF_P384_SIZES: TokenTypeSizes = Object.freeze({
  Nk: 48,
  Nid: 32,
  blindedMsgLength: 49,
  responseLength: 49 + 96,
});

/** Type 5: Ne = Ns = 32 (ristretto255), Nk = Nh = 64 (SHA-512). */
export const VOPRF_RISTRETTO255_SIZES: TokenTypeSizes = Object.freeze({
  Nk: 64,
  Nid: 32,
  blindedMsgLength: 32,
  responseLength: 32 + 64,
});

/** Type 2: Nk = modulus length = 256 bytes. */
export const BLIND_RSA_2048_SIZES: TokenTypeSizes = Object.freeze({
  Nk: 256,
  Nid: 32,
  blindedMsgLength: 256,
  responseLength: 256,
});

/** Sizes for a supported token type, or undefined for any other value. */
export function tokenTypeSizes(tokenType: number): TokenTypeSizes | undefined {
  switch (tokenType) {
    case TOKEN_TYPE.VOPRF_P384:
      return VOPRF_P384_SIZES;
    case TOKEN_TYPE.BLIND_RSA_2048:
      return BLIND_RSA_2048_SIZES;
    case TOKEN_TYPE.VOPRF_RISTRETTO255:
      return VOPRF_RISTRETTO255_SIZES;
    default:
      return undefined;
  }
}

export function isSupportedTokenType(tokenType: number): tokenType is TokenType {
  return tokenTypeSizes(tokenType) !== undefined;
}

/**
 * RFC 9577 §4.1 / §6.2.1: reserved ("greased") token type values that origins should sometimes
 * include in challenges so clients keep ignoring types they do not know.
 */
export const GREASE_TOKEN_TYPES: readonly number[] = Object.freeze([
  0x0000, 0x02aa, 0x1132, 0x2e96, 0x3cd3, 0x4473, 0x5a63, 0x6d32, 0x7f3f, 0x8d07, 0x916b, 0xa6a4,
  0xbeab, 0xc3f3, 0xda42, 0xe944, 0xf057,
]);
