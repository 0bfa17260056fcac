// RFC 9292 §5 examples (Figures 8, 9, 11, 13; test/vectors/bhttp-rfc9292.json, copied from
// the team's checked vector set with its provenance) and the truncated inner messages of RFC 9458
// Appendix A.

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { fromHex, toHex } from "../../core/bytes.js";
import {
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
  type BhttpRequest,
  type BhttpResponse,
  type Field,
} from "../../core/bhttp/index.js";

interface Decoded {
  framing_indicator: number;
  method?: string;
  scheme?: string;
  authority?: string;
  path?: string;
  status?: number;
  informational?: { status: number; header_fields: Field[] }[];
  header_fields: Field[];
  content: string;
  trailer_fields: Field[];
  padding_length: number;
}

interface Example {
  name: string;
  figure: number;
  hex: string;
  length: number;
  decoded: Decoded;
  truncation?: { max_removable_trailing_bytes: number };
}

const bhttp = JSON.parse(readFileSync(new URL("bhttp-rfc9292.json", import.meta.url), "utf8")) as {
  examples: Example[];
};
/** RFC 9458 Appendix A's binary request and response, as printed there. */
const RFC9458 = {
  request: "00034745540568747470730b6578616d706c652e636f6d012f",
  response: "0140c8",
};

function figure(n: number): Example {
  const ex = bhttp.examples.find((e) => e.figure === n);
  if (ex === undefined) throw new Error(`figure ${n} missing from the vectors`);
  return ex;
}

const latin1 = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));

function expectedRequest(d: Decoded): BhttpRequest {
  return {
    method: d.method!,
    scheme: d.scheme!,
    authority: d.authority!,
    path: d.path!,
    headers: d.header_fields,
    body: latin1(d.content),
    trailers: d.trailer_fields,
  };
}

function expectedResponse(d: Decoded): BhttpResponse {
  return {
    informational: (d.informational ?? []).map((i) => ({ status: i.status, headers: i.header_fields })),
    status: d.status!,
    headers: d.header_fields,
    body: latin1(d.content),
    trailers: d.trailer_fields,
  };
}

describe("RFC 9292 §5.1 Figure 8: known-length request", () => {
  const ex = figure(8);
  const bytes = fromHex(ex.hex);

  it("has the length the vector file states", () => {
    expect(bytes.length).toBe(ex.length);
  });

  it("decodes to the example's content", () => {
    expect(decodeRequest(bytes)).toEqual(expectedRequest(ex.decoded));
  });

  it("re-encodes to the exact RFC bytes", () => {
    expect(toHex(encodeRequest(expectedRequest(ex.decoded)))).toBe(ex.hex);
  });

  it("decodes the same with each of the trailing bytes the RFC lets a sender remove", () => {
    const n = ex.truncation!.max_removable_trailing_bytes;
    expect(n).toBe(2);
    for (let cut = 1; cut <= n; cut++) {
      expect(decodeRequest(bytes.subarray(0, bytes.length - cut))).toEqual(expectedRequest(ex.decoded));
    }
  });

  it("encodes the truncated form when asked to truncate", () => {
    const truncated = encodeRequest(expectedRequest(ex.decoded), { truncate: true });
    expect(toHex(truncated)).toBe(ex.hex.slice(0, -4));
  });
});

describe("RFC 9292 §5.1 Figure 9: indeterminate-length request with padding", () => {
  const ex = figure(9);
  const bytes = fromHex(ex.hex);

  it("decodes to the same content as Figure 8", () => {
    expect(bytes.length).toBe(ex.length);
    expect(ex.decoded.framing_indicator).toBe(2);
    expect(decodeRequest(bytes)).toEqual(expectedRequest(ex.decoded));
    expect(decodeRequest(bytes)).toEqual(decodeRequest(fromHex(figure(8).hex)));
  });

  it("decodes the same with up to 12 trailing bytes (10 padding + 2 empty parts) removed", () => {
    const n = ex.truncation!.max_removable_trailing_bytes;
    expect(n).toBe(12);
    for (let cut = 1; cut <= n; cut++) {
      expect(decodeRequest(bytes.subarray(0, bytes.length - cut))).toEqual(expectedRequest(ex.decoded));
    }
  });

  it("rejects removing a 13th byte (the header section's terminator is not optional once fields began)", () => {
    expect(() => decodeRequest(bytes.subarray(0, bytes.length - 13))).toThrow(
      expect.objectContaining({ code: "BHTTP_ERR_TRUNCATED" }),
    );
  });

  it("re-encodes as known-length with the same padding to a message that decodes identically", () => {
    const again = encodeRequest(expectedRequest(ex.decoded), { padding: ex.decoded.padding_length });
    expect(toHex(again)).toBe(figure(8).hex + "00".repeat(10));
    expect(decodeRequest(again)).toEqual(expectedRequest(ex.decoded));
  });
});

describe("RFC 9292 §5.2 Figure 11: indeterminate-length response with 102 and 103", () => {
  const ex = figure(11);
  const bytes = fromHex(ex.hex);

  it("decodes to the example's informational and final responses", () => {
    expect(bytes.length).toBe(ex.length);
    const r = decodeResponse(bytes);
    expect(r).toEqual(expectedResponse(ex.decoded));
    expect(r.informational.map((i) => i.status)).toEqual([102, 103]);
    expect(new TextDecoder().decode(r.body)).toBe("Hello World! My content includes a trailing CRLF.\r\n");
  });

  it("round-trips through the known-length encoding", () => {
    const known = encodeResponse(expectedResponse(ex.decoded));
    expect(known[0]).toBe(1);
    expect(decodeResponse(known)).toEqual(expectedResponse(ex.decoded));
  });

  it("decodes the same with the final trailer terminator removed", () => {
    expect(decodeResponse(bytes.subarray(0, bytes.length - 1))).toEqual(expectedResponse(ex.decoded));
  });

  it("rejects removing the content terminator too (content without its terminator is truncated)", () => {
    // Content is non-empty here, so §3.8 allows omitting only the (empty) trailer section.
    expect(() => decodeResponse(bytes.subarray(0, bytes.length - 2))).toThrow(
      expect.objectContaining({ code: "BHTTP_ERR_TRUNCATED" }),
    );
  });
});

describe("RFC 9292 §5.2 Figure 13: known-length response with a trailer", () => {
  const ex = figure(13);
  const bytes = fromHex(ex.hex);

  it("decodes to the example's content and trailer", () => {
    expect(bytes.length).toBe(ex.length);
    expect(decodeResponse(bytes)).toEqual(expectedResponse(ex.decoded));
  });

  it("re-encodes to the exact RFC bytes", () => {
    expect(toHex(encodeResponse(expectedResponse(ex.decoded)))).toBe(ex.hex);
    expect(toHex(encodeResponse(expectedResponse(ex.decoded), { truncate: true }))).toBe(ex.hex);
  });

  it("decodes a prefix only at a section boundary, to the parts before it; rejects every other cut", () => {
    const full = expectedResponse(ex.decoded);
    // framing(1) status(2) | headers length(1) | content length(1) + 29 | trailers
    const boundaries = new Map<number, BhttpResponse>([
      [3, { ...full, headers: [], body: new Uint8Array(0), trailers: [] }],
      [4, { ...full, body: new Uint8Array(0), trailers: [] }],
      [34, { ...full, trailers: [] }],
    ]);
    for (let len = 0; len < bytes.length; len++) {
      const prefix = bytes.subarray(0, len);
      const expected = boundaries.get(len);
      if (expected !== undefined) {
        expect(decodeResponse(prefix)).toEqual(expected);
      } else {
        expect(() => decodeResponse(prefix)).toThrow(expect.objectContaining({ code: "BHTTP_ERR_TRUNCATED" }));
      }
    }
  });
});

describe("RFC 9458 Appendix A inner messages (truncated known-length, RFC 9292 §3.8)", () => {
  const { request, response } = RFC9458;

  it("decodes the request that ends right after its control data", () => {
    expect(decodeRequest(fromHex(request))).toEqual({
      method: "GET",
      scheme: "https",
      authority: "example.com",
      path: "/",
      headers: [],
      body: new Uint8Array(0),
      trailers: [],
    });
  });

  it("re-encodes that request byte for byte with truncation", () => {
    const r = decodeRequest(fromHex(request));
    expect(toHex(encodeRequest(r, { truncate: true }))).toBe(request);
  });

  it("decodes the response that is only a framing indicator and status 200", () => {
    const r = decodeResponse(fromHex(response));
    expect(r).toEqual({ informational: [], status: 200, headers: [], body: new Uint8Array(0), trailers: [] });
    expect(toHex(encodeResponse(r, { truncate: true }))).toBe(response);
  });
});
