import { describe, expect, it } from "vitest";
import { ProtocolError } from "../../../core/errors.js";
import { redactConfig } from "../../../server/config.js";
import { DEFAULTS, RELAY_SCHEMA, parseRelayConfig } from "../../../relay/config.js";

const ISSUE_SHAPE = {
  listen: { host: "127.0.0.1", port: 8080 },
  routes: [{ path: "/leader-gateway", gateway: "http://127.0.0.1:8081/gateway", keys: "http://127.0.0.1:8081/ohttp-keys" }],
};

function message(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ProtocolError);
    expect((e as ProtocolError).code).toBe("CFG_ERR_INVALID");
    return (e as Error).message;
  }
  throw new Error("expected CFG_ERR_INVALID");
}

describe("relay config", () => {
  it("accepts the issue's JSON shape and fills in every default", () => {
    const c = parseRelayConfig(ISSUE_SHAPE);
    expect(c.listen).toEqual({ host: "127.0.0.1", port: 8080 });
    expect(c.routes).toEqual(ISSUE_SHAPE.routes);
    expect(c.rateLimit).toMatchObject({ perClientPerWindow: DEFAULTS.perClientPerWindow, windowMs: DEFAULTS.windowMs, store: "memory" });
    expect(c.limits.maxRequestBytes).toBe(DEFAULTS.maxRequestBytes);
    expect(c.timeouts).toEqual({
      connectMs: DEFAULTS.connectMs,
      headersMs: DEFAULTS.headersMs,
      bodyMs: DEFAULTS.bodyMs,
      keepAliveMs: DEFAULTS.keepAliveMs,
      keysFetchMs: DEFAULTS.keysFetchMs,
    });
    expect(c.fastPath).toBe(true);
    expect(Object.isFrozen(c.routes[0])).toBe(true);
  });

  it("accepts TLS, mTLS, an auth header and a Redis store", () => {
    const c = parseRelayConfig({
      listen: { tls: { cert: "relay.pem", key: "relay.key" } },
      routes: [
        {
          path: "/gw",
          gateway: "https://gateway.example/gateway",
          keys: "https://gateway.example/ohttp-keys",
          ca: "ca.pem",
          clientCert: "client.pem",
          clientKey: "client.key",
          authHeader: { name: "authorization", value: "Bearer s3cret" },
        },
      ],
      rateLimit: { store: "redis://127.0.0.1:6379/0", keySecret: "shared" },
    });
    expect(c.routes[0]!.authHeader).toEqual({ name: "authorization", value: "Bearer s3cret" });
    expect(c.rateLimit.store).toBe("redis://127.0.0.1:6379/0");
  });

  it("requires at least one route", () => {
    expect(message(() => parseRelayConfig({ listen: {} }))).toContain("routes");
    expect(message(() => parseRelayConfig({ routes: [] }))).toContain("at least 1");
  });

  it("names unknown fields with a hint", () => {
    expect(message(() => parseRelayConfig({ ...ISSUE_SHAPE, rateLimits: {} }))).toContain('did you mean "rateLimit"');
    expect(message(() => parseRelayConfig({ routes: [{ ...ISSUE_SHAPE.routes[0], gatway: "x" }] }))).toContain("routes[0].gatway");
  });

  it.each([
    ["a path without a slash", { path: "gw", gateway: "http://g/x" }, "routes[0].path"],
    ["a path with a query", { path: "/gw?x", gateway: "http://g/x" }, "routes[0].path"],
    ["a trailing slash", { path: "/gw/", gateway: "http://g/x" }, "routes[0].path"],
    ["a reserved path", { path: "/metrics", gateway: "http://g/x" }, "reserved"],
    ["a path ending in /ohttp-keys", { path: "/gw/ohttp-keys", gateway: "http://g/x" }, "ohttp-keys"],
    ["a non-http gateway", { path: "/gw", gateway: "ftp://g/x" }, "routes[0].gateway"],
    ["credentials in the gateway URL", { path: "/gw", gateway: "http://u:p@g/x" }, "routes[0].gateway"],
    ["a CA for an http gateway", { path: "/gw", gateway: "http://g/x", ca: "ca.pem" }, "https"],
    ["a client certificate without its key", { path: "/gw", gateway: "https://g/x", clientCert: "c.pem" }, "go together"],
    ["an auth header without a value", { path: "/gw", gateway: "http://g/x", authHeader: { name: "x-auth" } }, "authHeader.value: is required"],
    ["an auth header the relay writes itself", { path: "/gw", gateway: "http://g/x", authHeader: { name: "Content-Length", value: "1" } }, "written by the relay"],
    ["an auth header value with a newline", { path: "/gw", gateway: "http://g/x", authHeader: { name: "x-a", value: "a\r\nX-Injected: 1" } }, "authHeader.value"],
  ])("refuses %s", (_what, route, needle) => {
    expect(message(() => parseRelayConfig({ routes: [route] }))).toContain(needle);
  });

  it("refuses a path configured twice", () => {
    expect(message(() => parseRelayConfig({ routes: [{ path: "/a", gateway: "http://g/" }, { path: "/a", gateway: "http://h/" }] }))).toContain("twice");
  });

  it("refuses an unknown rate-limit store", () => {
    expect(message(() => parseRelayConfig({ ...ISSUE_SHAPE, rateLimit: { store: "memcached://x" } }))).toContain("rateLimit.store");
  });

  it("takes VEIL_RELAY_* environment overrides, routes as JSON", () => {
    const c = parseRelayConfig(ISSUE_SHAPE, {
      VEIL_RELAY_LISTEN_PORT: "9090",
      VEIL_RELAY_RATE_LIMIT_PER_CLIENT_PER_WINDOW: "5",
      VEIL_RELAY_ROUTES: JSON.stringify([{ path: "/other", gateway: "http://127.0.0.1:1/g" }]),
    });
    expect(c.listen.port).toBe(9090);
    expect(c.rateLimit.perClientPerWindow).toBe(5);
    expect(c.routes.map((r) => r.path)).toEqual(["/other"]);
  });

  it("redacts the auth header value and the Redis key secret in --print-config", () => {
    const c = parseRelayConfig({
      routes: [{ path: "/gw", gateway: "http://g/x", authHeader: { name: "x-auth", value: "operator-secret" } }],
      rateLimit: { store: "redis://r:6379", keySecret: "hash-secret" },
    });
    const printed = JSON.stringify(redactConfig(RELAY_SCHEMA, c));
    expect(printed).not.toContain("operator-secret");
    expect(printed).not.toContain("hash-secret");
    expect(printed).toContain("x-auth");
  });
});
