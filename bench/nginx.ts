// What the relay benchmarks share (bench/relay.ts over HTTP/1.1, bench/relay-h2.ts over h2): the
// peer (Debian's nginx as a reverse proxy, one worker, keep-alive upstream, forwarding only the body
// and its type and length, like the relay) in front of the same upstream (an nginx static answer of
// message/ohttp-res), a `veil relay` process, and /proc readings of CPU time and RSS.
//
// Like for like (COMPARISON, printed by both benchmarks): one nginx worker process against one relay
// process (the relay's --workers 1; both then use at most one core for their own work), both keep
// their connections to the upstream alive (nginx `keepalive 64`, the relay's pool), both get the
// same requests from the same load generator and settings, and both write one access-log line per
// request, buffered the same way (nginx `buffer=8k flush=10ms`; the relay's log: one write per
// 8 KiB or 10 ms, server/logging.ts). What only the relay does per request, and nginx is not asked
// to: its rate limit (a limit the load never reaches, still counted per request) and its metrics.

import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { LOG_BUFFER_BYTES, LOG_FLUSH_MS } from "../server/logging.js";
import { median } from "./args.js";

/** The terms of the comparison (see the file comment), printed with every result. */
export const COMPARISON =
  "like for like: 1 nginx worker vs 1 relay process; keep-alive upstream on both; same upstream, body, load settings; " +
  `one access-log line per request on both, buffered alike (${LOG_BUFFER_BYTES / 1024} KiB or ${LOG_FLUSH_MS} ms); only the relay rate-limits and counts metrics`;

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

interface ConfOptions {
  /** Extra http-level configuration. */
  http?: string;
  /** One access log line per request (like the relay's request log). */
  accessLog?: boolean;
  /** Listen parameters after the address (e.g. "ssl http2"), and server-level lines that go with them. */
  listen?: string;
  server?: string;
}

/** A one-worker nginx config with its own pid and temp paths. */
export function nginxConf(dir: string, name: string, port: number, location: string, opts: ConfOptions = {}): string {
  const file = join(dir, `${name}.conf`);
  const t = (s: string) => join(dir, `${name}-${s}`);
  writeFileSync(
    file,
    `worker_processes 1;
pid ${t("nginx.pid")};
error_log ${t("error.log")} warn;
events { worker_connections 8192; }
http {
  ${opts.accessLog === true ? `access_log ${t("access.log")} combined buffer=${LOG_BUFFER_BYTES / 1024}k flush=${LOG_FLUSH_MS}ms;` : "access_log off;"}
  client_body_temp_path ${t("body")};
  proxy_temp_path ${t("proxy")};
  fastcgi_temp_path ${t("fastcgi")};
  uwsgi_temp_path ${t("uwsgi")};
  scgi_temp_path ${t("scgi")};
  keepalive_requests 1000000;
  ${opts.http ?? ""}
  server {
    listen 127.0.0.1:${port}${opts.listen === undefined ? "" : ` ${opts.listen}`};
    ${opts.server ?? ""}
    ${location}
  }
}
`,
  );
  return file;
}

export interface NginxPeer {
  upPort: number;
  /** The upstream (static answer) and the proxy nginx masters. */
  upstream: ChildProcess;
  proxy: ChildProcess;
}

/**
 * Starts the upstream (answers POST /gateway with 96 bytes of message/ohttp-res) and the peer proxy
 * on `proxyPort` (`location = /leader-gateway`, proxy_pass to the upstream); `listen`/`server` make
 * it TLS or h2.
 */
export async function startNginxPeer(dir: string, proxyPort: number, children: ChildProcess[], tls: Pick<ConfOptions, "listen" | "server"> = {}): Promise<NginxPeer> {
  const upPort = await freePort();
  const answer = "x".repeat(96);
  const upConf = nginxConf(dir, "upstream", upPort, `location /gateway { default_type message/ohttp-res; return 200 "${answer}"; }`);
  // The peer forwards like the relay: only the body and its type and length, nothing from the client.
  const pxConf = nginxConf(
    dir,
    "proxy",
    proxyPort,
    `location = /leader-gateway {
      proxy_pass http://gateway/gateway;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_headers off;
      proxy_set_header Content-Type $content_type;
      client_max_body_size 64k;
    }`,
    { http: `upstream gateway { server 127.0.0.1:${upPort}; keepalive 64; }`, accessLog: true, ...tls },
  );
  const [upstream, proxy] = [upConf, pxConf].map((conf) => spawn("nginx", ["-p", dir, "-c", conf, "-g", "daemon off;"], { stdio: "ignore" })) as [ChildProcess, ChildProcess];
  children.push(upstream, proxy);
  await waitForPort(upPort, 10_000);
  await waitForPort(proxyPort, 10_000);
  return { upPort, upstream, proxy };
}

/**
 * Starts `veil relay` (one process) with the route /leader-gateway to the upstream, a rate limit
 * the load never reaches (the limiter still runs on every request) and one log line per request;
 * `extra` is merged into the config; `nodeFlags` go to node (`--perf` runs: --perf-basic-prof).
 */
export function startBenchRelay(
  dir: string,
  name: string,
  port: number,
  upPort: number,
  children: ChildProcess[],
  extra: Record<string, unknown> = {},
  nodeFlags: readonly string[] = [],
): ChildProcess {
  const veil = fileURLToPath(new URL("../../bin/veil.js", import.meta.url));
  const config = {
    listen: { host: "127.0.0.1", port },
    routes: [{ path: "/leader-gateway", gateway: `http://127.0.0.1:${upPort}/gateway` }],
    rateLimit: { perClientPerWindow: 1_000_000_000 },
    limits: { maxConcurrentRequests: 4096 },
    ...extra,
  };
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(config));
  const log = join(dir, `${name}.log`);
  const child = spawn("sh", ["-c", `exec node ${nodeFlags.join(" ")} "${veil}" relay --config "${file}" >> "${log}" 2>&1`], { stdio: "ignore" });
  children.push(child);
  return child;
}

/** Resolves once something accepts TCP connections on the port. */
export async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on port ${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** CPU time (user + system) a process has used, in µs (/proc/PID/stat, clock ticks of 10 ms). */
export function cpuUs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

/** nginx's single worker process (the child of the master we started). */
export function nginxWorker(masterPid: number): number {
  const children = readFileSync(`/proc/${masterPid}/task/${masterPid}/children`, "utf8").trim().split(/\s+/);
  return Number(children[0]);
}

export function rssMb(pid: number, field: "VmRSS" | "VmHWM" = "VmRSS"): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
  return kb / 1024;
}

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** One load run's figures (wrk or h2load). */
export interface LoadResult {
  requests: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
}

/** Medians over the runs of one target. */
export interface LoadSummary {
  rps: number;
  p99: number;
  cpu: number;
}

/**
 * Loads every target `runs` times, reversing the order on every other run so that drift from other
 * load on the machine hits all alike, and reads each target process's CPU time per request around
 * its run. Prints one line per run (`note` adds what went wrong in a result) and returns every
 * result and the medians by target.
 */
export function alternatingRuns<R extends LoadResult>(
  o: { label: string; runs: number; targets: Record<string, string>; pids: Record<string, number> },
  load: (url: string) => R,
  note: (r: R) => string,
): { results: Record<string, R[]>; summary: (name: string) => LoadSummary } {
  const results: Record<string, R[]> = {};
  const cpu: Record<string, number[]> = {};
  const width = Math.max(...Object.keys(o.targets).map((n) => n.length));
  for (let r = 0; r < o.runs; r++) {
    const names = Object.keys(o.targets);
    if (r % 2 === 1) names.reverse();
    for (const name of names) {
      const before = cpuUs(o.pids[name]!);
      const res = load(o.targets[name]!);
      const perRequest = (cpuUs(o.pids[name]!) - before) / res.requests;
      (results[name] ??= []).push(res);
      (cpu[name] ??= []).push(perRequest);
      const extra = note(res);
      console.log(
        `  ${o.label} ${r + 1} ${name.padEnd(width)} ${fmt(res.rps).padStart(8)} req/s  p50 ${fmt(res.p50Ms, 2)} ms  p99 ${fmt(res.p99Ms, 2)} ms  CPU ${fmt(perRequest, 1)} µs/req${extra === "" ? "" : `  (${extra})`}`,
      );
    }
  }
  const summary = (name: string): LoadSummary => ({
    rps: median(results[name]!.map((x) => x.rps)),
    p99: median(results[name]!.map((x) => x.p99Ms)),
    cpu: median(cpu[name]!),
  });
  return { results, summary };
}
