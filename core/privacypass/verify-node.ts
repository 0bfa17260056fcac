// Token verification on Node (RFC 9578 §5.4 type 1 and, alike, type 5; §6.4 type 2) with
// node:crypto primitives where Node has them.
// Node-only: the gate and the issuer use it; browsers never need to verify tokens.
//
// Type 2: RSASSA-PSS-VERIFY(pkI, AuthenticatorInput, authenticator), SHA-384, MGF1-SHA-384,
//   saltLength 48, with the public key imported once as a KeyObject (about 30 µs a verify).
// Type 1: Evaluate(skI, AuthenticatorInput) == authenticator, exactly as RFC 9578 §5.4 says:
//   the authenticator must be Finalize over the canonical SerializeElement of skI * P, with
//   P = HashToGroup(input), and nothing else. The expensive part is skI * P: OpenSSL's P-384 ECDH
//   does it several times faster than JS, but gives only the x coordinate, and the compressed
//   encoding also carries the parity of y (0x02 even, 0x03 odd). So both candidate encodings are
//   finalized and compared in constant time (a forged token matches neither, at no extra cost);
//   when one matches, the parity of the real skI * P is worked out (canonicalPrefix) and the token
//   is accepted only if it is that one. Without this, anyone holding a valid token could make a
//   second valid token for the same nonce by negating the issued element (the other encoding).

import { createECDH, createPublicKey, constants, verify as rsaVerify, timingSafeEqual, type ECDH, type KeyObject } from "node:crypto";
import { p384 } from "@noble/curves/nist.js";
import { ProtocolError } from "../errors.js";
import { exactCopy } from "../bytes.js";
import { encodeAuthenticatorInput, type Token } from "./token.js";
import { TOKEN_TYPE } from "./token-type.js";
import { rsaSpkiFromRsaPssSpki, tokenKeyId } from "./token-key.js";
import { deserializeElement, deserializeScalar, finalizeHash, hashToGroup, publicKeyFromPrivate } from "./voprf.js";
import { RISTRETTO255_SHA512 } from "./oprf-suite.js";
import { publicKey, verifyAuthenticator } from "./voprf-batch.js";
import { Secret } from "../secret.js";

type Point = ReturnType<typeof deserializeElement>;

/** A type 2 issuer key, imported once. */
export interface BlindRsaVerificationKey {
  readonly tokenType: typeof TOKEN_TYPE.BLIND_RSA_2048;
  /** The RSASSA-PSS SPKI as published in the directory. */
  readonly tokenKey: Uint8Array;
  readonly tokenKeyId: Uint8Array;
  readonly publicKey: KeyObject;
}

/** A type 1 issuer key (private: only its holder can verify). */
export interface VoprfVerificationKey {
  readonly tokenType: typeof TOKEN_TYPE.VOPRF_P384;
  /** SerializeElement(pkI), 49 bytes, as published in the directory. */
  readonly tokenKey: Uint8Array;
  readonly tokenKeyId: Uint8Array;
  /** @internal an ECDH context holding skI */
  readonly ecdh: ECDH;
  /** @internal pkI = skI * G as a point (for the canonical-encoding check). */
  readonly publicPoint: Point;
}

/** A type 5 issuer key (VOPRF ristretto255, private: only its holder can verify). */
export interface VoprfRistrettoVerificationKey {
  readonly tokenType: typeof TOKEN_TYPE.VOPRF_RISTRETTO255;
  /** SerializeElement(pkI), 32 bytes, as published in the directory. */
  readonly tokenKey: Uint8Array;
  readonly tokenKeyId: Uint8Array;
  /** @internal SerializeScalar(skI) */
  readonly skS: Secret<Uint8Array>;
}

export type VerificationKey = BlindRsaVerificationKey | VoprfVerificationKey | VoprfRistrettoVerificationKey;

/**
 * Imports a type 2 token-key (RSASSA-PSS SPKI, RFC 9578 §6.5). Rejects anything but an RSA-2048
 * key with the SHA-384/MGF1-SHA-384/48 parameters (PP_ERR_FORMAT).
 */
export function importBlindRsaTokenKey(tokenKey: Uint8Array): BlindRsaVerificationKey {
  const spki = rsaSpkiFromRsaPssSpki(tokenKey);
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
  } catch (e) {
    throw new ProtocolError("PP_ERR_FORMAT", "token key is not an RSA public key", { cause: e });
  }
  if (publicKey.asymmetricKeyType !== "rsa" || publicKey.asymmetricKeyDetails?.modulusLength !== 2048) {
    throw new ProtocolError("PP_ERR_FORMAT", "token key is not RSA-2048");
  }
  const copy = exactCopy(tokenKey);
  return { tokenType: TOKEN_TYPE.BLIND_RSA_2048, tokenKey: copy, tokenKeyId: tokenKeyId(copy), publicKey };
}

/**
 * Imports a type 5 issuer private key (SerializeScalar(skI), 32 bytes little-endian). Node has
 * no ristretto255: verification is @noble/curves (one hash to the group, one multiplication).
 */
export function importVoprfRistrettoPrivateKey(skS: Uint8Array): VoprfRistrettoVerificationKey {
  const tokenKey = publicKey(RISTRETTO255_SHA512, skS); // range check
  return { tokenType: TOKEN_TYPE.VOPRF_RISTRETTO255, tokenKey, tokenKeyId: tokenKeyId(tokenKey), skS: new Secret(exactCopy(skS)) };
}

/** Imports a type 1 issuer private key (SerializeScalar(skI), 48 bytes). */
export function importVoprfPrivateKey(skS: Uint8Array): VoprfVerificationKey {
  deserializeScalar(skS); // range check
  const ecdh = createECDH("secp384r1");
  ecdh.setPrivateKey(Buffer.from(skS));
  const tokenKey = publicKeyFromPrivate(skS);
  return { tokenType: TOKEN_TYPE.VOPRF_P384, tokenKey, tokenKeyId: tokenKeyId(tokenKey), ecdh, publicPoint: deserializeElement(tokenKey) };
}

/** RSASSA-PSS verify with SHA-384, MGF1-SHA-384, saltLength 48 (RFC 9578 §6.4). */
export function verifyBlindRsaAuthenticator(key: BlindRsaVerificationKey, authInput: Uint8Array, authenticator: Uint8Array): boolean {
  if (authenticator.length !== 256) return false;
  return rsaVerify(
    "sha384",
    authInput,
    { key: key.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 },
    authenticator,
  );
}

const PREFIXES = [0x02, 0x03] as const;

/**
 * Evaluate(skI, authInput) == authenticator, with OpenSSL ECDH for skI * HashToGroup(input).
 * True only for the authenticator of the canonical encoding of skI * P (RFC 9497 SerializeElement),
 * so every issued token has exactly one valid authenticator.
 */
export function verifyVoprfAuthenticator(key: VoprfVerificationKey, authInput: Uint8Array, authenticator: Uint8Array): boolean {
  if (authenticator.length !== 48) return false;
  const P = hashToGroup(authInput);
  const x = key.ecdh.computeSecret(P.toBytes(false));
  const issued = new Uint8Array(49);
  issued.set(x, 1);
  const expected = Buffer.from(authenticator.buffer, authenticator.byteOffset, authenticator.byteLength);
  let matched: number | undefined;
  for (const prefix of PREFIXES) {
    issued[0] = prefix;
    if (timingSafeEqual(finalizeHash(authInput, issued), expected)) matched = prefix;
  }
  return matched !== undefined && matched === canonicalPrefix(key, P, issued);
}

/**
 * The SEC1 prefix (0x02 even y, 0x03 odd y) of Q = skI * P, knowing only its x coordinate (in
 * `issued`, after the prefix byte): of the two points with that x, Q and -Q, Q is the one with
 * Q + pkI = skI * (P + G), whose x one more ECDH gives. Costs one ECDH and one point
 * decompression, paid only by tokens whose authenticator already matched.
 */
function canonicalPrefix(key: VoprfVerificationKey, P: Point, issued: Uint8Array): number {
  const PG = P.add(p384.Point.BASE);
  // P = -G would need HashToGroup to hit -G: never, but then no token is accepted.
  if (PG.is0()) return -1;
  const xSum = key.ecdh.computeSecret(PG.toBytes(false));
  issued[0] = 0x02;
  const even = deserializeElement(issued);
  const sum = even.add(key.publicPoint);
  if (sum.is0()) return -1;
  return timingSafeEqual(sum.toBytes(false).subarray(1, 49), xSum) ? 0x02 : 0x03;
}

/**
 * Verifies a decoded token against one issuer key: type and full token key id must match, then
 * the authenticator. Returns false for any mismatch; never throws for bad tokens.
 */
export function verifyToken(token: Token, key: VerificationKey): boolean {
  if (token.tokenType !== key.tokenType) return false;
  if (token.nonce.length !== 32 || token.challengeDigest.length !== 32) return false;
  if (token.tokenKeyId.length !== 32 || !timingSafeEqual(token.tokenKeyId, key.tokenKeyId)) return false;
  const input = encodeAuthenticatorInput(token);
  switch (key.tokenType) {
    case TOKEN_TYPE.BLIND_RSA_2048:
      return verifyBlindRsaAuthenticator(key, input, token.authenticator);
    case TOKEN_TYPE.VOPRF_P384:
      return verifyVoprfAuthenticator(key, input, token.authenticator);
    default:
      return verifyAuthenticator(RISTRETTO255_SHA512, key.skS.reveal(), input, token.authenticator);
  }
}
