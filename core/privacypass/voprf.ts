// The P-384 group of VOPRF(P-384, SHA-384) as Privacy Pass token type 1 uses it (RFC 9578 §5,
// RFC 9497 §3, §4.3): encodings, hashing to the group and to scalars, key derivation, Evaluate.
// The protocol (Blind, BlindEvaluate with its proof, VerifyProof, Finalize) is written once for
// both suites in ./voprf-batch.ts. Pure @noble/curves, so it runs in browsers too; verify-node.ts
// has the fast Node path for verification (node:crypto ECDH for the scalar multiplication).
//
//   contextString = "OPRFV1-" || I2OSP(modeVOPRF = 0x01, 1) || "-" || "P384-SHA384"
//   HashToGroup:  hash_to_curve P384_XMD:SHA-384_SSWU_RO_, DST = "HashToGroup-" || contextString
//   HashToScalar: hash_to_field (L = 72) mod the group order, DST = "HashToScalar-" || contextString
//   Elements are compressed SEC1 points (Ne = 49); scalars are big-endian (Ns = 48).

import { p384, p384_hasher } from "@noble/curves/nist.js";
import { bytesToNumberBE, numberToBytesBE } from "@noble/curves/utils.js";
import { sha384 } from "@noble/hashes/sha2.js";
import { concatBytes, equalBytes } from "../bytes.js";
import { ProtocolError } from "../errors.js";

export const Ne = 49;
export const Ns = 48;
export const Nh = 48;

type Point = ReturnType<typeof p384.Point.fromHex>;
const Point = p384.Point;
const ORDER: bigint = Point.Fn.ORDER;
const te = new TextEncoder();

/** "OPRFV1-" || 0x01 || "-P384-SHA384" (RFC 9497 §3.1, mode VOPRF). */
export const CONTEXT_STRING: Uint8Array = concatBytes(te.encode("OPRFV1-"), Uint8Array.of(0x01), te.encode("-P384-SHA384"));
export const HASH_TO_GROUP_DST: Uint8Array = concatBytes(te.encode("HashToGroup-"), CONTEXT_STRING);
const HASH_TO_SCALAR_DST = concatBytes(te.encode("HashToScalar-"), CONTEXT_STRING);
const DERIVE_KEY_PAIR_DST = concatBytes(te.encode("DeriveKeyPair"), CONTEXT_STRING);
const FINALIZE = te.encode("Finalize");

function i2osp2(n: number): Uint8Array {
  return Uint8Array.of((n >> 8) & 0xff, n & 0xff);
}

/** I2OSP(len(x), 2) || x */
function lp(x: Uint8Array): Uint8Array {
  return concatBytes(i2osp2(x.length), x);
}

export function hashToGroup(input: Uint8Array): Point {
  const h = p384_hasher.hashToCurve(input, { DST: HASH_TO_GROUP_DST });
  // The hasher builds p384.Point instances (typed as its narrower H2CPoint): no conversion needed.
  const P = h instanceof Point ? h : Point.fromAffine(h.toAffine());
  if (P.is0()) throw new ProtocolError("PP_ERR_FORMAT", "input hashes to the identity");
  return P;
}

export function hashToScalar(input: Uint8Array, dst: Uint8Array = HASH_TO_SCALAR_DST): bigint {
  return p384_hasher.hashToScalar(input, { DST: dst });
}

export function serializeElement(P: Point): Uint8Array {
  return P.toBytes(true);
}

/** RFC 9497 §2.1 DeserializeElement: a compressed point on the curve, not the identity. */
export function deserializeElement(b: Uint8Array): Point {
  if (b.length !== Ne || (b[0] !== 0x02 && b[0] !== 0x03)) {
    throw new ProtocolError("PP_ERR_FORMAT", "element must be a 49-byte compressed P-384 point");
  }
  let P: Point;
  try {
    P = Point.fromBytes(b);
  } catch (e) {
    throw new ProtocolError("PP_ERR_FORMAT", "element is not a P-384 point", { cause: e });
  }
  if (P.is0()) throw new ProtocolError("PP_ERR_FORMAT", "element is the identity");
  return P;
}

export function serializeScalar(s: bigint): Uint8Array {
  return numberToBytesBE(s, Ns);
}

/** RFC 9497 §2.1 DeserializeScalar: 48 bytes, 0 < s < order (a zero key is useless). */
export function deserializeScalar(b: Uint8Array): bigint {
  if (b.length !== Ns) throw new ProtocolError("PP_ERR_FORMAT", "scalar must be 48 bytes");
  const s = bytesToNumberBE(b);
  if (s === 0n || s >= ORDER) throw new ProtocolError("PP_ERR_FORMAT", "scalar out of range");
  return s;
}

/** The issuer's public key pkS = skS * G, serialized (the type 1 token-key). */
export function publicKeyFromPrivate(skS: Uint8Array): Uint8Array {
  return serializeElement(Point.BASE.multiply(deserializeScalar(skS)));
}

/**
 * RFC 9497 §3.2.1 DeriveKeyPair(seed, info). RFC 9578 §5.5 RECOMMENDS info = "PrivacyPass".
 * Returns the serialized private scalar and public element.
 */
export function deriveKeyPair(seed: Uint8Array, info: Uint8Array = te.encode("PrivacyPass")): { skS: Uint8Array; pkS: Uint8Array } {
  const deriveInput = concatBytes(seed, lp(info));
  for (let counter = 0; counter <= 255; counter++) {
    const skS = hashToScalar(concatBytes(deriveInput, Uint8Array.of(counter)), DERIVE_KEY_PAIR_DST);
    if (skS !== 0n) {
      return { skS: serializeScalar(skS), pkS: serializeElement(Point.BASE.multiply(skS)) };
    }
  }
  throw new ProtocolError("INTERNAL_ERR", "DeriveKeyPair failed");
}

/** RFC 9497 §3.3.1 Finalize / §3.3.2 Evaluate: Hash(lp(input) || lp(issuedElement) || "Finalize"). */
export function finalizeHash(input: Uint8Array, issuedElement: Uint8Array): Uint8Array {
  return sha384(concatBytes(lp(input), lp(issuedElement), FINALIZE));
}

/** RFC 9497 §3.3.2 Evaluate(skS, input): the PRF output (Nh = 48 bytes). Pure JS. */
export function evaluate(skS: Uint8Array, input: Uint8Array): Uint8Array {
  const k = deserializeScalar(skS);
  return finalizeHash(input, serializeElement(hashToGroup(input).multiply(k)));
}

/** Type 1 verification (RFC 9578 §5.4) in pure JS: Evaluate(skS, authInput) == authenticator. */
export function verifyVoprfAuthenticator(skS: Uint8Array, authInput: Uint8Array, authenticator: Uint8Array): boolean {
  return equalBytes(evaluate(skS, authInput), authenticator);
}
