// `npm run bench -- faults [--uploads N] [--concurrency C]`: nothing lost, nothing double-spent.
//
// N uploads (default 10,000) of distinct DAP-09 reports, each with its own Privacy Pass token,
// through the relay (in this process) and the gateway (`veil gateway`, a child process, SQLite
// nonce store) to the DAP leader double (a child process) behind a fault-injecting proxy, while
// faults are injected at random: the aggregator answers 5xx (before or after taking the report),
// cuts the connection (before taking it, or mid-answer), stalls past the gateway's deadline, or
// refuses connections for a while; and the gateway is SIGKILLed once and restarted.
//
// The client is Veil's client library (createObliviousFetch) with the token in the request: it
// resends the identical report with the same token after an uncertain failure (a sealed 5xx, the
// relay's 502/503/504, a network error), and so does the caller when its resends run out. One
// upload in fifty is shadowed by a double-spend attempt: a different report with the same token,
// sent at the same time. At the end:
//   - every report acknowledged with 2xx is at the leader (duplicates of identical reports are
//     allowed: a leader ignores a repeated report id);
//   - no token carried two different reports to the leader;
// and the summary prints the counts. A fault-free phase first (a tenth of N, at most 1,000
// uploads) gives the floor: the throughput ratio shows what the faults cost.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createObliviousFetch, type ObliviousFetch } from "../client/index.js";
import { parseRelayConfig } from "../relay/config.js";
import { startRelay } from "../relay/main.js";
import { createLogger } from "../server/logging.js";
import { reportFactory, type FastReport } from "./dap-reports.js";
import type { FaultMode } from "./fault-proxy.js";
import { forkLeader, freePort, sleep, startDirectIssuer, startVeilChild, writeGatewayKeyFile, type VeilChild } from "./stack.js";
import { numberArg } from "./args.js";

/** Fault probabilities per request at the aggregator (about 10% in all). */
const FAULT_RATES: Partial<Record<FaultMode, number>> = {
  "error-before": 0.02,
  "error-after": 0.02,
  "reset-before": 0.015,
  "reset-after": 0.02,
  "stall-before": 0.01,
  "stall-after": 0.01,
};
/** The gateway's deadline for one exchange with the aggregator (stalls end here). */
const TOTAL_TIMEOUT_MS = 1000;
/** Rounds of (library resends + one caller resend) before an upload is given up as unresolved. */
const MAX_ROUNDS = 60;

type Outcome = "acked" | "refused" | "unresolved";

interface Upload {
  report: FastReport;
  authorization: string;
  outcome?: Outcome;
  /** Status and problem type of the definite refusal. */
  refusal?: string;
  /** A different report sent with the same token at the same time (double-spend attempt). */
  attack?: { report: FastReport; outcome?: Outcome; refusal?: string };
}

interface Stats {
  rounds: number;
  uncertain: number;
}

function problemType(body: string): string {
  try {
    const t = (JSON.parse(body) as { type?: unknown }).type;
    return typeof t === "string" ? t.replace("urn:veil:error:", "") : "?";
  } catch {
    return "?";
  }
}

/** Uploads `report` with `authorization` until a definite answer, resending the identical bytes. */
async function upload(f: ObliviousFetch, url: URL, report: FastReport, authorization: string, stats: Stats): Promise<{ outcome: Outcome; refusal?: string }> {
  for (let round = 0; round < MAX_ROUNDS; round++) {
    stats.rounds++;
    try {
      const res = await f(url, { method: "PUT", headers: { "content-type": "application/dap-report", authorization }, body: new Uint8Array(report.bytes) });
      const body = await res.text();
      if (res.status >= 200 && res.status < 300) return { outcome: "acked" };
      if (res.status < 500) return { outcome: "refused", refusal: `${res.status} ${problemType(body)}` };
      // A sealed 5xx after the library's own resends: still uncertain.
    } catch {
      // The relay or the gateway failed (unreachable, 502/503/504) after the library's resends.
    }
    stats.uncertain++;
    await sleep(50 + Math.random() * 100);
  }
  return { outcome: "unresolved" };
}

export async function run(args: string[]): Promise<void> {
  const uploads = Math.floor(numberArg(args, "uploads", 10_000));
  const concurrency = Math.floor(numberArg(args, "concurrency", 32));
  const cleanUploads = Math.min(1000, Math.max(50, Math.floor(uploads / 10)));
  const dir = mkdtempSync(join(tmpdir(), "veil-bench-faults-"));
  const issuer = await startDirectIssuer();
  const leader = await forkLeader();
  let gateway: VeilChild | undefined;
  let relayStop: (() => Promise<void>) | undefined;
  try {
    const keys = join(dir, "gateway-keys.json");
    await writeGatewayKeyFile(keys);
    const gatewayPort = await freePort();
    const gatewayConfig = {
      keys,
      targets: { "https://leader.example": leader.url },
      upstream: { connectTimeoutMs: 500, headersTimeoutMs: TOTAL_TIMEOUT_MS, bodyTimeoutMs: TOTAL_TIMEOUT_MS, totalTimeoutMs: TOTAL_TIMEOUT_MS },
      tokens: { required: true, issuers: [{ name: issuer.name, directory: issuer.directoryUrl, keyLifetimeSec: 86_400 }], store: `sqlite:${join(dir, "nonces.db")}`, greaseProbability: 0 },
      logLevel: "warn",
    };
    const startGatewayChild = (): Promise<VeilChild> => startVeilChild("gateway", join(dir, "gateway.json"), gatewayConfig, gatewayPort);
    gateway = await startGatewayChild();
    const relay = await startRelay(
      parseRelayConfig({
        listen: { host: "127.0.0.1", port: 0 },
        routes: [{ path: "/leader-gateway", gateway: `${gateway.url}/gateway`, keys: `${gateway.url}/ohttp-keys` }],
        rateLimit: { perClientPerWindow: 0 },
        timeouts: { connectMs: 1000, headersMs: 10_000, bodyMs: 10_000 },
      }),
      { log: createLogger("relay", { level: "silent" }), handleSignals: false },
    );
    relayStop = () => relay.stop();
    // What the relay answered each exchange (outer status, or the network error), for the summary.
    const relayAnswers = new Map<string, number>();
    const count = (k: string): void => {
      relayAnswers.set(k, (relayAnswers.get(k) ?? 0) + 1);
    };
    const countingFetch: typeof fetch = async (input, init) => {
      try {
        const res = await fetch(input, init);
        count(String(res.status));
        return res;
      } catch (e) {
        const code = (e as { cause?: { code?: unknown } }).cause?.code;
        count(`network error (${typeof code === "string" ? code : "?"})`);
        throw e;
      }
    };
    const f = createObliviousFetch({
      relay: `${relay.url}/leader-gateway`,
      keys: `${gateway.url}/ohttp-keys`,
      retries: 3,
      retryDelayMs: 20,
      timeoutMs: 10_000,
      fetch: countingFetch,
    });
    const url = new URL(`https://leader.example/tasks/${leader.task.idBase64Url}/reports`);

    process.stdout.write(`faults: preparing ${cleanUploads + uploads} reports and tokens (+ double-spend attempts)... `);
    const t0 = performance.now();
    const make = await reportFactory(leader.task);
    const prepare = async (n: number, attackEvery: number): Promise<Upload[]> => {
      const out: Upload[] = [];
      for (let i = 0; i < n; i++) {
        const u: Upload = { report: await make(), authorization: issuer.token("leader.example").authorization };
        if (attackEvery > 0 && i % attackEvery === attackEvery - 1) u.attack = { report: await make() };
        out.push(u);
      }
      return out;
    };
    const clean = await prepare(cleanUploads, 0);
    const faulty = await prepare(uploads, 50);
    process.stdout.write(`${((performance.now() - t0) / 1000).toFixed(1)} s\n`);

    const runPhase = async (list: Upload[], onProgress?: (done: number) => void): Promise<{ seconds: number; stats: Stats }> => {
      const stats: Stats = { rounds: 0, uncertain: 0 };
      let next = 0;
      let done = 0;
      const start = performance.now();
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (next < list.length) {
            const u = list[next++]!;
            // The double spend goes first half the time: either may win the token, never both.
            const attackFirst = u.attack !== undefined && Math.random() < 0.5;
            const attack = u.attack === undefined ? undefined : upload(f, url, u.attack.report, u.authorization, stats);
            const honest = (attackFirst ? sleep(1 + Math.random() * 4) : Promise.resolve()).then(() => upload(f, url, u.report, u.authorization, stats));
            const r = await honest;
            u.outcome = r.outcome;
            if (r.refusal !== undefined) u.refusal = r.refusal;
            if (attack !== undefined) {
              const a = await attack;
              u.attack!.outcome = a.outcome;
              if (a.refusal !== undefined) u.attack!.refusal = a.refusal;
            }
            onProgress?.(++done);
          }
        }),
      );
      return { seconds: (performance.now() - start) / 1000, stats };
    };

    // Warm-up (not counted), then phase 1: the floor, no faults.
    const warm = await prepare(Math.min(200, cleanUploads), 0);
    await runPhase(warm);
    const floor = await runPhase(clean);
    process.stdout.write(`faults: fault-free floor: ${clean.length} uploads in ${floor.seconds.toFixed(1)} s\n`);

    // Phase 2: faults at random, refused connections now and then, one gateway restart.
    leader.setFaults(FAULT_RATES);
    const refuseAt = new Set([0.1, 0.25, 0.55, 0.7, 0.85].map((x) => Math.floor(x * uploads)));
    const restartAt = Math.floor(0.4 * uploads);
    let restart: Promise<void> | undefined;
    let restarts = 0;
    let refusedWindows = 0;
    let lastPrint = 0;
    const phase = await runPhase(faulty, (done) => {
      if (refuseAt.has(done)) {
        leader.refuse(200 + Math.floor(Math.random() * 300));
        refusedWindows++;
      }
      if (done === restartAt) {
        restart = (async () => {
          // SIGKILL with requests in flight: some nonces are reserved and never committed.
          await gateway!.kill("SIGKILL");
          await sleep(200);
          gateway = await startGatewayChild();
          restarts++;
        })();
      }
      const now = performance.now();
      if (now - lastPrint > 5000) {
        lastPrint = now;
        process.stdout.write(`faults: ${done}/${uploads}\n`);
      }
    });
    await restart;
    leader.setFaults({});
    const atLeader = await leader.report();

    // The checks.
    const accepted = new Set(atLeader.accepted);
    const all = [...warm, ...clean, ...faulty];
    const acked = all.filter((u) => u.outcome === "acked");
    const lost = acked.filter((u) => !accepted.has(u.report.reportId));
    const attacks = all.filter((u) => u.attack !== undefined);
    const attackAcked = attacks.filter((u) => u.attack!.outcome === "acked");
    const doubleSpent = attacks.filter((u) => accepted.has(u.report.reportId) && accepted.has(u.attack!.report.reportId));
    const refusals = new Map<string, number>();
    for (const u of all) if (u.outcome === "refused") refusals.set(u.refusal!, (refusals.get(u.refusal!) ?? 0) + 1);
    // An honest upload may only be refused because its concurrent double spend won the token.
    const honestRefusedAlone = all.filter((u) => u.outcome === "refused" && !(u.attack !== undefined && u.attack.outcome === "acked"));
    const unresolved = all.filter((u) => u.outcome === "unresolved").length + attacks.filter((u) => u.attack!.outcome === "unresolved").length;
    const notAcked = all.filter((u) => u.outcome !== "acked" && accepted.has(u.report.reportId)).length;
    const { forwarded, refusals: refusalWindows, pass, ...faults } = atLeader.faults;
    void refusalWindows;

    const rate = (n: number, s: number): string => `${(n / s).toFixed(0)}/s`;
    const lines = [
      `faults bench: ${uploads} uploads with faults (+${warm.length + clean.length} fault-free), ${concurrency} in flight, relay -> veil gateway (SQLite nonces) -> fault proxy -> DAP-09 leader double`,
      `  acknowledged with 2xx                 ${acked.length} (all at the leader: ${lost.length === 0 ? "yes" : `NO, ${lost.length} missing`})`,
      `  refused (definite 4xx)                ${[...refusals.values()].reduce((a, b) => a + b, 0)} ${[...refusals].map(([k, v]) => `[${k}: ${v}]`).join(" ")}`,
      `    of them with no double spend racing ${honestRefusedAlone.length}`,
      `  unresolved after ${MAX_ROUNDS} rounds        ${unresolved}`,
      `  caller rounds ${floor.stats.rounds + phase.stats.rounds}, uncertain failures seen by the caller ${floor.stats.uncertain + phase.stats.uncertain}, library exchanges ${f.stats().exchanges} (resends ${f.stats().resends})`,
      `  relay answers: ${[...relayAnswers].sort().map(([k, v]) => `${k} ${v}`).join(", ")}`,
      `  double-spend attempts                 ${attacks.length}: won the token ${attackAcked.length}, refused ${attacks.filter((u) => u.attack!.outcome === "refused").length}`,
      `  tokens with two different reports at the leader: ${doubleSpent.length}`,
      `  leader: accepted ${accepted.size}, duplicates ignored ${atLeader.duplicates}, rejected ${JSON.stringify(atLeader.rejections)}; reports there never acknowledged: ${notAcked}`,
      `  faults injected: ${Object.entries(faults).map(([k, v]) => `${k} ${v}`).join(", ")}; requests passed ${pass}, forwarded ${forwarded}; refused-connection windows ${refusedWindows}; gateway SIGKILL+restart ${restarts}`,
      `  throughput: with faults ${rate(uploads, phase.seconds)} (${phase.seconds.toFixed(1)} s), fault-free floor ${rate(clean.length, floor.seconds)}; ratio ${(uploads / phase.seconds / (clean.length / floor.seconds)).toFixed(2)}`,
    ];
    const ok = lost.length === 0 && doubleSpent.length === 0 && honestRefusedAlone.length === 0 && unresolved === 0;
    lines.push(`  result: ${ok ? "PASS: nothing lost, nothing double-spent" : "FAIL"}`);
    console.log(lines.join("\n"));
    if (!ok) process.exitCode = 1;
  } finally {
    await relayStop?.();
    await gateway?.kill("SIGTERM");
    await leader.stop();
    await issuer.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
