// `npm run bench -- workers [--seconds S] [--rounds R] [--connections C]`
//
// `veil gateway --workers 2` against `veil gateway` (one process): CPU time per request of the
// whole gateway process group (primary and workers, read from /proc), and throughput beside it.
// Both run the real command line on the same config (DAP policy, tokens off, a trivial upstream in
// this process that answers 201) under the same load from `wrk` (keep-alive, a fixed encapsulated
// upload: the gateway decapsulates, forwards and seals every one). Interleaved over several rounds;
// the ratio is the median of the per-round ratios. Target: CPU per request with 2
// workers at most 1.15x that of 1 process (no coordination cost).
//
// This machine has 2 cores shared with wrk and the upstream, so throughput with 2 workers cannot
// double here: the CPU ratio is the number that carries over.

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { Pool } from "undici";
import { decodeResponse, encodeRequest } from "../core/bhttp/index.js";
import { KEM, encapsulateRequest, generateGatewayKey } from "../core/ohttp/index.js";
import { Secret } from "../core/secret.js";
import { KEY_FILE_VERSION, writeKeyFile } from "../gateway/key-file.js";
import { median, numberArg } from "./args.js";

const VEIL = fileURLToPath(new URL("../../bin/veil.js", import.meta.url));
const CLK_TCK = 100;


/** user + system CPU seconds of `pid` (from /proc/PID/stat). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields after the command: state is index 0, utime is field 14 overall (index 11 here), stime 15.
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

interface Group {
  child: ChildProcess;
  url: string;
  pids: number[];
  stop(): Promise<void>;
}

/** Child process ids of `pid` (the cluster workers of a primary). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** Starts `veil gateway` on `port` and waits until /healthz answers (the logs are at warn level). */
async function startGateway(config: string, port: number, workers: number, scheduling: "none" | "rr"): Promise<Group> {
  const args = [VEIL, "gateway", "--config", config, ...(workers > 1 ? ["--workers", String(workers)] : [])];
  const child = spawn(process.execPath, args, {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, VEIL_GATEWAY_LISTEN_PORT: String(port), NODE_CLUSTER_SCHED_POLICY: scheduling },
  });
  const url = `http://127.0.0.1:${port}`;
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGTERM");
    const t = setTimeout(() => child.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(t);
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}`);
    try {
      const res = await fetch(`${url}/healthz`);
      await res.arrayBuffer();
      // Every worker must be up: the primary has forked them all by the time one answers.
      if (res.status === 200 && (workers === 1 || childrenOf(child.pid!).length >= workers)) break;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error("gateway did not start");
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  if (workers > 1) await new Promise((r) => setTimeout(r, 1000)); // the last worker may still be loading
  return { child, url, pids: [child.pid!, ...childrenOf(child.pid!)], stop };
}

/** Runs wrk (asynchronously: the upstream lives in this process and must keep answering). */
async function wrk(url: string, bodyFile: string, seconds: number, connections: number, script: string): Promise<{ requests: number; non2xx: number; errors: number }> {
  const child = spawn("wrk", ["-t1", `-c${connections}`, `-d${seconds}s`, "-s", script, `${url}/gateway`], {
    env: { ...process.env, VEIL_BODY: bodyFile },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const status = await new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const r = { status, stdout, stderr };
  if (r.status !== 0) throw new Error(`wrk failed: ${r.stderr}`);
  const requests = Number(/(\d+) requests in/.exec(r.stdout)?.[1] ?? NaN);
  if (!(requests > 0)) throw new Error(`wrk made no requests:\n${r.stdout}\n${r.stderr}`);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(r.stdout)?.[1] ?? 0);
  const m = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(r.stdout);
  const errors = m === null ? 0 : Number(m[1]) + Number(m[2]) + Number(m[3]) + Number(m[4]);
  return { requests, non2xx, errors };
}

/**
 * Open-loop load at a fixed rate (undici, keep-alive): the same offered load for every mode, low
 * enough that no process waits for a core, so CPU per request shows what the workers themselves
 * cost. Returns the number of answered requests.
 */
async function paced(url: string, body: Uint8Array, rate: number, seconds: number): Promise<{ requests: number; failed: number }> {
  const pool = new Pool(url, { connections: 16, keepAliveTimeout: 10_000 });
  let requests = 0;
  let failed = 0;
  const inFlight = new Set<Promise<void>>();
  const started = performance.now();
  let sent = 0;
  try {
    while (performance.now() - started < seconds * 1000) {
      const due = Math.floor(((performance.now() - started) / 1000) * rate);
      for (; sent < due; sent++) {
        const p = pool
          .request({ method: "POST", path: "/gateway", headers: { "content-type": "message/ohttp-req" }, body })
          .then(async (r) => {
            await r.body.dump();
            if (r.statusCode === 200) requests++;
            else failed++;
          })
          .catch(() => {
            failed++;
          })
          .finally(() => inFlight.delete(p));
        inFlight.add(p);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    await Promise.all(inFlight);
  } finally {
    await pool.close();
  }
  return { requests, failed };
}


export async function run(args: string[]): Promise<void> {
  const seconds = numberArg(args, "seconds", 5);
  const rounds = numberArg(args, "rounds", 3);
  const connections = numberArg(args, "connections", 32);
  const rate = numberArg(args, "rate", 200);
  if (spawnSync("wrk", ["--version"]).error !== undefined) throw new Error("wrk is not installed (apt-get install wrk)");

  const dir = mkdtempSync(join(tmpdir(), "veil-bench-workers-"));
  // The upstream: answers every upload 201 at once (its CPU is not counted).
  const upstream = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(201, { "content-length": "0" });
      res.end();
    });
  });
  upstream.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/`;

  try {
    const keyFile = join(dir, "keys.json");
    const { key, privateKey } = await generateGatewayKey(1, KEM.X25519);
    const at = new Date().toISOString();
    writeKeyFile(keyFile, {
      version: KEY_FILE_VERSION,
      keys: [{ keyId: 1, kemId: key.config.kemId, symmetric: key.config.symmetric, state: "active", createdAt: at, activatedAt: at, publicKey: key.config.publicKey, privateKey: new Secret(privateKey) }],
    });
    const config = join(dir, "gateway.json");
    writeFileSync(
      config,
      JSON.stringify({
        listen: { host: "127.0.0.1", port: 0 },
        keys: keyFile,
        targets: { "https://leader.example": upstreamUrl },
        tokens: { required: false },
        logLevel: "warn",
        limits: { shutdownGraceMs: 3000 },
      }),
    );
    // One encapsulated DAP upload, sent again and again (the gateway keeps no replay state for
    // OHTTP requests; each one is decapsulated, forwarded and sealed anew).
    const taskId = "A".repeat(43);
    const inner = encodeRequest({
      method: "PUT",
      scheme: "https",
      authority: "leader.example",
      path: `/tasks/${taskId}/reports`,
      headers: [["content-type", "application/dap-report"]],
      body: new Uint8Array(600).fill(7),
      trailers: [],
    });
    const { encapsulated, response } = await encapsulateRequest(key.config, inner);
    const bodyFile = join(dir, "body.bin");
    writeFileSync(bodyFile, encapsulated);
    const script = join(dir, "post.lua");
    writeFileSync(
      script,
      [
        'wrk.method = "POST"',
        'wrk.headers["Content-Type"] = "message/ohttp-req"',
        'local f = io.open(os.getenv("VEIL_BODY"), "rb")',
        'wrk.body = f:read("*all")',
        "f:close()",
      ].join("\n"),
    );

    // "2 workers" is the default (node's round-robin through the primary); "2 workers os" lets the
    // workers accept on the shared socket, measured beside it.
    const MODES = [
      { name: "1 process", workers: 1, scheduling: "rr" as const },
      { name: "2 workers", workers: 2, scheduling: "rr" as const },
      { name: "2 workers os", workers: 2, scheduling: "none" as const },
    ];
    const results = new Map(
      MODES.map((m) => [m.name, { pacedCpu: [] as number[], pacedRatios: [] as number[], cpu: [] as number[], rps: [] as number[], ratios: [] as number[] }]),
    );
    let checked = false;
    console.log(`gateway: 1 process vs --workers 2, ${rounds} rounds of ${seconds} s:`);
    console.log(`  paced: ${rate} requests/s offered (no process waits for a core): CPU per request`);
    console.log(`  saturated: wrk with ${connections} keep-alive connections: throughput (and CPU per request)`);
    for (let round = 0; round < rounds; round++) {
      const perRound = new Map<string, { paced: number; saturated: number }>();
      // Rotate the order each round, so drift on a shared machine does not favour one mode.
      const order = MODES.map((_, i) => MODES[(i + round) % MODES.length]!);
      for (const mode of order) {
        const g = await startGateway(config, await freePort(), mode.workers, mode.scheduling);
        try {
          if (!checked) {
            // The fixed request really goes through: the sealed inner answer is a 201.
            const res = await fetch(`${g.url}/gateway`, { method: "POST", headers: { "content-type": "message/ohttp-req" }, body: new Uint8Array(encapsulated) });
            const answer = decodeResponse(await response.decapsulateResponse(new Uint8Array(await res.arrayBuffer())));
            if (answer.status !== 201) throw new Error(`the gateway answered the upload with ${answer.status}`);
            checked = true;
          }
          const cpu = (): number => g.pids.map(cpuSeconds).reduce((a, b) => a + b, 0);
          await wrk(g.url, bodyFile, 1, connections, script); // warm-up (JIT, pools)
          let before = cpu();
          const pr = await paced(g.url, encapsulated, rate, seconds);
          const pacedCpu = ((cpu() - before) / pr.requests) * 1e6;
          before = cpu();
          const r = await wrk(g.url, bodyFile, seconds, connections, script);
          const satCpu = ((cpu() - before) / r.requests) * 1e6;
          if (r.non2xx > 0 || r.errors > 0 || pr.failed > 0) console.log(`  warning: ${r.non2xx + pr.failed} failed answers, ${r.errors} socket errors`);
          const rps = r.requests / seconds;
          const res = results.get(mode.name)!;
          res.pacedCpu.push(pacedCpu);
          res.cpu.push(satCpu);
          res.rps.push(rps);
          perRound.set(mode.name, { paced: pacedCpu, saturated: satCpu });
          console.log(
            `  round ${round + 1}, ${mode.name.padEnd(12)}: paced ${pacedCpu.toFixed(0).padStart(5)} µs CPU/request | ` +
              `saturated ${rps.toFixed(0).padStart(5)} requests/s, ${satCpu.toFixed(0).padStart(5)} µs CPU/request`,
          );
        } finally {
          await g.stop();
        }
      }
      const base = perRound.get("1 process")!;
      for (const m of MODES) {
        results.get(m.name)!.pacedRatios.push(perRound.get(m.name)!.paced / base.paced);
        results.get(m.name)!.ratios.push(perRound.get(m.name)!.saturated / base.saturated);
      }
    }
    console.log("");
    const base = results.get("1 process")!;
    for (const m of MODES) {
      const r = results.get(m.name)!;
      console.log(
        `${m.name.padEnd(12)}: paced ${median(r.pacedCpu).toFixed(0).padStart(5)} µs CPU/request (x${median(r.pacedRatios).toFixed(3)}) | ` +
          `saturated ${median(r.rps).toFixed(0).padStart(5)} requests/s (x${(median(r.rps) / median(base.rps)).toFixed(2)}), ` +
          `${median(r.cpu).toFixed(0)} µs CPU/request (x${median(r.ratios).toFixed(3)})`,
      );
    }
    console.log("ratios: median of per-round ratios to 1 process. Target: paced CPU per request with 2 workers <= 1.15x");
  } finally {
    upstream.close();
    upstream.closeAllConnections();
    rmSync(dir, { recursive: true, force: true });
  }
}
