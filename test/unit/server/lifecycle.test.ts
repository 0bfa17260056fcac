import { Readable } from "node:stream";
import { Agent, request } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { parseConfig, httpLimitsSchema, type HttpLimits } from "../../../server/config.js";
import { InFlightLimiter, acceptBinaryBody, createServerApp, inFlightLimiterOf, runServer, type RunningServer } from "../../../server/lifecycle.js";
import { createLogger } from "../../../server/logging.js";
import { createMetrics } from "../../../server/metrics.js";
import { ProtocolError } from "../../../core/errors.js";
import { captureLines } from "../../helpers/log-lines.js";

let running: RunningServer | undefined;
afterEach(async () => {
  await running?.stop();
  running = undefined;
});

async function start(limitsOverride: Partial<HttpLimits> = {}) {
  const limits = { ...parseConfig({ l: httpLimitsSchema({ maxRequestBytes: 64 }) }, {}).l, ...limitsOverride };
  const { stream, lines, until } = captureLines();
  const log = createLogger("test", { destination: stream });
  const app = createServerApp({ listen: { host: "127.0.0.1", port: 0 }, limits, log, metrics: createMetrics("test", { defaultMetrics: false }), readiness: { store: () => { throw new Error("down"); } } });
  acceptBinaryBody(app, "message/ohttp-req");
  let release: () => void = () => {};
  // Resolves once /slow is being served (so a test knows the request holds its slot).
  let markEntered: () => void = () => {};
  const entered = new Promise<void>((resolve) => { markEntered = resolve; });
  // Resolves once app.close() has begun (its preClose hooks run after the drain state's).
  let markClosing: () => void = () => {};
  const closing = new Promise<void>((resolve) => { markClosing = resolve; });
  app.addHook("preClose", async () => markClosing());
  app.post("/echo", async (req, reply) => reply.send(req.body));
  app.get("/slow", () => new Promise<string>((resolve) => { release = () => resolve("done"); markEntered(); }));
  app.get("/boom", async () => { throw new Error("secret internal detail"); });
  app.get("/refuse", async () => { throw new ProtocolError("HTTP_ERR_RATE_LIMITED", undefined, { headers: { "retry-after": "7" } }); });
  running = await runServer(app, { listen: { host: "127.0.0.1", port: 0 }, shutdownGraceMs: 2000, log, handleSignals: false });
  return { url: running.url, lines, until, entered, closing, release: () => release(), app };
}

describe("server plumbing", () => {
  it("answers unknown paths with a 404 problem document", async () => {
    const { url } = await start();
    const res = await request(`${url}/nope`);
    expect(res.statusCode).toBe(404);
    expect(res.headers["content-type"]).toBe("application/problem+json");
    expect(await res.body.json()).toMatchObject({ status: 404, code: "HTTP_ERR_NOT_FOUND" });
  });

  it("answers 413 by Content-Length and while reading a chunked body", async () => {
    const { url } = await start();
    const big = Buffer.alloc(65, 1);
    const a = await request(`${url}/echo`, { method: "POST", body: big, headers: { "content-type": "message/ohttp-req" } });
    expect(a.statusCode).toBe(413);
    await a.body.dump();
    async function* chunks() { for (let i = 0; i < 5; i++) yield Buffer.alloc(20, 2); }
    const b = await request(`${url}/echo`, { method: "POST", body: Readable.from(chunks()), headers: { "content-type": "message/ohttp-req" } });
    expect(b.statusCode).toBe(413);
    expect(await b.body.json()).toMatchObject({ code: "HTTP_ERR_TOO_LARGE" });
  });

  it("answers 415 for another media type", async () => {
    const { url } = await start();
    const res = await request(`${url}/echo`, { method: "POST", body: "x", headers: { "content-type": "application/xml" } });
    expect(res.statusCode).toBe(415);
    expect(await res.body.json()).toMatchObject({ code: "HTTP_ERR_MEDIA_TYPE" });
  });

  it("hides internal error details from clients", async () => {
    const { url } = await start();
    const res = await request(`${url}/boom`);
    expect(res.statusCode).toBe(500);
    const text = await res.body.text();
    expect(text).not.toContain("secret internal detail");
  });

  it("sends the catalogue's status and headers", async () => {
    const { url } = await start();
    const res = await request(`${url}/refuse`);
    expect(res.statusCode).toBe(429);
    expect(res.headers["retry-after"]).toBe("7");
    await res.body.dump();
  });

  it("caps concurrent requests with 503", async () => {
    const { url, release, entered } = await start({ maxConcurrentRequests: 1 });
    const slow = request(`${url}/slow`);
    await entered;
    const res = await request(`${url}/healthz`);
    expect(res.statusCode).toBe(503);
    await res.body.dump();
    release();
    expect((await slow).statusCode).toBe(200);
  });

  it("hands out the app's concurrency slots from one limiter", async () => {
    const { url, release, app, entered } = await start({ maxConcurrentRequests: 2 });
    const slow = request(`${url}/slow`);
    await entered;
    // Code serving requests outside Fastify's hooks (a lean path) takes the other slot.
    const l = inFlightLimiterOf(app)!;
    expect(l.inFlight).toBe(1);
    const slot = l.tryAcquire()!;
    const res = await request(`${url}/healthz`);
    expect(res.statusCode).toBe(503);
    await res.body.dump();
    slot();
    slot(); // releasing twice gives back one slot only
    expect(l.inFlight).toBe(1);
    release();
    expect((await slow).statusCode).toBe(200);
  });

  it("limits to its maximum and releases each slot once", () => {
    const l = new InFlightLimiter(1);
    const a = l.tryAcquire();
    expect(a).toBeDefined();
    expect(l.tryAcquire()).toBeUndefined();
    a!();
    a!();
    expect(l.inFlight).toBe(0);
    expect(l.tryAcquire()).toBeDefined();
  });

  it("reports readiness per check", async () => {
    const { url } = await start();
    const res = await request(`${url}/readyz`);
    expect(res.statusCode).toBe(503);
    expect(await res.body.json()).toEqual({ status: "not ready", failing: ["store"] });
  });

  it("finishes in-flight requests on stop", async () => {
    const { url, release, entered } = await start();
    const slow = request(`${url}/slow`);
    await entered;
    const stopped = running!.stop();
    release();
    const res = await slow;
    expect(res.statusCode).toBe(200);
    // The answer closes its connection, so the stopping server is not held by an idle keep-alive.
    expect(res.headers.connection).toBe("close");
    expect(await res.body.text()).toBe("done");
    await stopped;
  });

  it("closes the connection of a request in flight when the app is closed directly", async () => {
    const { url, release, entered, closing, app } = await start();
    const slow = request(`${url}/slow`);
    await entered;
    // app.close() without runServer's stop (an embedding app, a test): the drain state still
    // turns to closing, so Fastify's answer closes its connection.
    const closed = app.close();
    await closing;
    release();
    const res = await slow;
    expect(res.statusCode).toBe(200);
    expect(res.headers.connection).toBe("close");
    await res.body.dump();
    await closed;
  });

  it("logs one line per request without the client address", async () => {
    const { url, lines, until } = await start();
    // The client connects from 127.0.0.2: that address must appear nowhere.
    const dispatcher = new Agent({ localAddress: "127.0.0.2" });
    await (await request(`${url}/healthz`, { dispatcher })).body.dump();
    await (await request(`${url}/nope?x=1`, { dispatcher })).body.dump();
    await dispatcher.close();
    // The line is written after the answer has gone out.
    await until((ls) => ls.filter((l) => l.includes('"msg":"request"')).length >= 2);
    const reqLines = lines.filter((l) => l.includes('"msg":"request"'));
    expect(reqLines).toHaveLength(2);
    for (const l of lines) expect(l).not.toContain("127.0.0.2");
    expect(reqLines[1]).toContain('"route":"(unmatched)"');
  });
});
