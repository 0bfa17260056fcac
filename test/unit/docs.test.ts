// The README's generated tables stay in step with the code, both ways: every configuration option
// (describeSchema of each server's schema), every error code of core/errors.ts and every metric the
// servers register has a row, and no row names something that no longer exists.
//
// After changing a schema, the catalogue or a metric, regenerate the tables with
//   VEIL_UPDATE_DOCS=1 npx vitest run test/unit/docs.test.ts
// (the hand-written parts of the README are left alone).

import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { ERRORS, type ErrorCode } from "../../core/errors.js";
import { GATEWAY_SCHEMA } from "../../gateway/config.js";
import { ISSUER_SCHEMA } from "../../issuer/config.js";
import { RELAY_SCHEMA } from "../../relay/config.js";
import { describeSchema, type OptionRow, type Schema } from "../../server/config.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const README = join(ROOT, "README.md");
const UPDATE = process.env.VEIL_UPDATE_DOCS === "1";

const SERVERS: { name: string; schema: Schema; prefix: string }[] = [
  { name: "relay", schema: RELAY_SCHEMA, prefix: "VEIL_RELAY_" },
  { name: "gateway", schema: GATEWAY_SCHEMA, prefix: "VEIL_GATEWAY_" },
  { name: "issuer", schema: ISSUER_SCHEMA, prefix: "VEIL_ISSUER_" },
];

const cell = (s: string): string => s.replace(/\|/g, "\\|").replace(/\n/g, " ");

function configTable(rows: OptionRow[]): string {
  const lines = ["| Option | Environment variable | Default | Expected | Meaning |", "| --- | --- | --- | --- | --- |"];
  for (const r of rows) {
    lines.push(`| \`${r.path}\` | ${r.env === undefined ? "(in the list/map above)" : `\`${r.env}\``} | ${cell(r.default === "(none)" || r.default === "(required)" ? r.default : `\`${r.default}\``)} | ${cell(r.expect)} | ${cell(r.doc)} |`);
  }
  return lines.join("\n");
}

function errorTable(): string {
  const lines = ["| Code | HTTP status | Title |", "| --- | --- | --- |"];
  for (const [code, spec] of Object.entries(ERRORS)) lines.push(`| \`${code}\` | ${spec.status} | ${cell(spec.title)} |`);
  return lines.join("\n");
}

/** Every metric registered in the servers' sources: name, help, labels. */
function sourceMetrics(): { name: string; help: string; labels: string[] }[] {
  const files: string[] = [];
  const walk = (dir: string): void => {
    for (const f of readdirSync(dir)) {
      const p = join(dir, f);
      if (statSync(p).isDirectory()) walk(p);
      else if (f.endsWith(".ts")) files.push(p);
    }
  };
  for (const d of ["server", "gateway", "relay", "issuer"]) walk(join(ROOT, d));
  const out: { name: string; help: string; labels: string[] }[] = [];
  for (const f of files.sort()) {
    const text = readFileSync(f, "utf8");
    const re = /name: "(veil_[a-z0-9_]+)",\s*help: "((?:[^"\\]|\\.)*)",(?:\s*labelNames: \[([^\]]*)\])?/g;
    for (const m of text.matchAll(re)) {
      const labels = (m[3] ?? "").split(",").map((s) => s.trim().replace(/"/g, "")).filter(Boolean);
      if (!out.some((x) => x.name === m[1])) out.push({ name: m[1]!, help: m[2]!, labels });
    }
  }
  return out;
}

function metricsTable(): string {
  const lines = ["| Metric | Labels | Meaning |", "| --- | --- | --- |"];
  for (const m of sourceMetrics()) lines.push(`| \`${m.name}\` | ${m.labels.map((l) => `\`${l}\``).join(", ") || "-"} | ${cell(m.help)} |`);
  return lines.join("\n");
}

function section(text: string, name: string): string | undefined {
  const m = new RegExp(`<!-- BEGIN ${name} -->\\n([\\s\\S]*?)\\n?<!-- END ${name} -->`).exec(text);
  return m?.[1];
}

function replaceSection(text: string, name: string, body: string): string {
  return text.replace(new RegExp(`(<!-- BEGIN ${name} -->\\n)[\\s\\S]*?(<!-- END ${name} -->)`), (_m, a: string, b: string) => `${a}${body}\n${b}`);
}

/** First cells (between backticks) of a markdown table. */
function firstColumn(table: string): string[] {
  return table
    .split("\n")
    .filter((l) => l.startsWith("| `"))
    .map((l) => /^\| `([^`]+)`/.exec(l)![1]!);
}

const generated: Record<string, string> = {
  ...Object.fromEntries(SERVERS.map((s) => [`config:${s.name}`, configTable(describeSchema(s.schema, s.prefix))])),
  errors: errorTable(),
  metrics: metricsTable(),
};

if (UPDATE) {
  let text = readFileSync(README, "utf8");
  for (const [name, body] of Object.entries(generated)) text = replaceSection(text, name, body);
  writeFileSync(README, text);
}

const readme = readFileSync(README, "utf8");

describe("README configuration reference", () => {
  for (const s of SERVERS) {
    it(`lists every ${s.name} option with its default, and no option that does not exist`, () => {
      const table = section(readme, `config:${s.name}`);
      expect(table, `README has no <!-- BEGIN config:${s.name} --> section`).toBeDefined();
      const documented = firstColumn(table!);
      const actual = describeSchema(s.schema, s.prefix).map((r) => r.path);
      expect(documented.filter((p) => !actual.includes(p)), "stale rows").toEqual([]);
      expect(actual.filter((p) => !documented.includes(p)), "missing rows").toEqual([]);
      // Defaults and meanings too: regenerate with VEIL_UPDATE_DOCS=1 after changing the schema.
      expect(table).toBe(generated[`config:${s.name}`]);
    });
  }
});

describe("README error table", () => {
  it("has a row for every code of core/errors.ts with its status and title, and no other code", () => {
    const table = section(readme, "errors");
    expect(table).toBeDefined();
    const documented = firstColumn(table!);
    const codes = Object.keys(ERRORS) as ErrorCode[];
    expect(documented.filter((c) => !codes.includes(c as ErrorCode)), "codes that do not exist").toEqual([]);
    expect(codes.filter((c) => !documented.includes(c)), "undocumented codes").toEqual([]);
    for (const line of table!.split("\n").filter((l) => l.startsWith("| `"))) {
      const [, code, status] = /^\| `([^`]+)` \| (\d+) \|/.exec(line) ?? [];
      expect(Number(status), code).toBe(ERRORS[code as ErrorCode].status);
    }
  });
});

describe("README metrics list", () => {
  it("lists every metric the servers register, and no metric that does not exist", () => {
    const table = section(readme, "metrics");
    expect(table).toBeDefined();
    const documented = firstColumn(table!);
    const actual = sourceMetrics().map((m) => m.name);
    expect(actual.length).toBeGreaterThan(10);
    expect(documented.filter((n) => !actual.includes(n)), "stale rows").toEqual([]);
    expect(actual.filter((n) => !documented.includes(n)), "missing rows").toEqual([]);
  });

  it("never uses a label that could carry an address, a token or a task id", () => {
    for (const m of sourceMetrics()) {
      for (const l of m.labels) expect(["ip", "address", "client", "token", "task", "task_id", "credential", "url"], `${m.name}{${l}}`).not.toContain(l);
    }
  });
});
