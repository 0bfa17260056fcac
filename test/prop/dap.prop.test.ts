// Properties of the DAP-18 upload framing walk (core/dap countReports), as for the other decoders:
// round trip (the count of any encoded upload is its number of reports, also from a subarray),
// every truncation and every trailing tail refused, random bytes and random mutations either
// counted or refused with a DAP_ERR_* ProtocolError (nothing else), and agreement with the aggregator
// double's independent strict decoder on all of them.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { concatBytes } from "../../core/bytes.js";
import { countReports, encodeUploadRequest, type Dap18Report, type DapExtension } from "../../core/dap/index.js";
import { decodeUploadRequest } from "../../demo/dap18-aggregator.js";
import { ProtocolError } from "../../core/errors.js";
import { fuzzParams, numRuns } from "../helpers/fuzz.js";
import { inSubarray } from "../helpers/pp-vectors.js";

const CODES = ["DAP_ERR_TRUNCATED", "DAP_ERR_FORMAT"];
const bytes = (min: number, max: number): fc.Arbitrary<Uint8Array> => fc.uint8Array({ minLength: min, maxLength: max });
const extension: fc.Arbitrary<DapExtension> = fc.record({ type: fc.integer({ min: 0, max: 0xffff }), data: bytes(0, 8) });
const ciphertext = fc.record({ configId: fc.integer({ min: 0, max: 255 }), enc: bytes(1, 40), payload: bytes(1, 80) });
const report: fc.Arbitrary<Dap18Report> = fc.record({
  metadata: fc.record({ reportId: bytes(16, 16), time: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), publicExtensions: fc.array(extension, { maxLength: 3 }) }),
  publicShare: bytes(0, 40),
  leader: ciphertext,
  helper: ciphertext,
});
const upload = fc.array(report, { maxLength: 5 });

/** The walk and the double's decoder: the same count, or both refuse (the walk with a DAP_ERR_* code). */
function bothAgree(body: Uint8Array): number | undefined {
  let walked: number | undefined;
  try {
    walked = countReports(body);
  } catch (e) {
    // Plain checks (no expect()): this runs for every cut of every upload.
    if (!(e instanceof ProtocolError) || !CODES.includes(e.code)) throw new Error(`the walk threw ${String(e)}`, { cause: e });
  }
  let decoded: number | undefined;
  try {
    decoded = decodeUploadRequest(body).length;
  } catch {
    decoded = undefined;
  }
  if (walked !== decoded) throw new Error(`walk counted ${walked}, the double decoded ${decoded}`);
  return decoded;
}

describe("DAP-18 upload framing (properties)", () => {
  it("counts every encoded upload, also from a subarray", () => {
    fc.assert(
      fc.property(upload, (reports) => {
        const body = encodeUploadRequest(reports);
        expect(countReports(body)).toBe(reports.length);
        expect(countReports(inSubarray(body))).toBe(reports.length);
        expect(bothAgree(body)).toBe(reports.length);
      }),
      fuzzParams(0xda918),
    );
  });

  it("refuses every truncation that does not end on a report boundary", () => {
    fc.assert(
      fc.property(fc.array(report, { minLength: 1, maxLength: 3 }), (reports) => {
        const body = encodeUploadRequest(reports);
        const boundaries = new Set<number>([0]);
        let at = 0;
        for (const r of reports) boundaries.add((at += encodeUploadRequest([r]).length));
        for (let n = 0; n < body.length; n++) {
          const counted = bothAgree(body.subarray(0, n)) !== undefined;
          if (counted !== boundaries.has(n)) throw new Error(`cut at ${n}: counted=${counted}`);
        }
      }),
      fuzzParams(0xda919, Math.max(20, Math.ceil(numRuns / 4))),
    );
  });

  it("refuses trailing bytes too short to be a report", () => {
    fc.assert(
      fc.property(upload, bytes(1, 47), (reports, tail) => {
        expect(bothAgree(concatBytes(encodeUploadRequest(reports), tail))).toBeUndefined();
      }),
      fuzzParams(0xda91a),
    );
  });

  it("counts or refuses random bytes with a DAP_ERR_* error, and agrees with the double", () => {
    fc.assert(
      fc.property(bytes(0, 400), (body) => {
        bothAgree(body);
      }),
      fuzzParams(0xda91b),
    );
  });

  it("counts or refuses mutated uploads (bytes flipped, length fields rewritten), and agrees with the double", () => {
    fc.assert(
      fc.property(
        fc.array(report, { minLength: 1, maxLength: 3 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
        (reports, edits) => {
          const body = encodeUploadRequest(reports).slice();
          for (const [at, value] of edits) body[at % body.length] = value;
          const n = bothAgree(body);
          if (n !== undefined) expect(n).toBeLessThanOrEqual(Math.floor(body.length / 48));
        },
      ),
      fuzzParams(0xda91c),
    );
  });
});
