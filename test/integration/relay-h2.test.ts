// HTTP/2 on the relay's TLS listener: ALPN h2 next to http/1.1 on one port, the same rules as
// HTTP/1.1 (what reaches the gateway, problem documents, logs), forwarding only complete streams,
// and the limits a public h2 server needs (stream cap with REFUSED_STREAM, 431, buffered bytes per
// connection, rapid reset, GOAWAY on a graceful stop). Real TLS with a throwaway CA; node's http2
// client, a raw frame writer for what that client will not send, and curl --http2.

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { writeFileSync } from "node:fs";
import {
  connect as h2connect,
  constants as h2c,
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type Http2SecureServer,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Stream,
} from "node:http2";
import { connect as tlsConnect } from "node:tls";
import type { ServerResponse } from "node:http";
import { Agent, request } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { FRAME, connectRawH2, errorCode, frame, requestHeaders, rstStream, type RawH2 } from "../helpers/raw-h2.js";
import { echoBehaviour, startStandIn, type RecordedRequest, type StandIn } from "../helpers/relay-gateway-stand-in.js";
import { startTestRelay, type TestRelay } from "../helpers/relay-harness.js";
import { createServerTestCa, type TestCa } from "../helpers/test-ca.js";
import { until } from "../helpers/wait.js";

const OHTTP_REQ = "message/ohttp-req";
let ca: TestCa;

beforeAll(() => {
  ca = createServerTestCa("veil-relay-h2-");
});

afterAll(() => ca.close());

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function standIn(): Promise<StandIn> {
  const gw = await startStandIn();
  cleanups.push(() => gw.close());
  return gw;
}

async function relay(gw: StandIn, raw: Record<string, unknown> = {}): Promise<TestRelay> {
  const r = await startTestRelay({
    listen: { host: "127.0.0.1", port: 0, tls: { cert: ca.file("relay.pem"), key: ca.file("relay.key") } },
    routes: [{ path: "/gw", gateway: `${gw.url}/gateway`, keys: `${gw.url}/ohttp-keys` }],
    ...raw,
  });
  cleanups.push(() => r.stop());
  return r;
}

function session(r: TestRelay, settings: { initialWindowSize?: number } = {}): ClientHttp2Session {
  const s = h2connect(r.url, { ca: ca.pem("ca.pem"), settings });
  s.on("error", () => {});
  cleanups.push(() => {
    s.destroy();
  });
  return s;
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** Reads a stream's answer to the end. */
function answerOf(stream: ClientHttp2Stream): Promise<Answer> {
  return new Promise((resolve, reject) => {
    let headers: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on("response", (h) => (headers = h));
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => resolve({ status: Number(headers[":status"]), headers, body: Buffer.concat(chunks) }));
    stream.on("error", reject);
  });
}

function post(s: ClientHttp2Session, body: string | Buffer, headers: OutgoingHttpHeaders = {}, path = "/gw"): Promise<Answer> {
  const stream = s.request({ ":method": "POST", ":path": path, "content-type": OHTTP_REQ, ...headers });
  stream.end(body);
  return answerOf(stream);
}

function get(s: ClientHttp2Session, path: string): Promise<Answer> {
  const stream = s.request({ ":path": path });
  stream.end();
  return answerOf(stream);
}

/** The stream's RST_STREAM code (it must end without an answer). */
function resetCode(stream: ClientHttp2Stream): Promise<number> {
  return new Promise((resolve) => {
    stream.on("error", () => {});
    stream.on("response", () => resolve(-1));
    stream.on("close", () => resolve(stream.rstCode));
  });
}

async function metricsText(s: ClientHttp2Session): Promise<string> {
  return (await get(s, "/metrics")).body.toString();
}

/** A gateway stand-in behaviour that holds every answer until `release()` (then echoes again). */
function holdAnswers(gw: StandIn): { held: RecordedRequest[]; arrived: (n: number) => Promise<void>; release: () => void } {
  const pending: { req: RecordedRequest; res: ServerResponse }[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  const held: RecordedRequest[] = [];
  gw.behaviour = (req, res) => {
    pending.push({ req, res });
    held.push(req);
    for (const w of [...waiters]) if (held.length >= w.n) w.resolve();
  };
  return {
    held,
    arrived: (n) => (held.length >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve }))),
    release: () => {
      gw.behaviour = echoBehaviour;
      for (const { req, res } of pending.splice(0)) {
        const body = Buffer.concat([Buffer.from("res:"), req.body]);
        res.writeHead(200, { "content-type": "message/ohttp-res", "content-length": body.length });
        res.end(body);
      }
    },
  };
}

function headerNames(req: RecordedRequest): string[] {
  return req.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase()).sort();
}

describe("ALPN on the TLS listener", () => {
  it("negotiates h2 and http/1.1, and serves HTTP/1.1 on the same port as before", async () => {
    const gw = await standIn();
    const r = await relay(gw);
    for (const [offer, expected] of [
      [["h2", "http/1.1"], "h2"],
      [["http/1.1"], "http/1.1"],
    ] as const) {
      const socket = tlsConnect({ host: "127.0.0.1", port: r.port, ca: ca.pem("ca.pem"), ALPNProtocols: [...offer] });
      await new Promise<void>((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
      expect(socket.alpnProtocol).toBe(expected);
      socket.destroy();
    }
    const h1 = new Agent({ connect: { ca: ca.pem("ca.pem") } });
    cleanups.push(() => h1.close());
    const a = await request(`${r.url}/gw`, { method: "POST", body: "over-h1", headers: { "content-type": OHTTP_REQ }, dispatcher: h1 });
    expect(await a.body.text()).toBe("res:over-h1");
    const k = await request(`${r.url}/gw/ohttp-keys`, { dispatcher: h1 });
    expect(k.statusCode).toBe(200);
    await k.body.dump();
  });

  it("offers only http/1.1 when http2.enabled is false", async () => {
    const gw = await standIn();
    const r = await relay(gw, { http2: { enabled: false } });
    const socket = tlsConnect({ host: "127.0.0.1", port: r.port, ca: ca.pem("ca.pem"), ALPNProtocols: ["h2", "http/1.1"] });
    await new Promise<void>((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
    const alpn = socket.alpnProtocol;
    socket.destroy();
    expect(alpn).toBe("http/1.1");
  });
});

describe("routes over h2", () => {
  it("forwards an upload, serves the keys copy, /healthz and /metrics", async () => {
    const gw = await standIn();
    const r = await relay(gw);
    const s = session(r);
    const a = await post(s, "over-h2");
    expect(a.status).toBe(200);
    expect(a.headers["content-type"]).toBe("message/ohttp-res");
    expect(a.body.toString()).toBe("res:over-h2");
    // Only status, Content-Type and Content-Length of the gateway's answer.
    expect(a.headers["x-gateway-secret"]).toBeUndefined();
    const k = await get(s, "/gw/ohttp-keys");
    expect(k.status).toBe(200);
    expect(k.headers["content-type"]).toBe("application/ohttp-keys");
    expect(k.body.equals(gw.keys.body)).toBe(true);
    const h = await get(s, "/healthz");
    expect(JSON.parse(h.body.toString())).toEqual({ status: "ok" });
    const m = await metricsText(s);
    expect(m).toMatch(/veil_relay_http2_streams_total\{outcome="forwarded",component="relay"\} 1/);
    expect(m).toMatch(/veil_relay_http2_sessions_total\{component="relay"\} 1/);
    expect(m).toMatch(/veil_http_requests_total\{route="\/gw",outcome="forwarded",status="200",component="relay"\} 1/);
    const notFound = await get(s, "/nothing");
    expect(notFound.status).toBe(404);
  });

  it("sends the gateway only the body, with the relay's own Content-Type and Content-Length, as over HTTP/1.1", async () => {
    const gw = await standIn();
    const r = await relay(gw);
    const h1 = new Agent({ connect: { ca: ca.pem("ca.pem") } });
    cleanups.push(() => h1.close());
    const extra = { cookie: "id=secret", "user-agent": "phone/1.0", "x-client": "me", authorization: "Bearer t", "x-forwarded-for": "10.9.9.9" };
    const a1 = await request(`${r.url}/gw`, { method: "POST", body: "h1", headers: { "content-type": OHTTP_REQ, ...extra }, dispatcher: h1 });
    await a1.body.dump();
    const s = session(r);
    // With request trailers: dropped.
    const stream = s.request({ ":method": "POST", ":path": "/gw", "content-type": OHTTP_REQ, ...extra }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "x-trailer": "t" }));
    stream.end("h2-with-trailers");
    expect((await answerOf(stream)).body.toString()).toBe("res:h2-with-trailers");
    expect(gw.requests).toHaveLength(2);
    const [viaH1, viaH2] = gw.requests as [RecordedRequest, RecordedRequest];
    expect(headerNames(viaH2)).toEqual(headerNames(viaH1));
    const sent = Object.fromEntries(viaH2.rawHeaders.flatMap((v, i, all) => (i % 2 === 0 ? [[v.toLowerCase(), all[i + 1]]] : [])));
    expect(sent["content-type"]).toBe(OHTTP_REQ);
    expect(sent["content-length"]).toBe(String("h2-with-trailers".length));
    expect(viaH2.body.toString()).toBe("h2-with-trailers");
    expect(viaH2.rawHeaders.join("\n")).not.toMatch(/secret|phone|x-client|Bearer|10\.9\.9\.9|x-trailer|:path|:authority/i);
  });

  it("answers 415, 413 (declared and counted while reading), 400 and 429 with the problem documents of HTTP/1.1", async () => {
    const gw = await standIn();
    const r = await relay(gw, { rateLimit: { perClientPerWindow: 4 }, limits: { maxRequestBytes: 1000 } });
    const h1 = new Agent({ connect: { ca: ca.pem("ca.pem") } });
    cleanups.push(() => h1.close());
    const s = session(r);
    const viaH1 = async (body: string, contentType: string) => {
      const res = await request(`${r.url}/gw`, { method: "POST", body, headers: { "content-type": contentType }, dispatcher: h1 });
      return { status: res.statusCode, body: await res.body.text() };
    };
    const wrongType = await post(s, "x", { "content-type": "text/plain" });
    expect(wrongType.status).toBe(415);
    expect(wrongType.headers["content-type"]).toBe("application/problem+json");
    expect(wrongType.body.toString()).toBe((await viaH1("x", "text/plain")).body);
    const declared = await post(s, Buffer.alloc(1001), { "content-length": "1001" });
    expect(declared.status).toBe(413);
    // No content-length: counted while the DATA arrives.
    const counted = s.request({ ":method": "POST", ":path": "/gw", "content-type": OHTTP_REQ });
    counted.write(Buffer.alloc(600));
    counted.write(Buffer.alloc(600));
    const c = await answerOf(counted);
    expect(c.status).toBe(413);
    expect(JSON.parse(c.body.toString())).toMatchObject({ code: "HTTP_ERR_TOO_LARGE" });
    const empty = await post(s, "");
    expect(empty.status).toBe(400);
    // The rate limit (4 per window) counts forwarded requests of both protocols from one address.
    expect((await post(s, "one")).status).toBe(200);
    expect((await viaH1("two", OHTTP_REQ)).status).toBe(200);
    expect((await post(s, "three")).status).toBe(200);
    expect((await post(s, "four")).status).toBe(200);
    const limited = await post(s, "five");
    expect(limited.status).toBe(429);
    expect(limited.headers["retry-after"]).toBeDefined();
    expect(JSON.parse(limited.body.toString())).toMatchObject({ code: "HTTP_ERR_RATE_LIMITED" });
    expect(gw.requests.map((q) => q.body.toString())).toEqual(["one", "two", "three", "four"]);
    // Log lines: no address, the same fields as HTTP/1.1.
    await r.stop();
    const lines = r.lines.filter((l) => l.includes('"msg":"request"'));
    expect(lines.some((l) => l.includes('"outcome":"HTTP_ERR_RATE_LIMITED"'))).toBe(true);
    for (const l of lines) expect(l).not.toMatch(/127\.0\.0\.1|"remoteAddress"|"ip"/);
  });

  it("answers 431 to a header list over maxHeaderBytes, and resets one over twice that", async () => {
    const gw = await standIn();
    const r = await relay(gw, { limits: { maxHeaderBytes: 4096 } });
    const s = session(r);
    const big = await post(s, "x", { "x-big": "a".repeat(5000) });
    expect(big.status).toBe(431);
    expect(JSON.parse(big.body.toString())).toMatchObject({ code: "HTTP_ERR_HEADERS_TOO_LARGE" });
    const keys = s.request({ ":path": "/gw/ohttp-keys", "x-big": "a".repeat(5000) });
    keys.end();
    expect((await answerOf(keys)).status).toBe(431);
    // Twice the limit: node:http2 resets the stream without decoding further.
    const huge = s.request({ ":method": "POST", ":path": "/gw", "content-type": OHTTP_REQ, "x-big": "a".repeat(9000) });
    huge.end("x");
    expect(await resetCode(huge)).not.toBe(-1);
    expect(gw.requests).toHaveLength(0);
    // The connection serves on.
    expect((await post(s, "after")).status).toBe(200);
  });
});

describe("how served streams end", () => {
  it("marks a stream that closed after its answer with one shared error, and leaves a client's reset to node", async () => {
    // Node 20 builds a new ERR_STREAM_DESTROYED for every answered stream unless the stream has an
    // error already (relay/h2.ts destroyClosedStream): the answered streams must carry the shared one.
    const gw = await standIn();
    const r = await relay(gw);
    const served: ServerHttp2Stream[] = [];
    (r.app.server as unknown as Http2SecureServer).on("stream", (st: ServerHttp2Stream) => served.push(st));
    const s = session(r);
    const answers = await Promise.all(["a", "b", "c"].map((x) => post(s, x)));
    expect(answers.map((a) => a.body.toString())).toEqual(["res:a", "res:b", "res:c"]);
    const reset = s.request({ ":method": "POST", ":path": "/gw", "content-type": OHTTP_REQ, "content-length": "10" });
    reset.on("error", () => {});
    reset.write("12345");
    await until(() => served.length === 4, "the relay has the fourth stream");
    reset.close(h2c.NGHTTP2_CANCEL);
    await until(() => served.every((st) => st.destroyed), "the four streams destroyed");
    // (The writable side's error, where node's Writable reads it.)
    const errorOf = (st: ServerHttp2Stream): unknown => (st as unknown as { _writableState: { errored: unknown } })._writableState.errored;
    const answered = served.slice(0, 3).map(errorOf);
    expect(answered[0]).toBeInstanceOf(Error);
    expect(answered.every((e) => e === answered[0])).toBe(true);
    expect((answered[0] as NodeJS.ErrnoException).code).toBeUndefined();
    // The reset stream: node's own outcome, not the shared error.
    expect(errorOf(served[3]!)).not.toBe(answered[0]);
    expect(served[3]!.rstCode).not.toBe(h2c.NGHTTP2_NO_ERROR);
  });
});

describe("only complete streams become gateway requests", () => {
  it("never forwards a stream the client resets before END_STREAM", async () => {
    const gw = await standIn();
    const r = await relay(gw);
    const s = session(r);
    const stream = s.request({ ":method": "POST", ":path": "/gw", "content-type": OHTTP_REQ, "content-length": "10" });
    stream.write("12345");
    stream.on("error", () => {});
    await new Promise<void>((resolve) => stream.once("ready", resolve));
    stream.close(h2c.NGHTTP2_CANCEL);
    await new Promise<void>((resolve) => stream.once("close", resolve));
    expect((await post(s, "complete")).body.toString()).toBe("res:complete");
    expect(gw.requests.map((q) => q.body.toString())).toEqual(["complete"]);
    expect(await metricsText(s)).toMatch(/veil_relay_http2_streams_total\{outcome="client_reset",component="relay"\} 1/);
  });

  it("resets a stream whose content-length disagrees with its DATA (PROTOCOL_ERROR) and never forwards it", async () => {
    const gw = await standIn();
    const r = await relay(gw);
    const raw: RawH2 = await connectRawH2(r.port, ca.pem("ca.pem"));
    cleanups.push(() => {
      raw.socket.destroy();
    });
    const type: [string, string] = ["content-type", OHTTP_REQ];
    // Fewer bytes than declared, then more.
    raw.send(Buffer.concat([requestHeaders(1, "POST", "/gw", [type, ["content-length", "10"]]), frame(FRAME.DATA, 1, 1, Buffer.from("abc"))]));
    raw.send(Buffer.concat([requestHeaders(3, "POST", "/gw", [type, ["content-length", "2"]]), frame(FRAME.DATA, 1, 3, Buffer.from("abcdef"))]));
    for (const id of [1, 3]) {
      const rst = await raw.wait((f) => f.stream === id && (f.type === FRAME.RST_STREAM || f.type === FRAME.HEADERS));
      expect(rst.type).toBe(FRAME.RST_STREAM);
      expect(errorCode(rst)).toBe(h2c.NGHTTP2_PROTOCOL_ERROR);
    }
    // A well-formed one on the same connection is forwarded.
    raw.send(Buffer.concat([requestHeaders(5, "POST", "/gw", [type, ["content-length", "2"]]), frame(FRAME.DATA, 1, 5, Buffer.from("ok"))]));
    const ok = await raw.wait((f) => f.stream === 5 && f.type === FRAME.DATA && (f.flags & 1) === 1);
    expect(ok.payload.toString()).toBe("res:ok");
    expect(gw.requests.map((q) => q.body.toString())).toEqual(["ok"]);
  });
});

describe("limits per connection", () => {
  it("refuses streams over the cap with REFUSED_STREAM, counting requests still with the gateway after a reset", async () => {
    const gw = await standIn();
    const hold = holdAnswers(gw);
    const r = await relay(gw, { http2: { maxConcurrentStreams: 2 } });
    const s = session(r);
    // Two complete uploads reach the gateway, then the client resets both (rapid reset's pattern):
    // the relay still has them in progress.
    const first = [s.request({ ":method": "POST", ":path": "/gw", "content-type": OHTTP_REQ }), s.request({ ":method": "POST", ":path": "/gw", "content-type": OHTTP_REQ })];
    for (const st of first) {
      st.on("error", () => {});
      st.end("in-flight");
    }
    await hold.arrived(2);
    for (const st of first) st.close(h2c.NGHTTP2_CANCEL);
    await Promise.all(first.map((st) => new Promise((resolve) => st.once("close", resolve))));
    const third = s.request({ ":method": "POST", ":path": "/gw", "content-type": OHTTP_REQ });
    third.end("third");
    expect(await resetCode(third)).toBe(h2c.NGHTTP2_REFUSED_STREAM);
    expect(s.destroyed).toBe(false);
    hold.release();
    // Once the gateway has answered, the connection has room again: the refused stream is retried.
    // (A refused attempt is retried, as RFC 9113 §8.7 lets a client do.)
    await expect.poll(async () => (await post(s, "retried").catch(() => ({ status: h2c.NGHTTP2_REFUSED_STREAM }))).status).toBe(200);
    expect(gw.requests.map((q) => q.body.toString())).toEqual(["in-flight", "in-flight", "retried"]);
  });

  it("refuses a stream whose body would take the connection over http2.maxBufferedBytes", async () => {
    const gw = await standIn();
    const r = await relay(gw, { http2: { maxBufferedBytes: 65_536 } });
    const s = session(r);
    const a = s.request({ ":method": "POST", ":path": "/gw", "content-type": OHTTP_REQ });
    a.on("error", () => {});
    a.write(Buffer.alloc(40_000, 1));
    const b = s.request({ ":method": "POST", ":path": "/gw", "content-type": OHTTP_REQ });
    // Written after a's bytes, on the same connection.
    b.write(Buffer.alloc(40_000, 2));
    expect(await resetCode(b)).toBe(h2c.NGHTTP2_REFUSED_STREAM);
    a.end();
    const answer = await answerOf(a);
    expect(answer.status).toBe(200);
    expect(gw.requests).toHaveLength(1);
    expect(gw.requests[0]!.body.length).toBe(40_000);
  });

  it("closes a connection that resets streams in a loop (rapid reset) with ENHANCE_YOUR_CALM, forwarding none, memory bounded", async () => {
    const gw = await standIn();
    const r = await relay(gw, { http2: { maxClientResets: 100 } });
    const before = process.memoryUsage().rss;
    const raw = await connectRawH2(r.port, ca.pem("ca.pem"));
    cleanups.push(() => {
      raw.socket.destroy();
    });
    const type: [string, string] = ["content-type", OHTTP_REQ];
    let id = 1;
    let sent = 0;
    // HEADERS (and part of a body) then RST_STREAM, 50 per write, until the relay hangs up.
    let open = true;
    void raw.closed.then(() => (open = false));
    while (open && sent < 20_000) {
      const batch: Buffer[] = [];
      for (let i = 0; i < 50; i++, id += 2) batch.push(requestHeaders(id, "POST", "/gw", [type]), frame(FRAME.DATA, 0, id, Buffer.alloc(100)), rstStream(id, h2c.NGHTTP2_CANCEL));
      sent += 50;
      if (!raw.send(Buffer.concat(batch))) await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => setImmediate(resolve));
    }
    const goaway = await raw.wait((f) => f.type === FRAME.GOAWAY);
    expect(errorCode(goaway)).toBe(h2c.NGHTTP2_ENHANCE_YOUR_CALM);
    await raw.closed;
    expect(sent).toBeLessThan(20_000);
    expect(gw.requests).toHaveLength(0);
    const growthMb = (process.memoryUsage().rss - before) / 1024 / 1024;
    expect(growthMb).toBeLessThan(64);
    // Others are still served.
    const s = session(r);
    expect((await post(s, "after")).status).toBe(200);
  });
});

describe("timeouts", () => {
  it("answers 408 to a body not complete within requestTimeoutMs, and forwards nothing", async () => {
    const gw = await standIn();
    const r = await relay(gw, { limits: { requestTimeoutMs: 300, headersTimeoutMs: 300 } });
    const s = session(r);
    const stream = s.request({ ":method": "POST", ":path": "/gw", "content-type": OHTTP_REQ, "content-length": "10" });
    stream.write("12345");
    const a = await answerOf(stream);
    expect(a.status).toBe(408);
    expect(JSON.parse(a.body.toString())).toMatchObject({ code: "HTTP_ERR_TIMEOUT" });
    expect(gw.requests).toHaveLength(0);
  });

  it("sends GOAWAY(NO_ERROR) to a connection without streams for keepAliveTimeoutMs", async () => {
    const gw = await standIn();
    const r = await relay(gw, { limits: { keepAliveTimeoutMs: 200 } });
    const s = session(r);
    const goaway = new Promise<number>((resolve) => s.once("goaway", (code: number) => resolve(code)));
    expect((await post(s, "one")).status).toBe(200);
    expect(await goaway).toBe(h2c.NGHTTP2_NO_ERROR);
    await new Promise<void>((resolve) => (s.closed ? resolve() : s.once("close", () => resolve())));
  });
});

describe("graceful stop", () => {
  it("sends GOAWAY(NO_ERROR), lets the streams in flight finish, then closes", async () => {
    const gw = await standIn();
    const hold = holdAnswers(gw);
    const r = await relay(gw);
    const s = session(r);
    const goaway = new Promise<number>((resolve) => s.once("goaway", (code: number) => resolve(code)));
    const inFlight = post(s, "in-flight");
    await hold.arrived(1);
    const stopped = r.stop();
    expect(await goaway).toBe(h2c.NGHTTP2_NO_ERROR);
    hold.release();
    const a = await inFlight;
    expect(a.status).toBe(200);
    expect(a.body.toString()).toBe("res:in-flight");
    await stopped;
    await new Promise<void>((resolve) => (s.closed ? resolve() : s.once("close", () => resolve())));
  });
});

describe("curl --http2", () => {
  it("uploads over h2", async () => {
    const gw = await standIn();
    const r = await relay(gw);
    const body = ca.file("upload.bin");
    writeFileSync(body, "from-curl");
    const { stdout: out } = await promisify(execFile)("curl", [
      "--http2",
      "-sS",
      "--cacert",
      ca.file("ca.pem"),
      "-H",
      `content-type: ${OHTTP_REQ}`,
      "--data-binary",
      `@${body}`,
      "-w",
      "\n%{http_version} %{http_code}",
      `${r.url}/gw`,
    ]);
    expect(out).toBe("res:from-curl\n2 200");
    expect(gw.requests.map((q) => q.body.toString())).toEqual(["from-curl"]);
  });
});
