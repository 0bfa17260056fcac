// Typed configuration loading shared by the servers: one schema per component (with a default and
// a doc string on every field), JSON file + VEIL_<COMPONENT>_<PATH> environment overrides,
// validated once at start-up (errors name the field and the expected value; unknown fields are
// errors with a "did you mean" hint), then deeply frozen.
//
// Only config.ts files read process.env: they pass it in here.
//
// The schema is the single source: the TypeScript type of a component's config is derived from it
// (ConfigOf), so the two cannot drift. To add a config field:
//   1. add it to the component's schema in <component>/config.ts, with `kind`, a `default` (put the
//      value in the component's DEFAULTS object with a comment saying why) or `optional: true`, and
//      a one-sentence `doc`; `secret: true` if --print-config must not show it;
//   2. that's the type: `config.the.field` is now typed (a `oneOf` list gives a union of literals;
//      `optional` without a default gives an optional property);
//   3. regenerate the README's configuration tables: VEIL_UPDATE_DOCS=1 npx vitest run test/unit/docs.test.ts
//      (the environment variable VEIL_<COMPONENT>_<PATH> comes for free).
// Schemas are written `{ ... } as const satisfies Schema` (or `FieldSpec` for a shared section),
// so that literal values such as `oneOf` lists and `optional: true` reach the derived type.

import { readFileSync } from "node:fs";
import { ProtocolError } from "../core/errors.js";
import { REDACTED } from "../core/secret.js";

interface Common {
  /** One sentence for the README's configuration table. */
  doc: string;
  /** May be absent (no default). */
  optional?: boolean;
  /** Printed as [redacted] by --print-config. */
  secret?: boolean;
}
export type FieldSpec =
  | (Common & { kind: "string"; default?: string; oneOf?: readonly string[]; pattern?: RegExp; expect?: string })
  | (Common & { kind: "int"; default?: number; min?: number; max?: number })
  | (Common & { kind: "number"; default?: number; min?: number; max?: number })
  | (Common & { kind: "boolean"; default?: boolean })
  | (Common & { kind: "object"; fields: Schema })
  | (Common & { kind: "map"; values: FieldSpec; default?: Record<string, unknown>; keyPattern?: RegExp; expect?: string })
  | (Common & { kind: "list"; items: FieldSpec; default?: readonly unknown[]; minItems?: number })
  // One of two written forms told apart by their JSON type: a string (the short form) or an
  // object (the long form), e.g. a gateway target.
  | (Common & { kind: "either"; string: FieldSpec & { kind: "string" }; object: FieldSpec & { kind: "object" } });
export type Schema = Readonly<Record<string, FieldSpec>>;

/** A field's optional in the parsed config when it is `optional` and has no default. */
type IsOptional<F> = F extends { optional: true } ? (F extends { default: unknown } ? false : true) : false;

/** The parsed value of one field, as validateField returns it. */
export type FieldValue<F> = F extends { kind: "string"; oneOf: readonly (infer O)[] }
  ? O
  : F extends { kind: "string" }
    ? string
    : F extends { kind: "int" | "number" }
      ? number
      : F extends { kind: "boolean" }
        ? boolean
        : F extends { kind: "object"; fields: infer S }
          ? ConfigOf<S>
          : F extends { kind: "map"; values: infer V }
            ? Record<string, FieldValue<V>>
            : F extends { kind: "list"; items: infer I }
              ? FieldValue<I>[]
              : F extends { kind: "either"; string: infer A; object: infer B }
                ? FieldValue<A> | FieldValue<B>
                : never;

/**
 * The parsed config of a schema: what parseConfig returns (frozen at run time). A schema typed only
 * as `Schema` (no literal keys) gives a plain record.
 */
export type ConfigOf<S> = string extends keyof S ? Record<string, unknown> : Flat<
  { -readonly [K in keyof S as IsOptional<S[K]> extends true ? never : K]: FieldValue<S[K]> } & {
    -readonly [K in keyof S as IsOptional<S[K]> extends true ? K : never]?: FieldValue<S[K]>;
  }
>;

/** One object type instead of an intersection (what editors show, and what type tests compare). */
type Flat<T> = { [K in keyof T]: T[K] } & {};

export interface ParseOptions {
  /** Environment to read overrides from (pass process.env from the component's config.ts). */
  env?: Readonly<Record<string, string | undefined>>;
  /** e.g. "VEIL_GATEWAY_": VEIL_GATEWAY_LISTEN_PORT overrides listen.port. */
  envPrefix?: string;
}

function fail(path: string, message: string): never {
  throw new ProtocolError("CFG_ERR_INVALID", `${path === "" ? "config" : path}: ${message}`);
}

function describeValue(v: unknown): string {
  // Only scalars are quoted: a list or an object may hold a secret further down (found by fuzzing the config loader).
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object" && v !== null) return "an object";
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? s.slice(0, 57) + "..." : s;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
    }
  }
  return d[a.length]![b.length]!;
}

function hintFor(key: string, known: string[]): string {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const dist = editDistance(key, k);
    if (dist < bestDistance) [best, bestDistance] = [k, dist];
  }
  if (best !== undefined && bestDistance <= Math.max(2, Math.floor(key.length / 3))) {
    return ` (did you mean "${best}"?)`;
  }
  return ` (known fields: ${known.join(", ")})`;
}

function join(path: string, key: string): string {
  return path === "" ? key : `${path}.${key}`;
}

function validateField(spec: FieldSpec, value: unknown, path: string): unknown {
  // A secret field's value is never quoted, whatever is wrong with it.
  const shown = (v: unknown): string => (spec.secret === true ? REDACTED : describeValue(v));
  if (value === undefined) {
    if ("default" in spec && spec.default !== undefined) return validateField(spec, structuredClone(spec.default), path);
    if (spec.optional === true) return undefined;
    // An object whose fields all have defaults may be omitted.
    if (spec.kind === "object") return validateObject(spec.fields, {}, path);
    return fail(path, `is required (${expectation(spec)})`);
  }
  switch (spec.kind) {
    case "string": {
      if (typeof value !== "string") fail(path, `expected ${expectation(spec)}, got ${shown(value)}`);
      if (spec.oneOf !== undefined && !spec.oneOf.includes(value)) {
        fail(path, `expected one of ${spec.oneOf.map((v) => JSON.stringify(v)).join(", ")}, got ${shown(value)}`);
      }
      if (spec.pattern !== undefined && !spec.pattern.test(value)) {
        fail(path, `expected ${expectation(spec)}, got ${shown(value)}`);
      }
      return value;
    }
    case "int":
    case "number": {
      if (typeof value !== "number" || !Number.isFinite(value) || (spec.kind === "int" && !Number.isInteger(value))) {
        fail(path, `expected ${expectation(spec)}, got ${shown(value)}`);
      }
      if ((spec.min !== undefined && value < spec.min) || (spec.max !== undefined && value > spec.max)) {
        fail(path, `expected ${expectation(spec)}, got ${value}`);
      }
      return value;
    }
    case "boolean":
      if (typeof value !== "boolean") fail(path, `expected true or false, got ${shown(value)}`);
      return value;
    case "object":
      if (!isPlainObject(value)) fail(path, `expected an object, got ${shown(value)}`);
      return validateObject(spec.fields, value, path);
    case "map": {
      if (!isPlainObject(value)) fail(path, `expected an object (${expectation(spec)}), got ${shown(value)}`);
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value)) {
        if (spec.keyPattern !== undefined && !spec.keyPattern.test(k)) {
          fail(join(path, k), `key ${JSON.stringify(k)} is not ${spec.expect ?? "a valid key"}`);
        }
        out[k] = validateField(spec.values, v, join(path, JSON.stringify(k)));
      }
      return out;
    }
    case "either":
      if (typeof value === "string") return validateField(spec.string, value, path);
      if (isPlainObject(value)) return validateField(spec.object, value, path);
      return fail(path, `expected ${expectation(spec)}, got ${shown(value)}`);
    case "list": {
      if (!Array.isArray(value)) fail(path, `expected a list, got ${shown(value)}`);
      if (spec.minItems !== undefined && value.length < spec.minItems) {
        fail(path, `expected at least ${spec.minItems} item(s), got ${value.length}`);
      }
      return value.map((v, i) => validateField(spec.items, v, `${path}[${i}]`));
    }
  }
}

function validateObject(schema: Schema, value: Record<string, unknown>, path: string): Record<string, unknown> {
  const known = Object.keys(schema);
  for (const key of Object.keys(value)) {
    if (!Object.hasOwn(schema, key)) fail(join(path, key), `unknown field${hintFor(key, known)}`);
  }
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(schema)) {
    const v = validateField(spec, value[key], join(path, key));
    if (v !== undefined) out[key] = v;
  }
  return out;
}

export function expectation(spec: FieldSpec): string {
  switch (spec.kind) {
    case "string":
      return spec.oneOf !== undefined ? spec.oneOf.map((v) => JSON.stringify(v)).join(" | ") : (spec.expect ?? "a string");
    case "int":
    case "number": {
      const what = spec.kind === "int" ? "an integer" : "a number";
      if (spec.min !== undefined && spec.max !== undefined) return `${what} ${spec.min}..${spec.max}`;
      if (spec.min !== undefined) return `${what} >= ${spec.min}`;
      return what;
    }
    case "boolean":
      return "true or false";
    case "object":
      return "an object";
    case "map":
      return spec.expect ?? "an object";
    case "list":
      return `a list of ${expectation(spec.items)}`;
    case "either":
      return `${expectation(spec.string)} or an object`;
  }
}

function envName(prefix: string, path: string[]): string {
  return prefix + path.map((p) => p.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase()).join("_");
}

/** Applies VEIL_<PREFIX>_<PATH> overrides: scalars as text, maps and lists as JSON. */
function applyEnv(schema: Schema, raw: Record<string, unknown>, prefix: string, env: ParseOptions["env"], path: string[]): void {
  for (const [key, spec] of Object.entries(schema)) {
    const here = [...path, key];
    if (spec.kind === "object") {
      const sub = isPlainObject(raw[key]) ? raw[key] : {};
      applyEnv(spec.fields, sub, prefix, env, here);
      if (Object.keys(sub).length > 0) raw[key] = sub;
      continue;
    }
    const name = envName(prefix, here);
    const text = env?.[name];
    if (text === undefined) continue;
    raw[key] = parseEnvValue(spec, text, name);
  }
}

function parseEnvValue(spec: FieldSpec, text: string, name: string): unknown {
  switch (spec.kind) {
    case "string":
      return text;
    case "int":
    case "number": {
      const n = Number(text);
      if (text.trim() === "" || !Number.isFinite(n)) fail(name, `expected ${expectation(spec)}, got ${describeValue(text)}`);
      return n;
    }
    case "boolean":
      if (text === "true" || text === "1") return true;
      if (text === "false" || text === "0") return false;
      return fail(name, `expected true or false, got ${describeValue(text)}`);
    default:
      try {
        return JSON.parse(text) as unknown;
      } catch {
        return fail(name, `expected JSON (${expectation(spec)})`);
      }
  }
}

function deepFreeze<T>(v: T): T {
  if (typeof v === "object" && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const inner of Object.values(v)) deepFreeze(inner);
  }
  return v;
}

/**
 * Validates `raw` (already parsed JSON) against `schema`; returns the frozen, defaulted config. Its
 * type is derived from the schema (ConfigOf), and validateObject builds exactly that shape: this
 * is the one place where the validated value is given its type.
 */
export function parseConfig<S extends Schema>(schema: S, raw: unknown, options: ParseOptions = {}): ConfigOf<S> {
  if (raw !== undefined && !isPlainObject(raw)) fail("", `expected a JSON object, got ${describeValue(raw)}`);
  const copy = structuredClone<Record<string, unknown>>(raw ?? {});
  if (options.envPrefix !== undefined) applyEnv(schema, copy, options.envPrefix, options.env, []);
  return deepFreeze(validateObject(schema, copy, "") as ConfigOf<S>);
}

/** Reads a JSON config file; errors name the file, never echo its contents. */
export function readConfigFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new ProtocolError("CFG_ERR_INVALID", `cannot read config file ${file}: ${(e as NodeJS.ErrnoException).code ?? "error"}`, { cause: e });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    // V8's message quotes the text around the error, which may be a secret: only the position goes out.
    const where = /at position \d+(?: \(line \d+ column \d+\))?/.exec((e as Error).message)?.[0];
    throw new ProtocolError("CFG_ERR_INVALID", `config file ${file} is not valid JSON${where === undefined ? "" : ` (${where})`}`);
  }
}

/** Loads `--config FILE` (optional) with environment overrides. */
export function loadConfig<S extends Schema>(schema: S, file: string | undefined, options: ParseOptions): ConfigOf<S> {
  return parseConfig<S>(schema, file === undefined ? {} : readConfigFile(file), options);
}

/** A copy of `config` with every secret field replaced by [redacted] (for --print-config). */
export function redactConfig(schema: Schema, config: unknown): unknown {
  return redactField({ kind: "object", fields: schema, doc: "" }, config);
}

function redactField(spec: FieldSpec, value: unknown): unknown {
  if (value === undefined) return undefined;
  if (spec.secret === true) return Array.isArray(value) ? value.map(() => REDACTED) : REDACTED;
  if (spec.kind === "object" && isPlainObject(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, spec.fields[k] ? redactField(spec.fields[k], v) : v]));
  }
  if (spec.kind === "map" && isPlainObject(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactField(spec.values, v)]));
  }
  if (spec.kind === "list" && Array.isArray(value)) return value.map((v) => redactField(spec.items, v));
  if (spec.kind === "either") return redactField(typeof value === "string" ? spec.string : spec.object, value);
  return value;
}

export interface OptionRow {
  path: string;
  env: string | undefined;
  expect: string;
  default: string;
  doc: string;
}

/** One row per option, for the README's configuration table (a test keeps the two in step). */
export function describeSchema(schema: Schema, envPrefix?: string, path: string[] = []): OptionRow[] {
  const rows: OptionRow[] = [];
  for (const [key, spec] of Object.entries(schema)) {
    const here = [...path, key];
    const inList = here.some((p) => p.endsWith("[]") || p.startsWith("<"));
    if (spec.kind === "object") {
      rows.push(...describeSchema(spec.fields, envPrefix, here));
      continue;
    }
    rows.push({
      path: here.join("."),
      env: envPrefix === undefined || inList ? undefined : envName(envPrefix, here),
      expect: expectation(spec),
      default: "default" in spec && spec.default !== undefined ? JSON.stringify(spec.default) : spec.optional === true ? "(none)" : "(required)",
      doc: spec.doc,
    });
    if (spec.kind === "list" && spec.items.kind === "object") rows.push(...describeSchema(spec.items.fields, undefined, [...here.slice(0, -1), `${key}[]`]));
    if (spec.kind === "map" && spec.values.kind === "object") rows.push(...describeSchema(spec.values.fields, undefined, [...here, "<key>"]));
    if (spec.kind === "map" && spec.values.kind === "either") rows.push(...describeSchema(spec.values.object.fields, undefined, [...here, "<key>"]));
  }
  return rows;
}

/** The `listen` section every server shares (RFC 9458 §6: HTTPS on both hops unless a proxy does it). */
export function listenSchema(defaultPort: number) {
  return {
    kind: "object",
    doc: "Where the server listens.",
    fields: {
      host: { kind: "string", default: "127.0.0.1", doc: "Address to bind." },
      port: { kind: "int", default: defaultPort, min: 0, max: 65535, doc: "TCP port (0 picks a free one)." },
      tls: {
        kind: "object",
        optional: true,
        doc: "Serve HTTPS with this certificate.",
        fields: {
          cert: { kind: "string", doc: "PEM certificate chain file.", optional: true },
          key: { kind: "string", doc: "PEM private key file.", optional: true, secret: false },
          ca: { kind: "string", doc: "PEM CA file: when set, clients must present a certificate it signed (mTLS).", optional: true },
        },
      },
    },
  } as const satisfies FieldSpec;
}

export type ListenConfig = FieldValue<ReturnType<typeof listenSchema>>;

/** The `limits` every server shares: explicit timeouts and sizes instead of library defaults. */
export function httpLimitsSchema(defaults: { maxRequestBytes: number }) {
  return {
    kind: "object",
    doc: "HTTP server limits.",
    fields: {
      maxRequestBytes: { kind: "int", default: defaults.maxRequestBytes, min: 1, doc: "Largest request body accepted (413 above it)." },
      headersTimeoutMs: { kind: "int", default: 10_000, min: 100, doc: "Time a client has to send the request headers." },
      requestTimeoutMs: { kind: "int", default: 30_000, min: 100, doc: "Time a client has to send the whole request; a connection whose answers stay unread this long is closed." },
      keepAliveTimeoutMs: { kind: "int", default: 5_000, min: 100, doc: "Idle time before a keep-alive connection is closed." },
      maxHeaderBytes: { kind: "int", default: 16_384, min: 1024, doc: "Largest request header block." },
      maxConcurrentRequests: { kind: "int", default: 1024, min: 1, doc: "Requests handled at once; more get 503." },
      shutdownGraceMs: { kind: "int", default: 8_000, min: 0, doc: "Time in-flight requests get to finish on SIGTERM." },
    },
  } as const satisfies FieldSpec;
}

export type HttpLimits = FieldValue<ReturnType<typeof httpLimitsSchema>>;
