// Properties of the relay's own HTTP/1.1 parsers (relay/http1.ts), in the long fuzz mode too:
//
// - parseCanonicalPost against node's own parser (llhttp, as node:http uses it): whenever the lean
//   path accepts a request head, llhttp reads the same method, target, version, Content-Length and
//   message boundary from the same bytes. Otherwise a request could mean one thing to the lean path
//   and another to node:http after a handoff (request smuggling).
// - ResponseParser on random, mutated and arbitrarily split gateway answers: it completes, waits for
//   more, or throws RELAY_ERR_UPSTREAM_INVALID; it agrees with llhttp on valid answers.
// - The key cache's Cache-Control and application/ohttp-keys framing checks never throw.

import { createRequire } from "node:module";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ProtocolError } from "../../core/errors.js";
import { MAX_DELTA_SECONDS, isMediaType, maxAgeSec } from "../../core/http-fields.js";
import { checkKeysFraming } from "../../relay/key-cache.js";
import { ResponseParser, parseCanonicalPost } from "../../relay/http1.js";
import { fuzzParams } from "../helpers/fuzz.js";

// --- node's parser (llhttp) ---------------------------------------------------------------------

interface LlhttpParser {
  initialize(type: number, resource: object): void;
  execute(b: Buffer): number | Error;
  finish(): number | Error | undefined;
  [k: number]: unknown;
}
interface LlhttpModule {
  HTTPParser: { new (): LlhttpParser; REQUEST: number; RESPONSE: number; kOnHeadersComplete: number; kOnBody: number; kOnMessageComplete: number; kOnHeaders: number };
  methods: string[];
}
const { HTTPParser, methods } = createRequire(import.meta.url)("_http_common") as LlhttpModule;

interface LlhttpMessage {
  error: boolean;
  version?: string;
  method?: string;
  url?: string;
  status?: number;
  headers: string[];
  body: number[];
  keepAlive?: boolean;
  /** Bytes consumed when the first message completed (undefined: it did not complete). */
  completeAt?: number;
}

/** Parses `bytes` with llhttp byte by byte until the first (final) message completes. */
function llhttp(type: "request" | "response", bytes: Buffer): LlhttpMessage {
  const p = new HTTPParser();
  p.initialize(type === "request" ? HTTPParser.REQUEST : HTTPParser.RESPONSE, {});
  const out: LlhttpMessage = { error: false, headers: [], body: [] };
  let done = false;
  p[HTTPParser.kOnHeaders] = (h: string[]) => out.headers.push(...h);
  p[HTTPParser.kOnHeadersComplete] = (maj: number, min: number, h: string[], method: number, url: string, status: number, _m: string, _u: boolean, ka: boolean) => {
    out.headers.push(...h);
    out.version = `${maj}.${min}`;
    out.method = methods[method] ?? String(method);
    out.url = url;
    out.status = status;
    out.keepAlive = ka;
  };
  p[HTTPParser.kOnBody] = (b: Buffer) => out.body.push(...b);
  p[HTTPParser.kOnMessageComplete] = () => {
    // Interim (1xx) answers come before the final one.
    if (type === "response" && out.status !== undefined && out.status < 200) {
      out.headers = [];
      out.body = [];
      return;
    }
    done = true;
  };
  // One byte at a time: the boundary is exactly where the message completed.
  for (let i = 0; i < bytes.length && !done; i++) {
    const r = p.execute(bytes.subarray(i, i + 1));
    if (r instanceof Error) {
      out.error = true;
      return out;
    }
    if (done) out.completeAt = i + 1;
  }
  return out;
}

// --- request heads --------------------------------------------------------------------------

const SP = fc.constantFrom("", " ", "  ", "\t", " \t");
const junkChar = fc.constantFrom("\0", "\r", "\n", "\x0b", "\x7f", "\x80", "\xff", " ", "\t", ":", ",", ";", '"', "\\", "%", "?", "#", "@");
const name = (n: string): fc.Arbitrary<string> => fc.constantFrom(n, n.toUpperCase(), n[0]!.toUpperCase() + n.slice(1));
const lengthValue = fc.oneof(
  fc.nat({ max: 70 }).map(String),
  fc.constantFrom("+1", "-1", "1,1", "1, 1", "01", "0x1", "1 1", "", "1e1", "99999999999999999", "١", "1\u00a0"),
);
const fieldLine: fc.Arbitrary<string> = fc.oneof(
  fc.tuple(name("content-length"), SP, lengthValue, SP).map(([n, a, v, b]) => `${n}:${a}${v}${b}`),
  fc.tuple(name("content-type"), SP, fc.constantFrom("message/ohttp-req", "text/plain", "")).map(([n, a, v]) => `${n}:${a}${v}`),
  fc.tuple(name("host"), SP, fc.constantFrom("relay.example", "", "a b", "r:1")).map(([n, a, v]) => `${n}:${a}${v}`),
  fc.tuple(name("transfer-encoding"), fc.constantFrom("chunked", "identity", "gzip, chunked", "chunked ")).map(([n, v]) => `${n}: ${v}`),
  fc.tuple(name("connection"), fc.constantFrom("close", "keep-alive", "Upgrade", "close, upgrade", "te")).map(([n, v]) => `${n}: ${v}`),
  fc.constantFrom("Expect: 100-continue", "Upgrade: h2c", " folded", "\tfolded", "X-A : b", "X-B:", ": x", "junk", "X-C: a\rb", "X-D: a\nb"),
  fc.tuple(fc.stringMatching(/^[A-Za-z0-9-]{1,8}$/), SP, fc.string({ maxLength: 8, unit: "binary-ascii" })).map(([n, a, v]) => `${n}:${a}${v}`),
);
const requestLine = fc.oneof(
  { weight: 6, arbitrary: fc.constant("POST /leader-gateway HTTP/1.1") },
  { weight: 4, arbitrary: fc.tuple(fc.constantFrom("POST", "post", "GET", "PUT"), fc.constantFrom(" ", "  ", "\t"), fc.constantFrom("/leader-gateway", "/p?q=1", "/a%20b", "http://r/p", "*", "/\x80", "/a b", "/#f"), fc.constantFrom(" HTTP/1.1", " HTTP/1.0", " HTTP/2.0", " http/1.1", "  HTTP/1.1", " HTTP/1.1 ")).map((p) => p.join("")) },
);
/** Heads near the canonical shape: the lines the fast path needs, shuffled and bent. */
const head: fc.Arbitrary<string> = fc
  .tuple(
    requestLine,
    fc.array(fieldLine, { maxLength: 6 }),
    fc.boolean(),
    fc.option(fc.tuple(fc.nat(), junkChar), { nil: undefined }),
  )
  .map(([line, extra, canonical, junk]) => {
    const lines = canonical ? ["Host: relay.example", "Content-Type: message/ohttp-req", "Content-Length: 5", ...extra] : extra;
    let h = [line, ...lines].join("\r\n");
    if (junk !== undefined) {
      const at = junk[0] % (h.length + 1);
      h = h.slice(0, at) + junk[1] + h.slice(at);
    }
    return h;
  })
  .filter((h) => !h.includes("\r\n\r\n"));

describe("parseCanonicalPost agrees with node's parser", () => {
  it("whenever the lean path accepts a head, llhttp reads the same request and the same boundary", () => {
    let accepted = 0;
    fc.assert(
      fc.property(head, (h) => {
        const post = parseCanonicalPost(h);
        if (post === undefined) return;
        accepted++;
        expect(Number.isSafeInteger(post.contentLength) && post.contentLength >= 0).toBe(true);
        const body = "b".repeat(post.contentLength);
        // A second request follows: llhttp must stop at the same byte. llhttp refuses an HTAB in
        // Content-Length's optional whitespace (RFC 9110 §5.6.3 allows it): the lean path reads it
        // as the same length llhttp reads with a space instead.
        const asLlhttpWants = h
          .split("\r\n")
          .map((l) => (/^content-length:/i.test(l) ? l.replace(/\t/g, " ") : l))
          .join("\r\n");
        const bytes = Buffer.from(`${asLlhttpWants}\r\n\r\n${body}GET / HTTP/1.1\r\n\r\n`, "latin1");
        const n = llhttp("request", bytes);
        expect(n.error, JSON.stringify(h)).toBe(false);
        expect(n.method).toBe("POST");
        expect(n.url).toBe(post.target);
        expect(n.version).toBe("1.1");
        expect(n.completeAt).toBe(Buffer.byteLength(h, "latin1") + 4 + post.contentLength);
        expect(n.body.length).toBe(post.contentLength);
        const names = n.headers.filter((_, i) => i % 2 === 0).map((x) => x.toLowerCase());
        expect(names.filter((x) => x === "host")).toHaveLength(1);
        expect(names).not.toContain("transfer-encoding");
        if (post.close) expect(n.keepAlive).toBe(false);
      }),
      fuzzParams(0x4771),
    );
    // The generator must reach the accepting side often enough to mean something.
    expect(accepted).toBeGreaterThan(0);
  });

  it("never throws on random bytes, and accepts only well-formed Content-Lengths", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: "binary", maxLength: 300 }), head.map((h) => h + "\r\nX: \x00")), (s) => {
        const r = parseCanonicalPost(s);
        if (r !== undefined) {
          expect(r.target.startsWith("/")).toBe(true);
          expect(Number.isSafeInteger(r.contentLength) && r.contentLength >= 0).toBe(true);
        }
        isMediaType(s, "message/ohttp-req");
      }),
      fuzzParams(0x4772),
    );
  });
});

// --- gateway answers --------------------------------------------------------------------------

const limits = { maxHeaderBytes: 2048, maxBodyBytes: 4096 };

function feed(bytes: Buffer, splits: number[]): { done: boolean; parser: ResponseParser } | ProtocolError {
  const p = new ResponseParser(limits);
  const cuts = [...new Set(splits.map((s) => s % (bytes.length + 1)))].sort((a, b) => a - b);
  let at = 0;
  let done = false;
  try {
    for (const c of [...cuts, bytes.length]) {
      if (c <= at) continue;
      done = p.execute(bytes.subarray(at, c)) || done;
      at = c;
      if (done) break;
    }
    if (!done) done = p.finish();
  } catch (e) {
    if (!(e instanceof ProtocolError) || e.code !== "RELAY_ERR_UPSTREAM_INVALID") throw e;
    return e;
  }
  return { done, parser: p };
}

const validAnswer = fc
  .tuple(
    fc.constantFrom(200, 201, 400, 404, 500, 502, 503),
    fc.uint8Array({ maxLength: 200 }),
    fc.constantFrom("length", "chunked"),
    fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 5 }),
    fc.boolean(),
  )
  .map(([status, body, framing, chunkSizes, interim]) => {
    let bytes = interim ? "HTTP/1.1 100 Continue\r\n\r\n" : "";
    bytes += `HTTP/1.1 ${status} X\r\ncontent-type: message/ohttp-res\r\n`;
    const text = Buffer.from(body).toString("latin1");
    if (framing === "length") {
      bytes += `content-length: ${body.length}\r\n\r\n${text}`;
    } else {
      bytes += "transfer-encoding: chunked\r\n\r\n";
      let at = 0;
      for (let i = 0; at < text.length; i++) {
        const n = chunkSizes[i % chunkSizes.length]!;
        const part = text.slice(at, at + n);
        bytes += `${part.length.toString(16)}\r\n${part}\r\n`;
        at += n;
      }
      bytes += "0\r\n\r\n";
    }
    return { bytes: Buffer.from(bytes, "latin1"), status, body };
  });

describe("ResponseParser", () => {
  it("reads valid answers however they are split, as llhttp does", () => {
    fc.assert(
      fc.property(validAnswer, fc.array(fc.nat(), { maxLength: 6 }), (a, splits) => {
        const r = feed(a.bytes, splits);
        if (r instanceof ProtocolError) throw r;
        expect(r.done).toBe(true);
        expect(r.parser.status).toBe(a.status);
        expect(Buffer.from(r.parser.body()).equals(Buffer.from(a.body))).toBe(true);
        const n = llhttp("response", Buffer.concat([a.bytes, Buffer.from("HTTP/1.1 200 OK\r\n\r\n")]));
        expect(n.error).toBe(false);
        expect(n.status).toBe(a.status);
        expect(Buffer.from(n.body).equals(Buffer.from(a.body))).toBe(true);
      }),
      fuzzParams(0x4773),
    );
  });

  it("completes, waits or throws RELAY_ERR_UPSTREAM_INVALID on random and mutated answers", () => {
    const mutated = fc.tuple(validAnswer, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean()).map(([a, at, byte, insert]) => {
      const b = Buffer.from(a.bytes);
      const i = at % b.length;
      return insert ? Buffer.concat([b.subarray(0, i), Buffer.of(byte), b.subarray(i)]) : (b.writeUInt8(byte, i), b);
    });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 400 }).map((u) => Buffer.from(u)), mutated), fc.array(fc.nat(), { maxLength: 4 }), (bytes, splits) => {
        const r = feed(bytes, splits);
        if (!(r instanceof ProtocolError) && r.done) {
          expect(r.parser.body().length).toBeLessThanOrEqual(limits.maxBodyBytes);
          expect(r.parser.status).toBeGreaterThanOrEqual(100);
        }
      }),
      fuzzParams(0x4774),
    );
  });
});

// --- the relay's key cache ------------------------------------------------------------------------

describe("key cache checks", () => {
  it("reads max-age from any Cache-Control as a non-negative integer or nothing", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom("max-age=10", 'max-age="5"', "no-store", "max-age=99999999999", "max-age=-1, max-age=3")), (cc) => {
        const v = maxAgeSec(cc);
        if (v !== undefined) expect(Number.isSafeInteger(v) && v >= 0 && v <= MAX_DELTA_SECONDS).toBe(true);
      }),
      fuzzParams(0x4775),
    );
  });

  it("judges the framing of any application/ohttp-keys body without throwing", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
        expect(typeof checkKeysFraming(b)).toBe("boolean");
      }),
      fuzzParams(0x4776),
    );
  });
});
