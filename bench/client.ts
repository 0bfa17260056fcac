// `npm run bench -- client [--reports N]`
//
// Latency of one DAP-09 report upload (@divviup/dap 0.9 Task.sendMeasurement, Prio3Count) through
// the whole Veil stack - client library -> relay -> gateway (Privacy Pass token required) -> leader
// double - against its floor: the same Task uploading directly to the same leader double with the
// platform fetch. Everything runs in this process on loopback, sequentially, one report at a time,
// after a warm-up; tokens are fetched ahead of time (as the client library does), and their
// issuance is measured on its own. Both paths build and encrypt the report the same way, so the
// difference is what the oblivious path adds: BHTTP, OHTTP encapsulation, the relay hop, the
// gateway's decapsulation and token check, and the sealed answer.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Task } from "@divviup/dap";
import { createObliviousFetch, createTokenSource } from "../client/index.js";
import { uploadUrl } from "../client/dap.js";
import { createDapTask, startDapAggregator } from "../demo/dap-aggregator.js";
import { parseGatewayConfig } from "../gateway/config.js";
import { startGateway } from "../gateway/main.js";
import { parseIssuerConfig } from "../issuer/config.js";
import { startIssuer } from "../issuer/main.js";
import { parseRelayConfig } from "../relay/config.js";
import { startRelay } from "../relay/main.js";
import { createLogger } from "../server/logging.js";
import { intArg } from "./args.js";
import { writeGatewayKeyFile } from "./stack.js";


function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function summary(ms: number[]): { median: number; p90: number; mean: number } {
  const s = [...ms].sort((a, b) => a - b);
  return { median: pct(s, 50), p90: pct(s, 90), mean: ms.reduce((a, b) => a + b, 0) / ms.length };
}

async function time(n: number, f: (i: number) => Promise<void>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await f(i);
    out.push(performance.now() - t0);
  }
  return out;
}

export async function run(args: string[]): Promise<void> {
  const reports = intArg(args, "reports", 50);
  const warmup = Math.min(10, reports);
  const dir = mkdtempSync(join(tmpdir(), "veil-bench-client-"));
  const log = (name: string) => createLogger(name, { level: "silent" });
  const task = await createDapTask();
  const leader = await startDapAggregator({ role: "leader", tasks: [task] });
  const helper = await startDapAggregator({ role: "helper", tasks: [task] });
  const issuer = await startIssuer(
    parseIssuerConfig({
      listen: { host: "127.0.0.1", port: 0 },
      name: "issuer.example",
      keys: join(dir, "issuer-keys.json"),
      tokenTypes: [2],
      attester: { credentials: ["bench-credential"], tokensPerWindow: 1_000_000, windowSec: 86_400 },
      logLevel: "silent",
    }),
    { log: log("issuer"), handleSignals: false },
  );
  const keyFile = join(dir, "gateway-keys.json");
  await writeGatewayKeyFile(keyFile);
  const gateway = await startGateway(
    parseGatewayConfig({
      listen: { host: "127.0.0.1", port: 0 },
      keys: keyFile,
      targets: { "https://leader.example": leader.url, "https://helper.example": helper.url },
      policy: "dap",
      tokens: {
        required: true,
        issuers: [{ name: "issuer.example", directory: `${issuer.url}/.well-known/private-token-issuer-directory`, keyLifetimeSec: 604_800 }],
        store: "memory",
      },
      logLevel: "silent",
    }),
    { log: log("gateway"), handleSignals: false },
  );
  const relay = await startRelay(
    parseRelayConfig({
      listen: { host: "127.0.0.1", port: 0 },
      routes: [{ path: "/leader-gateway", gateway: `${gateway.url}/gateway`, keys: `${gateway.url}/ohttp-keys` }],
      rateLimit: { perClientPerWindow: 0 },
      logLevel: "silent",
    }),
    { log: log("relay"), handleSignals: false },
  );

  try {
    const total = warmup + reports;
    // Floor: the same Task, straight to the leader double with the platform fetch.
    const direct = new Task({ type: "count", id: task.idBase64Url, leader: leader.url, helper: helper.url, timePrecisionSeconds: 3600 });
    await direct.fetchKeyConfiguration();

    // Through the stack: tokens fetched ahead of time, then one token per report.
    const tokens = createTokenSource({ issuer: issuer.url, credential: "bench-credential", batch: 2 * total, budget: 2 * total, refillJitterMs: 0 });
    const f = createObliviousFetch({ relay: `${relay.url}/leader-gateway`, keys: `${gateway.url}/ohttp-keys`, relayKeys: true, tokens });
    const oblivious = new Task({ type: "count", id: task.idBase64Url, leader: "https://leader.example", helper: "https://helper.example", timePrecisionSeconds: 3600 });
    oblivious.fetch = f;
    const t0 = performance.now();
    await f.prepare(uploadUrl("https://leader.example", task.idBase64Url));
    const issuanceMs = (performance.now() - t0) / (2 * total);
    await oblivious.fetchKeyConfiguration();

    await time(warmup, () => direct.sendMeasurement(true));
    await time(warmup, () => oblivious.sendMeasurement(true));
    // Interleave in rounds so both paths see the same machine load.
    const directMs: number[] = [];
    const obliviousMs: number[] = [];
    const round = 10;
    for (let done = 0; done < reports; done += round) {
      const n = Math.min(round, reports - done);
      directMs.push(...(await time(n, () => direct.sendMeasurement(true))));
      obliviousMs.push(...(await time(n, () => oblivious.sendMeasurement(true))));
    }
    // The transport alone: PUT one pre-built report (the leader ignores the repeated report id).
    const report = new Uint8Array((await direct.generateReport(true)).encode());
    const path = `tasks/${task.idBase64Url}/reports`;
    const put = { method: "PUT", headers: { "content-type": "application/dap-report" }, body: report };
    const rawDirect = (i: number) => fetch(new URL(path, leader.url), put).then((r) => void r.arrayBuffer().then(() => i));
    const rawOblivious = (i: number) => f(`https://leader.example/${path}`, put).then((r) => void r.arrayBuffer().then(() => i));
    await time(warmup, rawDirect);
    await time(warmup, rawOblivious);
    const rawDirectMs: number[] = [];
    const rawObliviousMs: number[] = [];
    for (let done = 0; done < reports; done += round) {
      const n = Math.min(round, reports - done);
      rawDirectMs.push(...(await time(n, rawDirect)));
      rawObliviousMs.push(...(await time(n, rawOblivious)));
    }
    const rd = summary(rawDirectMs);
    const ro = summary(rawObliviousMs);

    const d = summary(directMs);
    const o = summary(obliviousMs);
    const accepted = leader.acceptedCount();
    console.log(`client upload latency, Prio3Count, ${reports} reports each (after ${warmup} warm-up), sequential, loopback`);
    console.log(`  direct to leader (floor):            median ${d.median.toFixed(2)} ms  p90 ${d.p90.toFixed(2)} ms  mean ${d.mean.toFixed(2)} ms`);
    console.log(`  client -> relay -> gateway (tokens):  median ${o.median.toFixed(2)} ms  p90 ${o.p90.toFixed(2)} ms  mean ${o.mean.toFixed(2)} ms`);
    console.log(`  ratio (median): ${(o.median / d.median).toFixed(2)}x; added per report: ${(o.median - d.median).toFixed(2)} ms`);
    console.log(`transport only (PUT of a pre-built ${report.length}-byte report):`);
    console.log(`  direct fetch (floor):                 median ${rd.median.toFixed(2)} ms  p90 ${rd.p90.toFixed(2)} ms`);
    console.log(`  oblivious fetch (relay, gateway, token): median ${ro.median.toFixed(2)} ms  p90 ${ro.p90.toFixed(2)} ms  ratio ${(ro.median / rd.median).toFixed(2)}x`);
    console.log(`  token issuance ahead of time (batch of ${2 * total}, incl. challenge probe): ${issuanceMs.toFixed(1)} ms per token`);
    console.log(`  reports accepted by the leader: ${accepted} (expected ${2 * total + 1}: the transport runs repeat one report id); exchanges ${f.stats().exchanges}, 401 retries ${f.stats().challengeRetries}`);
    tokens.close();
  } finally {
    await relay.stop();
    await gateway.stop();
    await issuer.stop();
    await leader.close();
    await helper.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
