// `npm run bench -- chunked-memory [--sizes 16,64,256] [--warm-mib 8] [--senders sync,hpke-js]`:
// which part of a chunked upload's memory is a fixed cost and which would follow the body's size.
// `--senders` lists how the client seals its chunks, one chunked stack each (default: sync, the
// synchronous node:crypto sender a Node client uses; hpke-js: hpke-js's sender context, what it
// used before). `npm run bench -- chunked-memory --seal` measures the sealing alone instead: ArrayBuffer
// bytes allocated and CPU per byte sealed, against node:crypto AES-GCM alone (bench/chunked-seal.ts); with
// `--respond` as well, the response's chunks sealed by the gateway and opened by the client. For each size and each
// set of V8 flags (the defaults, and --no-liftoff as in the chunked memory test), a fresh stack of
// processes (client -> `veil relay` -> `veil gateway` -> target, bench/chunked.ts) takes a warm-up
// upload and then one chunked upload of that size; the peer is the same topology with two bare
// node:http pipe proxies in place of the relay and the gateway and a plain upload (no OHTTP).
// Every process but the target runs
// bench/chunked-memory-sampler.js (a garbage collection forced every 50 ms, process.memoryUsage()
// every 20 ms). Printed per process: the RSS growth over the upload (peak minus the value when it
// began), and in the same window the growth of the V8 heap in use and the peaks of external memory
// and of ArrayBuffers. Growth that stays the same from 16 to 256 MiB is a fixed cost; growth that
// follows the size would be bytes held.

import { fork } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { intArg } from "./args.js";
import { CHILD, forkChunkedRole, startChunkedStack, type RoleChild } from "./chunked.js";
import { printSealing, type SealDirection, type SealRow } from "./chunked-seal.js";
import type { Result } from "./chunked-child.js";
import type { MemorySample } from "./chunked-memory-sampler.js";

/** The compiled sampler (also when this module runs from its TypeScript source, in tests). */
export const MEMORY_SAMPLER = fileURLToPath(new URL(import.meta.url.endsWith(".ts") ? "../dist/bench/chunked-memory-sampler.js" : "./chunked-memory-sampler.js", import.meta.url));

const MIB = 2 ** 20;

interface Growth {
  rss: number;
  heapUsed: number;
  externalPeak: number;
  arrayBuffersPeak: number;
  /** The ArrayBuffers peak minus their level when the upload began (the peak includes buffers held all along). */
  arrayBuffers: number;
}

const PROCESSES = ["relay", "gateway", "client"] as const;
type Process = (typeof PROCESSES)[number];

/** Growth in MiB over [t0, t1] from one process's sample log. */
function growthOf(file: string, t0: number, t1: number): Growth {
  const samples = readFileSync(file, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as MemorySample);
  const before = samples.filter((s) => s.t <= t0).at(-1) ?? samples[0]!;
  const during = samples.filter((s) => s.t >= t0 && s.t <= t1);
  const peak = (k: keyof MemorySample): number => Math.max(before[k], ...during.map((s) => s[k]));
  return {
    rss: (peak("rss") - before.rss) / MIB,
    heapUsed: (peak("heapUsed") - before.heapUsed) / MIB,
    externalPeak: peak("external") / MIB,
    arrayBuffersPeak: peak("arrayBuffers") / MIB,
    arrayBuffers: (peak("arrayBuffers") - before.arrayBuffers) / MIB,
  };
}

function checked(r: Result, bytes: number): Result {
  const got = JSON.parse(r.answer) as { bytes: number; sha256: string };
  if (r.status !== 200 || got.bytes !== bytes || got.sha256 !== r.sha256) throw new Error(`upload of ${bytes} bytes: status ${r.status}, ${r.answer}`);
  return r;
}

/** A plain upload through bare proxies, or a chunked one whose client seals with the named sender. */
type Mode = "plain" | Sender;
const SENDERS = ["sync", "hpke-js"] as const;
type Sender = (typeof SENDERS)[number];

/** The processes of one fresh stack in `mode`, and how to upload through it. */
async function startStack(mode: Mode, dir: string, nodeArgs: readonly string[], children: { stop(): unknown }[]): Promise<{ pids: Record<Process, number>; upload: (n: number, path: string) => Promise<Result> }> {
  const target: RoleChild = await forkChunkedRole("target");
  children.push(target);
  const targetUrl = `http://127.0.0.1:${target.port}`;
  const client = await forkChunkedRole("client", mode === "hpke-js" ? mode : undefined, [...nodeArgs]);
  children.push(client);
  if (mode === "plain") {
    const second = await forkChunkedRole("proxy", targetUrl, [...nodeArgs]);
    children.push(second);
    const first = await forkChunkedRole("proxy", `http://127.0.0.1:${second.port}`, [...nodeArgs]);
    children.push(first);
    return {
      pids: { relay: first.pid, gateway: second.pid, client: client.pid },
      upload: async (n, path) => checked(await client.upload({ url: `http://127.0.0.1:${first.port}`, mode: "plain", bytes: n, target: path }), n),
    };
  }
  const { gateway, relay, keyConfigs } = await startChunkedStack(dir, targetUrl, nodeArgs);
  children.push({ stop: () => gateway.kill() }, { stop: () => relay.kill() });
  return {
    pids: { relay: relay.child.pid!, gateway: gateway.child.pid!, client: client.pid },
    upload: async (n, path) => checked(await client.upload({ url: `${relay.url}/gw`, mode: "chunked", bytes: n, keys: keyConfigs, target: `https://t.example${path}` }), n),
  };
}

/** One fresh stack: warm-up, then the measured upload. */
async function measure(mode: Mode, bytes: number, warmBytes: number, flags: readonly string[]): Promise<{ mbPerSec: number; growth: Record<Process, Growth> }> {
  const dir = mkdtempSync(join(tmpdir(), "veil-bench-chunked-memory-"));
  // Inherited by the processes started below: where their samplers write.
  process.env.VEIL_MEMORY_LOG_DIR = dir;
  const children: { stop(): unknown }[] = [];
  try {
    const { pids, upload } = await startStack(mode, dir, ["--expose-gc", "--import", MEMORY_SAMPLER, ...flags], children);
    await upload(warmBytes, "/warm");
    const t0 = Date.now();
    const r = await upload(bytes, "/upload");
    const t1 = Date.now();
    const growth = Object.fromEntries(PROCESSES.map((p) => [p, growthOf(join(dir, `${pids[p]}.jsonl`), t0, t1)])) as Record<Process, Growth>;
    return { mbPerSec: bytes / 1e6 / (r.ms / 1000), growth };
  } finally {
    for (const c of children.reverse()) await c.stop();
    delete process.env.VEIL_MEMORY_LOG_DIR;
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs the sealing measurement in a child process of its own (bench/chunked-seal.ts). */
async function sealing(direction: SealDirection): Promise<SealRow[]> {
  const child = fork(CHILD, ["seal", direction], { stdio: ["ignore", "inherit", "inherit", "ipc"], execArgv: ["--expose-gc", "--max-semi-space-size=64"] });
  try {
    return await new Promise<SealRow[]>((resolve, reject) => {
      child.once("exit", (code) => reject(new Error(`the seal measurement exited with ${code}`)));
      child.once("message", (m: { seal?: SealRow[]; error?: string }) => (m.seal !== undefined ? resolve(m.seal) : reject(new Error(m.error))));
    });
  } finally {
    if (child.connected) child.disconnect();
  }
}

/** `--name a,b`: a comma-separated list, or `dflt` when absent. */
function listArg(args: string[], name: string, dflt: string[]): string[] {
  const i = args.indexOf(`--${name}`);
  const v = i >= 0 ? args[i + 1] : undefined;
  return v === undefined ? dflt : v.split(",");
}

export async function run(args: string[]): Promise<void> {
  if (args.includes("--seal")) {
    console.log(`load average before: ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
    printSealing(await sealing(args.includes("--respond") ? "response" : "request"));
    console.log(`load average after: ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
    return;
  }
  const sizes = listArg(args, "sizes", ["16", "64", "256"]).map(Number);
  if (sizes.some((s) => !Number.isInteger(s) || s <= 0)) throw new Error("--sizes: expected positive integers (MiB), comma-separated");
  const senders = listArg(args, "senders", ["sync"]);
  if (!senders.every((s): s is Sender => (SENDERS as readonly string[]).includes(s))) throw new Error(`--senders: expected some of ${SENDERS.join(",")}`);
  const warm = intArg(args, "warm-mib", 8) * MIB;
  console.log(`load average before: ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
  console.log("MiB growth over the upload: RSS (V8 heap used +, external peak, ArrayBuffers peak +their growth); peer: relay = first proxy, gateway = second");
  console.log(`size    | V8 flags     | stack           | MB/s   | ${PROCESSES.map((p) => p.padEnd(32)).join(" | ")} | gateway/peer RSS`);
  for (const flags of [[], ["--no-liftoff"]]) {
    for (const mib of sizes) {
      const cell = (g: Growth): string => `${g.rss.toFixed(1).padStart(5)} (${g.heapUsed.toFixed(1)}, ${g.externalPeak.toFixed(1)}, ${g.arrayBuffersPeak.toFixed(1)} +${g.arrayBuffers.toFixed(1)})`.padEnd(32);
      const peer = await measure("plain", mib * MIB, warm, flags);
      const stacks: [string, Awaited<ReturnType<typeof measure>>][] = [["bare proxies", peer]];
      for (const sender of senders) stacks.push([senders.length > 1 ? `chunked ${sender}` : "chunked OHTTP", await measure(sender, mib * MIB, warm, flags)]);
      for (const [name, m] of stacks) {
        const ratio = m === peer ? "" : `${(m.growth.gateway.rss / Math.max(peer.growth.gateway.rss, 0.1)).toFixed(1)}x`;
        console.log(
          `${`${mib} MiB`.padEnd(7)} | ${(flags.join(" ") || "defaults").padEnd(12)} | ${name.padEnd(15)} | ${m.mbPerSec.toFixed(1).padStart(6)} | ${PROCESSES.map((p) => cell(m.growth[p])).join(" | ")} | ${ratio}`,
        );
      }
    }
  }
  console.log(`load average after: ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
}
