// `npm run bench -- soak [--minutes M] [--probe-seconds S]`: the whole system at about half its
// capacity for M minutes (default 10), looking for leaks and stalls.
//
// The system: `veil issuer`, `veil gateway` (tokens required, SQLite nonce store) and `veil relay`
// as child processes, the DAP-09 leader double in a child process, and Veil's client library here
// (a token source fetching batches from the issuer, oblivious fetch through the relay). First a
// closed-loop probe (S seconds, default 20, 32 uploads in flight) measures the capacity: the floor
// the soak is compared with. Then uploads arrive at half that rate, open loop, for M minutes.
// Every 10 s each process is sampled: RSS (and V8 heap where /metrics has it) and event-loop delay
// p99 over the interval. The summary reports RSS growth from an early sample (after warm-up, at a
// tenth of the run) to the last one (target: under 10%), and errors (target: zero).

import { monitorEventLoopDelay } from "node:perf_hooks";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createObliviousFetch, createTokenSource } from "../client/index.js";
import { reportFactory } from "./dap-reports.js";
import { forkLeader, freePort, rssOf, sleep, startVeilChild, writeGatewayKeyFile, type VeilChild } from "./stack.js";
import { numberArg } from "./args.js";

const CREDENTIAL = "soak-client-credential";
const SAMPLE_EVERY_MS = 10_000;

interface Sample {
  atSec: number;
  rss: number;
  heapUsed?: number;
  eldP99Ms: number;
}

function metric(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, "m").exec(text);
  return m === null ? undefined : Number(m[1]);
}

async function sampleServer(c: VeilChild, atSec: number): Promise<Sample> {
  const rss = rssOf(c.child.pid!);
  try {
    const text = await (await fetch(`${c.url}/metrics`)).text();
    const heapUsed = metric(text, "veil_nodejs_heap_size_used_bytes");
    return { atSec, rss, ...(heapUsed === undefined ? {} : { heapUsed }), eldP99Ms: (metric(text, "veil_nodejs_eventloop_lag_p99_seconds") ?? NaN) * 1000 };
  } catch {
    return { atSec, rss, eldP99Ms: NaN };
  }
}

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const mb = (b: number): string => (b / 2 ** 20).toFixed(1);

export async function run(args: string[]): Promise<void> {
  const minutes = numberArg(args, "minutes", 10);
  const probeSeconds = numberArg(args, "probe-seconds", 20);
  const dir = mkdtempSync(join(tmpdir(), "veil-bench-soak-"));
  const leader = await forkLeader();
  const servers: VeilChild[] = [];
  try {
    const [issuerPort, gatewayPort, relayPort] = [await freePort(), await freePort(), await freePort()];
    const issuer = await startVeilChild(
      "issuer",
      join(dir, "issuer.json"),
      {
        name: "issuer.example",
        keys: join(dir, "issuer-keys.json"),
        tokenTypes: [2],
        attester: { credentials: [CREDENTIAL], tokensPerWindow: 100_000_000, windowSec: 86_400 },
        logLevel: "warn",
      },
      issuerPort,
    );
    servers.push(issuer);
    const keys = join(dir, "gateway-keys.json");
    await writeGatewayKeyFile(keys);
    const gateway = await startVeilChild(
      "gateway",
      join(dir, "gateway.json"),
      {
        keys,
        targets: { "https://leader.example": leader.url },
        tokens: {
          required: true,
          issuers: [{ name: "issuer.example", directory: `${issuer.url}/.well-known/private-token-issuer-directory` }],
          store: `sqlite:${join(dir, "nonces.db")}`,
        },
        logLevel: "warn",
      },
      gatewayPort,
    );
    servers.push(gateway);
    const relay = await startVeilChild(
      "relay",
      join(dir, "relay.json"),
      { routes: [{ path: "/leader-gateway", gateway: `${gateway.url}/gateway`, keys: `${gateway.url}/ohttp-keys` }], rateLimit: { perClientPerWindow: 0 }, logLevel: "warn" },
      relayPort,
    );
    servers.push(relay);

    const tokens = createTokenSource({ issuer: issuer.url, credential: CREDENTIAL, batch: 100, concurrency: 4, refillJitterMs: 0 });
    const f = createObliviousFetch({ relay: `${relay.url}/leader-gateway`, keys: `${gateway.url}/ohttp-keys`, tokens, retries: 0 });
    const url = new URL(`https://leader.example/tasks/${leader.task.idBase64Url}/reports`);
    await f.prepare(url);
    const make = await reportFactory(leader.task);

    let errors = 0;
    const errorKinds = new Map<string, number>();
    const latencies: number[] = [];
    const uploadOne = async (record: boolean): Promise<void> => {
      const t = performance.now();
      const report = await make();
      try {
        const res = await f(url, { method: "PUT", headers: { "content-type": "application/dap-report" }, body: new Uint8Array(report.bytes) });
        await res.arrayBuffer();
        if (res.status < 200 || res.status >= 300) throw new Error(`status ${res.status}`);
        if (record) latencies.push(performance.now() - t);
      } catch (e) {
        errors++;
        const k = (e as { code?: string }).code ?? (e as Error).message;
        errorKinds.set(k, (errorKinds.get(k) ?? 0) + 1);
      }
    };

    // The probe: capacity with 32 uploads in flight.
    let probeDone = 0;
    const probeEnd = performance.now() + probeSeconds * 1000;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (performance.now() < probeEnd) {
          await uploadOne(false);
          probeDone++;
        }
      }),
    );
    const capacity = probeDone / probeSeconds;
    const rate = capacity / 2;
    const probeErrors = errors === 0 ? "no errors" : `${errors} errors ${JSON.stringify(Object.fromEntries(errorKinds))}`;
    errors = 0;
    errorKinds.clear();
    console.log(`soak: capacity ${capacity.toFixed(1)} uploads/s (${probeDone} in ${probeSeconds} s with 32 in flight, ${probeErrors}); soaking at ${rate.toFixed(1)}/s for ${minutes} min`);

    // The soak: open-loop arrivals at `rate`, sampled every 10 s.
    const eld = monitorEventLoopDelay({ resolution: 10 });
    eld.enable();
    const samples = new Map<string, Sample[]>([["issuer", []], ["gateway", []], ["relay", []], ["leader double", []], ["client (this)", []]]);
    const start = performance.now();
    const end = start + minutes * 60_000;
    const inFlight = new Set<Promise<void>>();
    let sent = 0;
    let skipped = 0;
    let nextSample = start + SAMPLE_EVERY_MS;
    while (performance.now() < end) {
      const due = Math.floor(((performance.now() - start) / 1000) * rate);
      while (sent < due) {
        sent++;
        // Beyond 512 outstanding the system is not keeping up: count, do not pile on.
        if (inFlight.size >= 512) {
          skipped++;
          continue;
        }
        const p = uploadOne(true).finally(() => inFlight.delete(p));
        inFlight.add(p);
      }
      if (performance.now() >= nextSample) {
        nextSample += SAMPLE_EVERY_MS;
        const atSec = Math.round((performance.now() - start) / 1000);
        for (const s of servers) samples.get(s.name)!.push(await sampleServer(s, atSec));
        const l = await leader.sample();
        samples.get("leader double")!.push({ atSec, rss: l.rss, eldP99Ms: l.eldP99Ms });
        samples.get("client (this)")!.push({ atSec, rss: process.memoryUsage.rss(), heapUsed: process.memoryUsage().heapUsed, eldP99Ms: eld.percentile(99) / 1e6 });
        eld.reset();
        const g = samples.get("gateway")!.at(-1)!;
        console.log(`soak: ${atSec} s, ${sent} sent, ${inFlight.size} in flight, ${errors} errors; gateway RSS ${mb(g.rss)} MB, loop p99 ${g.eldP99Ms.toFixed(1)} ms`);
      }
      await sleep(5);
    }
    await Promise.all(inFlight);
    tokens.close();

    const seconds = (performance.now() - start) / 1000;
    latencies.sort((a, b) => a - b);
    const lines = [
      `soak bench: ${minutes} min at ${rate.toFixed(1)} uploads/s (half the measured capacity of ${capacity.toFixed(1)}/s) through client -> relay -> gateway -> leader double, tokens from the issuer`,
      `  uploads sent ${sent} (${(sent / seconds).toFixed(1)}/s achieved, ratio to capacity ${(sent / seconds / capacity).toFixed(2)}), not sent (over 512 outstanding) ${skipped}`,
      `  errors ${errors}${errorKinds.size === 0 ? "" : ` ${JSON.stringify(Object.fromEntries(errorKinds))}`}; latency p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms`,
      `  every ${SAMPLE_EVERY_MS / 1000} s: RSS MB (event-loop delay p99 ms over the interval)`,
    ];
    for (const [name, list] of samples) {
      lines.push(`    ${name.padEnd(14)} ${list.map((s) => `${mb(s.rss)} (${s.eldP99Ms.toFixed(1)})`).join("  ")}`);
    }
    lines.push("  growth from the sample after warm-up (a tenth of the run) to the last:");
    let worst = 0;
    for (const [name, list] of samples) {
      if (list.length < 2) continue;
      const base = list[Math.max(1, Math.floor(list.length / 10))] ?? list[0]!;
      const last = list.at(-1)!;
      const growth = last.rss / base.rss - 1;
      if (name !== "client (this)") worst = Math.max(worst, growth);
      const heap = base.heapUsed !== undefined && last.heapUsed !== undefined ? `, V8 heap used ${mb(base.heapUsed)} -> ${mb(last.heapUsed)} MB` : "";
      const eldMax = Math.max(...list.map((s) => (Number.isFinite(s.eldP99Ms) ? s.eldP99Ms : 0)));
      lines.push(`    ${name.padEnd(14)} RSS ${mb(base.rss)} MB at ${base.atSec} s -> ${mb(last.rss)} MB at ${last.atSec} s: ${(growth * 100).toFixed(1)}%${heap}; worst loop p99 ${eldMax.toFixed(1)} ms`);
    }
    const ok = errors === 0 && worst < 0.1;
    lines.push(`  result: ${ok ? "PASS" : "FAIL"} (targets: RSS growth of the servers under 10%, zero errors)`);
    console.log(lines.join("\n"));
    if (!ok) process.exitCode = 1;
  } finally {
    for (const s of servers.reverse()) await s.kill("SIGTERM");
    await leader.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
