// attester.kind "jwt": JWTs of an identity provider whose JWK Set is served over loopback HTTP,
// signed for real with ES256, RS256 and EdDSA keys; every refusal case answers 401 with
// `WWW-Authenticate: Bearer error="invalid_token"` and logs the reason, never the token.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { LightMyRequestResponse } from "fastify";
import { SignJWT, UnsecuredJWT, exportJWK, exportSPKI, generateKeyPair, type CryptoKey, type JWK } from "jose";
import { createHmac } from "node:crypto";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createTokenRequest, encodeTokenChallenge } from "../../core/privacypass/index.js";
import { JWT_DEFAULTS } from "../../issuer/jwt.js";
import { makeIssuer, tempDir, type IssuerFixture } from "../helpers/issuer.js";

const REQ_TYPE = "application/private-token-request";
const ISS = "https://idp.example";
const AUD = "veil-issuer";

interface SigningKey {
  alg: string;
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

async function signingKey(alg: "ES256" | "RS256" | "EdDSA", kid: string): Promise<SigningKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg, alg === "EdDSA" ? { crv: "Ed25519" } : {});
  return { alg, kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: "sig" } };
}

/** The identity provider: a JWK Set on loopback HTTP with caching headers, counting its fetches. */
class IdentityProvider {
  keys: JWK[] = [];
  maxAgeSec = 300;
  fetches = 0;
  status = 200;
  body: string | undefined;
  server!: Server;
  url = "";

  async start(): Promise<void> {
    this.server = createServer((_req, res) => {
      this.fetches++;
      res.writeHead(this.status, { "content-type": "application/jwk-set+json", "cache-control": `max-age=${this.maxAgeSec}` });
      res.end(this.body ?? JSON.stringify({ keys: this.keys }));
    });
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/jwks.json`;
  }

  stop(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

let idp: IdentityProvider;
let es: SigningKey;
let rs: SigningKey;
let ed: SigningKey;
let tmp: ReturnType<typeof tempDir>;
let fx: IssuerFixture;
let request: Uint8Array;

async function jwt(key: SigningKey, claims: Record<string, unknown> = {}, edit?: (j: SignJWT) => SignJWT): Promise<string> {
  const nowSec = Math.floor(fx.clock.ms / 1000);
  let j = new SignJWT({ sub: "user-1", ...claims })
    .setProtectedHeader({ alg: key.alg, kid: key.kid })
    .setIssuer(ISS)
    .setAudience(AUD)
    .setIssuedAt(nowSec)
    .setExpirationTime(nowSec + 600);
  if (edit !== undefined) j = edit(j);
  return j.sign(key.privateKey);
}

function post(token: string | undefined): Promise<LightMyRequestResponse> {
  return fx.app.inject({
    method: "POST",
    url: "/token-request",
    headers: { "content-type": REQ_TYPE, ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
    payload: Buffer.from(request),
  });
}

beforeAll(async () => {
  idp = new IdentityProvider();
  await idp.start();
  [es, rs, ed] = await Promise.all([signingKey("ES256", "es-1"), signingKey("RS256", "rs-1"), signingKey("EdDSA", "ed-1")]);
});

afterAll(async () => {
  await idp.stop();
});

beforeEach(async () => {
  idp.keys = [es.jwk, rs.jwk, ed.jwk];
  idp.maxAgeSec = 300;
  idp.status = 200;
  idp.body = undefined;
  idp.fetches = 0;
  tmp?.remove();
  tmp = tempDir();
  fx = await makeIssuer(tmp.dir, {
    attester: { kind: "jwt", jwks: idp.url, issuer: ISS, audience: AUD, tokensPerWindow: 3, windowSec: 100 },
  });
  const key = fx.keys.published().find((k) => k.notBefore <= fx.clock.sec)!;
  const challenge = encodeTokenChallenge({ tokenType: 2, issuerName: "issuer.example", redemptionContext: new Uint8Array(0), originInfo: [] });
  request = (await createTokenRequest(challenge, key.tokenKey)).request;
  return async () => {
    await fx.app.close();
  };
});

function expectInvalidToken(res: LightMyRequestResponse, reason: RegExp, token?: string): void {
  expect(res.statusCode).toBe(401);
  expect(res.headers["www-authenticate"]).toBe('Bearer error="invalid_token"');
  expect(res.json<{ code: string }>().code).toBe("ISSUER_ERR_UNAUTHORIZED");
  const logged = fx.lines.filter((l) => l.includes("attester refused the credential"));
  expect(logged.at(-1)).toMatch(reason);
  if (token !== undefined) {
    for (const part of token.split(".")) if (part.length > 8) expect(fx.lines.join("\n")).not.toContain(part);
  }
}

describe('attester.kind "jwt"', () => {
  it("issues for JWTs signed with ES256, RS256 and EdDSA keys of the JWK Set, with one quota per sub", async () => {
    for (const key of [es, rs, ed]) expect((await post(await jwt(key))).statusCode).toBe(200);
    // user-1 has had its 3 tokens, whatever key signed the JWT.
    const refused = await post(await jwt(es));
    expect(refused.statusCode).toBe(429);
    expect(refused.headers["retry-after"]).toBe("100");
    expect((await post(await jwt(rs, { sub: "user-2" }))).statusCode).toBe(200);
    // One fetch of the JWK Set served them all (max-age 300).
    expect(idp.fetches).toBe(1);
    expect(fx.lines.join("\n")).not.toContain("user-1");
  });

  it("counts the quota by the configured quotaClaim", async () => {
    await fx.app.close();
    fx = await makeIssuer(tmp.dir, {
      attester: { kind: "jwt", jwks: idp.url, issuer: ISS, audience: AUD, quotaClaim: "device", tokensPerWindow: 1, windowSec: 100 },
    });
    expect((await post(await jwt(es, { sub: "a", device: "d1" }))).statusCode).toBe(200);
    expect((await post(await jwt(es, { sub: "b", device: "d1" }))).statusCode).toBe(429);
    expect((await post(await jwt(es, { sub: "a", device: "d2" }))).statusCode).toBe(200);
    const missing = await jwt(es, { sub: "a" });
    expectInvalidToken(await post(missing), /claim \\"device\\" missing/, missing);
  });

  it("accepts exp and nbf within the clock skew, and refuses them beyond it", async () => {
    const skew = JWT_DEFAULTS.clockSkewSec;
    const now = Math.floor(fx.clock.ms / 1000);
    expect((await post(await jwt(es, {}, (j) => j.setExpirationTime(now - skew + 5)))).statusCode).toBe(200);
    expect((await post(await jwt(es, {}, (j) => j.setNotBefore(now + skew - 5)))).statusCode).toBe(200);
    const expired = await jwt(es, {}, (j) => j.setExpirationTime(now - skew - 5));
    expectInvalidToken(await post(expired), /JWT expired/, expired);
    const early = await jwt(es, {}, (j) => j.setNotBefore(now + skew + 5));
    expectInvalidToken(await post(early), /not yet valid/, early);
  });

  it("refuses another issuer, another audience, a JWT without exp", async () => {
    const iss = await jwt(es, {}, (j) => j.setIssuer("https://evil.example"));
    expectInvalidToken(await post(iss), /claim \\"iss\\" not accepted/, iss);
    const aud = await jwt(es, {}, (j) => j.setAudience("someone-else"));
    expectInvalidToken(await post(aud), /claim \\"aud\\" not accepted/, aud);
    const noExp = await new SignJWT({ sub: "user-1" }).setProtectedHeader({ alg: "ES256", kid: "es-1" }).setIssuer(ISS).setAudience(AUD).sign(es.privateKey);
    expectInvalidToken(await post(noExp), /claim \\"exp\\" missing/, noExp);
  });

  it("refuses a bad signature: a key not in the set under a known kid, and a tampered payload", async () => {
    const impostor = await signingKey("ES256", "es-1");
    const forged = await jwt(impostor);
    expectInvalidToken(await post(forged), /signature does not verify/, forged);
    const good = (await jwt(es)).split(".");
    const tampered = [good[0], Buffer.from(JSON.stringify({ sub: "user-9", iss: ISS, aud: AUD, exp: 9e9 })).toString("base64url"), good[2]].join(".");
    expectInvalidToken(await post(tampered), /signature does not verify/);
  });

  it('refuses alg "none" and algorithms outside the configured list', async () => {
    const now = Math.floor(fx.clock.ms / 1000);
    const unsecured = new UnsecuredJWT({ sub: "user-1" }).setIssuer(ISS).setAudience(AUD).setExpirationTime(now + 600).encode();
    // An unsecured JWT ends with an empty signature: not even a b64token (RFC 6750) once trimmed of its dot.
    expectInvalidToken(await post(unsecured + "AA"), /algorithm not accepted|malformed/);
    await fx.app.close();
    fx = await makeIssuer(tmp.dir, { attester: { kind: "jwt", jwks: idp.url, issuer: ISS, audience: AUD, algorithms: ["ES256"] } });
    const rsa = await jwt(rs);
    expectInvalidToken(await post(rsa), /algorithm not accepted/, rsa);
    expect((await post(await jwt(es))).statusCode).toBe(200);
  });

  it("refuses key confusion: an HS256 JWT whose HMAC key is the provider's RSA public key", async () => {
    const { publicKey } = await generateKeyPair("RS256", { extractable: true });
    const pem = await exportSPKI(publicKey);
    idp.keys = [es.jwk, { ...(await exportJWK(publicKey)), kid: "rs-conf", alg: "RS256" }];
    const header = Buffer.from(JSON.stringify({ alg: "HS256", kid: "rs-conf", typ: "JWT" })).toString("base64url");
    const now = Math.floor(fx.clock.ms / 1000);
    const payload = Buffer.from(JSON.stringify({ sub: "user-1", iss: ISS, aud: AUD, exp: now + 600 })).toString("base64url");
    const mac = createHmac("sha256", pem).update(`${header}.${payload}`).digest("base64url");
    const confused = `${header}.${payload}.${mac}`;
    expectInvalidToken(await post(confused), /algorithm not accepted/, confused);
    // An "oct" key in the set is no help either.
    idp.keys = [{ kty: "oct", k: Buffer.from(pem).toString("base64url"), kid: "rs-conf" }];
    expectInvalidToken(await post(confused), /algorithm not accepted/, confused);
  });

  it("refuses a missing or malformed credential", async () => {
    const none = await post(undefined);
    expect(none.statusCode).toBe(401);
    expect(none.headers["www-authenticate"]).toBe("Bearer");
    expectInvalidToken(await post("not-a-jwt"), /malformed/);
    expectInvalidToken(await post("a.b.c"), /malformed/);
    expectInvalidToken(await post("x".repeat(JWT_DEFAULTS.maxJwtBytes + 1)), /too long/);
  });

  it("refetches the JWK Set for an unknown kid (rate-limited), honours max-age, and keeps the last good set when the provider fails", async () => {
    expect((await post(await jwt(es))).statusCode).toBe(200);
    expect(idp.fetches).toBe(1);
    // The provider adds a key: a JWT naming it makes the issuer refetch once.
    const es2 = await signingKey("ES256", "es-2");
    idp.keys = [es.jwk, es2.jwk];
    expect((await post(await jwt(es2))).statusCode).toBe(200);
    expect(idp.fetches).toBe(2);
    // Made-up kids do not make it hammer the provider.
    const ghost = await signingKey("ES256", "ghost");
    for (let i = 0; i < 3; i++) expectInvalidToken(await post(await jwt(ghost, { sub: `g${i}` })), /names no key/);
    expect(idp.fetches).toBe(2);
    // Within max-age: no fetch. After it: the provider is down or answers garbage; the last good set stays.
    fx.clock.advance(299);
    expect((await post(await jwt(es, { sub: "user-3" }))).statusCode).toBe(200);
    expect(idp.fetches).toBe(2);
    idp.status = 500;
    fx.clock.advance(2);
    expect((await post(await jwt(es2, { sub: "user-4" }))).statusCode).toBe(200);
    idp.status = 200;
    idp.body = '{"keys": "nope"}';
    fx.clock.advance(120);
    expect((await post(await jwt(es2, { sub: "user-5" }))).statusCode).toBe(200);
    expect(idp.fetches).toBeGreaterThanOrEqual(3);
  });

  it("answers 503 ISSUER_ERR_JWKS_UNAVAILABLE, not 401, while the JWK Set was never fetched; /readyz says so", async () => {
    await fx.app.close();
    idp.status = 503;
    fx = await makeIssuer(tmp.dir, { attester: { kind: "jwt", jwks: idp.url, issuer: ISS, audience: AUD } });
    const res = await post(await jwt(es));
    expect(res.statusCode).toBe(503);
    expect(res.json<{ code: string }>().code).toBe("ISSUER_ERR_JWKS_UNAVAILABLE");
    expect((await fx.app.inject({ method: "GET", url: "/readyz" })).statusCode).toBe(503);
    idp.status = 200;
    fx.clock.advance(5);
    expect((await post(await jwt(es))).statusCode).toBe(200);
    expect((await fx.app.inject({ method: "GET", url: "/readyz" })).statusCode).toBe(200);
  });
});
