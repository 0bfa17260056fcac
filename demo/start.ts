// `npm start` = `veil start`: the whole local system with embedded defaults and no configuration:
//
//   relay    :8080  POST /gateway (encapsulated requests), GET /gateway/ohttp-keys (a copy of the keys)
//   gateway  :8081  GET /ohttp-keys, POST /gateway; tokens required; SQLite nonce store
//   issuer   :8082  Privacy Pass (type 2) with an attester holding the demo credential
//   leader   :8083  DAP-09 leader (the double of demo/dap-aggregator.ts, decrypting every report)
//   helper   :8084  DAP-09 helper
//
// Keys, the nonce store, the demo task and credential live under ./data (demo/local-data.ts),
// created on first start and reused after. The configurations the servers run with are written
// there too (data/relay.json, gateway.json, issuer.json), so each server can be run on its own
// with `veil <server> --config data/<server>.json`.
//
// One process runs all five servers (fast start, one Ctrl-C). `--workers N` runs the gateway and
// the relay in N worker processes each (node:cluster); the aggregators and the issuer stay in the
// primary process. SIGTERM or Ctrl-C stops everything within 10 seconds.

import { ARC_TOKEN_TYPE } from "../core/privacypass/token-type.js";
import cluster from "node:cluster";
import { createServer } from "node:net";
import { join } from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { isProtocolError } from "../core/errors.js";
import { fromHex } from "../core/bytes.js";
import { loadGatewayConfig, parseGatewayConfig, type GatewayConfig } from "../gateway/config.js";
import { startGateway } from "../gateway/main.js";
import { parseIssuerConfig } from "../issuer/config.js";
import { startIssuer } from "../issuer/main.js";
import { loadRelayConfig, parseRelayConfig, type RelayConfig } from "../relay/config.js";
import { startRelay } from "../relay/main.js";
import { parseWorkers, runPrimary, serveWithWorkers, type Stoppable } from "../server/cluster.js";
import { createLogger, safeError, type Logger } from "../server/logging.js";
import { startDapAggregator, type AcceptedReport, type DapAggregator } from "./dap-aggregator.js";
import {
  DATA_FILES,
  ensureCredential,
  ensureDataDir,
  ensureDemoTask,
  ensureGatewayKeys,
  writeDemoState,
  writeFileAtomic,
  type DemoState,
} from "./local-data.js";
import type { DemoVdaf, Prio3Aggregation } from "./prio3-aggregate.js";
import { importOptional } from "../server/optional-dependency.js";

/** Every default of `veil start`, in one place. */
export const START_DEFAULTS = Object.freeze({
  /** Where keys, the nonce store, the demo task and credential live. */
  dataDir: "data",
  /** Loopback only: the demo has no TLS and a well-known credential file. */
  host: "127.0.0.1",
  ports: Object.freeze({ relay: 8080, gateway: 8081, issuer: 8082, leader: 8083, helper: 8084 }),
  /** Warnings and errors only: one request log line per hop per report would bury the summary. */
  logLevel: "warn",
  /** The relay resource for the gateway. */
  relayPath: "/gateway",
  /** The issuer's name in challenges. */
  issuerName: "localhost",
  /** Tokens the demo credential may get per day: enough for benchmarks and long demos. */
  tokensPerWindow: 10_000_000,
  /** ARC (`veil demo --token-type arc`): reports per credential, DAP task and epoch (a day). */
  arcRateLimit: 100,
  /** Each server's shutdown grace: everything must be down within 10 s of SIGTERM. */
  shutdownGraceMs: 5_000,
  /** After a signal, the process exits by this time even if something hangs. */
  hardExitMs: 9_000,
  /** How often the aggregate is printed while reports arrive. */
  summaryEveryMs: 1_000,
});

export type ServerName = keyof typeof START_DEFAULTS.ports;

export interface StartOptions {
  dataDir: string;
  host: string;
  ports: Record<ServerName, number>;
  logLevel: string;
  /** Lines for the operator (the banner, aggregate updates); default stdout. */
  print?: (line: string) => void;
  /** Loggers of the servers (tests capture them); default pino to stdout. */
  logger?: (component: string) => Logger;
}

export interface LocalSystem {
  state: DemoState;
  leader: DapAggregator;
  helper: DapAggregator;
  aggregation: Prio3Aggregation;
  urls: Record<ServerName, string>;
  stop(): Promise<void>;
}

const URL_HOST = (host: string): string => (host.includes(":") ? `[${host}]` : host);

/** A port that was free a moment ago (for worker mode, where the primary must know it before forking). */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function vdafName(v: DemoVdaf): string {
  return v.vdaf === "count" ? "Prio3Count" : v.vdaf === "sum" ? `Prio3Sum (${v.bits} bits)` : `Prio3Histogram (${v.length} buckets)`;
}

function describeResult(v: DemoVdaf, result: unknown): string {
  if (result === undefined) return "nothing yet";
  // Prio3 results are numbers or bigints (count, sum), or a list of them (histogram).
  if (v.vdaf === "count") return `count = ${result as number | bigint}`;
  if (v.vdaf === "sum") return `sum = ${result as number | bigint}`;
  return `buckets = [${(result as (number | bigint)[]).join(", ")}]`;
}

/** The raw (JSON) configurations of the three servers, as written to data/*.json. */
function serverConfigs(o: {
  dir: string;
  host: string;
  ports: Record<"relay" | "gateway" | "issuer", number>;
  issuerUrl: string;
  gatewayUrl: string;
  targets: Record<string, string>;
  credential: string;
  logLevel: string;
}): { relay: Record<string, unknown>; gateway: Record<string, unknown>; issuer: Record<string, unknown> } {
  const limits = { shutdownGraceMs: START_DEFAULTS.shutdownGraceMs };
  return {
    issuer: {
      listen: { host: o.host, port: o.ports.issuer },
      limits,
      name: START_DEFAULTS.issuerName,
      keys: join(o.dir, DATA_FILES.issuerKeys),
      // Type 2 for `veil demo`, ARC for `veil demo --token-type arc`.
      tokenTypes: [2, ARC_TOKEN_TYPE],
      attester: {
        credentials: [o.credential],
        tokensPerWindow: START_DEFAULTS.tokensPerWindow,
        windowSec: 86_400,
        store: `sqlite:${join(o.dir, DATA_FILES.attesterDb)}`,
      },
      logLevel: o.logLevel,
    },
    gateway: {
      listen: { host: o.host, port: o.ports.gateway },
      limits,
      keys: join(o.dir, DATA_FILES.gatewayKeys),
      targets: o.targets,
      policy: "dap",
      tokens: {
        required: true,
        issuers: [
          { name: START_DEFAULTS.issuerName, directory: `${o.issuerUrl}/.well-known/private-token-issuer-directory` },
          {
            name: START_DEFAULTS.issuerName,
            directory: `${o.issuerUrl}/.well-known/private-token-issuer-directory`,
            tokenType: "arc",
            rateLimit: START_DEFAULTS.arcRateLimit,
            // Joint issuer and gateway: the gateway reads the ARC private keys from the issuer's key file.
            keys: join(o.dir, DATA_FILES.issuerKeys),
            redemptionContext: "task-epoch",
          },
        ],
        store: `sqlite:${join(o.dir, DATA_FILES.nonces)}`,
      },
      logLevel: o.logLevel,
    },
    relay: {
      listen: { host: o.host, port: o.ports.relay },
      limits,
      routes: [{ path: START_DEFAULTS.relayPath, gateway: `${o.gatewayUrl}/gateway`, keys: `${o.gatewayUrl}/ohttp-keys` }],
      // Every demo client is 127.0.0.1: a per-address limit would stop `veil demo --reports 100000`.
      rateLimit: { perClientPerWindow: 0 },
      logLevel: o.logLevel,
    },
  };
}

function writeConfig(dir: string, name: string, config: Record<string, unknown>, mode: number): void {
  writeFileAtomic(join(dir, name), JSON.stringify(config, null, 2) + "\n", mode);
}

interface Prepared {
  dir: string;
  demo: Awaited<ReturnType<typeof ensureDemoTask>>;
  credential: ReturnType<typeof ensureCredential>;
  created: string[];
}

async function prepareData(dataDir: string): Promise<Prepared> {
  const dir = ensureDataDir(dataDir);
  const created: string[] = [];
  if ((await ensureGatewayKeys(dir)).created) created.push(DATA_FILES.gatewayKeys);
  const credential = ensureCredential(dir);
  if (credential.created) created.push(DATA_FILES.credential);
  const demo = await ensureDemoTask(dir);
  if (demo.created) created.push(DATA_FILES.task);
  return { dir, demo, credential, created };
}

/** Starts the leader and helper doubles, with the demo's aggregation behind the leader. */
async function startAggregators(
  p: Prepared,
  host: string,
  ports: { leader: number; helper: number },
  onReport: (r: AcceptedReport) => void,
): Promise<{ leader: DapAggregator; helper: DapAggregator }> {
  const leader = await startDapAggregator({ role: "leader", host, port: ports.leader, tasks: [p.demo.task], keepReports: false, onAccepted: onReport });
  const helper = await startDapAggregator({ role: "helper", host, port: ports.helper, tasks: [p.demo.task], keepReports: false }).catch(async (e: unknown) => {
    await leader.close();
    throw e;
  });
  return { leader, helper };
}

function originOf(url: string): string {
  return new URL(url).origin;
}

/**
 * Starts everything in this process (or, with `workers`, the primary's part: the aggregators and
 * the issuer, after writing the worker configurations). Used by `veil start` and by tests.
 */
export async function startLocalSystem(o: StartOptions, workers?: { count: number; log: Logger }): Promise<LocalSystem> {
  const print = o.print ?? ((line: string) => process.stdout.write(line + "\n"));
  const logger = o.logger ?? ((component: string) => createLogger(component, { level: o.logLevel }));
  const p = await prepareData(o.dataDir);

  const { Prio3Aggregation } = await importOptional(() => import("./prio3-aggregate.js"), "@divviup/prio3", "veil start (the demo leader's aggregation)");
  const aggregation = new Prio3Aggregation(p.demo.vdaf);
  let pending = Promise.resolve();
  const onReport = (r: AcceptedReport): void => {
    // In arrival order, off the request path: the leader has already answered by the time this runs.
    pending = pending.then(() =>
      aggregation
        .add({ reportId: fromHex(r.reportId), publicShare: r.publicShare, leaderShare: r.leaderShare, helperShare: r.helperShare ?? new Uint8Array(0) })
        .then(() => undefined),
    );
  };

  const stops: (() => Promise<void>)[] = [];
  const stopAll = async (): Promise<void> => {
    for (const s of stops.reverse()) {
      try {
        await s();
      } catch {
        // keep stopping the others
      }
    }
    stops.length = 0;
  };

  try {
    const { leader, helper } = await startAggregators(p, o.host, o.ports, onReport);
    stops.push(() => helper.close(), () => leader.close());
    const host = URL_HOST(o.host);
    const leaderUrl = `http://${host}:${leader.port}`;
    const helperUrl = `http://${host}:${helper.port}`;
    // The client addresses the aggregators by their own URLs; the gateway maps each inner origin
    // to the aggregator (an allow-list: nothing else can be reached through it).
    const targets = { [originOf(leaderUrl)]: leader.url, [originOf(helperUrl)]: helper.url };

    const inWorkers = workers !== undefined && workers.count > 1;
    const ports = { ...o.ports };
    if (inWorkers) {
      // Workers must know each other's ports before they start: pick free ones now.
      if (ports.gateway === 0) ports.gateway = await freePort(o.host);
      if (ports.relay === 0) ports.relay = await freePort(o.host);
    }

    // The issuer first: the gateway fetches its directory at start.
    const issuerRaw = serverConfigs({
      dir: p.dir,
      host: o.host,
      ports,
      issuerUrl: "",
      gatewayUrl: "",
      targets,
      credential: p.credential.credential.reveal(),
      logLevel: o.logLevel,
    }).issuer;
    writeConfig(p.dir, DATA_FILES.issuerConfig, issuerRaw, 0o600);
    const issuer = await startIssuer(parseIssuerConfig(issuerRaw), { log: logger("issuer"), handleSignals: false });
    stops.push(() => issuer.stop());

    const gatewayUrlPlanned = `http://${host}:${ports.gateway}`;
    const raw = serverConfigs({
      dir: p.dir,
      host: o.host,
      ports,
      issuerUrl: issuer.url,
      gatewayUrl: gatewayUrlPlanned,
      targets,
      credential: "",
      logLevel: o.logLevel,
    });
    writeConfig(p.dir, DATA_FILES.gatewayConfig, raw.gateway, 0o644);

    let gatewayUrl: string;
    let relayUrl: string;
    if (inWorkers) {
      writeConfig(p.dir, DATA_FILES.relayConfig, raw.relay, 0o644);
      const primary = await runPrimary({
        name: "veil",
        workers: workers.count,
        log: workers.log,
        shutdownGraceMs: START_DEFAULTS.shutdownGraceMs,
        handleSignals: false,
      });
      stops.push(() => primary.stop());
      gatewayUrl = gatewayUrlPlanned;
      relayUrl = `http://${host}:${ports.relay}`;
    } else {
      const gateway = await startGateway(parseGatewayConfig(raw.gateway), { log: logger("gateway"), handleSignals: false });
      stops.push(() => gateway.stop());
      gatewayUrl = gateway.url;
      // Port 0 (tests): the relay's config names the port the gateway really got.
      const relayRaw = serverConfigs({ dir: p.dir, host: o.host, ports, issuerUrl: issuer.url, gatewayUrl, targets, credential: "", logLevel: o.logLevel }).relay;
      writeConfig(p.dir, DATA_FILES.relayConfig, relayRaw, 0o644);
      const relay = await startRelay(parseRelayConfig(relayRaw), { log: logger("relay"), handleSignals: false });
      stops.push(() => relay.stop());
      relayUrl = relay.url;
    }

    const state: DemoState = {
      version: 1,
      pid: process.pid,
      startedAt: new Date().toISOString(),
      relay: `${relayUrl}${START_DEFAULTS.relayPath}`,
      keys: `${gatewayUrl}/ohttp-keys`,
      relayKeys: `${relayUrl}${START_DEFAULTS.relayPath}/ohttp-keys`,
      issuer: issuer.url,
      gateway: gatewayUrl,
      leader: leaderUrl,
      helper: helperUrl,
      taskId: p.demo.task.idBase64Url,
      vdaf: p.demo.vdaf,
      timePrecisionSec: p.demo.timePrecisionSec,
      credentialFile: p.credential.file,
    };
    writeDemoState(p.dir, state);

    // The aggregate, printed when it changed (and once more on stop).
    let shown = 0;
    const show = (): void => {
      const seen = aggregation.valid + aggregation.invalid;
      if (seen === shown) return;
      shown = seen;
      print(
        `leader: ${leader.counts.accepted} reports decrypted, ${aggregation.valid} verified` +
          `${aggregation.invalid > 0 ? `, ${aggregation.invalid} invalid` : ""}: ${describeResult(p.demo.vdaf, aggregation.result())}`,
      );
    };
    const ticker = setInterval(show, START_DEFAULTS.summaryEveryMs);
    ticker.unref();
    stops.push(async () => {
      clearInterval(ticker);
      await pending;
      show();
    });

    const urls: Record<ServerName, string> = { relay: relayUrl, gateway: gatewayUrl, issuer: issuer.url, leader: leaderUrl, helper: helperUrl };
    const col = (s: string, n: number): string => s.padEnd(n);
    print("");
    print(`Veil is running${inWorkers ? ` (gateway and relay in ${workers.count} worker processes each)` : ""}. Data: ${p.dir}${p.created.length > 0 ? ` (created ${p.created.join(", ")})` : ""}`);
    print("");
    print(`  ${col("relay", 9)}${col(state.relay, 46)}clients POST encapsulated requests here (keys copy: ${START_DEFAULTS.relayPath}/ohttp-keys)`);
    print(`  ${col("gateway", 9)}${col(gatewayUrl, 46)}GET /ohttp-keys, POST /gateway; Privacy Pass tokens required`);
    print(`  ${col("issuer", 9)}${col(issuer.url, 46)}token issuer; the demo credential is in ${p.credential.file}`);
    print(`  ${col("leader", 9)}${col(leaderUrl, 46)}DAP-09 leader (demo: decrypts, verifies and counts every report)`);
    print(`  ${col("helper", 9)}${col(helperUrl, 46)}DAP-09 helper`);
    print(`  ${col("task", 9)}${col(state.taskId, 46)}${vdafName(p.demo.vdaf)}, time precision ${p.demo.timePrecisionSec} s`);
    print("");
    print("  Relay, gateway and issuer also answer GET /healthz, /readyz and /metrics.");
    print(`  Their configurations are in ${p.dir}: veil <server> --config ${join(p.dir, "<server>.json")} runs one alone.`);
    print("");
    const dataArg = o.dataDir === START_DEFAULTS.dataDir ? "" : ` --data ${o.dataDir}`;
    print(`Send reports:  node bin/veil.js demo --reports 100${dataArg}`);
    print(`  with ARC rate-limited credentials (${START_DEFAULTS.arcRateLimit} reports per credential, task and day): node bin/veil.js demo --reports 100 --token-type arc${dataArg}`);
    print("Stop:          Ctrl-C");
    print("");

    return { state, leader, helper, aggregation, urls, stop: stopAll };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

/** In a worker of `veil start --workers N`: the gateway and the relay, from the files the primary wrote. */
async function startWorkerServers(dataDir: string, logLevel: string): Promise<Stoppable> {
  const dir = ensureDataDir(dataDir);
  const gatewayConfig: GatewayConfig = loadGatewayConfig(join(dir, DATA_FILES.gatewayConfig));
  const relayConfig: RelayConfig = loadRelayConfig(join(dir, DATA_FILES.relayConfig));
  const gateway = await startGateway(gatewayConfig, { log: createLogger("gateway", { level: logLevel }), handleSignals: false });
  let relay;
  try {
    relay = await startRelay(relayConfig, { log: createLogger("relay", { level: logLevel }), handleSignals: false });
  } catch (e) {
    await gateway.stop();
    throw e;
  }
  const r = relay;
  return {
    async stop() {
      await r.stop();
      await gateway.stop();
    },
  };
}

function port(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n > 65535) throw new InvalidArgumentError(`${name} must be a port number (0 picks a free one)`);
    return n;
  };
}

interface StartCommandOptions {
  data: string;
  host: string;
  relayPort: number;
  gatewayPort: number;
  issuerPort: number;
  leaderPort: number;
  helperPort: number;
  logLevel: string;
  workers: number;
}

export function startCommand(): Command {
  const d = START_DEFAULTS;
  return new Command("start")
    .description("run the whole local system: relay :8080, gateway :8081, issuer :8082, demo DAP-09 leader :8083 and helper :8084")
    .option("--data <dir>", "where keys, the nonce store and the demo task and credential live", d.dataDir)
    .option("--host <address>", "address every server binds", d.host)
    .option("--relay-port <n>", "relay port", port("--relay-port"), d.ports.relay)
    .option("--gateway-port <n>", "gateway port", port("--gateway-port"), d.ports.gateway)
    .option("--issuer-port <n>", "issuer port", port("--issuer-port"), d.ports.issuer)
    .option("--leader-port <n>", "demo DAP leader port", port("--leader-port"), d.ports.leader)
    .option("--helper-port <n>", "demo DAP helper port", port("--helper-port"), d.ports.helper)
    .addOption(new Option("--log-level <level>", "log level of the servers").choices(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default(d.logLevel))
    .option("--workers <n>", "run the gateway and the relay in N processes each (node:cluster)", parseWorkers, 1)
    .action(async (o: StartCommandOptions) => {
      const ports = { relay: o.relayPort, gateway: o.gatewayPort, issuer: o.issuerPort, leader: o.leaderPort, helper: o.helperPort };
      try {
        if (cluster.isWorker) {
          await serveWithWorkers({
            name: "veil",
            workers: o.workers,
            shutdownGraceMs: d.shutdownGraceMs,
            log: createLogger("veil", { level: o.logLevel }),
            start: () => startWorkerServers(o.data, o.logLevel),
            workerHandlesSignals: true,
          });
          return;
        }
        const log = createLogger("veil", { level: o.logLevel });
        const system = await startLocalSystem(
          { dataDir: o.data, host: o.host, ports, logLevel: o.logLevel },
          o.workers > 1 ? { count: o.workers, log } : undefined,
        );
        const onSignal = (signal: string): void => {
          process.stdout.write(`\n${signal}: stopping...\n`);
          // Whatever hangs, the process is gone within 10 s of the signal.
          setTimeout(() => process.exit(1), d.hardExitMs).unref();
          void system.stop().then(() => {
            process.stdout.write("stopped\n");
            process.exit(0);
          });
        };
        process.once("SIGTERM", onSignal);
        process.once("SIGINT", onSignal);
      } catch (e) {
        process.stderr.write(`veil start: ${isProtocolError(e) ? e.message : JSON.stringify(safeError(e))}\n`);
        const code = (e as { code?: unknown }).code;
        if (code === "EADDRINUSE") process.stderr.write("veil start: a port is in use: is Veil already running? (or pick others with --relay-port etc.)\n");
        process.exitCode = 1;
      }
    });
}
