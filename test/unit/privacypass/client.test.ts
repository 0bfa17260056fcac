// The client: Veil's own type 2 (Blind RSA) and type 1 (VOPRF) paths, against Veil's native signing and the stock
// privacypass-ts issuer; tokens checked with Veil's verification and with privacypass-ts's own; type 1 requests and
// tokens reproduced from the RFC 9578 vectors of three other implementations.
import { createPrivateKey, randomBytes, webcrypto } from "node:crypto";
import { describe, expect, it } from "vitest";
import { Token as PpToken, TOKEN_TYPES, privateVerif, publicVerif } from "@cloudflare/privacypass-ts";
import { concatBytes, exactCopy } from "../../../core/bytes.js";
import { isProtocolError } from "../../../core/errors.js";
import {
  createTokenRequest,
  decodeToken,
  decodeTokenRequest,
  encodeTokenChallenge,
  rsaSpkiFromRsaPssSpki,
  TOKEN_TYPE,
  tokenKeyId,
} from "../../../core/privacypass/index.js";
import { importBlindRsaTokenKey, importVoprfPrivateKey, verifyToken } from "../../../core/privacypass/verify-node.js";
import { deriveKeyPair } from "../../../core/privacypass/voprf.js";
import { createBlindRsaSigner, createVoprfSigner, signTokenRequest } from "../../../issuer/signer.js";
import { TYPE1_VECTORS, TYPE2_VECTORS } from "../../helpers/pp-vectors.js";

async function codeOfAsync(f: () => Promise<unknown>): Promise<string> {
  try {
    await f();
  } catch (e) {
    if (isProtocolError(e)) return e.code;
    throw e;
  }
  return "none";
}

const rsa = createBlindRsaSigner(createPrivateKey(Buffer.from(TYPE2_VECTORS[0]!.skS).toString("utf8")));
const voprfKey = deriveKeyPair(new Uint8Array(randomBytes(32)));
const voprf = createVoprfSigner(voprfKey.skS);

const challengeFor = (tokenType: number): Uint8Array =>
  encodeTokenChallenge({ tokenType, issuerName: "issuer.example", redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] });

describe("createTokenRequest + finalize (Veil type 1 and type 2 clients)", () => {
  it("type 2: a token the issuer signed natively verifies with Veil and with privacypass-ts", async () => {
    const challenge = challengeFor(TOKEN_TYPE.BLIND_RSA_2048);
    const pending = await createTokenRequest(challenge, rsa.tokenKey);
    const req = decodeTokenRequest(pending.request);
    expect(req.truncatedTokenKeyId).toBe(rsa.tokenKeyId[31]);
    const token = await pending.finalize(signTokenRequest(rsa, req));
    const decoded = decodeToken(token);
    expect(decoded.tokenKeyId).toEqual(tokenKeyId(rsa.tokenKey));
    expect(verifyToken(decoded, importBlindRsaTokenKey(rsa.tokenKey))).toBe(true);

    const stockKey = await webcrypto.subtle.importKey("spki", rsaSpkiFromRsaPssSpki(rsa.tokenKey), { name: "RSA-PSS", hash: "SHA-384" }, true, ["verify"]);
    const origin = new publicVerif.Origin(publicVerif.BlindRSAMode.PSS, ["leader.example"]);
    expect(await origin.verify(PpToken.deserialize(TOKEN_TYPES.BLIND_RSA, exactCopy(token)), stockKey)).toBe(true);
  });

  it("type 1: a token from Veil's BlindEvaluate verifies with Veil (fast path) and with privacypass-ts", async () => {
    const pending = await createTokenRequest(challengeFor(TOKEN_TYPE.VOPRF_P384), voprf.tokenKey);
    const token = await pending.finalize(signTokenRequest(voprf, decodeTokenRequest(pending.request)));
    expect(verifyToken(decodeToken(token), importVoprfPrivateKey(voprfKey.skS))).toBe(true);
    const stockToken = PpToken.deserialize(TOKEN_TYPES.VOPRF, exactCopy(token));
    expect(await privateVerif.verifyToken(stockToken, voprfKey.skS)).toBe(true);
  });

  it("type 1: the stock privacypass-ts issuer's response finalizes into a token both verify", async () => {
    const stockIssuer = new privateVerif.Issuer("issuer.example", voprfKey.skS, voprfKey.pkS);
    for (let i = 0; i < 3; i++) {
      const pending = await createTokenRequest(challengeFor(TOKEN_TYPE.VOPRF_P384), voprfKey.pkS);
      const stockRes = await stockIssuer.issue(privateVerif.TokenRequest.deserialize(exactCopy(pending.request)));
      const token = await pending.finalize(stockRes.serialize());
      expect(verifyToken(decodeToken(token), importVoprfPrivateKey(voprfKey.skS))).toBe(true);
      expect(await stockIssuer.verify(PpToken.deserialize(TOKEN_TYPES.VOPRF, exactCopy(token)))).toBe(true);
    }
  });

  it("refuses a response with a bad signature or proof (then accepts the right one), a truncated response and a second finalize", async () => {
    for (const signer of [rsa, voprf]) {
      const pending = await createTokenRequest(challengeFor(signer.tokenType), signer.tokenKey);
      const good = signTokenRequest(signer, decodeTokenRequest(pending.request));
      const bad = new Uint8Array(good);
      bad[bad.length - 1]! ^= 1;
      expect(await codeOfAsync(() => pending.finalize(bad))).toBe("PP_ERR_TOKEN_SIGNATURE");
      expect(await codeOfAsync(() => pending.finalize(good))).toBe("none");
      expect(await codeOfAsync(() => pending.finalize(good))).toBe("INTERNAL_ERR");
      const again = await createTokenRequest(challengeFor(signer.tokenType), signer.tokenKey);
      expect(await codeOfAsync(() => again.finalize(good.subarray(0, 10)))).toBe("PP_ERR_TRUNCATED");
      expect(await codeOfAsync(() => again.finalize(concatBytes(good, Uint8Array.of(0))))).toBe("PP_ERR_FORMAT");
    }
  });

  it("refuses malformed challenges, unsupported types and unusable keys", async () => {
    expect(await codeOfAsync(() => createTokenRequest(Uint8Array.of(0, 2, 0), rsa.tokenKey))).toBe("PP_ERR_TRUNCATED");
    expect(await codeOfAsync(() => createTokenRequest(challengeFor(0x5a63), rsa.tokenKey))).toBe("PP_ERR_FORMAT");
    expect(await codeOfAsync(() => createTokenRequest(challengeFor(2), Uint8Array.of(1, 2, 3)))).toBe("PP_ERR_FORMAT");
    expect(await codeOfAsync(() => createTokenRequest(challengeFor(1), new Uint8Array(49)))).toBe("PP_ERR_FORMAT");
  });

  it("gives the token key id of the key it was made for; another key does not verify it", async () => {
    const other = deriveKeyPair(new Uint8Array(32).fill(9));
    const pending = await createTokenRequest(challengeFor(1), voprf.tokenKey);
    const token = decodeToken(await pending.finalize(signTokenRequest(voprf, decodeTokenRequest(pending.request))));
    expect(verifyToken(token, importVoprfPrivateKey(other.skS))).toBe(false);
    expect(verifyToken({ ...token, tokenKeyId: tokenKeyId(other.pkS) }, importVoprfPrivateKey(other.skS))).toBe(false);
    expect(verifyToken({ ...token, tokenType: 2 }, importVoprfPrivateKey(voprfKey.skS))).toBe(false);
  });
});

/** A random source that returns `chunks` in order and fails on any other draw. */
function playback(...chunks: Uint8Array[]): (n: number) => Uint8Array {
  let i = 0;
  return (n) => {
    const c = chunks[i++];
    if (c === undefined || c.length !== n) throw new Error(`unexpected random draw ${i}: ${n} bytes`);
    return c;
  };
}

describe("type 1 client against the RFC 9578 vectors (privacypass-ts, pat-go, raphaelrobert/privacypass)", () => {
  it.each(TYPE1_VECTORS.map((v) => [`${v.file} #${v.index}`, v] as const))("%s: token_request and token reproduced", async (_n, v) => {
    // The blind scalar is drawn as 72 bytes reduced modulo the order: 24 zero bytes then the blind give it exactly.
    const pending = await createTokenRequest(v.tokenChallenge, v.pkS, { randomBytes: playback(v.nonce, concatBytes(new Uint8Array(24), v.blind)) });
    expect(pending.request).toEqual(v.tokenRequest);
    expect(await pending.finalize(v.tokenResponse)).toEqual(v.token);
  });

  it("refuses each vector's response under another vector's key (the proof binds the issuer's key)", async () => {
    const [a, b] = [TYPE1_VECTORS[0]!, TYPE1_VECTORS[1]!];
    const pending = await createTokenRequest(a.tokenChallenge, b.pkS, { randomBytes: playback(a.nonce, concatBytes(new Uint8Array(24), a.blind)) });
    expect(await codeOfAsync(() => pending.finalize(a.tokenResponse))).toBe("PP_ERR_TOKEN_SIGNATURE");
  });

  it("refuses a proof with a flipped bit in c, in s, or in the evaluated element", async () => {
    const v = TYPE1_VECTORS[0]!;
    for (const at of [0, 49, 49 + 47, 49 + 48, 49 + 95]) {
      const pending = await createTokenRequest(v.tokenChallenge, v.pkS, { randomBytes: playback(v.nonce, concatBytes(new Uint8Array(24), v.blind)) });
      const bad = new Uint8Array(v.tokenResponse);
      bad[at]! ^= 1;
      expect(await codeOfAsync(() => pending.finalize(bad))).toBe("PP_ERR_TOKEN_SIGNATURE");
      expect(await pending.finalize(v.tokenResponse)).toEqual(v.token);
    }
  });
});
