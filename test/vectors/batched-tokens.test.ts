// Batched issuance against published vectors:
// - RFC 9497 Appendix A, VOPRF mode, ristretto255-SHA512 and P384-SHA384 (batch sizes 1 and 2):
//   key derivation, blinding, BlindEvaluateBatch (evaluations and the proof itself, with the
//   vector's proof randomness), VerifyProof and FinalizeBatch.
// - draft-ietf-privacypass-batched-tokens test vectors: type 0x0005 single issuance, amortized
//   batches of types 0x0001 and 0x0005, and generic batches (types 1, 2 and 5 mixed).
// - @cloudflare/voprf-ts (CryptoNoble, which has ristretto255): its batch proofs verify with
//   Veil's verifier, and Veil's with its client.
import { createHash, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Oprf, VOPRFClient, VOPRFServer, type SuiteID } from "@cloudflare/voprf-ts";
import { CryptoNoble } from "@cloudflare/voprf-ts/crypto-noble";
import { numberToBytesBE } from "@noble/curves/utils.js";
import { concatBytes, fromHex, toHex } from "../../core/bytes.js";
import {
  decodeAmortizedBatchTokenRequest,
  decodeAmortizedBatchTokenResponse,
  decodeGenericBatchTokenRequest,
  decodeGenericBatchTokenResponse,
  encodeAmortizedBatchTokenRequest,
  encodeAmortizedBatchTokenResponse,
  encodeGenericBatchTokenRequest,
  encodeGenericBatchTokenResponse,
  type AmortizedTokenType,
} from "../../core/privacypass/batch.js";
import { createBatchTokenRequest } from "../../core/privacypass/batch-client.js";
import { createTokenRequest } from "../../core/privacypass/client.js";
import { decodeToken, encodeTokenRequest, tokenKeyId, TOKEN_TYPE } from "../../core/privacypass/index.js";
import { P384_SHA384, RISTRETTO255_SHA512, type OprfPoint, type OprfSuite } from "../../core/privacypass/oprf-suite.js";
import { blind, blindEvaluateBatch, deriveKeyPair, finalizeBatch, verifyBatchProof } from "../../core/privacypass/voprf-batch.js";
import { createBlindRsaSigner, createVoprfSigner, signTokenRequest } from "../../issuer/signer.js";

const dir = join(import.meta.dirname, "privacypass");
interface Rfc9497Vector {
  name: string;
  Input: string[];
  Blind: string[];
  BlindedElement: string[];
  EvaluationElement: string[];
  Proof: string;
  ProofRandomScalar: string;
  Output: string[];
}
interface Rfc9497Suite {
  Seed: string;
  KeyInfo: string;
  skSm: string;
  pkSm: string;
  vectors: Rfc9497Vector[];
}
const RFC9497 = JSON.parse(readFileSync(join(dir, "rfc9497/voprf-vectors.json"), "utf8")) as { suites: Record<string, Rfc9497Suite> };

interface AmortizedVector {
  skS: string;
  pkS: string;
  token_challenge: string;
  nonces: string[];
  blinds: string[];
  token_request: string;
  token_response: string;
  tokens: string[];
}
interface SingleVector {
  skS: string;
  pkS: string;
  token_challenge: string;
  nonce: string;
  blind: string;
  token_request: string;
  token_response: string;
  token: string;
}
interface GenericIssuance extends Omit<SingleVector, "token_request" | "token_response"> {
  type: string;
  salt?: string;
}
const DRAFT = JSON.parse(readFileSync(join(dir, "batched-tokens/vectors.json"), "utf8")) as {
  type5_single: SingleVector[];
  amortized_p384: AmortizedVector[];
  amortized_ristretto255: AmortizedVector[];
  generic: { issuance: GenericIssuance[]; token_request: string; token_response: string }[];
};

const SUITES: [string, OprfSuite<never>][] = [
  ["ristretto255-SHA512", RISTRETTO255_SHA512 as unknown as OprfSuite<never>],
  ["P384-SHA384", P384_SHA384 as unknown as OprfSuite<never>],
];

function checkRfc9497<P extends OprfPoint<P>>(suite: OprfSuite<P>, s: Rfc9497Suite): void {
  const { skS, pkS } = deriveKeyPair(suite, fromHex(s.Seed), fromHex(s.KeyInfo));
  expect(toHex(skS)).toBe(s.skSm);
  expect(toHex(pkS)).toBe(s.pkSm);
  for (const v of s.vectors) {
    const inputs = v.Input.map(fromHex);
    const blinded = inputs.map((x, i) => blind(suite, x, suite.deserializeScalar(fromHex(v.Blind[i]!))));
    expect(blinded.map((b) => toHex(b.blindedElement))).toEqual(v.BlindedElement);
    const ev = blindEvaluateBatch(suite, skS, pkS, blinded.map((b) => b.blindedElement), { r: suite.deserializeScalar(fromHex(v.ProofRandomScalar)) });
    expect(ev.evaluatedElements.map(toHex)).toEqual(v.EvaluationElement);
    expect(toHex(ev.proof)).toBe(v.Proof);
    const outputs = finalizeBatch(suite, pkS, inputs, blinded, v.EvaluationElement.map(fromHex), fromHex(v.Proof));
    expect(outputs.map(toHex)).toEqual(v.Output);
    // A proof for other elements, or a changed proof, does not verify.
    const proof = fromHex(v.Proof);
    proof[3]! ^= 1;
    expect(verifyBatchProof(suite, pkS, v.BlindedElement.map(fromHex), v.EvaluationElement.map(fromHex), proof)).toBe(false);
    expect(() => finalizeBatch(suite, pkS, inputs, blinded, v.EvaluationElement.map(fromHex), proof)).toThrow(/does not verify/);
    if (v.BlindedElement.length === 2) {
      const swapped = [...v.EvaluationElement].reverse().map(fromHex);
      expect(verifyBatchProof(suite, pkS, v.BlindedElement.map(fromHex), swapped, fromHex(v.Proof))).toBe(false);
    }
  }
}

describe("RFC 9497 VOPRF vectors (batch sizes 1 and 2)", () => {
  it.each(SUITES)("%s: keys, blinding, evaluation, the exact batch proof and the outputs", (id, suite) => {
    checkRfc9497(suite, RFC9497.suites[id]!);
  });
});

const sha256 = (b: Uint8Array): Uint8Array => new Uint8Array(createHash("sha256").update(b).digest());

/**
 * Randomness that replays the vector: per token its nonce, then its blind (drawn as Ns + 24
 * bytes, big-endian, reduced modulo the order: 24 zero bytes then the blind give it exactly).
 */
function deps(nonces: string[], blinds: string[], suite: OprfSuite<never>): { randomBytes: (n: number) => Uint8Array } {
  const queue = nonces.flatMap((nonce, i) => [
    fromHex(nonce),
    concatBytes(new Uint8Array(24), numberToBytesBE(suite.deserializeScalar(fromHex(blinds[i]!)), suite.Ns)),
  ]);
  let next = 0;
  return {
    randomBytes: (n) => {
      const b = queue[next++]!;
      if (b.length !== n) throw new Error(`asked for ${n} random bytes, the vector has ${b.length}`);
      return b;
    },
  };
}

describe("draft-ietf-privacypass-batched-tokens amortized vectors", () => {
  const cases: [string, AmortizedVector, OprfSuite<never>, number][] = [
    ...DRAFT.amortized_p384.map((v, i) => [`P-384 #${i + 1}`, v, SUITES[1]![1], TOKEN_TYPE.VOPRF_P384] as [string, AmortizedVector, OprfSuite<never>, number]),
    ...DRAFT.amortized_ristretto255.map(
      (v, i) => [`ristretto255 #${i + 1}`, v, SUITES[0]![1], TOKEN_TYPE.VOPRF_RISTRETTO255] as [string, AmortizedVector, OprfSuite<never>, number],
    ),
  ];
  it.each(cases)("%s: the client's request, its tokens from the vector's response, and the issuer's evaluation", async (_n, v, suite, tokenType) => {
    const challenge = fromHex(v.token_challenge);
    const pkS = fromHex(v.pkS);
    const pending = await createBatchTokenRequest(challenge, pkS, v.nonces.length, deps(v.nonces, v.blinds, suite));
    expect(toHex(pending.request)).toBe(v.token_request);
    expect((await pending.finalize(fromHex(v.token_response))).map(toHex)).toEqual(v.tokens);
    const req = decodeAmortizedBatchTokenRequest(fromHex(v.token_request));
    expect(req.tokenType).toBe(tokenType);
    expect(req.truncatedTokenKeyId).toBe(tokenKeyId(pkS)[31]);
    expect(toHex(encodeAmortizedBatchTokenRequest(req))).toBe(v.token_request);
    const res = decodeAmortizedBatchTokenResponse(tokenType, fromHex(v.token_response));
    expect(toHex(encodeAmortizedBatchTokenResponse(req.tokenType, res))).toBe(v.token_response);
    // The issuer evaluates deterministically; its proof (fresh r) verifies with the client.
    const ours = blindEvaluateBatch(suite, fromHex(v.skS), pkS, req.blindedMsgs);
    expect(ours.evaluatedElements.map(toHex)).toEqual(res.evaluatedMsgs.map(toHex));
    expect(verifyBatchProof(suite, pkS, req.blindedMsgs, ours.evaluatedElements, ours.proof)).toBe(true);
    for (const t of v.tokens) {
      const token = decodeToken(fromHex(t));
      expect(toHex(token.challengeDigest)).toBe(toHex(sha256(challenge)));
    }
  });
});

describe("draft-ietf-privacypass-batched-tokens type 0x0005 single issuance vectors", () => {
  it.each(DRAFT.type5_single.map((v, i) => [i + 1, v] as const))("#%d: request, token, and the issuer's response", async (_i, v) => {
    const suite = SUITES[0]![1];
    const pending = await createTokenRequest(fromHex(v.token_challenge), fromHex(v.pkS), deps([v.nonce], [v.blind], suite));
    expect(toHex(pending.request)).toBe(v.token_request);
    expect(toHex(await pending.finalize(fromHex(v.token_response)))).toBe(v.token);
    const signer = createVoprfSigner(fromHex(v.skS), TOKEN_TYPE.VOPRF_RISTRETTO255);
    expect(toHex(signer.tokenKey)).toBe(v.pkS);
    const again = await createTokenRequest(fromHex(v.token_challenge), fromHex(v.pkS), deps([v.nonce], [v.blind], suite));
    const response = signTokenRequest(signer, decodeTokenRequestOf(again.request));
    expect(toHex(response).slice(0, 64)).toBe(v.token_response.slice(0, 64));
    expect(toHex(await again.finalize(response))).toBe(v.token);
  });
});

function decodeTokenRequestOf(b: Uint8Array): Parameters<typeof signTokenRequest>[1] {
  return decodeGenericBatchTokenRequest(encodeGenericBatchTokenRequest([b]))[0]!;
}

describe("draft-ietf-privacypass-batched-tokens generic batch vectors", () => {
  it.each(DRAFT.generic.map((v, i) => [i + 1, v] as const))("#%d: codecs round-trip; every entry's token comes out of its response; the issuer signs each request", async (_i, v) => {
    const requests = decodeGenericBatchTokenRequest(fromHex(v.token_request));
    expect(requests.map((r) => r.tokenType)).toEqual(v.issuance.map((x) => Number.parseInt(x.type, 16)));
    expect(toHex(encodeGenericBatchTokenRequest(requests.map(encodeTokenRequest)))).toBe(v.token_request);
    const responses = decodeGenericBatchTokenResponse(fromHex(v.token_response));
    expect(toHex(encodeGenericBatchTokenResponse(responses))).toBe(v.token_response);
    for (const [i, x] of v.issuance.entries()) {
      const type = Number.parseInt(x.type, 16);
      const entry = responses[i]!;
      expect(entry?.tokenType).toBe(type);
      const challenge = fromHex(x.token_challenge);
      const pkS = fromHex(x.pkS);
      if (type === TOKEN_TYPE.BLIND_RSA_2048) {
        const signer = createBlindRsaSigner(createPrivateKey(Buffer.from(fromHex(x.skS)).toString("utf8")));
        expect(toHex(signTokenRequest(signer, requests[i]!))).toBe(toHex(entry.tokenResponse));
        continue;
      }
      const suite = type === TOKEN_TYPE.VOPRF_P384 ? SUITES[1]![1] : SUITES[0]![1];
      const pending = await createTokenRequest(challenge, pkS, deps([x.nonce], [x.blind], suite));
      expect(toHex(pending.request)).toBe(toHex(encodeTokenRequest(requests[i]!)));
      expect(toHex(await pending.finalize(entry.tokenResponse))).toBe(x.token);
      const ours = signTokenRequest(createVoprfSigner(fromHex(x.skS), type as AmortizedTokenType), requests[i]!);
      expect(toHex(ours).slice(0, suite.Ne * 2)).toBe(toHex(entry.tokenResponse).slice(0, suite.Ne * 2));
    }
  });
});

describe("@cloudflare/voprf-ts (CryptoNoble) batch cross-check", () => {
  it.each([
    ["ristretto255-SHA512", Oprf.Suite.RISTRETTO255_SHA512, SUITES[0]![1]],
    ["P384-SHA384", Oprf.Suite.P384_SHA384, SUITES[1]![1]],
  ] as [string, SuiteID, OprfSuite<never>][])("%s: its batch of 8 verifies here, and Veil's batch proof verifies there", async (_n, id, suite) => {
    const seed = new Uint8Array(32).fill(7);
    const { skS, pkS } = deriveKeyPair(suite, seed);
    const inputs = Array.from({ length: 8 }, (_, i) => new TextEncoder().encode(`input ${i}`));
    const stockClient = new VOPRFClient(id, pkS, CryptoNoble);
    const stockServer = new VOPRFServer(id, skS, CryptoNoble);
    const [finData, evalReq] = await stockClient.blind(inputs);
    const blindedElements = evalReq.blinded.map((e) => e.serialize());
    const stockEval = await stockServer.blindEvaluate(evalReq);
    expect(verifyBatchProof(suite, pkS, blindedElements, stockEval.evaluated.map((e) => e.serialize()), stockEval.proof!.serialize())).toBe(true);
    const ours = blindEvaluateBatch(suite, skS, pkS, blindedElements);
    expect(ours.evaluatedElements.map(toHex)).toEqual(stockEval.evaluated.map((e) => toHex(e.serialize())));
    const g = Oprf.getGroup(id, CryptoNoble);
    const { Evaluation, DLEQProof } = await import("@cloudflare/voprf-ts");
    const evaluation = new Evaluation(
      Oprf.Mode.VOPRF,
      ours.evaluatedElements.map((e) => g.desElt(e)),
      DLEQProof.deserialize(g.id, ours.proof, CryptoNoble),
    );
    const outputs = await stockClient.finalize(finData, evaluation);
    expect(outputs.map(toHex)).toEqual(finalizeBatch(suite, pkS, inputs, finData.blinds.map((b, i) => ({ blind: suite.deserializeScalar(b.serialize()), blindedElement: blindedElements[i]! })), ours.evaluatedElements, ours.proof).map(toHex));
  });
});
