// The PrivateToken authentication scheme headers (RFC 9577 §2.1-2.2): formatting and lenient,
// robust parsing.
import { describe, expect, it } from "vitest";
import { AuthorizationHeader, TOKEN_TYPES, WWWAuthenticateHeader } from "@cloudflare/privacypass-ts";
import { toBase64Url, toHex } from "../../../core/bytes.js";
import {
  formatAuthorization,
  formatWwwAuthenticate,
  parseAuthorization,
  parseWwwAuthenticate,
} from "../../../core/privacypass/index.js";
import { HEADER_VECTORS, TYPE2_VECTORS } from "../../helpers/pp-vectors.js";

const chal = Uint8Array.of(0, 2, 0, 1, 0x69, 0, 0, 0); // b64url "AAIAAWkAAAA=" (padded)
const key = Uint8Array.of(1, 2, 3, 4); // "AQIDBA=="
const token = TYPE2_VECTORS[0]!.token;

describe("WWW-Authenticate: PrivateToken", () => {
  it("formats padded base64url as quoted strings, challenges joined by commas", () => {
    expect(formatWwwAuthenticate([{ challenge: chal, tokenKey: key, maxAge: 10 }, { challenge: chal, tokenKey: key }])).toBe(
      'PrivateToken challenge="AAIAAWkAAAA=", token-key="AQIDBA==", max-age="10", PrivateToken challenge="AAIAAWkAAAA=", token-key="AQIDBA=="',
    );
  });

  it("accepts unquoted, unpadded and oddly spaced values, any case of scheme and parameter names", () => {
    for (const h of [
      "PrivateToken challenge=AAIAAWkAAAA=, token-key=AQIDBA==",
      "privatetoken  CHALLENGE = \"AAIAAWkAAAA\" ,Token-Key=\"AQIDBA\",max-age=10",
      ",, PrivateToken challenge=\"AAIAAWkAAAA=\",\ttoken-key=\"AQIDBA==\" ,",
    ]) {
      const [c, ...rest] = parseWwwAuthenticate(h);
      expect(rest).toEqual([]);
      expect(toHex(c!.challenge)).toBe(toHex(chal));
      expect(toHex(c!.tokenKey)).toBe(toHex(key));
    }
  });

  it("ignores unknown parameters and other schemes, also between PrivateToken challenges", () => {
    const h =
      'Basic realm="x, y", PrivateToken foo=bar, challenge="AAIAAWkAAAA=", realm="r", token-key="AQIDBA==", ' +
      'Bearer abc/def==, PrivateToken challenge="AAIAAWkAAAA=", token-key="AQIDBA==", max-age="5", x="\\"q\\""';
    const parsed = parseWwwAuthenticate(h);
    expect(parsed.map((p) => p.maxAge)).toEqual([undefined, 5]);
  });

  it("skips challenges that lack a parameter, repeat one, carry bad base64 or are unterminated", () => {
    expect(parseWwwAuthenticate('PrivateToken challenge="AAIAAWkAAAA="')).toEqual([]);
    expect(parseWwwAuthenticate('PrivateToken challenge="AAIA", challenge="AAIA", token-key="AQID"')).toEqual([]);
    expect(parseWwwAuthenticate('PrivateToken challenge="AA*A", token-key="AQID"')).toEqual([]);
    expect(parseWwwAuthenticate('PrivateToken challenge="AAIA", token-key="AQID')).toEqual([]);
    expect(parseWwwAuthenticate('PrivateToken challenge="", token-key="AQID"')).toEqual([]);
    expect(parseWwwAuthenticate("PrivateToken abc==")).toEqual([]);
    // An unparsable max-age is ignored, the challenge kept.
    expect(parseWwwAuthenticate('PrivateToken challenge="AAIA", token-key="AQID", max-age="-1"')[0]!.maxAge).toBeUndefined();
  });

  it("parses what privacypass-ts formats, and privacypass-ts parses what we format", () => {
    const v = HEADER_VECTORS[1]!;
    const ours = formatWwwAuthenticate(parseWwwAuthenticate(v.header));
    const stock = WWWAuthenticateHeader.parse(ours);
    expect(stock.map((s) => toHex(s.tokenKey))).toEqual(v.challenges.map((c) => toHex(c.tokenKey)));
    expect(stock.map((s) => s.maxAge)).toEqual([10, 10]);
    const stockFormatted = stock.map((s) => s.toString(true)).join(", ");
    expect(parseWwwAuthenticate(stockFormatted).map((p) => toHex(p.challenge))).toEqual(v.challenges.map((c) => toHex(c.challenge)));
  });

  it("is linear on long hostile input", () => {
    const hostile = ["PrivateToken " + "a=".repeat(50_000), "x".repeat(100_000), '"'.repeat(100_000), ", ".repeat(50_000), "PrivateToken challenge=\"" + "\\".repeat(100_000)];
    for (const h of hostile) expect(parseWwwAuthenticate(h)).toEqual([]);
  });
});

describe("Authorization: PrivateToken", () => {
  it("formats token=\"<padded base64url>\"", () => {
    expect(formatAuthorization(Uint8Array.of(1, 2, 3, 4))).toBe('PrivateToken token="AQIDBA=="');
  });

  it("parses quoted and unquoted values and ignores unknown parameters", () => {
    const b64 = toBase64Url(token);
    for (const h of [`PrivateToken token="${b64}"`, `PrivateToken token=${b64}`, `privatetoken extensions="AAAA", token="${b64}", x=1`]) {
      expect(toHex(parseAuthorization(h)!)).toBe(toHex(token));
    }
  });

  it("returns undefined for a missing header, another scheme or a malformed token", () => {
    expect(parseAuthorization(undefined)).toBeUndefined();
    expect(parseAuthorization("")).toBeUndefined();
    expect(parseAuthorization("Bearer abc")).toBeUndefined();
    expect(parseAuthorization('PrivateToken token="***"')).toBeUndefined();
    expect(parseAuthorization('PrivateToken token="AQID", token="AQID"')).toBeUndefined();
    expect(parseAuthorization("PrivateToken")).toBeUndefined();
  });

  it("round-trips with privacypass-ts", () => {
    const ours = formatAuthorization(token);
    const stock = AuthorizationHeader.parse(TOKEN_TYPES.BLIND_RSA, ours);
    expect(toHex(stock[0]!.token.serialize())).toBe(toHex(token));
    expect(toHex(parseAuthorization(stock[0]!.toString(true))!)).toBe(toHex(token));
    expect(toHex(parseAuthorization(stock[0]!.toString(false))!)).toBe(toHex(token));
  });
});
