// The prime-order group of ARC(P-256) (draft-ietf-privacypass-arc-crypto-01 §6.1, "ARC(P-256)").
//
//   contextString = "ARCV1-P256"
//   HashToGroup(x, info):  hash_to_curve P256_XMD:SHA-256_SSWU_RO_, DST = "HashToGroup-" || contextString || info
//   HashToScalar(x, info): hash_to_field (L = 48, expand_message_xmd SHA-256) mod Order(),
//                          DST = "HashToScalar-" || contextString || info
//   generatorG = Generator();  generatorH = HashToGroup(SerializeElement(generatorG), "generatorH")
//   SerializeElement: compressed SEC1 point (Ne = 33); SerializeScalar: big-endian (Ns = 32)
//
// Pure @noble/curves and @noble/hashes, so it runs in browsers too. Scalars are bigints in
// [0, Order()). Multiplications by a secret scalar use noble's constant-time `multiply`; the
// variable-time `multiplyUnsafe` is used only where every scalar is public (see sigma.ts).

import { p256, p256_hasher } from "@noble/curves/nist.js";
import { bytesToNumberBE, numberToBytesBE } from "@noble/curves/utils.js";
import { ByteReader, concatBytes } from "../../bytes.js";
import { ProtocolError } from "../../errors.js";

export type Point = ReturnType<typeof p256.Point.fromHex>;
export const Point = p256.Point;
/** Order() of P-256. */
export const ORDER: bigint = Point.Fn.ORDER;
/** Bytes of a serialized element (compressed point). */
export const Ne = 33;
/** Bytes of a serialized scalar. */
export const Ns = 32;

const te = new TextEncoder();
export const CONTEXT_STRING: Uint8Array = te.encode("ARCV1-P256");
const HASH_TO_GROUP = te.encode("HashToGroup-");

/** The session identifier of a proof: contextString || name ("CredentialRequest", ...). */
export function sessionId(name: string): Uint8Array {
  return concatBytes(CONTEXT_STRING, te.encode(name));
}
const HASH_TO_SCALAR = te.encode("HashToScalar-");

export function hashToGroup(x: Uint8Array, info: Uint8Array): Point {
  const h = p256_hasher.hashToCurve(x, { DST: concatBytes(HASH_TO_GROUP, CONTEXT_STRING, info) });
  // The hasher builds p256.Point instances (typed as its narrower H2CPoint).
  const P = h instanceof Point ? h : Point.fromAffine(h.toAffine());
  if (P.is0()) throw new ProtocolError("PP_ERR_FORMAT", "input hashes to the identity");
  return P;
}

export function hashToScalar(x: Uint8Array, info: Uint8Array): bigint {
  return p256_hasher.hashToScalar(x, { DST: concatBytes(HASH_TO_SCALAR, CONTEXT_STRING, info) });
}

/** generatorG = Generator(). A window table is kept for it (noble precomputes the base point). */
export const generatorG: Point = Point.BASE;
/** generatorH = HashToGroup(SerializeElement(generatorG), "generatorH"), with a window table. */
export const generatorH: Point = hashToGroup(generatorG.toBytes(true), te.encode("generatorH"));
generatorH.precompute(8, false);

export function serializeElement(P: Point): Uint8Array {
  if (P.is0()) throw new ProtocolError("PP_ERR_FORMAT", "the identity has no encoding");
  return P.toBytes(true);
}

/**
 * DeserializeElement: exactly 33 bytes, a compressed SEC1 point with x < p on the curve, never the
 * identity (which has no compressed encoding). Anything else is an InputValidationError.
 */
export function deserializeElement(b: Uint8Array, what = "element"): Point {
  if (b.length !== Ne || (b[0] !== 0x02 && b[0] !== 0x03)) {
    throw new ProtocolError("PP_ERR_FORMAT", `${what} must be a 33-byte compressed P-256 point`);
  }
  let P: Point;
  try {
    P = Point.fromBytes(b);
  } catch (e) {
    throw new ProtocolError("PP_ERR_FORMAT", `${what} is not a P-256 point`, { cause: e });
  }
  if (P.is0()) throw new ProtocolError("PP_ERR_FORMAT", `${what} is the identity`);
  return P;
}

export function serializeScalar(s: bigint): Uint8Array {
  return numberToBytesBE(s, Ns);
}

/**
 * A scalar in a proof (challenge or response): 32 bytes, canonical (< Order()). Zero is a valid
 * response, as in the sigma protocols' Scalar deserialization.
 */
export function deserializeProofScalar(b: Uint8Array, what = "scalar"): bigint {
  if (b.length !== Ns) throw new ProtocolError("PP_ERR_FORMAT", `${what} must be 32 bytes`);
  const s = bytesToNumberBE(b);
  if (s >= ORDER) throw new ProtocolError("PP_ERR_FORMAT", `${what} is not below the group order`);
  return s;
}

/** DeserializeScalar for key material: 32 bytes in [1, Order() - 1]. */
export function deserializeScalar(b: Uint8Array, what = "scalar"): bigint {
  const s = deserializeProofScalar(b, what);
  if (s === 0n) throw new ProtocolError("PP_ERR_FORMAT", `${what} is zero`);
  return s;
}

/** A reader of an ARC wire struct: truncation is PP_ERR_TRUNCATED, bad or leftover bytes PP_ERR_FORMAT. */
export function arcReader(b: Uint8Array): ByteReader {
  return new ByteReader(b, "PP_ERR_TRUNCATED", "PP_ERR_FORMAT");
}

/** Reads consecutive elements (Ne bytes each), one per name, each named in its errors. */
export function readElements<const K extends string>(r: ByteReader, names: readonly K[]): Record<K, Point> {
  const out: Partial<Record<K, Point>> = {};
  for (const name of names) out[name] = deserializeElement(r.bytes(Ne, name), name);
  return out as Record<K, Point>;
}

/** Reads consecutive key scalars (Ns bytes each, DeserializeScalar), one per name. */
export function readScalars<const K extends string>(r: ByteReader, names: readonly K[]): Record<K, bigint> {
  const out: Partial<Record<K, bigint>> = {};
  for (const name of names) out[name] = deserializeScalar(r.bytes(Ns, name), name);
  return out as Record<K, bigint>;
}

export function mod(a: bigint): bigint {
  const r = a % ORDER;
  return r < 0n ? r + ORDER : r;
}

/**
 * ScalarInverse by Fermat (s^(n-2)): the square-and-multiply ladder follows the bits of the public
 * exponent only, so its sequence of operations does not depend on the secret `s` (unlike the
 * extended Euclidean algorithm).
 */
export function scalarInverse(s: bigint): bigint {
  if (mod(s) === 0n) throw new ProtocolError("PP_ERR_FORMAT", "zero has no inverse");
  return Point.Fn.pow(mod(s), ORDER - 2n);
}

/**
 * Where the protocol's randomness comes from. ARC's G.RandomScalar() and the sigma protocol's
 * commitment nonces are separate calls because the reference implementation draws them
 * differently; production code uses `defaultScalarRng` for both.
 */
export interface ScalarRng {
  /** ARC's G.RandomScalar(): a uniformly random scalar in [1, Order() - 1]. */
  randomScalar(): bigint;
  /** The sigma protocol's rng.random_scalar(), for the prover's commitment nonces. */
  proofNonce(): bigint;
}

/**
 * "Random Number Generation Using Extra Random Bits" (arc-crypto §6.2.2): 48 random bytes reduced
 * mod Order() (bias below 2^-128), redrawn in the negligible case of zero.
 */
function uniformNonZeroScalar(): bigint {
  for (;;) {
    const s = bytesToNumberBE(crypto.getRandomValues(new Uint8Array(48))) % ORDER;
    if (s !== 0n) return s;
  }
}

export const defaultScalarRng: ScalarRng = Object.freeze({
  randomScalar: uniformNonZeroScalar,
  proofNonce: uniformNonZeroScalar,
});
