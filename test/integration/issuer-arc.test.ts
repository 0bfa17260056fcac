// ARC issuance (token type 0xE5AC, draft-ietf-privacypass-arc-protocol-01 §6) through the issuer's
// HTTP API: keys in the key file with the usual rotation, the directory, credential requests and
// responses that a client finalizes, 422 for every malformed request, and a quota that counts
// credentials.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { concatBytes, fromBase64Url, fromHex } from "../../core/bytes.js";
import {
  ARC_MEDIA_TYPES,
  createCredentialRequest,
  decodeArcCredentialResponse,
  decodeServerPrivateKey,
  decodeServerPublicKey,
  encodeArcCredentialRequest,
  finalizeCredential,
  issuerKeyId,
  presentationContexts,
  PresentationState,
  publicKeyFromPrivate,
  encodeServerPublicKey,
  verifyPresentation,
} from "../../core/privacypass/arc/index.js";
import { CREDENTIAL, makeIssuer, tempDir, type IssuerFixture } from "../helpers/issuer.js";

const ARC = 58796;
let tmp: ReturnType<typeof tempDir>;
let fx: IssuerFixture;

beforeAll(async () => {
  tmp = tempDir();
  fx = await makeIssuer(tmp.dir, { tokenTypes: [2, ARC], attester: { credentials: [CREDENTIAL, "client-credential-2"], tokensPerWindow: 3, windowSec: 3600 } });
});
afterAll(async () => {
  await fx.app.close();
  tmp.remove();
});

function currentArcKey(): { tokenKey: Uint8Array; keyId: Uint8Array } {
  const k = fx.keys.published().filter((x) => x.tokenType === ARC && x.notBefore <= fx.clock.sec)[0]!;
  return { tokenKey: k.tokenKey, keyId: k.tokenKeyId };
}

async function post(body: Uint8Array, credential = CREDENTIAL, contentType: string = ARC_MEDIA_TYPES.credentialRequest): Promise<Awaited<ReturnType<typeof fx.app.inject>>> {
  return await fx.app.inject({
    method: "POST",
    url: "/token-request",
    headers: { "content-type": contentType, authorization: `Bearer ${credential}` },
    payload: Buffer.from(body),
  });
}

function newRequest(keyId: Uint8Array): ReturnType<typeof createCredentialRequest> & { wire: Uint8Array } {
  const r = createCredentialRequest(new TextEncoder().encode("request context"));
  return { ...r, wire: encodeArcCredentialRequest({ truncatedIssuerKeyId: keyId[31]!, request: r.request }) };
}

describe("ARC keys", () => {
  it("live in the key file with the rotation of type 2 keys, and the directory lists them", async () => {
    const file = JSON.parse(readFileSync(fx.config.keys, "utf8")) as { keys: { tokenType: number; notBefore: number; tokenKey: string; privateKey: string }[] };
    const arc = file.keys.filter((k) => k.tokenType === ARC);
    const rsa = file.keys.filter((k) => k.tokenType === 2);
    expect(arc).toHaveLength(2);
    expect(arc.map((k) => k.notBefore)).toEqual(rsa.map((k) => k.notBefore));
    for (const k of arc) {
      const pk = publicKeyFromPrivate(decodeServerPrivateKey(fromHex(k.privateKey)));
      expect(fromBase64Url(k.tokenKey)).toEqual(encodeServerPublicKey(pk));
    }
    const res = await fx.app.inject({ method: "GET", url: "/.well-known/private-token-issuer-directory" });
    const dir = res.json<{ "token-keys": { "token-type": number; "token-key": string }[] }>();
    const listed = dir["token-keys"].filter((k) => k["token-type"] === ARC);
    expect(listed).toHaveLength(2);
    for (const k of listed) expect(decodeServerPublicKey(fromBase64Url(k["token-key"])!)).toBeDefined();
  });
});

describe("POST application/private-credential-request", () => {
  it("returns a credential response the client finalizes into a working credential", async () => {
    const { tokenKey, keyId } = currentArcKey();
    const req = newRequest(keyId);
    const res = await post(req.wire);
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toBe(ARC_MEDIA_TYPES.credentialResponse);
    expect(res.headers["cache-control"]).toBe("no-store");
    const pk = decodeServerPublicKey(tokenKey);
    expect(issuerKeyId(pk)).toEqual(keyId);
    const credential = finalizeCredential(req.clientSecrets, pk, req.request, decodeArcCredentialResponse(new Uint8Array(res.rawPayload)));
    // The issuer's private key (the same file the gateway reads) verifies its presentations.
    const file = JSON.parse(readFileSync(fx.config.keys, "utf8")) as { keys: { tokenType: number; tokenKey: string; privateKey: string }[] };
    const sk = decodeServerPrivateKey(fromHex(file.keys.find((k) => k.tokenType === ARC && fromBase64Url(k.tokenKey)!.every((b, i) => b === tokenKey[i]))!.privateKey));
    const state = new PresentationState(credential, new TextEncoder().encode("presentation context"), 4);
    const contexts = presentationContexts(new TextEncoder().encode("request context"), new TextEncoder().encode("presentation context"));
    expect(verifyPresentation(sk, pk, contexts, state.present().presentation, 4)).toBe(true);
  });

  it("answers 422 for every malformed request, and those cost no quota", async () => {
    const { keyId } = currentArcKey();
    const valid = newRequest(keyId).wire;
    const cases: [string, Uint8Array, string][] = [
      ["empty", new Uint8Array(0), "ISSUER_ERR_REQUEST"],
      ["truncated", valid.subarray(0, 100), "ISSUER_ERR_REQUEST"],
      ["trailing byte", concatBytes(valid, Uint8Array.of(0)), "ISSUER_ERR_REQUEST"],
    ];
    const wrongType = valid.slice();
    wrongType[1] = 0xad;
    cases.push(["other token type", wrongType, "ISSUER_ERR_REQUEST"]);
    const notPoint = valid.slice();
    notPoint.fill(0xff, 4, 36);
    cases.push(["m1Enc not a point", notPoint, "ISSUER_ERR_REQUEST"]);
    const badProof = valid.slice();
    badProof[valid.length - 1]! ^= 1;
    cases.push(["proof does not verify", badProof, "ISSUER_ERR_REQUEST"]);
    const known = new Set(fx.keys.published().filter((k) => k.tokenType === ARC).map((k) => k.tokenKeyId[31]));
    const unknownKey = valid.slice();
    unknownKey[2] = [...Array(256).keys()].find((i) => !known.has(i))!;
    cases.push(["unknown truncated key id", unknownKey, "ISSUER_ERR_KEY_UNKNOWN"]);
    for (const [what, body, code] of cases) {
      const res = await post(body, "client-credential-2");
      expect(res.statusCode, what).toBe(422);
      expect(res.json<{ code: string }>().code, what).toBe(code);
    }
    // None of them used the quota of 3: three credentials are still issued.
    for (let i = 0; i < 3; i++) expect((await post(newRequest(keyId).wire, "client-credential-2")).statusCode).toBe(200);
    const refused = await post(newRequest(keyId).wire, "client-credential-2");
    expect(refused.statusCode).toBe(429);
    expect(refused.json<{ code: string }>().code).toBe("ISSUER_ERR_QUOTA");
  });

  it("401 without a credential, 422 for ARC at an issuer that does not issue it", async () => {
    const { keyId } = currentArcKey();
    const res = await fx.app.inject({ method: "POST", url: "/token-request", headers: { "content-type": ARC_MEDIA_TYPES.credentialRequest }, payload: Buffer.from(newRequest(keyId).wire) });
    expect(res.statusCode).toBe(401);
    const other = tempDir();
    const plain = await makeIssuer(other.dir, { tokenTypes: [2] });
    try {
      const r = await plain.app.inject({
        method: "POST",
        url: "/token-request",
        headers: { "content-type": ARC_MEDIA_TYPES.credentialRequest, authorization: `Bearer ${CREDENTIAL}` },
        payload: Buffer.from(newRequest(keyId).wire),
      });
      expect(r.statusCode).toBe(422);
      expect(r.json<{ code: string }>().code).toBe("ISSUER_ERR_TOKEN_TYPE");
    } finally {
      await plain.app.close();
      other.remove();
    }
  });
});
