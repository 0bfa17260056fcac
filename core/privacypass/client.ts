// The client side of issuance (RFC 9578 §5.1/§5.3 types 1 and 5, §6.1/§6.3 type 2): build a
// TokenRequest for a challenge and an issuer token key, then finalize the issuer's TokenResponse
// into a Token.
//
// Type 2 (Blind RSA) is Veil's own RSABSSA-SHA384-PSS-Deterministic client (./blind-rsa.ts,
// native BigInt, about two orders of magnitude faster than the sjcl-based stock one).
// Types 1 and 5 (VOPRF, P-384 or ristretto255) are Veil's own VOPRF client (./voprf-batch.ts,
// @noble/curves): Blind,
// then VerifyProof and Finalize. Both run in browsers (no node: modules) and are proven against
// the RFC 9578 vectors of three other implementations and against @cloudflare/privacypass-ts.
// Every input is checked with Veil's strict decoders first.

import { sha256 } from "@noble/hashes/sha2.js";
import { exactCopy } from "../bytes.js";
import { ProtocolError } from "../errors.js";
import { blind, defaultRandomBytes, finalize as finalizeBlindRsa, parseRsaPssTokenKey, type RandomBytes, type RsaPublicKey } from "./blind-rsa.js";
import { decodeTokenChallenge } from "./challenge.js";
import { decodeTokenResponse, encodeTokenRequest, truncateTokenKeyId, type TokenResponse } from "./issuance.js";
import { encodeAuthenticatorInput, encodeToken, NONCE_LENGTH } from "./token.js";
import { TOKEN_TYPE, type TokenType } from "./token-type.js";
import { tokenKeyId as computeTokenKeyId } from "./token-key.js";
import { withOprfSuite, type OprfPoint, type OprfSuite } from "./oprf-suite.js";
import { blind as blindElement, finalizeBatch, randomScalar } from "./voprf-batch.js";

export interface TokenRequestDeps {
  /**
   * Randomness (default crypto.getRandomValues), drawn in order as the nonce (32 bytes), then
   * for type 2 the PSS salt (48 bytes) and the blind r (256 bytes, redrawn in the rare case it is
   * out of range or not invertible), for types 1 and 5 the blind scalar (Ns + 24 bytes, 72 for
   * P-384 and 56 for ristretto255, big-endian, reduced modulo the group order, redrawn if zero).
   * Tests inject it.
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

/** The token-type-specific half of issuance: the blinded message, and how to unblind the answer. */
interface Blinding {
  blindedMsg: Uint8Array;
  /** The authenticator from the decoded TokenResponse; throws PP_ERR_TOKEN_SIGNATURE if it does not verify. */
  unblind: (res: TokenResponse) => Uint8Array;
}

/**
 * RFC 9578 §5.1/§6.1: nonce, AuthenticatorInput, TokenRequest; §5.3/§6.3: TokenResponse to Token.
 * `blinding` does the type's blind/unblind steps on the AuthenticatorInput.
 */
function startIssuance(
  tokenType: TokenType,
  challenge: Uint8Array,
  tokenKey: Uint8Array,
  randomBytes: RandomBytes,
  blinding: (tokenInput: Uint8Array) => Blinding,
): PendingTokenRequest {
  const nonce = randomBytes(NONCE_LENGTH).slice();
  if (nonce.length !== NONCE_LENGTH) throw new ProtocolError("INTERNAL_ERR", "random source returned the wrong length");
  const fields = { tokenType, nonce, challengeDigest: sha256(challenge), tokenKeyId: computeTokenKeyId(tokenKey) };
  const { blindedMsg, unblind } = blinding(encodeAuthenticatorInput(fields));
  const request = encodeTokenRequest({ tokenType, truncatedTokenKeyId: truncateTokenKeyId(fields.tokenKeyId), blindedMsg });
  let used = false;
  return {
    tokenType,
    request,
    async finalize(response: Uint8Array): Promise<Uint8Array> {
      if (used) throw new ProtocolError("INTERNAL_ERR", "token request already finalized");
      const res = decodeTokenResponse(tokenType, response);
      let authenticator: Uint8Array;
      try {
        authenticator = unblind(res);
      } catch (e) {
        // A response that does not verify leaves the request usable with the right response.
        throw new ProtocolError("PP_ERR_TOKEN_SIGNATURE", "token response does not verify", { cause: e });
      }
      used = true;
      return encodeToken({ ...fields, authenticator });
    },
  };
}

/** Type 2 (RFC 9578 §6.1, §6.3): RSABSSA blind of the AuthenticatorInput; unblind and verify. */
function blindRsa(pk: RsaPublicKey, randomBytes: RandomBytes): (tokenInput: Uint8Array) => Blinding {
  return (tokenInput) => {
    const { blindedMsg, inv } = blind(pk, tokenInput, { randomBytes });
    return {
      blindedMsg,
      unblind: (res) => {
        if (res.tokenType !== TOKEN_TYPE.BLIND_RSA_2048) throw new ProtocolError("PP_ERR_FORMAT", "token response of another type");
        return finalizeBlindRsa(pk, tokenInput, res.blindSig, inv);
      },
    };
  };
}

/**
 * Types 1 and 5 (RFC 9578 §5.1, §5.3; type 5 alike with ristretto255): VOPRF Blind of the
 * AuthenticatorInput; VerifyProof and Finalize (./voprf-batch.ts, a batch of one).
 */
function blindVoprf<P extends OprfPoint<P>>(suite: OprfSuite<P>, pkS: Uint8Array, randomBytes: RandomBytes): (tokenInput: Uint8Array) => Blinding {
  return (tokenInput) => {
    const blinded = blindElement(suite, tokenInput, randomScalar(suite, randomBytes));
    return {
      blindedMsg: blinded.blindedElement,
      unblind: (res) => {
        if (res.tokenType !== suite.tokenType) throw new ProtocolError("PP_ERR_FORMAT", "token response of another type");
        return finalizeBatch(suite, pkS, [tokenInput], [blinded], [res.evaluateMsg], res.evaluateProof)[0]!;
      },
    };
  };
}

/**
 * Starts issuance for `challenge` (encoded TokenChallenge) with the issuer's `tokenKey` (type 2:
 * the RSASSA-PSS SPKI; types 1 and 5: the serialized public element). The token type comes from the
 * challenge.
 */
export async function createTokenRequest(challenge: Uint8Array, tokenKey: Uint8Array, deps: TokenRequestDeps = {}): Promise<PendingTokenRequest> {
  const { tokenType } = decodeTokenChallenge(challenge);
  if (tokenType !== TOKEN_TYPE.BLIND_RSA_2048 && tokenType !== TOKEN_TYPE.VOPRF_P384 && tokenType !== TOKEN_TYPE.VOPRF_RISTRETTO255) {
    throw new ProtocolError("PP_ERR_FORMAT", "unsupported token type");
  }
  const randomBytes = deps.randomBytes ?? defaultRandomBytes;
  let blinding: (tokenInput: Uint8Array) => Blinding;
  try {
    if (tokenType === TOKEN_TYPE.BLIND_RSA_2048) {
      const pk = parseRsaPssTokenKey(tokenKey);
      if (pk.modBits !== 2048) throw new ProtocolError("PP_ERR_FORMAT", "token key is not RSA-2048");
      blinding = blindRsa(pk, randomBytes);
    } else {
      const pkS = exactCopy(tokenKey);
      blinding = withOprfSuite(tokenType, (suite) => {
        suite.deserializeElement(pkS);
        return blindVoprf(suite, pkS, randomBytes);
      })!;
    }
  } catch (e) {
    throw new ProtocolError("PP_ERR_FORMAT", "token key is unusable", { cause: e });
  }
  return startIssuance(tokenType, exactCopy(challenge), exactCopy(tokenKey), randomBytes, blinding);
}
