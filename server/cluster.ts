// `--workers N` for the servers (docs/architecture.md, "Scaling"): N processes (node:cluster) share the listening
// port, the key files and the SQLite nonce store. The primary process only forks, restarts and
// stops workers and sums their metrics: it serves no requests.
//
// - Connections: the primary accepts them and hands them to the workers in turn (cluster.SCHED_RR,
//   node's default); it costs the primary a little CPU per new connection, none per request on a
//   kept-alive one, and spreads connections evenly. Letting the workers accept on the shared
//   socket themselves (SCHED_NONE) leaves the spread to the kernel, which can favour one process;
//   `npm run bench -- workers` measures both (on this project's shared 2-core machine neither was
//   consistently ahead).
// - Metrics: GET /metrics on any worker asks the primary, which collects every worker's registry
//   of that component (as JSON, over the IPC channel) and sums them with prom-client's
//   AggregatorRegistry. Gauges that hold the same value in every worker (key ids in use) are
//   aggregated with max instead of sum. If the primary does not answer in time, the worker answers
//   with its own metrics.
// - Shutdown: SIGTERM/SIGINT to the primary stops every worker gracefully (each stops accepting,
//   finishes its requests, closes its stores), then the primary exits. A worker that exits while
//   the primary is not stopping (crash, or SIGTERM sent to it alone for a rolling restart) is
//   replaced; a worker that keeps crashing stops the whole group.

import cluster, { type Worker } from "node:cluster";
import { InvalidArgumentError } from "commander";
import { AggregatorRegistry, Registry, type MetricObjectWithValues, type MetricValue } from "prom-client";
import type { Logger } from "./logging.js";
import { setRegistryFactory } from "./metrics.js";

export const CLUSTER_DEFAULTS = Object.freeze({
  /** Time the primary waits for the workers' metrics; a worker stuck longer is left out. */
  metricsTimeoutMs: 2_000,
  /** Pause before a replacement worker is forked (a crash loop must not spin the CPU). */
  restartDelayMs: 500,
  /** More worker exits than this within a minute stop the whole group (exit code 1). */
  maxRestartsPerMinute: 10,
  /** After the shutdown grace period, workers get this long to exit before SIGKILL. */
  killAfterGraceMs: 1_500,
  /** Most workers `--workers` accepts. */
  maxWorkers: 64,
});

/**
 * Gauges that every worker reports with the same value (state of shared files): summing them
 * would count each key once per worker, so the aggregate is the largest value instead.
 */
export const MAX_AGGREGATED_GAUGES: ReadonlySet<string> = new Set(["veil_gateway_keys", "veil_issuer_keys"]);

type Json = MetricObjectWithValues<MetricValue<string>>[];

interface CollectMessage {
  type: "veil:metrics-collect";
  id: number;
  component: string;
}
interface CollectedMessage {
  type: "veil:metrics-collected";
  id: number;
  metrics: Json;
}
interface MetricsRequest {
  type: "veil:metrics-request";
  id: number;
  component: string;
}
interface MetricsResponse {
  type: "veil:metrics-response";
  id: number;
  text: string;
}
interface ReadyMessage {
  type: "veil:ready";
}
type ClusterMessage = CollectMessage | CollectedMessage | MetricsRequest | MetricsResponse | ReadyMessage;

function isMessage(m: unknown): m is ClusterMessage {
  return typeof m === "object" && m !== null && typeof (m as { type?: unknown }).type === "string" && (m as { type: string }).type.startsWith("veil:");
}

/** Sums the workers' metrics (prom-client's AggregatorRegistry); same-valued gauges by max. */
export async function aggregateMetrics(perWorker: Json[]): Promise<string> {
  const marked = perWorker.map((metrics) =>
    metrics.map((m) => (MAX_AGGREGATED_GAUGES.has(m.name) ? { ...m, aggregator: "max" as const } : m)),
  );
  return AggregatorRegistry.aggregate(marked).metrics();
}

// ---------------------------------------------------------------------------------------------
// Worker side

const workerRegistries = new Map<string, Registry[]>();
const pendingAnswers = new Map<number, (text: string | undefined) => void>();
let nextRequestId = 0;

/** A worker's registry: /metrics answers with the sum over every worker, asked of the primary. */
class WorkerRegistry extends Registry {
  constructor(readonly component: string) {
    super();
  }

  override async metrics(): Promise<string> {
    const text = await askPrimary(this.component);
    return text ?? super.metrics();
  }
}

function askPrimary(component: string): Promise<string | undefined> {
  if (process.send === undefined || !process.connected) return Promise.resolve(undefined);
  const id = nextRequestId++;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      pendingAnswers.delete(id);
      resolve(undefined);
    }, CLUSTER_DEFAULTS.metricsTimeoutMs + 500);
    pendingAnswers.set(id, (text) => {
      clearTimeout(timer);
      pendingAnswers.delete(id);
      resolve(text);
    });
    const request: MetricsRequest = { type: "veil:metrics-request", id, component };
    process.send!(request);
  });
}

let workerSideInstalled = false;

/** In a worker: registries become WorkerRegistries, and the primary's collection requests are answered. */
export function installWorkerMetrics(): void {
  if (workerSideInstalled) return;
  workerSideInstalled = true;
  setRegistryFactory((component) => {
    const r = new WorkerRegistry(component);
    const list = workerRegistries.get(component) ?? [];
    list.push(r);
    workerRegistries.set(component, list);
    return r;
  });
  process.on("message", (m: unknown) => {
    if (!isMessage(m)) return;
    if (m.type === "veil:metrics-response") {
      pendingAnswers.get(m.id)?.(m.text);
    } else if (m.type === "veil:metrics-collect") {
      const regs = workerRegistries.get(m.component) ?? [];
      void Promise.all(regs.map((r) => r.getMetricsAsJSON())).then(
        (lists) => {
          const answer: CollectedMessage = { type: "veil:metrics-collected", id: m.id, metrics: lists.flat() };
          if (process.connected) process.send?.(answer);
        },
        () => {
          const answer: CollectedMessage = { type: "veil:metrics-collected", id: m.id, metrics: [] };
          if (process.connected) process.send?.(answer);
        },
      );
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Primary side

export type Scheduling = "os" | "rr";

export interface PrimaryOptions {
  /** For log lines: "gateway", "relay", "issuer", "veil". */
  name: string;
  workers: number;
  log: Logger;
  /** The workers' shutdown grace period (their limits.shutdownGraceMs). */
  shutdownGraceMs: number;
  /** rr: the primary hands out connections (default); os: workers accept on the shared socket. */
  scheduling?: Scheduling;
  /** Handle SIGTERM/SIGINT (default true). */
  handleSignals?: boolean;
  /** Runs after every worker stopped, before the primary exits. */
  onStopped?: () => Promise<void>;
}

export interface Primary {
  /** Process ids of the running workers. */
  pids(): number[];
  /** Stops every worker gracefully; resolves when all have exited. */
  stop(): Promise<void>;
}

/** Forks the workers and keeps them running; resolves once every first worker reported ready. */
export async function runPrimary(o: PrimaryOptions): Promise<Primary> {
  // node's own NODE_CLUSTER_SCHED_POLICY ("rr" or "none") wins when set (the workers bench uses it).
  if (o.scheduling !== undefined || process.env.NODE_CLUSTER_SCHED_POLICY === undefined) {
    cluster.schedulingPolicy = o.scheduling === "os" ? cluster.SCHED_NONE : cluster.SCHED_RR;
  }
  // "advanced" keeps numbers such as Infinity intact in the metrics JSON.
  cluster.setupPrimary({ serialization: "advanced" });

  let stopping: Promise<void> | undefined;
  const exits: number[] = [];
  const collecting = new Map<number, { metrics: Json[]; waiting: Set<number>; done: () => void }>();
  let nextCollectId = 0;
  let firstReady: (() => void) | undefined;
  let readyCount = 0;
  const allReady = new Promise<void>((resolve) => (firstReady = resolve));
  let failStart: ((e: Error) => void) | undefined;
  const startFailed = new Promise<never>((_resolve, reject) => (failStart = reject));

  const collect = (component: string): Promise<string> => {
    const id = nextCollectId++;
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && w.isConnected());
    return new Promise((resolve, reject) => {
      const entry = {
        metrics: [] as Json[],
        waiting: new Set(workers.map((w) => w.id)),
        done: () => {
          clearTimeout(timer);
          collecting.delete(id);
          aggregateMetrics(entry.metrics).then(resolve, reject);
        },
      };
      // A worker that does not answer in time is left out rather than failing the scrape.
      const timer = setTimeout(entry.done, CLUSTER_DEFAULTS.metricsTimeoutMs);
      collecting.set(id, entry);
      const message: CollectMessage = { type: "veil:metrics-collect", id, component };
      for (const w of workers) w.send(message);
      if (workers.length === 0) entry.done();
    });
  };

  const onMessage = (worker: Worker, m: unknown): void => {
    if (!isMessage(m)) return;
    if (m.type === "veil:ready") {
      readyCount++;
      if (readyCount === o.workers) firstReady?.();
    } else if (m.type === "veil:metrics-collected") {
      const entry = collecting.get(m.id);
      if (entry === undefined || !entry.waiting.delete(worker.id)) return;
      entry.metrics.push(m.metrics);
      if (entry.waiting.size === 0) entry.done();
    } else if (m.type === "veil:metrics-request") {
      void collect(m.component).then(
        (text) => {
          const answer: MetricsResponse = { type: "veil:metrics-response", id: m.id, text };
          if (worker.isConnected()) worker.send(answer);
        },
        (e: unknown) => o.log.warn({ err: e instanceof Error ? { name: e.name } : {} }, "metrics aggregation failed"),
      );
    }
  };

  const fork = (): Worker => {
    const w = cluster.fork();
    o.log.info({ worker: w.id, pid: w.process.pid }, "worker started");
    return w;
  };

  const onExit = (worker: Worker, code: number | null, signal: string | null): void => {
    // A worker that was still collecting metrics will not answer.
    for (const entry of collecting.values()) if (entry.waiting.delete(worker.id) && entry.waiting.size === 0) entry.done();
    if (stopping !== undefined) return;
    const now = Date.now();
    exits.push(now);
    while (exits.length > 0 && exits[0]! < now - 60_000) exits.shift();
    if (readyCount < o.workers && code !== 0) {
      // A worker that dies before the group ever became ready: the configuration or a port is bad.
      failStart?.(new Error(`worker exited during start-up (code ${code ?? signal})`));
      return;
    }
    if (exits.length > CLUSTER_DEFAULTS.maxRestartsPerMinute) {
      o.log.error({ exits: exits.length }, "workers keep exiting: stopping");
      process.exitCode = 1;
      void stop();
      return;
    }
    o.log.warn({ worker: worker.id, pid: worker.process.pid, code, signal }, "worker exited: starting a replacement");
    setTimeout(() => {
      if (stopping === undefined) fork();
    }, CLUSTER_DEFAULTS.restartDelayMs).unref();
  };

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
      const exited = workers.map((w) => (w.isDead() ? Promise.resolve() : new Promise<void>((r) => w.once("exit", () => r()))));
      for (const w of workers) if (!w.isDead()) w.process.kill("SIGTERM");
      const killer = setTimeout(() => {
        for (const w of workers) if (!w.isDead()) w.process.kill("SIGKILL");
      }, o.shutdownGraceMs + CLUSTER_DEFAULTS.killAfterGraceMs);
      killer.unref();
      await Promise.all(exited);
      clearTimeout(killer);
      cluster.off("message", onMessage);
      cluster.off("exit", onExit);
      await o.onStopped?.();
    })();
    return stopping;
  };

  cluster.on("message", onMessage);
  cluster.on("exit", onExit);
  for (let i = 0; i < o.workers; i++) fork();

  if (o.handleSignals !== false) {
    const onSignal = (signal: string): void => {
      o.log.info({ signal }, "stopping workers");
      void stop().then(() => {
        o.log.info("stopped");
        process.exit(process.exitCode ?? 0);
      });
    };
    process.once("SIGTERM", onSignal);
    process.once("SIGINT", onSignal);
  }

  try {
    await Promise.race([allReady, startFailed]);
  } catch (e) {
    await stop();
    throw e;
  }
  o.log.info({ workers: o.workers, pids: pidsOf() }, "all workers ready");
  return { pids: pidsOf, stop };
}

function pidsOf(): number[] {
  return Object.values(cluster.workers ?? {})
    .filter((w): w is Worker => w !== undefined && !w.isDead())
    .map((w) => w.process.pid)
    .filter((p): p is number => p !== undefined);
}

// ---------------------------------------------------------------------------------------------
// The one entry point the commands use

export interface Stoppable {
  stop(): Promise<void>;
}

export interface ServeOptions {
  name: string;
  /** 1: everything in this process (no cluster). */
  workers: number;
  shutdownGraceMs: number;
  log: Logger;
  /** Starts the server(s) of one process (in a worker, or here when workers is 1). */
  start: () => Promise<Stoppable>;
  /** With workers: what the primary runs beside them (started before the fork, stopped after the workers). */
  primaryStart?: () => Promise<Stoppable>;
  scheduling?: Scheduling;
  /**
   * In a worker, stop `start`'s servers on SIGTERM/SIGINT here (for a `start` that runs several
   * servers with their own signal handling off). Default false: the servers handle signals.
   */
  workerHandlesSignals?: boolean;
}

/** True in a process forked by runPrimary. */
export function isClusterWorker(): boolean {
  return cluster.isWorker;
}

/**
 * `veil <server> --workers N`: with N > 1 the primary forks N copies of the same command line,
 * and each copy (a worker) runs `start`; with N = 1 `start` runs here.
 */
export async function serveWithWorkers(o: ServeOptions): Promise<void> {
  if (o.workers <= 1 && !cluster.isWorker) {
    await o.start();
    return;
  }
  if (cluster.isPrimary) {
    const beside = await o.primaryStart?.();
    try {
      await runPrimary({
        name: o.name,
        workers: o.workers,
        log: o.log,
        shutdownGraceMs: o.shutdownGraceMs,
        ...(o.scheduling === undefined ? {} : { scheduling: o.scheduling }),
        ...(beside === undefined ? {} : { onStopped: () => beside.stop() }),
      });
    } catch (e) {
      await beside?.stop();
      throw e;
    }
    return;
  }
  installWorkerMetrics();
  const running = await o.start();
  const stopAndExit = (): void => {
    void running.stop().then(() => process.exit(0));
  };
  // The primary is gone (killed): nobody will stop or replace this worker, so it stops itself.
  process.once("disconnect", stopAndExit);
  if (o.workerHandlesSignals === true) {
    process.once("SIGTERM", stopAndExit);
    process.once("SIGINT", stopAndExit);
  }
  const ready: ReadyMessage = { type: "veil:ready" };
  process.send?.(ready);
}

/** Parses `--workers N` (commander option parser). */
export function parseWorkers(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > CLUSTER_DEFAULTS.maxWorkers) {
    throw new InvalidArgumentError(`--workers must be an integer from 1 to ${CLUSTER_DEFAULTS.maxWorkers}`);
  }
  return n;
}
