// Properties of the Binary HTTP codec (RFC 9292), and a cross-check against the independent
// implementation bhttp-js in both directions.

import { BHttpDecoder, BHttpEncoder } from "bhttp-js";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { concatBytes } from "../../core/bytes.js";
import { ProtocolError } from "../../core/errors.js";
import {
  encodeIndeterminateRequest,
  encodeIndeterminateResponse,
  encodeOptions,
  request,
  response,
} from "../helpers/bhttp-arbitraries.js";
import {
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
  type BhttpRequest,
  type Field,
} from "../../core/bhttp/index.js";

const numRuns = Number(process.env.VEIL_FUZZ_RUNS ?? 200);
const params = (seed: number): fc.Parameters<unknown> => ({ seed, numRuns });
/** Per-message properties that loop over every prefix run fewer times to stay fast. */
const paramsHeavy = (seed: number): fc.Parameters<unknown> => ({ seed, numRuns: Math.max(20, Math.ceil(numRuns / 4)) });

/** Returns normally, or throws a ProtocolError with a BHTTP_ code: nothing else is allowed. */
function expectBhttpOutcome(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (!(e instanceof ProtocolError) || !e.code.startsWith("BHTTP_ERR_")) {
      throw new Error(`decoder threw something other than a BHTTP ProtocolError: ${String(e)}`, { cause: e });
    }
  }
}

// --- properties -----------------------------------------------------------------------------

describe("Binary HTTP properties", () => {
  it("round-trips any request through the known-length encoding (padded, truncated or not)", () => {
    fc.assert(
      fc.property(request, encodeOptions, (r, opts) => {
        expect(decodeRequest(encodeRequest(r, opts))).toEqual(r);
      }),
      params(0x5eed01),
    );
  });

  it("round-trips any response through the known-length encoding (padded, truncated or not)", () => {
    fc.assert(
      fc.property(response, encodeOptions, (r, opts) => {
        expect(decodeResponse(encodeResponse(r, opts))).toEqual(r);
      }),
      params(0x5eed02),
    );
  });

  it("decodes indeterminate-length encodings with any chunking to the same message", () => {
    fc.assert(
      fc.property(request, response, fc.integer({ min: 1, max: 64 }), encodeOptions, (q, s, chunk, o) => {
        expect(decodeRequest(encodeIndeterminateRequest(q, chunk, o.truncate, o.padding))).toEqual(q);
        expect(decodeResponse(encodeIndeterminateResponse(s, chunk, o.truncate, o.padding))).toEqual(s);
      }),
      params(0x5eed03),
    );
  });

  it("on every truncation of a valid message, returns a message or throws a BHTTP error", () => {
    fc.assert(
      fc.property(request, response, fc.integer({ min: 1, max: 64 }), (q, s, chunk) => {
        const messages: [Uint8Array, (b: Uint8Array) => unknown][] = [
          [encodeRequest(q), decodeRequest],
          [encodeIndeterminateRequest(q, chunk, false, 3), decodeRequest],
          [encodeResponse(s), decodeResponse],
          [encodeIndeterminateResponse(s, chunk, false, 3), decodeResponse],
        ];
        for (const [bytes, decode] of messages) {
          for (let len = 0; len < bytes.length; len++) expectBhttpOutcome(() => decode(bytes.subarray(0, len)));
        }
      }),
      paramsHeavy(0x5eed04),
    );
  });

  it("a prefix that decodes is the original with whole trailing parts dropped, never a changed part", () => {
    // RFC 9292 cannot tell a cut at a section boundary from a sender's truncation of empty parts
    // (OHTTP's AEAD is what protects the whole message); what must hold is that no part is altered.
    fc.assert(
      fc.property(request, fc.integer({ min: 1, max: 64 }), (q, chunk) => {
        const none = new Uint8Array(0);
        const allowed = [
          q,
          { ...q, trailers: [] },
          { ...q, body: none, trailers: [] },
          { ...q, headers: [], body: none, trailers: [] },
        ];
        for (const bytes of [encodeRequest(q), encodeIndeterminateRequest(q, chunk, false, 0)]) {
          for (let len = 0; len < bytes.length; len++) {
            let got: BhttpRequest;
            try {
              got = decodeRequest(bytes.subarray(0, len));
            } catch {
              continue;
            }
            expect(allowed).toContainEqual(got);
          }
        }
      }),
      paramsHeavy(0x5eed05),
    );
  });

  it("on random bytes, returns a message or throws a BHTTP error", () => {
    const input = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      // Start with a real framing indicator so the decoders get past the first byte.
      fc.tuple(fc.constantFrom(0, 1, 2, 3), fc.uint8Array({ maxLength: 200 })).map(([f, rest]) =>
        concatBytes(Uint8Array.of(f), rest),
      ),
    );
    fc.assert(
      fc.property(input, (b) => {
        expectBhttpOutcome(() => decodeRequest(b));
        expectBhttpOutcome(() => decodeResponse(b));
      }),
      params(0x5eed06),
    );
  });

  it("on valid messages with one byte changed, returns a message or throws a BHTTP error", () => {
    fc.assert(
      fc.property(request, response, fc.nat(), fc.integer({ min: 1, max: 255 }), (q, s, at, xor) => {
        for (const [bytes, decode] of [
          [encodeRequest(q), decodeRequest],
          [encodeResponse(s), decodeResponse],
        ] as const) {
          const m = bytes.slice();
          m[at % m.length]! ^= xor;
          expectBhttpOutcome(() => decode(m));
        }
      }),
      params(0x5eed07),
    );
  });

  it("decodes a message that is a subarray of a larger buffer", () => {
    fc.assert(
      fc.property(request, response, fc.uint8Array({ maxLength: 16 }), fc.uint8Array({ maxLength: 16 }), (q, s, pre, post) => {
        for (const [bytes, decode] of [
          [encodeRequest(q), decodeRequest],
          [encodeResponse(s), decodeResponse],
        ] as const) {
          const big = concatBytes(pre, bytes, post);
          expect(decode(big.subarray(pre.length, pre.length + bytes.length))).toEqual(decode(bytes));
        }
      }),
      params(0x5eed08),
    );
  });
});

// --- cross-check with bhttp-js ----------------------------------------------------------------
//
// bhttp-js converts between fetch Request/Response objects and binary, so the messages here stay
// inside what those objects can carry faithfully: https URLs without query or default port, unique
// visible-ASCII header fields (Headers merges duplicates and sorts), no body on GET/HEAD, and no
// status that forbids a body (204, 205, 304). Informational responses and trailers have no place
// in a Response: we send them to bhttp-js (it must skip them) but cannot get them back.

const asciiValue = fc.stringMatching(/^([\x21-\x7e]([\x20-\x7e]{0,24}[\x21-\x7e])?)?$/);
const uniqueFields = fc.uniqueArray(fc.tuple(fc.stringMatching(/^x-[a-z0-9-]{1,12}$/), asciiValue), {
  maxLength: 6,
  selector: ([n]) => n,
});
const sorted = (fs: Field[]): Field[] => [...fs].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

const webRequest = fc
  .record({
    method: fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH"),
    authority: fc.stringMatching(/^[a-z][a-z0-9-]{0,10}\.example(:[1-9][0-9]{3})?$/),
    path: fc.stringMatching(/^(\/[a-z0-9_-]{1,10}){0,4}$/).map((p) => (p === "" ? "/" : p)),
    headers: uniqueFields,
    body: fc.uint8Array({ maxLength: 300 }),
  })
  .map(
    (r): BhttpRequest => ({
      ...r,
      scheme: "https",
      body: r.method === "GET" ? new Uint8Array(0) : r.body,
      trailers: [],
    }),
  );

const webResponse = fc.record({
  informational: fc.array(fc.record({ status: fc.integer({ min: 100, max: 199 }), headers: uniqueFields }), {
    maxLength: 2,
  }),
  status: fc.integer({ min: 200, max: 599 }).filter((s) => s !== 204 && s !== 205 && s !== 304),
  headers: uniqueFields,
  body: fc.uint8Array({ maxLength: 300 }),
  trailers: uniqueFields,
});

describe("cross-check with bhttp-js", () => {
  it("bhttp-js decodes our request encoding to the same request", async () => {
    const decoder = new BHttpDecoder();
    await fc.assert(
      fc.asyncProperty(webRequest, fc.nat(8), async (r, padding) => {
        const req = decoder.decodeRequest(encodeRequest(r, { padding }));
        expect(req.method).toBe(r.method);
        expect(req.url).toBe(`https://${r.authority}${r.path}`);
        expect([...req.headers]).toEqual(sorted(r.headers));
        expect(new Uint8Array(await req.arrayBuffer())).toEqual(r.body);
      }),
      params(0x5eed09),
    );
  });

  it("we decode bhttp-js's request encoding to the same request", async () => {
    const encoder = new BHttpEncoder();
    await fc.assert(
      fc.asyncProperty(webRequest, async (r) => {
        const init: RequestInit = { method: r.method, headers: r.headers };
        if (r.method !== "GET") init.body = new Uint8Array(r.body);
        const bytes = await encoder.encodeRequest(new Request(`https://${r.authority}${r.path}`, init));
        expect(decodeRequest(bytes)).toEqual({ ...r, headers: sorted(r.headers) });
      }),
      params(0x5eed0a),
    );
  });

  it("bhttp-js decodes our response encoding (with 1xx and trailers) to the same status, headers and body", async () => {
    const decoder = new BHttpDecoder();
    await fc.assert(
      fc.asyncProperty(webResponse, fc.nat(8), async (r, padding) => {
        const res = decoder.decodeResponse(encodeResponse(r, { padding }));
        expect(res.status).toBe(r.status);
        expect([...res.headers]).toEqual(sorted(r.headers));
        expect(new Uint8Array(await res.arrayBuffer())).toEqual(r.body);
      }),
      params(0x5eed0b),
    );
  });

  it("we decode bhttp-js's response encoding to the same response", async () => {
    const encoder = new BHttpEncoder();
    await fc.assert(
      fc.asyncProperty(webResponse, async (r) => {
        const bytes = await encoder.encodeResponse(new Response(new Uint8Array(r.body), { status: r.status, headers: r.headers }));
        expect(decodeResponse(bytes)).toEqual({
          informational: [],
          status: r.status,
          headers: sorted(r.headers),
          body: r.body,
          trailers: [],
        });
      }),
      params(0x5eed0c),
    );
  });
});
