import { describe, expect, it } from "vitest";
import { DEFAULTS, parseGatewayConfig } from "../../../gateway/config.js";

const ISSUE_EXAMPLE = {
  listen: { host: "127.0.0.1", port: 8081 },
  keys: "data/gateway-keys.json",
  targets: { "https://leader.example": "http://127.0.0.1:8083", "https://helper.example": "http://127.0.0.1:8084" },
  policy: "dap",
  tokens: {
    required: true,
    issuers: [{ name: "issuer.example", directory: "http://127.0.0.1:8082/.well-known/private-token-issuer-directory", keyLifetimeSec: 604800 }],
    store: "sqlite:data/nonces.db",
  },
};

function fails(raw: unknown, hint: RegExp): void {
  expect(() => parseGatewayConfig(raw)).toThrow(expect.objectContaining({ code: "CFG_ERR_INVALID", message: expect.stringMatching(hint) as string }) as Error);
}

describe("gateway configuration", () => {
  it("accepts the issue's example exactly, with explicit limits defaulted", () => {
    const c = parseGatewayConfig(ISSUE_EXAMPLE);
    expect(c.targets["https://helper.example"]).toBe("http://127.0.0.1:8084");
    expect(c.tokens.issuers[0]!.keyLifetimeSec).toBe(604800);
    expect(c.limits.maxRequestBytes).toBe(DEFAULTS.maxRequestBytes);
    expect(c.upstream).toMatchObject({ connectTimeoutMs: 5000, headersTimeoutMs: 15000, bodyTimeoutMs: 15000, maxResponseBytes: DEFAULTS.maxResponseBytes });
    expect(c.retiredKeyGraceSec).toBe(86400);
    expect(Object.isFrozen(c.upstream)).toBe(true);
  });

  it("accepts targets with a path prefix and listen.tls", () => {
    const c = parseGatewayConfig({ ...ISSUE_EXAMPLE, targets: { "https://leader.example/dap/": "https://10.0.0.1/api/" }, listen: { port: 0, tls: { cert: "c.pem", key: "k.pem" } } });
    expect(c.listen.tls).toEqual({ cert: "c.pem", key: "k.pem" });
  });

  it("accepts a target as a URL (DAP-09) or as { upstream, dap }, one of each in one gateway", () => {
    const c = parseGatewayConfig({
      ...ISSUE_EXAMPLE,
      targets: { "https://leader.example": "http://127.0.0.1:8083", "https://leader18.example": { upstream: "http://10.0.0.5:8080/", dap: "18" }, "https://x.example": { upstream: "http://10.0.0.6/" } },
    });
    expect(c.targets["https://leader.example"]).toBe("http://127.0.0.1:8083");
    expect(c.targets["https://leader18.example"]).toEqual({ upstream: "http://10.0.0.5:8080/", dap: "18" });
    expect(c.targets["https://x.example"]).toEqual({ upstream: "http://10.0.0.6/", dap: "09" });
    expect(c.tokens.maxReportsPerToken).toBe(1);
    expect(parseGatewayConfig({ ...ISSUE_EXAMPLE, tokens: { ...ISSUE_EXAMPLE.tokens, maxReportsPerToken: 2 } }).tokens.maxReportsPerToken).toBe(2);
  });

  it("refuses a target object without an upstream, with another draft, or with unknown fields; and maxReportsPerToken 0", () => {
    fails({ ...ISSUE_EXAMPLE, targets: { "https://l.example": { dap: "18" } } }, /targets\."https:\/\/l\.example"\.upstream: is required/);
    fails({ ...ISSUE_EXAMPLE, targets: { "https://l.example": { upstream: "http://x/", dap: "17" } } }, /dap: expected one of "09", "18"/);
    fails({ ...ISSUE_EXAMPLE, targets: { "https://l.example": { upstream: "http://x/", dap: 18 } } }, /dap: expected "09" \| "18", got 18/);
    fails({ ...ISSUE_EXAMPLE, targets: { "https://l.example": { upstrem: "http://x/" } } }, /upstrem: unknown field \(did you mean "upstream"\?\)/);
    fails({ ...ISSUE_EXAMPLE, targets: { "https://l.example": { upstream: "ftp://x" } } }, /upstream: expected an http\(s\) base URL/);
    fails({ ...ISSUE_EXAMPLE, targets: { "https://l.example": 18 } }, /expected an http\(s\) base URL or an object/);
    fails({ ...ISSUE_EXAMPLE, tokens: { ...ISSUE_EXAMPLE.tokens, maxReportsPerToken: 0 } }, /maxReportsPerToken: expected an integer >= 1/);
  });

  it("rejects unknown fields with a hint, bad values naming the field", () => {
    fails({ ...ISSUE_EXAMPLE, polcy: "dap" }, /polcy: unknown field \(did you mean "policy"\?\)/);
    fails({ ...ISSUE_EXAMPLE, policy: "open" }, /policy: expected one of "dap", "targets-only"/);
    fails({ ...ISSUE_EXAMPLE, targets: { "leader.example": "http://x" } }, /targets/);
    fails({ ...ISSUE_EXAMPLE, targets: { "https://leader.example": "ftp://x" } }, /targets/);
    fails({ ...ISSUE_EXAMPLE, tokens: { ...ISSUE_EXAMPLE.tokens, store: "mongodb://x" } }, /tokens.store/);
    fails({ ...ISSUE_EXAMPLE, tokens: { ...ISSUE_EXAMPLE.tokens, issuers: [{ name: "i", directory: "not a url" }] } }, /tokens.issuers\[0\].directory/);
    fails({ ...ISSUE_EXAMPLE, tokens: { required: true } }, /tokens.issuers: at least one issuer/);
    fails({ ...ISSUE_EXAMPLE, upstream: { connectTimeoutMs: 0 } }, /upstream.connectTimeoutMs/);
    fails({ ...ISSUE_EXAMPLE, keysMaxAgeSec: 3600, retiredKeyGraceSec: 3600 }, /retiredKeyGraceSec: expected at least twice/);
  });

  it("fails closed: tokens are required unless the config says otherwise", () => {
    fails({ targets: {} }, /tokens.issuers: at least one issuer is needed when tokens.required is true/);
    expect(parseGatewayConfig({ tokens: { required: false } }).tokens.required).toBe(false);
  });

  it("takes VEIL_GATEWAY_* environment overrides", () => {
    const c = parseGatewayConfig(ISSUE_EXAMPLE, { VEIL_GATEWAY_LISTEN_PORT: "9999", VEIL_GATEWAY_UPSTREAM_HEADERS_TIMEOUT_MS: "1234", VEIL_GATEWAY_TOKENS_REQUIRED: "false" });
    expect([c.listen.port, c.upstream.headersTimeoutMs, c.tokens.required]).toEqual([9999, 1234, false]);
  });
});
