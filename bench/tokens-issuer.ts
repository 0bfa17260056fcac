// `npm run bench -- tokens-issuer [--rounds R] [--tokens N] [--concurrency C] [--types 2,5]
//  [--batches 1,8,32] [--warmup-ms MS] [--cpu-prof DIR]` (--cpu-prof: a V8 CPU profile of the issuer process)
// (also section 2 of `npm run bench -- tokens`).
//
// Issuer CPU per token over HTTP, with the attester, against the floor of the token's crypto,
// measured in the same process in the same run:
//   - type 2 (Blind RSA 2048): batch 1 is today's single request (application/private-token-request);
//     batches of 8 and 32 are the generic batch (application/private-token-generic-batch-request:
//     the draft's amortized batch exists only for the VOPRF types). Floor: one raw RSA-2048 private
//     operation (privateDecrypt with RSA_NO_PADDING) on the issuer's key.
//   - type 5 (VOPRF ristretto255): batch 1 is a single request, 8 and 32 the amortized batch
//     (application/private-token-amortized-batch-request, one proof). Floor: the scalar
//     multiplications the batch needs, with the same library (bench/tokens-issuer-child.ts).
//
// What is counted: process.cpuUsage() (user + system) of the issuer's own process
// (bench/tokens-issuer-child.ts: `veil issuer` as deployed, SQLite quota, one log line per request)
// between two snapshots around N tokens' worth of requests, divided by N. The load generator, its
// blinding and the finalisation of tokens run in this process and are not counted. CPU time rather
// than wall-clock: the machine is shared. Variants run interleaved in rounds; medians of the
// per-round ratios are printed.

import { fork, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Pool } from "undici";
import { fromBase64Url } from "../core/bytes.js";
import { createBatchTokenRequest } from "../core/privacypass/batch-client.js";
import { ISSUER_DIRECTORY_PATH, MEDIA_TYPES, createTokenRequest, encodeTokenChallenge } from "../core/privacypass/index.js";
import { TOKEN_TYPE } from "../core/privacypass/token-type.js";
import { intArg, median } from "./args.js";

const CREDENTIAL = "bench-credential";
/** Distinct request bodies per variant, sent in turn (the issuer keeps no state per body). */
const BODIES = 4;

interface Variant {
  name: string;
  tokenType: number;
  batch: number;
  contentType: string;
  bodies: Uint8Array[];
  /** CPU µs per token, per round. */
  perToken: number[];
  /** Of which in the kernel (system time: sockets, the log's writes). */
  systemPerToken: number[];
  /** The floor's CPU µs per token, per round. */
  floor: number[];
}

function startChild(dir: string, tokenType: number, execArgv: string[]): Promise<{ child: ChildProcess; port: number }> {
  // stdout to /dev/null: the issuer writes its request lines there, as to any log file.
  const child = fork(fileURLToPath(new URL("./tokens-issuer-child.js", import.meta.url)), [dir, String(tokenType)], { stdio: ["ignore", "ignore", "inherit", "ipc"], execArgv });
  return new Promise((resolve, reject) => {
    child.once("message", (m) => resolve({ child, port: (m as { port: number }).port }));
    child.once("exit", (code) => reject(new Error(`tokens-issuer-child exited with ${code}`)));
  });
}

function ask<T>(child: ChildProcess, message: unknown, field: string): Promise<T> {
  return new Promise((resolve) => {
    const on = (m: unknown): void => {
      if (typeof m === "object" && m !== null && field in m) {
        child.off("message", on);
        resolve((m as Record<string, T>)[field]!);
      }
    };
    child.on("message", on);
    child.send(message as string);
  });
}

function cpuOf(child: ChildProcess): Promise<NodeJS.CpuUsage> {
  return ask<NodeJS.CpuUsage>(child, "cpu", "cpu");
}

async function post(pool: Pool, v: Variant, body: Uint8Array): Promise<Uint8Array> {
  const res = await pool.request({
    method: "POST",
    path: "/token-request",
    headers: { "content-type": v.contentType, authorization: `Bearer ${CREDENTIAL}` },
    body: Buffer.from(body),
  });
  const bytes = new Uint8Array(await res.body.arrayBuffer());
  if (res.statusCode !== 200) throw new Error(`${v.name}: the issuer answered ${res.statusCode}`);
  return bytes;
}

/** Sends `requests` requests of the variant, `concurrency` at a time. */
async function drive(pool: Pool, v: Variant, requests: number, concurrency: number): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < requests) {
      const i = next++;
      await post(pool, v, v.bodies[i % v.bodies.length]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, requests) }, worker));
}

/** The variants, with request bodies made (and one answer of each finalized into valid tokens). */
async function makeVariants(pool: Pool, keys: Map<number, Uint8Array>, tokenTypes: number[], batches: number[]): Promise<Variant[]> {
  const variants: Variant[] = [];
  for (const tokenType of tokenTypes) {
    const tokenKey = keys.get(tokenType);
    if (tokenKey === undefined) throw new Error(`the issuer's directory has no key of type ${tokenType}`);
    const challenge = encodeTokenChallenge({ tokenType, issuerName: "issuer.example", redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] });
    for (const batch of batches) {
      const v: Variant = {
        name: `type ${tokenType}, batch ${String(batch).padStart(2)}`,
        tokenType,
        batch,
        contentType: "",
        bodies: [],
        perToken: [],
        systemPerToken: [],
        floor: [],
      };
      for (let i = 0; i < BODIES; i++) {
        if (batch === 1) {
          const p = await createTokenRequest(challenge, tokenKey);
          v.contentType = MEDIA_TYPES.tokenRequest;
          v.bodies.push(p.request);
          if (i === 0) await p.finalize(await post(pool, v, p.request));
        } else {
          const p = await createBatchTokenRequest(challenge, tokenKey, batch);
          v.contentType = p.requestMediaType;
          v.bodies.push(p.request);
          if (i === 0 && (await p.finalize(await post(pool, v, p.request))).length !== batch) throw new Error(`${v.name}: tokens missing`);
        }
      }
      v.name += ` (${v.contentType.replace("application/private-token-", "")})`;
      variants.push(v);
    }
  }
  return variants;
}

/** `--name 1,8,32`: a list of positive integers. */
function listArg(args: string[], name: string, dflt: number[]): number[] {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const list = (args[i + 1] ?? "").split(",").map(Number);
  if (list.some((n) => !Number.isInteger(n) || n <= 0)) throw new Error(`${name}: expected a comma-separated list of positive integers`);
  return list;
}

async function directoryKeys(pool: Pool): Promise<Map<number, Uint8Array>> {
  const res = await pool.request({ method: "GET", path: ISSUER_DIRECTORY_PATH });
  const dir = (await res.body.json()) as { "token-keys": { "token-type": number; "token-key": string }[] };
  const keys = new Map<number, Uint8Array>();
  // The first key of each type is the current one (a successor is listed after it).
  for (const k of dir["token-keys"]) {
    const key = fromBase64Url(k["token-key"]);
    if (key !== undefined && !keys.has(k["token-type"])) keys.set(k["token-type"], key);
  }
  return keys;
}

interface Options {
  rounds: number;
  tokens: number;
  concurrency: number;
  warmupMs: number;
  batches: number[];
  execArgv: string[];
}

export async function runTokensIssuer(args: string[]): Promise<void> {
  const profIdx = args.indexOf("--cpu-prof");
  const o: Options = {
    rounds: intArg(args, "--rounds", 7),
    tokens: intArg(args, "--tokens", 192),
    concurrency: intArg(args, "--concurrency", 1),
    warmupMs: intArg(args, "--warmup-ms", 3000),
    batches: listArg(args, "--batches", [1, 8, 32]),
    execArgv: profIdx >= 0 ? ["--cpu-prof", `--cpu-prof-dir=${args[profIdx + 1] ?? "."}`, "--cpu-prof-interval=200"] : [],
  };
  console.log(
    `issuer CPU per token (process.cpuUsage of the issuer process only), ${o.tokens} tokens per variant per round, ${o.rounds} rounds, ` +
      `concurrency ${o.concurrency}, after ${o.warmupMs} ms of warm-up per variant`,
  );
  console.log(`  ${"variant".padEnd(50)} ${"issuer CPU/token".padStart(16)} ${"(kernel)".padStart(9)} ${"floor/token".padStart(12)}  ratio`);
  // One issuer per token type, as deployed (an issuer usually issues one type).
  for (const tokenType of listArg(args, "--types", [TOKEN_TYPE.BLIND_RSA_2048, TOKEN_TYPE.VOPRF_RISTRETTO255])) await measureIssuer(tokenType, o);
}

async function measureIssuer(tokenType: number, o: Options): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "veil-bench-issuer-"));
  const { child, port } = await startChild(dir, tokenType, o.execArgv);
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: o.concurrency, keepAliveTimeout: 30_000, headersTimeout: 30_000, bodyTimeout: 30_000 });
  try {
    const variants = await makeVariants(pool, await directoryKeys(pool), [tokenType], o.batches);
    // Warm-up, not measured: a long-running issuer has compiled its hot paths (V8's optimizing
    // compiler runs on other threads of the same process, and its CPU time would count: without
    // warm-up, batch 1 measures 5-7x instead of about 3x), and SQLite has its pages cached.
    for (const v of variants) {
      const until = performance.now() + o.warmupMs;
      while (performance.now() < until) await drive(pool, v, 10, o.concurrency);
    }
    for (let r = 0; r < o.rounds; r++) {
      for (const v of variants) {
        const n = Math.ceil(o.tokens / v.batch) * v.batch;
        const before = await cpuOf(child);
        await drive(pool, v, n / v.batch, o.concurrency);
        const after = await cpuOf(child);
        const floorUs =
          v.tokenType === TOKEN_TYPE.BLIND_RSA_2048
            ? (await ask<number>(child, { floor: "rsa", n: o.tokens }, "floorUs")) / o.tokens
            : (await ask<number>(child, { floor: "ristretto255", n: n / v.batch, batch: v.batch }, "floorUs")) / n;
        v.perToken.push((after.user + after.system - before.user - before.system) / n);
        v.systemPerToken.push((after.system - before.system) / n);
        v.floor.push(floorUs);
      }
    }
    for (const v of variants) {
      const ratio = median(v.perToken.map((x, i) => x / v.floor[i]!));
      const floorName = v.tokenType === TOKEN_TYPE.BLIND_RSA_2048 ? "raw RSA" : "scalar mults";
      const us = (x: number, width: number): string => `${x.toFixed(0)} µs`.padStart(width);
      console.log(`  ${v.name.padEnd(50)} ${us(median(v.perToken), 16)} ${us(median(v.systemPerToken), 9)} ${us(median(v.floor), 12)}  ${ratio.toFixed(2)}x ${floorName}`);
    }
  } finally {
    await pool.close();
    const exited = new Promise((r) => child.once("exit", r));
    child.send("stop");
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

export const run = runTokensIssuer;
