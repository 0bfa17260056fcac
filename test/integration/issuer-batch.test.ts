// Batched issuance at the issuer (draft-ietf-privacypass-batched-tokens) with inject(): amortized
// batches of types 1 and 5 and generic batches of type 2 (mixed with 5), the draft's statuses
// (200, 206 with absent entries, 400 when none was issued, 422 for a malformed request or an
// amortized batch over maxBatchTokens), and the attester counting every token of a batch.
import type { LightMyRequestResponse } from "fastify";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { toHex } from "../../core/bytes.js";
import {
  decodeGenericBatchTokenResponse,
  encodeAmortizedBatchTokenRequest,
  encodeGenericBatchTokenRequest,
} from "../../core/privacypass/batch.js";
import { createBatchTokenRequest } from "../../core/privacypass/batch-client.js";
import { createTokenRequest, decodeToken, encodeAuthenticatorInput, encodeTokenChallenge, MEDIA_TYPES, TOKEN_TYPE } from "../../core/privacypass/index.js";
import { P384_SHA384, RISTRETTO255_SHA512 } from "../../core/privacypass/oprf-suite.js";
import { verifyAuthenticator } from "../../core/privacypass/voprf-batch.js";
import { importBlindRsaTokenKey, verifyToken } from "../../core/privacypass/verify-node.js";
import { CREDENTIAL, makeIssuer, tempDir, type IssuerFixture } from "../helpers/issuer.js";

const challengeFor = (tokenType: number): Uint8Array =>
  encodeTokenChallenge({ tokenType, issuerName: "issuer.example", redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] });

let tmp: ReturnType<typeof tempDir>;
let fx: IssuerFixture;

async function open(raw: Record<string, unknown> = {}): Promise<void> {
  fx = await makeIssuer(tmp.dir, { tokenTypes: [2, 5, 1], ...raw });
}

beforeEach(() => {
  tmp = tempDir();
});
afterEach(async () => {
  await fx.app.close();
  tmp.remove();
});

function post(mediaType: string, body: Uint8Array, credential = CREDENTIAL): Promise<LightMyRequestResponse> {
  return fx.app.inject({
    method: "POST",
    url: "/token-request",
    headers: { "content-type": mediaType, authorization: `Bearer ${credential}` },
    payload: Buffer.from(body),
  });
}

function currentKey(tokenType: number): { tokenKey: Uint8Array; privateKey: Uint8Array } {
  const k = fx.keys.published().find((x) => x.tokenType === tokenType && x.notBefore <= fx.clock.sec)!;
  return { tokenKey: k.tokenKey, privateKey: k.privateKey.reveal() };
}

/** A truncated key id no published key has. */
function unusedKeyId(): number {
  const used = new Set(fx.keys.published().map((k) => k.tokenKeyId[31]));
  let id = 0;
  while (used.has(id)) id++;
  return id;
}

function rawBody(res: LightMyRequestResponse): Uint8Array {
  return new Uint8Array(res.rawPayload);
}

describe("amortized batches (types 1 and 5)", () => {
  it.each([
    ["type 5 (ristretto255)", TOKEN_TYPE.VOPRF_RISTRETTO255, RISTRETTO255_SHA512, 32],
    ["type 1 (P-384)", TOKEN_TYPE.VOPRF_P384, P384_SHA384, 8],
  ] as const)("%s: one request, one proof, every token verifies with the issuer key", async (_n, tokenType, suite, n) => {
    await open();
    const { tokenKey, privateKey } = currentKey(tokenType);
    const pending = await createBatchTokenRequest(challengeFor(tokenType), tokenKey, n);
    const res = await post(pending.requestMediaType, pending.request);
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toBe(MEDIA_TYPES.amortizedBatchResponse);
    const tokens = await pending.finalize(rawBody(res));
    expect(tokens).toHaveLength(n);
    for (const t of tokens) {
      const token = decodeToken(t);
      expect(verifyAuthenticator(suite as never, privateKey, encodeAuthenticatorInput(token), token.authenticator)).toBe(true);
    }
    const metrics = (await fx.app.inject({ method: "GET", url: "/metrics" })).body;
    expect(metrics).toMatch(new RegExp(`veil_issuer_tokens_issued_total\\{token_type="voprf_${tokenType === 5 ? "ristretto255" : "p384"}"[^}]*\\} ${n}`));
  });

  it("422 for a malformed batch, a bad element, an unknown key, a type with no amortized batch and a batch over maxBatchTokens; none costs quota", async () => {
    await open({ maxBatchTokens: 4, attester: { credentials: [CREDENTIAL], tokensPerWindow: 4, windowSec: 100 } });
    const { tokenKey } = currentKey(5);
    const good = await createBatchTokenRequest(challengeFor(5), tokenKey, 4);
    const codeOf = async (body: Uint8Array): Promise<[number, string]> => {
      const r = await post(MEDIA_TYPES.amortizedBatchRequest, body);
      return [r.statusCode, r.json<{ code: string }>().code];
    };
    expect(await codeOf(good.request.subarray(0, good.request.length - 1))).toEqual([422, "ISSUER_ERR_REQUEST"]);
    expect(await codeOf(new Uint8Array([...good.request, 0]))).toEqual([422, "ISSUER_ERR_REQUEST"]);
    const notMinimal = Uint8Array.from([0x00, 0x05, good.request[2]!, 0x40, 0x20, ...good.request.subarray(4, 36)]);
    expect(await codeOf(notMinimal)).toEqual([422, "ISSUER_ERR_REQUEST"]);
    const bad = good.request.slice();
    bad.fill(0xff, 4, 36); // not a canonical ristretto255 encoding
    expect(await codeOf(bad)).toEqual([422, "ISSUER_ERR_REQUEST"]);
    const otherKey = good.request.slice();
    otherKey[2] = unusedKeyId();
    expect(await codeOf(otherKey)).toEqual([422, "ISSUER_ERR_KEY_UNKNOWN"]);
    const type2 = Uint8Array.from([0x00, 0x02, ...good.request.subarray(2)]);
    expect(await codeOf(type2)).toEqual([422, "ISSUER_ERR_REQUEST"]);
    const five = await createBatchTokenRequest(challengeFor(5), tokenKey, 5);
    expect(await codeOf(five.request)).toEqual([422, "ISSUER_ERR_BATCH_TOO_LARGE"]);
    // The whole quota (4) is still there.
    const res = await post(MEDIA_TYPES.amortizedBatchRequest, good.request);
    expect(res.statusCode).toBe(200);
    expect(await good.finalize(rawBody(res))).toHaveLength(4);
  });

  it("is all or nothing against the quota: 429 without using any when fewer are left, 429 with Retry-After when none", async () => {
    await open({ attester: { credentials: [CREDENTIAL], tokensPerWindow: 6, windowSec: 100 } });
    const { tokenKey } = currentKey(5);
    const four = async (): Promise<LightMyRequestResponse> => post(MEDIA_TYPES.amortizedBatchRequest, (await createBatchTokenRequest(challengeFor(5), tokenKey, 4)).request);
    expect((await four()).statusCode).toBe(200);
    const partial = await four();
    expect(partial.statusCode).toBe(429);
    expect(partial.json<{ code: string; detail: string }>().detail).toMatch(/2 tokens left/);
    const two = await createBatchTokenRequest(challengeFor(5), tokenKey, 2);
    expect((await post(MEDIA_TYPES.amortizedBatchRequest, two.request)).statusCode).toBe(200);
    const none = await four();
    expect(none.statusCode).toBe(429);
    expect(none.headers["retry-after"]).toBe("100");
  });
});

describe("generic batches", () => {
  it("type 2 batch of 32 in one request: 200, every token verifies", async () => {
    await open();
    const { tokenKey } = currentKey(2);
    const pending = await createBatchTokenRequest(challengeFor(2), tokenKey, 32);
    const res = await post(pending.requestMediaType, pending.request);
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toBe(MEDIA_TYPES.genericBatchResponse);
    const tokens = await pending.finalize(rawBody(res));
    expect(tokens).toHaveLength(32);
    const key = importBlindRsaTokenKey(tokenKey);
    for (const t of tokens) expect(verifyToken(decodeToken(t), key)).toBe(true);
  });

  it("206 with the refused entries absent (unknown key, type not issued, beyond maxBatchTokens, quota), 400 when none is issued", async () => {
    await open({ tokenTypes: [2, 5], maxBatchTokens: 5, attester: { credentials: [CREDENTIAL], tokensPerWindow: 4, windowSec: 100 } });
    const k2 = currentKey(2).tokenKey;
    const k5 = currentKey(5).tokenKey;
    const r2 = async (): Promise<Uint8Array> => (await createTokenRequest(challengeFor(2), k2)).request;
    const r5 = createTokenRequest(challengeFor(5), k5);
    const unknownKey = (await r2()).slice();
    unknownKey[2] = unusedKeyId();
    const type1 = Uint8Array.from([0x00, 0x01, 0x00, ...(await r5).request.subarray(3), ...new Uint8Array(17)]); // type 1 layout, not issued here
    const entries = [await r2(), unknownKey, (await r5).request, type1, await r2(), await r2(), await r2(), await r2()];
    const res = await post(MEDIA_TYPES.genericBatchRequest, encodeGenericBatchTokenRequest(entries));
    expect(res.statusCode).toBe(206);
    const out = decodeGenericBatchTokenResponse(rawBody(res));
    // Candidates in order: 0, 2, 4, 5, 6 (the limit of 5); the quota (4) covers 0, 2, 4, 5.
    expect(out.map((e) => e?.tokenType ?? null)).toEqual([2, null, 5, null, 2, 2, null, null]);
    const metrics = (await fx.app.inject({ method: "GET", url: "/metrics" })).body;
    expect(metrics).toMatch(/veil_issuer_refusals_total\{reason="ISSUER_ERR_KEY_UNKNOWN"[^}]*\} 1/);
    expect(metrics).toMatch(/veil_issuer_refusals_total\{reason="ISSUER_ERR_TOKEN_TYPE"[^}]*\} 1/);
    expect(metrics).toMatch(/veil_issuer_refusals_total\{reason="ISSUER_ERR_BATCH_TOO_LARGE"[^}]*\} 1/);
    expect(metrics).toMatch(/veil_issuer_refusals_total\{reason="ISSUER_ERR_QUOTA"[^}]*\} 1/);
    // Quota used up: 429 with Retry-After, as for single requests.
    const exhausted = await post(MEDIA_TYPES.genericBatchRequest, encodeGenericBatchTokenRequest([await r2()]));
    expect(exhausted.statusCode).toBe(429);
    expect(exhausted.headers["retry-after"]).toBeDefined();
    // Nothing issuable: the draft's 400, and no quota asked.
    const none = await post(MEDIA_TYPES.genericBatchRequest, encodeGenericBatchTokenRequest([unknownKey]));
    expect(none.statusCode).toBe(400);
    expect(none.json<{ code: string }>().code).toBe("ISSUER_ERR_BATCH_REFUSED");
  });

  it("an entry that fails to sign is absent and gives its quota back", async () => {
    await open({ attester: { credentials: [CREDENTIAL], tokensPerWindow: 3, windowSec: 100 } });
    const k2 = currentKey(2).tokenKey;
    const good = (await createTokenRequest(challengeFor(2), k2)).request;
    const tooBig = good.slice();
    tooBig.fill(0xff, 3); // blinded_msg >= n
    const res = await post(MEDIA_TYPES.genericBatchRequest, encodeGenericBatchTokenRequest([tooBig, good]));
    expect(res.statusCode).toBe(206);
    expect(decodeGenericBatchTokenResponse(rawBody(res)).map((e) => e === undefined)).toEqual([true, false]);
    // 3 - 1 used: two more tokens.
    const two = await post(MEDIA_TYPES.genericBatchRequest, encodeGenericBatchTokenRequest([good, good, good]));
    expect(two.statusCode).toBe(206);
    expect(decodeGenericBatchTokenResponse(rawBody(two)).filter((e) => e !== undefined)).toHaveLength(2);
  });

  it("422 for a malformed generic batch (truncated, unknown token type, empty, trailing bytes)", async () => {
    await open();
    const good = encodeGenericBatchTokenRequest([(await createTokenRequest(challengeFor(2), currentKey(2).tokenKey)).request]);
    for (const body of [good.subarray(0, 10), Uint8Array.from([0x03, 0x12, 0x34, 0x00]), Uint8Array.from([0x00]), new Uint8Array([...good, 1])]) {
      const r = await post(MEDIA_TYPES.genericBatchRequest, body);
      expect([r.statusCode, r.json<{ code: string }>().code]).toEqual([422, "ISSUER_ERR_REQUEST"]);
    }
  });
});

describe("media types", () => {
  it("415 for another media type; single type 5 requests are issued", async () => {
    await open();
    const res = await post("application/private-token-batch-request", new Uint8Array(10));
    expect(res.statusCode).toBe(415);
    expect(res.json<{ code: string }>().code).toBe("HTTP_ERR_MEDIA_TYPE");
    const { tokenKey, privateKey } = currentKey(5);
    const single = await createTokenRequest(challengeFor(5), tokenKey);
    const ok = await post(MEDIA_TYPES.tokenRequest, single.request);
    expect(ok.statusCode).toBe(200);
    const token = decodeToken(await single.finalize(rawBody(ok)));
    expect(verifyAuthenticator(RISTRETTO255_SHA512, privateKey, encodeAuthenticatorInput(token), token.authenticator)).toBe(true);
    expect(toHex(encodeAmortizedBatchTokenRequest({ tokenType: 5, truncatedTokenKeyId: 1, blindedMsgs: [new Uint8Array(32)] })).slice(0, 8)).toBe("00050120");
  });
});
