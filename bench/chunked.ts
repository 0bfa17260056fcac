// `npm run bench -- chunked [--reps-1k N] [--reps-1m N]`: uploads of 1 KiB, 1 MiB and 64 MiB through
// `veil relay` + `veil gateway` (each its own process) to a target, as chunked OHTTP (a streamed
// body, message/ohttp-chunked-req) and as one message/ohttp-req, against the peer in the same run:
// the same topology with two bare node:http pipe proxies (no OHTTP, no checks) in place of the
// relay and the gateway. Prints throughput (MB/s of request body) and peak RSS per process, and
// the ratios against the peer. The client and the target are child processes too
// (bench/chunked-child.ts). Wall-clock numbers on a shared machine are noisy: the client's CPU
// time per MB is printed as well.

import { fork, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { toHex } from "../core/bytes.js";
import { intArg } from "./args.js";
import type { Result, Upload } from "./chunked-child.js";
import { freePort, rssOf, startVeilChild, writeGatewayKeyFile, type VeilChild } from "./stack.js";

/** The compiled child script (also when this module runs from its TypeScript source, in tests). */
export const CHILD = fileURLToPath(new URL(import.meta.url.endsWith(".ts") ? "../dist/bench/chunked-child.js" : "./chunked-child.js", import.meta.url));

export interface RoleChild {
  child: ChildProcess;
  port: number;
  pid: number;
  /** Runs one upload (client role). */
  upload(u: Upload): Promise<Result>;
  /** Disconnects (the child exits on it) and waits for the exit. */
  stop(): Promise<void>;
}

/** Forks bench/chunked-child.js in `role` and waits until it is ready. */
export async function forkChunkedRole(role: "target" | "proxy" | "client", arg?: string, execArgv: string[] = []): Promise<RoleChild> {
  const child = fork(CHILD, arg === undefined ? [role] : [role, arg], { stdio: ["ignore", "inherit", "inherit", "ipc"], execArgv });
  const port = await new Promise<number>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`${role} exited with ${code}`)));
    child.once("message", (m: { port: number }) => resolve(m.port));
  });
  return {
    child,
    port,
    pid: child.pid!,
    upload: (u) =>
      new Promise<Result>((resolve, reject) => {
        child.once("message", (m: { result?: Result; error?: string }) => (m.result !== undefined ? resolve(m.result) : reject(new Error(m.error))));
        child.send({ run: u });
      }),
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once("exit", () => resolve());
        if (child.connected) child.disconnect();
      }),
  };
}

/** `veil gateway` (targets-only, to `targetUrl` as https://t.example) and `veil relay` (route /gw) in front of it. */
export async function startChunkedStack(dir: string, targetUrl: string, nodeArgs: readonly string[] = []): Promise<{ gateway: VeilChild; relay: VeilChild; keyConfigs: string }> {
  // The whole-message mode needs room for a 64 MiB message at both servers.
  const big = 80 * 1024 * 1024;
  const keys = join(dir, "keys.json");
  await writeGatewayKeyFile(keys);
  const gateway = await startVeilChild(
    "gateway",
    join(dir, "gateway.json"),
    {
      keys,
      policy: "targets-only",
      targets: { "https://t.example": targetUrl },
      tokens: { required: false },
      limits: { maxRequestBytes: big, requestTimeoutMs: 300_000 },
      upstream: { totalTimeoutMs: 300_000 },
      logLevel: "warn",
    },
    await freePort(),
    nodeArgs,
  );
  const relay = await startVeilChild(
    "relay",
    join(dir, "relay.json"),
    {
      routes: [{ path: "/gw", gateway: `${gateway.url}/gateway` }],
      limits: { maxRequestBytes: big, requestTimeoutMs: 300_000 },
      timeouts: { headersMs: 300_000 },
      rateLimit: { perClientPerWindow: 0 },
      logLevel: "warn",
    },
    await freePort(),
    nodeArgs,
  ).catch(async (e: unknown) => {
    await gateway.kill();
    throw e;
  });
  const keyConfigs = toHex(new Uint8Array(await (await fetch(`${gateway.url}/ohttp-keys`)).arrayBuffer()));
  return { gateway, relay, keyConfigs };
}

interface Row {
  size: string;
  mode: Upload["mode"];
  /** Why the runs of this size and mode did not complete (printed instead of numbers). */
  failed?: string;
  mbPerSec: number;
  cpuUsPerMb: number;
  /** Peak RSS (MB) of the two middle processes (relay, gateway; or the two proxies) and the client. */
  rss: [number, number, number];
}

const SIZES: { name: string; bytes: number; reps: (args: string[]) => number }[] = [
  { name: "1 KiB", bytes: 1024, reps: (a) => intArg(a, "reps-1k", 200) },
  { name: "1 MiB", bytes: 1024 * 1024, reps: (a) => intArg(a, "reps-1m", 20) },
  { name: "64 MiB", bytes: 64 * 1024 * 1024, reps: () => 1 },
];

export async function run(args: string[]): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "veil-bench-chunked-"));
  const children: { stop(): unknown }[] = [];
  try {
    const target = await forkChunkedRole("target");
    children.push(target);
    const targetUrl = `http://127.0.0.1:${target.port}`;
    const { gateway, relay, keyConfigs } = await startChunkedStack(dir, targetUrl);
    children.push({ stop: () => gateway.kill() }, { stop: () => relay.kill() });
    const peerGateway = await forkChunkedRole("proxy", targetUrl);
    children.push(peerGateway);
    const peerRelay = await forkChunkedRole("proxy", `http://127.0.0.1:${peerGateway.port}`);
    children.push(peerRelay);
    const client = await forkChunkedRole("client");
    children.push(client);

    const rows: Row[] = [];
    for (const size of SIZES) {
      const reps = size.reps(args);
      for (const mode of ["plain", "chunked", "whole"] as const) {
        const middle = mode === "plain" ? [peerRelay.pid, peerGateway.pid] : [relay.child.pid!, gateway.child.pid!];
        const peak = [0, 0];
        const sample = setInterval(() => middle.forEach((pid, i) => (peak[i] = Math.max(peak[i]!, rssOf(pid) / 2 ** 20))), 20);
        let ms = 0;
        let cpuUs = 0;
        let clientPeak = 0;
        let failed: string | undefined;
        try {
          for (let i = 0; i < reps && failed === undefined; i++) {
            const u: Upload =
              mode === "plain"
                ? { url: `http://127.0.0.1:${peerRelay.port}`, mode, bytes: size.bytes, target: "/upload" }
                : { url: `${relay.url}/gw`, mode, bytes: size.bytes, keys: keyConfigs, target: "https://t.example/upload" };
            let r: Result;
            try {
              r = await client.upload(u);
            } catch (e) {
              failed = String(e);
              break;
            }
            const got = JSON.parse(r.answer) as { bytes: number; sha256: string };
            if (r.status !== 200 || got.bytes !== size.bytes || got.sha256 !== r.sha256) throw new Error(`${mode} ${size.name}: status ${r.status}, ${r.answer}`);
            ms += r.ms;
            cpuUs += r.cpuUs;
            clientPeak = Math.max(clientPeak, r.rssPeakMb);
          }
        } finally {
          clearInterval(sample);
        }
        const mb = (size.bytes * reps) / 1e6;
        rows.push({ size: size.name, mode, mbPerSec: mb / (ms / 1000), cpuUsPerMb: cpuUs / mb, rss: [peak[0]!, peak[1]!, clientPeak], ...(failed === undefined ? {} : { failed }) });
      }
    }
    const label = { plain: "bare proxies (peer)", chunked: "chunked OHTTP", whole: "message/ohttp-req" };
    console.log("size    | mode                | MB/s     | vs peer | client CPU µs/MB | peak RSS MB: relay/proxy1, gateway/proxy2, client");
    for (const r of rows) {
      if (r.failed !== undefined) {
        console.log(`${r.size.padEnd(7)} | ${label[r.mode].padEnd(19)} | failed: ${r.failed}`);
        continue;
      }
      const peer = rows.find((p) => p.size === r.size && p.mode === "plain")!;
      console.log(
        `${r.size.padEnd(7)} | ${label[r.mode].padEnd(19)} | ${r.mbPerSec.toFixed(3).padStart(8)} | ${(r.mbPerSec / peer.mbPerSec).toFixed(2).padStart(6)}x | ${r.cpuUsPerMb.toFixed(0).padStart(16)} | ${r.rss.map((x) => x.toFixed(0)).join(", ")}`,
      );
    }
  } finally {
    for (const c of children.reverse()) await c.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
