// ARC(P-256) behaviour beyond the vectors: the negative cases of the reference implementation
// (poc/test_arc_negative.sage, poc/test_range_proof.sage, same seeds), the presentation state,
// the protocol structs of token type 0xE5AC, and tampering with every part of a message.
import { describe, expect, it } from "vitest";
import { concatBytes, toHex } from "../../../core/bytes.js";
import { decodeTokenChallenge, encodeTokenChallenge, type TokenChallenge } from "../../../core/privacypass/index.js";
import {
  computeBases,
  createCredentialRequest,
  createCredentialResponse,
  decodeArcCredentialRequest,
  decodeArcToken,
  decodeCredentialRequest,
  decodeCredentialResponse,
  encodeArcCredentialRequest,
  encodeArcToken,
  encodeCredentialRequest,
  encodeCredentialResponse,
  finalizeCredential,
  generatorG,
  issuerKeyId,
  makePresentation,
  presentationContext,
  presentationContexts,
  PresentationState,
  requestContext,
  serializeElement,
  setupServer,
  verifyPresentation,
  type Credential,
  type Presentation,
  type ServerPrivateKey,
  type ServerPublicKey,
} from "../../../core/privacypass/arc/index.js";
import { paddedSeed, TestDrng } from "../../helpers/arc-test-drng.js";

const te = new TextEncoder();
const REQUEST_CONTEXT = te.encode("test request context");
const PRESENTATION_CONTEXT = te.encode("test presentation context");

interface Setup {
  rng: TestDrng;
  privateKey: ServerPrivateKey;
  publicKey: ServerPublicKey;
  credential: Credential;
}

/** The reference tests' setup: keygen, request, issue, finalize, all from one seeded DRNG. */
function setup(seed: string): Setup {
  const rng = new TestDrng(paddedSeed(seed));
  const { privateKey, publicKey } = setupServer(rng);
  const { clientSecrets, request } = createCredentialRequest(REQUEST_CONTEXT, rng);
  const response = createCredentialResponse(privateKey, publicKey, request, rng);
  const credential = finalizeCredential(clientSecrets, publicKey, request, response);
  return { rng, privateKey, publicKey, credential };
}

function verifies(s: Setup, p: Presentation, limit: number, ctx = PRESENTATION_CONTEXT): boolean {
  return verifyPresentation(s.privateKey, s.publicKey, presentationContexts(REQUEST_CONTEXT, ctx), p, limit);
}

const randomElement = (s: Setup): ReturnType<typeof generatorG.multiply> => generatorG.multiply(s.rng.randomScalar());

describe("negative cases of the reference implementation (test_arc_negative.sage)", () => {
  it("a presentation with nonce = presentationLimit does not verify", () => {
    const s = setup("test_nonce_exceeds_limit");
    const state = new PresentationState(s.credential, PRESENTATION_CONTEXT, 5);
    expect(verifies(s, state.present(s.rng).presentation, 5)).toBe(true);
    expect(verifies(s, makePresentation(s.credential, PRESENTATION_CONTEXT, 5, 5, s.rng), 5)).toBe(false);
  });

  it("a presentation with a tampered bit commitment D[0] does not verify", () => {
    const s = setup("test_invalid_bit_decomposition");
    const p = new PresentationState(s.credential, PRESENTATION_CONTEXT, 5).present(s.rng).presentation;
    expect(verifies(s, p, 5)).toBe(true);
    expect(verifies(s, { ...p, D: [randomElement(s), ...p.D.slice(1)] }, 5)).toBe(false);
  });

  it("a presentation with another nonce commitment does not verify", () => {
    const s = setup("test_invalid_nonce_commitment");
    const p = new PresentationState(s.credential, PRESENTATION_CONTEXT, 5).present(s.rng).presentation;
    expect(verifies(s, { ...p, nonceCommit: randomElement(s) }, 5)).toBe(false);
  });

  it("two presentations with the same nonce have the same tag (what the gate detects)", () => {
    const s = setup("test_reused_nonce");
    const p1 = makePresentation(s.credential, PRESENTATION_CONTEXT, 5, 1, s.rng);
    const p2 = makePresentation(s.credential, PRESENTATION_CONTEXT, 5, 1, s.rng);
    expect(toHex(serializeElement(p1.tag))).toBe(toHex(serializeElement(p2.tag)));
    expect(toHex(serializeElement(p1.U))).not.toBe(toHex(serializeElement(p2.U)));
    expect(verifies(s, p1, 5) && verifies(s, p2, 5)).toBe(true);
  });

  it("a state makes exactly presentationLimit presentations, all valid, then throws PP_ERR_LIMIT_EXCEEDED", () => {
    const s = setup("test_exceed_limit");
    const state = new PresentationState(s.credential, PRESENTATION_CONTEXT, 3);
    const tags = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const { nonce, presentation } = state.present(s.rng);
      expect(nonce).toBe(i);
      expect(verifies(s, presentation, 3)).toBe(true);
      tags.add(toHex(serializeElement(presentation.tag)));
    }
    expect(tags.size).toBe(3);
    expect(() => state.present(s.rng)).toThrow(expect.objectContaining({ code: "PP_ERR_LIMIT_EXCEEDED" }));
    expect(() => state.present(s.rng)).toThrow(expect.objectContaining({ code: "PP_ERR_LIMIT_EXCEEDED" }));
    expect(state.remaining).toBe(0);
  });

  it("tampered U, m1Commit, tag or UPrimeCommit do not verify", () => {
    const s = setup("test_tampered");
    const p = new PresentationState(s.credential, PRESENTATION_CONTEXT, 5).present(s.rng).presentation;
    expect(verifies(s, p, 5)).toBe(true);
    expect(verifies(s, { ...p, U: randomElement(s) }, 5)).toBe(false);
    expect(verifies(s, { ...p, m1Commit: randomElement(s) }, 5)).toBe(false);
    expect(verifies(s, { ...p, tag: randomElement(s) }, 5)).toBe(false);
    expect(verifies(s, { ...p, UPrimeCommit: randomElement(s) }, 5)).toBe(false);
  });
});

describe("range proof (test_range_proof.sage)", () => {
  it("every nonce in [0, limit) verifies, and nonces = limit, > limit and -1 do not", () => {
    const s = setup("test_valid_nonce");
    for (const nonce of [0, 1, 5, 9]) expect(verifies(s, makePresentation(s.credential, PRESENTATION_CONTEXT, 10, nonce, s.rng), 10)).toBe(true);
    for (const nonce of [10, 11, 15, -1]) expect(verifies(s, makePresentation(s.credential, PRESENTATION_CONTEXT, 10, nonce, s.rng), 10)).toBe(false);
  });

  it("ComputeBases covers exactly [0, limit) with a greedy decomposition", () => {
    expect(computeBases(2)).toEqual([1n]);
    expect(computeBases(3)).toEqual([1n, 1n]);
    expect(computeBases(4)).toEqual([2n, 1n]);
    expect(computeBases(10)).toEqual([4n, 2n, 2n, 1n]);
    for (let limit = 2; limit <= 70; limit++) {
      const bases = computeBases(limit);
      expect(bases.reduce((a, b) => a + b, 0n) + 1n).toBe(BigInt(limit));
      expect(bases).toHaveLength((limit - 1).toString(2).length);
      for (let v = 0; v < limit; v++) {
        let rem = BigInt(v);
        for (const b of bases) if (rem >= b) rem -= b;
        expect(rem).toBe(0n);
      }
    }
    for (const bad of [0, 1, 1.5, -2, 2 ** 32]) expect(() => computeBases(bad)).toThrow(expect.objectContaining({ code: "PP_ERR_FORMAT" }));
  });
});

describe("issuance failures", () => {
  it("a request whose proof is for other elements is refused, and so is a response under another key", () => {
    const s = setup("issuance failures");
    const { request } = createCredentialRequest(REQUEST_CONTEXT, s.rng);
    const other = createCredentialRequest(REQUEST_CONTEXT, s.rng).request;
    expect(() => createCredentialResponse(s.privateKey, s.publicKey, { ...request, m2Enc: other.m2Enc }, s.rng)).toThrow(
      expect.objectContaining({ code: "PP_ERR_FORMAT" }),
    );
    const { clientSecrets, request: r2 } = createCredentialRequest(REQUEST_CONTEXT, s.rng);
    const response = createCredentialResponse(s.privateKey, s.publicKey, r2, s.rng);
    const otherKey = setupServer(s.rng).publicKey;
    expect(() => finalizeCredential(clientSecrets, otherKey, r2, response)).toThrow(expect.objectContaining({ code: "PP_ERR_FORMAT" }));
    expect(() => finalizeCredential(clientSecrets, s.publicKey, r2, { ...response, HAux: generatorG })).toThrow(
      expect.objectContaining({ code: "PP_ERR_FORMAT" }),
    );
  });

  it("a flipped byte anywhere in a request or response proof is refused", () => {
    const s = setup("flipped proof bytes");
    const { clientSecrets, request } = createCredentialRequest(REQUEST_CONTEXT, s.rng);
    const req = encodeCredentialRequest(request);
    for (const i of [66, 66 + 31, 66 + 32, req.length - 1]) {
      const bad = req.slice();
      bad[i]! ^= 1;
      expect(() => createCredentialResponse(s.privateKey, s.publicKey, decodeCredentialRequest(bad), s.rng)).toThrow();
    }
    const res = encodeCredentialResponse(createCredentialResponse(s.privateKey, s.publicKey, request, s.rng));
    for (const i of [198, 198 + 100, res.length - 1]) {
      const bad = res.slice();
      bad[i]! ^= 1;
      expect(() => finalizeCredential(clientSecrets, s.publicKey, request, decodeCredentialResponse(bad))).toThrow();
    }
  });
});

describe("token type 0xE5AC structs", () => {
  const keys = setupServer();
  const keyId = issuerKeyId(keys.publicKey);
  const challenge: TokenChallenge = {
    tokenType: 0xe5ac,
    issuerName: "issuer.example",
    redemptionContext: new Uint8Array(32).fill(7),
    originInfo: ["leader.example"],
    credentialContext: new Uint8Array(32).fill(9),
  };

  it("the ARC TokenChallenge carries credential_context, and the contexts follow arc-protocol §6.1 and §7.1", () => {
    const b = encodeTokenChallenge(challenge);
    expect(b[b.length - 33]).toBe(32);
    expect(decodeTokenChallenge(b)).toEqual(challenge);
    const empty = { ...challenge, credentialContext: new Uint8Array(0) };
    expect(decodeTokenChallenge(encodeTokenChallenge(empty))).toEqual(empty);
    // An ARC challenge without the field is truncated; a type 2 challenge with it is malformed.
    expect(() => decodeTokenChallenge(b.subarray(0, b.length - 33))).toThrow(expect.objectContaining({ code: "PP_ERR_TRUNCATED" }));
    expect(() => encodeTokenChallenge({ ...challenge, tokenType: 2 })).toThrow(expect.objectContaining({ code: "PP_ERR_FORMAT" }));
    const bad = b.slice();
    bad[b.length - 33] = 31;
    expect(() => decodeTokenChallenge(bad)).toThrow(expect.objectContaining({ code: "PP_ERR_FORMAT" }));
    const lp = (x: Uint8Array): Uint8Array => concatBytes(Uint8Array.of(x.length >> 8, x.length & 0xff), x);
    const head = concatBytes(lp(te.encode("issuer.example")), lp(te.encode("leader.example")));
    expect(toHex(requestContext(challenge, keyId))).toBe(toHex(concatBytes(head, lp(challenge.credentialContext!), keyId)));
    expect(toHex(presentationContext(challenge, keyId))).toBe(toHex(concatBytes(head, lp(challenge.redemptionContext), keyId)));
  });

  it("CredentialRequest and Token round-trip, and a token of one limit is not a token of another", () => {
    const { request } = createCredentialRequest(requestContext(challenge, keyId));
    const wire = encodeArcCredentialRequest({ truncatedIssuerKeyId: keyId[31]!, request });
    expect(wire).toHaveLength(229);
    expect(toHex(encodeArcCredentialRequest(decodeArcCredentialRequest(wire)))).toBe(toHex(wire));
    const other = wire.slice();
    other[1] = 2;
    expect(() => decodeArcCredentialRequest(other)).toThrow(expect.objectContaining({ code: "PP_ERR_FORMAT" }));
    const ctx = createCredentialRequest(requestContext(challenge, keyId));
    const response = createCredentialResponse(keys.privateKey, keys.publicKey, ctx.request);
    const credential = finalizeCredential(ctx.clientSecrets, keys.publicKey, ctx.request, response);
    const state = new PresentationState(credential, presentationContext(challenge, keyId), 8);
    const { nonce, presentation } = state.present();
    const token = { presentationNonce: nonce, challengeDigest: new Uint8Array(32).fill(1), issuerKeyId: keyId, presentation };
    const tokenBytes = encodeArcToken(token);
    expect(tokenBytes).toHaveLength(2 + 4 + 32 + 32 + 5 * 33 + 3 * 33 + (6 + 9) * 32);
    expect(toHex(encodeArcToken(decodeArcToken(tokenBytes, 8)))).toBe(toHex(tokenBytes));
    expect(() => decodeArcToken(tokenBytes, 16)).toThrow(expect.objectContaining({ code: "PP_ERR_TRUNCATED" }));
    expect(() => decodeArcToken(tokenBytes, 4)).toThrow(expect.objectContaining({ code: "PP_ERR_FORMAT" }));
    const contexts = presentationContexts(requestContext(challenge, keyId), presentationContext(challenge, keyId));
    expect(verifyPresentation(keys.privateKey, keys.publicKey, contexts, decodeArcToken(tokenBytes, 8).presentation, 8)).toBe(true);
  });
});
