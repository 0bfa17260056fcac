// VOPRF(P-384, SHA-384) as Privacy Pass token type 1 uses it (RFC 9578 §5, RFC 9497 §3, §4.3).
// Pure @noble/curves, so it runs in browsers too; verify-node.ts has the fast Node path for
// verification (node:crypto ECDH for the scalar multiplication).
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
const SEED_DST = concatBytes(te.encode("Seed-"), CONTEXT_STRING);
const FINALIZE = te.encode("Finalize");
const COMPOSITE = te.encode("Composite");
const CHALLENGE = te.encode("Challenge");

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
  const P = h instanceof Point ? (h as unknown as Point) : Point.fromAffine(h.toAffine());
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

/** A uniformly random non-zero scalar (72 random bytes reduced mod the order: bias < 2^-190). */
export function randomScalar(random: (n: number) => Uint8Array = defaultRandom): bigint {
  for (;;) {
    const s = bytesToNumberBE(random(72)) % ORDER;
    if (s !== 0n) return s;
  }
}

function defaultRandom(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
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

export interface BlindEvaluation {
  /** evaluate_msg: SerializeElement(skS * blindedElement), Ne bytes. */
  evaluatedElement: Uint8Array;
  /** evaluate_proof: SerializeScalar(c) || SerializeScalar(s), 2*Ns bytes. */
  proof: Uint8Array;
}

/**
 * RFC 9497 §3.3.2 BlindEvaluate in VOPRF mode with one element, and GenerateProof (§2.2.1) with
 * ComputeCompositesFast:
 *
 *   evaluatedElement = k * C                         (C: the blinded element, B = pkS = k*G)
 *   seed = Hash(lp(Bm) || lp("Seed-" || contextString))
 *   d = HashToScalar(lp(seed) || I2OSP(0, 2) || lp(Cm) || lp(Dm) || "Composite")
 *   M = d * C; Z = k * M; t2 = r * G; t3 = r * M
 *   c = HashToScalar(lp(Bm) || lp(M) || lp(Z) || lp(t2) || lp(t3) || "Challenge"); s = r - c*k
 *
 * Every multiple of C is computed from one window table of C (cheaper than four separate
 * multiplications): Z = (k*d)*C and t3 = (r*d)*C. `r` is injectable for tests only.
 */
export function blindEvaluate(skS: Uint8Array, blindedElement: Uint8Array, opts: { r?: bigint; pkS?: Uint8Array } = {}): BlindEvaluation {
  const k = deserializeScalar(skS);
  const C = deserializeElement(blindedElement);
  const r = opts.r ?? randomScalar();
  const Bm = opts.pkS ?? serializeElement(Point.BASE.multiply(k));
  C.precompute(3, false);
  const D = C.multiply(k);
  const Cm = blindedElement;
  const Dm = serializeElement(D);
  const seed = sha384(concatBytes(lp(Bm), lp(SEED_DST)));
  const d = hashToScalar(concatBytes(lp(seed), i2osp2(0), lp(Cm), lp(Dm), COMPOSITE));
  const M = C.multiply(d);
  const Z = C.multiply((k * d) % ORDER);
  const t2 = Point.BASE.multiply(r);
  const t3 = C.multiply((r * d) % ORDER);
  const c = hashToScalar(
    concatBytes(lp(Bm), lp(serializeElement(M)), lp(serializeElement(Z)), lp(serializeElement(t2)), lp(serializeElement(t3)), CHALLENGE),
  );
  const s = (((r - c * k) % ORDER) + ORDER) % ORDER;
  return { evaluatedElement: Dm, proof: concatBytes(serializeScalar(c), serializeScalar(s)) };
}

/** RFC 9497 §2.2.1 ComputeCompositesFast's client side (one element): M = d*C, Z = d*D. */
function compositeScalar(Bm: Uint8Array, Cm: Uint8Array, Dm: Uint8Array): bigint {
  const seed = sha384(concatBytes(lp(Bm), lp(SEED_DST)));
  return hashToScalar(concatBytes(lp(seed), i2osp2(0), lp(Cm), lp(Dm), COMPOSITE));
}

export interface BlindedInput {
  /** The blind scalar, kept by the client until Finalize. */
  blind: bigint;
  /** blindedElement = blind * HashToGroup(input), serialized (Ne bytes): the TokenRequest's blinded_msg. */
  blindedElement: Uint8Array;
}

/**
 * RFC 9497 §3.3.2 Blind (VOPRF mode): blind = RandomScalar(), blindedElement = blind *
 * HashToGroup(input). `random` is injectable for tests (72 bytes per draw, see randomScalar).
 */
export function blindInput(input: Uint8Array, random?: (n: number) => Uint8Array): BlindedInput {
  const blind = randomScalar(random);
  return { blind, blindedElement: serializeElement(hashToGroup(input).multiply(blind)) };
}

/**
 * RFC 9497 §2.2.2 VerifyProof for one element (A = G, B = pkS, C = blindedElement, D =
 * evaluatedElement), with ComputeComposites:
 *
 *   d = HashToScalar(lp(seed) || I2OSP(0, 2) || lp(Cm) || lp(Dm) || "Composite"); M = d*C; Z = d*D
 *   t2 = s*G + c*B; t3 = s*M + c*Z
 *   valid iff c == HashToScalar(lp(Bm) || lp(M) || lp(Z) || lp(t2) || lp(t3) || "Challenge")
 *
 * Throws PP_ERR_FORMAT for elements or scalars that do not deserialize.
 */
export function verifyProof(pkS: Uint8Array, blindedElement: Uint8Array, evaluatedElement: Uint8Array, proof: Uint8Array): boolean {
  if (proof.length !== 2 * Ns) throw new ProtocolError("PP_ERR_FORMAT", "proof must be 96 bytes");
  const B = deserializeElement(pkS);
  const C = deserializeElement(blindedElement);
  const D = deserializeElement(evaluatedElement);
  // c and s are scalars in [0, order); zero is a valid (if unlikely) value, so no deserializeScalar.
  const c = bytesToNumberBE(proof.subarray(0, Ns));
  const s = bytesToNumberBE(proof.subarray(Ns));
  if (c >= ORDER || s >= ORDER) throw new ProtocolError("PP_ERR_FORMAT", "proof scalar out of range");
  const d = compositeScalar(pkS, blindedElement, evaluatedElement);
  const M = C.multiply(d);
  const Z = D.multiply(d);
  const t2 = mulAdd(Point.BASE, s, B, c);
  const t3 = mulAdd(M, s, Z, c);
  const expected = hashToScalar(
    concatBytes(lp(pkS), lp(serializeElement(M)), lp(serializeElement(Z)), lp(serializeElement(t2)), lp(serializeElement(t3)), CHALLENGE),
  );
  return expected === c;
}

/** s*P + c*Q, where either scalar may be zero (noble's multiply refuses 0). */
function mulAdd(P: Point, s: bigint, Q: Point, c: bigint): Point {
  const a = s === 0n ? Point.ZERO : P.multiply(s);
  const b = c === 0n ? Point.ZERO : Q.multiply(c);
  return a.add(b);
}

/**
 * RFC 9497 §3.3.2 Finalize (VOPRF mode): verifies the issuer's proof, then unblinds:
 * N = blind^-1 * evaluatedElement; output = Hash(lp(input) || lp(N) || "Finalize").
 * Throws PP_ERR_TOKEN_SIGNATURE when the proof does not verify, PP_ERR_FORMAT for bad encodings.
 */
export function finalizeOutput(
  input: Uint8Array,
  blinded: BlindedInput,
  evaluatedElement: Uint8Array,
  proof: Uint8Array,
  pkS: Uint8Array,
): Uint8Array {
  if (!verifyProof(pkS, blinded.blindedElement, evaluatedElement, proof)) {
    throw new ProtocolError("PP_ERR_TOKEN_SIGNATURE", "VOPRF proof does not verify");
  }
  const N = deserializeElement(evaluatedElement).multiply(Point.Fn.inv(blinded.blind));
  return finalizeHash(input, serializeElement(N));
}
