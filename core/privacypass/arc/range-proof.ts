// The range proof of ARC presentations (draft-ietf-privacypass-arc-crypto-01 §5.4, "Range Proof for
// Arbitrary Values"): proves that the nonce committed in nonceCommit = nonce*G + nonceBlinding*H
// lies in [0, presentationLimit), by committing to a decomposition of the nonce over `bases`:
//
//   D[i] = b[i]*G + s[i]*H                 with b[i] in {0,1}, proven by the two equations
//   D[i] = b[i]*G + s[i]*H  and  D[i] = b[i]*D[i] + s2[i]*H      (s2[i] = (1 - b[i]) * s[i])
//   nonceCommit = sum(bases[i] * D[i])      checked by the verifier outside the proof
//
// As in the reference implementation, when there is one base (presentationLimit = 2) D[0] is
// nonceCommit itself and the relation reuses nonceCommit's element instead of allocating another
// (an instance's elements must be distinct); this changes the instance label, so it is part of the
// wire behaviour.

import { ProtocolError } from "../../errors.js";
import { generatorG, generatorH, mod, Point, type ScalarRng } from "./group.js";
import type { LinearRelation } from "./sigma.js";

/** The largest presentation limit Veil accepts (the token's presentation_nonce is a uint32). */
export const MAX_PRESENTATION_LIMIT = 0xffffffff;

/** ComputeBases(presentationLimit): bases in descending order that cover [0, presentationLimit). */
export function computeBases(presentationLimit: number): bigint[] {
  if (!Number.isInteger(presentationLimit) || presentationLimit < 2 || presentationLimit > MAX_PRESENTATION_LIMIT) {
    throw new ProtocolError("PP_ERR_FORMAT", "presentation limit must be an integer in 2..2^32-1");
  }
  // k = ceil(log2(presentationLimit)) = the bit length of presentationLimit - 1, in integers.
  const k = (presentationLimit - 1).toString(2).length;
  let remainder = BigInt(presentationLimit);
  const bases: bigint[] = [];
  for (let i = 0; i < k - 1; i++) {
    const base = 1n << BigInt(i);
    remainder -= base;
    bases.push(base);
  }
  bases.push(remainder - 1n);
  return bases.sort((a, b) => (a > b ? -1 : a < b ? 1 : 0));
}

/** Number of bit commitments D in a presentation proof for this limit. */
export function rangeBits(presentationLimit: number): number {
  return computeBases(presentationLimit).length;
}

/** K*G for the constant K = 2^128, so that small secret multiples of G never pass zero to `multiply`. */
const OFFSET = 1n << 128n;
const OFFSET_G = generatorG.multiply(OFFSET);

/**
 * The Pedersen commitment x*G + s*H for a secret x that may be zero (a nonce or a bit), in constant
 * time: (x + K)*G - K*G never multiplies by zero and never branches on x.
 */
export function commit(x: bigint, s: bigint): Point {
  return generatorG.multiply(mod(x + OFFSET)).subtract(OFFSET_G).add(generatorH.multiply(s));
}

export interface RangeProofProver {
  readonly D: Point[];
  /** b[0..n), s[0..n), s2[0..n): the witness for the scalars the helper allocated. */
  readonly witness: bigint[];
}

interface RangeVars {
  genG: number;
  genH: number;
  nonceCommit: number;
}

function appendRangeEquations(relation: LinearRelation, D: readonly Point[], nonceCommit: Point, vars: RangeVars, encodings?: readonly Uint8Array[]): void {
  const n = D.length;
  const varsB = relation.allocateScalars(n);
  const varsS = relation.allocateScalars(n);
  const varsS2 = relation.allocateScalars(n);
  let varsD: number[];
  if (n === 1 && D[0]!.equals(nonceCommit)) {
    varsD = [vars.nonceCommit];
  } else {
    varsD = relation.allocateElements(n);
    for (let i = 0; i < n; i++) relation.setElement(varsD[i]!, D[i]!, encodings?.[i]);
  }
  for (let i = 0; i < n; i++) {
    relation.appendEquation(varsD[i]!, [
      [varsB[i]!, vars.genG],
      [varsS[i]!, vars.genH],
    ]);
    relation.appendEquation(varsD[i]!, [
      [varsB[i]!, varsD[i]!],
      [varsS2[i]!, vars.genH],
    ]);
  }
}

/** MakeRangeProofHelper: adds the range equations for a secret nonce and returns D and the witness. */
export function makeRangeProof(
  relation: LinearRelation,
  nonce: bigint,
  nonceBlinding: bigint,
  nonceCommit: Point,
  presentationLimit: number,
  vars: RangeVars,
  rng: ScalarRng,
): RangeProofProver {
  const bases = computeBases(presentationLimit);
  // Decomposition without data-dependent branches: each bit is a comparison turned into 0 or 1.
  const b: bigint[] = [];
  let remainder = nonce;
  for (const base of bases) {
    const bit = BigInt(Number(remainder >= base));
    remainder -= bit * base;
    b.push(bit);
  }
  const s: bigint[] = [];
  let partialSum = 0n;
  for (let i = 0; i < bases.length - 1; i++) {
    const si = rng.randomScalar();
    s.push(si);
    partialSum = mod(partialSum + bases[i]! * si);
  }
  // The last blinding is chosen so that the bit commitments sum to nonceCommit.
  const last = bases[bases.length - 1]!;
  s.push(mod(Point.Fn.inv(last) * (nonceBlinding - partialSum)));
  const s2 = b.map((bi, i) => mod((1n - bi) * s[i]!));
  const D = b.map((bi, i) => commit(bi, s[i]!));
  appendRangeEquations(relation, D, nonceCommit, vars);
  return { D, witness: [...b, ...s, ...s2] };
}

/**
 * VerifyRangeProofHelper: adds the range equations for the bit commitments D and returns whether
 * sum(bases[i] * D[i]) == nonceCommit. `encodings` are D's serializations, when known.
 */
export function verifyRangeProof(
  relation: LinearRelation,
  D: readonly Point[],
  nonceCommit: Point,
  presentationLimit: number,
  vars: RangeVars,
  encodings?: readonly Uint8Array[],
): boolean {
  const bases = computeBases(presentationLimit);
  if (D.length !== bases.length) return false;
  appendRangeEquations(relation, D, nonceCommit, vars, encodings);
  let sum = Point.ZERO;
  for (let i = 0; i < bases.length; i++) sum = sum.add(D[i]!.multiplyUnsafe(bases[i]!));
  return sum.equals(nonceCommit);
}
