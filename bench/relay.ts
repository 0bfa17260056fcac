// `npm run bench -- relay [--duration S] [--runs N] [--connections C] [--body BYTES] [--idle N] [--compare-slow] [--perf]`
//
// The relay (`veil relay`, one process) against Debian's nginx `proxy_pass` (one worker, keep-alive
// upstream), both in front of the same upstream (an nginx static answer of message/ohttp-res), loaded
// by Debian's `wrk` with the same POST, in the same run. Runs alternate (relay, nginx, nginx, relay,
// ...) so drift from other load on the machine hits both alike. Prints throughput and p99 ratios
// (the throughput ratio as the median of the per-run ratios: `--runs 5` gives five alternating
// runs; `--rounds` is the older name), and the relay's RSS with N open idle client connections.
// Everything on loopback, bounded in time. `--perf` adds one run per target under Linux perf and
// prints the CPU per request by part, relay against nginx (bench/relay-breakdown.ts; the relay then
// runs with --perf-basic-prof throughout).
// Targets: throughput >= 0.8x nginx, p99 <= 2x nginx, RSS <= 150 MB with 1,000 connections.

import { spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { median } from "./args.js";
import { PERF_NODE_FLAGS } from "./cpu-breakdown.js";
import { perfRound } from "./relay-breakdown.js";
import { alternatingRuns, COMPARISON, fmt, freePort, nginxWorker, rssMb, startBenchRelay, startNginxPeer } from "./nginx.js";

interface Options {
  durationSec: number;
  rounds: number;
  connections: number;
  bodyBytes: number;
  idle: number;
  compareSlow: boolean;
  perf: boolean;
}

function parseArgs(args: string[]): Options {
  const o: Options = { durationSec: 10, rounds: 2, connections: 64, bodyBytes: 1024, idle: 1000, compareSlow: false, perf: false };
  const numeric: Record<string, keyof Omit<Options, "compareSlow" | "perf">> = {
    "--duration": "durationSec",
    "--runs": "rounds",
    "--rounds": "rounds",
    "--connections": "connections",
    "--body": "bodyBytes",
    "--idle": "idle",
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const key = numeric[a];
    if (key !== undefined) {
      const v = Number(args[++i]);
      if (!Number.isInteger(v) || v <= 0) throw new Error(`${a}: expected a positive integer`);
      o[key] = v;
    } else if (a === "--compare-slow") {
      o.compareSlow = true;
    } else if (a === "--perf") {
      o.perf = true;
    } else {
      throw new Error(`unknown argument ${a} (known: ${[...Object.keys(numeric), "--compare-slow", "--perf"].join(", ")})`);
    }
  }
  return o;
}

async function waitFor(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(url);
      await res.arrayBuffer();
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

interface WrkResult {
  requests: number;
  rps: number;
  p99Ms: number;
  p50Ms: number;
  errors: string;
}

function toMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (m === null) return NaN;
  const n = Number(m[1]);
  return m[2] === "us" ? n / 1000 : m[2] === "ms" ? n : m[2] === "s" ? n * 1000 : n * 60_000;
}

function wrk(url: string, script: string, connections: number, durationSec: number): WrkResult {
  const r = spawnSync("wrk", ["-t1", `-c${connections}`, `-d${durationSec}s`, "--latency", "-s", script, url], {
    encoding: "utf8",
    timeout: (durationSec + 30) * 1000,
  });
  const out = r.stdout ?? "";
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
  const p99Ms = toMs(/\s99%\s+(\S+)/.exec(out)?.[1] ?? "");
  const p50Ms = toMs(/\s50%\s+(\S+)/.exec(out)?.[1] ?? "");
  const errs = [/Non-2xx or 3xx responses: \d+/.exec(out)?.[0], /Socket errors: .*/.exec(out)?.[0]].filter(Boolean).join("; ");
  return { requests, rps, p99Ms, p50Ms, errors: errs };
}

/** Opens `n` client connections, sends one POST on each, keeps them open (idle). */
async function openIdle(port: number, n: number, request: Buffer): Promise<Socket[]> {
  const sockets: Socket[] = [];
  const batch = 100;
  for (let i = 0; i < n; i += batch) {
    await Promise.all(
      Array.from({ length: Math.min(batch, n - i) }, () => {
        return new Promise<void>((resolve, reject) => {
          const s = connect(port, "127.0.0.1");
          s.on("error", reject);
          s.once("data", () => resolve());
          s.write(request);
          sockets.push(s);
        });
      }),
    );
  }
  return sockets;
}


export async function run(args: string[]): Promise<void> {
  const o = parseArgs(args);
  for (const tool of ["nginx", "wrk"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) {
      console.error(`bench relay: needs Debian's ${tool} (apt-get install ${tool})`);
      process.exitCode = 2;
      return;
    }
  }
  const dir = mkdtempSync(join(tmpdir(), "veil-bench-relay-"));
  const children: ChildProcess[] = [];
  const stopAll = (): void => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  };
  try {
    const [nginxPort, relayPort, slowPort] = [await freePort(), await freePort(), await freePort()];
    const peer = await startNginxPeer(dir, nginxPort, children);
    const upPort = peer.upPort;
    const startRelay = (port: number, fastPath: boolean, name: string): ChildProcess => startBenchRelay(dir, name, port, upPort, children, { fastPath }, o.perf ? PERF_NODE_FLAGS : []);
    const relay = startRelay(relayPort, true, "relay");
    const slow = o.compareSlow ? startRelay(slowPort, false, "relay-slow") : undefined;
    await waitFor(`http://127.0.0.1:${upPort}/gateway`, 10_000);
    await waitFor(`http://127.0.0.1:${relayPort}/healthz`, 20_000);
    if (slow !== undefined) await waitFor(`http://127.0.0.1:${slowPort}/healthz`, 20_000);

    const script = join(dir, "post.lua");
    writeFileSync(script, `wrk.method = "POST"\nwrk.body = string.rep("e", ${o.bodyBytes})\nwrk.headers["Content-Type"] = "message/ohttp-req"\n`);
    const targets: Record<string, string> = {
      relay: `http://127.0.0.1:${relayPort}/leader-gateway`,
      nginx: `http://127.0.0.1:${nginxPort}/leader-gateway`,
    };
    if (slow !== undefined) targets["relay (node:http + Fastify only)"] = `http://127.0.0.1:${slowPort}/leader-gateway`;

    console.log(`relay vs nginx proxy_pass: ${o.rounds} x ${o.durationSec} s per target, wrk -t1 -c${o.connections}, ${o.bodyBytes}-byte POST`);
    console.log(`  ${COMPARISON}`);
    for (const url of Object.values(targets)) wrk(url, script, o.connections, 3); // warm-up (JIT, pools)
    // Per-request CPU time of the process under test: less sensitive than throughput to other load
    // on a shared machine (it still includes kernel time spent on the process's own sockets).
    const pids: Record<string, number> = { relay: relay.pid!, nginx: nginxWorker(peer.proxy.pid!) };
    if (slow !== undefined) pids["relay (node:http + Fastify only)"] = slow.pid!;
    const { results, summary } = alternatingRuns(
      { label: "round", runs: o.rounds, targets, pids },
      (url) => wrk(url, script, o.connections, o.durationSec),
      (res) => res.errors,
    );
    const rl = summary("relay");
    const ng = summary("nginx");

    // RSS with open idle client connections (each served one request first).
    const body = "e".repeat(o.bodyBytes);
    const req = Buffer.from(`POST /leader-gateway HTTP/1.1\r\nHost: relay\r\nContent-Type: message/ohttp-req\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    const rssBefore = rssMb(relay.pid!);
    const sockets = await openIdle(relayPort, o.idle, req);
    await new Promise((r) => setTimeout(r, 200));
    const rssIdle = rssMb(relay.pid!);
    for (const s of sockets) s.destroy();
    // Peak RSS under load with as many active connections.
    const loaded = wrk(targets.relay!, script, o.idle, Math.min(5, o.durationSec));
    const rssPeak = rssMb(relay.pid!, "VmHWM");

    console.log("");
    console.log(`  relay: median ${fmt(rl.rps)} req/s, p99 ${fmt(rl.p99, 2)} ms, ${fmt(rl.cpu, 1)} µs CPU/req`);
    console.log(`  nginx: median ${fmt(ng.rps)} req/s, p99 ${fmt(ng.p99, 2)} ms, ${fmt(ng.cpu, 1)} µs CPU/req`);
    if (slow !== undefined) {
      const sl = summary("relay (node:http + Fastify only)");
      console.log(`  relay without the lean path: median ${fmt(sl.rps)} req/s (${fmt(sl.rps / ng.rps, 2)}x nginx), p99 ${fmt(sl.p99, 2)} ms, ${fmt(sl.cpu, 1)} µs CPU/req`);
    }
    // Each run's relay measurement against the nginx one next to it (same alternation pair).
    const ratios = results.relay!.map((x, i) => x.rps / results.nginx![i]!.rps);
    console.log(`  throughput ratio relay/nginx: ${fmt(rl.rps / ng.rps, 2)}x of the medians; per run ${ratios.map((x) => fmt(x, 2)).join(", ")}`);
    console.log(`  median of ${ratios.length} per-run ratios:   ${fmt(median(ratios), 2)}x   (target >= 0.80x)`);
    console.log(`  p99 ratio relay/nginx:        ${fmt(rl.p99 / ng.p99, 2)}x   (target <= 2.00x)`);
    console.log(`  CPU per request relay/nginx:  ${fmt(rl.cpu / ng.cpu, 2)}x   (nginx's efficiency / the relay's: ${fmt(ng.cpu / rl.cpu, 2)})`);
    console.log(`  relay RSS: ${fmt(rssBefore, 1)} MB idle, ${fmt(rssIdle, 1)} MB with ${o.idle} open client connections (target <= 150 MB)`);
    console.log(`  relay peak RSS incl. wrk -c${o.idle} (${fmt(loaded.rps)} req/s${loaded.errors === "" ? "" : `, ${loaded.errors}`}): ${fmt(rssPeak, 1)} MB`);
    if (o.perf) {
      const pair = { relay: targets.relay!, nginx: targets.nginx! };
      await perfRound(dir, pair, pids, (url) => wrk(url, script, o.connections, o.durationSec).requests);
    }
  } finally {
    stopAll();
    await new Promise((r) => setTimeout(r, 300));
    rmSync(dir, { recursive: true, force: true });
  }
}
