import { describe, expect, it } from "vitest";
import { ByteWriter, concatBytes, toHex } from "../../core/bytes.js";
import { ProtocolError, type ErrorCode } from "../../core/errors.js";
import {
  DEFAULT_BHTTP_LIMITS,
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
  headerValue,
  headerValues,
  type BhttpRequest,
  type BhttpResponse,
  type Field,
} from "../../core/bhttp/index.js";

// --- hand-built messages --------------------------------------------------------------------

const enc = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
/** A varint. */
const v = (n: number): Uint8Array => new ByteWriter(8).varint(n).finish().slice();
/** A length-prefixed string (Latin-1). */
const s = (str: string): Uint8Array => concatBytes(v(str.length), enc(str));
const cat = (...parts: (Uint8Array | number[])[]): Uint8Array =>
  concatBytes(...parts.map((p) => (p instanceof Uint8Array ? p : Uint8Array.from(p))));
/** Field lines without a length prefix or terminator. */
const lines = (...fields: Field[]): Uint8Array => cat(...fields.flatMap(([n, val]) => [s(n), s(val)]));
/** A known-length field section. */
const ksec = (...fields: Field[]): Uint8Array => {
  const body = lines(...fields);
  return cat(v(body.length), body);
};
/** An indeterminate-length field section. */
const isec = (...fields: Field[]): Uint8Array => cat(lines(...fields), [0]);
/** Known-length request control data for GET https://example.com/. */
const control = (method = "GET", scheme = "https", authority = "example.com", path = "/"): Uint8Array =>
  cat(s(method), s(scheme), s(authority), s(path));
const krequest = (...tail: (Uint8Array | number[])[]): Uint8Array => cat([0], control(), ...tail);
const EMPTY = new Uint8Array(0);

function codeOf(f: () => unknown): ErrorCode | "no error" | "not a ProtocolError" {
  try {
    f();
    return "no error";
  } catch (e) {
    return e instanceof ProtocolError ? e.code : "not a ProtocolError";
  }
}

function request(over: Partial<BhttpRequest> = {}): BhttpRequest {
  return {
    method: "GET",
    scheme: "https",
    authority: "example.com",
    path: "/",
    headers: [],
    body: EMPTY,
    trailers: [],
    ...over,
  };
}

function response(over: Partial<BhttpResponse> = {}): BhttpResponse {
  return { informational: [], status: 200, headers: [], body: EMPTY, trailers: [], ...over };
}

// --- decoding -------------------------------------------------------------------------------

describe("framing", () => {
  it("rejects empty input as truncated", () => {
    expect(codeOf(() => decodeRequest(EMPTY))).toBe("BHTTP_ERR_TRUNCATED");
    expect(codeOf(() => decodeResponse(EMPTY))).toBe("BHTTP_ERR_TRUNCATED");
  });

  it("rejects framing indicators other than 0-3", () => {
    expect(codeOf(() => decodeRequest(cat([4], control())))).toBe("BHTTP_ERR_FORMAT");
    expect(codeOf(() => decodeResponse(cat(v(63), v(200))))).toBe("BHTTP_ERR_FORMAT");
  });

  it("rejects a response given to the request decoder and vice versa", () => {
    expect(codeOf(() => decodeRequest(cat([1], v(200))))).toBe("BHTTP_ERR_FORMAT");
    expect(codeOf(() => decodeRequest(cat([3], v(200))))).toBe("BHTTP_ERR_FORMAT");
    expect(codeOf(() => decodeResponse(krequest()))).toBe("BHTTP_ERR_FORMAT");
    expect(codeOf(() => decodeResponse(cat([2], control())))).toBe("BHTTP_ERR_FORMAT");
  });

  it("accepts non-minimal varints everywhere (RFC 9292 §3)", () => {
    // framing 0 as 2 bytes, method length as 4 bytes, status 200 as 8 bytes.
    const req = cat([0x40, 0x00], [0x80, 0, 0, 3], enc("GET"), s("https"), s("a"), s("/"), [0x40, 0x00]);
    expect(decodeRequest(req)).toEqual(request({ authority: "a" }));
    const res = cat([1], [0xc0, 0, 0, 0, 0, 0, 0, 200]);
    expect(decodeResponse(res).status).toBe(200);
  });

  it("rejects a varint beyond 2^53 as malformed, not as a RangeError", () => {
    expect(codeOf(() => decodeRequest(cat([0], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])))).toBe(
      "BHTTP_ERR_FORMAT",
    );
  });
});

describe("request control data", () => {
  const decodeWith = (m: string, sc: string, a: string, p: string): BhttpRequest =>
    decodeRequest(cat([0], control(m, sc, a, p)));

  it("rejects a message that ends inside the control data as truncated", () => {
    const full = krequest();
    for (let len = 1; len < full.length; len++) {
      expect(codeOf(() => decodeRequest(full.subarray(0, len)))).toBe("BHTTP_ERR_TRUNCATED");
    }
  });

  it("accepts a message that ends right after the control data (RFC 9458 Appendix A)", () => {
    expect(decodeRequest(krequest())).toEqual(request());
  });

  it("accepts an empty authority, as RFC 9292 §3.4 encodes an omitted :authority", () => {
    expect(decodeWith("GET", "https", "", "/x").authority).toBe("");
  });

  it("accepts an extension method, a query string and an IPv6 authority with port", () => {
    const r = decodeWith("PROPFIND", "https", "[::1]:8443", "/a/b?c=d&e=%20");
    expect(r).toMatchObject({ method: "PROPFIND", authority: "[::1]:8443", path: "/a/b?c=d&e=%20" });
  });

  it.each([
    ["an empty method", "", "https", "a", "/"],
    ["a method with a space", "G T", "https", "a", "/"],
    ["a method with a non-token character", "GET(", "https", "a", "/"],
    ["an empty scheme", "GET", "", "a", "/"],
    ["a scheme starting with a digit", "GET", "1http", "a", "/"],
    ["a scheme with a colon", "GET", "https:", "a", "/"],
    ["an authority with a space", "GET", "https", "a b", "/"],
    ["an authority with a slash", "GET", "https", "a/b", "/"],
    ["an https authority with userinfo", "GET", "https", "user@a", "/"],
    ["an empty path", "GET", "https", "a", ""],
    ["a path with a space", "GET", "https", "a", "/a b"],
    ["a path with a control character", "GET", "https", "a", "/a\x01"],
    ["a path with a non-ASCII byte", "GET", "https", "a", "/\xe9"],
    ["an absolute-form path", "GET", "https", "a", "https://evil/"],
    ["'*' for a method other than OPTIONS", "GET", "https", "a", "*"],
    ["CONNECT without an authority", "CONNECT", "", "", ""],
  ])("rejects %s", (_what, m, sc, a, p) => {
    expect(codeOf(() => decodeWith(m, sc, a, p))).toBe("BHTTP_ERR_FORMAT");
    expect(codeOf(() => encodeRequest(request({ method: m, scheme: sc, authority: a, path: p })))).toBe(
      "BHTTP_ERR_FORMAT",
    );
  });

  it("accepts OPTIONS * and CONNECT with empty scheme and path (HTTP/2 §8.5)", () => {
    expect(decodeWith("OPTIONS", "https", "a", "*").path).toBe("*");
    expect(decodeWith("CONNECT", "", "a:443", "")).toMatchObject({ scheme: "", path: "" });
  });

  it("rejects a control value longer than maxFieldBytes before reading it", () => {
    // Path length claims 1 GiB with nothing behind it: too large, not truncated.
    const b = cat([0], s("GET"), s("https"), s("a"), v(2 ** 30));
    expect(codeOf(() => decodeRequest(b))).toBe("BHTTP_ERR_TOO_LARGE");
    expect(codeOf(() => decodeRequest(cat([0], s("GET"), s("https"), s("a".repeat(33)), s("/")), { maxFieldBytes: 32 }))).toBe(
      "BHTTP_ERR_TOO_LARGE",
    );
  });
});

describe("field lines", () => {
  const withHeaders = (...raw: (Uint8Array | number[])[]): Uint8Array => krequest(...raw);

  it("lowercases field names on decode (RFC 9110 names are case-insensitive tokens)", () => {
    const r = decodeRequest(withHeaders(ksec(["Content-Type", "text/plain"], ["X-A", "1"])));
    expect(r.headers).toEqual([
      ["content-type", "text/plain"],
      ["x-a", "1"],
    ]);
  });

  it("keeps repeated fields and their order", () => {
    const r = decodeRequest(withHeaders(ksec(["a", "1"], ["b", "2"], ["a", "3"])));
    expect(r.headers).toEqual([
      ["a", "1"],
      ["b", "2"],
      ["a", "3"],
    ]);
    expect(headerValue(r.headers, "A")).toBe("1");
    expect(headerValues(r.headers, "a")).toEqual(["1", "3"]);
    expect(headerValue(r.headers, "missing")).toBeUndefined();
  });

  it("accepts empty values, inner whitespace and obs-text bytes (as Latin-1 chars)", () => {
    const r = decodeRequest(withHeaders(ksec(["a", ""], ["b", "x \ty"], ["c", "caf\xe9\xff"])));
    expect(r.headers).toEqual([
      ["a", ""],
      ["b", "x \ty"],
      ["c", "caf\xe9\xff"],
    ]);
    expect(toHex(encodeRequest(r))).toBe(toHex(cat(withHeaders(ksec(...r.headers)), [0, 0])));
  });

  it.each([
    ["an empty name (known-length)", ["", "x"]],
    ["a name with a space", ["a b", "x"]],
    ["a name with a colon", ["a:b", "x"]],
    ["a pseudo-field :method", [":method", "GET"]],
    ["a pseudo-field :status", [":status", "200"]],
    ["an unknown pseudo-field", [":protocol", "websocket"]],
    ["a name with a non-ASCII byte", ["caf\xe9", "x"]],
    ["a name with NUL", ["a\x00", "x"]],
    ["a value with NUL", ["a", "x\x00y"]],
    ["a value with CR", ["a", "x\ry"]],
    ["a value with LF", ["a", "x\ny"]],
    ["a value with another control character", ["a", "x\x07y"]],
    ["a value with DEL", ["a", "x\x7fy"]],
    ["a value with a leading space", ["a", " x"]],
    ["a value with a trailing tab", ["a", "x\t"]],
  ] as [string, Field][])("rejects %s, in headers and in trailers", (_what, field) => {
    expect(codeOf(() => decodeRequest(withHeaders(ksec(field))))).toBe("BHTTP_ERR_FORMAT");
    expect(codeOf(() => decodeRequest(withHeaders(ksec(), [0], ksec(field))))).toBe("BHTTP_ERR_FORMAT");
    // In the indeterminate-length form an empty name is the section terminator, not an error.
    if (field[0] !== "") {
      expect(codeOf(() => decodeResponse(cat([3], v(200), isec(["ok", "1"], field))))).toBe("BHTTP_ERR_FORMAT");
    }
  });

  it("rejects a field line that runs past its known-length section as malformed", () => {
    const body = lines(["abc", "def"]);
    const b = withHeaders(cat(v(body.length - 1), body));
    expect(codeOf(() => decodeRequest(b))).toBe("BHTTP_ERR_FORMAT");
  });

  it("rejects a known-length section longer than the message as truncated", () => {
    expect(codeOf(() => decodeRequest(withHeaders(v(10), lines(["a", "b"]))))).toBe("BHTTP_ERR_TRUNCATED");
  });

  it("rejects an indeterminate-length section without its terminator as truncated", () => {
    const b = cat([2], control(), lines(["a", "b"]));
    expect(codeOf(() => decodeRequest(b))).toBe("BHTTP_ERR_TRUNCATED");
  });
});

describe("content", () => {
  it("decodes known-length content of any size, including a 4-byte length", () => {
    const body = new Uint8Array(70_000).map((_, i) => i & 0xff);
    const b = krequest(ksec(), v(body.length), body);
    expect(decodeRequest(b).body).toEqual(body);
  });

  it("joins indeterminate-length chunks", () => {
    const b = cat([2], control("POST"), [0], s("Hello, "), s("chunked "), s("world"), [0], [0]);
    expect(new TextDecoder().decode(decodeRequest(b).body)).toBe("Hello, chunked world");
  });

  it("rejects content longer than the rest of the message as truncated", () => {
    expect(codeOf(() => decodeRequest(krequest(ksec(), v(5), [1, 2, 3])))).toBe("BHTTP_ERR_TRUNCATED");
    expect(codeOf(() => decodeRequest(cat([2], control(), [0], v(5), [1, 2, 3])))).toBe("BHTTP_ERR_TRUNCATED");
  });

  it("rejects indeterminate content without its terminator as truncated", () => {
    expect(codeOf(() => decodeRequest(cat([2], control(), [0], s("abc"))))).toBe("BHTTP_ERR_TRUNCATED");
  });

  it("rejects a content length over maxMessageBytes as too large, before looking for the bytes", () => {
    expect(codeOf(() => decodeRequest(krequest(ksec(), v(2 ** 40))))).toBe("BHTTP_ERR_TOO_LARGE");
    expect(codeOf(() => decodeRequest(cat([2], control(), [0], v(2 ** 40))))).toBe("BHTTP_ERR_TOO_LARGE");
  });

  it("returns a body that owns its memory, not a view of the input", () => {
    const input = krequest(ksec(), s("abc"));
    const r = decodeRequest(input);
    input.fill(0x7a);
    expect(r.body).toEqual(enc("abc"));
    expect(r.body.byteOffset).toBe(0);
    expect(r.body.buffer.byteLength).toBe(3);
  });
});

describe("truncation and padding (RFC 9292 §3.8)", () => {
  const full = request({ headers: [["a", "1"]], body: enc("xyz") });

  it("treats each missing trailing part as empty", () => {
    expect(decodeRequest(krequest())).toEqual(request());
    expect(decodeRequest(krequest(ksec(["a", "1"])))).toEqual(request({ headers: [["a", "1"]] }));
    expect(decodeRequest(krequest(ksec(["a", "1"]), s("xyz")))).toEqual(full);
    expect(decodeRequest(krequest(ksec(["a", "1"]), s("xyz"), ksec()))).toEqual(full);
  });

  it("does the same for indeterminate-length messages", () => {
    const c = cat([2], control());
    expect(decodeRequest(c)).toEqual(request());
    expect(decodeRequest(cat(c, isec(["a", "1"])))).toEqual(request({ headers: [["a", "1"]] }));
    expect(decodeRequest(cat(c, isec(["a", "1"]), s("xyz"), [0]))).toEqual(full);
    expect(decodeRequest(cat(c, isec(["a", "1"]), s("xyz"), [0], [0]))).toEqual(full);
  });

  it("accepts zero padding after a complete or a truncated message", () => {
    const complete = encodeRequest(full);
    expect(decodeRequest(cat(complete, new Uint8Array(100)))).toEqual(full);
    // Padding right after the control data reads as empty sections.
    expect(decodeRequest(cat(krequest(), new Uint8Array(7)))).toEqual(request());
    expect(decodeResponse(cat([3], v(204), new Uint8Array(5)))).toEqual(response({ status: 204 }));
  });

  it("rejects non-zero padding as malformed", () => {
    const complete = encodeRequest(full);
    expect(codeOf(() => decodeRequest(cat(complete, [0, 0, 1])))).toBe("BHTTP_ERR_FORMAT");
    expect(codeOf(() => decodeResponse(cat(encodeResponse(response()), [0x80])))).toBe("BHTTP_ERR_FORMAT");
  });
});

describe("responses", () => {
  it("decodes informational responses before the final one, in both framings", () => {
    const known = cat([1], v(100), ksec(), v(103), ksec(["link", "</a>"]), v(200), ksec(["a", "1"]), s("ok"), ksec());
    const indet = cat([3], v(100), isec(), v(103), isec(["link", "</a>"]), v(200), isec(["a", "1"]), s("ok"), [0], isec());
    const want = response({
      informational: [
        { status: 100, headers: [] },
        { status: 103, headers: [["link", "</a>"]] },
      ],
      headers: [["a", "1"]],
      body: enc("ok"),
    });
    expect(decodeResponse(known)).toEqual(want);
    expect(decodeResponse(indet)).toEqual(want);
    expect(toHex(encodeResponse(want))).toBe(toHex(known));
  });

  it.each([0, 99, 600, 999, 2 ** 20])("rejects status %i", (status) => {
    expect(codeOf(() => decodeResponse(cat([1], v(status), ksec(), [0], ksec())))).toBe("BHTTP_ERR_FORMAT");
    expect(codeOf(() => encodeResponse(response({ status })))).toBe("BHTTP_ERR_FORMAT");
  });

  it("accepts the edges 200 and 599 as final and 100 and 199 as informational", () => {
    expect(decodeResponse(cat([1], v(599))).status).toBe(599);
    const r = decodeResponse(cat([1], v(100), ksec(), v(199), ksec(), v(200)));
    expect(r.informational.map((i) => i.status)).toEqual([100, 199]);
  });

  it("rejects a response that ends after an informational response as truncated", () => {
    expect(codeOf(() => decodeResponse(cat([1], v(103))))).toBe("BHTTP_ERR_TRUNCATED");
    expect(codeOf(() => decodeResponse(cat([1], v(103), ksec(["a", "b"]))))).toBe("BHTTP_ERR_TRUNCATED");
    expect(codeOf(() => decodeResponse(cat([3], v(103), isec())))).toBe("BHTTP_ERR_TRUNCATED");
  });

  it("rejects more than maxInformational informational responses as too large", () => {
    const many = (n: number): Uint8Array => cat([1], ...Array.from({ length: n }, () => cat(v(100), ksec())), v(200));
    expect(decodeResponse(many(DEFAULT_BHTTP_LIMITS.maxInformational)).informational).toHaveLength(
      DEFAULT_BHTTP_LIMITS.maxInformational,
    );
    expect(codeOf(() => decodeResponse(many(DEFAULT_BHTTP_LIMITS.maxInformational + 1)))).toBe("BHTTP_ERR_TOO_LARGE");
    expect(codeOf(() => decodeResponse(many(3), { maxInformational: 2 }))).toBe("BHTTP_ERR_TOO_LARGE");
  });

  it("rejects informational statuses outside 100..199 when encoding", () => {
    expect(codeOf(() => encodeResponse(response({ informational: [{ status: 200, headers: [] }] })))).toBe(
      "BHTTP_ERR_FORMAT",
    );
    expect(codeOf(() => encodeResponse(response({ informational: [{ status: 99, headers: [] }] })))).toBe(
      "BHTTP_ERR_FORMAT",
    );
    expect(codeOf(() => encodeResponse(response({ status: 200.5 })))).toBe("BHTTP_ERR_FORMAT");
  });
});

describe("decoding limits", () => {
  const fields = (n: number): Field[] => Array.from({ length: n }, (_, i): Field => [`f${i}`, "v"]);

  it("accepts exactly maxFields field lines and rejects one more, counting every section", () => {
    expect(decodeRequest(krequest(ksec(...fields(4))), { maxFields: 4 }).headers).toHaveLength(4);
    expect(codeOf(() => decodeRequest(krequest(ksec(...fields(5))), { maxFields: 4 }))).toBe("BHTTP_ERR_TOO_LARGE");
    expect(codeOf(() => decodeRequest(krequest(ksec(...fields(3)), [0], ksec(...fields(2))), { maxFields: 4 }))).toBe(
      "BHTTP_ERR_TOO_LARGE",
    );
    const res = cat([3], v(103), isec(...fields(3)), v(200), isec(...fields(2)));
    expect(codeOf(() => decodeResponse(res, { maxFields: 4 }))).toBe("BHTTP_ERR_TOO_LARGE");
  });

  it("rejects the default maximum plus one of empty-valued fields (a cheap amplification attempt)", () => {
    const b = cat([2], control(), isec(...fields(DEFAULT_BHTTP_LIMITS.maxFields + 1)));
    expect(codeOf(() => decodeRequest(b))).toBe("BHTTP_ERR_TOO_LARGE");
  });

  it("accepts a field line of exactly maxFieldBytes and rejects one byte more", () => {
    const limits = { maxFieldBytes: 16 };
    expect(decodeRequest(krequest(ksec(["abcdefgh", "12345678"])), limits).headers).toHaveLength(1);
    expect(codeOf(() => decodeRequest(krequest(ksec(["abcdefgh", "123456789"])), limits))).toBe("BHTTP_ERR_TOO_LARGE");
    expect(codeOf(() => decodeRequest(krequest(ksec(["abcdefghijklmnopq", ""])), limits))).toBe("BHTTP_ERR_TOO_LARGE");
  });

  it("rejects an oversized field length before reading (or missing) its bytes", () => {
    // Indeterminate header section whose first name claims 2^30 bytes that are not there.
    expect(codeOf(() => decodeRequest(cat([2], control(), v(2 ** 30))))).toBe("BHTTP_ERR_TOO_LARGE");
    expect(codeOf(() => decodeRequest(cat([2], control(), s("a"), v(2 ** 30))))).toBe("BHTTP_ERR_TOO_LARGE");
  });

  it("rejects a message over maxMessageBytes up front", () => {
    const b = encodeRequest(request({ body: new Uint8Array(100) }));
    expect(decodeRequest(b, { maxMessageBytes: b.length }).body).toHaveLength(100);
    expect(codeOf(() => decodeRequest(b, { maxMessageBytes: b.length - 1 }))).toBe("BHTTP_ERR_TOO_LARGE");
    expect(codeOf(() => decodeResponse(new Uint8Array(2_000_000)))).toBe("BHTTP_ERR_TOO_LARGE");
  });

  it("rejects invalid limit options with an error naming the option", () => {
    expect(() => decodeRequest(krequest(), { maxFields: -1 })).toThrow(/maxFields/);
    expect(() => decodeRequest(krequest(), { maxFieldBytes: 1.5 })).toThrow(/maxFieldBytes/);
    expect(() => decodeRequest(krequest(), { maxFeilds: 3 } as Partial<typeof DEFAULT_BHTTP_LIMITS>)).toThrow(
      /maxFeilds/,
    );
  });

  it("applies the current values of a reused limits object, also after it changes", () => {
    const limits: { -readonly [K in keyof typeof DEFAULT_BHTTP_LIMITS]?: number } = { maxFields: 4 };
    const b = krequest(ksec(...fields(5)));
    expect(codeOf(() => decodeRequest(b, limits))).toBe("BHTTP_ERR_TOO_LARGE");
    expect(codeOf(() => decodeRequest(b, limits))).toBe("BHTTP_ERR_TOO_LARGE");
    limits.maxFields = 5;
    expect(decodeRequest(b, limits).headers).toHaveLength(5);
    limits.maxFields = -1;
    expect(() => decodeRequest(b, limits)).toThrow(/maxFields/);
    delete limits.maxFields;
    (limits as Record<string, unknown>).maxFeilds = 3;
    expect(() => decodeRequest(b, limits)).toThrow(/maxFeilds/);
  });

  it("keeps the defaults frozen", () => {
    expect(Object.isFrozen(DEFAULT_BHTTP_LIMITS)).toBe(true);
  });
});

describe("input that is a view of a larger buffer", () => {
  it("decodes a subarray with a non-zero offset and ignores the bytes around it", () => {
    const msg = encodeRequest(request({ method: "PUT", headers: [["content-type", "x"]], body: enc("data") }));
    const big = new Uint8Array(msg.length + 20).fill(0xee);
    big.set(msg, 11);
    const view = big.subarray(11, 11 + msg.length);
    expect(decodeRequest(view)).toEqual(decodeRequest(msg));
    const res = encodeResponse(response({ status: 201, body: enc("ok") }));
    const big2 = new Uint8Array(res.length + 5).fill(0xff);
    big2.set(res, 3);
    expect(decodeResponse(big2.subarray(3, 3 + res.length))).toEqual(decodeResponse(res));
  });
});

// --- encoding -------------------------------------------------------------------------------

describe("encoding", () => {
  it("writes a complete known-length request by default", () => {
    expect(toHex(encodeRequest(request()))).toBe(toHex(cat(krequest(), [0, 0, 0])));
  });

  it("omits only empty trailing parts when truncating", () => {
    const t = { truncate: true };
    expect(toHex(encodeRequest(request(), t))).toBe(toHex(krequest()));
    expect(toHex(encodeRequest(request({ headers: [["a", "1"]] }), t))).toBe(toHex(krequest(ksec(["a", "1"]))));
    expect(toHex(encodeRequest(request({ body: enc("x") }), t))).toBe(toHex(krequest(ksec(), s("x"))));
    expect(toHex(encodeRequest(request({ trailers: [["t", "1"]] }), t))).toBe(
      toHex(krequest(ksec(), [0], ksec(["t", "1"]))),
    );
  });

  it("still validates sections that truncation leaves out", () => {
    expect(codeOf(() => encodeRequest(request({ headers: [["A", "1"]] }), { truncate: true }))).toBe("BHTTP_ERR_FORMAT");
  });

  it("appends zero padding", () => {
    const b = encodeRequest(request(), { padding: 5 });
    expect(toHex(b)).toBe(toHex(cat(krequest(), [0, 0, 0], new Uint8Array(5))));
    expect(decodeRequest(b)).toEqual(request());
    expect(() => encodeRequest(request(), { padding: -1 })).toThrow(RangeError);
  });

  it.each([
    ["an uppercase name", ["Content-Type", "x"]],
    ["an empty name", ["", "x"]],
    ["a pseudo-field", [":path", "/"]],
    ["a name with a space", ["a b", "x"]],
    ["a value with CR LF", ["a", "x\r\nInjected: 1"]],
    ["a value with a char above U+00FF", ["a", "snow \u2603"]],
    ["a value with a leading space", ["a", " x"]],
  ] as [string, Field][])("refuses to encode %s", (_what, field) => {
    expect(codeOf(() => encodeRequest(request({ headers: [field] })))).toBe("BHTTP_ERR_FORMAT");
    expect(codeOf(() => encodeRequest(request({ trailers: [field] })))).toBe("BHTTP_ERR_FORMAT");
    expect(codeOf(() => encodeResponse(response({ headers: [field] })))).toBe("BHTTP_ERR_FORMAT");
    expect(codeOf(() => encodeResponse(response({ informational: [{ status: 103, headers: [field] }] })))).toBe(
      "BHTTP_ERR_FORMAT",
    );
  });

  it("refuses a control value with a char above U+00FF", () => {
    expect(codeOf(() => encodeRequest(request({ path: "/\u2603" })))).toBe("BHTTP_ERR_FORMAT");
  });

  it("uses 2-, 4- and 8-byte varints for large lengths and decodes them back", () => {
    const long = "v".repeat(300);
    const r = request({ method: "POST", headers: [["x-long", long]], body: new Uint8Array(70_000) });
    const b = encodeRequest(r);
    expect(decodeRequest(b)).toEqual(r);
  });

  it("returns a buffer of its own with the exact length", () => {
    const b = encodeResponse(response({ body: enc("hi") }));
    expect(b.byteOffset).toBe(0);
    expect(b.buffer.byteLength).toBe(b.length);
  });

  it("throws ProtocolErrors with HTTP status 400 for malformed input", () => {
    try {
      decodeRequest(cat([9]));
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ProtocolError);
      expect((e as ProtocolError).status).toBe(400);
    }
  });
});
