// Opt-in CORS (server/cors.ts) on the relay (over real sockets, lean fast path on), the issuer and
// the gateway's /ohttp-keys (inject): an allowed origin gets a 204 preflight and its origin echoed
// with Vary: Origin; a disallowed origin gets no CORS header at all; no Origin, or no configured
// origins, leaves every answer as it was.

import { request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseGatewayConfig } from "../../gateway/config.js";
import { parseIssuerConfig } from "../../issuer/config.js";
import { buildRelay } from "../../relay/app.js";
import { parseRelayConfig } from "../../relay/config.js";
import { parseCanonicalPost } from "../../relay/http1.js";
import { createLogger } from "../../server/logging.js";
import { createMetrics } from "../../server/metrics.js";
import { makeGateway, type Fixture } from "../helpers/gateway-fixture.js";
import { makeIssuer, tempDir, type IssuerFixture } from "../helpers/issuer.js";
import { fakeKeyConfigs, startStandIn, type StandIn } from "../helpers/relay-gateway-stand-in.js";
import { captureLines } from "../helpers/relay-harness.js";

const APP = "http://127.0.0.1:5173";
const OTHER = "https://evil.example";
const CORS_HEADERS = ["access-control-allow-origin", "access-control-allow-methods", "access-control-allow-headers", "access-control-max-age", "access-control-expose-headers"];

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function send(base: string, method: string, path: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(new URL(path, base), { method, headers: { ...headers, ...(body === undefined ? {} : { "content-length": String(Buffer.byteLength(body)) }) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

function expectNoCors(headers: Record<string, unknown>): void {
  for (const h of CORS_HEADERS) expect(headers[h], h).toBeUndefined();
}

/** With CORS on, every answer of a covered resource varies by Origin (shared caches keep them apart). */
function expectVaryOrigin(headers: Record<string, unknown>): void {
  expect(JSON.stringify(headers["vary"] ?? "")).toMatch(/\borigin\b/i);
}

async function startRelay(gw: StandIn, cors?: unknown): Promise<{ app: FastifyInstance; url: string }> {
  const { stream } = captureLines();
  const config = parseRelayConfig({
    listen: { host: "127.0.0.1", port: 0 },
    routes: [{ path: "/leader-gateway", gateway: `${gw.url}/gateway`, keys: `${gw.url}/ohttp-keys` }],
    ...(cors === undefined ? {} : { cors }),
  });
  const app = buildRelay(config, { log: createLogger("relay", { destination: stream }), metrics: createMetrics("relay", { defaultMetrics: false }) });
  await app.listen({ host: "127.0.0.1", port: 0 });
  return { app, url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` };
}

describe("cors config", () => {
  it("defaults to no origins in relay, issuer and gateway", () => {
    expect(parseRelayConfig({ routes: [{ path: "/r", gateway: "http://g.example/gateway" }] }).cors).toEqual({ origins: [] });
    expect(parseIssuerConfig({ name: "issuer.example", attester: { credentials: ["c"] } }).cors).toEqual({ origins: [] });
    expect(parseGatewayConfig({ targets: {}, tokens: { required: false } }).cors).toEqual({ origins: [] });
  });

  it('accepts origins and "*", refuses paths, trailing slashes and other schemes', () => {
    const relay = (origins: unknown) => parseRelayConfig({ routes: [{ path: "/r", gateway: "http://g.example/gateway" }], cors: { origins } });
    expect(relay([APP, "https://app.example", "http://[::1]:8000", "*"]).cors.origins).toHaveLength(4);
    for (const bad of ["https://app.example/", "https://app.example/page", "app.example", "ftp://app.example", "null", ""]) {
      expect(() => relay([bad]), bad).toThrow(/cors\.origins/);
    }
  });
});

describe("relay CORS (real sockets, lean path on)", () => {
  let gw: StandIn;
  let relay: { app: FastifyInstance; url: string };
  let plain: { app: FastifyInstance; url: string };
  beforeAll(async () => {
    gw = await startStandIn();
    gw.keys = { body: fakeKeyConfigs(), cacheControl: "max-age=60" };
    relay = await startRelay(gw, { origins: [APP] });
    plain = await startRelay(gw);
  });
  afterAll(async () => {
    await relay?.app.close();
    await plain?.app.close();
    await gw?.close();
  });

  it("answers an allowed origin's preflight for POST <path> and GET <path>/ohttp-keys with 204", async () => {
    const pre = { origin: APP, "access-control-request-method": "POST", "access-control-request-headers": "content-type" };
    const post = await send(relay.url, "OPTIONS", "/leader-gateway", pre);
    expect(post.status).toBe(204);
    expect(post.headers).toMatchObject({
      "access-control-allow-origin": APP,
      "access-control-allow-methods": "POST",
      "access-control-allow-headers": "content-type",
      "access-control-max-age": "600",
    });
    expect(String(post.headers.vary)).toMatch(/\borigin\b/);
    const keys = await send(relay.url, "OPTIONS", "/leader-gateway/ohttp-keys", { ...pre, "access-control-request-method": "GET" });
    expect(keys.status).toBe(204);
    expect(keys.headers).toMatchObject({ "access-control-allow-origin": APP, "access-control-allow-methods": "GET" });
  });

  it("adds Access-Control-Allow-Origin and Vary to an allowed origin's POST and keys answers, and forwards no Origin", async () => {
    const before = gw.requests.length;
    const res = await send(relay.url, "POST", "/leader-gateway", { origin: APP, "content-type": "message/ohttp-req" }, "abc");
    expect(res.status).toBe(200);
    expect(res.body).toBe("res:abc");
    expect(res.headers["access-control-allow-origin"]).toBe(APP);
    expect(res.headers.vary).toBe("origin");
    expect(res.headers["x-gateway-secret"]).toBeUndefined();
    const forwarded = gw.requests[before]!;
    expect(forwarded.rawHeaders.map((h) => h.toLowerCase())).not.toContain("origin");
    const keys = await send(relay.url, "GET", "/leader-gateway/ohttp-keys", { origin: APP });
    expect(keys.status).toBe(200);
    expect(keys.headers["access-control-allow-origin"]).toBe(APP);
    expect(String(keys.headers.vary)).toMatch(/\borigin\b/);
  });

  it("echoes the origin on the relay's own error answers too (a page can read the problem)", async () => {
    const res = await send(relay.url, "POST", "/leader-gateway", { origin: APP, "content-type": "text/plain" }, "abc");
    expect(res.status).toBe(415);
    expect(res.headers["access-control-allow-origin"]).toBe(APP);
  });

  it("gives a disallowed origin no CORS header at all", async () => {
    const pre = await send(relay.url, "OPTIONS", "/leader-gateway", { origin: OTHER, "access-control-request-method": "POST" });
    expect(pre.status).toBe(405);
    expectNoCors(pre.headers);
    const res = await send(relay.url, "POST", "/leader-gateway", { origin: OTHER, "content-type": "message/ohttp-req" }, "abc");
    expect(res.status).toBe(200);
    expectNoCors(res.headers);
    const keys = await send(relay.url, "GET", "/leader-gateway/ohttp-keys", { origin: OTHER });
    expect(keys.status).toBe(200);
    expectNoCors(keys.headers);
    expectVaryOrigin(keys.headers);
  });

  it("leaves requests without Origin, and relays without cors.origins, unchanged", async () => {
    for (const r of [relay, plain]) {
      const res = await send(r.url, "POST", "/leader-gateway", { "content-type": "message/ohttp-req" }, "abc");
      expect(res.status).toBe(200);
      expect(res.body).toBe("res:abc");
      expectNoCors(res.headers);
      const pre = await send(r.url, "OPTIONS", "/leader-gateway", {});
      expect(pre.status).toBe(405);
      expectNoCors(pre.headers);
    }
    const res = await send(plain.url, "POST", "/leader-gateway", { origin: APP, "content-type": "message/ohttp-req" }, "abc");
    expect(res.status).toBe(200);
    expectNoCors(res.headers);
    expect(String(res.headers["vary"] ?? "")).not.toMatch(/origin/i);
    const pre = await send(plain.url, "OPTIONS", "/leader-gateway", { origin: APP, "access-control-request-method": "POST" });
    expect(pre.status).toBe(405);
    expectNoCors(pre.headers);
  });

  it('echoes any origin with "*" (never a literal "*")', async () => {
    const any = await startRelay(gw, { origins: ["*"] });
    try {
      const res = await send(any.url, "POST", "/leader-gateway", { origin: OTHER, "content-type": "message/ohttp-req" }, "abc");
      expect(res.headers["access-control-allow-origin"]).toBe(OTHER);
    } finally {
      await any.app.close();
    }
  });

  it("the lean parser reads Origin (so the front can hand such requests to Fastify) and refuses a repeated one", () => {
    const base = ["POST /p HTTP/1.1", "Host: r", "Content-Length: 1"];
    expect(parseCanonicalPost([...base, `Origin: ${APP}`].join("\r\n"))?.origin).toBe(APP);
    expect(parseCanonicalPost(base.join("\r\n"))?.origin).toBeUndefined();
    expect(parseCanonicalPost([...base, `Origin: ${APP}`, `Origin: ${OTHER}`].join("\r\n"))).toBeUndefined();
  });
});

describe("issuer CORS (inject)", () => {
  let tmp: ReturnType<typeof tempDir>;
  let fx: IssuerFixture;
  beforeAll(async () => {
    tmp = tempDir();
    fx = await makeIssuer(tmp.dir, { cors: { origins: [APP] } });
  });
  afterAll(async () => {
    await fx?.app.close();
    tmp?.remove();
  });

  it("answers preflights for /token-request (content-type, authorization) and the directory", async () => {
    const tr = await fx.app.inject({ method: "OPTIONS", url: "/token-request", headers: { origin: APP, "access-control-request-method": "POST" } });
    expect(tr.statusCode).toBe(204);
    expect(tr.headers).toMatchObject({ "access-control-allow-origin": APP, "access-control-allow-methods": "POST", "access-control-allow-headers": "content-type, authorization" });
    const dir = await fx.app.inject({ method: "OPTIONS", url: "/.well-known/private-token-issuer-directory", headers: { origin: APP } });
    expect(dir.statusCode).toBe(204);
    expect(dir.headers["access-control-allow-methods"]).toBe("GET");
  });

  it("adds the origin to the directory (keeping Vary: accept-encoding) and to token-request answers, refusals included", async () => {
    const dir = await fx.app.inject({ method: "GET", url: "/.well-known/private-token-issuer-directory", headers: { origin: APP } });
    expect(dir.statusCode).toBe(200);
    expect(dir.headers["access-control-allow-origin"]).toBe(APP);
    expect(dir.headers.vary).toBe("accept-encoding, origin");
    const refused = await fx.app.inject({ method: "POST", url: "/token-request", headers: { origin: APP, "content-type": "application/private-token-request", authorization: "Bearer wrong" }, payload: Buffer.from([0, 2]) });
    expect(refused.statusCode).toBe(401);
    expect(refused.headers["access-control-allow-origin"]).toBe(APP);
    expect(refused.headers["access-control-expose-headers"]).toBe("retry-after, www-authenticate");
  });

  it("gives a disallowed origin, or no origin, no CORS header", async () => {
    for (const headers of [{ origin: OTHER }, {}]) {
      const pre = await fx.app.inject({ method: "OPTIONS", url: "/token-request", headers });
      expect(pre.statusCode).toBe(405);
      expectNoCors(pre.headers);
      const dir = await fx.app.inject({ method: "GET", url: "/.well-known/private-token-issuer-directory", headers });
      expect(dir.statusCode).toBe(200);
      expectNoCors(dir.headers);
      expect(dir.headers.vary).toBe("accept-encoding, origin");
    }
  });
});

describe("gateway CORS: GET /ohttp-keys only (inject)", () => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await makeGateway({ targets: {}, cors: { origins: [APP] } });
  });
  afterAll(async () => {
    await fx?.app.close();
  });

  it("lets an allowed origin fetch the keys (204 preflight, origin echoed)", async () => {
    const pre = await fx.app.inject({ method: "OPTIONS", url: "/ohttp-keys", headers: { origin: APP, "access-control-request-method": "GET" } });
    expect(pre.statusCode).toBe(204);
    expect(pre.headers).toMatchObject({ "access-control-allow-origin": APP, "access-control-allow-methods": "GET" });
    const res = await fx.app.inject({ method: "GET", url: "/ohttp-keys", headers: { origin: APP } });
    expect(res.statusCode).toBe(200);
    expect(res.headers["access-control-allow-origin"]).toBe(APP);
    expect(res.headers.vary).toBe("accept-encoding, origin");
  });

  it("answers no CORS on /gateway, nor to a disallowed or absent origin", async () => {
    const gwPre = await fx.app.inject({ method: "OPTIONS", url: "/gateway", headers: { origin: APP, "access-control-request-method": "POST" } });
    expect(gwPre.statusCode).not.toBe(204);
    expectNoCors(gwPre.headers);
    for (const headers of [{ origin: OTHER }, {}]) {
      const res = await fx.app.inject({ method: "GET", url: "/ohttp-keys", headers });
      expect(res.statusCode).toBe(200);
      expectNoCors(res.headers);
      expectVaryOrigin(res.headers);
    }
  });
});
