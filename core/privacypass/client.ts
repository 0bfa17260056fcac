// The client side of issuance (RFC 9578 §5.1/§5.3 type 1, §6.1/§6.3 type 2): build a
// TokenRequest for a challenge and an issuer token key, then finalize the issuer's TokenResponse
// into a Token.
//
// Type 2 (Blind RSA) is Veil's own RSABSSA-SHA384-PSS-Deterministic client (./blind-rsa.ts,
// native BigInt, about two orders of magnitude faster than the sjcl-based stock one).
// Type 1 (VOPRF) wraps the stock @cloudflare/privacypass-ts Client (browser-safe: WebCrypto and JS
// big numbers). Inputs are checked with Veil's strict decoders first and passed to privacypass-ts
// as exact-length copies (its parsers ignore byteOffset and accept trailing bytes).

import { privateVerif, TokenChallenge as PpTokenChallenge } from "@cloudflare/privacypass-ts";
import { sha256 } from "@noble/hashes/sha2.js";
import { equalBytes, exactCopy } from "../bytes.js";
import { isProtocolError, ProtocolError, wrapError } from "../errors.js";
import { blind, defaultRandomBytes, finalize as finalizeBlindRsa, parseRsaPssTokenKey, type RandomBytes, type RsaPublicKey } from "./blind-rsa.js";
import { decodeTokenChallenge } from "./challenge.js";
import { decodeTokenRequest, decodeTokenResponse, encodeTokenRequest, truncateTokenKeyId } from "./issuance.js";
import { decodeToken, encodeAuthenticatorInput, encodeToken, NONCE_LENGTH } from "./token.js";
import { TOKEN_TYPE } from "./token-type.js";
import { tokenKeyId as computeTokenKeyId } from "./token-key.js";
import { deserializeElement } from "./voprf.js";

export interface TokenRequestDeps {
  /**
   * Randomness for type 2 (default crypto.getRandomValues): drawn in order as the nonce (32
   * bytes), the PSS salt (48 bytes) and the blind r (256 bytes, redrawn in the rare case it is
   * out of range or not invertible). Tests inject it; type 1 ignores it.
   */
  randomBytes?: RandomBytes;
}

export interface PendingTokenRequest {
  readonly tokenType: number;
  /** The encoded TokenRequest to POST to the issuer (application/private-token-request). */
  readonly request: Uint8Array;
  /**
   * Turns the issuer's TokenResponse into the encoded Token. Single use (once it succeeded). Throws PP_ERR_TRUNCATED /
   * PP_ERR_FORMAT for a malformed response and PP_ERR_TOKEN_SIGNATURE when the response does not
   * verify (a bad blind signature or DLEQ proof).
   */
  finalize(response: Uint8Array): Promise<Uint8Array>;
}

interface StockFinalizer<R> {
  deserializeTokenResponse(bytes: Uint8Array): R;
  finalize(res: R): Promise<{ serialize(): Uint8Array }>;
}

function pending<R>(tokenType: number, request: Uint8Array, client: StockFinalizer<R>): PendingTokenRequest {
  let used = false;
  return {
    tokenType,
    request,
    async finalize(response: Uint8Array): Promise<Uint8Array> {
      if (used) throw new ProtocolError("INTERNAL_ERR", "token request already finalized");
      decodeTokenResponse(tokenType, response); // strict length check before the stock parser
      let token: Uint8Array;
      try {
        token = (await client.finalize(client.deserializeTokenResponse(exactCopy(response)))).serialize();
      } catch (e) {
        // A response that does not verify leaves the request usable with the right response.
        throw wrapError(e, "PP_ERR_TOKEN_SIGNATURE", "token response does not verify");
      }
      used = true;
      decodeToken(token);
      return token;
    },
  };
}

/** Type 2 (RFC 9578 §6.1, §6.3): blind the AuthenticatorInput, then unblind and verify. */
function createBlindRsaTokenRequest(challenge: Uint8Array, tokenKey: Uint8Array, pk: RsaPublicKey, deps: TokenRequestDeps): PendingTokenRequest {
  const randomBytes = deps.randomBytes ?? defaultRandomBytes;
  const tokenType = TOKEN_TYPE.BLIND_RSA_2048;
  const nonce = randomBytes(NONCE_LENGTH).slice();
  if (nonce.length !== NONCE_LENGTH) throw new ProtocolError("INTERNAL_ERR", "random source returned the wrong length");
  const fields = { tokenType, nonce, challengeDigest: sha256(challenge), tokenKeyId: computeTokenKeyId(tokenKey) };
  const tokenInput = encodeAuthenticatorInput(fields);
  const { blindedMsg, inv } = blind(pk, tokenInput, { randomBytes });
  const request = encodeTokenRequest({ tokenType, truncatedTokenKeyId: truncateTokenKeyId(fields.tokenKeyId), blindedMsg });
  let used = false;
  return {
    tokenType,
    request,
    async finalize(response: Uint8Array): Promise<Uint8Array> {
      if (used) throw new ProtocolError("INTERNAL_ERR", "token request already finalized");
      const res = decodeTokenResponse(tokenType, response);
      if (res.tokenType !== tokenType) throw new ProtocolError("PP_ERR_FORMAT", "token response of another type");
      let authenticator: Uint8Array;
      try {
        authenticator = finalizeBlindRsa(pk, tokenInput, res.blindSig, inv);
      } catch (e) {
        // A response that does not verify leaves the request usable with the right response.
        if (isProtocolError(e) && e.code === "PP_ERR_TOKEN_SIGNATURE") {
          throw new ProtocolError("PP_ERR_TOKEN_SIGNATURE", "token response does not verify", { cause: e });
        }
        throw wrapError(e, "PP_ERR_TOKEN_SIGNATURE", "token response does not verify");
      }
      used = true;
      return encodeToken({ ...fields, authenticator });
    },
  };
}

/**
 * Starts issuance for `challenge` (encoded TokenChallenge) with the issuer's `tokenKey` (type 2:
 * the RSASSA-PSS SPKI; type 1: the compressed public element). The token type comes from the
 * challenge.
 */
export async function createTokenRequest(challenge: Uint8Array, tokenKey: Uint8Array, deps: TokenRequestDeps = {}): Promise<PendingTokenRequest> {
  const decoded = decodeTokenChallenge(challenge);
  const stockChallenge = PpTokenChallenge.deserialize(exactCopy(challenge));
  if (!equalBytes(stockChallenge.serialize(), challenge)) {
    throw new ProtocolError("PP_ERR_FORMAT", "challenge does not round-trip");
  }
  // Strict checks of the key before the stock client sees it (it checks little itself).
  let rsaKey: RsaPublicKey | undefined;
  try {
    if (decoded.tokenType === TOKEN_TYPE.BLIND_RSA_2048) {
      rsaKey = parseRsaPssTokenKey(tokenKey);
      if (rsaKey.modBits !== 2048) throw new ProtocolError("PP_ERR_FORMAT", "token key is not RSA-2048");
    }
    if (decoded.tokenType === TOKEN_TYPE.VOPRF_P384) deserializeElement(tokenKey);
  } catch (e) {
    throw new ProtocolError("PP_ERR_FORMAT", "token key is unusable", { cause: e });
  }
  try {
    if (rsaKey !== undefined) return createBlindRsaTokenRequest(exactCopy(challenge), exactCopy(tokenKey), rsaKey, deps);
    if (decoded.tokenType === TOKEN_TYPE.VOPRF_P384) {
      const client = new privateVerif.Client();
      const req = await client.createTokenRequest(stockChallenge, exactCopy(tokenKey));
      const request = req.serialize();
      decodeTokenRequest(request);
      return pending(decoded.tokenType, request, client);
    }
  } catch (e) {
    throw wrapError(e, "PP_ERR_FORMAT", "token key is unusable");
  }
  throw new ProtocolError("PP_ERR_FORMAT", "unsupported token type");
}
