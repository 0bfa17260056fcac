// `veil demo --reports N`: uploads N real DAP-09 reports (@divviup/dap, the demo task's VDAF)
// through the system `npm start` runs: client library -> relay -> gateway (one Privacy Pass token
// per report, from the issuer with the demo credential) -> DAP leader. Everything it needs (URLs,
// task, credential file) comes from data/demo.json, written by `veil start`.
//
// Prints a progress bar (on a terminal) and a summary: landed, refused, failed, time. Exit status
// 0 only if every report landed.

import { performance } from "node:perf_hooks";
import { randomInt } from "node:crypto";
import { Command, InvalidArgumentError, Option } from "commander";
import cliProgress from "cli-progress";
import { isProtocolError } from "../core/errors.js";
import { ARC_TOKEN_TYPE, TOKEN_TYPE } from "../core/privacypass/token-type.js";
import { createObliviousFetch, createTokenSource, type TokenSource } from "../client/index.js";
import type { DapMeasurement } from "../client/dap.js";
import { importOptional } from "../server/optional-dependency.js";
import { readDemoState, readSecretFile, type DemoState } from "./local-data.js";
import type { DemoVdaf } from "./prio3-aggregate.js";
import { START_DEFAULTS } from "./start.js";

/** Every default of `veil demo`. */
export const DEMO_DEFAULTS = Object.freeze({
  reports: 10,
  /** Reports in flight at once: enough to keep both hops busy on a laptop. */
  concurrency: 8,
  /** Tokens per issuer batch (capped by the number of reports: none are left over). */
  batch: 100,
  /** Timeout of one relay exchange. */
  timeoutMs: 30_000,
});

export interface DemoRunOptions {
  dataDir: string;
  reports: number;
  concurrency: number;
  /** "random" (the default), or a fixed measurement for every report. */
  measurement: string;
  progress: boolean;
  json: boolean;
  /** "2" (Blind RSA tokens, one per report; the default) or "arc" (rate-limited credentials). */
  tokenType?: "2" | "arc";
  /** Output (default stdout / stderr). */
  out?: (text: string) => void;
  err?: (text: string) => void;
}

export interface DemoSummary {
  reports: number;
  landed: number;
  refused: number;
  failed: number;
  notSent: number;
  seconds: number;
  reportsPerSecond: number;
  tokensIssued: number;
  /** What the reports carried, e.g. how many said "yes" (count) or their sum. */
  sent: string;
  reasons: Record<string, { message: string; n: number }>;
}

function measurementFor(v: DemoVdaf, fixed: string): () => DapMeasurement {
  if (fixed !== "random") {
    const t = fixed.trim().toLowerCase();
    if (v.vdaf === "count") {
      if (!["0", "1", "true", "false"].includes(t)) throw new InvalidArgumentError("--measurement for a count task is 0, 1 or random");
      return () => t === "1" || t === "true";
    }
    if (!/^\d+$/.test(t)) throw new InvalidArgumentError("--measurement must be a non-negative integer or random");
    return () => Number(t);
  }
  if (v.vdaf === "count") return () => randomInt(2) === 1;
  if (v.vdaf === "sum") return () => randomInt(Math.min(2 ** v.bits, 2 ** 31));
  return () => randomInt(v.length);
}

function describeSent(v: DemoVdaf, sent: DapMeasurement[]): string {
  if (v.vdaf === "count") return `${sent.filter((m) => m === true).length} of them said yes: the leader's count grows by that much`;
  if (v.vdaf === "sum") return `their sum is ${sent.reduce<number>((a, m) => a + Number(m), 0)}`;
  const buckets = new Array<number>(v.length).fill(0);
  for (const m of sent) buckets[Number(m)]!++;
  return `buckets [${buckets.join(", ")}]`;
}

/** Runs the demo upload; returns the summary (the command sets the exit status from it). */
export async function runDemo(o: DemoRunOptions): Promise<DemoSummary> {
  const out = o.out ?? ((t: string) => process.stdout.write(t));
  const err = o.err ?? ((t: string) => process.stderr.write(t));
  const { createDapTask, uploadOne, uploadUrl } = await importOptional(() => import("../client/dap.js"), "@divviup/dap", "veil demo");
  const state: DemoState = readDemoState(o.dataDir);
  const credential = readSecretFile(state.credentialFile).trim();
  const next = measurementFor(state.vdaf, o.measurement);

  const started = performance.now();
  const tokens: TokenSource = createTokenSource({
    issuer: state.issuer,
    credential,
    batch: Math.min(o.reports, DEMO_DEFAULTS.batch),
    budget: o.reports,
    refillJitterMs: 0,
    tokenTypes: [o.tokenType === "arc" ? ARC_TOKEN_TYPE : TOKEN_TYPE.BLIND_RSA_2048],
  });
  const counts = { landed: 0, refused: 0, failed: 0 };
  const reasons = new Map<string, { message: string; n: number }>();
  const sent: DapMeasurement[] = [];
  let fatal: string | undefined;
  try {
    const fetch = createObliviousFetch({ relay: state.relay, keys: state.keys, relayKeys: state.relayKeys, tokens, timeoutMs: DEMO_DEFAULTS.timeoutMs });
    const v = state.vdaf;
    const task = createDapTask({
      vdaf: v.vdaf,
      ...(v.vdaf === "sum" ? { bits: v.bits } : {}),
      ...(v.vdaf === "histogram" ? { length: v.length, chunkLength: v.chunkLength } : {}),
      taskId: state.taskId,
      leader: state.leader,
      helper: state.helper,
      timePrecisionSec: state.timePrecisionSec,
      fetch,
    });
    // The gateway's keys and challenge, the first batch of tokens, the aggregators' HPKE configs.
    await fetch.prepare(uploadUrl(state.leader, state.taskId));
    await task.fetchKeyConfiguration();

    const showBar = o.progress && process.stderr.isTTY === true;
    const bar = new cliProgress.SingleBar(
      { stream: process.stderr, format: "uploading [{bar}] {value}/{total} reports | {landed} landed | {failed} not landed | {rate}/s", hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    if (showBar) bar.start(o.reports, 0, { landed: 0, failed: 0, rate: 0 });
    let started_ = 0;
    let done = 0;
    const step = Math.max(1, Math.floor(o.reports / 10));
    const worker = async (): Promise<void> => {
      while (started_ < o.reports && fatal === undefined) {
        started_++;
        const m = next();
        const r = await uploadOne(task, m);
        done++;
        if (r.ok) {
          counts.landed++;
          sent.push(m);
        } else {
          if (r.refused) counts.refused++;
          else counts.failed++;
          const seen = reasons.get(r.code);
          if (seen === undefined) reasons.set(r.code, { message: r.message, n: 1 });
          else seen.n++;
          if (r.fatal) fatal ??= `${r.message} [${r.code}]`;
        }
        const rate = Math.round(done / ((performance.now() - started) / 1000));
        if (showBar) bar.update(done, { landed: counts.landed, failed: counts.refused + counts.failed, rate });
        else if (o.progress && !o.json && (done % step === 0 || done === o.reports)) err(`${done}/${o.reports} reports (${counts.landed} landed)\n`);
      }
    };
    await Promise.all(Array.from({ length: Math.min(o.concurrency, o.reports) }, worker));
    if (showBar) bar.stop();
  } finally {
    tokens.close();
  }

  const seconds = (performance.now() - started) / 1000;
  const attempted = counts.landed + counts.refused + counts.failed;
  const summary: DemoSummary = {
    reports: o.reports,
    ...counts,
    notSent: o.reports - attempted,
    seconds: Number(seconds.toFixed(3)),
    reportsPerSecond: Number((attempted / seconds).toFixed(1)),
    tokensIssued: tokens.stats().issued,
    sent: describeSent(state.vdaf, sent),
    reasons: Object.fromEntries(reasons),
  };
  if (o.json) {
    out(JSON.stringify(summary) + "\n");
  } else {
    out(
      `${summary.landed}/${o.reports} reports landed, ${summary.refused} refused, ${summary.failed} failed` +
        `${summary.notSent > 0 ? `, ${summary.notSent} not sent` : ""} in ${summary.seconds} s (${summary.reportsPerSecond} reports/s, ` +
        `${summary.tokensIssued} tokens issued)\n`,
    );
    if (summary.landed > 0) out(`Of the reports that landed, ${summary.sent}.\n`);
    for (const [code, r] of reasons) err(`  ${r.n} x ${r.message} [${code}]\n`);
  }
  if (fatal !== undefined) err(`veil demo: stopped: ${fatal}\n`);
  return summary;
}

function positive(name: string, max: number): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < 1 || n > max) throw new InvalidArgumentError(`${name} must be an integer from 1 to ${max}`);
    return n;
  };
}

export function demoCommand(): Command {
  return new Command("demo")
    .description("upload DAP reports through the system `npm start` runs (relay -> gateway -> leader, a token each)")
    .option("--reports <n>", "number of reports", positive("--reports", 10_000_000), DEMO_DEFAULTS.reports)
    .option("--concurrency <n>", "reports in flight at once", positive("--concurrency", 256), DEMO_DEFAULTS.concurrency)
    .option("--measurement <m>", "what every report says (count: 0 or 1), or random", "random")
    .option("--data <dir>", "the data directory of `veil start`", START_DEFAULTS.dataDir)
    .option("--no-progress", "no progress output")
    .option("--json", "print the summary as one JSON line")
    .addOption(
      new Option("--token-type <type>", "2: a Blind RSA token per report; arc: ARC credentials (one issuance for many reports, rate-limited per task and day)")
        .choices(["2", "arc"])
        .default("2"),
    )
    .action(async (o: { reports: number; concurrency: number; measurement: string; data: string; progress: boolean; json?: boolean; tokenType: "2" | "arc" }) => {
      try {
        const s = await runDemo({
          dataDir: o.data,
          reports: o.reports,
          concurrency: o.concurrency,
          measurement: o.measurement,
          progress: o.progress,
          json: o.json === true,
          tokenType: o.tokenType,
        });
        if (s.landed !== o.reports) process.exitCode = 1;
      } catch (e) {
        const msg = isProtocolError(e) ? `${e.message} [${e.code}]` : e instanceof Error ? e.message : String(e);
        process.stderr.write(`veil demo: ${msg}\n`);
        if (isProtocolError(e) && e.code.startsWith("CLIENT_ERR_")) process.stderr.write("veil demo: is the system running? start it with: npm start\n");
        process.exitCode = 1;
      }
    });
}
