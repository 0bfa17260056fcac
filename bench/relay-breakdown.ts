// Where the relay and its peer spend their CPU per request (`npm run bench -- relay --perf`, and
// `relay-h2 --perf`): one more load run per target under Linux `perf` (task-clock samples of every
// thread of the process, user and kernel, JavaScript frames named through node's
// --perf-basic-prof), each sample given to one part, the shares scaled to the CPU time per request
// measured (/proc) in the same run. Parsing is bench/cpu-breakdown.ts's; the parts are the relay's.
//
// Parts: kernel time by the syscall it ran under (a write on loopback runs the receiver's TCP path
// and wakes it); for the relay, GC and JIT by any frame on the stack, then node:http2's native
// code (nghttp2) and TLS by their frames near the leaf, else the innermost JavaScript frame that
// names a part (the relay's own modules, its log line and metrics, node:http2's JavaScript, node's
// streams and events), else node's and V8's native glue (callbacks into JavaScript, stream base,
// malloc); for nginx, its own code, OpenSSL and libc. V8 inlines small node functions into their
// callers, so "relay code" includes node's stream calls that the relay's functions make directly.

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { parsePerfScript, type Sample } from "./cpu-breakdown.js";
import { cpuUs } from "./nginx.js";

export const RELAY_PARTS = [
  "kernel: write, writev (incl. the receiver's TCP path, wake-ups)",
  "kernel: read, recvfrom",
  "kernel: epoll",
  "kernel: other (softirq, scheduler, futex, faults)",
  "relay code (front, h2, upstream, parsers, forward)",
  "request log line, metrics",
  "node:http2 JavaScript",
  "node:http2 native (nghttp2)",
  "TLS (OpenSSL)",
  "node streams, events, buffers (JavaScript)",
  "node/V8 native glue (callbacks, malloc)",
  "GC",
  "JIT compiler",
  "nginx (user)",
  "libc (user)",
] as const;
type RelayPart = (typeof RELAY_PARTS)[number];

const JS_PARTS: [RegExp, RelayPart][] = [
  [/prom-client|server\/(metrics|logging|lean-answers)\.js|sonic-boom/, "request log line, metrics"],
  [/\/relay\//, "relay code (front, h2, upstream, parsers, forward)"],
  [/node:internal\/http2|node:http2/, "node:http2 JavaScript"],
  [/node:internal\/(streams|stream_base|timers|process)|node:(net|events|stream|buffer|_tls|tls)/, "node streams, events, buffers (JavaScript)"],
];
const GC = /v8::internal::(Heap::|Scavenger|ScavengerCollector|MarkCompact|MinorMarkCompact|Sweeper|ConcurrentMarking|IncrementalMarking|MarkingVisitor|GCTracer|MemoryAllocator::|ArrayBufferSweeper)|GarbageCollect/;
const JIT = /v8::internal::(compiler::|maglev::|Compiler::|OptimizingCompileDispatcher|baseline::)/;

function kernelPart(s: Sample): RelayPart {
  const syms = s.frames.map((f) => f.sym).join(" ");
  if (/ksys_write|do_writev|__x64_sys_write/.test(syms)) return RELAY_PARTS[0];
  if (/ksys_read|__sys_recvfrom|__x64_sys_read/.test(syms)) return RELAY_PARTS[1];
  if (/epoll/.test(syms)) return RELAY_PARTS[2];
  return RELAY_PARTS[3];
}

export function relayPartOf(s: Sample, server: "relay" | "nginx"): RelayPart {
  if (s.frames[0]?.dso.includes("kernel")) return kernelPart(s);
  if (server === "nginx") {
    const dso = s.frames[0]?.dso ?? "";
    return /libssl|libcrypto/.test(dso) ? "TLS (OpenSSL)" : /libc\.so/.test(dso) ? "libc (user)" : "nginx (user)";
  }
  if (s.frames.some((f) => GC.test(f.sym))) return "GC";
  if (s.frames.some((f) => JIT.test(f.sym))) return "JIT compiler";
  const near = s.frames.slice(0, 6);
  const firstJs = near.findIndex((f) => f.sym.startsWith("JS:"));
  const native = firstJs < 0 ? near : near.slice(0, firstJs);
  if (native.some((f) => /nghttp2_|node::http2::/.test(f.sym))) return "node:http2 native (nghttp2)";
  if (native.some((f) => /SSL|ssl3?_|tls1?3?_|aesni|gcm|ghash|sha256|EVP_|TLSWrap/.test(f.sym))) return "TLS (OpenSSL)";
  for (const f of s.frames) {
    if (!f.sym.startsWith("JS:")) continue;
    for (const [re, part] of JS_PARTS) if (re.test(f.sym)) return part;
  }
  return "node/V8 native glue (callbacks, malloc)";
}

export type RelayBreakdown = Map<RelayPart, number>;

/** Samples `pid` with perf while `load` runs; resolves with each part's share of the samples. */
export async function recordRelayBreakdown(pid: number, server: "relay" | "nginx", file: string, load: () => Promise<void>): Promise<RelayBreakdown> {
  const perf: ChildProcess = spawn("perf", ["record", "-q", "-F", "2000", "-e", "task-clock", "-g", "-p", String(pid), "-o", file], { stdio: "ignore" });
  const failed = new Promise<never>((_, reject) => perf.once("error", reject));
  for (let i = 0; i < 200 && !(existsSync(file) && statSync(file).size > 0); i++) {
    await Promise.race([new Promise((r) => setTimeout(r, 50)), failed]);
  }
  await load();
  const exited = new Promise((r) => perf.once("exit", r));
  perf.kill("SIGINT");
  await exited;
  const script = spawnSync("perf", ["script", "-i", file, "-F", "tid,ip,sym,dso"], { encoding: "utf8", maxBuffer: 1 << 30 });
  const samples = parsePerfScript(script.stdout);
  const counts: RelayBreakdown = new Map();
  for (const s of samples) {
    const p = relayPartOf(s, server);
    counts.set(p, (counts.get(p) ?? 0) + 1);
  }
  for (const [p, n] of counts) counts.set(p, n / samples.length);
  return counts;
}

/** µs per request by part for each target (its share times the CPU per request measured in that run). */
export function relayBreakdownTable(columns: [string, RelayBreakdown, number][]): string {
  const width = 66;
  const head = `  ${"µs CPU per request by part".padEnd(width)}${columns.map(([name]) => name.padStart(10)).join("")}`;
  const rows = RELAY_PARTS.filter((p) => columns.some(([, b]) => (b.get(p) ?? 0) >= 0.002)).map(
    (p) => `  ${p.padEnd(width)}${columns.map(([, b, us]) => (b.has(p) ? (b.get(p)! * us).toFixed(1) : "-").padStart(10)).join("")}`,
  );
  const total = `  ${"total (/proc CPU time per request, this run)".padEnd(width)}${columns.map(([, , us]) => us.toFixed(1).padStart(10)).join("")}`;
  return [head, ...rows, total].join("\n");
}

/**
 * The `--perf` round of bench/relay.ts and bench/relay-h2.ts: one more load run per target under
 * perf (nginx's column: its worker), then the table. `load` returns the requests it completed.
 */
export async function perfRound(dir: string, targets: Record<string, string>, pids: Record<string, number>, load: (url: string) => number): Promise<void> {
  const columns: [string, RelayBreakdown, number][] = [];
  for (const [name, url] of Object.entries(targets)) {
    const pid = pids[name]!;
    const before = cpuUs(pid);
    let requests = 0;
    const parts = await recordRelayBreakdown(pid, name === "nginx" ? "nginx" : "relay", join(dir, `${name.replace(/\W/g, "_")}.perf`), async () => {
      requests = load(url);
    });
    columns.push([name, parts, (cpuUs(pid) - before) / requests]);
  }
  console.log("");
  console.log(relayBreakdownTable(columns));
}
