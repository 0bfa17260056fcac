// Properties of the ARC(P-256) decoders (draft-ietf-privacypass-arc-crypto-01 and -protocol-01):
// round trips (also from a subarray of a larger buffer), every truncation, random bytes and
// mutated valid input: each decoder returns or throws a ProtocolError, nothing else, and what it
// accepts re-encodes to the same bytes.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { toHex } from "../../core/bytes.js";
import { ProtocolError } from "../../core/errors.js";
import {
  decodeArcCredentialRequest,
  decodeArcToken,
  decodeCredentialRequest,
  decodeCredentialResponse,
  decodePresentation,
  decodeServerPrivateKey,
  decodeServerPublicKey,
  encodeArcCredentialRequest,
  encodeArcToken,
  encodeCredentialRequest,
  encodeCredentialResponse,
  encodePresentation,
  encodeServerPrivateKey,
  encodeServerPublicKey,
  generatorG,
  ORDER,
  rangeBits,
  serializeScalar,
  type Point,
} from "../../core/privacypass/arc/index.js";
import { fuzzParams, numRuns, returnsOrProtocolError } from "../helpers/fuzz.js";
import { inSubarray } from "../helpers/pp-vectors.js";

const scalarArb = fc.bigInt({ min: 1n, max: ORDER - 1n });
/** A random point (a random multiple of G): decoding accepts any valid point. */
const pointArb: fc.Arbitrary<Point> = scalarArb.map((k) => generatorG.multiply(k));
const proofArb = (n: number): fc.Arbitrary<Uint8Array> =>
  fc.array(fc.bigInt({ min: 0n, max: ORDER - 1n }), { minLength: n, maxLength: n }).map((xs) => {
    const out = new Uint8Array(32 * n);
    xs.forEach((x, i) => out.set(serializeScalar(x), 32 * i));
    return out;
  });
const bytesArb = (n: number): fc.Arbitrary<Uint8Array> => fc.uint8Array({ minLength: n, maxLength: n });
const LIMITS = [2, 3, 5, 16, 100];

interface Codec {
  name: string;
  /** Valid encodings. */
  arb: fc.Arbitrary<Uint8Array>;
  decode(b: Uint8Array): unknown;
  encode(v: unknown): Uint8Array;
}

const presentationArb = (limit: number): fc.Arbitrary<Uint8Array> => {
  const k = rangeBits(limit);
  return fc
    .tuple(fc.array(pointArb, { minLength: 5 + k, maxLength: 5 + k }), proofArb(6 + 3 * k))
    .map(([pts, proof]) => encodePresentation({ U: pts[0]!, UPrimeCommit: pts[1]!, m1Commit: pts[2]!, tag: pts[3]!, nonceCommit: pts[4]!, D: pts.slice(5), proof }));
};
const requestArb = fc.tuple(pointArb, pointArb, proofArb(5)).map(([m1Enc, m2Enc, requestProof]) => encodeCredentialRequest({ m1Enc, m2Enc, requestProof }));

const codecs: Codec[] = [
  {
    name: "ServerPublicKey",
    arb: fc.tuple(pointArb, pointArb, pointArb).map(([X0, X1, X2]) => encodeServerPublicKey({ X0, X1, X2 })),
    decode: decodeServerPublicKey,
    encode: (v) => encodeServerPublicKey(v as Parameters<typeof encodeServerPublicKey>[0]),
  },
  {
    name: "ServerPrivateKey",
    arb: fc.tuple(scalarArb, scalarArb, scalarArb, scalarArb).map(([x0, x1, x2, x0Blinding]) => encodeServerPrivateKey({ x0, x1, x2, x0Blinding })),
    decode: decodeServerPrivateKey,
    encode: (v) => encodeServerPrivateKey(v as Parameters<typeof encodeServerPrivateKey>[0]),
  },
  { name: "CredentialRequest", arb: requestArb, decode: decodeCredentialRequest, encode: (v) => encodeCredentialRequest(v as Parameters<typeof encodeCredentialRequest>[0]) },
  {
    name: "CredentialResponse",
    arb: fc
      .tuple(fc.array(pointArb, { minLength: 6, maxLength: 6 }), proofArb(8))
      .map(([p, responseProof]) =>
        encodeCredentialResponse({ U: p[0]!, encUPrime: p[1]!, X0Aux: p[2]!, X1Aux: p[3]!, X2Aux: p[4]!, HAux: p[5]!, responseProof }),
      ),
    decode: decodeCredentialResponse,
    encode: (v) => encodeCredentialResponse(v as Parameters<typeof encodeCredentialResponse>[0]),
  },
  ...LIMITS.map(
    (limit): Codec => ({
      name: `Presentation (limit ${limit})`,
      arb: presentationArb(limit),
      decode: (b) => decodePresentation(b, limit),
      encode: (v) => encodePresentation(v as Parameters<typeof encodePresentation>[0]),
    }),
  ),
  {
    name: "ARC CredentialRequest (0xE5AC)",
    arb: fc.tuple(fc.integer({ min: 0, max: 255 }), requestArb).map(([t, r]) => encodeArcCredentialRequest({ truncatedIssuerKeyId: t, request: decodeCredentialRequest(r) })),
    decode: decodeArcCredentialRequest,
    encode: (v) => encodeArcCredentialRequest(v as Parameters<typeof encodeArcCredentialRequest>[0]),
  },
  ...[2, 7].map(
    (limit): Codec => ({
      name: `ARC Token (limit ${limit})`,
      arb: fc
        .tuple(fc.nat(), bytesArb(32), bytesArb(32), presentationArb(limit))
        .map(([presentationNonce, challengeDigest, issuerKeyId, p]) =>
          encodeArcToken({ presentationNonce, challengeDigest, issuerKeyId, presentation: decodePresentation(p, limit) }),
        ),
      decode: (b) => decodeArcToken(b, limit),
      encode: (v) => encodeArcToken(v as Parameters<typeof encodeArcToken>[0]),
    }),
  ),
];

const light = (seed: number): fc.Parameters<unknown> => fuzzParams(seed, Math.max(10, Math.ceil(numRuns / 10)));

describe.each(codecs.map((c) => [c.name, c] as const))("%s", (_name, c) => {
  it("round-trips byte for byte, also from a subarray", () => {
    fc.assert(
      fc.property(c.arb, (b) => {
        expect(toHex(c.encode(c.decode(b)))).toBe(toHex(b));
        expect(toHex(c.encode(c.decode(inSubarray(b))))).toBe(toHex(b));
      }),
      light(0xa4c001),
    );
  });

  it("fails every truncation with PP_ERR_TRUNCATED", () => {
    fc.assert(
      fc.property(c.arb, (b) => {
        for (let n = 0; n < b.length; n++) {
          expect(() => c.decode(b.subarray(0, n))).toThrow(expect.objectContaining({ code: "PP_ERR_TRUNCATED" }));
        }
        expect(() => c.decode(new Uint8Array([...b, 0]))).toThrow(expect.objectContaining({ code: "PP_ERR_FORMAT" }));
      }),
      fuzzParams(0xa4c002, 3),
    );
  });

  it("returns or throws a ProtocolError on random bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1200 }), (b) => void returnsOrProtocolError(() => c.decode(b))),
      fuzzParams(0xa4c003),
    );
  });

  it("returns or throws a ProtocolError on mutated valid input, and re-encodes what it accepts", () => {
    fc.assert(
      fc.property(c.arb, fc.nat(), fc.integer({ min: 1, max: 255 }), (valid, at, x) => {
        const b = valid.slice();
        b[at % b.length]! ^= x;
        const d = returnsOrProtocolError(() => c.decode(b));
        if (!(d instanceof ProtocolError)) expect(toHex(c.encode(d))).toBe(toHex(b));
      }),
      light(0xa4c004),
    );
  });
});
