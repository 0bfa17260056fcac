// The package as a client developer gets it: `npm pack`, then `npm install ./veil-ohttp-x.y.z.tgz
// --omit=optional` into an empty project (no overrides, nothing native compiled), and there:
// - a Node ESM program imports `veil-ohttp/client` and uploads a DAP-09 report with a Privacy Pass
//   token through a running relay -> gateway -> leader double;
// - `tsc` (strict, NodeNext) typechecks programs against the shipped declarations;
// - esbuild bundles `veil-ohttp/client` for browsers (through the `browser` condition), with
//   nothing node-only and nothing the client does not need;
// - the `veil` command names a missing optional dependency instead of crashing.
//
// Needs a built dist/ (`npm test` builds first) and the npm registry or a warm npm cache
// (`--prefer-offline`: the packages the dev install fetched are in the cache already).

import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { browserOnlyPlugin } from "../../client/build-browser.js";
import { toHex } from "../../core/bytes.js";
import { makeDapReports } from "../helpers/token-gateway.js";
import { LEADER, STACK_CREDENTIAL, startVeilStack, type VeilStack } from "../helpers/veil-stack.js";

const ROOT = resolve(import.meta.dirname, "../..");
const TSC = join(ROOT, "node_modules", "typescript", "bin", "tsc");

/** npm's settings that may come from the environment (a CI's registry or cache), and nothing of `npm test`'s own run. */
const NPM_ENV_KEPT = /^npm_config_(registry|cache|userconfig|globalconfig|strict_ssl|cafile|ca|proxy|https_proxy|noproxy)$/i;

function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.toLowerCase().startsWith("npm_") || NPM_ENV_KEPT.test(k)) env[k] = v;
  }
  return env;
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], cwd: string, timeoutMs = 240_000): Promise<Run> {
  return new Promise((res) => {
    execFile(cmd, args, { cwd, env: cleanEnv(), timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === "number" ? err.code : 1;
      res({ code, stdout, stderr });
    });
  });
}

function expectOk(r: Run, what: string): void {
  if (r.code !== 0) throw new Error(`${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
}

/** Every file under `dir` whose name satisfies `match` (node_modules trees are small enough). */
function findFiles(dir: string, match: (name: string) => boolean, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) findFiles(p, match, out);
    else if (match(e.name)) out.push(p);
  }
  return out;
}

const work = mkdtempSync(join(tmpdir(), "veil-package-"));
const project = join(work, "consumer");
let tarball: { file: string; bytes: number; files: string[] };
let stack: VeilStack;

beforeAll(async () => {
  // --ignore-scripts: `npm test` has just built dist/ (prepare would run tsc again).
  const packed = await run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", work], ROOT);
  expectOk(packed, "npm pack");
  const info = (JSON.parse(packed.stdout) as { filename: string; size: number; files: { path: string }[] }[])[0]!;
  tarball = { file: join(work, info.filename), bytes: info.size, files: info.files.map((f) => f.path) };

  mkdirSync(project);
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "consumer", version: "1.0.0", private: true, type: "module" }));
  const installed = await run("npm", ["install", tarball.file, "--omit=optional", "--prefer-offline", "--no-audit", "--no-fund"], project);
  expectOk(installed, "npm install of the tarball");
  stack = await startVeilStack({ credentials: [STACK_CREDENTIAL] });
}, 300_000);

afterAll(async () => {
  await stack?.stop();
  rmSync(work, { recursive: true, force: true });
});

describe("the veil-ohttp tarball", () => {
  it("holds the built code, its declarations and the README, and no tests, benchmarks or sources", () => {
    expect(tarball.files).toContain("README.md");
    expect(tarball.files).toContain("bin/veil.js");
    for (const f of ["client/index.js", "client/index.d.ts", "client/browser.js", "core/index.d.ts", "gateway/plugin.js", "gateway/plugin.d.ts"]) {
      expect(tarball.files).toContain(`dist/${f}`);
    }
    const stray = tarball.files.filter((f) => /^(test|bench|dist\/bench)\//.test(f) || f.endsWith(".ts") && !f.endsWith(".d.ts") || f.endsWith(".map"));
    expect(stray).toEqual([]);
    console.log(`tarball: ${tarball.bytes} bytes, ${tarball.files.length} files`);
  });

  it("installs into an empty project without optional dependencies: nothing native, no privacypass-ts or blindrsa-ts", () => {
    const nm = join(project, "node_modules");
    for (const pkg of ["better-sqlite3", "ioredis", "@divviup/dap", "@divviup/prio3", "@cloudflare/privacypass-ts", "@cloudflare/blindrsa-ts"]) {
      expect(existsSync(join(nm, pkg)), pkg).toBe(false);
    }
    expect(findFiles(nm, (n) => n.endsWith(".node"))).toEqual([]);
    expect(existsSync(join(nm, "veil-ohttp", "dist", "client", "index.js"))).toBe(true);
  });
});

describe("a Node ESM program that imports veil-ohttp/client", () => {
  it("uploads a DAP-09 report with a token through the relay and the gateway to the leader", async () => {
    const task = stack.tasks.count;
    const [report] = await makeDapReports(task, stack.leader.url, stack.helper.url, 1);
    writeFileSync(
      join(project, "upload.mjs"),
      `import { createObliviousFetch, createTokenSource, isProtocolError } from "veil-ohttp/client";
import { decodeKeyConfigs } from "veil-ohttp/core";
import { veilGateway } from "veil-ohttp/gateway";
const [relay, keys, issuer, credential, url, reportHex] = process.argv.slice(2);
const tokens = createTokenSource({ issuer, credential, batch: 2, refillJitterMs: 0 });
const fetch = createObliviousFetch({ relay, keys, relayKeys: true, tokens });
try {
  const res = await fetch(url, { method: "PUT", headers: { "content-type": "application/dap-report" }, body: Buffer.from(reportHex, "hex") });
  const keyConfigs = decodeKeyConfigs(new Uint8Array(await (await globalThis.fetch(keys)).arrayBuffer()));
  console.log(JSON.stringify({ status: res.status, issued: tokens.stats().issued, keyIds: keyConfigs.map((k) => k.keyId), plugin: typeof veilGateway, isProtocolError: typeof isProtocolError }));
} finally {
  tokens.close();
}
`,
    );
    const before = stack.leader.reports.get(task.idBase64Url)?.length ?? 0;
    const r = await run(
      process.execPath,
      ["upload.mjs", stack.relayUrl, stack.keysUrl, stack.issuerUrl, STACK_CREDENTIAL, `${LEADER}/tasks/${task.idBase64Url}/reports`, toHex(report!)],
      project,
      60_000,
    );
    expectOk(r, "upload.mjs");
    const out = JSON.parse(r.stdout) as { status: number; issued: number; keyIds: number[]; plugin: string; isProtocolError: string };
    expect(out).toEqual({ status: 201, issued: 2, keyIds: [1], plugin: "function", isProtocolError: "function" });
    expect(stack.leader.reports.get(task.idBase64Url)?.length).toBe(before + 1);
  }, 90_000);
});

describe("the shipped declarations", () => {
  const strict = { strict: true, module: "NodeNext", moduleResolution: "NodeNext", target: "ES2022", noEmit: true, exactOptionalPropertyTypes: true, noUncheckedIndexedAccess: true };

  it("typecheck a client program (browser libs, no @types/node, library checks on) and a Fastify app that registers veilGateway", async () => {
    // The client program proves the client's declarations need nothing from Node's types.
    const clientDir = join(project, "client-check");
    mkdirSync(clientDir);
    writeFileSync(
      join(clientDir, "main.ts"),
      `import { createObliviousFetch, createTokenSource, isProtocolError, ProtocolError, type ObliviousFetch, type TokenSource } from "veil-ohttp/client";
import { decodeKeyConfigs, type KeyConfig } from "veil-ohttp/core";
const tokens: TokenSource = createTokenSource({ issuer: "https://issuer.example", credential: "c" });
const f: ObliviousFetch = createObliviousFetch({ relay: "https://relay.example/gateway", keys: "https://gateway.example/ohttp-keys", tokens });
export async function upload(body: Uint8Array<ArrayBuffer>): Promise<number> {
  try {
    const res: Response = await f("https://leader.example/tasks/x/reports", { method: "PUT", body });
    return res.status;
  } catch (e) {
    if (isProtocolError(e)) return e.status;
    throw e instanceof ProtocolError ? e : new Error("other");
  }
}
export const first = (b: Uint8Array): KeyConfig | undefined => decodeKeyConfigs(b)[0];
// @ts-expect-error: the relay URL is required
createObliviousFetch({ keys: "https://gateway.example/ohttp-keys" });
`,
    );
    writeFileSync(join(clientDir, "tsconfig.json"), JSON.stringify({ compilerOptions: { ...strict, lib: ["ES2022", "DOM"], types: [], skipLibCheck: false }, files: ["main.ts"] }));
    // The gateway program: @types/node comes from this repository's install (the consumer project has no development dependencies).
    const gatewayDir = join(project, "gateway-check");
    mkdirSync(gatewayDir);
    writeFileSync(
      join(gatewayDir, "main.ts"),
      `import Fastify from "fastify";
import { veilGateway, type VeilGatewayOptions } from "veil-ohttp/gateway";
const options: VeilGatewayOptions = { config: { keys: "keys.json", targets: { "https://leader.example": "http://127.0.0.1:8083" }, tokens: { store: "memory" } } };
const app = Fastify();
await app.register(veilGateway, options);
await app.veilGateway.ready();
const text: string = await app.veilGateway.registry.metrics();
console.log(text, app.veilGateway.config.policy);
// @ts-expect-error: config is required
await app.register(veilGateway, {});
`,
    );
    writeFileSync(
      join(gatewayDir, "tsconfig.json"),
      JSON.stringify({ compilerOptions: { ...strict, lib: ["ES2022"], typeRoots: [join(ROOT, "node_modules", "@types")], types: ["node"], skipLibCheck: true }, files: ["main.ts"] }),
    );
    const [client, gateway] = await Promise.all([
      run(process.execPath, [TSC, "-p", clientDir], clientDir, 120_000),
      run(process.execPath, [TSC, "-p", gatewayDir], gatewayDir, 120_000),
    ]);
    expectOk(client, "tsc (client program)");
    expectOk(gateway, "tsc (gateway program)");
  }, 180_000);
});

describe("a browser bundle of veil-ohttp/client (esbuild)", () => {
  it("resolves the browser entry, pulls in nothing node-only or server-side, and reports its minified size", async () => {
    writeFileSync(
      join(project, "page.js"),
      `import { createObliviousFetch, createTokenSource } from "veil-ohttp/client";
globalThis.veil = { createObliviousFetch, createTokenSource };
`,
    );
    const outfile = join(project, "page.bundle.js");
    const result = await build({
      entryPoints: [join(project, "page.js")],
      absWorkingDir: project,
      outfile,
      bundle: true,
      format: "esm",
      platform: "browser",
      target: ["es2022"],
      minify: true,
      metafile: true,
      logLevel: "silent",
      legalComments: "none",
      plugins: [browserOnlyPlugin],
    });
    expect(result.errors).toEqual([]);
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs).toContain("node_modules/veil-ohttp/dist/client/browser.js");
    const packages = [...new Set(inputs.map((i) => /node_modules\/((@[^/]+\/)?[^/]+)/.exec(i)?.[1]).filter((p) => p !== undefined))].sort();
    // Only what the client needs: HPKE, curves and hashes, and Veil itself.
    for (const p of packages) expect(p, p).toMatch(/^(veil-ohttp|@hpke\/[a-z0-9-]+|@noble\/(curves|hashes|post-quantum|ciphers)|mlkem)$/);
    expect(inputs.filter((i) => /\/dist\/(server|gateway|relay|issuer|demo)\//.test(i) || i.endsWith("-node.js"))).toEqual([]);
    const bytes = statSync(outfile).size;
    const gzip = gzipSync(readFileSync(outfile)).length;
    console.log(`browser bundle of veil-ohttp/client: ${bytes} bytes minified, ${gzip} gzip; packages: ${packages.join(", ")}`);
  });
});

describe("the veil command from the client-only install", () => {
  it("names the missing optional dependency and how to install it", async () => {
    const r = await run(join(project, "node_modules", ".bin", "veil"), ["start", "--data", join(work, "data")], project, 60_000);
    expect(r.stderr).toContain("needs the optional dependency @divviup/prio3, which is not installed (npm install @divviup/prio3)");
    expect(r.code).not.toBe(0);
  }, 60_000);
});
