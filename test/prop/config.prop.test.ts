// Properties of configuration parsing (server/config.ts parseConfig and each component's schema
// with its cross-field checks): random JSON, valid configurations with random mutations (fields
// removed, replaced, added, wrong types, prototype keys) and random VEIL_* environment overrides
// either give a deep-frozen configuration that parses to itself again, or a CFG_ERR_INVALID naming
// the field; never another error, and never a secret's value in the message.

import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { ProtocolError } from "../../core/errors.js";
import { GATEWAY_SCHEMA, parseGatewayConfig } from "../../gateway/config.js";
import { ISSUER_SCHEMA, parseIssuerConfig } from "../../issuer/config.js";
import { RELAY_SCHEMA, parseRelayConfig } from "../../relay/config.js";
import { describeSchema, parseConfig, readConfigFile, type Schema } from "../../server/config.js";
import { fuzzParams, isDeepFrozen } from "../helpers/fuzz.js";

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const SECRET_CREDENTIAL = "cred-S3cretValue-9f1c";
const SECRET_HEADER = "Bearer relay-S3cretValue-77aa";

const VALID: Record<string, Json> = {
  gateway: {
    listen: { host: "127.0.0.1", port: 0 },
    keys: "/tmp/veil-none/gateway-keys.json",
    targets: {
      "https://leader.example": "http://127.0.0.1:1",
      "https://helper.example/dap/": "http://127.0.0.1:2/x/",
      "https://leader18.example": { upstream: "http://127.0.0.1:4/", dap: "18" },
    },
    policy: "dap",
    tokens: {
      required: true,
      issuers: [{ name: "issuer.example", directory: "http://127.0.0.1:3/.well-known/private-token-issuer-directory", keyLifetimeSec: 3600 }],
      store: "memory",
      originInfo: "authority",
      redemptionContext: "epoch",
      greaseProbability: 0.1,
      maxReportsPerToken: 2,
    },
    upstream: { connectTimeoutMs: 1000, totalTimeoutMs: 5000 },
    inner: { maxFields: 32 },
    limits: { maxRequestBytes: 65536, headersTimeoutMs: 1000 },
  },
  relay: {
    listen: { host: "127.0.0.1", port: 0 },
    routes: [
      { path: "/leader-gateway", gateway: "http://127.0.0.1:1/gateway", keys: "http://127.0.0.1:1/ohttp-keys", authHeader: { name: "authorization", value: SECRET_HEADER } },
      { path: "/helper-gateway", gateway: "https://gw.example/gateway" },
    ],
    rateLimit: { perClientPerWindow: 10, windowMs: 1000, store: "memory" },
    timeouts: { connectMs: 100 },
    keyCache: { minMaxAgeSec: 1, maxMaxAgeSec: 100 },
    fastPath: true,
  },
  issuer: {
    listen: { host: "127.0.0.1", port: 0 },
    name: "issuer.example",
    keys: "/tmp/veil-none/issuer-keys.json",
    tokenTypes: [2, 1],
    keyLifetimeSec: 3600,
    attester: { credentials: [SECRET_CREDENTIAL, "second-credential"], tokensPerWindow: 5, windowSec: 60 },
  },
};

interface Component {
  name: string;
  schema: Schema;
  envPrefix: string;
  parse(raw: unknown, env?: Record<string, string | undefined>): unknown;
  secrets: string[];
}

const COMPONENTS: Component[] = [
  { name: "gateway", schema: GATEWAY_SCHEMA, envPrefix: "VEIL_GATEWAY_", parse: parseGatewayConfig, secrets: [] },
  { name: "relay", schema: RELAY_SCHEMA, envPrefix: "VEIL_RELAY_", parse: parseRelayConfig, secrets: [SECRET_HEADER] },
  { name: "issuer", schema: ISSUER_SCHEMA, envPrefix: "VEIL_ISSUER_", parse: parseIssuerConfig, secrets: [SECRET_CREDENTIAL] },
];

// --- arbitraries ----------------------------------------------------------------------------

/** Keys that have tripped up object handling elsewhere. */
const trickyKey = fc.constantFrom("__proto__", "constructor", "prototype", "toString", "hasOwnProperty", "", " ", "listen.port");
const key = fc.oneof(fc.string({ maxLength: 12 }), trickyKey);
const scalar: fc.Arbitrary<Json> = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.integer(),
  fc.constantFrom(0, -1, 1.5, 65536, 1e300, -0, Number.MAX_SAFE_INTEGER + 2),
  fc.string({ maxLength: 20 }),
  fc.constantFrom("", "memory", "sqlite:/tmp/x", "redis://127.0.0.1:1", "http://[", "https://", "http://a@b/", "http://127.0.0.1:1/x", "/p", "authorization"),
);
const json: fc.Arbitrary<Json> = fc.letrec<{ v: Json }>((tie) => ({
  v: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    scalar,
    fc.array(tie("v"), { maxLength: 4 }),
    fc.dictionary(key, tie("v"), { maxKeys: 4 }),
  ),
})).v;

type Mutation = { at: number; kind: "delete" | "replace" | "add" | "wrap"; key: string; value: Json };
const mutation: fc.Arbitrary<Mutation> = fc.record({
  at: fc.nat(),
  kind: fc.constantFrom("delete", "replace", "add", "wrap"),
  key,
  value: json,
});

/** Every container (object or list) in `v`, with the keys (or indexes) it holds. */
function containers(v: Json, out: (Json[] | { [k: string]: Json })[] = []): (Json[] | { [k: string]: Json })[] {
  if (typeof v === "object" && v !== null) {
    out.push(v);
    for (const inner of Object.values(v)) containers(inner, out);
  }
  return out;
}

/** Applies mutations to a deep copy of `base`. */
function mutate(base: Json, ms: Mutation[]): Json {
  const root = structuredClone(base);
  for (const m of ms) {
    const all = containers(root);
    const c = all[m.at % all.length]!;
    const keys = Object.keys(c);
    const k = keys.length === 0 ? undefined : keys[m.at % keys.length]!;
    const set = (name: string | number, value: Json): void => {
      // defineProperty: a key "__proto__" becomes an own property, as JSON.parse makes it.
      Object.defineProperty(c, name, { value, enumerable: true, writable: true, configurable: true });
    };
    switch (m.kind) {
      case "delete":
        if (k === undefined) break;
        if (Array.isArray(c)) c.splice(Number(k), 1);
        else delete c[k];
        break;
      case "replace":
        if (k !== undefined) set(Array.isArray(c) ? Number(k) : k, m.value);
        break;
      case "add":
        if (Array.isArray(c)) c.push(m.value);
        else set(m.key, m.value);
        break;
      case "wrap":
        if (k !== undefined) set(Array.isArray(c) ? Number(k) : k, [(c as Record<string, Json>)[k]!]);
        break;
    }
  }
  return root;
}

/** Parses; on failure, the error must be CFG_ERR_INVALID and must not echo a secret. */
function checkParse(c: Component, raw: unknown, env?: Record<string, string | undefined>): unknown {
  let config: unknown;
  try {
    config = env === undefined ? c.parse(raw) : c.parse(raw, env);
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw new Error(`${c.name}: threw ${String(e)}`, { cause: e });
    expect(e.code).toBe("CFG_ERR_INVALID");
    expect(e.message.length).toBeGreaterThan(0);
    for (const s of c.secrets) expect(e.message).not.toContain(s);
    return undefined;
  }
  expect(isDeepFrozen(config)).toBe(true);
  // What was accepted is a complete configuration: it parses again to itself.
  expect(c.parse(structuredClone(config))).toEqual(config);
  return config;
}

// --- properties -----------------------------------------------------------------------------

describe.each(COMPONENTS.map((c) => [c.name, c] as const))("%s configuration", (_name, c) => {
  it("accepts the valid sample", () => {
    expect(checkParse(c, VALID[c.name])).toBeDefined();
  });

  it("gives a frozen config or CFG_ERR_INVALID for any JSON value", () => {
    fc.assert(
      fc.property(json, (raw) => {
        checkParse(c, raw);
      }),
      fuzzParams(0xc0f1),
    );
  });

  it("gives a frozen config or CFG_ERR_INVALID for a valid config with random mutations, never echoing a secret", () => {
    fc.assert(
      fc.property(fc.array(mutation, { minLength: 1, maxLength: 4 }), (ms) => {
        checkParse(c, mutate(VALID[c.name]!, ms));
      }),
      fuzzParams(0xc0f2),
    );
  });

  it("gives a frozen config or CFG_ERR_INVALID for random VEIL_* environment overrides", () => {
    const names = describeSchema(c.schema, c.envPrefix)
      .map((r) => r.env)
      .filter((n): n is string => n !== undefined);
    const envValue = fc.oneof(fc.string({ maxLength: 30 }), json.map((v) => JSON.stringify(v)), fc.constantFrom("", " ", "1", "true", "0x10", "1e3", "NaN", "[]", "{}", "null"));
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom(...names), envValue, { maxKeys: 4 }), fc.boolean(), (env, valid) => {
        checkParse(c, valid ? VALID[c.name] : {}, env);
      }),
      fuzzParams(0xc0f3),
    );
  });
});

describe("parseConfig with every kind of field", () => {
  const schema: Schema = {
    s: { kind: "string", default: "a", pattern: /^[a-z]+$/, doc: "." },
    o: { kind: "string", optional: true, oneOf: ["x", "y"], doc: "." },
    i: { kind: "int", default: 1, min: 0, max: 10, doc: "." },
    n: { kind: "number", optional: true, min: -1, doc: "." },
    b: { kind: "boolean", default: false, doc: "." },
    obj: { kind: "object", doc: ".", fields: { inner: { kind: "int", default: 2, doc: "." }, secret: { kind: "string", optional: true, secret: true, pattern: /^ok$/, doc: "." } } },
    m: { kind: "map", default: {}, keyPattern: /^[a-z]+$/, values: { kind: "object", doc: ".", fields: { v: { kind: "int", doc: "." } } }, doc: "." },
    l: { kind: "list", default: [], minItems: 0, items: { kind: "string", doc: "." }, doc: "." },
  };

  it("returns a frozen object or throws CFG_ERR_INVALID, for any JSON and environment", () => {
    fc.assert(
      fc.property(json, fc.dictionary(fc.constantFrom("VEIL_T_S", "VEIL_T_I", "VEIL_T_N", "VEIL_T_B", "VEIL_T_M", "VEIL_T_L", "VEIL_T_OBJ_INNER", "VEIL_T_OBJ_SECRET"), fc.string({ maxLength: 20 }), { maxKeys: 3 }), (raw, env) => {
        try {
          expect(isDeepFrozen(parseConfig(schema, raw, { env, envPrefix: "VEIL_T_" }))).toBe(true);
        } catch (e) {
          if (!(e instanceof ProtocolError) || e.code !== "CFG_ERR_INVALID") throw e;
        }
      }),
      fuzzParams(0xc0f4),
    );
  });

  it("never echoes a secret field's value", () => {
    fc.assert(
      fc.property(fc.string({ minLength: 6, maxLength: 30 }).filter((s) => s !== "ok"), (secret) => {
        try {
          parseConfig(schema, { obj: { secret } });
          throw new Error("accepted");
        } catch (e) {
          expect(e).toBeInstanceOf(ProtocolError);
          expect((e as ProtocolError).message).not.toContain(secret);
        }
      }),
      fuzzParams(0xc0f5),
    );
  });
});

describe("config files", () => {
  // A RAM disk where there is one: each run writes the file.
  const dir = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "veil-cfgfuzz-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("reads any file as JSON or refuses it with CFG_ERR_INVALID, never quoting a secret it holds", () => {
    const file = join(dir, "config.json");
    const text = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.string({ maxLength: 200, unit: "binary" }),
      json.map((v) => JSON.stringify(v)),
      // A real config with a cut or a spliced byte.
      fc.tuple(fc.nat(), fc.string({ maxLength: 3 })).map(([at, s]) => {
        const t = JSON.stringify(VALID.issuer);
        const cut = at % t.length;
        return t.slice(0, cut) + s + t.slice(cut + (s.length === 0 ? 1 : 0));
      }),
    );
    fc.assert(
      fc.property(text, (t) => {
        writeFileSync(file, t);
        let raw: unknown;
        try {
          raw = readConfigFile(file);
        } catch (e) {
          if (!(e instanceof ProtocolError) || e.code !== "CFG_ERR_INVALID") throw e;
          expect(e.message).toContain(file);
          expect(e.message).not.toContain(SECRET_CREDENTIAL.slice(0, 8));
          return;
        }
        checkParse(COMPONENTS[2]!, raw);
      }),
      fuzzParams(0xc0f6),
    );
  });
});
