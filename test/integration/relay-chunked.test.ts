// Chunked OHTTP (draft-ietf-ohai-chunked-ohttp-08) through a listening relay and gateway to a real
// target, over HTTP/1.1 and HTTP/2: the relay passes requests and answers through as streams
// (chunked transfer coding upstream, Incremental: ?1 both ways, nothing else added), counts bytes
// against its cap while streaming, times out stalls, and a client that goes away mid-request (a
// cut connection, a reset stream) never lets the request reach the target complete.

import { createServer, type IncomingMessage } from "node:http";
import { connect as h2connect, constants as h2c, type ClientHttp2Session, type ClientHttp2Stream } from "node:http2";
import { connect, type AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { BhttpStreamEncoder } from "../../core/bhttp/index.js";
import { concatBytes } from "../../core/bytes.js";
import { MEDIA_TYPES, encapsulateChunkedRequest, encodeKeyConfigs, type KeyConfig } from "../../core/ohttp/index.js";
import { createObliviousFetch } from "../../client/oblivious-fetch.js";
import { bytesStream, expectAnswerBeforeRequestEnds, readAll } from "../helpers/byte-streams.js";
import { makeGateway, type Fixture } from "../helpers/gateway-fixture.js";
import { startTestRelay, type TestRelay } from "../helpers/relay-harness.js";
import { listenLocal, startStreamingTarget, type StreamingTarget } from "../helpers/streaming-target.js";
import { createServerTestCa, type TestCa } from "../helpers/test-ca.js";

let seen: StreamingTarget;
let targetUrl: string;

beforeAll(async () => {
  seen = await startStreamingTarget();
  targetUrl = seen.url;
});

afterAll(async () => {
  await seen.close();
});

let gw: Fixture | undefined;
let relay: TestRelay | undefined;
let relayUrl: string;

async function startStack(relayRaw: Record<string, unknown> = {}, gatewayRaw: Record<string, unknown> = {}): Promise<KeyConfig> {
  gw = await makeGateway({ policy: "targets-only", targets: { "https://t.example": targetUrl }, ...gatewayRaw });
  await gw.app.listen({ port: 0, host: "127.0.0.1" });
  const gatewayUrl = `http://127.0.0.1:${(gw.app.server.address() as AddressInfo).port}`;
  relay = await startTestRelay({ routes: [{ path: "/gw", gateway: `${gatewayUrl}/gateway` }], ...relayRaw });
  relayUrl = `${relay.url}/gw`;
  return gw.keyConfig;
}

afterEach(async () => {
  await relay?.stop();
  await gw?.app.close();
  relay = undefined;
  gw = undefined;
  seen.complete = [];
  seen.aborted = 0;
});

function client(config: KeyConfig) {
  return createObliviousFetch({ relay: relayUrl, keys: encodeKeyConfigs([config]), retries: 0 });
}

/** A whole chunked request for /ok, and the byte offsets of its chunk boundaries. */
async function chunkedMessage(config: KeyConfig, pieces = 3): Promise<{ whole: Uint8Array; boundaries: number[] }> {
  const e = new BhttpStreamEncoder();
  const req = await encapsulateChunkedRequest(config);
  const parts = [req.header, await req.writer.seal(e.requestHead({ method: "POST", scheme: "https", authority: "t.example", path: "/ok", headers: [] }))];
  for (let i = 0; i < pieces; i++) parts.push(await req.writer.seal(e.content(new Uint8Array(1000).fill(i))));
  parts.push(await req.writer.sealFinal(e.end()));
  let at = 0;
  const boundaries = parts.map((p) => (at += p.length));
  return { whole: concatBytes(...parts), boundaries };
}

describe("chunked OHTTP through the relay", () => {
  it("streams a request to the target and its answer back, byte for byte, with Incremental: ?1", async () => {
    const config = await startStack({}, { upstream: { maxResponseBytes: 4 * 1024 * 1024 } });
    const res = await client(config)("https://t.example/echo", { method: "POST", body: bytesStream(2 * 1024 * 1024), duplex: "half" } as RequestInit);
    expect(res.status).toBe(200);
    const body = await readAll(res.body);
    expect(body.length).toBe(2 * 1024 * 1024);
    expect(body.every((b, i) => b === (i & 0xff))).toBe(true);
    expect(seen.complete).toEqual([2 * 1024 * 1024]);
  });

  it("delivers the first answer bytes before the last request bytes are sent", async () => {
    const config = await startStack();
    await expectAnswerBeforeRequestEnds(client(config));
  });

  it("never lets a request cut at a chunk boundary by the client reach the target complete", async () => {
    const config = await startStack();
    const { whole, boundaries } = await chunkedMessage(config);
    const port = Number(new URL(relayUrl).port);
    // Cut after each content chunk and inside the final one. (The target hears of a streamed request
    // with its first content bytes: a cut before them never reaches it at all.)
    const cuts = [...boundaries.slice(2, -1), whole.length - 1];
    for (const cut of cuts) {
      const arrived = seen.nextArrival();
      const settled = seen.nextSettled();
      const socket = connect(port, "127.0.0.1");
      await new Promise((r) => socket.once("connect", r));
      const head = `POST /gw HTTP/1.1\r\nhost: relay\r\ncontent-type: ${MEDIA_TYPES.chunkedRequest}\r\ntransfer-encoding: chunked\r\n\r\n`;
      socket.write(head);
      socket.write(`${cut.toString(16)}\r\n`);
      socket.write(whole.subarray(0, cut));
      socket.write("\r\n");
      // The target has the request's head once the relay and the gateway streamed the first chunks.
      await arrived;
      socket.destroy();
      await settled;
      expect(seen.complete, `cut at ${cut}`).toEqual([]);
    }
    expect(seen.aborted).toBe(cuts.length);
    // The same request whole goes through.
    const res = await fetch(relayUrl, { method: "POST", headers: { "content-type": MEDIA_TYPES.chunkedRequest }, body: Buffer.from(whole) });
    expect(res.status).toBe(200);
    expect(res.headers.get("incremental")).toBe("?1");
    await res.arrayBuffer();
    expect(seen.complete).toEqual([3000]);
  });
});

/** A stand-in gateway that records what the relay sends and answers as told (header rules only). */
async function recordingGateway(answer: (req: IncomingMessage, res: import("node:http").ServerResponse) => void) {
  const got: { headers: IncomingMessage["headers"]; rawHeaders: string[]; body: Buffer; complete: boolean }[] = [];
  const server = createServer((req, res) => {
    const parts: Buffer[] = [];
    const entry = { headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.alloc(0), complete: false };
    got.push(entry);
    req.on("data", (c: Buffer) => parts.push(c));
    req.on("end", () => {
      entry.complete = true;
      entry.body = Buffer.concat(parts);
    });
    answer(req, res);
  });
  const url = await listenLocal(server);
  return { got, url, close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

describe("the relay's chunked pass-through rules", () => {
  it("sends chunked coding and Incremental: ?1 upstream, no Content-Length or client details, and passes back only status, type and Incremental", async () => {
    const up = await recordingGateway((req, res) => {
      req.on("end", () => {
        res.writeHead(200, { "content-type": MEDIA_TYPES.chunkedResponse, "x-gateway-secret": "no", "set-cookie": "a=b" });
        res.end(Buffer.from("sealed-answer"));
      });
      req.resume();
    });
    try {
      relay = await startTestRelay({ routes: [{ path: "/gw", gateway: `${up.url}/gateway` }] });
      const body = Buffer.alloc(100_000, 7);
      const res = await fetch(`${relay.url}/gw`, {
        method: "POST",
        headers: { "content-type": MEDIA_TYPES.chunkedRequest, incremental: "?0", "x-forwarded-for": "10.9.9.9", cookie: "c=d", "user-agent": "ua/1" },
        body: new ReadableStream({ start: (c) => (c.enqueue(body), c.close()) }),
        duplex: "half",
      } as RequestInit);
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).toString()).toBe("sealed-answer");
      expect(res.headers.get("content-type")).toBe(MEDIA_TYPES.chunkedResponse);
      expect(res.headers.get("incremental")).toBe("?1");
      expect(res.headers.get("x-gateway-secret")).toBeNull();
      expect(res.headers.get("set-cookie")).toBeNull();
      expect(up.got).toHaveLength(1);
      const sent = up.got[0]!;
      expect(sent.complete).toBe(true);
      expect(sent.body.equals(body)).toBe(true);
      const names = sent.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase()).sort();
      expect(names).toEqual(["content-type", "host", "incremental", "transfer-encoding"]);
      expect(sent.headers["content-type"]).toBe(MEDIA_TYPES.chunkedRequest);
      expect(sent.headers.incremental).toBe("?1");
      expect(sent.headers["transfer-encoding"]).toBe("chunked");
    } finally {
      await up.close();
    }
  });

  it("refuses a request over chunked.maxRequestBytes with 413 while streaming, and the gateway never gets it complete", async () => {
    const up = await recordingGateway((req, res) => {
      req.on("end", () => res.end());
      req.resume();
    });
    try {
      relay = await startTestRelay({ routes: [{ path: "/gw", gateway: `${up.url}/gateway` }], chunked: { maxRequestBytes: 256 * 1024 } });
      const res = await fetch(`${relay.url}/gw`, {
        method: "POST",
        headers: { "content-type": MEDIA_TYPES.chunkedRequest },
        body: bytesStream(1024 * 1024),
        duplex: "half",
      } as RequestInit);
      expect(res.status).toBe(413);
      expect((await res.json()) as { code: string }).toMatchObject({ code: "HTTP_ERR_TOO_LARGE" });
      expect(up.got.every((g) => !g.complete)).toBe(true);
      // A declared length over the cap is refused before anything goes upstream.
      const declared = await fetch(`${relay.url}/gw`, { method: "POST", headers: { "content-type": MEDIA_TYPES.chunkedRequest }, body: Buffer.alloc(300 * 1024) });
      expect(declared.status).toBe(413);
      expect(up.got.length).toBeLessThanOrEqual(1);
    } finally {
      await up.close();
    }
  });

  it("answers 408 to a client that stalls mid-request, and cuts the upstream request", async () => {
    const up = await recordingGateway((req) => req.resume());
    try {
      relay = await startTestRelay({ routes: [{ path: "/gw", gateway: `${up.url}/gateway` }], chunked: { idleTimeoutMs: 200 } });
      const port = Number(new URL(relay.url).port);
      const socket = connect(port, "127.0.0.1");
      await new Promise((r) => socket.once("connect", r));
      socket.write(`POST /gw HTTP/1.1\r\nhost: relay\r\ncontent-type: ${MEDIA_TYPES.chunkedRequest}\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n`);
      const answer = await new Promise<string>((resolve) => {
        let text = "";
        socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
        socket.on("close", () => resolve(text));
      });
      expect(answer).toMatch(/^HTTP\/1\.1 408 /);
      expect(answer).toContain("HTTP_ERR_TIMEOUT");
      expect(up.got.every((g) => !g.complete)).toBe(true);
    } finally {
      await up.close();
    }
  });

  it("cuts the client's connection when the gateway's answer breaks off, so it never looks complete", async () => {
    const up = await recordingGateway((req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": MEDIA_TYPES.chunkedResponse });
        res.write(Buffer.alloc(1000, 1));
        setImmediate(() => res.destroy());
      });
    });
    try {
      relay = await startTestRelay({ routes: [{ path: "/gw", gateway: `${up.url}/gateway` }] });
      const res = await fetch(`${relay.url}/gw`, { method: "POST", headers: { "content-type": MEDIA_TYPES.chunkedRequest }, body: Buffer.alloc(10, 1) });
      expect(res.status).toBe(200);
      await expect(res.arrayBuffer()).rejects.toThrow();
    } finally {
      await up.close();
    }
  });

  it("cuts an answer over chunked.maxResponseBytes instead of passing it on truncated (502 if its declared length says so)", async () => {
    const up = await recordingGateway((req, res) => {
      req.resume();
      req.on("end", () => {
        const body = Buffer.alloc(200_000, 1);
        // /declared: with a Content-Length; otherwise streamed in pieces (chunked coding).
        if (req.url!.endsWith("/declared")) {
          res.writeHead(200, { "content-type": MEDIA_TYPES.chunkedResponse, "content-length": String(body.length) });
          res.end(body);
        } else {
          res.writeHead(200, { "content-type": MEDIA_TYPES.chunkedResponse });
          res.write(body.subarray(0, 50_000));
          setImmediate(() => res.end(body.subarray(50_000)));
        }
      });
    });
    try {
      relay = await startTestRelay({
        routes: [
          { path: "/gw", gateway: `${up.url}/gateway` },
          { path: "/gw-declared", gateway: `${up.url}/gateway/declared` },
        ],
        chunked: { maxResponseBytes: 100_000 },
      });
      const send = (path: string) => fetch(`${relay!.url}${path}`, { method: "POST", headers: { "content-type": MEDIA_TYPES.chunkedRequest }, body: Buffer.alloc(10, 1) });
      const declared = await send("/gw-declared");
      expect(declared.status).toBe(502);
      expect((await declared.json()) as { code: string }).toMatchObject({ code: "RELAY_ERR_UPSTREAM_INVALID" });
      // Cut once the cap is passed: the fetch or the body read fails (the head may or may not have
      // left the relay by then).
      await expect(send("/gw").then((r) => r.arrayBuffer())).rejects.toThrow();
    } finally {
      await up.close();
    }
  });
});

describe("chunked OHTTP through the relay over HTTP/2", () => {
  let ca: TestCa;
  beforeAll(() => {
    ca = createServerTestCa("veil-relay-chunked-h2-");
  });
  afterAll(() => ca.close());

  async function startH2Stack(raw: Record<string, unknown> = {}): Promise<{ config: KeyConfig; session: ClientHttp2Session }> {
    const config = await startStack({ listen: { host: "127.0.0.1", port: 0, tls: { cert: ca.file("relay.pem"), key: ca.file("relay.key") } }, ...raw });
    const session = h2connect(relay!.url, { ca: ca.pem("ca.pem") });
    session.on("error", () => {});
    return { config, session };
  }

  /** Opens a chunked OHTTP POST stream on the relay's route. */
  function open(session: ClientHttp2Session): ClientHttp2Stream {
    const stream = session.request({ ":method": "POST", ":path": "/gw", "content-type": MEDIA_TYPES.chunkedRequest, incremental: "?1" });
    stream.on("error", () => {});
    return stream;
  }

  it("streams the request and the answer, the first answer bytes before the last request bytes", async () => {
    const { config, session } = await startH2Stack();
    try {
      const e = new BhttpStreamEncoder();
      const req = await encapsulateChunkedRequest(config);
      const stream = open(session);
      stream.write(req.header);
      stream.write(await req.writer.seal(e.requestHead({ method: "POST", scheme: "https", authority: "t.example", path: "/early", headers: [] })));
      stream.write(await req.writer.seal(e.content(new TextEncoder().encode("first"))));
      const head = await new Promise<Record<string, unknown>>((r) => stream.once("response", r));
      expect(head[":status"]).toBe(200);
      expect(head["content-type"]).toBe(MEDIA_TYPES.chunkedResponse);
      expect(head.incremental).toBe("?1");
      // Open what has arrived until the target's "early:" shows: the request is still open.
      const opened: Uint8Array[] = [];
      await new Promise<void>((resolve) => {
        const onData = (d: Buffer): void => {
          void req.response.push(new Uint8Array(d)).then((pieces) => {
            opened.push(...pieces);
            if (new TextDecoder().decode(concatBytes(...opened)).includes("early:")) {
              stream.off("data", onData);
              resolve();
            }
          });
        };
        stream.on("data", onData);
      });
      expect(seen.complete).toEqual([]);
      stream.end(await req.writer.sealFinal(e.end()));
      const rest: Buffer[] = [];
      stream.on("data", (d: Buffer) => rest.push(d));
      await new Promise((r) => stream.once("end", r));
      opened.push(...(await req.response.push(new Uint8Array(Buffer.concat(rest)))), await req.response.end());
      const inner = new TextDecoder().decode(concatBytes(...opened));
      expect(inner).toContain("early:first");
      expect(seen.complete).toEqual([5]);
    } finally {
      session.destroy();
    }
  });

  it("never lets a request whose stream the client resets reach the target complete", async () => {
    const { config, session } = await startH2Stack();
    try {
      const { whole, boundaries } = await chunkedMessage(config);
      const cuts = [...boundaries.slice(2, -1), whole.length - 1];
      for (const cut of cuts) {
        const arrived = seen.nextArrival();
        const settled = seen.nextSettled();
        const stream = open(session);
        stream.write(whole.subarray(0, cut));
        await arrived;
        stream.close(h2c.NGHTTP2_CANCEL);
        await settled;
        expect(seen.complete, `cut at ${cut}`).toEqual([]);
      }
      expect(seen.aborted).toBe(cuts.length);
    } finally {
      session.destroy();
    }
  });

  it("refuses a stream over chunked.maxRequestBytes with a 413 problem (no Connection field in HTTP/2)", async () => {
    const { session } = await startH2Stack({ chunked: { maxRequestBytes: 100_000 } });
    try {
      // A declared length over the cap: refused before anything goes upstream.
      const stream = session.request({ ":method": "POST", ":path": "/gw", "content-type": MEDIA_TYPES.chunkedRequest, "content-length": "120000" });
      stream.on("error", () => {});
      stream.write(Buffer.alloc(1000, 1));
      const head = await new Promise<Record<string, unknown>>((r) => stream.once("response", r));
      expect(head[":status"]).toBe(413);
      expect(head.connection).toBeUndefined();
      const body: Buffer[] = [];
      stream.on("data", (d: Buffer) => body.push(d));
      await new Promise((r) => stream.once("end", r));
      expect(JSON.parse(Buffer.concat(body).toString()) as { code: string }).toMatchObject({ code: "HTTP_ERR_TOO_LARGE" });
      expect(seen.complete).toEqual([]);
    } finally {
      session.destroy();
    }
  });
});
