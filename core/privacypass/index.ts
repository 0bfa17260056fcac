// Privacy Pass (RFC 9576/9577/9578) wire glue for Veil. Browser-safe: node-only verification is in
// ./verify-node.ts, imported directly by servers.
export {
  TOKEN_TYPE,
  ARC_TOKEN_TYPE,
  GREASE_TOKEN_TYPES,
  VOPRF_P384_SIZES,
  BLIND_RSA_2048_SIZES,
  tokenTypeSizes,
  isSupportedTokenType,
  type TokenType,
  type TokenTypeSizes,
} from "./token-type.js";
export { encodeTokenChallenge, decodeTokenChallenge, type TokenChallenge } from "./challenge.js";
export {
  encodeToken,
  decodeToken,
  encodeAuthenticatorInput,
  AUTHENTICATOR_INPUT_LENGTH,
  NONCE_LENGTH,
  CHALLENGE_DIGEST_LENGTH,
  TOKEN_KEY_ID_LENGTH,
  type Token,
} from "./token.js";
export {
  encodeTokenRequest,
  decodeTokenRequest,
  peekTokenRequestType,
  encodeTokenResponse,
  decodeTokenResponse,
  truncateTokenKeyId,
  MEDIA_TYPES,
  ISSUER_DIRECTORY_PATH,
  type TokenRequest,
  type TokenResponse,
  type VoprfTokenResponse,
  type BlindRsaTokenResponse,
} from "./issuance.js";
export {
  formatWwwAuthenticate,
  parseWwwAuthenticate,
  formatAuthorization,
  parseAuthorization,
  AUTH_SCHEME,
  type WwwAuthenticateChallenge,
} from "./header.js";
export {
  tokenKeyId,
  rsaPssSpkiFromRsaSpki,
  rsaSpkiFromRsaPssSpki,
  RSASSA_PSS_SHA384_ALGORITHM,
} from "./token-key.js";
export { createTokenRequest, type PendingTokenRequest } from "./client.js";
export type { NonceStore, NonceReservation } from "./nonce-store.js";
