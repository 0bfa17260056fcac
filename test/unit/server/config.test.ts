import { describe, expect, expectTypeOf, it } from "vitest";
import { describeSchema, listenSchema, parseConfig, redactConfig, type ConfigOf, type Schema } from "../../../server/config.js";

const schema = {
  listen: listenSchema(8081),
  policy: { kind: "string", default: "dap", oneOf: ["dap", "targets-only"], doc: "Which inner requests pass." },
  targets: { kind: "map", values: { kind: "string", doc: "Upstream base URL." }, default: {}, doc: "Allowed targets." },
  upstreamTimeoutMs: { kind: "int", default: 10_000, min: 1, doc: "Upstream timeout." },
  attester: {
    kind: "object",
    doc: "Attester.",
    fields: { credentials: { kind: "list", items: { kind: "string", doc: "A credential." }, default: [], secret: true, doc: "Credentials." } },
  },
  note: { kind: "string", optional: true, doc: "An optional field without a default." },
  tls: { kind: "object", optional: true, doc: "An optional section.", fields: { cert: { kind: "string", doc: "Required inside the section." } } },
} as const satisfies Schema;

describe("configuration", () => {
  it("derives the config's type from the schema", () => {
    expectTypeOf<ConfigOf<typeof schema>>().toEqualTypeOf<{
      listen: { host: string; port: number; tls?: { cert?: string; key?: string; ca?: string } };
      policy: "dap" | "targets-only";
      targets: Record<string, string>;
      upstreamTimeoutMs: number;
      attester: { credentials: string[] };
      note?: string;
      tls?: { cert: string };
    }>();
  });

  it("leaves an absent optional section out, and checks a present one in full", () => {
    expect(parseConfig(schema, {}).tls).toBeUndefined();
    expect(parseConfig(schema, { tls: { cert: "c.pem" } }).tls).toEqual({ cert: "c.pem" });
    expect(() => parseConfig(schema, { tls: {} })).toThrow(/tls.cert: is required/);
  });

  it("fills defaults and freezes the result", () => {
    const c = parseConfig(schema, {});
    expect(c.listen).toEqual({ host: "127.0.0.1", port: 8081 });
    expect(c.policy).toBe("dap");
    expect(Object.isFrozen(c.listen)).toBe(true);
  });

  it("rejects unknown fields with a hint", () => {
    expect(() => parseConfig(schema, { listn: {} })).toThrow(/listn: unknown field \(did you mean "listen"\?\)/);
    expect(() => parseConfig(schema, { listen: { prot: 1 } })).toThrow(/listen.prot: unknown field \(did you mean "port"\?\)/);
  });

  it("names the field and the expected value", () => {
    expect(() => parseConfig(schema, { listen: { port: "x" } })).toThrow(/listen.port: expected an integer 0..65535, got "x"/);
    expect(() => parseConfig(schema, { policy: "open" })).toThrow(/policy: expected one of "dap", "targets-only", got "open"/);
    expect(() => parseConfig(schema, { upstreamTimeoutMs: 0 })).toThrow(/upstreamTimeoutMs: expected an integer >= 1/);
  });

  it("applies environment overrides by path", () => {
    const env = { VEIL_GW_LISTEN_PORT: "9000", VEIL_GW_UPSTREAM_TIMEOUT_MS: "5", VEIL_GW_TARGETS: '{"https://a.example":"http://127.0.0.1:1"}' };
    const c = parseConfig(schema, { listen: { port: 1 } }, { env, envPrefix: "VEIL_GW_" });
    expect(c.listen.port).toBe(9000);
    expect(c.upstreamTimeoutMs).toBe(5);
    expect(c.targets).toEqual({ "https://a.example": "http://127.0.0.1:1" });
    expect(() => parseConfig(schema, {}, { env: { VEIL_GW_LISTEN_PORT: "abc" }, envPrefix: "VEIL_GW_" })).toThrow(/VEIL_GW_LISTEN_PORT/);
  });

  it("redacts secrets when printing", () => {
    const c = parseConfig(schema, { attester: { credentials: ["s3cret"] } });
    expect(JSON.stringify(redactConfig(schema, c))).not.toContain("s3cret");
  });

  it("describes every option with its default", () => {
    const rows = describeSchema(schema, "VEIL_GW_");
    expect(rows.find((r) => r.path === "listen.port")).toMatchObject({ default: "8081", env: "VEIL_GW_LISTEN_PORT" });
    expect(rows.map((r) => r.path)).toContain("attester.credentials");
  });
});
