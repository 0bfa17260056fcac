import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createServer } from "node:net";
import { Buffer } from "node:buffer";
import { createObliviousFetch, createTokenSource, type ObliviousFetchOptions, type TokenSource } from "../../../client/index.js";
import { ProtocolError } from "../../../core/errors.js";
import { startStandIn, ok, problem, type StandIn } from "../../helpers/client-stand-in.js";
import { rejectsWith } from "../../helpers/ohttp.js";

let s: StandIn;
const sources: TokenSource[] = [];

beforeEach(async () => {
  s = await startStandIn();
});
afterEach(async () => {
  for (const t of sources.splice(0)) t.close();
  await s.close();
});

function ofetch(extra: Partial<ObliviousFetchOptions> = {}) {
  return createObliviousFetch({ relay: s.relayUrl, keys: s.keysUrl, retryDelayMs: 0, ...extra });
}

function tokens(extra: Partial<Parameters<typeof createTokenSource>[0]> = {}): TokenSource {
  const t = createTokenSource({ issuer: s.issuerUrl, credential: "good-credential", batch: 3, refillJitterMs: 0, ...extra });
  sources.push(t);
  return t;
}

async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address() as { port: number };
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

const UPLOAD = "https://leader.example/tasks/abc/reports";

describe("oblivious fetch: messages", () => {
  it("carries method, scheme, authority, path with query, fields and body to the gateway", async () => {
    s.tokensRequired = false;
    const f = ofetch();
    const body = Buffer.from([1, 2, 3, 0, 255]);
    const res = await f("https://leader.example:8443/api/tasks/x/reports?a=1&b=2", {
      method: "PUT",
      headers: { "Content-Type": "application/dap-report", "X-Extra": "v" },
      body,
    });
    expect(res.status).toBe(201);
    const inner = s.inner.at(-1)!.request;
    expect(inner.method).toBe("PUT");
    expect(inner.scheme).toBe("https");
    expect(inner.authority).toBe("leader.example:8443");
    expect(inner.path).toBe("/api/tasks/x/reports?a=1&b=2");
    expect(inner.headers).toContainEqual(["content-type", "application/dap-report"]);
    expect(inner.headers).toContainEqual(["x-extra", "v"]);
    expect([...inner.body]).toEqual([1, 2, 3, 0, 255]);
  });

  it("returns the target's status, fields and body unchanged, exact content type included", async () => {
    s.handler = () => ok(200, new Uint8Array([0, 1, 2, 3]), [["content-type", "application/dap-hpke-config-list"], ["cache-control", "max-age=86400"]]);
    const res = await ofetch()("https://leader.example/hpke_config?task_id=abc", { headers: { Accept: "application/dap-hpke-config-list" } });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/dap-hpke-config-list");
    expect(res.headers.get("cache-control")).toBe("max-age=86400");
    expect([...new Uint8Array(await res.arrayBuffer())]).toEqual([0, 1, 2, 3]);
    expect(s.inner.at(-1)!.request.headers).toContainEqual(["accept", "application/dap-hpke-config-list"]);
  });

  it("passes an inner problem document through untouched (a DAP outdatedConfig reaches the DAP client)", async () => {
    s.tokensRequired = false;
    const doc = { type: "urn:ietf:params:ppm:dap:error:outdatedConfig", title: "t", status: 400, taskid: "x" };
    s.handler = () => ok(400, JSON.stringify(doc), [["content-type", "application/problem+json"]]);
    const res = await ofetch()(UPLOAD, { method: "PUT", body: new Uint8Array([1]) });
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(await res.json()).toEqual(doc);
  });

  it("accepts URL and Request inputs and string bodies, and answers 204 with no body", async () => {
    s.tokensRequired = false;
    s.handler = () => ok(204);
    const f = ofetch();
    const a = await f(new URL("https://t.example/x"), { method: "POST", body: "hello" });
    expect(a.status).toBe(204);
    expect(a.body).toBeNull();
    expect(new TextDecoder().decode(s.inner.at(-1)!.request.body)).toBe("hello");
    expect(s.inner.at(-1)!.request.headers).toContainEqual(["content-type", "text/plain;charset=UTF-8"]);
    await f(new Request("https://t.example/y", { method: "DELETE" }));
    expect(s.inner.at(-1)!.request.method).toBe("DELETE");
  });

  it("posts only the ciphertext to the relay, as message/ohttp-req", async () => {
    s.tokensRequired = false;
    await ofetch()("https://t.example/secret-path", { method: "POST", body: "secret-body" });
    const post = s.relayPosts.at(-1)!;
    expect(post.headers["content-type"]).toBe("message/ohttp-req");
    expect(post.headers["accept"]).toBe("message/ohttp-res");
    expect(post.headers["cookie"]).toBeUndefined();
    expect(post.headers["authorization"]).toBeUndefined();
  });
});

describe("oblivious fetch: options", () => {
  it("refuses a plain-http relay or key URL that is not loopback", () => {
    expect(() => createObliviousFetch({ relay: "http://relay.example/r", keys: s.keysUrl })).toThrow(/relay: must be an https URL/);
    expect(() => createObliviousFetch({ relay: s.relayUrl, keys: "http://gw.example/ohttp-keys" })).toThrow(/keys: must be an https URL/);
    expect(() => createObliviousFetch({ relay: "https://relay.example/r", keys: "https://gw.example/ohttp-keys" })).not.toThrow();
    expect(() => createObliviousFetch({ relay: s.relayUrl, keys: new Uint8Array([0, 1]) })).toThrow(ProtocolError);
    expect(() => ofetch({ retries: -1 })).toThrow(/retries/);
  });
});

describe("oblivious fetch: key configurations", () => {
  it("fetches the keys once and caches them", async () => {
    s.tokensRequired = false;
    const f = ofetch();
    await f("https://t.example/a");
    await f("https://t.example/b");
    expect(s.keysFetches).toBe(1);
  });

  it("uses pinned keys without fetching any", async () => {
    s.tokensRequired = false;
    const f = ofetch({ keys: s.keysBytes });
    expect((await f("https://t.example/a")).status).toBe(201);
    expect(s.keysFetches).toBe(0);
  });

  it("refetches the keys once when the gateway answers the ohttp-key problem, then succeeds", async () => {
    s.tokensRequired = false;
    const f = ofetch();
    await f("https://t.example/a");
    await s.rotateKey(7);
    expect((await f("https://t.example/b")).status).toBe(201);
    expect(s.keysFetches).toBe(2);
    expect(f.stats().keyRefreshes).toBe(1);
    expect((await f.keys()).config.keyId).toBe(7);
  });

  it("refetches the keys on a 422 too", async () => {
    s.tokensRequired = false;
    const f = ofetch();
    await f.keys();
    s.unsealed.push({ status: 422 });
    expect((await f("https://t.example/a")).status).toBe(201);
    expect(f.stats().keyRefreshes).toBe(1);
  });

  it("gives up with CLIENT_ERR_KEY_CONFIG_REFUSED when the refetched keys are refused too", async () => {
    s.tokensRequired = false;
    const f = ofetch();
    await f.keys();
    const refusal = { status: 400, headers: { "content-type": "application/problem+json" }, body: JSON.stringify({ type: "https://iana.org/assignments/http-problem-types#ohttp-key" }) };
    s.unsealed.push(refusal, refusal);
    await rejectsWith(f("https://t.example/a"), "CLIENT_ERR_KEY_CONFIG_REFUSED");
    expect(s.keysFetches).toBe(2);
  });

  it("cannot refresh pinned keys: a refusal is CLIENT_ERR_KEY_CONFIG_REFUSED at once", async () => {
    s.tokensRequired = false;
    const pinned = s.keysBytes;
    await s.rotateKey(9);
    await rejectsWith(ofetch({ keys: pinned })("https://t.example/a"), "CLIENT_ERR_KEY_CONFIG_REFUSED");
    expect(s.relayPosts.length).toBe(1);
  });

  it("checks the relay's copy and sends nothing when it differs", async () => {
    s.tokensRequired = false;
    expect((await ofetch({ relayKeys: true })("https://t.example/a")).status).toBe(201);
    expect(s.relayKeysFetches).toBe(1);
    s.relayKeysBytes = new Uint8Array([...s.keysBytes.subarray(0, -1), s.keysBytes.at(-1)! ^ 1]);
    const posts = s.relayPosts.length;
    await rejectsWith(ofetch({ relayKeys: s.relayKeysUrl })("https://t.example/a"), "CLIENT_ERR_KEYS_INCONSISTENT");
    expect(s.relayPosts.length).toBe(posts);
  });

  it("reports unusable key configurations as CLIENT_ERR_KEYS_UNAVAILABLE", async () => {
    s.keysBytes = new Uint8Array([0, 3, 1, 2, 3]);
    await rejectsWith(ofetch()("https://t.example/a"), "CLIENT_ERR_KEYS_UNAVAILABLE");
  });
});

describe("oblivious fetch: unsealed errors and resends", () => {
  it("reports a relay that cannot be reached as CLIENT_ERR_RELAY_UNREACHABLE", async () => {
    const port = await closedPort();
    const f = createObliviousFetch({ relay: `http://127.0.0.1:${port}/relay`, keys: s.keysBytes, retries: 0 });
    await rejectsWith(f("https://t.example/a"), "CLIENT_ERR_RELAY_UNREACHABLE");
  });

  it("reports the relay's 429 as CLIENT_ERR_RATE_LIMITED with its Retry-After", async () => {
    s.unsealed.push({ status: 429, headers: { "retry-after": "30" } });
    const e = await ofetch()("https://t.example/a").catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ProtocolError);
    expect((e as ProtocolError).code).toBe("CLIENT_ERR_RATE_LIMITED");
    expect((e as ProtocolError).headers["retry-after"]).toBe("30");
  });

  it("reports a relay timeout as CLIENT_ERR_TIMEOUT", async () => {
    s.relayDelayMs = 300;
    await rejectsWith(ofetch({ timeoutMs: 50, retries: 0 })("https://t.example/a"), "CLIENT_ERR_TIMEOUT");
  });

  it("reports an undecryptable 200 as CLIENT_ERR_BAD_RESPONSE", async () => {
    s.unsealed.push({ status: 200, headers: { "content-type": "message/ohttp-res" }, body: "x".repeat(64) });
    await rejectsWith(ofetch()("https://t.example/a"), "CLIENT_ERR_BAD_RESPONSE");
  });

  it("resends an idempotent request once after the relay's 502, with a fresh encapsulation", async () => {
    s.tokensRequired = false;
    s.unsealed.push({ status: 502 });
    const f = ofetch();
    expect((await f("https://t.example/a")).status).toBe(201);
    expect(f.stats().resends).toBe(1);
    expect(s.relayPosts.length).toBe(2);
  });

  it("does not resend a tokenless POST (not idempotent) after a sealed 502", async () => {
    s.tokensRequired = false;
    s.sealed.push(problem(502, "target unreachable"));
    const res = await ofetch()("https://t.example/a", { method: "POST", body: "x" });
    expect(res.status).toBe(502);
    expect(s.inner.length).toBe(1);
  });

  it("turns the relay's other refusals into CLIENT_ERR_RELAY_REFUSED", async () => {
    s.unsealed.push({ status: 413, headers: { "content-type": "application/problem+json" }, body: JSON.stringify({ title: "Request body too large" }) });
    await expect(ofetch()("https://t.example/a")).rejects.toThrow(/413 \(Request body too large\)/);
  });
});

describe("oblivious fetch: tokens", () => {
  it("prepare() learns the challenge with one tokenless request and fetches a batch ahead of the uploads", async () => {
    const t = tokens({ batch: 4, lowWater: 0 });
    const f = ofetch({ tokens: t });
    await f.prepare(UPLOAD);
    expect(s.inner.length).toBe(1);
    expect(s.inner[0]!.token).toBe("none");
    expect(s.tokenRequests.length).toBe(4);
    // The stand-in issuer serves no batches: one batched request (415), then single requests.
    expect(s.batchRefusals).toBe(1);
    expect(s.tokenRequests.every((r) => r.authorization === "Bearer good-credential")).toBe(true);
    expect(t.stats().stock).toBe(4);
    for (let i = 0; i < 3; i++) {
      const res = await f(UPLOAD, { method: "PUT", body: new Uint8Array([i]) });
      expect(res.status).toBe(201);
    }
    const uploads = s.inner.slice(1);
    expect(uploads.map((r) => r.token)).toEqual(["accepted", "accepted", "accepted"]);
    expect(new Set(uploads.map((r) => r.nonce)).size).toBe(3);
    expect(s.tokenRequests.length).toBe(4);
    // The token never reaches the target's handler unseen by the gate; the relay saw none.
    expect(s.relayPosts.every((p) => p.headers["authorization"] === undefined)).toBe(true);
  });

  it("without prepare(), a 401 at upload time fetches a token and retries once", async () => {
    const f = ofetch({ tokens: tokens() });
    const res = await f(UPLOAD, { method: "PUT", body: new Uint8Array([1]) });
    expect(res.status).toBe(201);
    expect(s.inner.map((r) => r.token)).toEqual(["none", "accepted"]);
    expect(f.stats().challengeRetries).toBe(1);
  });

  it("uses each token for one report only", async () => {
    const f = ofetch({ tokens: tokens({ batch: 5 }) });
    await f.prepare(UPLOAD);
    await f(UPLOAD, { method: "PUT", body: new Uint8Array([1]) });
    await f(UPLOAD, { method: "PUT", body: new Uint8Array([2]) });
    const [a, b] = s.inner.slice(1);
    expect(a!.nonce).not.toBe(b!.nonce);
  });

  it("resends the same report with the same token after a sealed 504 (the gateway sees a retry)", async () => {
    const f = ofetch({ tokens: tokens() });
    await f.prepare(UPLOAD);
    s.sealed.push(problem(504, "target timeout"));
    const res = await f(UPLOAD, { method: "PUT", body: new Uint8Array([9]) });
    expect(res.status).toBe(201);
    const [first, second] = s.inner.slice(1);
    expect(first!.token).toBe("accepted");
    expect(second!.token).toBe("retry");
    expect(second!.nonce).toBe(first!.nonce);
    expect(f.stats().resends).toBe(1);
  });

  it("keeps the token bound to a report after an uncertain failure, so the caller's resend reuses it", async () => {
    const f = ofetch({ tokens: tokens(), retries: 0 });
    await f.prepare(UPLOAD);
    s.sealed.push(problem(502, "target unreachable"));
    const body = new Uint8Array([7, 7]);
    expect((await f(UPLOAD, { method: "PUT", body })).status).toBe(502);
    expect((await f(UPLOAD, { method: "PUT", body: new Uint8Array([7, 7]) })).status).toBe(201);
    expect((await f(UPLOAD, { method: "PUT", body: new Uint8Array([8]) })).status).toBe(201);
    const [a, b, c] = s.inner.slice(1);
    expect(b!.nonce).toBe(a!.nonce);
    expect(b!.token).toBe("retry");
    expect(c!.nonce).not.toBe(a!.nonce);
    expect(c!.token).toBe("accepted");
  });

  it("after a definite answer, the same bytes get a new token", async () => {
    const f = ofetch({ tokens: tokens() });
    await f.prepare(UPLOAD);
    const body = new Uint8Array([5]);
    await f(UPLOAD, { method: "PUT", body });
    await f(UPLOAD, { method: "PUT", body });
    const [a, b] = s.inner.slice(1);
    expect(a!.nonce).not.toBe(b!.nonce);
  });

  it("refuses a challenge whose origin_info names another origin (RFC 9577 §2.1)", async () => {
    s.originInfo = ["evil.example"];
    await rejectsWith(ofetch({ tokens: tokens() }).prepare(UPLOAD), "CLIENT_ERR_CHALLENGE");
    expect(s.tokenRequests.length).toBe(0);
  });

  it("accepts an empty origin_info (tokens good for every origin)", async () => {
    s.originInfo = [];
    const f = ofetch({ tokens: tokens() });
    await f.prepare(UPLOAD);
    expect((await f("https://helper.example/tasks/x/reports", { method: "PUT", body: "r" })).status).toBe(201);
  });

  it("refuses a challenge that names another issuer than the one configured", async () => {
    await rejectsWith(ofetch({ tokens: tokens({ issuerName: "other.example" }) }).prepare(UPLOAD), "CLIENT_ERR_CHALLENGE");
  });

  it("reports a refused credential as CLIENT_ERR_CREDENTIAL_REFUSED", async () => {
    const f = ofetch({ tokens: tokens({ credential: "wrong" }) });
    await rejectsWith(f.prepare(UPLOAD), "CLIENT_ERR_CREDENTIAL_REFUSED");
    await rejectsWith(f(UPLOAD, { method: "PUT", body: "r" }), "CLIENT_ERR_CREDENTIAL_REFUSED");
  });

  it("reports an exhausted quota as CLIENT_ERR_QUOTA_EXHAUSTED with Retry-After", async () => {
    s.quota = 2;
    const f = ofetch({ tokens: tokens({ batch: 2, lowWater: 0 }) });
    await f.prepare(UPLOAD);
    await f(UPLOAD, { method: "PUT", body: "1" });
    await f(UPLOAD, { method: "PUT", body: "2" });
    const e = await f(UPLOAD, { method: "PUT", body: "3" }).catch((x: unknown) => x);
    expect((e as ProtocolError).code).toBe("CLIENT_ERR_QUOTA_EXHAUSTED");
    expect((e as ProtocolError).headers["retry-after"]).toBe("3600");
  });

  it("reports a gateway that refuses even a fresh token as CLIENT_ERR_TOKEN_REFUSED", async () => {
    const f = ofetch({ tokens: tokens() });
    await f.prepare(UPLOAD);
    s.refuseTokens = true;
    await expect(f(UPLOAD, { method: "PUT", body: "x" })).rejects.toMatchObject({ code: "CLIENT_ERR_TOKEN_REFUSED" });
    expect(s.inner.slice(1).map((r) => r.token)).toEqual(["refused", "refused"]);
  });

  it("refills the stock in the background once it runs low", async () => {
    const t = tokens({ batch: 3, lowWater: 1 });
    const f = ofetch({ tokens: t });
    await f.prepare(UPLOAD);
    expect(s.tokenRequests.length).toBe(3);
    await f(UPLOAD, { method: "PUT", body: "1" });
    await f(UPLOAD, { method: "PUT", body: "2" });
    await expect.poll(() => t.stats().stock, { timeout: 5000 }).toBe(3);
    expect(s.tokenRequests.length).toBe(5);
  });

  it("never fetches beyond its budget ahead of need, yet still serves a request that finds the stock empty", async () => {
    const t = tokens({ batch: 3, lowWater: 1, budget: 4 });
    const f = ofetch({ tokens: t });
    await f.prepare(UPLOAD);
    expect(s.tokenRequests.length).toBe(3);
    await f(UPLOAD, { method: "PUT", body: "1" });
    await f(UPLOAD, { method: "PUT", body: "2" });
    await expect.poll(() => s.tokenRequests.length, { timeout: 5000 }).toBe(4);
    await f(UPLOAD, { method: "PUT", body: "3" });
    await f(UPLOAD, { method: "PUT", body: "4" });
    // The stock is empty: a background refill is due (refillJitterMs 0). Let its timer fire (timers
    // of the same delay fire in order), then wait for that refill and ask for one more: neither
    // may go beyond the budget.
    await new Promise((r) => setTimeout(r, 0));
    await t.fill(new URL(UPLOAD));
    expect(s.tokenRequests.length).toBe(4);
    expect(t.stats().stock).toBe(0);
    expect((await f(UPLOAD, { method: "PUT", body: "5" })).status).toBe(201);
    expect(s.tokenRequests.length).toBe(5);
  });

  it("sends GETs without a token and never asks the issuer for them", async () => {
    const f = ofetch({ tokens: tokens() });
    expect((await f("https://leader.example/hpke_config")).status).toBe(201);
    expect(s.tokenRequests.length).toBe(0);
    expect(s.inner[0]!.request.headers.some(([n]) => n === "authorization")).toBe(false);
  });

  it("leaves a caller's own Authorization alone", async () => {
    s.tokensRequired = false;
    const f = ofetch({ tokens: tokens() });
    await f(UPLOAD, { method: "PUT", body: "x", headers: { authorization: "Bearer mine" } });
    expect(s.inner[0]!.request.headers).toContainEqual(["authorization", "Bearer mine"]);
    expect(s.tokenRequests.length).toBe(0);
  });
});
