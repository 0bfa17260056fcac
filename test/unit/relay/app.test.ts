// buildRelay under inject(): the Fastify side of the relay (the lean path is covered over real
// sockets in test/integration/relay*.test.ts).

import { afterEach, describe, expect, it } from "vitest";
import type { FastifyInstance } from "fastify";
import { buildRelay } from "../../../relay/app.js";
import { parseRelayConfig } from "../../../relay/config.js";
import { RequestRecorder } from "../../../server/lean-answers.js";
import { createLogger, logRequest } from "../../../server/logging.js";
import { createMetrics } from "../../../server/metrics.js";
import { fakeKeyConfigs, startStandIn, type StandIn } from "../../helpers/relay-gateway-stand-in.js";
import { captureLines } from "../../helpers/relay-harness.js";

const OHTTP_REQ = "message/ohttp-req";
let app: FastifyInstance | undefined;
let gw: StandIn | undefined;
afterEach(async () => {
  await app?.close();
  await gw?.close();
  app = undefined;
  gw = undefined;
});

async function build(extra: Record<string, unknown> = {}, prepare: (gw: StandIn) => void = () => {}) {
  gw = await startStandIn();
  prepare(gw);
  const { stream, lines } = captureLines();
  const config = parseRelayConfig({
    listen: { port: 0 },
    routes: [
      { path: "/leader-gateway", gateway: `${gw.url}/gateway`, keys: `${gw.url}/ohttp-keys` },
      { path: "/helper/gateway", gateway: `${gw.url}/helper` },
    ],
    ...extra,
  });
  app = buildRelay(config, { log: createLogger("relay", { destination: stream }), metrics: createMetrics("relay", { defaultMetrics: false }) });
  await app.ready();
  return { app, gw, lines };
}

describe("relay app (inject)", () => {
  it("forwards POST <path> to that route's gateway", async () => {
    const { app, gw } = await build();
    const res = await app.inject({ method: "POST", url: "/helper/gateway", headers: { "content-type": OHTTP_REQ }, payload: Buffer.from("abc") });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toBe("message/ohttp-res");
    expect(res.body).toBe("res:abc");
    expect(gw.requests[0]!.url).toBe("/helper");
  });

  it("answers 404 problem documents for anything that is not a route", async () => {
    const { app, gw } = await build();
    for (const url of ["/", "/gateway", "/leader-gateway/", "/helper", "/helper/gateway/ohttp-keys", "/leader-gateway/ohttp-keys/x"]) {
      const res = await app.inject({ method: "POST", url, headers: { "content-type": OHTTP_REQ }, payload: "x" });
      expect(res.statusCode).toBe(404);
      expect(res.headers["content-type"]).toBe("application/problem+json");
      expect(res.json()).toMatchObject({ code: "HTTP_ERR_NOT_FOUND", status: 404 });
    }
    expect(gw.requests).toHaveLength(0);
  });

  it("answers 415 for other media types, including JSON (no JSON parser is installed)", async () => {
    const { app } = await build();
    const res = await app.inject({ method: "POST", url: "/leader-gateway", headers: { "content-type": "application/json" }, payload: "{}" });
    expect(res.statusCode).toBe(415);
    expect(res.json()).toMatchObject({ code: "HTTP_ERR_MEDIA_TYPE" });
  });

  it("answers 413 over the body limit", async () => {
    const { app } = await build({ limits: { maxRequestBytes: 8 } });
    const res = await app.inject({ method: "POST", url: "/leader-gateway", headers: { "content-type": OHTTP_REQ }, payload: Buffer.alloc(9) });
    expect(res.statusCode).toBe(413);
    expect(res.json()).toMatchObject({ code: "HTTP_ERR_TOO_LARGE" });
  });

  it("serves the gateway's key configurations with caching headers and revalidation", async () => {
    const { app, gw } = await build();
    const res = await app.inject({ method: "GET", url: "/leader-gateway/ohttp-keys" });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toBe("application/ohttp-keys");
    expect(res.headers["cache-control"]).toMatch(/^public, max-age=(59|60)$/);
    expect(res.rawPayload.equals(gw.keys.body)).toBe(true);
    const again = await app.inject({ method: "GET", url: "/leader-gateway/ohttp-keys", headers: { "if-none-match": String(res.headers.etag) } });
    expect(again.statusCode).toBe(304);
    expect(gw.keyFetches).toBe(1);
    const head = await app.inject({ method: "HEAD", url: "/leader-gateway/ohttp-keys" });
    expect(head.statusCode).toBe(200);
  });

  it("has no keys endpoint for a route without a keys URL", async () => {
    const { app } = await build();
    const res = await app.inject({ method: "GET", url: "/helper/gateway/ohttp-keys" });
    expect(res.statusCode).toBe(404);
  });

  it("answers 502 when the keys were never fetched and the gateway fails", async () => {
    const { app } = await build({}, (gw) => (gw.keys = { body: fakeKeyConfigs(), status: 500 }));
    const res = await app.inject({ method: "GET", url: "/leader-gateway/ohttp-keys" });
    expect(res.statusCode).toBe(502);
    expect(res.json()).toMatchObject({ code: "RELAY_ERR_KEYS_UNAVAILABLE" });
  });

  it("answers 405 with Allow for other methods", async () => {
    const { app } = await build();
    const a = await app.inject({ method: "PUT", url: "/leader-gateway" });
    expect(a.statusCode).toBe(405);
    expect(a.headers.allow).toBe("POST");
    const b = await app.inject({ method: "POST", url: "/leader-gateway/ohttp-keys" });
    expect(b.statusCode).toBe(405);
    expect(b.headers.allow).toBe("GET");
  });

  it("serves /healthz, /readyz and /metrics with relay gauges", async () => {
    const { app } = await build();
    expect((await app.inject({ url: "/healthz" })).statusCode).toBe(200);
    expect((await app.inject({ url: "/readyz" })).statusCode).toBe(200);
    await app.inject({ method: "POST", url: "/leader-gateway", headers: { "content-type": OHTTP_REQ }, payload: "x" });
    const metrics = (await app.inject({ url: "/metrics" })).body;
    expect(metrics).toContain("veil_relay_upstream_connections");
    expect(metrics).toMatch(/veil_http_requests_total\{route="\/leader-gateway",outcome="forwarded",status="200"/);
  });
});

describe("RequestRecorder (as the relay uses it)", () => {
  it("writes exactly the line logRequest writes through pino", () => {
    const a = captureLines();
    const b = captureLines();
    const metrics = createMetrics("relay", { defaultMetrics: false });
    const recorder = new RequestRecorder(createLogger("relay", { destination: a.stream }), metrics);
    const log = createLogger("relay", { destination: b.stream });
    recorder.record("/leader-gateway", "POST", 502, "RELAY_ERR_UPSTREAM_FAILED", 12.3456);
    logRequest(log, { route: "/leader-gateway", method: "POST", status: 502, outcome: "RELAY_ERR_UPSTREAM_FAILED", durationMs: 12.3456 });
    const strip = (l: string) => l.replace(/"time":\d+/, '"time":0');
    expect(a.lines).toHaveLength(1);
    expect(strip(a.lines[0]!)).toBe(strip(b.lines[0]!));
  });

  it("honours the log level", () => {
    const a = captureLines();
    const recorder = new RequestRecorder(createLogger("relay", { destination: a.stream, level: "warn" }), createMetrics("relay", { defaultMetrics: false }));
    recorder.record("/x", "POST", 200, "forwarded", 1);
    expect(a.lines).toHaveLength(0);
  });
});
