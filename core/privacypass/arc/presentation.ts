// ARC presentation (draft-ietf-privacypass-arc-crypto-01 §4.3 and the proof of §5.3 with the range
// proof of §5.4), suite ARCV1-P256.
//
// A presentation state is the only thing that keeps nonces (and so tags) from repeating: it is
// an object that hands out each nonce once and cannot be copied or rewound (no setter, no
// serialization). Reusing a nonce links two presentations; the gate refuses the second.

import { concatBytes } from "../../bytes.js";
import { ProtocolError } from "../../errors.js";
import {
  Ne,
  Ns,
  Point,
  arcReader,
  defaultScalarRng,
  deserializeElement,
  generatorG,
  generatorH,
  hashToGroup,
  mod,
  readElements,
  scalarInverse,
  sessionId,
  serializeElement,
  type ScalarRng,
} from "./group.js";
import { requestContextScalar, type Credential, type ServerPrivateKey, type ServerPublicKey } from "./credential.js";
import { commit, makeRangeProof, rangeBits, verifyRangeProof } from "./range-proof.js";
import { LinearRelation, prove, verify } from "./sigma.js";

const te = new TextEncoder();
const PRESENTATION_SESSION = sessionId("CredentialPresentation");
const TAG_INFO = te.encode("Tag");

export interface Presentation {
  readonly U: Point;
  readonly UPrimeCommit: Point;
  readonly m1Commit: Point;
  readonly tag: Point;
  readonly nonceCommit: Point;
  /** The bit commitments of the range proof (k of them). */
  readonly D: readonly Point[];
  /** challenge || (5 + 3k) responses. */
  readonly proof: Uint8Array;
}

/** generatorT = HashToGroup(presentationContext, "Tag"). */
export function tagGenerator(presentationContext: Uint8Array): Point {
  return hashToGroup(presentationContext, TAG_INFO);
}

/** Npresentation = 5*Ne + k*Ne + (6 + 3k)*Ns, with k bit commitments for this limit. */
export function presentationLength(presentationLimit: number): number {
  const k = rangeBits(presentationLimit);
  return 5 * Ne + k * Ne + (6 + 3 * k) * Ns;
}

interface PresentationElements {
  readonly U: Point;
  readonly UPrimeCommit: Point;
  readonly m1Commit: Point;
  readonly V: Point;
  readonly X1: Point;
  readonly tag: Point;
  readonly generatorT: Point;
  readonly nonceCommit: Point;
}

/** The presentation equations 1-4 (the range equations are added by range-proof.ts). */
function presentationRelation(v: PresentationElements): { st: LinearRelation; genG: number; genH: number; nonceCommit: number } {
  const st = new LinearRelation();
  const [m1, z, rNeg, nonce, nonceBlinding] = st.allocateScalars(5) as [number, number, number, number, number];
  const [genG, genH, U, , m1Commit, V, X1, tag, genT, nonceCommit] = st.addElements([
    generatorG, generatorH, v.U, v.UPrimeCommit, v.m1Commit, v.V, v.X1, v.tag, v.generatorT, v.nonceCommit,
  ]) as [number, number, number, number, number, number, number, number, number, number];
  // 1. m1Commit = m1 * U + z * generatorH
  st.appendEquation(m1Commit, [[m1, U], [z, genH]]);
  // 2. V = z * X1 - r * generatorG
  st.appendEquation(V, [[z, X1], [rNeg, genG]]);
  // 3. nonceCommit = nonce * generatorG + nonceBlinding * generatorH
  st.appendEquation(nonceCommit, [[nonce, genG], [nonceBlinding, genH]]);
  // 4. generatorT = m1 * tag + nonce * tag
  st.appendEquation(genT, [[m1, tag], [nonce, tag]]);
  return { st, genG, genH, nonceCommit };
}

/**
 * The Present() step for one given nonce. Exported for tests and for building deliberately bad
 * presentations (a repeated or out-of-range nonce); clients use PresentationState.present().
 */
export function makePresentation(
  credential: Credential,
  presentationContext: Uint8Array,
  presentationLimit: number,
  nonce: number,
  rng: ScalarRng = defaultScalarRng,
): Presentation {
  const a = rng.randomScalar();
  const r = rng.randomScalar();
  const z = rng.randomScalar();
  const U = credential.U.multiply(a);
  const UPrime = credential.UPrime.multiply(a);
  const UPrimeCommit = UPrime.add(generatorG.multiply(r));
  const m1Commit = U.multiply(credential.m1).add(generatorH.multiply(z));
  const nonceScalar = BigInt(nonce);
  const nonceBlinding = rng.randomScalar();
  const nonceCommit = commit(nonceScalar, nonceBlinding);
  const generatorT = tagGenerator(presentationContext);
  const tag = generatorT.multiply(scalarInverse(credential.m1 + nonceScalar));
  const V = credential.X1.multiply(z).subtract(generatorG.multiply(r));
  const { st, genG, genH, nonceCommit: nonceCommitVar } = presentationRelation({
    U, UPrimeCommit, m1Commit, V, X1: credential.X1, tag, generatorT, nonceCommit,
  });
  const range = makeRangeProof(st, nonceScalar, nonceBlinding, nonceCommit, presentationLimit, { genG, genH, nonceCommit: nonceCommitVar }, rng);
  const witness = [credential.m1, z, mod(-r), nonceScalar, nonceBlinding, ...range.witness];
  const proof = prove(st, PRESENTATION_SESSION, witness, rng);
  return { U, UPrimeCommit, m1Commit, tag, nonceCommit, D: range.D, proof };
}

/**
 * MakePresentationState / Present. Each present() uses the next nonce; after presentationLimit
 * presentations it throws PP_ERR_LIMIT_EXCEEDED (LimitExceededError) and stays exhausted.
 */
export class PresentationState {
  readonly #credential: Credential;
  readonly #context: Uint8Array;
  readonly #limit: number;
  #nextNonce = 0;

  constructor(credential: Credential, presentationContext: Uint8Array, presentationLimit: number) {
    rangeBits(presentationLimit); // validates the limit
    this.#credential = credential;
    this.#context = presentationContext.slice();
    this.#limit = presentationLimit;
  }

  get presentationLimit(): number {
    return this.#limit;
  }

  /** Presentations this state can still make. */
  get remaining(): number {
    return this.#limit - this.#nextNonce;
  }

  present(rng: ScalarRng = defaultScalarRng): { nonce: number; presentation: Presentation } {
    if (this.#nextNonce >= this.#limit) {
      throw new ProtocolError("PP_ERR_LIMIT_EXCEEDED", "presentation limit reached for this context");
    }
    const nonce = this.#nextNonce;
    // Advanced before the work, so a failure below can never hand the same nonce out again.
    this.#nextNonce += 1;
    return { nonce, presentation: makePresentation(this.#credential, this.#context, this.#limit, nonce, rng) };
  }

  toJSON(): string {
    return "[PresentationState]";
  }
}

/** What the verifier precomputes once per (request context, presentation context). */
export interface PresentationContexts {
  /** m2 = HashToScalar(requestContext, "requestContext"). */
  readonly m2: bigint;
  /** generatorT = HashToGroup(presentationContext, "Tag"). */
  readonly generatorT: Point;
}

export function presentationContexts(requestContext: Uint8Array, presentationContext: Uint8Array): PresentationContexts {
  return { m2: requestContextScalar(requestContext), generatorT: tagGenerator(presentationContext) };
}

/**
 * VerifyPresentation: true when the presentation proof (with its range proof) verifies. The tag
 * is `presentation.tag`; the caller spends it (double-spend check) only after this returns true.
 *
 * V = (x0 + x2*m2)*U + x1*m1Commit - UPrimeCommit uses the private key: constant-time multiplications.
 */
export function verifyPresentation(
  privateKey: ServerPrivateKey,
  publicKey: ServerPublicKey,
  contexts: PresentationContexts,
  presentation: Presentation,
  presentationLimit: number,
): boolean {
  const p = presentation;
  const V = p.U.multiply(mod(privateKey.x0 + privateKey.x2 * contexts.m2))
    .add(p.m1Commit.multiply(privateKey.x1))
    .subtract(p.UPrimeCommit);
  if (V.is0()) return false;
  const { st, genG, genH, nonceCommit } = presentationRelation({
    U: p.U, UPrimeCommit: p.UPrimeCommit, m1Commit: p.m1Commit, V, X1: publicKey.X1, tag: p.tag,
    generatorT: contexts.generatorT, nonceCommit: p.nonceCommit,
  });
  const sumValid = verifyRangeProof(st, p.D, p.nonceCommit, presentationLimit, { genG, genH, nonceCommit });
  return sumValid && verify(st, PRESENTATION_SESSION, p.proof);
}

//   struct { uint8 U[Ne]; uint8 UPrimeCommit[Ne]; uint8 m1Commit[Ne]; uint8 tag[Ne];
//            uint8 nonceCommit[Ne]; PresentationProof presentationProof; } Presentation
//   struct { uint8 D[k][Ne]; uint8 challenge[Ns]; uint8 responses[5 + 3*k][Ns]; } PresentationProof
export function encodePresentation(p: Presentation): Uint8Array {
  const k = p.D.length;
  if (p.proof.length !== (6 + 3 * k) * Ns) throw new ProtocolError("PP_ERR_FORMAT", "presentation proof length does not match D");
  return concatBytes(
    serializeElement(p.U),
    serializeElement(p.UPrimeCommit),
    serializeElement(p.m1Commit),
    serializeElement(p.tag),
    serializeElement(p.nonceCommit),
    ...p.D.map(serializeElement),
    p.proof,
  );
}

/** Decodes a presentation made for `presentationLimit` (which fixes k and so the length). */
export function decodePresentation(b: Uint8Array, presentationLimit: number): Presentation {
  const k = rangeBits(presentationLimit);
  const r = arcReader(b);
  const elements = readElements(r, ["U", "UPrimeCommit", "m1Commit", "tag", "nonceCommit"]);
  const D: Point[] = [];
  for (let i = 0; i < k; i++) D.push(deserializeElement(r.bytes(Ne, `D[${i}]`), `D[${i}]`));
  const proof = r.bytes((6 + 3 * k) * Ns, "presentationProof").slice();
  r.end("Presentation");
  return { ...elements, D, proof };
}
