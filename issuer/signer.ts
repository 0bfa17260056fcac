// The issuer's signing operations (RFC 9578 §5.2 type 1, §6.2 type 2).
//
// Type 2 is RFC 9474 BlindSign done with OpenSSL: RSASP1 is `privateDecrypt` with RSA_NO_PADDING
// (CRT, about 0.4 ms) instead of blindrsa-ts's non-CRT big-number `powermod` (about 390 ms). The
// RFC 9474 §4.3 checks are kept: the blinded message must be < n (else 422), and the signature is
// checked with RSAVP1 (s^e mod n == m, `publicEncrypt` with RSA_NO_PADDING) before it is returned,
// so a fault in the private operation can never leak the key.
// Types 1 and 5 are RFC 9497 BlindEvaluate with a DLEQ proof (core/privacypass/voprf-batch.ts,
// @noble/curves): one proof for a single TokenRequest or for a whole amortized batch
// (draft-ietf-privacypass-batched-tokens).

import { constants, createPublicKey, privateDecrypt, publicEncrypt, timingSafeEqual, type KeyObject } from "node:crypto";
import { ProtocolError } from "../core/errors.js";
import { TOKEN_TYPE } from "../core/privacypass/token-type.js";
import { rsaPssSpkiFromRsaSpki, tokenKeyId } from "../core/privacypass/token-key.js";
import { encodeTokenResponse, type TokenRequest } from "../core/privacypass/issuance.js";
import { encodeAmortizedBatchTokenResponse, type AmortizedBatchTokenRequest, type AmortizedTokenType } from "../core/privacypass/batch.js";
import { withOprfSuite } from "../core/privacypass/oprf-suite.js";
import { blindEvaluateBatch, publicKey, type BatchEvaluation } from "../core/privacypass/voprf-batch.js";

/** Modulus length of type 2 keys in bytes (RSA-2048). */
export const RSA_MODULUS_BYTES = 256;

export interface BlindRsaSigner {
  readonly tokenType: typeof TOKEN_TYPE.BLIND_RSA_2048;
  /** The RSASSA-PSS SPKI published as `token-key`. */
  readonly tokenKey: Uint8Array;
  readonly tokenKeyId: Uint8Array;
  /** RFC 9474 BlindSign: blind_sig (256 bytes) for blinded_msg (256 bytes). */
  sign(blindedMsg: Uint8Array): Uint8Array;
}

export interface VoprfSigner {
  readonly tokenType: AmortizedTokenType;
  /** SerializeElement(pkS), published as `token-key`. */
  readonly tokenKey: Uint8Array;
  readonly tokenKeyId: Uint8Array;
  /**
   * RFC 9497 BlindEvaluate of each blinded element with one GenerateProof for all of them
   * (BlindEvaluateBatch). ISSUER_ERR_REQUEST (422) when an element does not deserialize.
   */
  evaluateBatch(blindedMsgs: readonly Uint8Array[]): BatchEvaluation;
}

export type Signer = BlindRsaSigner | VoprfSigner;

/**
 * A type 2 signer from an RSA private key. Rejects anything but RSA-2048 with e = 65537
 * (RFC 9578 §6.5). The public key and modulus are derived once.
 */
export function createBlindRsaSigner(privateKey: KeyObject): BlindRsaSigner {
  const details = privateKey.asymmetricKeyDetails;
  if (privateKey.type !== "private" || privateKey.asymmetricKeyType !== "rsa" || details?.modulusLength !== 2048 || details.publicExponent !== 65537n) {
    throw new ProtocolError("CFG_ERR_KEY_FILE", "type 2 keys must be RSA-2048 with e = 65537");
  }
  const publicKey = createPublicKey(privateKey);
  const jwk = publicKey.export({ format: "jwk" });
  const modulus = Buffer.from(jwk.n ?? "", "base64url");
  if (modulus.length !== RSA_MODULUS_BYTES) throw new ProtocolError("CFG_ERR_KEY_FILE", "RSA modulus is not 256 bytes");
  const tokenKey = rsaPssSpkiFromRsaSpki(publicKey.export({ format: "der", type: "spki" }));
  return {
    tokenType: TOKEN_TYPE.BLIND_RSA_2048,
    tokenKey,
    tokenKeyId: tokenKeyId(tokenKey),
    sign: (blindedMsg) => blindSign(privateKey, publicKey, modulus, blindedMsg),
  };
}

/**
 * RFC 9474 §4.3 BlindSign(sk, blinded_msg):
 *   1. m = bytes_to_int(blinded_msg)
 *   2. s = RSASP1(sk, m)        (m >= n: "message representative out of range" -> 422)
 *   3. m' = RSAVP1(pk, s)
 *   4. if m != m': raise "signing failure"
 *   5. blind_sig = int_to_bytes(s, modulus_len)
 */
export function blindSign(privateKey: KeyObject, publicKey: KeyObject, modulus: Uint8Array, blindedMsg: Uint8Array): Uint8Array {
  const kLen = modulus.length;
  if (blindedMsg.length !== kLen) {
    throw new ProtocolError("ISSUER_ERR_REQUEST", `blinded_msg must be ${kLen} bytes`);
  }
  const m = Buffer.from(blindedMsg.buffer, blindedMsg.byteOffset, blindedMsg.byteLength);
  // Both are kLen-byte big-endian numbers, so byte order is numeric order.
  if (Buffer.compare(m, modulus) >= 0) {
    throw new ProtocolError("ISSUER_ERR_REQUEST", "blinded_msg is not less than the modulus");
  }
  let s: Buffer;
  let check: Buffer;
  try {
    s = privateDecrypt({ key: privateKey, padding: constants.RSA_NO_PADDING }, m);
    check = publicEncrypt({ key: publicKey, padding: constants.RSA_NO_PADDING }, s);
  } catch (e) {
    throw new ProtocolError("INTERNAL_ERR", "RSA private operation failed", { cause: e });
  }
  if (s.length !== kLen || check.length !== kLen || !timingSafeEqual(check, m)) {
    throw new ProtocolError("INTERNAL_ERR", "blind signature failed its RSAVP1 check");
  }
  return new Uint8Array(s.buffer, s.byteOffset, s.byteLength);
}

/** A type 1 (P-384) or type 5 (ristretto255) signer from SerializeScalar(skS). */
export function createVoprfSigner(skS: Uint8Array, tokenType: AmortizedTokenType = TOKEN_TYPE.VOPRF_P384): VoprfSigner {
  const secret = new Uint8Array(skS);
  const made = withOprfSuite(tokenType, (suite): VoprfSigner => {
    let tokenKey: Uint8Array;
    try {
      tokenKey = publicKey(suite, secret);
    } catch (e) {
      throw new ProtocolError("CFG_ERR_KEY_FILE", `type ${tokenType} key is not a valid ${suite.id} scalar`, { cause: e });
    }
    return {
      tokenType,
      tokenKey,
      tokenKeyId: tokenKeyId(tokenKey),
      evaluateBatch(blindedMsgs) {
        try {
          return blindEvaluateBatch(suite, secret, tokenKey, blindedMsgs);
        } catch (e) {
          // RFC 9578 §5.2, and the amortized batch: "If DeserializeElement fails, the Issuer MUST
          // return ... 422".
          if (e instanceof ProtocolError && e.code === "PP_ERR_FORMAT") throw new ProtocolError("ISSUER_ERR_REQUEST", e.message, { cause: e });
          throw e;
        }
      },
    };
  });
  if (made === undefined) throw new ProtocolError("CFG_ERR_KEY_FILE", `token type ${tokenType} is not privately verifiable`);
  return made;
}

/** Signs a decoded TokenRequest with `signer` (type and key already matched) -> TokenResponse. */
export function signTokenRequest(signer: Signer, req: TokenRequest): Uint8Array {
  if (req.tokenType !== signer.tokenType) throw new ProtocolError("ISSUER_ERR_TOKEN_TYPE");
  if (signer.tokenType === TOKEN_TYPE.BLIND_RSA_2048) {
    return encodeTokenResponse({ tokenType: TOKEN_TYPE.BLIND_RSA_2048, blindSig: signer.sign(req.blindedMsg) });
  }
  const { evaluatedElements, proof } = signer.evaluateBatch([req.blindedMsg]);
  return encodeTokenResponse({ tokenType: signer.tokenType, evaluateMsg: evaluatedElements[0]!, evaluateProof: proof });
}

/** Evaluates an amortized batch with `signer` (type and key already matched) -> its encoded response. */
export function signAmortizedBatch(signer: VoprfSigner, req: AmortizedBatchTokenRequest): Uint8Array {
  if (req.tokenType !== signer.tokenType) throw new ProtocolError("ISSUER_ERR_TOKEN_TYPE");
  const { evaluatedElements, proof } = signer.evaluateBatch(req.blindedMsgs);
  return encodeAmortizedBatchTokenResponse(signer.tokenType, { evaluatedMsgs: evaluatedElements, evaluatedProof: proof });
}

