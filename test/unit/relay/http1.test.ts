import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ProtocolError } from "../../../core/errors.js";
import { ResponseParser, parseCanonicalPost } from "../../../relay/http1.js";

const RUNS = Number(process.env.VEIL_FUZZ_RUNS ?? 200);

function head(lines: string[]): string {
  return lines.join("\r\n");
}

describe("parseCanonicalPost", () => {
  const base = ["POST /leader-gateway HTTP/1.1", "Host: relay.example", "Content-Type: message/ohttp-req", "Content-Length: 42"];

  it("parses a canonical POST", () => {
    expect(parseCanonicalPost(head(base))).toEqual({ target: "/leader-gateway", contentLength: 42, contentType: "message/ohttp-req", close: false });
  });

  it("reads Connection: close and tolerates other connection options and any other fields", () => {
    const r = parseCanonicalPost(head([...base, "Connection: keep-alive, Close", "User-Agent: x", "X-Empty:", "Cookie:  a=b \t"]));
    expect(r).toMatchObject({ close: true, contentLength: 42 });
  });

  it("takes field names case-insensitively and trims optional whitespace", () => {
    const r = parseCanonicalPost(head(["POST /p HTTP/1.1", "hOsT:r", "CONTENT-LENGTH: \t7 ", "content-type:\tmessage/ohttp-req "]));
    expect(r).toEqual({ target: "/p", contentLength: 7, contentType: "message/ohttp-req", close: false });
  });

  it.each([
    ["another method", ["GET /leader-gateway HTTP/1.1", "Host: r", "Content-Length: 1"]],
    ["a lowercase method", ["post /leader-gateway HTTP/1.1", "Host: r", "Content-Length: 1"]],
    ["HTTP/1.0", ["POST /leader-gateway HTTP/1.0", "Host: r", "Content-Length: 1"]],
    ["absolute-form", ["POST http://r/leader-gateway HTTP/1.1", "Host: r", "Content-Length: 1"]],
    ["no Content-Length", ["POST /p HTTP/1.1", "Host: r"]],
    ["two Content-Length fields", ["POST /p HTTP/1.1", "Host: r", "Content-Length: 1", "Content-Length: 1"]],
    ["a list Content-Length", ["POST /p HTTP/1.1", "Host: r", "Content-Length: 1, 1"]],
    ["a signed Content-Length", ["POST /p HTTP/1.1", "Host: r", "Content-Length: +1"]],
    ["a huge Content-Length", ["POST /p HTTP/1.1", "Host: r", "Content-Length: 1234567890123456"]],
    ["Transfer-Encoding", ["POST /p HTTP/1.1", "Host: r", "Content-Length: 1", "Transfer-Encoding: chunked"]],
    ["Expect", ["POST /p HTTP/1.1", "Host: r", "Content-Length: 1", "Expect: 100-continue"]],
    ["Upgrade", ["POST /p HTTP/1.1", "Host: r", "Content-Length: 1", "Upgrade: h2c", "Connection: Upgrade"]],
    ["no Host", ["POST /p HTTP/1.1", "Content-Length: 1"]],
    ["two Host fields", ["POST /p HTTP/1.1", "Host: a", "Host: b", "Content-Length: 1"]],
    ["an empty Host", ["POST /p HTTP/1.1", "Host: ", "Content-Length: 1"]],
    ["two Content-Type fields", ["POST /p HTTP/1.1", "Host: r", "Content-Length: 1", "Content-Type: a/b", "Content-Type: c/d"]],
    ["an obs-fold line", ["POST /p HTTP/1.1", "Host: r", "Content-Length: 1", "X-A: a", " folded"]],
    ["whitespace before the colon", ["POST /p HTTP/1.1", "Host : r", "Content-Length: 1"]],
    ["a bare LF inside", ["POST /p HTTP/1.1", "Host: r\nX: y", "Content-Length: 1"]],
    ["a bare CR inside", ["POST /p HTTP/1.1", "Host: r\rX: y", "Content-Length: 1"]],
    ["a NUL in a value", ["POST /p HTTP/1.1", "Host: r\u0000", "Content-Length: 1"]],
    ["a line without a colon", ["POST /p HTTP/1.1", "Host: r", "Content-Length: 1", "junk"]],
    ["an empty field name", ["POST /p HTTP/1.1", "Host: r", "Content-Length: 1", ": x"]],
    ["two spaces in the request line", ["POST  /p HTTP/1.1", "Host: r", "Content-Length: 1"]],
    ["a space in the target", ["POST /p q HTTP/1.1", "Host: r", "Content-Length: 1"]],
    ["a leading empty line", ["", "POST /p HTTP/1.1", "Host: r", "Content-Length: 1"]],
  ])("leaves %s to node:http", (_what, lines) => {
    expect(parseCanonicalPost(head(lines))).toBeUndefined();
  });

  it("never throws on random heads", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 300 }), (s) => {
        const r = parseCanonicalPost(s);
        if (r !== undefined) expect(Number.isSafeInteger(r.contentLength)).toBe(true);
      }),
      { numRuns: RUNS, seed: 5 },
    );
  });
});


const LIMITS = { maxHeaderBytes: 1024, maxBodyBytes: 64 };

function parseAll(bytes: Buffer, splits: number[] = [], end = false): ResponseParser {
  const p = new ResponseParser(LIMITS);
  let at = 0;
  for (const s of [...splits.filter((x) => x > 0 && x < bytes.length).sort((a, b) => a - b), bytes.length]) {
    if (s > at) p.execute(bytes.subarray(at, s));
    at = s;
  }
  if (end) p.finish();
  return p;
}

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
    return undefined;
  } catch (e) {
    return e instanceof ProtocolError ? e.code : `foreign: ${String(e)}`;
  }
}

const ANSWERS: Record<string, { bytes: string; status: number; type?: string; body: string; keepAlive: boolean; end?: boolean }> = {
  "a Content-Length body": {
    bytes: "HTTP/1.1 200 OK\r\nContent-Type: message/ohttp-res\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello",
    status: 200,
    type: "message/ohttp-res",
    body: "hello",
    keepAlive: true,
  },
  "a chunked body with extensions and trailers": {
    bytes: "HTTP/1.1 200 OK\r\ncontent-type: message/ohttp-res\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n",
    status: 200,
    type: "message/ohttp-res",
    body: "abcde",
    keepAlive: true,
  },
  "interim answers before the final one": {
    bytes: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    status: 201,
    body: "ok",
    keepAlive: true,
  },
  "a 204 without a body": { bytes: "HTTP/1.1 204 No Content\r\n\r\n", status: 204, body: "", keepAlive: true },
  "a body delimited by the end of the connection": {
    bytes: "HTTP/1.1 200 OK\r\nContent-Type: a/b\r\n\r\nuntil close",
    status: 200,
    type: "a/b",
    body: "until close",
    keepAlive: false,
    end: true,
  },
  "Connection: close": { bytes: "HTTP/1.1 400 Bad\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", status: 400, body: "", keepAlive: false },
  "HTTP/1.0 without keep-alive": { bytes: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", status: 200, body: "x", keepAlive: false },
  "a status line without a reason": { bytes: "HTTP/1.1 502\r\nContent-Length: 0\r\n\r\n", status: 502, body: "", keepAlive: true },
};

describe("ResponseParser", () => {
  for (const [what, a] of Object.entries(ANSWERS)) {
    it(`reads ${what}`, () => {
      const p = parseAll(Buffer.from(a.bytes, "latin1"), [], a.end === true);
      expect(p.done).toBe(true);
      expect(p.status).toBe(a.status);
      expect(p.contentType).toBe(a.type);
      expect(p.body().toString("latin1")).toBe(a.body);
      expect(p.keepAlive).toBe(a.keepAlive);
      expect(p.extra).toBe(0);
    });

    it(`reads ${what} split at every byte boundary`, () => {
      const bytes = Buffer.from(a.bytes, "latin1");
      for (let i = 1; i < bytes.length; i++) {
        const p = parseAll(bytes, [i], a.end === true);
        expect(p.done).toBe(true);
        expect(p.body().toString("latin1")).toBe(a.body);
      }
    });
  }

  it("reads any answer the same however it is split", () => {
    fc.assert(
      fc.property(fc.constantFrom(...Object.values(ANSWERS)), fc.array(fc.nat({ max: 300 }), { maxLength: 8 }), (a, splits) => {
        const p = parseAll(Buffer.from(a.bytes, "latin1"), splits, a.end === true);
        expect(p.done).toBe(true);
        expect(p.body().toString("latin1")).toBe(a.body);
      }),
      { numRuns: RUNS, seed: 7 },
    );
  });

  it("reads a subarray of a larger buffer", () => {
    const big = Buffer.from(`xxxx${ANSWERS["a Content-Length body"]!.bytes}yyyy`, "latin1");
    const p = new ResponseParser(LIMITS);
    expect(p.execute(big.subarray(4, big.length - 4))).toBe(true);
    expect(p.body().toString()).toBe("hello");
  });

  it("counts bytes after the end of the answer", () => {
    const p = new ResponseParser(LIMITS);
    expect(p.execute(Buffer.from("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxEXTRA"))).toBe(true);
    expect(p.extra).toBe(5);
  });

  it("does not reuse a connection whose answer had both Transfer-Encoding and Content-Length", () => {
    const p = parseAll(Buffer.from("HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"));
    expect(p.done).toBe(true);
    expect(p.body().toString()).toBe("x");
    expect(p.keepAlive).toBe(false);
  });

  it("reads the gateway's keep-alive timeout", () => {
    const p = parseAll(Buffer.from("HTTP/1.1 200 OK\r\nKeep-Alive: max=5, timeout=3\r\nContent-Length: 0\r\n\r\n"));
    expect(p.keepAliveTimeoutMs).toBe(3000);
  });

  it("is not done before the whole body arrived, and reports a cut answer on finish", () => {
    const p = new ResponseParser(LIMITS);
    expect(p.execute(Buffer.from("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"))).toBe(false);
    expect(p.inHead).toBe(false);
    expect(p.finish()).toBe(false);
  });

  it.each([
    ["a bad status line", "HTTP/1.1 20 OK\r\n\r\n"],
    ["a status above 599", "HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n"],
    ["another protocol", "HTTP/2 200 OK\r\n\r\n"],
    ["a protocol switch", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"],
    ["a bad header line", "HTTP/1.1 200 OK\r\nno colon\r\n\r\n"],
    ["an obs-fold header line", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"],
    ["conflicting Content-Length fields", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"],
    ["a non-numeric Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 0x1\r\n\r\n"],
    ["a coding other than chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"],
    ["a bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
    ["a chunk without its CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxYY0\r\n\r\n"],
    ["a body over the limit (Content-Length)", "HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n"],
    ["a body over the limit (chunked)", `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n${"x".repeat(65)}\r\n0\r\n\r\n`],
    ["a body over the limit (until close)", `HTTP/1.1 200 OK\r\n\r\n${"x".repeat(65)}`],
    ["headers over the limit", `HTTP/1.1 200 OK\r\nX: ${"x".repeat(1100)}\r\n\r\n`],
    ["headers over the limit without an end", `HTTP/1.1 200 OK\r\nX: ${"x".repeat(1100)}`],
  ])("refuses %s with RELAY_ERR_UPSTREAM_INVALID", (_what, bytes) => {
    expect(codeOf(() => parseAll(Buffer.from(bytes, "latin1"), [], true))).toBe("RELAY_ERR_UPSTREAM_INVALID");
  });

  it("returns or throws RELAY_ERR_UPSTREAM_INVALID on random bytes, nothing else", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.array(fc.nat({ max: 400 }), { maxLength: 4 }), (bytes, splits) => {
        const code = codeOf(() => parseAll(Buffer.from(bytes), splits, true));
        expect(code === undefined || code === "RELAY_ERR_UPSTREAM_INVALID").toBe(true);
      }),
      { numRuns: RUNS, seed: 11 },
    );
  });

  it("returns or throws RELAY_ERR_UPSTREAM_INVALID on mutated valid answers", () => {
    fc.assert(
      fc.property(fc.constantFrom(...Object.values(ANSWERS)), fc.nat(), fc.integer({ min: 0, max: 255 }), (a, at, byte) => {
        const bytes = Buffer.from(a.bytes, "latin1");
        bytes[at % bytes.length] = byte;
        const code = codeOf(() => parseAll(bytes, [], true));
        expect(code === undefined || code === "RELAY_ERR_UPSTREAM_INVALID").toBe(true);
      }),
      { numRuns: RUNS, seed: 13 },
    );
  });
});
