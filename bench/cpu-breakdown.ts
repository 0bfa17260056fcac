// Where a server process spends its CPU, by part of the request path, from Linux `perf`:
// `perf record -e task-clock -g -p PID` samples only while a thread of the process is on a CPU
// (user and kernel), at a fixed rate, with the whole stack (native, kernel, and JavaScript frames
// named through node's --perf-basic-prof map). V8's own --cpu-prof cannot give this: it samples
// the main thread by wall clock, so the time a process spends preempted inside a syscall (waiting
// for a CPU after waking its peer on a busy machine) shows up as the syscall's "cost".
//
// Each sample goes to one part: GC and JIT compilation by any frame on the stack; otherwise the
// innermost JavaScript (or native parser) frame that belongs to a part, reading from the leaf
// outwards and skipping the plumbing every part uses (streams, events, timers, microtasks, V8
// builtins, node:crypto, libc, the kernel). So a `writev` that undici issues counts as forwarding,
// one that node:http issues for the answer counts as node:http, and an RSA verification called by
// the token gate counts as the gate. Used by bench/gateway.ts and
// bench/tokens-gateway.ts (`--perf`); needs `perf` and a node started with --perf-basic-prof.

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, statSync } from "node:fs";

/** node flags for `perf` to name JavaScript frames (and interpreted ones) in its stacks. */
export const PERF_NODE_FLAGS = ["--perf-basic-prof", "--interpreted-frames-native-stack"];

/** The parts of a request, in the order they are printed. */
export const PARTS = [
  "node:http (parse, answer)",
  "OHTTP crypto",
  "Binary HTTP",
  "policy, request path",
  "token gate",
  "forwarding (undici)",
  "fastify",
  "lean path glue",
  "logging",
  "metrics",
  "GC",
  "malloc/free (native)",
  "JIT compiler",
  "event loop, syscalls (unattributed)",
  "other",
] as const;
export type Part = (typeof PARTS)[number];

/** JavaScript sources (file URL or node: module) -> part; the first match wins. */
const JS_RULES: [RegExp, Part][] = [
  [/prom-client/, "metrics"],
  [/server\/logging\.js|\/pino|\/sonic-boom\/|fast-redact|quick-format|(record|flush) \S*lean-answers\.js/, "logging"],
  [/core\/ohttp\/|@hpke\/|hpke-js|random-pool\.js/, "OHTTP crypto"],
  [/core\/bhttp\//, "Binary HTTP"],
  [/gateway\/(gate|tokens|issuer-directory|arc-verifier|store-loss)\.js|core\/privacypass\/|nonce-stores\/|better-sqlite3|ioredis|redis-parser|server\/(sqlite|redis)\.js/, "token gate"],
  [/gateway\/(policy|request-path|replay)\.js|core\/(http-fields|problem|errors|bytes)\.js|server\/problem-handler\.js/, "policy, request path"],
  [/undici|gateway\/target\.js/, "forwarding (undici)"],
  [/fastify|find-my-way|avvio|light-my-request|@fastify\//, "fastify"],
  [/gateway\/routes\/|server\/(lifecycle|lean-answers|cors)\.js|bench\/gateway-child\.js/, "lean path glue"],
  [/node:_http_|node:http/, "node:http (parse, answer)"],
];

/** Native frames that name a part by themselves (the C++ HTTP parser, OpenSSL, SQLite). */
const NATIVE_RULES: [RegExp, Part][] = [
  [/llhttp|node::\(anonymous namespace\)::Parser|node::http_parser/, "node:http (parse, answer)"],
  [/sqlite3/, "token gate"],
  // OpenSSL's assembly keeps no frame pointer, so its stacks end there: name them by the code.
  [/x25519|X25519|curve25519|aesni|gcm_(?!.*v8)|ghash|ossl_hmac|HMAC_|EVP_(Digest|Cipher|MAC)/, "OHTTP crypto"],
  [/rsaz|bn_mul|bn_sqr|BN_|RSA_|rsa_/, "token gate"],
  // glibc's allocator keeps none either (its callers: OpenSSL contexts, ArrayBuffer stores, GC frees).
  [/^(malloc|_int_malloc|_int_free|free|cfree|__libc_calloc|__libc_malloc|__libc_free|malloc_consolidate|unlink_chunk.*|realloc|_int_realloc)(@.*)?$/, "malloc/free (native)"],
];

const GC = /v8::internal::(Heap::|Scavenger|ScavengerCollector|MarkCompact|MinorMarkCompact|Sweeper|ConcurrentMarking|IncrementalMarking|MarkingVisitor|GCTracer|MemoryAllocator::|ArrayBufferSweeper)|v8::internal::.*GarbageCollect/;
const JIT = /v8::internal::(compiler::|maglev::|Compiler::|OptimizingCompileDispatcher|baseline::|wasm::)|v8::internal::Parser|v8::internal::interpreter::BytecodeGenerator/;

export interface Sample {
  /** Innermost first: symbol and the object it came from. */
  frames: { sym: string; dso: string }[];
}

/** Parses `perf script -F tid,ip,sym,dso` output (blank-line separated samples). */
export function parsePerfScript(text: string): Sample[] {
  const out: Sample[] = [];
  for (const block of text.split(/\n\s*\n/)) {
    const lines = block.split("\n").slice(1);
    const frames: Sample["frames"] = [];
    for (const line of lines) {
      const m = /^\s*[0-9a-f]+ (.*) \(([^()]*)\)\s*$/.exec(line);
      if (m !== null) frames.push({ sym: m[1]!, dso: m[2]! });
    }
    if (frames.length > 0) out.push({ frames });
  }
  return out;
}

export function partOf(s: Sample): Part {
  for (const f of s.frames) {
    if (GC.test(f.sym)) return "GC";
    if (JIT.test(f.sym)) return "JIT compiler";
  }
  for (const f of s.frames) {
    if (f.sym.startsWith("JS:") || f.dso.includes("perf-")) {
      for (const [re, part] of JS_RULES) if (re.test(f.sym)) return part;
      continue;
    }
    for (const [re, part] of NATIVE_RULES) if (re.test(f.sym)) return part;
  }
  // No JavaScript frame of any part: the event loop itself (epoll, reads libuv does on its own).
  return s.frames.some((f) => /uv_run|uv__io_poll|uv__work|worker\b/.test(f.sym)) ? "event loop, syscalls (unattributed)" : "other";
}

export interface Breakdown {
  samples: number;
  /** Share of samples per part (0..1), and how much of that share was in the kernel. */
  parts: Map<Part, { share: number; kernel: number }>;
}

export function breakdown(samples: readonly Sample[]): Breakdown {
  const counts = new Map<Part, { n: number; k: number }>();
  for (const s of samples) {
    const p = partOf(s);
    const c = counts.get(p) ?? { n: 0, k: 0 };
    c.n++;
    if (s.frames[0]?.dso.includes("kernel")) c.k++;
    counts.set(p, c);
  }
  const n = samples.length;
  const parts = new Map<Part, { share: number; kernel: number }>();
  for (const part of PARTS) {
    const c = counts.get(part);
    if (c !== undefined) parts.set(part, { share: c.n / n, kernel: c.k / n });
  }
  return { samples: n, parts };
}

/** A running `perf record` on one process. */
export interface PerfRecording {
  stop(): Promise<Breakdown>;
}

/** Starts sampling `pid` (all its threads) into `file`; resolves once perf is recording. */
export async function recordPerf(pid: number, file: string): Promise<PerfRecording> {
  const perf: ChildProcess = spawn("perf", ["record", "-q", "-F", "2999", "-e", "task-clock", "-g", "-p", String(pid), "-o", file], { stdio: "ignore" });
  const failed = new Promise<never>((_, reject) => perf.once("error", reject));
  // perf writes its header as soon as it records.
  for (let i = 0; i < 200 && !(existsSync(file) && statSync(file).size > 0); i++) {
    await Promise.race([new Promise((r) => setTimeout(r, 50)), failed]);
  }
  return {
    async stop() {
      const exited = new Promise((r) => perf.once("exit", r));
      perf.kill("SIGINT");
      await exited;
      const script = spawnSync("perf", ["script", "-i", file, "-F", "tid,ip,sym,dso"], { encoding: "utf8", maxBuffer: 1 << 30 });
      return breakdown(parsePerfScript(script.stdout));
    },
  };
}

/** The table: µs per request by part for each server (its share of the measured CPU per request). */
export function breakdownTable(columns: [string, Breakdown, number][]): string {
  const head = `  µs CPU per request by part${" ".repeat(10)}${columns.map(([name]) => name.padStart(14)).join("")}`;
  const rows = PARTS.filter((p) => columns.some(([, b]) => (b.parts.get(p)?.share ?? 0) >= 0.002)).map((p) => {
    const cells = columns.map(([, b, perRequest]) => {
      const s = b.parts.get(p);
      return s === undefined ? "-".padStart(14) : `${(s.share * perRequest).toFixed(1)}`.padStart(14);
    });
    return `  ${p.padEnd(37)}${cells.join("")}`;
  });
  const kernel = `  ${"(of which in the kernel)".padEnd(37)}${columns
    .map(([, b, perRequest]) => `${([...b.parts.values()].reduce((a, x) => a + x.kernel, 0) * perRequest).toFixed(1)}`.padStart(14))
    .join("")}`;
  const total = `  ${"total (process.cpuUsage)".padEnd(37)}${columns.map(([, , perRequest]) => perRequest.toFixed(1).padStart(14)).join("")}`;
  const samples = `  ${"(perf samples)".padEnd(37)}${columns.map(([, b]) => String(b.samples).padStart(14)).join("")}`;
  return [head, ...rows, kernel, total, samples].join("\n");
}
