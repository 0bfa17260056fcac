// Hostile clients over real sockets against the gateway, the relay and the issuer (in process, on
// loopback): valid requests mutated at the HTTP level (bit flips, truncations, extensions, wrong or
// duplicated headers, broken framing, head bytes changed, huge and numerous headers, bodies sent
// slowly) and, for the gateway, inside the encryption (a mutated Binary HTTP request or token, sealed
// properly). A client's mistake is never answered with a 5xx, nothing is logged as an unexpected
// error, and every server is healthy and serves a valid request afterwards. Slow clients are cut
// off with 408 (headers and body), oversized heads with 431.
//
// Bounded: a fixed number of requests per server (VEIL_HTTP_FUZZ_RUNS, default 120) with a fixed seed.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeResponse, encodeRequest, type Field } from "../../core/bhttp/index.js";
import { encapsulateRequest, type KeyConfig } from "../../core/ohttp/index.js";
import { createTokenRequest, encodeTokenChallenge, formatAuthorization, type TokenChallenge } from "../../core/privacypass/index.js";
import { fromBase64Url } from "../../core/bytes.js";
import { createDapTask, startDapAggregator, type DapAggregator, type DapTask } from "../../demo/dap-aggregator.js";
import { parseGatewayConfig } from "../../gateway/config.js";
import { writeKeyFile } from "../../gateway/key-file.js";
import { startGateway, type StartedGateway } from "../../gateway/main.js";
import { startIssuer, type StartedIssuer } from "../../issuer/main.js";
import { createLogger } from "../../server/logging.js";
import { captureLines, makeKeyData } from "../helpers/gateway-fixture.js";
import { CREDENTIAL, issuerConfig, rsaKeyPool } from "../helpers/issuer.js";
import { fetchKeyConfig } from "../helpers/oblivious-fetch.js";
import { rawExchange, rawRequest, type RawPart } from "../helpers/raw-http.js";
import { startTestRelay, type TestRelay } from "../helpers/relay-harness.js";
import { makeDapReports, sealedUpload, startDirectoryServer, uploadPath, type DirectoryServer } from "../helpers/token-gateway.js";
import { makeBlindRsaIssuerKey, makeToken } from "../helpers/tokens.js";

const RUNS = Number(process.env.VEIL_HTTP_FUZZ_RUNS ?? 120);
const LIMITS = { headersTimeoutMs: 400, requestTimeoutMs: 800, maxHeaderBytes: 4096 };
const ISSUER_NAME = "issuer.example";
const key = makeBlindRsaIssuerKey({ reuse: 0 });
const CHALLENGE: TokenChallenge = { tokenType: 2, issuerName: ISSUER_NAME, redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] };

const dir = mkdtempSync(join(tmpdir(), "veil-httpfuzz-"));
const logs = captureLines();
let task: DapTask;
let leader: DapAggregator;
let helper: DapAggregator;
let directory: DirectoryServer;
let gateway: StartedGateway;
let relay: TestRelay;
let issuer: StartedIssuer;
let keyConfig: KeyConfig;
let reports: Uint8Array[];
let tokenRequest: Uint8Array;

beforeAll(async () => {
  task = await createDapTask();
  leader = await startDapAggregator({ role: "leader", tasks: [task] });
  helper = await startDapAggregator({ role: "helper", tasks: [task] });
  directory = await startDirectoryServer([{ key, notBeforeSec: Math.floor(Date.now() / 1000) - 60 }]);
  reports = await makeDapReports(task, leader.url, helper.url, 6);
  const keyFile = join(dir, "gateway-keys.json");
  writeKeyFile(keyFile, (await makeKeyData([{ keyId: 1 }])).data);
  gateway = await startGateway(
    parseGatewayConfig({
      listen: { host: "127.0.0.1", port: 0 },
      keys: keyFile,
      targets: { "https://leader.example": leader.url },
      limits: LIMITS,
      upstream: { connectTimeoutMs: 1000, totalTimeoutMs: 5000 },
      tokens: { required: true, issuers: [{ name: ISSUER_NAME, directory: directory.url, keyLifetimeSec: 3600 }], store: "memory", greaseProbability: 0 },
    }),
    { log: createLogger("gateway", { destination: logs.stream }), handleSignals: false },
  );
  keyConfig = await fetchKeyConfig(gateway.url);
  relay = await startTestRelay({
    routes: [{ path: "/leader-gateway", gateway: `${gateway.url}/gateway`, keys: `${gateway.url}/ohttp-keys` }],
    limits: LIMITS,
    rateLimit: { perClientPerWindow: 0 },
  });
  issuer = await startIssuer(
    issuerConfig(dir, { limits: LIMITS, attester: { credentials: [CREDENTIAL], tokensPerWindow: 100_000, windowSec: 60 } }),
    { log: createLogger("issuer", { destination: logs.stream }), handleSignals: false, generateRsaKey: rsaKeyPool() },
  );
  const d = (await (await fetch(`${issuer.url}/.well-known/private-token-issuer-directory`)).json()) as { "token-keys": { "token-key": string; "not-before": number }[] };
  const now = Math.floor(Date.now() / 1000);
  const current = d["token-keys"].filter((k) => k["not-before"] <= now).sort((a, b) => a["not-before"] - b["not-before"])[0]!;
  const issuerChallenge = encodeTokenChallenge({ ...CHALLENGE, issuerName: "issuer.example" });
  tokenRequest = (await createTokenRequest(issuerChallenge, fromBase64Url(current["token-key"])!)).request;
}, 60_000);

afterAll(async () => {
  await relay?.stop();
  await gateway?.stop();
  await issuer?.stop();
  await directory?.close();
  await leader?.close();
  await helper?.close();
  rmSync(dir, { recursive: true, force: true });
});

// --- valid requests and their mutations -------------------------------------------------------

interface Req {
  method: string;
  path: string;
  headers: [string, string][];
  body: Buffer;
}

function innerUpload(report: Uint8Array, authorization: string): Uint8Array {
  const headers: Field[] = [["content-type", "application/dap-report"], ["authorization", authorization]];
  return encodeRequest({ method: "PUT", scheme: "https", authority: "leader.example", path: uploadPath(task), headers, body: report, trailers: [] });
}

async function sealed(inner: Uint8Array): Promise<Buffer> {
  return Buffer.from((await encapsulateRequest(keyConfig, inner)).encapsulated);
}

function baseRequest(path: string, contentType: string, body: Buffer, extra: [string, string][] = []): Req {
  return { method: "POST", path, headers: [["Host", "veil.test"], ["Content-Type", contentType], ["Content-Length", String(body.length)], ...extra], body };
}

type Mutation = (r: Req) => Req;
const setHeader = (r: Req, name: string, value: string | undefined): Req => {
  const headers = r.headers.filter(([n]) => n.toLowerCase() !== name.toLowerCase());
  if (value !== undefined) headers.push([name, value]);
  return { ...r, headers };
};
const withBody = (r: Req, body: Buffer, keepLength = false): Req => (keepLength ? { ...r, body } : setHeader({ ...r, body }, "Content-Length", String(body.length)));

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  // Bit flips in the body.
  fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 3 }).map((flips) => (r: Req) => {
    const b = Buffer.from(r.body);
    for (const [at, bit] of flips) if (b.length > 0) b[at % b.length]! ^= 1 << bit;
    return withBody(r, b);
  }),
  // Truncations, with Content-Length adjusted or still promising the whole body.
  fc.tuple(fc.nat(), fc.boolean()).map(([n, keep]) => (r: Req) => withBody(r, r.body.subarray(0, n % (r.body.length + 1)), keep)),
  // Extensions.
  fc.uint8Array({ minLength: 1, maxLength: 64 }).map((x) => (r: Req) => withBody(r, Buffer.concat([r.body, Buffer.from(x)]))),
  fc.constant((r: Req) => withBody(r, Buffer.alloc(0))),
  // Wrong or doubled headers.
  fc.constantFrom(undefined, "text/plain", "application/json", "message/ohttp-res", "message/ohttp-req; x=1", "MESSAGE/OHTTP-REQ", "message/ohttp-req, text/plain", "", "application/private-token-request").map(
    (t) => (r: Req) => setHeader(r, "Content-Type", t),
  ),
  fc.constantFrom(undefined, "-1", "+5", "abc", "1, 1", "99999999999999999999", "0").map((v) => (r: Req) => setHeader(r, "Content-Length", v)),
  fc.constant((r: Req) => ({ ...r, headers: [...r.headers, ["Content-Length", String(r.body.length + 1)] as [string, string]] })),
  fc.constant((r: Req) => ({ ...r, headers: [...r.headers, ["Transfer-Encoding", "chunked"] as [string, string]] })),
  fc.constant((r: Req) => {
    // Valid chunked framing instead of Content-Length.
    const chunked = Buffer.concat([Buffer.from(`${r.body.length.toString(16)}\r\n`), r.body, Buffer.from("\r\n0\r\n\r\n")]);
    return { ...setHeader(r, "Content-Length", undefined), headers: [...setHeader(r, "Content-Length", undefined).headers, ["Transfer-Encoding", "chunked"] as [string, string]], body: chunked };
  }),
  fc.constantFrom("Expect: 100-continue", "Content-Encoding: gzip", "Connection: upgrade", "Upgrade: websocket", "Authorization: Bearer x", "X-Forwarded-For: 10.0.0.1", "Host: a, b", "Range: bytes=0-1").map(
    (line) => (r: Req) => {
      const [n, v] = line.split(": ") as [string, string];
      return { ...r, headers: [...r.headers, [n, v] as [string, string]] };
    },
  ),
  fc.array(fc.tuple(fc.stringMatching(/^[A-Za-z0-9-]{1,20}$/), fc.string({ maxLength: 40, unit: "binary-ascii" })), { minLength: 1, maxLength: 150 }).map(
    (hs) => (r: Req) => ({ ...r, headers: [...r.headers, ...hs.map(([n, v]) => [n, v.replace(/[\r\n]/g, "")] as [string, string])] }),
  ),
  fc.integer({ min: 1, max: 20_000 }).map((n) => (r: Req) => ({ ...r, headers: [...r.headers, ["X-Big", "a".repeat(n)] as [string, string]] })),
  // Other methods and paths.
  fc.constantFrom("GET", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH", "CONNECT", "FOO", "post").map((m) => (r: Req) => ({ ...r, method: m })),
  fc.constantFrom("/", "//gateway", "/gateway/", "/gateway?x=1", "/GATEWAY", "/%2e%2e/gateway", "*", "http://evil.example/gateway", "/leader-gateway/ohttp-keys", "/token-request/..").map(
    (p) => (r: Req) => ({ ...r, path: p }),
  ),
);

/** A request as bytes, a byte of its head possibly changed, sent in parts with short pauses. */
const delivery = fc.record({
  headFlip: fc.oneof(
    { weight: 4, arbitrary: fc.constant(undefined) },
    { weight: 1, arbitrary: fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })) },
  ),
  splits: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 30 })), { maxLength: 3 }),
});

function toParts(r: Req, d: { headFlip: [number, number] | undefined; splits: [number, number][] }): RawPart[] {
  const bytes = rawRequest(r.method, r.path, r.headers, r.body);
  if (d.headFlip !== undefined) {
    const headLength = bytes.indexOf("\r\n\r\n");
    const at = d.headFlip[0] % Math.max(1, headLength);
    bytes[at]! ^= d.headFlip[1];
  }
  const cuts = d.splits.map(([at, ms]) => [at % (bytes.length + 1), ms] as const).sort((a, b) => a[0] - b[0]);
  const parts: RawPart[] = [];
  let from = 0;
  let pause = 0;
  for (const [at, ms] of cuts) {
    if (at <= from) continue;
    parts.push({ bytes: bytes.subarray(from, at), delayMs: pause });
    from = at;
    pause = ms;
  }
  parts.push({ bytes: bytes.subarray(from), delayMs: pause });
  return parts;
}

function unexpectedErrors(): string[] {
  return logs.lines.filter((l) => /"level":(50|60)/.test(l));
}

/** Runs `tasks` with `concurrency` at a time. */
async function pool<T>(items: T[], concurrency: number, f: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await f(items[next++]!);
    }),
  );
}

/**
 * Sends RUNS mutated requests (fixed seed, 8 at a time: many wait for a server timeout) and checks
 * that none gets a 5xx; returns how often each status was seen.
 */
async function fuzzServer(port: number, base: () => Promise<Req>, seed: number): Promise<Map<number, number>> {
  const seen = new Map<number, number>();
  // No mutation at all sometimes: the valid request, delivered in slow parts.
  const cases = fc.sample(fc.tuple(fc.array(mutation, { maxLength: 2 }), delivery), { seed, numRuns: RUNS });
  const failures: string[] = [];
  await pool(cases, 8, async ([ms, d]) => {
    let r = await base();
    for (const m of ms) r = m(r);
    const res = await rawExchange(port, toParts(r, d), { timeoutMs: 4000, endAfterMs: 1000 });
    for (const s of res.statuses) {
      seen.set(s, (seen.get(s) ?? 0) + 1);
      if (s >= 500) failures.push(`${s} for ${r.method} ${r.path} ${JSON.stringify(r.headers)} body ${r.body.length} bytes ${JSON.stringify(d)}`);
    }
  });
  expect(failures).toEqual([]);
  expect(unexpectedErrors()).toEqual([]);
  return seen;
}

async function healthy(url: string): Promise<void> {
  const res = await fetch(new URL("/healthz", url));
  expect(res.status).toBe(200);
}

// --- the fuzzing ----------------------------------------------------------------------------

describe("mutated requests over HTTP: never a 5xx for a client's mistake, healthy afterwards", () => {
  it("gateway (outer request)", async () => {
    const inner = innerUpload(reports[0]!, formatAuthorization(makeToken({ key, challenge: CHALLENGE })));
    const seen = await fuzzServer(gateway.port, async () => baseRequest("/gateway", "message/ohttp-req", await sealed(inner)), 0x0f00);
    // The fuzzing reached the sealed path as well as the plain refusals.
    expect(seen.get(200) ?? 0).toBeGreaterThan(0);
    expect([...seen.keys()].some((s) => s >= 400)).toBe(true);
    await healthy(gateway.url);
  });

  it("gateway (inside the encryption: mutated Binary HTTP and tokens, sealed properly)", async () => {
    const token = formatAuthorization(makeToken({ key, challenge: CHALLENGE }));
    const valid = innerUpload(reports[1]!, token);
    const innerMutation = fc.oneof(
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 3 }).map((flips) => {
        const b = new Uint8Array(valid);
        for (const [at, bit] of flips) b[at % b.length]! ^= 1 << bit;
        return b;
      }),
      fc.nat().map((n) => valid.subarray(0, n % valid.length)),
      fc.uint8Array({ minLength: 1, maxLength: 40 }).map((x) => Uint8Array.of(...valid, ...x)),
      // A character of the Authorization value replaced by another visible one.
      fc.tuple(fc.nat(), fc.integer({ min: 0x20, max: 0x7e })).map(([at, c]) => {
        const i = at % token.length;
        return innerUpload(reports[1]!, token.slice(0, i) + String.fromCharCode(c) + token.slice(i + 1));
      }),
      fc.uint8Array({ maxLength: 200 }),
    );
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(innerMutation, async (inner) => {
        const { encapsulated, response } = await encapsulateRequest(keyConfig, inner);
        const res = await fetch(new URL("/gateway", gateway.url), { method: "POST", headers: { "content-type": "message/ohttp-req" }, body: new Uint8Array(encapsulated) });
        expect(res.status).toBe(200);
        const answer = decodeResponse(await response.decapsulateResponse(new Uint8Array(await res.arrayBuffer())));
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
        expect(answer.status).toBeLessThan(500);
      }),
      { seed: 0x0f01, numRuns: RUNS, endOnFailure: true },
    );
    expect([...statuses.keys()].some((s) => s >= 400 && s < 500)).toBe(true);
    expect(unexpectedErrors()).toEqual([]);
    await healthy(gateway.url);
  });

  it("relay", async () => {
    const inner = innerUpload(reports[2]!, formatAuthorization(makeToken({ key, challenge: CHALLENGE })));
    await fuzzServer(relay.port, async () => baseRequest("/leader-gateway", "message/ohttp-req", await sealed(inner)), 0x0f02);
    expect(relay.lines.filter((l) => /"level":(50|60)/.test(l))).toEqual([]);
    await healthy(relay.url);
  });

  it("issuer", async () => {
    const base = async (): Promise<Req> => baseRequest("/token-request", "application/private-token-request", Buffer.from(tokenRequest), [["Authorization", `Bearer ${CREDENTIAL}`]]);
    const authMutation = fc.constantFrom(undefined, "Bearer", "Bearer ", `bearer ${CREDENTIAL}`, `Bearer ${CREDENTIAL}x`, "Basic dXNlcjpwYXNz", `Bearer  ${CREDENTIAL} `, "PrivateToken token=AAAA", "Bearer " + "A".repeat(5000));
    await fuzzServer(issuer.port, base, 0x0f03);
    await fc.assert(
      fc.asyncProperty(authMutation, async (auth) => {
        const r = setHeader(await base(), "Authorization", auth);
        const res = await rawExchange(issuer.port, toParts(r, { headFlip: undefined, splits: [] }), { endAfterMs: 1000 });
        for (const s of res.statuses) expect(s).toBeLessThan(500);
      }),
      { seed: 0x0f04, numRuns: 20 },
    );
    expect(unexpectedErrors()).toEqual([]);
    await healthy(issuer.url);
  });

  it("each server still serves a valid request afterwards", async () => {
    const up = await sealedUpload(gateway.url, keyConfig, { path: uploadPath(task), body: reports[3]!, authorization: formatAuthorization(makeToken({ key, challenge: CHALLENGE })) });
    expect(up.status).toBe(201);
    const viaRelay = await rawExchange(
      relay.port,
      rawRequest("POST", "/leader-gateway", [["Host", "r"], ["Content-Type", "message/ohttp-req"], ["Content-Length", "0"]]),
    );
    expect(viaRelay.statuses).toEqual([400]);
    const inner = innerUpload(reports[4]!, formatAuthorization(makeToken({ key, challenge: CHALLENGE })));
    const { encapsulated, response } = await encapsulateRequest(keyConfig, inner);
    const res = await fetch(`${relay.url}/leader-gateway`, { method: "POST", headers: { "content-type": "message/ohttp-req" }, body: new Uint8Array(encapsulated) });
    expect(res.status).toBe(200);
    expect(decodeResponse(await response.decapsulateResponse(new Uint8Array(await res.arrayBuffer()))).status).toBe(201);
    const tok = await fetch(`${issuer.url}/token-request`, {
      method: "POST",
      headers: { "content-type": "application/private-token-request", authorization: `Bearer ${CREDENTIAL}` },
      body: new Uint8Array(tokenRequest),
    });
    expect(tok.status).toBe(200);
  });
});

// --- slow clients and header limits, per server ----------------------------------------------------

describe.each([
  ["gateway", () => gateway.port, "/gateway", "message/ohttp-req"],
  ["relay", () => relay.port, "/leader-gateway", "message/ohttp-req"],
  ["issuer", () => issuer.port, "/token-request", "application/private-token-request"],
] as const)("%s limits", (_name, port, path, contentType) => {
  it.concurrent("answers 408 and closes when the request head does not arrive in time", async () => {
    const res = await rawExchange(port(), `POST ${path} HTTP/1.1\r\nHost: r\r\nContent-Type: ${contentType}\r\n`, { keepOpen: true, timeoutMs: 5000 });
    expect(res.statuses).toEqual([408]);
    expect(res.closedByServer).toBe(true);
  });

  it.concurrent("answers 408 and closes when the body does not arrive in time", async () => {
    const head = `POST ${path} HTTP/1.1\r\nHost: r\r\nContent-Type: ${contentType}\r\nContent-Length: 100\r\n\r\n`;
    const res = await rawExchange(port(), [{ bytes: Buffer.from(head + "x".repeat(10)) }, { bytes: Buffer.from("y"), delayMs: 200 }], { keepOpen: true, timeoutMs: 5000 });
    expect(res.statuses).toEqual([408]);
    expect(res.closedByServer).toBe(true);
  });

  it("serves a body that trickles in within the request timeout", async () => {
    const body = Buffer.alloc(30, 1);
    const head = Buffer.from(`POST ${path} HTTP/1.1\r\nHost: r\r\nContent-Type: ${contentType}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`);
    const parts: RawPart[] = [{ bytes: head }, ...[0, 10, 20].map((o) => ({ bytes: body.subarray(o, o + 10), delayMs: 60 }))];
    const res = await rawExchange(port(), parts, { keepOpen: true });
    // Garbage, so a 4xx, but an answer to the whole request: not a timeout.
    expect(res.statuses).toHaveLength(1);
    expect(res.statuses[0]).toBeGreaterThanOrEqual(400);
    expect(res.statuses[0]).toBeLessThan(500);
    expect(res.statuses[0]).not.toBe(408);
  });

  it("answers 431 for a request head over maxHeaderBytes", async () => {
    const res = await rawExchange(port(), rawRequest("POST", path, [["Host", "r"], ["Content-Length", "0"], ["X-Big", "a".repeat(LIMITS.maxHeaderBytes)]]));
    expect(res.statuses).toEqual([431]);
  });

  it("answers a head of 400 small fields (under the byte limit) without a 5xx", async () => {
    const many = Array.from({ length: 400 }, (_, i) => [`x${i}`, ""] as [string, string]);
    const head = rawRequest("POST", path, [["Host", "r"], ["Content-Type", contentType], ["Content-Length", "0"], ...many]);
    expect(head.length).toBeLessThan(LIMITS.maxHeaderBytes);
    const res = await rawExchange(port(), head);
    expect(res.statuses).toHaveLength(1);
    expect(res.statuses[0]).toBeLessThan(500);
  });
});
