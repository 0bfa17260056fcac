// The issuer (RFC 9578) end to end with inject() and over real HTTP: the stock privacypass-ts
// client gets tokens of both types, and every error path answers as the contract says.
import { execFileSync } from "node:child_process";
import { createHash, webcrypto } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Agent, fetch as undiciFetch } from "undici";
import type { LightMyRequestResponse } from "fastify";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Token as PpToken, TOKEN_TYPES, TokenChallenge as PpTokenChallenge, privateVerif, publicVerif } from "@cloudflare/privacypass-ts";
import { concatBytes, exactCopy, fromBase64Url, toBase64Url, toHex } from "../../core/bytes.js";
import {
  createTokenRequest,
  decodeToken,
  decodeTokenRequest,
  encodeTokenChallenge,
  encodeTokenRequest,
  rsaSpkiFromRsaPssSpki,
  tokenKeyId,
  TOKEN_TYPE,
} from "../../core/privacypass/index.js";
import { importBlindRsaTokenKey, importVoprfPrivateKey, verifyToken } from "../../core/privacypass/verify-node.js";
import { startIssuer, type StartedIssuer } from "../../issuer/main.js";
import { createLogger } from "../../server/logging.js";
import { CREDENTIAL, TestClock, captureLines, issuerConfig, makeIssuer, rsaKeyPool, tempDir, type IssuerFixture } from "../helpers/issuer.js";

const DIRECTORY = "/.well-known/private-token-issuer-directory";
const REQ_TYPE = "application/private-token-request";

interface Directory {
  "issuer-request-uri": string;
  "token-keys": { "token-type": number; "token-key": string; "not-before": number }[];
}

const challengeFor = (tokenType: number): Uint8Array =>
  encodeTokenChallenge({ tokenType, issuerName: "issuer.example", redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] });

let tmp: ReturnType<typeof tempDir>;
let fx: IssuerFixture;

async function post(body: Uint8Array, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  return fx.app.inject({
    method: "POST",
    url: "/token-request",
    headers: { "content-type": REQ_TYPE, authorization: `Bearer ${CREDENTIAL}`, ...headers },
    payload: Buffer.from(body),
  });
}

async function directory(): Promise<Directory> {
  return (await fx.app.inject({ method: "GET", url: DIRECTORY })).json<Directory>();
}

/** The current (not-before passed) key of a type, as the directory publishes it. */
async function currentKey(tokenType: number): Promise<Uint8Array> {
  const d = await directory();
  const k = d["token-keys"].find((x) => x["token-type"] === tokenType && x["not-before"] <= fx.clock.sec)!;
  return fromBase64Url(k["token-key"])!;
}

beforeAll(async () => {
  tmp = tempDir();
  fx = await makeIssuer(tmp.dir, { tokenTypes: [2, 1], keyLifetimeSec: 3600, attester: { credentials: [CREDENTIAL, "client-credential-2"], tokensPerWindow: 1000, windowSec: 60 } });
});
afterAll(async () => {
  await fx.app.close();
  tmp.remove();
});

describe("GET /.well-known/private-token-issuer-directory", () => {
  it("publishes padded base64url token keys with not-before, preferred first, cacheable until the next change", async () => {
    const res = await fx.app.inject({ method: "GET", url: DIRECTORY });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toBe("application/private-token-issuer-directory");
    expect(res.headers["cache-control"]).toBe(`public, max-age=${fx.keys.secondsUntilChange()}`);
    const d = res.json<Directory>();
    expect(d["issuer-request-uri"]).toBe("/token-request");
    expect(d["token-keys"].map((k) => [k["token-type"], k["not-before"] - fx.clock.sec])).toEqual([
      [2, 1800],
      [2, 0],
      [1, 1800],
      [1, 0],
    ]);
    for (const k of d["token-keys"]) {
      expect(k["token-key"].length % 4).toBe(0); // padded
      expect(toBase64Url(fromBase64Url(k["token-key"])!, true)).toBe(k["token-key"]);
    }
    const type2 = fromBase64Url(d["token-keys"][0]!["token-key"])!;
    expect(importBlindRsaTokenKey(type2).tokenKeyId).toEqual(tokenKeyId(type2));
  });

  it("answers If-None-Match with 304 and other methods with 405", async () => {
    const first = await fx.app.inject({ method: "GET", url: DIRECTORY });
    const again = await fx.app.inject({ method: "GET", url: DIRECTORY, headers: { "if-none-match": String(first.headers.etag) } });
    expect(again.statusCode).toBe(304);
    const post405 = await fx.app.inject({ method: "POST", url: DIRECTORY });
    expect(post405.statusCode).toBe(405);
    expect(post405.headers.allow).toBe("GET");
  });
});

describe("POST /token-request with the stock privacypass-ts client", () => {
  it("type 2: issues a token that verifies with Veil and with privacypass-ts", async () => {
    const tokenKey = await currentKey(2);
    const client = new publicVerif.Client(publicVerif.BlindRSAMode.PSS);
    const req = await client.createTokenRequest(PpTokenChallenge.deserialize(challengeFor(2)), tokenKey);
    const res = await post(req.serialize());
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toBe("application/private-token-response");
    const token = await client.finalize(client.deserializeTokenResponse(new Uint8Array(res.rawPayload)));
    const bytes = token.serialize();
    expect(verifyToken(decodeToken(bytes), importBlindRsaTokenKey(tokenKey))).toBe(true);
    const stockKey = await webcrypto.subtle.importKey("spki", rsaSpkiFromRsaPssSpki(tokenKey), { name: "RSA-PSS", hash: "SHA-384" }, true, ["verify"]);
    expect(await new publicVerif.Origin(publicVerif.BlindRSAMode.PSS, ["leader.example"]).verify(PpToken.deserialize(TOKEN_TYPES.BLIND_RSA, exactCopy(bytes)), stockKey)).toBe(true);
  });

  it("type 1: issues a token (with a DLEQ proof the stock client checks) that verifies with Veil and with privacypass-ts", async () => {
    const tokenKey = await currentKey(1);
    const client = new privateVerif.Client();
    const req = await client.createTokenRequest(PpTokenChallenge.deserialize(challengeFor(1)), tokenKey);
    const res = await post(req.serialize());
    expect(res.statusCode).toBe(200);
    const token = await client.finalize(client.deserializeTokenResponse(new Uint8Array(res.rawPayload)));
    const key = fx.keys.published().find((k) => k.tokenType === 1 && toHex(k.tokenKey) === toHex(tokenKey))!;
    const sk = key.privateKey.reveal();
    expect(verifyToken(decodeToken(token.serialize()), importVoprfPrivateKey(sk))).toBe(true);
    expect(await privateVerif.verifyToken(token, sk)).toBe(true);
  });

  it("issues with the successor key too (published ahead; the gate enforces not-before)", async () => {
    const d = await directory();
    const future = fromBase64Url(d["token-keys"][0]!["token-key"])!;
    const pending = await createTokenRequest(challengeFor(2), future);
    const res = await post(pending.request);
    expect(res.statusCode).toBe(200);
    expect(verifyToken(decodeToken(await pending.finalize(new Uint8Array(res.rawPayload))), importBlindRsaTokenKey(future))).toBe(true);
  });
});

describe("POST /token-request errors", () => {
  let valid2: Uint8Array;
  beforeAll(async () => {
    valid2 = (await createTokenRequest(challengeFor(2), await currentKey(2))).request;
  });

  const problem = (res: { json<T>(): T }): { code: string; status: number } => res.json<{ code: string; status: number }>();

  it("401 with WWW-Authenticate: Bearer for a missing, unknown or non-Bearer credential", async () => {
    for (const authorization of [undefined, "Bearer nope", "Basic Y2xpZW50LWNyZWRlbnRpYWwtMQ==", `Bearer ${CREDENTIAL}x`, "Bearer", `PrivateToken token="${CREDENTIAL}"`]) {
      const res = await fx.app.inject({
        method: "POST",
        url: "/token-request",
        headers: { "content-type": REQ_TYPE, ...(authorization === undefined ? {} : { authorization }) },
        payload: Buffer.from(valid2),
      });
      expect(res.statusCode, String(authorization)).toBe(401);
      expect(res.headers["www-authenticate"]).toBe("Bearer");
      expect(problem(res).code).toBe("ISSUER_ERR_UNAUTHORIZED");
    }
  });

  it("422 for a truncated or empty request, trailing bytes, and a blinded message not below n", async () => {
    for (const body of [valid2.subarray(0, 1), valid2.subarray(0, 100), concatBytes(valid2, Uint8Array.of(0))]) {
      const res = await post(body);
      expect(res.statusCode).toBe(422);
      expect(problem(res).code).toBe("ISSUER_ERR_REQUEST");
    }
    const big = new Uint8Array(valid2);
    big.fill(0xff, 3);
    expect(problem(await post(big)).code).toBe("ISSUER_ERR_REQUEST");
    const empty = await fx.app.inject({ method: "POST", url: "/token-request", headers: { "content-type": REQ_TYPE, authorization: `Bearer ${CREDENTIAL}` } });
    expect(empty.statusCode).toBe(422);
  });

  it("422 for an unsupported token type and for an unknown truncated key id", async () => {
    const t = new Uint8Array(valid2);
    t[1] = 3;
    expect(problem(await post(t)).code).toBe("ISSUER_ERR_TOKEN_TYPE");
    const known = new Set(fx.keys.published().filter((k) => k.tokenType === 2).map((k) => k.tokenKeyId[31]));
    const unknown = [...Array(256).keys()].find((i) => !known.has(i))!;
    const req = decodeTokenRequest(valid2);
    const res = await post(encodeTokenRequest({ ...req, truncatedTokenKeyId: unknown }));
    expect(res.statusCode).toBe(422);
    expect(problem(res).code).toBe("ISSUER_ERR_KEY_UNKNOWN");
  });

  it("422 for a type 1 blinded element that is not on P-384", async () => {
    const key = fx.keys.published().find((k) => k.tokenType === 1)!;
    const el = new Uint8Array(49).fill(0xff);
    el[0] = 0x03;
    const res = await post(encodeTokenRequest({ tokenType: 1, truncatedTokenKeyId: key.tokenKeyId[31]!, blindedMsg: el }));
    expect(res.statusCode).toBe(422);
    expect(problem(res).code).toBe("ISSUER_ERR_REQUEST");
  });

  it("415 for another or a missing content type, 413 for a large body, 405 and 404", async () => {
    for (const headers of [{ "content-type": "application/octet-stream" }, { "content-type": "application/json" }]) {
      const res = await fx.app.inject({ method: "POST", url: "/token-request", headers: { authorization: `Bearer ${CREDENTIAL}`, ...headers }, payload: Buffer.from(valid2) });
      expect(res.statusCode).toBe(415);
    }
    const none = await fx.app.inject({ method: "POST", url: "/token-request", headers: { authorization: `Bearer ${CREDENTIAL}` }, payload: Buffer.from(valid2) });
    expect(none.statusCode).toBe(415);
    expect((await post(new Uint8Array(fx.config.limits.maxRequestBytes + 1))).statusCode).toBe(413);
    const get = await fx.app.inject({ method: "GET", url: "/token-request" });
    expect(get.statusCode).toBe(405);
    expect(get.headers.allow).toBe("POST");
    expect((await fx.app.inject({ method: "GET", url: "/nope" })).statusCode).toBe(404);
  });
});

describe("quota (429 with Retry-After)", () => {
  let q: IssuerFixture;
  let qtmp: ReturnType<typeof tempDir>;
  beforeAll(async () => {
    qtmp = tempDir();
    q = await makeIssuer(qtmp.dir, { attester: { credentials: [CREDENTIAL, "client-credential-2"], tokensPerWindow: 3, windowSec: 100 } });
  });
  afterAll(async () => {
    await q.app.close();
    qtmp.remove();
  });

  const send = (body: Uint8Array, credential = CREDENTIAL): Promise<LightMyRequestResponse> =>
    q.app.inject({ method: "POST", url: "/token-request", headers: { "content-type": REQ_TYPE, authorization: `Bearer ${credential}` }, payload: Buffer.from(body) });

  it("refuses a credential's token beyond tokensPerWindow until its window ends; malformed requests cost nothing", async () => {
    const key = q.keys.published().find((k) => k.notBefore <= q.clock.sec)!;
    const request = (await createTokenRequest(challengeFor(2), key.tokenKey)).request;
    expect((await send(request.subarray(0, 5))).statusCode).toBe(422);
    for (let i = 0; i < 3; i++) expect((await send(request)).statusCode).toBe(200);
    q.clock.advance(40);
    const refused = await send(request);
    expect(refused.statusCode).toBe(429);
    expect(refused.headers["retry-after"]).toBe("60");
    expect(refused.json<{ code: string }>().code).toBe("ISSUER_ERR_QUOTA");
    // Another credential has its own quota.
    expect((await send(request, "client-credential-2")).statusCode).toBe(200);
    q.clock.advance(59);
    expect((await send(request)).headers["retry-after"]).toBe("1");
    q.clock.advance(1);
    expect((await send(request)).statusCode).toBe(200);
  });

  it("counts issued tokens by type and refusals by reason, never by credential", async () => {
    const text = (await q.app.inject({ method: "GET", url: "/metrics" })).body;
    expect(text).toMatch(/veil_issuer_tokens_issued_total\{token_type="blind_rsa_2048"[^}]*\} 5/);
    expect(text).toMatch(/veil_issuer_refusals_total\{reason="ISSUER_ERR_QUOTA"[^}]*\} 2/);
    expect(text).toMatch(/veil_issuer_refusals_total\{reason="ISSUER_ERR_REQUEST"[^}]*\} 1/);
    expect(text).not.toContain("client-credential");
    expect(q.lines.join("\n")).not.toContain(CREDENTIAL);
  });
});

describe("quota store (attester.store)", () => {
  it("answers 503 ISSUER_ERR_STORE_UNAVAILABLE, not a token, when the sqlite store cannot be used", async () => {
    const stmp = tempDir();
    mkdirSync(join(stmp.dir, "not-a-db"));
    const s = await makeIssuer(stmp.dir, { attester: { credentials: [CREDENTIAL], store: `sqlite:${join(stmp.dir, "not-a-db")}` } });
    try {
      const key = s.keys.published().find((k) => k.notBefore <= s.clock.sec)!;
      const request = (await createTokenRequest(challengeFor(2), key.tokenKey)).request;
      const r = await s.app.inject({ method: "POST", url: "/token-request", headers: { "content-type": REQ_TYPE, authorization: `Bearer ${CREDENTIAL}` }, payload: Buffer.from(request) });
      expect(r.statusCode).toBe(503);
      expect(r.json<{ code: string }>().code).toBe("ISSUER_ERR_STORE_UNAVAILABLE");
      expect(r.body).not.toContain("not-a-db");
    } finally {
      await s.app.close();
      stmp.remove();
    }
  });

  it("keeps a credential's used quota across an issuer restart with sqlite:PATH", async () => {
    const stmp = tempDir();
    const raw = { attester: { credentials: [CREDENTIAL], tokensPerWindow: 2, store: `sqlite:${join(stmp.dir, "attester.db")}` } };
    const clock = new TestClock();
    try {
      const send = async (f: IssuerFixture): Promise<number> => {
        const key = f.keys.published().find((k) => k.notBefore <= f.clock.sec)!;
        const request = (await createTokenRequest(challengeFor(2), key.tokenKey)).request;
        return (await f.app.inject({ method: "POST", url: "/token-request", headers: { "content-type": REQ_TYPE, authorization: `Bearer ${CREDENTIAL}` }, payload: Buffer.from(request) })).statusCode;
      };
      const first = await makeIssuer(stmp.dir, raw, clock);
      expect([await send(first), await send(first)]).toEqual([200, 200]);
      await first.app.close();
      const second = await makeIssuer(stmp.dir, raw, clock);
      expect(await send(second)).toBe(429);
      await second.app.close();
    } finally {
      stmp.remove();
    }
  });
});

describe("rotation through the API (injected clock)", () => {
  it("moves the directory on, refuses requests for an expired key, and sizes max-age to the schedule", async () => {
    const rtmp = tempDir();
    const clock = new TestClock();
    const r = await makeIssuer(rtmp.dir, { keyLifetimeSec: 600 }, clock);
    try {
      const get = (): Promise<LightMyRequestResponse> => r.app.inject({ method: "GET", url: DIRECTORY });
      const first = await get();
      expect(first.headers["cache-control"]).toBe("public, max-age=300");
      const oldKey = fromBase64Url(first.json<Directory>()["token-keys"][1]!["token-key"])!;
      const oldRequest = (await createTokenRequest(challengeFor(2), oldKey)).request;

      clock.advance(250);
      expect((await get()).headers["cache-control"]).toBe("public, max-age=50");
      clock.advance(50);
      const second = (await get()).json<Directory>();
      expect(second["token-keys"].map((k) => k["not-before"] - clock.sec)).toEqual([300, 0, -300]);
      expect((await r.app.inject({ method: "POST", url: "/token-request", headers: { "content-type": REQ_TYPE, authorization: `Bearer ${CREDENTIAL}` }, payload: Buffer.from(oldRequest) })).statusCode).toBe(200);

      clock.advance(300); // the first key's lifetime ends
      const third = (await get()).json<Directory>();
      expect(third["token-keys"].map((k) => k["token-key"])).not.toContain(toBase64Url(oldKey));
      const late = await r.app.inject({ method: "POST", url: "/token-request", headers: { "content-type": REQ_TYPE, authorization: `Bearer ${CREDENTIAL}` }, payload: Buffer.from(oldRequest) });
      expect(late.statusCode).toBe(422);
      expect(late.json<{ code: string }>().code).toBe("ISSUER_ERR_KEY_UNKNOWN");
    } finally {
      await r.app.close();
      rtmp.remove();
    }
  });
});

describe("over real HTTP", () => {
  let running: StartedIssuer;
  let htmp: ReturnType<typeof tempDir>;
  const { stream, lines } = captureLines();
  beforeAll(async () => {
    htmp = tempDir();
    running = await startIssuer(issuerConfig(htmp.dir, { tokenTypes: [2, 1] }), {
      handleSignals: false,
      log: createLogger("issuer", { destination: stream }),
      generateRsaKey: rsaKeyPool(),
    });
  });
  afterAll(async () => {
    await running.stop();
    htmp.remove();
  });
  afterEach(() => {
    expect(lines.join("\n")).not.toContain(CREDENTIAL);
  });

  it.each([2, 1])("the stock client gets a type %i token from the directory's key and verifies it", async (tokenType) => {
    const d = (await (await fetch(`${running.url}${DIRECTORY}`)).json()) as Directory;
    const now = Math.floor(Date.now() / 1000);
    const entry = d["token-keys"].find((k) => k["token-type"] === tokenType && k["not-before"] <= now)!;
    const tokenKey = fromBase64Url(entry["token-key"])!;
    const client = tokenType === 2 ? new publicVerif.Client(publicVerif.BlindRSAMode.PSS) : new privateVerif.Client();
    const req = await client.createTokenRequest(PpTokenChallenge.deserialize(challengeFor(tokenType)), tokenKey);
    const res = await fetch(new URL(d["issuer-request-uri"], running.url), {
      method: "POST",
      headers: { "content-type": REQ_TYPE, authorization: `Bearer ${CREDENTIAL}` },
      body: Buffer.from(req.serialize()),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/private-token-response");
    const bytes = new Uint8Array(await res.arrayBuffer());
    const token = tokenType === 2
      ? await (client as publicVerif.Client).finalize((client as publicVerif.Client).deserializeTokenResponse(bytes))
      : await (client as privateVerif.Client).finalize((client as privateVerif.Client).deserializeTokenResponse(bytes));
    const decoded = decodeToken(token.serialize());
    const key = tokenType === TOKEN_TYPE.BLIND_RSA_2048
      ? importBlindRsaTokenKey(tokenKey)
      : importVoprfPrivateKey(running.keys.published().find((k) => toHex(k.tokenKey) === toHex(tokenKey))!.privateKey.reveal());
    expect(verifyToken(decoded, key)).toBe(true);
    expect(toHex(decoded.challengeDigest)).toBe(createHash("sha256").update(challengeFor(tokenType)).digest("hex"));
  });
});

describe("over HTTPS (listen.tls)", () => {
  it("serves the directory and issues with a certificate from the config", async () => {
    const ttmp = tempDir();
    const cert = join(ttmp.dir, "cert.pem");
    const key = join(ttmp.dir, "key.pem");
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
      "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert,
    ], { stdio: "ignore" });
    const { stream } = captureLines();
    const running = await startIssuer(issuerConfig(ttmp.dir, { listen: { host: "127.0.0.1", port: 0, tls: { cert, key } } }), {
      handleSignals: false,
      log: createLogger("issuer", { destination: stream }),
      generateRsaKey: rsaKeyPool(),
    });
    const dispatcher = new Agent({ connect: { ca: readFileSync(cert) } });
    try {
      expect(running.url.startsWith("https://")).toBe(true);
      const d = (await (await undiciFetch(`${running.url}${DIRECTORY}`, { dispatcher })).json()) as Directory;
      const now = Math.floor(Date.now() / 1000);
      const tokenKey = fromBase64Url(d["token-keys"].find((k) => k["not-before"] <= now)!["token-key"])!;
      const pending = await createTokenRequest(challengeFor(2), tokenKey);
      const res = await undiciFetch(`${running.url}/token-request`, {
        dispatcher,
        method: "POST",
        headers: { "content-type": REQ_TYPE, authorization: `Bearer ${CREDENTIAL}` },
        body: Buffer.from(pending.request),
      });
      expect(res.status).toBe(200);
      const token = await pending.finalize(new Uint8Array(await res.arrayBuffer()));
      expect(verifyToken(decodeToken(token), importBlindRsaTokenKey(tokenKey))).toBe(true);
    } finally {
      await dispatcher.close();
      await running.stop();
      ttmp.remove();
    }
  });
});
