// The relay end to end over real sockets: a client (undici or raw TCP) -> relay -> recording gateway
// stand-in. Covers the lean path and the node:http/Fastify path the lean path hands over to.

import { connect, type Socket } from "node:net";
import { Readable } from "node:stream";
import { Agent, request } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { echoBehaviour, startStandIn, type StandIn } from "../helpers/relay-gateway-stand-in.js";
import { startTestRelay, type TestRelay } from "../helpers/relay-harness.js";
import { rawExchange as rawExchangeWithClose } from "../helpers/raw-http.js";

const OHTTP_REQ = "message/ohttp-req";
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function setup(extra: Record<string, unknown> = {}, route: Record<string, unknown> = {}): Promise<{ gw: StandIn; relay: TestRelay }> {
  const gw = await startStandIn();
  cleanups.push(() => gw.close());
  const relay = await startTestRelay({
    routes: [{ path: "/leader-gateway", gateway: `${gw.url}/gateway`, keys: `${gw.url}/ohttp-keys`, ...route }],
    ...extra,
  });
  cleanups.push(() => relay.stop());
  return { gw, relay };
}

/** Sends raw bytes on one connection and collects what comes back until the server closes or `until` matches. */
async function rawExchange(port: number, bytes: string | Buffer, until?: (text: string) => boolean, ms = 3000): Promise<string> {
  const socket: Socket = connect(port, "127.0.0.1");
  let text = "";
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(text);
    }, ms);
    socket.on("data", (c: Buffer) => {
      text += c.toString("latin1");
      if (until?.(text) === true) {
        clearTimeout(timer);
        socket.destroy();
        resolve(text);
      }
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(text);
    });
    socket.on("error", () => {});
    socket.write(bytes);
  });
}

/**
 * After a failed request "x": the relay never sent it again. A retry would start when the failure
 * is seen, before the relay answers; the next request ("y", answered) is checked to come alone.
 */
async function expectNoRetry(gw: StandIn, relayUrl: string): Promise<void> {
  gw.behaviour = echoBehaviour;
  const next = await request(`${relayUrl}/leader-gateway`, { method: "POST", body: "y", headers: { "content-type": OHTTP_REQ } });
  expect(await next.body.text()).toBe("res:y");
  expect(gw.requests.map((r) => r.body.toString())).toEqual(["x", "y"]);
}

function headerNames(raw: string[]): string[] {
  return raw.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
}

describe("relay forwarding", () => {
  it("forwards the body to the gateway and passes back status, Content-Type and Content-Length only", async () => {
    const { gw, relay } = await setup();
    const res = await request(`${relay.url}/leader-gateway`, { method: "POST", body: "hello", headers: { "content-type": OHTTP_REQ } });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toBe("message/ohttp-res");
    expect(res.headers["x-gateway-secret"]).toBeUndefined();
    expect(await res.body.text()).toBe("res:hello");
    expect(gw.requests).toHaveLength(1);
    expect(gw.requests[0]!.method).toBe("POST");
    expect(gw.requests[0]!.url).toBe("/gateway");
    expect(gw.requests[0]!.body.toString()).toBe("hello");
  });

  it("sends the gateway exactly Host, Content-Type and Content-Length, dropping every client header", async () => {
    const { gw, relay } = await setup();
    const res = await request(`${relay.url}/leader-gateway`, {
      method: "POST",
      body: "abc",
      headers: {
        "content-type": `${OHTTP_REQ}; tracking=123`,
        cookie: "session=secret",
        "user-agent": "TestBrowser/1.0",
        "x-forwarded-for": "203.0.113.9",
        forwarded: "for=203.0.113.9",
        via: "1.1 proxy",
        "accept-language": "fr-CH",
        authorization: "Bearer client-token",
        "proxy-authorization": "Basic cmVsYXk=",
        connection: "keep-alive, x-hop",
        "x-hop": "1",
        referer: "https://example.com/",
        origin: "https://example.com",
        dnt: "1",
      },
    });
    await res.body.dump();
    const rec = gw.requests[0]!;
    expect(headerNames(rec.rawHeaders).sort()).toEqual(["content-length", "content-type", "host"]);
    const h = Object.fromEntries(headerNames(rec.rawHeaders).map((n, i) => [n, rec.rawHeaders[2 * i + 1]]));
    expect(h["content-type"]).toBe(OHTTP_REQ);
    expect(h["content-length"]).toBe("3");
    expect(h.host).toBe(`127.0.0.1:${gw.port}`);
  });

  it("adds the operator's auth header and nothing else", async () => {
    const { gw, relay } = await setup({}, { authHeader: { name: "x-relay-auth", value: "operator-secret" } });
    await (await request(`${relay.url}/leader-gateway`, { method: "POST", body: "x", headers: { "content-type": OHTTP_REQ } })).body.dump();
    const rec = gw.requests[0]!;
    expect(headerNames(rec.rawHeaders).sort()).toEqual(["content-length", "content-type", "host", "x-relay-auth"]);
    expect(rec.rawHeaders[rec.rawHeaders.findIndex((v) => v.toLowerCase() === "x-relay-auth") + 1]).toBe("operator-secret");
    expect(relay.lines.join("\n")).not.toContain("operator-secret");
  });

  it("forwards chunked request bodies (through node:http) with a Content-Length", async () => {
    const { gw, relay } = await setup();
    async function* chunks() {
      yield Buffer.from("part1-");
      yield Buffer.from("part2");
    }
    const res = await request(`${relay.url}/leader-gateway`, { method: "POST", body: Readable.from(chunks()), headers: { "content-type": OHTTP_REQ } });
    expect(res.statusCode).toBe(200);
    expect(await res.body.text()).toBe("res:part1-part2");
    const rec = gw.requests[0]!;
    expect(headerNames(rec.rawHeaders).sort()).toEqual(["content-length", "content-type", "host"]);
  });

  it("passes the gateway's error statuses through unchanged", async () => {
    const { gw, relay } = await setup();
    gw.behaviour = (_req, res) => {
      res.writeHead(400, { "content-type": "application/problem+json", "set-cookie": "a=b" });
      res.end('{"type":"https://iana.org/assignments/http-problem-types#ohttp-key"}');
    };
    const res = await request(`${relay.url}/leader-gateway`, { method: "POST", body: "x", headers: { "content-type": OHTTP_REQ } });
    expect(res.statusCode).toBe(400);
    expect(res.headers["content-type"]).toBe("application/problem+json");
    expect(res.headers["set-cookie"]).toBeUndefined();
    expect(await res.body.json()).toEqual({ type: "https://iana.org/assignments/http-problem-types#ohttp-key" });
  });

  it("reads a chunked answer from the gateway and sends it back with a Content-Length", async () => {
    const { gw, relay } = await setup();
    gw.behaviour = (_req, res) => {
      res.writeHead(200, { "content-type": "message/ohttp-res" });
      res.write("abc");
      setTimeout(() => res.end("def"), 20);
    };
    const res = await request(`${relay.url}/leader-gateway`, { method: "POST", body: "x", headers: { "content-type": OHTTP_REQ } });
    expect(res.headers["content-length"]).toBe("6");
    expect(res.headers["transfer-encoding"]).toBeUndefined();
    expect(await res.body.text()).toBe("abcdef");
  });

  it("reuses keep-alive connections to the gateway", async () => {
    const { gw, relay } = await setup({}, { keys: undefined });
    for (let i = 0; i < 5; i++) {
      await (await request(`${relay.url}/leader-gateway`, { method: "POST", body: `m${i}`, headers: { "content-type": OHTTP_REQ } })).body.dump();
    }
    expect(gw.requests).toHaveLength(5);
    expect(gw.connections).toBe(1);
  });

  it("serves pipelined requests on one connection in order", async () => {
    const { relay } = await setup();
    const one = (b: string) => `POST /leader-gateway HTTP/1.1\r\nHost: r\r\nContent-Type: ${OHTTP_REQ}\r\nContent-Length: ${b.length}\r\n\r\n${b}`;
    const text = await rawExchange(relay.port, one("first") + one("second") + one("third"), (t) => t.includes("res:third"));
    expect(text.indexOf("res:first")).toBeLessThan(text.indexOf("res:second"));
    expect(text.indexOf("res:second")).toBeLessThan(text.indexOf("res:third"));
  });

  it("reads a request trickled in many small pieces", async () => {
    const { gw, relay } = await setup();
    const body = Buffer.alloc(3000, 7).toString("latin1");
    const bytes = Buffer.from(`POST /leader-gateway HTTP/1.1\r\nHost: r\r\nContent-Type: ${OHTTP_REQ}\r\nContent-Length: ${body.length}\r\n\r\n${body}`, "latin1");
    const socket = connect(relay.port, "127.0.0.1");
    socket.setNoDelay(true);
    let text = "";
    const answered = new Promise<void>((resolve) =>
      socket.on("data", (c: Buffer) => {
        text += c.toString("latin1");
        if (text.includes("res:")) resolve();
      }),
    );
    for (let i = 0; i < bytes.length; i += 97) {
      socket.write(bytes.subarray(i, i + 97));
      // The client's pauses (the behaviour under test): the pieces reach the relay apart.
      if (i % 970 === 0) await new Promise((r) => setTimeout(r, 2));
    }
    await answered;
    socket.destroy();
    expect(gw.requests[0]!.body.toString("latin1")).toBe(body);
  });

  it("hands a connection to node:http mid-way (a chunked request after a canonical one) and keeps serving it", async () => {
    const { relay } = await setup();
    const canonical = `POST /leader-gateway HTTP/1.1\r\nHost: r\r\nContent-Type: ${OHTTP_REQ}\r\nContent-Length: 3\r\n\r\none`;
    const chunked = `POST /leader-gateway HTTP/1.1\r\nHost: r\r\nContent-Type: ${OHTTP_REQ}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n`;
    const health = `GET /healthz HTTP/1.1\r\nHost: r\r\n\r\n`;
    const text = await rawExchange(relay.port, canonical + chunked + health + canonical.replace("one", "thr"), (t) => t.includes("res:thr"));
    expect(text).toContain("res:one");
    expect(text).toContain("res:two");
    expect(text).toContain('{"status":"ok"}');
    expect(text.indexOf("res:one")).toBeLessThan(text.indexOf("res:two"));
    expect(text.indexOf("res:two")).toBeLessThan(text.indexOf('"status":"ok"'));
  });

  it("answers Expect: 100-continue and HTTP/1.0 requests through node:http", async () => {
    const { gw, relay } = await setup();
    const expect100 = await rawExchange(
      relay.port,
      `POST /leader-gateway HTTP/1.1\r\nHost: r\r\nContent-Type: ${OHTTP_REQ}\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc`,
      (t) => t.includes("res:abc"),
    );
    expect(expect100).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK/);
    const http10 = await rawExchange(relay.port, `POST /leader-gateway HTTP/1.0\r\nContent-Type: ${OHTTP_REQ}\r\nContent-Length: 3\r\n\r\nold`);
    expect(http10).toMatch(/^HTTP\/1\.1 200 OK/);
    expect(http10).toContain("res:old");
    expect(gw.requests.map((r) => r.body.toString())).toEqual(["abc", "old"]);
  });

  it("closes idle keep-alive connections after keepAliveTimeoutMs", async () => {
    const { relay } = await setup({ limits: { keepAliveTimeoutMs: 100 } });
    const one = `POST /leader-gateway HTTP/1.1\r\nHost: r\r\nContent-Type: ${OHTTP_REQ}\r\nContent-Length: 1\r\n\r\nx`;
    const result = await rawExchangeWithClose(relay.port, one, { timeoutMs: 5000 });
    expect(result.text).toContain("res:x");
    // Closed by the relay, not by this client giving up after its 5 s.
    expect(result.closedByServer).toBe(true);
  });

  it("finishes in-flight requests on shutdown and closes their connections", async () => {
    const { gw, relay } = await setup();
    const held = new Promise<() => void>((resolve) => (gw.behaviour = (req, res) => resolve(() => echoBehaviour(req, res))));
    const pending = rawExchange(relay.port, `POST /leader-gateway HTTP/1.1\r\nHost: r\r\nContent-Type: ${OHTTP_REQ}\r\nContent-Length: 4\r\n\r\nlast`);
    const release = await held;
    // stop() marks the relay as draining at once: the answer released now must close its connection.
    const stopped = relay.stop();
    release();
    const text = await pending;
    expect(text).toMatch(/^HTTP\/1\.1 200 OK/);
    expect(text.toLowerCase()).toContain("connection: close");
    expect(text).toContain("res:last");
    await stopped;
  });

  it("works the same with the lean path turned off", async () => {
    const { gw, relay } = await setup({ fastPath: false });
    const res = await request(`${relay.url}/leader-gateway`, { method: "POST", body: "slow", headers: { "content-type": OHTTP_REQ, cookie: "c=1" } });
    expect(res.statusCode).toBe(200);
    expect(await res.body.text()).toBe("res:slow");
    expect(headerNames(gw.requests[0]!.rawHeaders).sort()).toEqual(["content-length", "content-type", "host"]);
  });

  it("answers 404 for unconfigured paths and never forwards them", async () => {
    const { gw, relay } = await setup();
    for (const path of ["/other-gateway", "/leader-gateway/x", "/leader-gatewayx", "/"]) {
      const res = await request(`${relay.url}${path}`, { method: "POST", body: "x", headers: { "content-type": OHTTP_REQ } });
      expect(res.statusCode).toBe(404);
      expect(await res.body.json()).toMatchObject({ code: "HTTP_ERR_NOT_FOUND" });
    }
    const abs = await rawExchange(relay.port, `POST http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\nContent-Type: ${OHTTP_REQ}\r\nContent-Length: 1\r\n\r\nx`, (t) => t.includes("}"));
    expect(abs).toMatch(/^HTTP\/1\.1 (400|404)/);
    expect(gw.requests).toHaveLength(0);
  });

  it("answers 405 with Allow for other methods on a route", async () => {
    const { relay } = await setup();
    const res = await request(`${relay.url}/leader-gateway`, { method: "GET" });
    expect(res.statusCode).toBe(405);
    expect(res.headers.allow).toBe("POST");
    await res.body.dump();
  });
});

describe("relay limits", () => {
  it("answers 415 for any media type but message/ohttp-req, on both paths", async () => {
    const { gw, relay } = await setup();
    for (const type of ["application/json", "text/plain", "message/ohttp-res", "application/octet-stream"]) {
      const res = await request(`${relay.url}/leader-gateway`, { method: "POST", body: "{}", headers: { "content-type": type } });
      expect(res.statusCode).toBe(415);
      expect(await res.body.json()).toMatchObject({ code: "HTTP_ERR_MEDIA_TYPE" });
    }
    const none = await rawExchange(relay.port, "POST /leader-gateway HTTP/1.1\r\nHost: r\r\nContent-Length: 2\r\n\r\nxx", (t) => t.includes("}"));
    expect(none).toMatch(/^HTTP\/1\.1 415/);
    async function* chunks() {
      yield Buffer.from("{}");
    }
    const chunked = await request(`${relay.url}/leader-gateway`, { method: "POST", body: Readable.from(chunks()), headers: { "content-type": "application/json" } });
    expect(chunked.statusCode).toBe(415);
    await chunked.body.dump();
    expect(gw.requests).toHaveLength(0);
  });

  it("answers 413 by Content-Length and while reading a chunked body", async () => {
    const { gw, relay } = await setup({ limits: { maxRequestBytes: 64 } });
    const big = await request(`${relay.url}/leader-gateway`, { method: "POST", body: Buffer.alloc(65, 1), headers: { "content-type": OHTTP_REQ } });
    expect(big.statusCode).toBe(413);
    expect(await big.body.json()).toMatchObject({ code: "HTTP_ERR_TOO_LARGE" });
    async function* chunks() {
      for (let i = 0; i < 5; i++) yield Buffer.alloc(20, 2);
    }
    const chunked = await request(`${relay.url}/leader-gateway`, { method: "POST", body: Readable.from(chunks()), headers: { "content-type": OHTTP_REQ } });
    expect(chunked.statusCode).toBe(413);
    expect(await chunked.body.json()).toMatchObject({ code: "HTTP_ERR_TOO_LARGE" });
    const exact = await request(`${relay.url}/leader-gateway`, { method: "POST", body: Buffer.alloc(64, 1), headers: { "content-type": OHTTP_REQ } });
    expect(exact.statusCode).toBe(200);
    await exact.body.dump();
    expect(gw.requests).toHaveLength(1);
  });

  it("answers 400 for an empty request", async () => {
    const { gw, relay } = await setup();
    const res = await request(`${relay.url}/leader-gateway`, { method: "POST", body: "", headers: { "content-type": OHTTP_REQ } });
    expect(res.statusCode).toBe(400);
    await res.body.dump();
    expect(gw.requests).toHaveLength(0);
  });

  it("answers 429 with Retry-After over the per-client rate limit", async () => {
    const { gw, relay } = await setup({ rateLimit: { perClientPerWindow: 3, windowMs: 60_000 } });
    const statuses: number[] = [];
    let retryAfter: string | string[] | undefined;
    for (let i = 0; i < 5; i++) {
      const res = await request(`${relay.url}/leader-gateway`, { method: "POST", body: "x", headers: { "content-type": OHTTP_REQ } });
      statuses.push(res.statusCode);
      if (res.statusCode === 429) {
        retryAfter = res.headers["retry-after"];
        expect(await res.body.json()).toMatchObject({ code: "HTTP_ERR_RATE_LIMITED" });
      } else await res.body.dump();
    }
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
    expect(Number(retryAfter)).toBeLessThanOrEqual(60);
    expect(gw.requests).toHaveLength(3);
    // Another client address has its own budget.
    const other = new Agent({ localAddress: "127.0.0.2" });
    const res = await request(`${relay.url}/leader-gateway`, { method: "POST", body: "x", headers: { "content-type": OHTTP_REQ }, dispatcher: other });
    expect(await res.body.text()).toBe("res:x");
    expect(res.statusCode).toBe(200);
    await other.close();
  });

  it("caps concurrent requests with 503 and Retry-After", async () => {
    const { gw, relay } = await setup({ limits: { maxConcurrentRequests: 2 } });
    const held: (() => void)[] = [];
    const bothHeld = new Promise<void>((resolve) => {
      gw.behaviour = (req, res) => {
        held.push(() => echoBehaviour(req, res));
        if (held.length === 2) resolve();
      };
    });
    const send = () => request(`${relay.url}/leader-gateway`, { method: "POST", body: "x", headers: { "content-type": OHTTP_REQ } });
    const a = send();
    const b = send();
    await bothHeld;
    const c = await send();
    expect(c.statusCode).toBe(503);
    expect(c.headers["retry-after"]).toBe("1");
    expect(await c.body.json()).toMatchObject({ code: "HTTP_ERR_OVERLOADED" });
    for (const release of held) release();
    expect((await a).statusCode).toBe(200);
    expect((await b).statusCode).toBe(200);
  });

  it("answers 504 when the gateway does not answer in time, and never retries", async () => {
    const { gw, relay } = await setup({ timeouts: { headersMs: 200 } });
    gw.behaviour = () => {};
    const res = await request(`${relay.url}/leader-gateway`, { method: "POST", body: "x", headers: { "content-type": OHTTP_REQ } });
    expect(res.statusCode).toBe(504);
    expect(res.headers["content-type"]).toBe("application/problem+json");
    expect(await res.body.json()).toMatchObject({ code: "RELAY_ERR_UPSTREAM_TIMEOUT" });
    await expectNoRetry(gw, relay.url);
  });

  it("answers 504 when the gateway's answer body stalls", async () => {
    const { gw, relay } = await setup({ timeouts: { bodyMs: 200 } });
    gw.behaviour = (_req, res) => {
      res.writeHead(200, { "content-type": "message/ohttp-res", "content-length": 10 });
      res.write("abc");
    };
    const res = await request(`${relay.url}/leader-gateway`, { method: "POST", body: "x", headers: { "content-type": OHTTP_REQ } });
    expect(res.statusCode).toBe(504);
    await res.body.dump();
  });

  it("answers 502 at once when the gateway refuses connections", async () => {
    const gw = await startStandIn();
    const url = gw.url;
    await gw.close();
    const relay = await startTestRelay({ routes: [{ path: "/leader-gateway", gateway: `${url}/gateway` }], timeouts: { connectMs: 10_000 } });
    cleanups.push(() => relay.stop());
    const res = await request(`${relay.url}/leader-gateway`, { method: "POST", body: "x", headers: { "content-type": OHTTP_REQ } });
    // Fails on the refusal (502 UNREACHABLE), not on the 10 s connect timeout (which would be a 504).
    expect(res.statusCode).toBe(502);
    expect(await res.body.json()).toMatchObject({ code: "RELAY_ERR_UPSTREAM_UNREACHABLE" });
  });

  it("answers 502 when the gateway drops the connection mid-answer, and never retries", async () => {
    const { gw, relay } = await setup();
    gw.behaviour = (_req, res) => {
      res.writeHead(200, { "content-type": "message/ohttp-res", "content-length": 10 });
      res.write("abc");
      setTimeout(() => res.socket?.destroy(), 20);
    };
    const res = await request(`${relay.url}/leader-gateway`, { method: "POST", body: "x", headers: { "content-type": OHTTP_REQ } });
    expect(res.statusCode).toBe(502);
    expect(await res.body.json()).toMatchObject({ code: "RELAY_ERR_UPSTREAM_FAILED" });
    await expectNoRetry(gw, relay.url);
  });

  it("answers 502 when the gateway's answer exceeds the size limit", async () => {
    const { gw, relay } = await setup({ limits: { maxResponseBytes: 16 } });
    gw.behaviour = (_req, res) => {
      res.writeHead(200, { "content-type": "message/ohttp-res" });
      res.end(Buffer.alloc(17));
    };
    const res = await request(`${relay.url}/leader-gateway`, { method: "POST", body: "x", headers: { "content-type": OHTTP_REQ } });
    expect(res.statusCode).toBe(502);
    expect(await res.body.json()).toMatchObject({ code: "RELAY_ERR_UPSTREAM_INVALID" });
  });

  it("answers 408 and closes when a request head does not arrive in time", async () => {
    const { relay } = await setup({ limits: { headersTimeoutMs: 200, requestTimeoutMs: 400 } });
    const text = await rawExchange(relay.port, "POST /leader-gateway HTTP/1.1\r\nHost: r\r\n");
    expect(text).toMatch(/^HTTP\/1\.1 408/);
    const body = await rawExchange(relay.port, `POST /leader-gateway HTTP/1.1\r\nHost: r\r\nContent-Type: ${OHTTP_REQ}\r\nContent-Length: 10\r\n\r\nabc`);
    expect(body).toMatch(/^HTTP\/1\.1 408/);
  });
});
