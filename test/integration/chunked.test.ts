// Chunked OHTTP end to end (draft-ietf-ohai-chunked-ohttp-08) through a listening gateway to a
// real target: streamed bodies both ways, an early answer before the request ends, a request cut
// at every chunk boundary never reaching the target complete; plus the RFC 9458 §6.5 Date checks,
// §6.2.3 padding, and RFC 9540's /.well-known/ohttp-gateway.

import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { BhttpStreamEncoder, decodeResponse, encodeRequest, type BhttpRequest } from "../../core/bhttp/index.js";
import { concatBytes } from "../../core/bytes.js";
import { DATE_PROBLEM } from "../../core/errors.js";
import { MEDIA_TYPES, encapsulateChunkedRequest, encapsulateRequest, encodeKeyConfigs, type KeyConfig } from "../../core/ohttp/index.js";
import { createObliviousFetch } from "../../client/oblivious-fetch.js";
import type { Gate, GateInput } from "../../gateway/gate-contract.js";
import { MemoryNonceStore } from "../../gateway/nonce-stores/index.js";
import { bytesStream, expectAnswerBeforeRequestEnds, readAll } from "../helpers/byte-streams.js";
import { makeGateway, type Fixture } from "../helpers/gateway-fixture.js";
import { startStreamingTarget, type StreamingTarget } from "../helpers/streaming-target.js";

let seen: StreamingTarget;
let targetUrl: string;

beforeAll(async () => {
  seen = await startStreamingTarget((req, res) => {
    if (req.url === "/big") {
      // An answer longer than upstream.maxResponseBytes, in pieces with no declared length.
      req.resume();
      res.writeHead(200, { "content-type": "application/octet-stream" });
      let left = 8;
      const more = (): void => {
        if (left-- === 0) return void res.end();
        res.write(Buffer.alloc(16 * 1024, 1), () => setImmediate(more));
      };
      more();
      return true;
    }
    if (req.url === "/stall") {
      // The head and a first piece, then nothing (until the test closes the server).
      req.resume();
      res.writeHead(200, { "content-type": "application/octet-stream" });
      res.write("partial");
      return true;
    }
    if (req.url === "/trailers") {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "text/plain", trailer: "x-digest" });
        res.write("body");
        res.addTrailers({ "x-digest": "abc" });
        res.end();
      });
      return true;
    }
    return false;
  });
  targetUrl = seen.url;
});

afterAll(async () => {
  await seen.close();
});

let fx: Fixture | undefined;
let gatewayUrl: string;

async function startGateway(raw: Record<string, unknown> = {}, deps: Parameters<typeof makeGateway>[1] = {}): Promise<Fixture> {
  fx = await makeGateway({ policy: "targets-only", targets: { "https://t.example": targetUrl }, ...raw }, deps);
  await fx.app.listen({ port: 0, host: "127.0.0.1" });
  gatewayUrl = `http://127.0.0.1:${(fx.app.server.address() as AddressInfo).port}`;
  return fx;
}

afterEach(async () => {
  await fx?.app.close();
  fx = undefined;
  seen.complete = [];
  seen.aborted = 0;
});

function client(config: KeyConfig, extra: Partial<Parameters<typeof createObliviousFetch>[0]> = {}) {
  return createObliviousFetch({ relay: `${gatewayUrl}/gateway`, keys: encodeKeyConfigs([config]), retries: 0, ...extra });
}

/** POSTs raw OHTTP bytes (chunked unless told) to the gateway, as a relay would. */
function postToGateway(body: Uint8Array, mediaType: string = MEDIA_TYPES.chunkedRequest): Promise<Response> {
  return fetch(`${gatewayUrl}/gateway`, { method: "POST", headers: { "content-type": mediaType }, body: Buffer.from(body) });
}

/**
 * A chunked request to https://t.example<path> sealed piece by piece: the header, the request
 * head, one chunk per content, and the final chunk unless `final` is false (a request cut there).
 */
async function sealChunked(keyConfig: KeyConfig, path: string, contents: Uint8Array[], final = true) {
  const e = new BhttpStreamEncoder();
  const req = await encapsulateChunkedRequest(keyConfig);
  const pieces = [req.header, await req.writer.seal(e.requestHead({ method: "POST", scheme: "https", authority: "t.example", path, headers: [] }))];
  for (const c of contents) pieces.push(await req.writer.seal(e.content(c)));
  if (final) pieces.push(await req.writer.sealFinal(e.end()));
  return { req, pieces };
}

describe("chunked OHTTP through the gateway", () => {
  it("streams a request body to the target and its answer back, byte for byte", async () => {
    // Streamed answers are capped by upstream.maxResponseBytes too (256 KiB by default).
    const { keyConfig } = await startGateway({ upstream: { maxResponseBytes: 2 * 1024 * 1024 } });
    const res = await client(keyConfig)("https://t.example/echo", { method: "POST", body: bytesStream(1024 * 1024), duplex: "half" } as RequestInit);
    expect(res.status).toBe(200);
    const body = await readAll(res.body);
    expect(body.length).toBe(1024 * 1024);
    expect(body.every((b, i) => b === (i & 0xff))).toBe(true);
    expect(seen.complete).toEqual([1024 * 1024]);
  });

  it("delivers the first answer bytes before the last request bytes are sent", async () => {
    const { keyConfig } = await startGateway();
    await expectAnswerBeforeRequestEnds(client(keyConfig));
  });

  it("never lets a request cut at a chunk boundary reach the target complete", async () => {
    const { keyConfig } = await startGateway();
    const { req, pieces } = await sealChunked(keyConfig, "/ok", [0, 1, 2].map((i) => new Uint8Array(1000).fill(i)));
    const boundaries = pieces.map((_, i) => concatBytes(...pieces.slice(0, i + 1)).length);
    const whole = concatBytes(...pieces);
    for (const cut of [0, ...boundaries.slice(0, -1), whole.length - 1]) {
      const res = await postToGateway(whole.subarray(0, cut));
      // The answer comes after the upstream exchange ended: /ok answers only a complete body.
      await res.arrayBuffer().catch(() => undefined);
      expect(seen.complete, `cut at ${cut}`).toEqual([]);
    }
    const res = await postToGateway(whole);
    expect(res.status).toBe(200);
    expect(res.headers.get("incremental")).toBe("?1");
    const out: Uint8Array[] = [];
    for (const p of await req.response.push(new Uint8Array(await res.arrayBuffer()))) out.push(p);
    out.push(await req.response.end());
    expect(new TextDecoder().decode(decodeResponse(concatBytes(...out)).body)).toBe("ok");
    expect(seen.complete).toEqual([3000]);
  });

  it("answers key problems before decapsulation plain, and reads DAP-policy requests whole (sealed refusals)", async () => {
    const { keyConfig } = await startGateway({ policy: "dap" });
    const bad = await encapsulateChunkedRequest({ ...keyConfig, keyId: (keyConfig.keyId + 1) % 256 });
    const plain = await postToGateway(bad.header);
    expect(plain.status).toBe(400);
    expect(((await plain.json()) as { type: string }).type).toBe("https://iana.org/assignments/http-problem-types#ohttp-key");
    const res = await client(keyConfig)("https://t.example/echo", { method: "POST", body: bytesStream(10), duplex: "half" } as RequestInit);
    expect(res.status).toBe(403);
    expect(seen.complete).toEqual([]);
  });
});

describe("limits on streamed answers", () => {
  it("cuts an answer over upstream.maxResponseBytes before its final chunk, so the client sees it break off", async () => {
    const { keyConfig } = await startGateway({ upstream: { maxResponseBytes: 64 * 1024 } });
    const res = await client(keyConfig)("https://t.example/big", { method: "POST", body: bytesStream(10), duplex: "half" } as RequestInit);
    expect(res.status).toBe(200);
    await expect(readAll(res.body)).rejects.toThrow();
  });

  it("applies upstream.totalTimeoutMs to a stream: a stalled answer is cut, never ended as complete", async () => {
    const { keyConfig } = await startGateway({ upstream: { totalTimeoutMs: 300, bodyTimeoutMs: 60_000 } });
    const res = await client(keyConfig)("https://t.example/stall", { method: "POST", body: bytesStream(10), duplex: "half" } as RequestInit);
    expect(res.status).toBe(200);
    await expect(readAll(res.body)).rejects.toThrow();
  });

  it("passes the target's trailers on in the inner answer's trailer section", async () => {
    const { keyConfig } = await startGateway();
    const { req, pieces } = await sealChunked(keyConfig, "/trailers", [new Uint8Array(3)]);
    const whole = concatBytes(...pieces);
    const res = await postToGateway(whole);
    expect(res.status).toBe(200);
    const out = [...(await req.response.push(new Uint8Array(await res.arrayBuffer()))), await req.response.end()];
    const inner = decodeResponse(concatBytes(...out));
    expect(new TextDecoder().decode(inner.body)).toBe("body");
    expect(inner.trailers).toEqual([["x-digest", "abc"]]);
  });
});

describe("tokens on streamed requests", () => {
  function recordingGate() {
    const settled: boolean[] = [];
    const streamIds: (Uint8Array | undefined)[] = [];
    const gate: Gate = {
      admit: async (input: GateInput) => {
        streamIds.push(input.streamId);
        return { settle: async (reached: boolean) => void settled.push(reached) };
      },
    };
    return { gate, settled, streamIds };
  }

  it("commits once the stream reached the target, also when it broke off, and releases when nothing did", async () => {
    const g = recordingGate();
    const { keyConfig } = await startGateway({ targets: { "https://t.example": targetUrl, "https://down.example": "http://127.0.0.1:1" } }, { deps: { gate: g.gate } });
    const ok = await client(keyConfig)("https://t.example/echo", { method: "POST", body: bytesStream(100_000), duplex: "half" } as RequestInit);
    await readAll(ok.body);
    expect(g.settled).toEqual([true]);
    expect(g.streamIds[0]?.length).toBeGreaterThan(32); // bound to this encapsulation, not to a body
    // Cut after the head and one content chunk: the upstream request had started.
    const cut = concatBytes(...(await sealChunked(keyConfig, "/ok", [new Uint8Array(10)], false)).pieces);
    const res = await postToGateway(cut);
    await res.arrayBuffer();
    expect(g.settled).toEqual([true, true]);
    const down = await client(keyConfig)("https://down.example/x", { method: "POST", body: bytesStream(10), duplex: "half" } as RequestInit);
    expect(down.status).toBe(502);
    expect(g.settled).toEqual([true, true, false]);
    expect(seen.complete).toEqual([100_000]);
  });
});

describe("RFC 9458 §6.5 Date checks", () => {
  it("resends once with the gateway's Date when the client's clock is off, and never twice", async () => {
    const { keyConfig } = await startGateway({ replay: { windowSec: 30 } }, { deps: { replayStore: new MemoryNonceStore() } });
    const skewed = client(keyConfig, { now: () => Date.now() + 3600_000 });
    const res = await skewed("https://t.example/ok", { method: "POST", body: "x" });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("ok");
    expect(skewed.stats().dateRetries).toBe(1);
    expect(seen.complete).toEqual([1]);
    // Without a Date at all: refused, with the gateway's Date and no-store, and not retried.
    const noDate = client(keyConfig, { date: false });
    const refused = await noDate("https://t.example/ok", { method: "POST", body: "x" });
    expect(refused.status).toBe(400);
    expect(refused.headers.get("cache-control")).toBe("no-store");
    expect(Math.abs(Date.parse(refused.headers.get("date")!) - Date.now())).toBeLessThan(5000);
    expect(((await refused.json()) as { type: string }).type).toBe(DATE_PROBLEM);
    expect(noDate.stats().dateRetries).toBe(0);
  });

  it("refuses a replayed encapsulation inside the window", async () => {
    const { keyConfig } = await startGateway({ replay: { windowSec: 30 } }, { deps: { replayStore: new MemoryNonceStore() } });
    const inner: BhttpRequest = { method: "POST", scheme: "https", authority: "t.example", path: "/ok", headers: [["date", new Date().toUTCString()]], body: new Uint8Array([1]), trailers: [] };
    const { encapsulated, response } = await encapsulateRequest(keyConfig, encodeRequest(inner));
    const send = () => postToGateway(encapsulated, MEDIA_TYPES.request);
    const first = await send();
    expect(decodeResponse(await response.decapsulateResponse(new Uint8Array(await first.arrayBuffer()))).status).toBe(200);
    const again = await send();
    expect(again.status).toBe(200); // sealed; its content cannot be opened by anyone but the client
    expect(seen.complete).toEqual([1]);
    expect(fx!.lines.some((l) => l.includes("GATEWAY_ERR_REPLAYED"))).toBe(true);
  });
});

describe("padding (RFC 9292 §3.8)", () => {
  it("pads inner responses to an exact multiple, and the client's requests too", async () => {
    const { keyConfig } = await startGateway({ inner: { padToBytes: 256 } });
    const inner: BhttpRequest = { method: "POST", scheme: "https", authority: "t.example", path: "/ok", headers: [], body: new Uint8Array([1]), trailers: [] };
    const { encapsulated, response } = await encapsulateRequest(keyConfig, encodeRequest(inner, { padding: 100 }));
    const res = await postToGateway(encapsulated, MEDIA_TYPES.request);
    const opened = await response.decapsulateResponse(new Uint8Array(await res.arrayBuffer()));
    expect(opened.length).toBe(256);
    expect(decodeResponse(opened).status).toBe(200);
    const padded = client(keyConfig, { padToBytes: 512 });
    expect((await padded("https://t.example/ok", { method: "POST", body: "y" })).status).toBe(200);
  });

  it("refuses non-zero padding with a sealed 400", async () => {
    const { keyConfig } = await startGateway();
    const inner: BhttpRequest = { method: "POST", scheme: "https", authority: "t.example", path: "/ok", headers: [], body: new Uint8Array([1]), trailers: [] };
    const bytes = encodeRequest(inner, { padding: 8 });
    bytes[bytes.length - 1] = 1;
    const { encapsulated, response } = await encapsulateRequest(keyConfig, bytes);
    const res = await postToGateway(encapsulated, MEDIA_TYPES.request);
    const answer = decodeResponse(await response.decapsulateResponse(new Uint8Array(await res.arrayBuffer())));
    expect(answer.status).toBe(400);
    expect(new TextDecoder().decode(answer.body)).toContain("BHTTP_ERR_FORMAT");
    expect(seen.complete).toEqual([]);
  });
});

describe("RFC 9540 /.well-known/ohttp-gateway", () => {
  it("serves the key configs to GET with Accept application/ohttp-keys, 406 otherwise, and takes POSTs as /gateway", async () => {
    const { keyConfig } = await startGateway();
    const keys = await fetch(`${gatewayUrl}/.well-known/ohttp-gateway`, { headers: { accept: MEDIA_TYPES.keys } });
    expect(keys.status).toBe(200);
    expect(keys.headers.get("content-type")).toBe(MEDIA_TYPES.keys);
    const direct = await fetch(`${gatewayUrl}/ohttp-keys`);
    expect(new Uint8Array(await keys.arrayBuffer())).toEqual(new Uint8Array(await direct.arrayBuffer()));
    expect((await fetch(`${gatewayUrl}/.well-known/ohttp-gateway`, { headers: { accept: "text/html" } })).status).toBe(406);
    const viaWellKnown = createObliviousFetch({ relay: `${gatewayUrl}/.well-known/ohttp-gateway`, keys: encodeKeyConfigs([keyConfig]) });
    expect(await (await viaWellKnown("https://t.example/ok", { method: "POST", body: "z" })).text()).toBe("ok");
    expect((await fetch(`${gatewayUrl}/.well-known/ohttp-gateway`, { method: "PUT" })).status).toBe(405);
  });
});
