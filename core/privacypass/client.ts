// The client side of issuance (RFC 9578 §5.1/§5.3 type 1, §6.1/§6.3 type 2): build a
// TokenRequest for a challenge and an issuer token key, then finalize the issuer's TokenResponse
// into a Token. A thin wrapper around the stock @cloudflare/privacypass-ts Client classes
// (browser-safe: WebCrypto and JS big numbers). Inputs are checked with Veil's strict decoders
// first and passed to privacypass-ts as exact-length copies (its parsers ignore byteOffset and
// accept trailing bytes).

import { privateVerif, publicVerif, TokenChallenge as PpTokenChallenge } from "@cloudflare/privacypass-ts";
import { equalBytes, exactCopy } from "../bytes.js";
import { ProtocolError, wrapError } from "../errors.js";
import { decodeTokenChallenge } from "./challenge.js";
import { decodeTokenRequest, decodeTokenResponse } from "./issuance.js";
import { decodeToken } from "./token.js";
import { TOKEN_TYPE } from "./token-type.js";
import { rsaSpkiFromRsaPssSpki } from "./token-key.js";
import { deserializeElement } from "./voprf.js";

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

/**
 * Starts issuance for `challenge` (encoded TokenChallenge) with the issuer's `tokenKey` (type 2:
 * the RSASSA-PSS SPKI; type 1: the compressed public element). The token type comes from the
 * challenge.
 */
export async function createTokenRequest(challenge: Uint8Array, tokenKey: Uint8Array): Promise<PendingTokenRequest> {
  const decoded = decodeTokenChallenge(challenge);
  const stockChallenge = PpTokenChallenge.deserialize(exactCopy(challenge));
  if (!equalBytes(stockChallenge.serialize(), challenge)) {
    throw new ProtocolError("PP_ERR_FORMAT", "challenge does not round-trip");
  }
  // Strict checks of the key before the stock client sees it (it checks little itself).
  try {
    if (decoded.tokenType === TOKEN_TYPE.BLIND_RSA_2048) rsaSpkiFromRsaPssSpki(tokenKey);
    if (decoded.tokenType === TOKEN_TYPE.VOPRF_P384) deserializeElement(tokenKey);
  } catch (e) {
    throw new ProtocolError("PP_ERR_FORMAT", "token key is unusable", { cause: e });
  }
  try {
    if (decoded.tokenType === TOKEN_TYPE.BLIND_RSA_2048) {
      const client = new publicVerif.Client(publicVerif.BlindRSAMode.PSS);
      const req = await client.createTokenRequest(stockChallenge, exactCopy(tokenKey));
      const request = req.serialize();
      decodeTokenRequest(request);
      return pending(decoded.tokenType, request, client);
    }
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
