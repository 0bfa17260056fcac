// RFC 9497 VOPRF for any of the suites in ./oprf-suite.ts, with one DLEQ proof for a whole batch
// of elements: what the amortized batch of draft-ietf-privacypass-batched-tokens calls
// BlindEvaluateBatch and FinalizeBatch, and, with a batch of one, RFC 9578 §5 single issuance.
//
// RFC 9497 §2.2.1 (proof for k with B = k*A, D[i] = k*C[i], here A = G and B = pkS):
//
//   seed = Hash(lp(Bm) || lp("Seed-" || contextString))
//   d[i] = HashToScalar(lp(seed) || I2OSP(i, 2) || lp(Cm[i]) || lp(Dm[i]) || "Composite")
//   M = sum d[i] * C[i];  Z = k * M          (ComputeCompositesFast; a verifier: Z = sum d[i] * D[i])
//   t2 = r * G;  t3 = r * M
//   c = HashToScalar(lp(Bm) || lp(M) || lp(Z) || lp(t2) || lp(t3) || "Challenge");  s = r - c * k
//
//   VerifyProof: t2 = s*G + c*B, t3 = s*M + c*Z, and c must come out again.
//
// The composite M is a multi-scalar multiplication (Pippenger) of public scalars, so the per-token
// cost of a batch approaches one secret scalar multiplication (k * C[i]) plus two hashes.

import { invert } from "@noble/curves/abstract/modular.js";
import { concatBytes, equalBytes } from "../bytes.js";
import { ProtocolError } from "../errors.js";
import type { OprfPoint, OprfSuite } from "./oprf-suite.js";

const te = new TextEncoder();
const COMPOSITE = te.encode("Composite");
const CHALLENGE = te.encode("Challenge");
const FINALIZE = te.encode("Finalize");

function i2osp2(n: number): Uint8Array {
  return Uint8Array.of((n >> 8) & 0xff, n & 0xff);
}

/** I2OSP(len(x), 2) || x */
function lp(x: Uint8Array): Uint8Array {
  return concatBytes(i2osp2(x.length), x);
}

const dsts = new WeakMap<Uint8Array, { scalar: Uint8Array; seed: Uint8Array; derive: Uint8Array }>();

function dst(suite: { contextString: Uint8Array }): { scalar: Uint8Array; seed: Uint8Array; derive: Uint8Array } {
  let d = dsts.get(suite.contextString);
  if (d === undefined) {
    const ctx = suite.contextString;
    d = {
      scalar: concatBytes(te.encode("HashToScalar-"), ctx),
      seed: concatBytes(te.encode("Seed-"), ctx),
      derive: concatBytes(te.encode("DeriveKeyPair"), ctx),
    };
    dsts.set(ctx, d);
  }
  return d;
}

/**
 * A uniformly random scalar in [1, order): Ns + 24 random bytes (72 for P-384, 56 for
 * ristretto255) read big-endian and reduced modulo the order (bias < 2^-190), redrawn if zero.
 */
export function randomScalar<P extends OprfPoint<P>>(suite: OprfSuite<P>, random: (n: number) => Uint8Array = defaultRandom): bigint {
  for (;;) {
    const bytes = random(suite.Ns + 24);
    let s = 0n;
    for (const b of bytes) s = (s << 8n) | BigInt(b);
    s %= suite.order;
    if (s !== 0n) return s;
  }
}

function defaultRandom(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

/** RFC 9497 §3.2.1 DeriveKeyPair(seed, info); RFC 9578 §5.5 RECOMMENDS info = "PrivacyPass". */
export function deriveKeyPair<P extends OprfPoint<P>>(
  suite: OprfSuite<P>,
  seed: Uint8Array,
  info: Uint8Array = te.encode("PrivacyPass"),
): { skS: Uint8Array; pkS: Uint8Array } {
  const deriveInput = concatBytes(seed, lp(info));
  for (let counter = 0; counter <= 255; counter++) {
    const skS = suite.hashToScalar(concatBytes(deriveInput, Uint8Array.of(counter)), dst(suite).derive);
    if (skS !== 0n) return { skS: suite.serializeScalar(skS), pkS: suite.serializeElement(suite.generator.multiply(skS)) };
  }
  throw new ProtocolError("INTERNAL_ERR", "DeriveKeyPair failed");
}

/** The private key scalar of SerializeScalar(skS): PP_ERR_FORMAT when out of range or zero. */
export function privateScalar<P extends OprfPoint<P>>(suite: OprfSuite<P>, skS: Uint8Array): bigint {
  const k = suite.deserializeScalar(skS);
  if (k === 0n) throw new ProtocolError("PP_ERR_FORMAT", "private key is zero");
  return k;
}

/** SerializeElement(skS * G). */
export function publicKey<P extends OprfPoint<P>>(suite: OprfSuite<P>, skS: Uint8Array): Uint8Array {
  return suite.serializeElement(suite.generator.multiply(privateScalar(suite, skS)));
}

/** d[0..m) of ComputeComposites (public values: anyone can compute them). */
function compositeScalars<P extends OprfPoint<P>>(suite: OprfSuite<P>, Bm: Uint8Array, Cm: readonly Uint8Array[], Dm: readonly Uint8Array[]): bigint[] {
  const seed = suite.hash(concatBytes(lp(Bm), lp(dst(suite).seed)));
  const seedLp = lp(seed);
  return Cm.map((c, i) => suite.hashToScalar(concatBytes(seedLp, i2osp2(i), lp(c), lp(Dm[i]!), COMPOSITE), dst(suite).scalar));
}

function challenge<P extends OprfPoint<P>>(suite: OprfSuite<P>, Bm: Uint8Array, M: P, Z: P, t2: P, t3: P): bigint {
  const s = suite.serializeElement.bind(suite);
  return suite.hashToScalar(concatBytes(lp(Bm), lp(s(M)), lp(s(Z)), lp(s(t2)), lp(s(t3)), CHALLENGE), dst(suite).scalar);
}

export interface BatchEvaluation {
  /** SerializeElement(skS * blindedElements[i]), each Ne bytes. */
  evaluatedElements: Uint8Array[];
  /** SerializeScalar(c) || SerializeScalar(s): 2*Ns bytes. */
  proof: Uint8Array;
}

/**
 * BlindEvaluateBatch(skS, blindedElements) with one proof for all of them. `pkS` is
 * SerializeElement(skS * G) (the token key). Every blinded element must deserialize (RFC 9497
 * §2.1): PP_ERR_FORMAT naming the first that does not. `r` is injectable for tests only.
 */
export function blindEvaluateBatch<P extends OprfPoint<P>>(
  suite: OprfSuite<P>,
  skS: Uint8Array,
  pkS: Uint8Array,
  blindedElements: readonly Uint8Array[],
  opts: { r?: bigint } = {},
): BatchEvaluation {
  if (blindedElements.length === 0) throw new ProtocolError("PP_ERR_FORMAT", "an empty batch");
  const k = privateScalar(suite, skS);
  const C = blindedElements.map((b, i) => {
    try {
      return suite.deserializeElement(b);
    } catch (e) {
      throw new ProtocolError("PP_ERR_FORMAT", `blinded element ${i} is not a ${suite.id} element`, { cause: e });
    }
  });
  const r = opts.r ?? randomScalar(suite);
  const q = suite.order;
  let D: P[];
  let M: P;
  let Z: P;
  let t3: P;
  if (C.length === 1) {
    // One element: every multiple of C comes from one window table of C (cheaper than four
    // separate multiplications): M = d*C, Z = (k*d)*C, t3 = (r*d)*C.
    const C0 = C[0]!.precompute(3, false);
    D = [C0.multiply(k)];
    const Dm = D.map((P) => suite.serializeElement(P));
    const [d] = compositeScalars(suite, pkS, blindedElements, Dm) as [bigint];
    M = C0.multiply(d);
    Z = C0.multiply((k * d) % q);
    t3 = C0.multiply((r * d) % q);
    return finish(suite, k, r, pkS, Dm, M, Z, t3);
  }
  D = C.map((P) => P.multiply(k));
  const Dm = D.map((P) => suite.serializeElement(P));
  M = suite.msm(C, compositeScalars(suite, pkS, blindedElements, Dm)).precompute(3, false);
  Z = M.multiply(k);
  t3 = M.multiply(r);
  return finish(suite, k, r, pkS, Dm, M, Z, t3);
}

function finish<P extends OprfPoint<P>>(suite: OprfSuite<P>, k: bigint, r: bigint, Bm: Uint8Array, Dm: Uint8Array[], M: P, Z: P, t3: P): BatchEvaluation {
  const t2 = suite.generator.multiply(r);
  const c = challenge(suite, Bm, M, Z, t2, t3);
  const q = suite.order;
  const s = (((r - c * k) % q) + q) % q;
  return { evaluatedElements: Dm, proof: concatBytes(suite.serializeScalar(c), suite.serializeScalar(s)) };
}

/**
 * VerifyProof(G, pkS, C, D, proof) for serialized elements. False for any malformed input or a
 * proof that does not verify.
 */
export function verifyBatchProof<P extends OprfPoint<P>>(
  suite: OprfSuite<P>,
  pkS: Uint8Array,
  blindedElements: readonly Uint8Array[],
  evaluatedElements: readonly Uint8Array[],
  proof: Uint8Array,
): boolean {
  if (blindedElements.length === 0 || blindedElements.length !== evaluatedElements.length || proof.length !== 2 * suite.Ns) return false;
  let B: P, C: P[], D: P[], c: bigint, s: bigint;
  try {
    B = suite.deserializeElement(pkS);
    C = blindedElements.map((b) => suite.deserializeElement(b));
    D = evaluatedElements.map((b) => suite.deserializeElement(b));
    c = suite.deserializeScalar(proof.subarray(0, suite.Ns));
    s = suite.deserializeScalar(proof.subarray(suite.Ns));
  } catch {
    return false;
  }
  const d = compositeScalars(suite, pkS, blindedElements, evaluatedElements);
  const M = suite.msm(C, d);
  const Z = suite.msm(D, d);
  // Public scalars (possibly zero): the variable-time multiplication is fine and allows 0.
  const t2 = suite.generator.multiplyUnsafe(s).add(B.multiplyUnsafe(c));
  const t3 = M.multiplyUnsafe(s).add(Z.multiplyUnsafe(c));
  return challenge(suite, pkS, M, Z, t2, t3) === c;
}

export interface BlindedInput {
  /** The blind r (secret until finalization). */
  blind: bigint;
  /** SerializeElement(r * HashToGroup(input)). */
  blindedElement: Uint8Array;
}

/** RFC 9497 §3.3.1 Blind(input). `blind` is injectable for tests only. */
export function blind<P extends OprfPoint<P>>(suite: OprfSuite<P>, input: Uint8Array, blindScalar?: bigint): BlindedInput {
  const r = blindScalar ?? randomScalar(suite);
  return { blind: r, blindedElement: suite.serializeElement(suite.hashToGroup(input).multiply(r)) };
}

/** Hash(lp(input) || lp(element) || "Finalize"): the PRF output. */
export function finalizeHash<P extends OprfPoint<P>>(suite: OprfSuite<P>, input: Uint8Array, element: Uint8Array): Uint8Array {
  return suite.hash(concatBytes(lp(input), lp(element), FINALIZE));
}

/**
 * FinalizeBatch: verifies the batch proof (PP_ERR_TOKEN_SIGNATURE when it fails), then unblinds
 * each evaluated element into its PRF output (Nh bytes each).
 */
export function finalizeBatch<P extends OprfPoint<P>>(
  suite: OprfSuite<P>,
  pkS: Uint8Array,
  inputs: readonly Uint8Array[],
  blinded: readonly BlindedInput[],
  evaluatedElements: readonly Uint8Array[],
  proof: Uint8Array,
): Uint8Array[] {
  if (inputs.length !== blinded.length || inputs.length !== evaluatedElements.length) {
    throw new ProtocolError("PP_ERR_FORMAT", `expected ${inputs.length} evaluated elements, got ${evaluatedElements.length}`);
  }
  const blindedElements = blinded.map((b) => b.blindedElement);
  if (!verifyBatchProof(suite, pkS, blindedElements, evaluatedElements, proof)) {
    throw new ProtocolError("PP_ERR_TOKEN_SIGNATURE", "the issuer's proof does not verify");
  }
  return evaluatedElements.map((e, i) => {
    const N = suite.deserializeElement(e).multiply(invert(blinded[i]!.blind, suite.order));
    return finalizeHash(suite, inputs[i]!, suite.serializeElement(N));
  });
}

/** RFC 9497 §3.3.2 Evaluate(skS, input): the PRF output, for the token's verifier. */
export function evaluate<P extends OprfPoint<P>>(suite: OprfSuite<P>, skS: Uint8Array, input: Uint8Array): Uint8Array {
  const k = privateScalar(suite, skS);
  return finalizeHash(suite, input, suite.serializeElement(suite.hashToGroup(input).multiply(k)));
}

/** Evaluate(skS, input) == authenticator, compared without early exit. */
export function verifyAuthenticator<P extends OprfPoint<P>>(suite: OprfSuite<P>, skS: Uint8Array, input: Uint8Array, authenticator: Uint8Array): boolean {
  return authenticator.length === suite.Nh && equalBytes(evaluate(suite, skS, input), authenticator);
}
