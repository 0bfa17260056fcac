// The DAP-18 upload framing (core/dap): fixed vectors both ways, every truncation, trailing bytes,
// lengths past the end, vector bounds, subarray input, and the media type matcher.
import { describe, expect, it } from "vitest";
import { concatBytes, fromHex, toHex } from "../../core/bytes.js";
import { ProtocolError } from "../../core/errors.js";
import { countReports, encodeReport, encodeUploadRequest, isPpmDapMessage, type Dap18Report } from "../../core/dap/index.js";
import { decodeUploadRequest } from "../../demo/dap18-aggregator.js";
import { inSubarray } from "../helpers/pp-vectors.js";

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);

// Two Reports with their encodings, from Janus's messages crate (main branch, DAP-18):
// messages/src/tests/upload.rs `roundtrip_report`.
const JANUS_REPORTS: [Dap18Report, string][] = [
  [
    {
      metadata: { reportId: Uint8Array.from({ length: 16 }, (_, i) => i + 1), time: 12345n, publicExtensions: [] },
      publicShare: new Uint8Array(0),
      leader: { configId: 42, enc: ascii("012345"), payload: ascii("543210") },
      helper: { configId: 13, enc: ascii("abce"), payload: ascii("abfd") },
    },
    "0102030405060708090A0B0C0D0E0F10" + "0000000000003039" + "0000" + "00000000" +
      "2A" + "0006303132333435" + "00000006353433323130" +
      "0D" + "000461626365" + "0000000461626664",
  ],
  [
    {
      metadata: { reportId: Uint8Array.from({ length: 16 }, (_, i) => 16 - i), time: 54321n, publicExtensions: [{ type: 0, data: ascii("0123") }] },
      publicShare: ascii("3210"),
      leader: { configId: 42, enc: ascii("012345"), payload: ascii("543210") },
      helper: { configId: 13, enc: ascii("abce"), payload: ascii("abfd") },
    },
    "100F0E0D0C0B0A090807060504030201" + "000000000000D431" + "0008" + "0000" + "000430313233" + "0000000433323130" +
      "2A" + "0006303132333435" + "00000006353433323130" +
      "0D" + "000461626365" + "0000000461626664",
  ],
];

function codeOf(f: () => unknown): string {
  try {
    f();
    return "ok";
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
}

describe("DAP-18 Report framing", () => {
  it("encodes Janus's Report vectors byte for byte, and walks them", () => {
    for (const [report, hex] of JANUS_REPORTS) {
      expect(toHex(encodeReport(report))).toBe(hex.toLowerCase());
      expect(countReports(fromHex(hex))).toBe(1);
    }
  });

  it("counts the reports of a concatenated upload, also in a subarray of a larger buffer", () => {
    const body = encodeUploadRequest(JANUS_REPORTS.map(([r]) => r));
    expect(toHex(body)).toBe((JANUS_REPORTS[0]![1] + JANUS_REPORTS[1]![1]).toLowerCase());
    expect(countReports(body)).toBe(2);
    expect(countReports(inSubarray(body))).toBe(2);
    expect(countReports(encodeUploadRequest(Array.from({ length: 7 }, () => JANUS_REPORTS[1]![0])))).toBe(7);
  });

  it("takes an empty body as zero reports (the grammar allows it)", () => {
    expect(countReports(new Uint8Array(0))).toBe(0);
  });

  it("refuses every truncation of one and of two reports", () => {
    for (const body of [fromHex(JANUS_REPORTS[1]![1]), encodeUploadRequest(JANUS_REPORTS.map(([r]) => r))]) {
      const first = fromHex(JANUS_REPORTS[0]![1]).length;
      for (let n = 1; n < body.length; n++) {
        if (body.length > first && n === first) continue; // a whole first report: well-formed
        expect(codeOf(() => countReports(body.subarray(0, n))), `cut at ${n}`).toMatch(/^DAP_ERR_(TRUNCATED|FORMAT)$/);
      }
    }
  });

  it("refuses trailing bytes after the last whole report", () => {
    const one = fromHex(JANUS_REPORTS[0]![1]);
    for (const tail of [[0], [0, 0, 0], Array.from({ length: 47 }, () => 0)]) {
      // Read as the start of another report: it ends early, or (47 zero bytes) has an empty enc.
      expect(codeOf(() => countReports(concatBytes(one, Uint8Array.from(tail))))).toBe(tail.length < 47 ? "DAP_ERR_TRUNCATED" : "DAP_ERR_FORMAT");
    }
  });

  it("refuses a length field that points past the end", () => {
    const one = fromHex(JANUS_REPORTS[1]![1]);
    // public_share length (at 16 + 8 + 2 + 8) = 0xffffffff, the helper payload length one too long.
    const share = one.slice();
    share.set([0xff, 0xff, 0xff, 0xff], 34);
    expect(codeOf(() => countReports(share))).toBe("DAP_ERR_TRUNCATED");
    const helper = one.slice();
    helper[helper.length - 5] = 5;
    expect(codeOf(() => countReports(helper))).toBe("DAP_ERR_TRUNCATED");
  });

  it("refuses an empty enc or payload and an extension list that is not whole extensions", () => {
    const r = JANUS_REPORTS[0]![0];
    const emptyEnc = concatBytes(fromHex(JANUS_REPORTS[0]![1]).subarray(0, 30), fromHex("2A" + "0000" + "00000006353433323130" + "0D000461626365" + "0000000461626664"));
    expect(codeOf(() => countReports(emptyEnc))).toBe("DAP_ERR_FORMAT");
    const emptyPayload = concatBytes(fromHex(JANUS_REPORTS[0]![1]).subarray(0, 30), fromHex("2A" + "0006303132333435" + "00000000" + "0D000461626365" + "0000000461626664"));
    expect(codeOf(() => countReports(emptyPayload))).toBe("DAP_ERR_FORMAT");
    // public_extensions of 3 bytes: a type and half a length.
    const head = fromHex("0102030405060708090A0B0C0D0E0F10" + "0000000000003039" + "0003" + "000000");
    const bad = concatBytes(head, encodeReport(r).subarray(26));
    expect(codeOf(() => countReports(bad))).toBe("DAP_ERR_FORMAT");
    // An extension whose data length runs past the list (but not past the body).
    const over = concatBytes(fromHex("0102030405060708090A0B0C0D0E0F10" + "0000000000003039" + "0004" + "00000009"), encodeReport(r).subarray(26));
    expect(codeOf(() => countReports(over))).toBe("DAP_ERR_FORMAT");
  });

  it("agrees with the aggregator double's decoder on the vectors", () => {
    const body = encodeUploadRequest(JANUS_REPORTS.map(([r]) => r));
    const decoded = decodeUploadRequest(body);
    expect(decoded.map((d) => toHex(d.reportId))).toEqual(JANUS_REPORTS.map(([r]) => toHex(r.metadata.reportId)));
    expect(decoded[1]!.publicExtensions).toEqual({ types: [0], inOrder: true });
  });

  it("refuses to encode what the grammar cannot carry", () => {
    const r = JANUS_REPORTS[0]![0];
    expect(() => encodeReport({ ...r, leader: { ...r.leader, enc: new Uint8Array(0) } })).toThrow(RangeError);
    expect(() => encodeReport({ ...r, metadata: { ...r.metadata, reportId: new Uint8Array(15) } })).toThrow(RangeError);
  });
});

describe("application/ppm-dap media types", () => {
  it("matches the message parameter, case-insensitive names, quoted values and extra parameters", () => {
    for (const ok of [
      "application/ppm-dap;message=upload-req",
      "Application/PPM-DAP; Message=upload-req",
      'application/ppm-dap; message="upload-req"',
      "application/ppm-dap;message=upload-req;version=18",
      "application/ppm-dap; version=18; message=upload-req",
    ]) {
      expect(isPpmDapMessage(ok, "upload-req"), ok).toBe(true);
    }
    for (const bad of [
      undefined,
      "",
      "application/ppm-dap",
      "application/ppm-dap;message=upload-errors",
      "application/dap-report",
      "application/ppm-dap-x;message=upload-req",
      "application/ppm-dap;message=upload-req;message=upload-req",
      "application/ppm-dap;message",
      "application/ppm-dap;message=Upload-Req",
    ]) {
      expect(isPpmDapMessage(bad, "upload-req"), String(bad)).toBe(false);
    }
  });
});
