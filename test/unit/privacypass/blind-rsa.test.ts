// Veil's own RSABSSA-SHA384-PSS-Deterministic client (core/privacypass/blind-rsa.ts) and the
// type 2 path of createTokenRequest built on it: RFC 9474 Appendix A and RFC 9578 issuance vectors
// byte for byte with injected randomness, and random cross-checks against privacypass-ts (stock
// Issuer signing our requests, stock Origin verifying our tokens).
import { createPrivateKey, webcrypto } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { Token as PpToken, TOKEN_TYPES, publicVerif } from "@cloudflare/privacypass-ts";
import { concatBytes, exactCopy, fromHex, toHex } from "../../../core/bytes.js";
import { isProtocolError } from "../../../core/errors.js";
import {
  blind,
  emsaPssEncode,
  finalize,
  i2osp,
  modInverse,
  modInverseEuclid,
  modPow,
  os2ip,
  parseRsaPssTokenKey,
  rsaPublicKey,
  rsassaPssVerify,
} from "../../../core/privacypass/blind-rsa.js";
import {
  createTokenRequest,
  decodeToken,
  decodeTokenRequest,
  encodeAuthenticatorInput,
  encodeTokenChallenge,
  rsaSpkiFromRsaPssSpki,
  TOKEN_TYPE,
} from "../../../core/privacypass/index.js";
import { importBlindRsaTokenKey, verifyToken } from "../../../core/privacypass/verify-node.js";
import { createBlindRsaSigner, signTokenRequest } from "../../../issuer/signer.js";
import { PP_VECTOR_DIR, TYPE2_VECTORS } from "../../helpers/pp-vectors.js";
import { sha384 } from "@noble/hashes/sha2.js";

interface Rfc9474Vector {
  name: string;
  n: string;
  e: string;
  d: string;
  msg: string;
  prepared_msg: string;
  salt: string;
  encoded_msg: string;
  inv: string;
  blinded_msg: string;
  blind_sig: string;
  sig: string;
}

const RFC9474 = JSON.parse(readFileSync(`${PP_VECTOR_DIR}/rfc9474/rfc9474-appendix-a.json`, "utf8")) as Rfc9474Vector[];
const DETERMINISTIC = RFC9474.filter((v) => v.name.endsWith("-Deterministic"));

/** Plays back fixed byte strings, in order, as the random source. */
function playback(...chunks: Uint8Array[]): (n: number) => Uint8Array {
  let i = 0;
  return (n) => {
    const c = chunks[i++];
    if (c === undefined || c.length !== n) throw new Error(`unexpected random draw ${i}: ${n} bytes`);
    return c;
  };
}

async function codeOfAsync(f: () => Promise<unknown>): Promise<string> {
  try {
    await f();
  } catch (e) {
    if (isProtocolError(e)) return e.code;
    throw e;
  }
  return "none";
}

function saltOf(v: { file: string; index: number }): Uint8Array {
  const raw = JSON.parse(readFileSync(`${PP_VECTOR_DIR}/${v.file}`, "utf8")) as { salt: string }[];
  return fromHex(raw[v.index]!.salt);
}

describe("RSABSSA arithmetic", () => {
  it("modPow and modInverse agree with small known values and with each other", () => {
    expect(modPow(4n, 13n, 497n)).toBe(445n);
    expect(modInverse(3n, 11n)).toBe(4n);
    expect(modInverse(6n, 9n)).toBeUndefined();
    const n = BigInt("0x" + RFC9474[0]!.n);
    const x = BigInt("0x" + RFC9474[0]!.inv);
    expect((x * modInverse(x, n)!) % n).toBe(1n);
  });

  it("Lehmer's modInverse equals the plain extended Euclid on deterministic pseudo-random inputs of every size", () => {
    const bytes = (seed: number, len: number): Uint8Array => {
      const out = new Uint8Array(len);
      for (let off = 0, c = 0; off < len; off += 48, c++) out.set(sha384(Uint8Array.of(seed & 0xff, seed >> 8, c)).subarray(0, Math.min(48, len - off)), off);
      return out;
    };
    let invertible = 0;
    for (let i = 0; i < 600; i++) {
      const m = os2ip(bytes(2 * i, 1 + (i % 260))) | 1n;
      if (m < 3n) continue;
      const a = os2ip(bytes(2 * i + 1, 1 + ((i * 7) % 270))) * (i % 5 === 0 ? 3n : 1n);
      const got = modInverse(a, m);
      expect(got).toBe(modInverseEuclid(a, m));
      if (got !== undefined) {
        invertible++;
        expect(((a % m) * got) % m).toBe(1n);
      }
    }
    expect(invertible).toBeGreaterThan(300);
  });

  it("i2osp/os2ip round-trip and i2osp refuses integers too large", () => {
    const b = fromHex("00ff0102");
    expect(toHex(i2osp(os2ip(b), 4))).toBe("00ff0102");
    expect(() => i2osp(0x10000n, 2)).toThrow();
  });
});

describe("RFC 9474 Appendix A (Deterministic variants) byte for byte", () => {
  it.each(DETERMINISTIC.map((v) => [v.name, v] as const))("%s: encoded_msg, blinded_msg, inv, sig", (_n, v) => {
    expect(v.prepared_msg).toBe(v.msg); // no message preparation
    const pk = rsaPublicKey(BigInt("0x" + v.n), BigInt("0x" + v.e));
    const salt = fromHex(v.salt);
    const msg = fromHex(v.msg);
    expect(toHex(emsaPssEncode(msg, pk.modBits - 1, salt))).toBe(v.encoded_msg);
    const r = modInverse(BigInt("0x" + v.inv), pk.n)!;
    const res = blind(pk, msg, { salt, r });
    expect(toHex(res.encodedMsg)).toBe(v.encoded_msg);
    expect(toHex(res.blindedMsg)).toBe(v.blinded_msg);
    expect(toHex(res.inv)).toBe(v.inv);
    // The issuer's side, for completeness: blind_sig = blinded_msg^d mod n.
    expect(toHex(i2osp(modPow(os2ip(res.blindedMsg), BigInt("0x" + v.d), pk.n), pk.modLen))).toBe(v.blind_sig);
    const sig = finalize(pk, msg, fromHex(v.blind_sig), res.inv, salt.length);
    expect(toHex(sig)).toBe(v.sig);
    expect(rsassaPssVerify(pk, msg, sig, salt.length)).toBe(true);
    const bad = fromHex(v.blind_sig);
    bad[100]! ^= 1;
    expect(() => finalize(pk, msg, bad, res.inv, salt.length)).toThrow(/invalid signature/);
  });

  it("the Randomized entries blind their prepared message the same way", () => {
    for (const v of RFC9474.filter((x) => x.name.endsWith("-Randomized"))) {
      const pk = rsaPublicKey(BigInt("0x" + v.n), BigInt("0x" + v.e));
      const res = blind(pk, fromHex(v.prepared_msg), { salt: fromHex(v.salt), r: modInverse(BigInt("0x" + v.inv), pk.n)! });
      expect(toHex(res.blindedMsg)).toBe(v.blinded_msg);
      expect(toHex(finalize(pk, fromHex(v.prepared_msg), fromHex(v.blind_sig), res.inv, v.salt.length / 2))).toBe(v.sig);
    }
  });
});

const name = (v: { file: string; index: number }): string => `${v.file}#${v.index}`;

describe("Blind: RFC 9474 §4.2 error cases", () => {
  const v = DETERMINISTIC.find((x) => x.name === "RSABSSA-SHA384-PSS-Deterministic")!;
  const pk = rsaPublicKey(BigInt("0x" + v.n), BigInt("0x" + v.e));
  const msg = fromHex(v.msg);
  const salt = fromHex(v.salt);

  it("a blind r that is not invertible is a blinding error; a random source's such draw is redrawn", () => {
    const p = BigInt("0x" + (v as unknown as { p: string }).p);
    expect(() => blind(pk, msg, { salt, r: p })).toThrow(/blinding error/);
    const r = modInverse(BigInt("0x" + v.inv), pk.n)!;
    const res = blind(pk, msg, { salt, randomBytes: playback(i2osp(p, pk.modLen), i2osp(0n, pk.modLen), i2osp(r, pk.modLen)) });
    expect(toHex(res.blindedMsg)).toBe(v.blinded_msg);
  });

  it("an encoded message that shares a factor with n is invalid input", () => {
    const m = os2ip(emsaPssEncode(msg, 2047, salt)); // as for any 2048-bit n
    let odd = m;
    while (odd % 2n === 0n) odd /= 2n;
    let n = 0n;
    for (let k = 5n; k < 200n; k += 2n) {
      if ((odd * k).toString(2).length === 2048) {
        n = odd * k;
        break;
      }
    }
    expect(n).not.toBe(0n);
    expect(() => blind(rsaPublicKey(n, 65537n), msg, { salt })).toThrow(/invalid input/);
  });
});

describe("RFC 9578 type 2 issuance vectors through createTokenRequest", () => {
  it.each(TYPE2_VECTORS.map((v) => [name(v), v] as const))("%s: token_request and token reproduced", async (_n, v) => {
    const pending = await createTokenRequest(v.tokenChallenge, v.pkS, { randomBytes: playback(v.nonce, saltOf(v), v.blind) });
    expect(pending.tokenType).toBe(TOKEN_TYPE.BLIND_RSA_2048);
    expect(toHex(pending.request)).toBe(toHex(v.tokenRequest));
    expect(toHex(await pending.finalize(v.tokenResponse))).toBe(toHex(v.token));
  });

  it("the AuthenticatorInput is token_type || nonce || SHA-256(challenge) || SHA-256(token-key)", async () => {
    const v = TYPE2_VECTORS[0]!;
    const token = decodeToken(v.token);
    const pk = parseRsaPssTokenKey(v.pkS);
    expect(rsassaPssVerify(pk, encodeAuthenticatorInput(token), token.authenticator)).toBe(true);
  });
});

describe("random cross-checks with privacypass-ts", () => {
  const v0 = TYPE2_VECTORS[0]!;
  const pem = Buffer.from(v0.skS).toString("utf8");
  const signer = createBlindRsaSigner(createPrivateKey(pem));
  const challenge = encodeTokenChallenge({ tokenType: 2, issuerName: "issuer.example", redemptionContext: new Uint8Array(32).fill(7), originInfo: ["leader.example"] });
  const stockKeys = async (): Promise<{ priv: CryptoKey; pub: CryptoKey }> => {
    const pkcs8 = createPrivateKey(pem).export({ format: "der", type: "pkcs8" });
    const alg = { name: "RSA-PSS", hash: "SHA-384" };
    return {
      priv: await webcrypto.subtle.importKey("pkcs8", pkcs8, alg, true, ["sign"]),
      pub: await webcrypto.subtle.importKey("spki", rsaSpkiFromRsaPssSpki(signer.tokenKey), alg, true, ["verify"]),
    };
  };

  it("our requests signed by the stock Issuer finalize to tokens that Veil, our verify and the stock Origin accept", async () => {
    const { priv, pub } = await stockKeys();
    const issuer = new publicVerif.Issuer(publicVerif.BlindRSAMode.PSS, "issuer.example", priv, pub);
    const origin = new publicVerif.Origin(publicVerif.BlindRSAMode.PSS, ["leader.example"]);
    const key = importBlindRsaTokenKey(signer.tokenKey);
    const pk = parseRsaPssTokenKey(signer.tokenKey);
    for (let i = 0; i < 4; i++) {
      const pending = await createTokenRequest(challenge, signer.tokenKey);
      const stockReq = publicVerif.TokenRequest.deserialize(TOKEN_TYPES.BLIND_RSA, exactCopy(pending.request));
      const response = (await issuer.issue(stockReq)).serialize();
      const token = await pending.finalize(response);
      const decoded = decodeToken(token);
      expect(verifyToken(decoded, key)).toBe(true);
      expect(rsassaPssVerify(pk, encodeAuthenticatorInput(decoded), decoded.authenticator)).toBe(true);
      expect(await origin.verify(PpToken.deserialize(TOKEN_TYPES.BLIND_RSA, exactCopy(token)), pub)).toBe(true);
      expect(await issuer.verify(PpToken.deserialize(TOKEN_TYPES.BLIND_RSA, exactCopy(token)))).toBe(true);
    }
  });

  it("tokens from Veil's native signer verify with the stock Origin; every request differs", async () => {
    const { pub } = await stockKeys();
    const origin = new publicVerif.Origin(publicVerif.BlindRSAMode.PSS, ["leader.example"]);
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const pending = await createTokenRequest(challenge, signer.tokenKey);
      seen.add(toHex(pending.request));
      const token = await pending.finalize(signTokenRequest(signer, decodeTokenRequest(pending.request)));
      expect(await origin.verify(PpToken.deserialize(TOKEN_TYPES.BLIND_RSA, exactCopy(token)), pub)).toBe(true);
    }
    expect(seen.size).toBe(4);
  });

  it("a stock token signed for another message or with another key does not verify with ours", async () => {
    const pk = parseRsaPssTokenKey(signer.tokenKey);
    const pending = await createTokenRequest(challenge, signer.tokenKey);
    const token = decodeToken(await pending.finalize(signTokenRequest(signer, decodeTokenRequest(pending.request))));
    const msg = encodeAuthenticatorInput(token);
    expect(rsassaPssVerify(pk, msg, token.authenticator)).toBe(true);
    expect(rsassaPssVerify(pk, concatBytes(msg, Uint8Array.of(0)), token.authenticator)).toBe(false);
    expect(rsassaPssVerify(parseRsaPssTokenKey(TYPE2_VECTORS[5]!.pkS), msg, token.authenticator)).toBe(false);
    expect(rsassaPssVerify(pk, msg, token.authenticator.subarray(1))).toBe(false);
  });

  it("a blind signature made with another key is PP_ERR_TOKEN_SIGNATURE and leaves the request usable", async () => {
    const other = createBlindRsaSigner(createPrivateKey(Buffer.from(TYPE2_VECTORS[5]!.skS).toString("utf8")));
    const pending = await createTokenRequest(challenge, signer.tokenKey);
    const req = decodeTokenRequest(pending.request);
    expect(await codeOfAsync(() => pending.finalize(signTokenRequest(other, { ...req, truncatedTokenKeyId: other.tokenKeyId[31]! })))).toBe("PP_ERR_TOKEN_SIGNATURE");
    expect(await codeOfAsync(() => pending.finalize(new Uint8Array(256).fill(0xff)))).toBe("PP_ERR_TOKEN_SIGNATURE");
    expect(await codeOfAsync(() => pending.finalize(signTokenRequest(signer, req)))).toBe("none");
  });
});

describe("type 2 token keys", () => {
  it("parses n and e of every vector key and refuses other algorithms and malformed keys", () => {
    for (const v of TYPE2_VECTORS) {
      const pk = parseRsaPssTokenKey(v.pkS);
      expect(pk.modBits).toBe(2048);
      expect(pk.e).toBe(65537n);
    }
    const key = TYPE2_VECTORS[0]!.pkS;
    expect(() => parseRsaPssTokenKey(rsaSpkiFromRsaPssSpki(key))).toThrow(/RSASSA-PSS/);
    expect(() => parseRsaPssTokenKey(key.subarray(0, key.length - 1))).toThrow();
    expect(() => parseRsaPssTokenKey(concatBytes(key, Uint8Array.of(0)))).toThrow();
    expect(() => rsaPublicKey(2n ** 2048n, 65537n)).toThrow();
  });
});
