// Properties of the Privacy Pass codecs and header parsers (RFC 9577/9578): round trips, every
// truncation, random bytes and strings (return or throw a ProtocolError, nothing else), inputs
// that are subarrays of larger buffers, and agreement with privacypass-ts on valid input.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { TokenChallenge as PpTokenChallenge } from "@cloudflare/privacypass-ts";
import { toBase64Url, toHex } from "../../core/bytes.js";
import { ProtocolError } from "../../core/errors.js";
import {
  decodeToken,
  decodeTokenChallenge,
  decodeTokenRequest,
  decodeTokenResponse,
  encodeToken,
  encodeTokenChallenge,
  encodeTokenRequest,
  encodeTokenResponse,
  formatAuthorization,
  formatWwwAuthenticate,
  parseAuthorization,
  parseWwwAuthenticate,
  type Token,
  type TokenChallenge,
  type TokenRequest,
  type TokenResponse,
} from "../../core/privacypass/index.js";
import { inSubarray } from "../helpers/pp-vectors.js";

const numRuns = Number(process.env.VEIL_FUZZ_RUNS ?? 200);
const params = (seed: number): fc.Parameters<unknown> => ({ seed, numRuns });
const paramsHeavy = (seed: number): fc.Parameters<unknown> => ({ seed, numRuns: Math.max(20, Math.ceil(numRuns / 4)) });

/** Runs `f`; anything thrown must be a ProtocolError. */
function returnsOrProtocolError(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
  }
}

const hostname = fc.stringMatching(/^[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?$/);
const baseChallengeArb: fc.Arbitrary<TokenChallenge> = fc.record({
  tokenType: fc.integer({ min: 0, max: 0xffff }).filter((t) => t !== 0xe5ac),
  issuerName: fc.oneof(hostname, fc.string({ minLength: 1, maxLength: 40, unit: "grapheme" })),
  redemptionContext: fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ minLength: 32, maxLength: 32 })),
  originInfo: fc.array(fc.oneof(hostname, fc.string({ minLength: 1, maxLength: 20, unit: "grapheme" }).filter((s) => !s.includes(","))), { maxLength: 4 }),
});
// ARC challenges (0xE5AC) carry a credential_context of 0 or 32 bytes.
const challengeArb: fc.Arbitrary<TokenChallenge> = fc.oneof(
  baseChallengeArb,
  fc.tuple(baseChallengeArb, fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ minLength: 32, maxLength: 32 }))).map(([c, credentialContext]) => ({
    ...c,
    tokenType: 0xe5ac,
    credentialContext,
  })),
);
const bytes = (n: number): fc.Arbitrary<Uint8Array> => fc.uint8Array({ minLength: n, maxLength: n });
const tokenArb: fc.Arbitrary<Token> = fc.oneof(
  fc.record({ tokenType: fc.constant(2), nonce: bytes(32), challengeDigest: bytes(32), tokenKeyId: bytes(32), authenticator: bytes(256) }),
  fc.record({ tokenType: fc.constant(1), nonce: bytes(32), challengeDigest: bytes(32), tokenKeyId: bytes(32), authenticator: bytes(48) }),
);
const requestArb: fc.Arbitrary<TokenRequest> = fc.oneof(
  fc.record({ tokenType: fc.constant(2 as const), truncatedTokenKeyId: fc.integer({ min: 0, max: 255 }), blindedMsg: bytes(256) }),
  fc.record({ tokenType: fc.constant(1 as const), truncatedTokenKeyId: fc.integer({ min: 0, max: 255 }), blindedMsg: bytes(49) }),
);
const responseArb: fc.Arbitrary<TokenResponse> = fc.oneof(
  fc.record({ tokenType: fc.constant(2 as const), blindSig: bytes(256) }),
  fc.record({ tokenType: fc.constant(1 as const), evaluateMsg: bytes(49), evaluateProof: bytes(96) }),
);

interface Codec<T> {
  name: string;
  arb: fc.Arbitrary<T>;
  encode(v: T): Uint8Array;
  decode(b: Uint8Array): unknown;
}

const codecs: Codec<unknown>[] = [
  { name: "TokenChallenge", arb: challengeArb, encode: (v) => encodeTokenChallenge(v as TokenChallenge), decode: decodeTokenChallenge },
  { name: "Token", arb: tokenArb, encode: (v) => encodeToken(v as Token), decode: decodeToken },
  { name: "TokenRequest", arb: requestArb, encode: (v) => encodeTokenRequest(v as TokenRequest), decode: decodeTokenRequest },
] as Codec<unknown>[];

describe.each(codecs.map((c) => [c.name, c] as const))("%s", (_name, c) => {
  it("round-trips, also from a subarray", () => {
    fc.assert(
      fc.property(c.arb, (v) => {
        const b = c.encode(v);
        expect(c.decode(inSubarray(b))).toEqual(v);
        expect(toHex(c.encode(c.decode(b)))).toBe(toHex(b));
      }),
      params(0x5eed01),
    );
  });

  it("fails every truncation with PP_ERR_TRUNCATED", () => {
    fc.assert(
      fc.property(c.arb, (v) => {
        const b = c.encode(v);
        for (let n = 0; n < b.length; n++) {
          try {
            c.decode(b.subarray(0, n));
            // An unknown-type Token carries "the rest" as its authenticator: a prefix can decode.
            if (c.name !== "Token" || n < 99) throw new Error(`prefix of ${n} bytes decoded`);
          } catch (e) {
            if (!(e instanceof ProtocolError)) throw e;
            expect(e.code).toBe("PP_ERR_TRUNCATED");
          }
        }
      }),
      paramsHeavy(0x5eed02),
    );
  });

  it("returns or throws a ProtocolError on random bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (b) => returnsOrProtocolError(() => c.decode(b))),
      params(0x5eed03),
    );
  });

  it("returns or throws a ProtocolError on mutated valid input, and re-encodes what it accepts", () => {
    fc.assert(
      fc.property(c.arb, fc.nat(), fc.integer({ min: 1, max: 255 }), (v, at, x) => {
        const b = new Uint8Array(c.encode(v));
        b[at % b.length]! ^= x;
        try {
          const d = c.decode(b);
          expect(toHex(c.encode(d))).toBe(toHex(b));
        } catch (e) {
          if (!(e instanceof ProtocolError)) throw e;
        }
      }),
      params(0x5eed04),
    );
  });
});

describe("TokenResponse", () => {
  it("round-trips for its token type and fails every truncation", () => {
    fc.assert(
      fc.property(responseArb, (v) => {
        const b = encodeTokenResponse(v);
        expect(decodeTokenResponse(v.tokenType, inSubarray(b))).toEqual(v);
        for (let n = 0; n < b.length; n += 7) expect(() => decodeTokenResponse(v.tokenType, b.subarray(0, n))).toThrow(ProtocolError);
      }),
      params(0x5eed05),
    );
  });

  it("returns or throws a ProtocolError on random bytes", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 3 }), fc.uint8Array({ maxLength: 300 }), (t, b) => returnsOrProtocolError(() => decodeTokenResponse(t, b))),
      params(0x5eed06),
    );
  });
});

describe("TokenChallenge agrees with privacypass-ts", () => {
  it("encodes host-name challenges byte for byte as the stock class does", () => {
    // privacypass-ts knows no ARC challenge (its credential_context).
    const ascii = baseChallengeArb.map((c) => ({ ...c, issuerName: "issuer.example", originInfo: c.originInfo.map((_, i) => `o${i}.example`) }));
    fc.assert(
      fc.property(ascii, (c) => {
        const stock = new PpTokenChallenge(c.tokenType, c.issuerName, new Uint8Array(c.redemptionContext), c.originInfo.length > 0 ? c.originInfo : undefined);
        expect(toHex(encodeTokenChallenge(c))).toBe(toHex(stock.serialize()));
      }),
      params(0x5eed07),
    );
  });
});

describe("header parsers", () => {
  const challengeList = fc.array(
    fc.record({ challenge: fc.uint8Array({ minLength: 1, maxLength: 120 }), tokenKey: fc.uint8Array({ minLength: 1, maxLength: 300 }), maxAge: fc.option(fc.nat({ max: 1e9 }), { nil: undefined }) }),
    { minLength: 1, maxLength: 4 },
  );

  it("WWW-Authenticate round-trips", () => {
    fc.assert(
      fc.property(challengeList, (cs) => {
        const parsed = parseWwwAuthenticate(formatWwwAuthenticate(cs));
        expect(parsed.map((p) => [toHex(p.challenge), toHex(p.tokenKey), p.maxAge])).toEqual(cs.map((c) => [toHex(c.challenge), toHex(c.tokenKey), c.maxAge]));
      }),
      params(0x5eed08),
    );
  });

  it("Authorization round-trips, quoted and unquoted", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 400 }), (t) => {
        expect(toHex(parseAuthorization(formatAuthorization(t))!)).toBe(toHex(t));
        expect(toHex(parseAuthorization(`PrivateToken token=${toBase64Url(t, false)}`)!)).toBe(toHex(t));
      }),
      params(0x5eed09),
    );
  });

  it("never throw on random strings, truncations or junk spliced into valid headers", () => {
    const header = challengeList.map((cs) => formatWwwAuthenticate(cs));
    const junk = fc.string({ maxLength: 40, unit: fc.constantFrom(...'",=\\ \tPrivateTokenchallenge-key;:/+'.split("")) });
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 300 }), fc.string({ maxLength: 300, unit: "binary" })), (s) => {
        expect(Array.isArray(parseWwwAuthenticate(s))).toBe(true);
        parseAuthorization(s);
      }),
      params(0x5eed0a),
    );
    fc.assert(
      fc.property(header, fc.nat(), junk, (h, at, j) => {
        const cut = at % (h.length + 1);
        parseWwwAuthenticate(h.slice(0, cut));
        parseWwwAuthenticate(h.slice(0, cut) + j + h.slice(cut));
        parseAuthorization(h.slice(0, cut) + j);
      }),
      params(0x5eed0b),
    );
  });
});
