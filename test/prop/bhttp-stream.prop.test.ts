// Properties of the streaming Binary HTTP codec (RFC 9292): the stream decoders agree with the
// whole-message decoders on every input (messages in both framings, every truncation, random
// bytes), however the input is split; the stream encoder's output decodes to what went in; padding
// to a multiple is exact and non-zero padding is refused.

import fc from "fast-check";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { concatBytes, fromHex } from "../../core/bytes.js";
import { ProtocolError } from "../../core/errors.js";
import {
  BhttpRequestStreamDecoder,
  BhttpResponseStreamDecoder,
  BhttpStreamEncoder,
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
  padding,
  type BhttpRequest,
  type BhttpResponse,
  type BhttpStreamEvents,
} from "../../core/bhttp/index.js";
import { encodeIndeterminateRequest, encodeIndeterminateResponse, encodeOptions, request, response } from "../helpers/bhttp-arbitraries.js";
import { fuzzParams, numRuns, resplit } from "../helpers/fuzz.js";

const cuts = fc.array(fc.nat(2000), { maxLength: 6 });


interface Decoded<H> {
  head: H;
  body: Uint8Array;
  trailers: unknown;
}

/** Runs a stream decoder over `pieces`; the message it read, or the ProtocolError it threw. */
function streamDecode<H>(
  d: { push(b: Uint8Array): BhttpStreamEvents<H>; end(): BhttpStreamEvents<H> & { trailers: unknown } },
  pieces: Uint8Array[],
): Decoded<H> | ProtocolError {
  let head: H | undefined;
  const body: Uint8Array[] = [];
  const take = (e: BhttpStreamEvents<H>) => {
    if (e.head !== undefined) {
      expect(head, "one head").toBeUndefined();
      head = e.head;
    }
    body.push(...e.body);
  };
  try {
    for (const p of pieces) take(d.push(p));
    const last = d.end();
    take(last);
    expect(head).toBeDefined();
    return { head: head!, body: concatBytes(...body), trailers: last.trailers };
  } catch (e) {
    if (e instanceof ProtocolError) {
      expect(e.code.startsWith("BHTTP_ERR_")).toBe(true);
      return e;
    }
    throw e;
  }
}

function whole<T>(f: () => T): T | ProtocolError {
  try {
    return f();
  } catch (e) {
    if (e instanceof ProtocolError) return e;
    throw e;
  }
}

const KINDS = {
  request: { whole: decodeRequest, stream: () => new BhttpRequestStreamDecoder() },
  response: { whole: decodeResponse, stream: () => new BhttpResponseStreamDecoder() },
} as const;
type Kind = keyof typeof KINDS;

/** The stream decoder reads `pieces` as the whole decoder reads `bytes` (their concatenation). */
function same(kind: Kind, bytes: Uint8Array, pieces: Uint8Array[]): void {
  const w = whole(() => KINDS[kind].whole(bytes));
  const s = streamDecode<unknown>(KINDS[kind].stream(), pieces);
  if (w instanceof ProtocolError) {
    expect(s, "the whole decoder refused it").toBeInstanceOf(ProtocolError);
    return;
  }
  expect(s).not.toBeInstanceOf(ProtocolError);
  const { body, trailers, ...head } = w;
  expect(s).toEqual({ head, body, trailers });
}
const sameRequest = (bytes: Uint8Array, pieces: Uint8Array[]) => same("request", bytes, pieces);
const sameResponse = (bytes: Uint8Array, pieces: Uint8Array[]) => same("response", bytes, pieces);

function encodeEither(m: BhttpRequest | BhttpResponse, indeterminate: boolean, chunk: number, opts: { padding: number; truncate: boolean }): Uint8Array {
  if ("status" in m) return indeterminate ? encodeIndeterminateResponse(m, chunk, opts.truncate, opts.padding) : encodeResponse(m, opts);
  return indeterminate ? encodeIndeterminateRequest(m, chunk, opts.truncate, opts.padding) : encodeRequest(m, opts);
}

const heavy = (seed: number) => fuzzParams(seed, Math.max(20, Math.ceil(numRuns / 4)));

describe("stream decoders agree with the whole-message decoders", () => {
  it("on the RFC 9292 §5 examples, whole and byte by byte", () => {
    const V = JSON.parse(readFileSync(new URL("../vectors/bhttp-rfc9292.json", import.meta.url), "utf8")) as { examples: { name: string; hex: string }[] };
    for (const ex of V.examples) {
      const bytes = fromHex(ex.hex);
      const bytewise = Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
      const same = ex.name.startsWith("request") ? sameRequest : sameResponse;
      same(bytes, [bytes]);
      same(bytes, bytewise);
    }
  });

  it.each(["request", "response"] as const)("on %ss in both framings, padded and truncated, however split", (kind) => {
    const message: fc.Arbitrary<BhttpRequest | BhttpResponse> = kind === "request" ? request : response;
    fc.assert(
      fc.property(message, encodeOptions, fc.boolean(), fc.integer({ min: 1, max: 40 }), cuts, (m, opts, indeterminate, chunk, at) => {
        const bytes = encodeEither(m, indeterminate, chunk, opts);
        same(kind, bytes, resplit(bytes, at));
      }),
      fuzzParams(kind === "request" ? 9292_51 : 9292_52),
    );
  });

  it("on every truncation of a message", () => {
    fc.assert(
      fc.property(request, response, fc.boolean(), (q, s, indeterminate) => {
        const qb = encodeEither(q, indeterminate, 7, { padding: 0, truncate: false });
        const sb = encodeEither(s, indeterminate, 7, { padding: 0, truncate: false });
        for (let n = 0; n < qb.length; n++) sameRequest(qb.subarray(0, n), [qb.subarray(0, n)]);
        for (let n = 0; n < sb.length; n++) sameResponse(sb.subarray(0, n), [sb.subarray(0, n)]);
      }),
      heavy(9292_53),
    );
  });

  it("on random bytes, however split", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), cuts, (b, at) => {
        sameRequest(b, resplit(b, at));
        sameResponse(b, resplit(b, at));
      }),
      fuzzParams(9292_54),
    );
  });
});

describe("stream encoder", () => {
  function encodeStreamed(r: BhttpRequest | BhttpResponse, chunk: number, padTo: number): Uint8Array {
    const e = new BhttpStreamEncoder();
    const parts = ["status" in r ? e.responseHead(r) : e.requestHead(r)];
    for (let o = 0; o < r.body.length; o += chunk) parts.push(e.content(r.body.subarray(o, o + chunk)));
    parts.push(e.end(r.trailers, padTo));
    return concatBytes(...parts);
  }

  it("writes requests and responses the whole-message decoders read back, padded to an exact multiple", () => {
    fc.assert(
      fc.property(request, response, fc.integer({ min: 1, max: 50 }), fc.integer({ min: 0, max: 300 }), (q, s, chunk, padTo) => {
        const qb = encodeStreamed(q, chunk, padTo);
        const sb = encodeStreamed(s, chunk, padTo);
        if (padTo > 1) {
          expect(qb.length % padTo).toBe(0);
          expect(sb.length % padTo).toBe(0);
        }
        expect(decodeRequest(qb)).toEqual(q);
        expect(decodeResponse(sb)).toEqual({ ...s, informational: [] });
      }),
      fuzzParams(9292_55),
    );
  });

  it("pads to exact sizes", () => {
    const r: BhttpRequest = { method: "POST", scheme: "https", authority: "a.example", path: "/x", headers: [], body: new Uint8Array(10), trailers: [] };
    const unpadded = encodeStreamed(r, 4, 0).length;
    expect(unpadded).toBe(1 + 5 + 6 + 10 + 3 + 1 + 3 * 1 + 10 + 1 + 1);
    for (const m of [1, 2, 7, 64, 256, 1000]) {
      const n = encodeStreamed(r, 4, m).length;
      expect(n).toBe(m <= 1 ? unpadded : Math.ceil(unpadded / m) * m);
    }
    expect(padding(64, 64)).toBe(0);
    expect(padding(65, 64)).toBe(63);
    expect(() => padding(1, -1)).toThrow(RangeError);
  });

  it("refuses non-zero padding", () => {
    const r: BhttpRequest = { method: "GET", scheme: "https", authority: "a.example", path: "/", headers: [], body: new Uint8Array(0), trailers: [] };
    const padded = encodeStreamed(r, 1, 32);
    expect(streamDecode(new BhttpRequestStreamDecoder(), [padded])).not.toBeInstanceOf(ProtocolError);
    const bad = padded.slice();
    bad[bad.length - 1] = 1;
    const got = streamDecode(new BhttpRequestStreamDecoder(), [bad]);
    expect((got as ProtocolError).code).toBe("BHTTP_ERR_FORMAT");
    expect(() => decodeRequest(bad)).toThrow(ProtocolError);
  });

  it("hands content on as it arrives, before the message ends", () => {
    const e = new BhttpStreamEncoder();
    const d = new BhttpRequestStreamDecoder();
    const head = d.push(e.requestHead({ method: "POST", scheme: "https", authority: "a.example", path: "/up", headers: [["content-type", "application/x"]] }));
    expect(head.head?.path).toBe("/up");
    expect(d.push(e.content(new Uint8Array([1, 2, 3]))).body).toEqual([new Uint8Array([1, 2, 3])]);
    const half = e.content(new Uint8Array(100).fill(7));
    expect(concatBytes(...d.push(half.subarray(0, 50)).body)).toEqual(new Uint8Array(48).fill(7));
    expect(concatBytes(...d.push(half.subarray(50)).body)).toEqual(new Uint8Array(52).fill(7));
    expect(d.push(e.end([["x-t", "1"]])).body).toEqual([]);
    expect(d.end()).toEqual({ body: [], trailers: [["x-t", "1"]] });
  });
});
