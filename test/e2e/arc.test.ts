// End to end with ARC (token type 0xE5AC): @divviup/dap reports through the client library, the
// relay, the gateway (ARC issuer, keys from the issuer's key file) and the DAP-09 leader double.
// One credential pays for `rate-limit` reports per presentation context; the gate refuses the
// (N+1)-th presentation; the attester's quota counts credentials; the next epoch starts again; a
// presentation raced by 25 concurrent uploads is accepted once.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createObliviousFetch, createTokenSource, type ObliviousFetch, type TokenSource } from "../../client/index.js";
import { createDapTask, uploadUrl } from "../../client/dap.js";
import { ProtocolError } from "../../core/errors.js";
import { formatAuthorization, decodeTokenChallenge, parseWwwAuthenticate } from "../../core/privacypass/index.js";
import { encodeArcTokenFor, issueArcCredential, type ArcChallenge } from "../../client/arc-credentials.js";
import { issuerKeyId, makePresentation, presentationContext, type Credential } from "../../core/privacypass/arc/index.js";
import { HELPER, LEADER, STACK_CREDENTIAL, startVeilStack, type VeilStack } from "../helpers/veil-stack.js";

const N = 3;
const EPOCH_MS = 86_400_000;
/** The quota stack's gate clock: real time, or later (the next epoch) once a test moves it. */
const clock = { t: 0 };
let stack: VeilStack;
let quotaStack: VeilStack;
const sources: TokenSource[] = [];

beforeAll(async () => {
  stack = await startVeilStack({ arc: { rateLimit: N, redemptionContext: "task-epoch", credentialContext: "none" }, tokensPerWindow: 1000 });
  quotaStack = await startVeilStack({ arc: { rateLimit: N, redemptionContext: "epoch", credentialContext: "none", now: () => Math.max(clock.t, Date.now()) }, tokensPerWindow: 1 });
}, 120_000);
afterAll(async () => {
  for (const t of sources) t.close();
  await stack.stop();
  await quotaStack.stop();
});

function client(s: VeilStack): { f: ObliviousFetch; tokens: TokenSource } {
  const tokens = createTokenSource({ issuer: s.issuerUrl, credential: STACK_CREDENTIAL, refillJitterMs: 0 });
  sources.push(tokens);
  return { f: createObliviousFetch({ relay: s.relayUrl, keys: s.keysUrl, tokens, retryDelayMs: 10 }), tokens };
}

function dapTask(s: VeilStack, f: ObliviousFetch): ReturnType<typeof createDapTask> {
  return createDapTask({ vdaf: "count", taskId: s.tasks.count.idBase64Url, leader: LEADER, helper: HELPER, timePrecisionSec: 3600, fetch: f });
}

/** The ARC challenge of the gateway for an upload to the count task (from a tokenless request's sealed 401). */
async function learnChallenge(s: VeilStack): Promise<ArcChallenge> {
  const f = createObliviousFetch({ relay: s.relayUrl, keys: s.keysUrl });
  const res = await f(uploadUrl(LEADER, s.tasks.count.idBase64Url), { method: "PUT", body: "" });
  expect(res.status).toBe(401);
  const [c] = parseWwwAuthenticate(res.headers.get("www-authenticate")!);
  // As the client library holds it.
  return { challenge: c!.challenge, decoded: decodeTokenChallenge(c!.challenge), tokenKey: c!.tokenKey, rateLimit: N };
}

/** A credential from the issuer, obtained as the client library obtains its own. */
async function fetchCredential(s: VeilStack, c: ArcChallenge): Promise<Credential> {
  return issueArcCredential(c, async (body, contentType, accept) => {
    const res = await fetch(`${s.issuerUrl}/token-request`, {
      method: "POST",
      headers: { "content-type": contentType, accept, authorization: `Bearer ${STACK_CREDENTIAL}` },
      body: Buffer.from(body),
    });
    expect(res.status).toBe(200);
    return new Uint8Array(await res.arrayBuffer());
  });
}

/**
 * `Authorization` for the presentation with `nonce` of `credential` in the challenge's context:
 * any nonce, even a repeated or out-of-range one, which the library's presentation state never
 * makes (so this test can show the gate refusing them).
 */
function presentationHeader(c: ArcChallenge, credential: Credential, nonce: number): string {
  const presentation = makePresentation(credential, presentationContext(c.decoded, issuerKeyId(c.tokenKey)), N, nonce);
  return formatAuthorization(encodeArcTokenFor(c, nonce, presentation));
}

/** A fetch that sends every request with this Authorization (the client library then adds no token). */
function withAuthorization(f: ObliviousFetch, authorization: string): ObliviousFetch {
  const g = (input: RequestInfo | URL, init?: RequestInit): Promise<Response> =>
    f(input, { ...init, headers: { ...(init?.headers as Record<string, string>), authorization } });
  return Object.assign(g, { prepare: f.prepare.bind(f), keys: f.keys.bind(f), stats: f.stats.bind(f) });
}

describe("end to end with ARC (rate-limited credentials)", () => {
  it("uploads N reports with one credential: the issuer sees one issuance for N reports", async () => {
    const { f, tokens } = client(stack);
    const dap = dapTask(stack, f);
    await f.prepare(uploadUrl(LEADER, stack.tasks.count.idBase64Url));
    const before = stack.leader.acceptedCount();
    for (let i = 0; i < N; i++) await dap.sendMeasurement(i % 2 === 0);
    expect(stack.leader.acceptedCount()).toBe(before + N);
    expect(tokens.stats().issued).toBe(1);
    expect(f.stats().challengeRetries).toBe(0);
    const metrics = await (await fetch(`${stack.issuerUrl}/metrics`)).text();
    expect(metrics).toMatch(/veil_issuer_tokens_issued_total\{[^}]*token_type="arc_p256"[^}]*\} 1\b/);
  });

  it("refuses the (N+1)-th presentation in the same context (a repeated or out-of-range nonce) with a sealed 401", async () => {
    const c = await learnChallenge(stack);
    const credential = await fetchCredential(stack, c);
    const f = createObliviousFetch({ relay: stack.relayUrl, keys: stack.keysUrl });
    const before = stack.leader.acceptedCount();
    for (let nonce = 0; nonce < N; nonce++) await dapTask(stack, withAuthorization(f, presentationHeader(c, credential, nonce))).sendMeasurement(true);
    expect(stack.leader.acceptedCount()).toBe(before + N);
    for (const [nonce, code] of [
      [0, "PP_ERR_TOKEN_REPLAYED"],
      [N - 1, "PP_ERR_TOKEN_REPLAYED"],
      [N, "PP_ERR_TOKEN_SIGNATURE"],
    ] as const) {
      // Through @divviup/dap: the sealed problem document reaches it.
      const e = await dapTask(stack, withAuthorization(f, presentationHeader(c, credential, nonce)))
        .sendMeasurement(true)
        .catch((x: unknown) => x);
      expect(String(e), `nonce ${nonce}`).toContain(code);
      // And as HTTP: a sealed 401 with a fresh ARC challenge (rate-limit included).
      const res = await f(uploadUrl(LEADER, stack.tasks.count.idBase64Url), {
        method: "PUT",
        headers: { "content-type": "application/dap-report", authorization: presentationHeader(c, credential, nonce) },
        body: "x",
      });
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toMatch(/rate-limit=3/);
      expect(((await res.json()) as { code: string }).code).toBe(code);
    }
    expect(stack.leader.acceptedCount()).toBe(before + N);
  });

  it("accepts a presentation raced by 25 concurrent uploads exactly once", async () => {
    const c = await learnChallenge(stack);
    const credential = await fetchCredential(stack, c);
    const f = createObliviousFetch({ relay: stack.relayUrl, keys: stack.keysUrl });
    const auth = presentationHeader(c, credential, 0);
    const before = stack.leader.acceptedCount();
    const results = await Promise.allSettled(Array.from({ length: 25 }, (_, i) => dapTask(stack, withAuthorization(f, auth)).sendMeasurement(i % 2 === 0)));
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    expect(stack.leader.acceptedCount()).toBe(before + 1);
  });

  it("with a quota of one credential per window, exactly N uploads per context; the next epoch accepts N more", async () => {
    const { f, tokens } = client(quotaStack);
    const dap = dapTask(quotaStack, f);
    const before = quotaStack.leader.acceptedCount();
    for (let i = 0; i < N; i++) await dap.sendMeasurement(true);
    const e = await dap.sendMeasurement(true).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ProtocolError);
    expect((e as ProtocolError).code).toBe("CLIENT_ERR_QUOTA_EXHAUSTED");
    expect(quotaStack.leader.acceptedCount()).toBe(before + N);
    // The next epoch: a new redemption context, the same credential (credential context "none").
    clock.t = Date.now() + EPOCH_MS;
    for (let i = 0; i < N; i++) await dap.sendMeasurement(false);
    expect(quotaStack.leader.acceptedCount()).toBe(before + 2 * N);
    expect(tokens.stats().issued).toBe(1);
  });

  it("keeps the credential and the tokens out of every server log line", () => {
    const all = [...stack.lines, ...quotaStack.lines].join("\n");
    expect(all.length).toBeGreaterThan(0);
    expect(all).not.toContain(STACK_CREDENTIAL);
    expect(all).not.toMatch(/PrivateToken token=/);
  });
});
