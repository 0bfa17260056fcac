// The gate's fast path for `Authorization: PrivateToken token="..."` must read exactly what the
// general RFC 9110 parser of core/privacypass reads, for every input.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { toBase64Url } from "../../core/bytes.js";
import { parseAuthorization } from "../../core/privacypass/index.js";
import { tokenFromAuthorization } from "../../gateway/gate.js";

const numRuns = Number(process.env.VEIL_FUZZ_RUNS ?? 200);

function same(h: string): void {
  const fast = tokenFromAuthorization(h);
  const general = parseAuthorization(h);
  expect(fast === undefined ? undefined : Array.from(fast)).toEqual(general === undefined ? undefined : Array.from(general));
}

describe("gate Authorization fast path", () => {
  it("reads canonical credentials like the general parser (quoted or not, padded or not)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 400 }), fc.boolean(), fc.boolean(), (bytes, quoted, pad) => {
        const b64 = toBase64Url(bytes, pad);
        const h = quoted ? `PrivateToken token="${b64}"` : `PrivateToken token=${b64}`;
        same(h);
        if (bytes.length > 0) expect(Array.from(tokenFromAuthorization(h)!)).toEqual(Array.from(bytes));
      }),
      { seed: 4242, numRuns },
    );
  });

  it("agrees with the general parser on arbitrary near-canonical strings", () => {
    const piece = fc.constantFrom("PrivateToken", "privatetoken", " ", "token", "=", '"', ",", "A", "z", "9", "-", "_", "==", "AAAA", "realm=x", "\t");
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 20 }), (parts) => same(parts.join(""))),
      { seed: 4243, numRuns },
    );
    fc.assert(
      fc.property(fc.string({ maxLength: 60 }), (tail) => same(`PrivateToken token="${tail}`)),
      { seed: 4244, numRuns },
    );
  });
});
