// The issuer's signing operations (RFC 9578 §5.2 type 1, §6.2 type 2).
//
// Type 2 is RFC 9474 BlindSign done with OpenSSL: RSASP1 is `privateDecrypt` with RSA_NO_PADDING
// (CRT, about 0.4 ms) instead of blindrsa-ts's non-CRT big-number `powermod` (about 390 ms). The
// RFC 9474 §4.3 checks are kept: the blinded message must be < n (else 422), and the signature is
// checked with RSAVP1 (s^e mod n == m, `publicEncrypt` with RSA_NO_PADDING) before it is returned,
// so a fault in the private operation can never leak the key.
// Type 1 is RFC 9497 BlindEvaluate with a DLEQ proof (core/privacypass/voprf.ts, @noble/curves).

import { constants, createPublicKey, privateDecrypt, publicEncrypt, timingSafeEqual, type KeyObject } from "node:crypto";
import { ProtocolError } from "../core/errors.js";
import { TOKEN_TYPE } from "../core/privacypass/token-type.js";
import { rsaPssSpkiFromRsaSpki, tokenKeyId } from "../core/privacypass/token-key.js";
import { blindEvaluate, deserializeElement, deserializeScalar, publicKeyFromPrivate } from "../core/privacypass/voprf.js";
import { encodeTokenResponse, type TokenRequest } from "../core/privacypass/issuance.js";

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
  readonly tokenType: typeof TOKEN_TYPE.VOPRF_P384;
  /** SerializeElement(pkS), published as `token-key`. */
  readonly tokenKey: Uint8Array;
  readonly tokenKeyId: Uint8Array;
  /** RFC 9497 BlindEvaluate + GenerateProof for one blinded element. */
  evaluate(blindedMsg: Uint8Array): { evaluatedElement: Uint8Array; proof: Uint8Array };
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

/** A type 1 signer from SerializeScalar(skS). */
export function createVoprfSigner(skS: Uint8Array): VoprfSigner {
  try {
    deserializeScalar(skS);
  } catch (e) {
    throw new ProtocolError("CFG_ERR_KEY_FILE", "type 1 key is not a valid P-384 scalar", { cause: e });
  }
  const secret = new Uint8Array(skS);
  const tokenKey = publicKeyFromPrivate(secret);
  return {
    tokenType: TOKEN_TYPE.VOPRF_P384,
    tokenKey,
    tokenKeyId: tokenKeyId(tokenKey),
    evaluate(blindedMsg) {
      try {
        deserializeElement(blindedMsg);
      } catch (e) {
        // RFC 9578 §5.2: "If DeserializeElement fails, the Issuer MUST return ... 422".
        throw new ProtocolError("ISSUER_ERR_REQUEST", "blinded_msg is not a valid P-384 element", { cause: e });
      }
      return blindEvaluate(secret, blindedMsg, { pkS: tokenKey });
    },
  };
}

/** Signs a decoded TokenRequest with `signer` (type and key already matched) -> TokenResponse. */
export function signTokenRequest(signer: Signer, req: TokenRequest): Uint8Array {
  if (req.tokenType !== signer.tokenType) throw new ProtocolError("ISSUER_ERR_TOKEN_TYPE");
  if (signer.tokenType === TOKEN_TYPE.BLIND_RSA_2048) {
    return encodeTokenResponse({ tokenType: TOKEN_TYPE.BLIND_RSA_2048, blindSig: signer.sign(req.blindedMsg) });
  }
  const { evaluatedElement, proof } = signer.evaluate(req.blindedMsg);
  return encodeTokenResponse({ tokenType: TOKEN_TYPE.VOPRF_P384, evaluateMsg: evaluatedElement, evaluateProof: proof });
}

