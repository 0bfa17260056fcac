// The lean path (canonical POST /gateway served before Fastify) must answer, log and count exactly
// like the Fastify route it short-cuts. inject() never reaches it, so these tests use real HTTP.

import { EventEmitter, once } from "node:events";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDapTask, startDapAggregator, type DapAggregator, type DapTask } from "../../../demo/dap-aggregator.js";
import { isCanonicalGatewayPost } from "../../../gateway/routes/lean-gateway.js";
import { RequestRecorder } from "../../../server/lean-answers.js";
import { createLogger, logRequest } from "../../../server/logging.js";
import { createMetrics } from "../../../server/metrics.js";
import { captureLines, makeGateway, type Fixture } from "../../helpers/gateway-fixture.js";
import { sealRequest } from "../../helpers/oblivious-fetch.js";

let leader: DapAggregator;
let task: DapTask;
let hang: Server;
let hangUrl: string;
/** Requests the hanging target has received (each holds a concurrency slot of the gateway). */
let hangArrivals = 0;
const hangEvents = new EventEmitter();
let fx: Fixture;
let url: string;

beforeAll(async () => {
  task = await createDapTask();
  leader = await startDapAggregator({ role: "leader", tasks: [task] });
  hang = createServer(() => {
    hangArrivals++;
    hangEvents.emit("request");
  });
  await new Promise<void>((r) => hang.listen(0, "127.0.0.1", () => r()));
  hangUrl = `http://127.0.0.1:${(hang.address() as AddressInfo).port}`;
  fx = await makeGateway({
    targets: { "https://leader.example": leader.url, "https://hang.example": hangUrl },
    limits: { maxConcurrentRequests: 2 },
    upstream: { headersTimeoutMs: 1500, totalTimeoutMs: 3000 },
  });
  await fx.app.listen({ host: "127.0.0.1", port: 0 });
  url = `http://127.0.0.1:${(fx.app.server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await fx.app.close();
  await leader.close();
  hang.closeAllConnections();
  await new Promise((r) => hang.close(r));
});

const path = (): string => `/hpke_config?task_id=${task.idBase64Url}`;

/** Resolves once the hanging target has received `n` requests in all. */
async function hangReceived(n: number): Promise<void> {
  while (hangArrivals < n) await once(hangEvents, "request");
}

async function send(body: Uint8Array, chunked: boolean) {
  const payload = chunked ? Readable.from([Buffer.from(body)]) : Buffer.from(body);
  const res = await request(`${url}/gateway`, { method: "POST", headers: { "content-type": "message/ohttp-req" }, body: payload });
  return { status: res.statusCode, headers: res.headers, body: new Uint8Array(await res.body.arrayBuffer()) };
}

describe("gateway lean path", () => {
  it("serves canonical requests like the Fastify route serves chunked ones", async () => {
    for (const chunked of [false, true]) {
      const sealed = await sealRequest(fx.keyConfig, { path: path() });
      const res = await send(sealed.body, chunked);
      expect(res.status).toBe(200);
      expect(res.headers["content-type"]).toBe("message/ohttp-res");
      const inner = await sealed.open(res.body);
      expect(inner.status).toBe(200);
      expect(new Uint8Array(inner.body)).toEqual(leader.hpkeConfigList(task));
    }
  });

  it("answers errors before decapsulation with the same problem documents", async () => {
    const sealed = await sealRequest(fx.keyConfig, { path: path() });
    const wrongKey = sealed.body.slice();
    wrongKey[0] = 77;
    const lean = await send(wrongKey, false);
    const slow = await send(wrongKey, true);
    expect(lean.status).toBe(400);
    expect(lean.headers["content-type"]).toBe("application/problem+json");
    expect(lean.headers["cache-control"]).toBe("no-store");
    expect(JSON.parse(new TextDecoder().decode(lean.body))).toEqual(JSON.parse(new TextDecoder().decode(slow.body)));
  });

  it("logs and counts lean requests like Fastify's hook does", async () => {
    const before = fx.lines.length;
    const sealed = await sealRequest(fx.keyConfig, { authority: "evil.example", path: path() });
    const res = await send(sealed.body, false);
    expect((await sealed.open(res.body)).status).toBe(403);
    const line = fx.lines.slice(before).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === "request");
    expect(line).toMatchObject({ component: "gateway", route: "/gateway", method: "POST", status: 200, outcome: "GATEWAY_ERR_TARGET_FORBIDDEN" });
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/veil_http_requests_total\{route="\/gateway",outcome="GATEWAY_ERR_TARGET_FORBIDDEN",status="200"/);
  });

  it("applies the concurrency cap", async () => {
    const slow = await Promise.all([1, 2].map(() => sealRequest(fx.keyConfig, { authority: "hang.example", path: path() })));
    const held = hangArrivals + 2;
    const pending = slow.map((s) => send(s.body, false));
    await hangReceived(held);
    const third = await sealRequest(fx.keyConfig, { path: path() });
    const refused = await send(third.body, false);
    expect(refused.status).toBe(503);
    expect(refused.headers["retry-after"]).toBe("1");
    const answers = await Promise.all(pending);
    for (const a of answers) expect(a.status).toBe(200);
  });

  it("shares one concurrency cap with the requests Fastify serves", async () => {
    // One slow lean request and one slow chunked request (served by Fastify's route) fill the cap
    // of 2 together: a third request is refused whichever way it is served.
    const slow = await Promise.all([1, 2].map(() => sealRequest(fx.keyConfig, { authority: "hang.example", path: path() })));
    const held = hangArrivals + 2;
    const pending = [send(slow[0]!.body, false), send(slow[1]!.body, true)];
    await hangReceived(held);
    const third = await sealRequest(fx.keyConfig, { path: path() });
    const lean = await send(third.body, false);
    expect(lean.status).toBe(503);
    const health = await request(`${url}/healthz`);
    await health.body.dump();
    expect(health.statusCode).toBe(503);
    const answers = await Promise.all(pending);
    for (const a of answers) expect(a.status).toBe(200);
    // The slots are given back: the next request is served.
    const after = await sealRequest(fx.keyConfig, { path: path() });
    expect((await send(after.body, false)).status).toBe(200);
  });

  it("takes only canonical POST /gateway requests", () => {
    const req = (method: string, u: string, headers: Record<string, string>) => ({ method, url: u, headers }) as unknown as IncomingMessage;
    const ok = { "content-type": "message/ohttp-req", "content-length": "100" };
    expect(isCanonicalGatewayPost(req("POST", "/gateway", ok), 1000)).toBe(true);
    expect(isCanonicalGatewayPost(req("POST", "/gateway", { ...ok, "content-type": "Message/OHTTP-Req; x=1" }), 1000)).toBe(true);
    expect(isCanonicalGatewayPost(req("GET", "/gateway", ok), 1000)).toBe(false);
    expect(isCanonicalGatewayPost(req("POST", "/gateway?x", ok), 1000)).toBe(false);
    expect(isCanonicalGatewayPost(req("POST", "/gateway", { ...ok, "content-length": "1001" }), 1000)).toBe(false);
    expect(isCanonicalGatewayPost(req("POST", "/gateway", { "content-type": "message/ohttp-req" }), 1000)).toBe(false);
    expect(isCanonicalGatewayPost(req("POST", "/gateway", { ...ok, "transfer-encoding": "chunked" }), 1000)).toBe(false);
    expect(isCanonicalGatewayPost(req("POST", "/gateway", { ...ok, expect: "100-continue" }), 1000)).toBe(false);
    expect(isCanonicalGatewayPost(req("POST", "/gateway", { ...ok, "content-type": "text/plain" }), 1000)).toBe(false);
  });

  it("writes the same log line as logRequest through pino", () => {
    const a = captureLines();
    const b = captureLines();
    const recorder = new RequestRecorder(createLogger("gateway", { destination: a.stream }), createMetrics("gateway", { defaultMetrics: false }));
    recorder.record("/gateway", "POST", 200, "forwarded", 1.23456);
    logRequest(createLogger("gateway", { destination: b.stream }), { route: "/gateway", method: "POST", status: 200, outcome: "forwarded", durationMs: 1.23456 });
    const strip = (l: string) => l.replace(/"time":\d+/, '"time":0');
    expect(a.lines.map(strip)).toEqual(b.lines.map(strip));
  });
});
