// Edge cases of the Privacy Pass wire codecs: TokenChallenge, Token, TokenRequest, TokenResponse.
import { describe, expect, it } from "vitest";
import { concatBytes, fromHex, toHex } from "../../../core/bytes.js";
import { isProtocolError } from "../../../core/errors.js";
import {
  decodeToken,
  decodeTokenChallenge,
  decodeTokenRequest,
  decodeTokenResponse,
  encodeToken,
  encodeTokenChallenge,
  encodeTokenRequest,
  encodeTokenResponse,
  peekTokenRequestType,
  truncateTokenKeyId,
  type TokenChallenge,
} from "../../../core/privacypass/index.js";
import { TYPE1_VECTORS, TYPE2_VECTORS, inSubarray } from "../../helpers/pp-vectors.js";

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (isProtocolError(e)) return e.code;
    throw e;
  }
  return "none";
}

const challenge: TokenChallenge = {
  tokenType: 2,
  issuerName: "issuer.example",
  redemptionContext: new Uint8Array(32).fill(7),
  originInfo: ["leader.example", "helper.example"],
};

describe("TokenChallenge", () => {
  it("encodes the RFC 9577 layout", () => {
    const b = encodeTokenChallenge({ tokenType: 2, issuerName: "i", redemptionContext: new Uint8Array(0), originInfo: ["o"] });
    expect(toHex(b)).toBe("0002" + "0001" + "69" + "00" + "0001" + "6f");
  });

  it("round-trips every shape, also from a subarray", () => {
    for (const c of [challenge, { ...challenge, originInfo: [] }, { ...challenge, redemptionContext: new Uint8Array(0) }]) {
      const b = encodeTokenChallenge(c);
      expect(decodeTokenChallenge(inSubarray(b))).toEqual(c);
    }
  });

  it("fails every truncation with PP_ERR_TRUNCATED", () => {
    const b = encodeTokenChallenge(challenge);
    for (let n = 0; n < b.length; n++) expect(codeOf(() => decodeTokenChallenge(b.subarray(0, n)))).toBe("PP_ERR_TRUNCATED");
  });

  it("rejects trailing bytes", () => {
    expect(codeOf(() => decodeTokenChallenge(concatBytes(encodeTokenChallenge(challenge), Uint8Array.of(0))))).toBe("PP_ERR_FORMAT");
  });

  it("rejects an empty issuer name, a context of other than 0 or 32 bytes, invalid UTF-8 and empty origin names", () => {
    expect(codeOf(() => decodeTokenChallenge(fromHex("0002" + "0000" + "00" + "0000")))).toBe("PP_ERR_FORMAT");
    expect(codeOf(() => decodeTokenChallenge(fromHex("0002" + "0001" + "69" + "01" + "aa" + "0000")))).toBe("PP_ERR_FORMAT");
    expect(codeOf(() => decodeTokenChallenge(fromHex("0002" + "0001" + "ff" + "00" + "0000")))).toBe("PP_ERR_FORMAT");
    expect(codeOf(() => decodeTokenChallenge(fromHex("0002" + "0001" + "69" + "00" + "0003" + "612c62")))).toBe("none");
    expect(codeOf(() => decodeTokenChallenge(fromHex("0002" + "0001" + "69" + "00" + "0003" + "612c2c")))).toBe("PP_ERR_FORMAT");
    expect(codeOf(() => decodeTokenChallenge(fromHex("0002" + "0001" + "69" + "00" + "0001" + "2c")))).toBe("PP_ERR_FORMAT");
  });

  it("keeps a leading byte-order mark (bytes round-trip exactly)", () => {
    const b = fromHex("0002" + "0004" + "efbbbf69" + "00" + "0000");
    expect(toHex(encodeTokenChallenge(decodeTokenChallenge(b)))).toBe(toHex(b));
  });

  it("refuses to encode what it could not decode", () => {
    expect(codeOf(() => encodeTokenChallenge({ ...challenge, issuerName: "" }))).toBe("PP_ERR_FORMAT");
    expect(codeOf(() => encodeTokenChallenge({ ...challenge, redemptionContext: new Uint8Array(5) }))).toBe("PP_ERR_FORMAT");
    expect(codeOf(() => encodeTokenChallenge({ ...challenge, originInfo: ["a,b"] }))).toBe("PP_ERR_FORMAT");
    expect(codeOf(() => encodeTokenChallenge({ ...challenge, originInfo: [""] }))).toBe("PP_ERR_FORMAT");
    expect(codeOf(() => encodeTokenChallenge({ ...challenge, tokenType: 0x10000 }))).toBe("PP_ERR_FORMAT");
    expect(codeOf(() => encodeTokenChallenge({ ...challenge, issuerName: "x".repeat(0x10000) }))).toBe("PP_ERR_FORMAT");
  });
});

describe("Token", () => {
  const t2 = TYPE2_VECTORS[0]!.token;
  const t1 = TYPE1_VECTORS[0]!.token;

  it("fails every truncation of a type 1 and a type 2 token with PP_ERR_TRUNCATED", () => {
    for (const t of [t1, t2]) {
      for (let n = 0; n < t.length; n++) expect(codeOf(() => decodeToken(t.subarray(0, n)))).toBe("PP_ERR_TRUNCATED");
    }
  });

  it("rejects trailing bytes after a known type's authenticator", () => {
    expect(codeOf(() => decodeToken(concatBytes(t2, Uint8Array.of(1))))).toBe("PP_ERR_FORMAT");
    expect(codeOf(() => decodeToken(concatBytes(t1, Uint8Array.of(1))))).toBe("PP_ERR_FORMAT");
  });

  it("decodes an unknown type with the rest as authenticator, so the gate can refuse the type", () => {
    const other = concatBytes(Uint8Array.of(0x5a, 0x63), t2.subarray(2, 98), Uint8Array.of(1, 2, 3));
    const t = decodeToken(other);
    expect(t.tokenType).toBe(0x5a63);
    expect(toHex(t.authenticator)).toBe("010203");
    expect(toHex(encodeToken(t))).toBe(toHex(other));
  });

  it("returns fields that do not alias the input", () => {
    const copy = new Uint8Array(t2);
    const t = decodeToken(copy);
    copy.fill(0);
    expect(toHex(encodeToken(t))).toBe(toHex(t2));
  });

  it("refuses to encode a wrong-length field", () => {
    const t = decodeToken(t2);
    expect(codeOf(() => encodeToken({ ...t, authenticator: new Uint8Array(255) }))).toBe("PP_ERR_FORMAT");
    expect(codeOf(() => encodeToken({ ...t, nonce: new Uint8Array(31) }))).toBe("PP_ERR_FORMAT");
    expect(codeOf(() => encodeToken({ ...t, tokenType: 0x1234, authenticator: new Uint8Array(0) }))).toBe("PP_ERR_FORMAT");
  });
});

describe("TokenRequest and TokenResponse", () => {
  it("fail every truncation with PP_ERR_TRUNCATED and reject trailing bytes", () => {
    for (const v of [TYPE1_VECTORS[0]!, TYPE2_VECTORS[0]!]) {
      for (let n = 0; n < v.tokenRequest.length; n++) expect(codeOf(() => decodeTokenRequest(v.tokenRequest.subarray(0, n)))).toBe("PP_ERR_TRUNCATED");
      expect(codeOf(() => decodeTokenRequest(concatBytes(v.tokenRequest, Uint8Array.of(0))))).toBe("PP_ERR_FORMAT");
      const type = v.tokenRequest[1]!;
      for (let n = 0; n < v.tokenResponse.length; n++) expect(codeOf(() => decodeTokenResponse(type, v.tokenResponse.subarray(0, n)))).toBe("PP_ERR_TRUNCATED");
      expect(codeOf(() => decodeTokenResponse(type, concatBytes(v.tokenResponse, Uint8Array.of(0))))).toBe("PP_ERR_FORMAT");
    }
  });

  it("rejects an unsupported token type", () => {
    expect(codeOf(() => decodeTokenRequest(fromHex("0003" + "00" + "00".repeat(49))))).toBe("PP_ERR_FORMAT");
    expect(codeOf(() => decodeTokenResponse(3, new Uint8Array(256)))).toBe("PP_ERR_FORMAT");
    expect(peekTokenRequestType(fromHex("da7a00"))).toBe(0xda7a);
    expect(codeOf(() => peekTokenRequestType(fromHex("da")))).toBe("PP_ERR_TRUNCATED");
  });

  it("refuses to encode wrong sizes", () => {
    expect(codeOf(() => encodeTokenRequest({ tokenType: 2, truncatedTokenKeyId: 1, blindedMsg: new Uint8Array(49) }))).toBe("PP_ERR_FORMAT");
    expect(codeOf(() => encodeTokenRequest({ tokenType: 1, truncatedTokenKeyId: 256, blindedMsg: new Uint8Array(49) }))).toBe("PP_ERR_FORMAT");
    expect(codeOf(() => encodeTokenResponse({ tokenType: 2, blindSig: new Uint8Array(255) }))).toBe("PP_ERR_FORMAT");
    expect(codeOf(() => encodeTokenResponse({ tokenType: 1, evaluateMsg: new Uint8Array(49), evaluateProof: new Uint8Array(95) }))).toBe("PP_ERR_FORMAT");
  });

  it("truncates a token key id to its last byte", () => {
    expect(truncateTokenKeyId(fromHex("00ff10"))).toBe(0x10);
    expect(codeOf(() => truncateTokenKeyId(new Uint8Array(0)))).toBe("PP_ERR_FORMAT");
  });
});
