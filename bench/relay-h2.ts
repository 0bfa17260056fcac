// `npm run bench -- relay-h2 [--duration S] [--runs N] [--clients C] [--streams M] [--body BYTES] [--perf]`
//
// The relay over HTTP/2 (`veil relay` with listen.tls, ALPN h2) against Debian's nginx 1.22 as an h2
// reverse proxy (`listen ... ssl http2;`, proxy_pass with keep-alive to the same upstream), loaded
// by h2load (Debian's nghttp2-client) with the same POST: C connections with M concurrent streams
// each, in the same run, and a third target, the floor (bench/relay-h2-floor.ts: node:http2 and the
// relay's upstream client, nothing else): what a relay on node:http2 could reach with its own front
// code at zero. Runs alternate (relay, nginx, floor, floor, nginx, relay, ...) so that drift from other
// load on the shared machine hits both alike. The upstream, the peer and /proc readings are
// bench/nginx.ts's, shared with bench/relay.ts. p99 comes from h2load's per-request log.
// Prints the throughput ratio (median of the per-run ratios), the p99 ratio and CPU time per
// request (less sensitive to other load than wall-clock throughput).
// `--perf`: one more run per target under Linux perf, CPU per request by part (bench/relay.ts's).
// Targets: throughput >= 0.7x nginx's, p99 <= 2x nginx's.

import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { intArg, median } from "./args.js";
import { PERF_NODE_FLAGS } from "./cpu-breakdown.js";
import { perfRound } from "./relay-breakdown.js";
import { alternatingRuns, COMPARISON, fmt, freePort, nginxWorker, startBenchRelay, startNginxPeer, waitForPort } from "./nginx.js";

interface Result {
  rps: number;
  requests: number;
  succeeded: number;
  p99Ms: number;
  p50Ms: number;
}

/**
 * One h2load run; latencies from its per-request log (start µs, status, µs to the end of the
 * answer). No warm-up period inside a run (the benchmark warms both targets up first): every
 * request the process spends CPU on in the run is counted, so CPU per request is not overstated.
 */
function h2load(url: string, dir: string, body: string, o: { clients: number; streams: number; durationSec: number }): Result {
  const log = join(dir, "h2load.log");
  rmSync(log, { force: true });
  const r = spawnSync(
    "h2load",
    [`-c${o.clients}`, `-m${o.streams}`, "-t1", `-D${o.durationSec}`, "-d", body, "-H", "content-type: message/ohttp-req", `--log-file=${log}`, url],
    { encoding: "utf8", timeout: (o.durationSec + 30) * 1000 },
  );
  const out = r.stdout ?? "";
  const rps = Number(/finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(out)?.[1] ?? NaN);
  const m = /requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded/.exec(out);
  const latencies = readFileSync(log, "utf8")
    .trim()
    .split("\n")
    .map((line) => Number(line.split("\t")[2]) / 1000)
    .filter((x) => Number.isFinite(x))
    .sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
  return { rps, requests: Number(m?.[1] ?? NaN), succeeded: Number(m?.[2] ?? NaN), p99Ms: at(0.99), p50Ms: at(0.5) };
}

export async function run(args: string[]): Promise<void> {
  const o = {
    durationSec: intArg(args, "duration", 10),
    runs: intArg(args, "runs", 4),
    clients: intArg(args, "clients", 16),
    streams: intArg(args, "streams", 10),
    bodyBytes: intArg(args, "body", 1024),
    perf: args.includes("--perf"),
  };
  for (const tool of ["nginx", "h2load", "openssl"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) {
      console.error(`bench relay-h2: needs ${tool} (Debian: apt-get install ${tool === "h2load" ? "nghttp2-client" : tool})`);
      process.exitCode = 2;
      return;
    }
  }
  const dir = mkdtempSync(join(tmpdir(), "veil-bench-relay-h2-"));
  const children: ChildProcess[] = [];
  try {
    const cert = join(dir, "cert.pem");
    const key = join(dir, "key.pem");
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1"], { stdio: "ignore" });
    const [nginxPort, relayPort] = [await freePort(), await freePort()];
    const peer = await startNginxPeer(dir, nginxPort, children, {
      listen: "ssl http2",
      // The relay's stream cap; TLS as the relay's (node's defaults: TLS 1.3, P-256 certificate).
      server: `ssl_certificate ${cert}; ssl_certificate_key ${key}; http2_max_concurrent_streams 100;`,
    });
    const relay = startBenchRelay(dir, "relay", relayPort, peer.upPort, children, { listen: { host: "127.0.0.1", port: relayPort, tls: { cert, key } } }, o.perf ? PERF_NODE_FLAGS : []);
    const floorPort = await freePort();
    const floorScript = fileURLToPath(new URL("./relay-h2-floor.js", import.meta.url));
    const floorFlags = o.perf ? PERF_NODE_FLAGS : [];
    const floor = spawn(process.execPath, [...floorFlags, floorScript, String(floorPort), cert, key, `http://127.0.0.1:${peer.upPort}/gateway`], { stdio: "ignore" });
    children.push(floor);
    await waitForPort(relayPort, 20_000);
    await waitForPort(floorPort, 20_000);
    const body = join(dir, "body");
    writeFileSync(body, "e".repeat(o.bodyBytes));
    const targets: Record<string, string> = {
      relay: `https://127.0.0.1:${relayPort}/leader-gateway`,
      nginx: `https://127.0.0.1:${nginxPort}/leader-gateway`,
      floor: `https://127.0.0.1:${floorPort}/leader-gateway`,
    };
    const pids: Record<string, number> = { relay: relay.pid!, nginx: nginxWorker(peer.proxy.pid!), floor: floor.pid! };
    console.log(`relay vs nginx over h2: ${o.runs} x ${o.durationSec} s per target, h2load -c${o.clients} -m${o.streams}, ${o.bodyBytes}-byte POST`);
    console.log(`  ${COMPARISON}`);
    for (const url of Object.values(targets)) h2load(url, dir, body, { ...o, durationSec: 3 }); // warm-up (JIT, pools)
    const { results, summary } = alternatingRuns(
      { label: "run", runs: o.runs, targets, pids },
      (url) => h2load(url, dir, body, o),
      (res) => (res.requests === res.succeeded ? "" : `${res.requests - res.succeeded} not 2xx`),
    );
    const rl = summary("relay");
    const ng = summary("nginx");
    const fl = summary("floor");
    const perRun = (name: string, of: (r: Result) => number) => results[name]!.map((x, i) => of(x) / of(results.nginx![i]!));
    const show = (xs: number[]) => `median of ${xs.length} per-run ratios ${fmt(median(xs), 2)}x (per run ${xs.map((x) => fmt(x, 2)).join(", ")})`;
    console.log("");
    console.log(`  relay: median ${fmt(rl.rps)} req/s, p99 ${fmt(rl.p99, 2)} ms, ${fmt(rl.cpu, 1)} µs CPU/req`);
    console.log(`  nginx: median ${fmt(ng.rps)} req/s, p99 ${fmt(ng.p99, 2)} ms, ${fmt(ng.cpu, 1)} µs CPU/req`);
    console.log(`  floor: median ${fmt(fl.rps)} req/s, p99 ${fmt(fl.p99, 2)} ms, ${fmt(fl.cpu, 1)} µs CPU/req   (node:http2 + the relay's upstream client, nothing else)`);
    console.log(`  throughput ratio relay/nginx: ${show(perRun("relay", (r) => r.rps))}   (target >= 0.70x)`);
    console.log(`  p99 ratio relay/nginx:        ${show(perRun("relay", (r) => r.p99Ms))}   (target <= 2.00x)`);
    console.log(`  throughput ratio floor/nginx: ${show(perRun("floor", (r) => r.rps))}`);
    console.log(`  p99 ratio floor/nginx:        ${show(perRun("floor", (r) => r.p99Ms))}`);
    console.log(`  CPU per request relay/nginx ${fmt(rl.cpu / ng.cpu, 2)}x, floor/nginx ${fmt(fl.cpu / ng.cpu, 2)}x, relay/floor ${fmt(rl.cpu / fl.cpu, 2)}x`);
    if (o.perf) await perfRound(dir, targets, pids, (url) => h2load(url, dir, body, o).succeeded);
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 300));
    rmSync(dir, { recursive: true, force: true });
  }
}
