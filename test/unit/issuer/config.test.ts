// The issuer's configuration contract: the documented JSON shape, defaults, validation
// messages and secret redaction.
import { describe, expect, it } from "vitest";
import { isProtocolError } from "../../../core/errors.js";
import { DEFAULTS, ISSUER_SCHEMA, parseIssuerConfig } from "../../../issuer/config.js";
import { redactConfig } from "../../../server/config.js";

const CONTRACT = {
  listen: { host: "127.0.0.1", port: 8082 },
  name: "issuer.example",
  keys: "data/issuer-keys.json",
  tokenTypes: [2],
  keyLifetimeSec: 604800,
  attester: { credentials: ["client-credential-1"], tokensPerWindow: 100, windowSec: 86400 },
};

function messageOf(raw: unknown, env?: Record<string, string>): string {
  try {
    parseIssuerConfig(raw, env);
  } catch (e) {
    if (isProtocolError(e)) return `${e.code}: ${e.message}`;
    throw e;
  }
  return "ok";
}

describe("issuer config", () => {
  it("accepts the issue's example and fills the defaults", () => {
    const c = parseIssuerConfig(CONTRACT);
    expect(c.listen.port).toBe(8082);
    expect(c.tokenTypes).toEqual([2]);
    expect(c.issuerRequestUri).toBe(DEFAULTS.issuerRequestUri);
    expect(c.limits.maxRequestBytes).toBe(DEFAULTS.maxRequestBytes);
    expect(Object.isFrozen(c.attester)).toBe(true);
    expect(parseIssuerConfig({ name: "i", attester: { credentials: ["c"] } }).keyLifetimeSec).toBe(604_800);
  });

  it("keeps the attester's quota in memory unless attester.store names sqlite:PATH or redis://; redis needs a shared key file", () => {
    expect(parseIssuerConfig(CONTRACT).attester.store).toBe("memory");
    expect(parseIssuerConfig({ ...CONTRACT, attester: { ...CONTRACT.attester, store: "sqlite:data/attester.db" } }).attester.store).toBe("sqlite:data/attester.db");
    expect(messageOf({ ...CONTRACT, attester: { ...CONTRACT.attester, store: "redis://x" } })).toMatch(/CFG_ERR_INVALID: attester\.storeKeyFile: is required with a redis store/);
    expect(parseIssuerConfig({ ...CONTRACT, attester: { ...CONTRACT.attester, store: "redis://127.0.0.1:6379", storeKeyFile: "k" } }).attester.store).toBe("redis://127.0.0.1:6379");
    expect(messageOf({ ...CONTRACT, attester: { ...CONTRACT.attester, store: "mysql://x" } })).toMatch(/CFG_ERR_INVALID: attester\.store: .*memory, sqlite:PATH or redis:\/\/HOST:PORT/);
  });

  it("defaults attester.kind to credentials (configs without kind keep working) and checks each kind's fields", () => {
    expect(parseIssuerConfig(CONTRACT).attester.kind).toBe("credentials");
    const jwt = { kind: "jwt", jwks: "https://idp.example/jwks.json", issuer: "https://idp.example", audience: "veil" };
    const c = parseIssuerConfig({ ...CONTRACT, attester: jwt }).attester;
    expect(c.algorithms).toEqual(["ES256", "RS256", "EdDSA"]);
    expect(c.quotaClaim).toBe("sub");
    expect(c.tokensPerWindow).toBe(100);
    expect(parseIssuerConfig({ ...CONTRACT, attester: { ...jwt, jwks: "http://127.0.0.1:9/jwks" } }).attester.jwks).toBe("http://127.0.0.1:9/jwks");
    expect(messageOf({ ...CONTRACT, attester: { ...jwt, jwks: "http://idp.example/jwks.json" } })).toMatch(/attester\.jwks: must be an https URL/);
    expect(messageOf({ ...CONTRACT, attester: { ...jwt, audience: undefined } })).toMatch(/attester\.audience: is required \(kind "jwt"\)/);
    expect(messageOf({ ...CONTRACT, attester: { ...jwt, credentials: ["c"] } })).toMatch(/attester\.credentials: only for kind "credentials"/);
    expect(messageOf({ ...CONTRACT, attester: { ...jwt, algorithms: ["HS256"] } })).toMatch(/attester\.algorithms\[0\]/);
    expect(messageOf({ ...CONTRACT, attester: { ...jwt, algorithms: ["none"] } })).toMatch(/attester\.algorithms\[0\]/);
    expect(messageOf({ ...CONTRACT, attester: { tokensPerWindow: 3 } })).toMatch(/attester\.credentials: is required \(kind "credentials"\)/);
    expect(messageOf({ ...CONTRACT, attester: { ...CONTRACT.attester, issuer: "x" } })).toMatch(/attester\.issuer: only for kind "jwt"/);
  });

  it("names the field and the expectation in errors, with a hint for typos", () => {
    expect(messageOf({ ...CONTRACT, tokenType: [2] })).toMatch(/CFG_ERR_INVALID: tokenType: unknown field \(did you mean "tokenTypes"\?\)/);
    expect(messageOf({ ...CONTRACT, tokenTypes: [3] })).toMatch(/tokenTypes\[0\]/);
    expect(messageOf({ ...CONTRACT, tokenTypes: [] })).toMatch(/at least 1/);
    expect(messageOf({ ...CONTRACT, tokenTypes: [2, 2] })).toMatch(/once/);
    expect(messageOf({ ...CONTRACT, attester: { ...CONTRACT.attester, credentials: [] } })).toMatch(/attester.credentials/);
    expect(messageOf({ ...CONTRACT, attester: { ...CONTRACT.attester, credentials: ["has space"] } })).toMatch(/bearer credential/);
    expect(messageOf({ ...CONTRACT, keyLifetimeSec: 5 })).toMatch(/keyLifetimeSec/);
    expect(messageOf({ ...CONTRACT, name: undefined })).toMatch(/name: is required/);
  });

  it("never echoes a credential in an error", () => {
    expect(messageOf({ ...CONTRACT, attester: { ...CONTRACT.attester, credentials: ["secret value"] } })).not.toContain("secret value");
  });

  it("takes VEIL_ISSUER_* overrides, credentials as JSON", () => {
    const c = parseIssuerConfig(CONTRACT, { VEIL_ISSUER_LISTEN_PORT: "9000", VEIL_ISSUER_ATTESTER_CREDENTIALS: '["from-env"]', VEIL_ISSUER_TOKEN_TYPES: "[1,2]" });
    expect(c.listen.port).toBe(9000);
    expect(c.attester.credentials).toEqual(["from-env"]);
    expect(c.tokenTypes).toEqual([1, 2]);
  });

  it("redacts credentials for --print-config", () => {
    const printed = JSON.stringify(redactConfig(ISSUER_SCHEMA, parseIssuerConfig(CONTRACT)));
    expect(printed).not.toContain("client-credential-1");
    expect(printed).toContain("[redacted]");
  });
});
