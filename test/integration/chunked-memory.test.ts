// Chunked OHTTP end to end with real processes (needs a built dist/): `veil relay` and `veil
// gateway`, the client library and a targets-only target, each its own process
// (bench/chunked-child.ts), so that each one's RSS is its own.
//
// A 64 MiB upload (a ReadableStream body through createObliviousFetch) reaches the target byte for
// byte (SHA-256 of what was sent and of what arrived), while the RSS (from /proc) of the relay, of
// the gateway and of the client grows by at most 32 MiB each: nothing holds the body whole. (The
// early answer and the cut connections through the relay: relay-chunked.test.ts.)
//
// What the processes run with, and why (measured with the 16/64/256 MiB uploads of
// `npm run bench -- chunked-memory`, README "Chunked OHTTP"): V8's defaults (no forced garbage
// collection: the RSS is what an operator sees) but for one flag, and a warm-up upload first.
// - --no-liftoff. undici (the gateway's and the relay's upstream client, fetch in the client)
//   parses HTTP with llhttp compiled to WebAssembly. By default V8 compiles it with its baseline
//   compiler, and once the parser has run, again with its optimizing compiler on a background
//   thread: a one-time compiler zone of ~29 MiB (V8's --trace-wasm-compilation-times: 29.5 MB max,
//   42.6 MB allocated, 0.6-1.7 s for llhttp's main function), released when the compile ends and
//   paid once per process whatever the traffic. It starts after the first HTTP answer a process
//   parses, so it lands in the measured upload: the gateway grew 16-39 MiB for 16, 64 and 256 MiB
//   bodies alike (13.9 MiB with the optimizing compiler turned off). With --no-liftoff V8 compiles
//   the parser once, with the optimizing compiler, on its first use: inside the warm-up.
// - A 16 MiB warm-up upload brings connections, JIT-compiled JavaScript and V8's young generation
//   (which grows with the allocation rate: streaming allocates a few times the bytes that pass) to
//   their working size. Measured on an idle 2-core machine: relay 17-18, gateway 1-17, client
//   2-14 MiB of growth for the 64 MiB upload after it; after a 32 MiB warm-up, relay and gateway
//   grew 1-2 MiB; after an 8 MiB one, 18-27 MiB (the young generation still growing). Nothing
//   follows the body's size.

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forkChunkedRole, type RoleChild } from "../../bench/chunked.js";
import type { Result } from "../../bench/chunked-child.js";
import { toHex } from "../../core/bytes.js";
import { encodeKeyConfigs } from "../../core/ohttp/index.js";
import { writeKeyFile } from "../../gateway/key-file.js";
import { makeKeyData } from "../helpers/gateway-fixture.js";
import { killAllVeilChildren, spawnVeil, type VeilChild } from "../helpers/veil-child.js";

const UPLOAD_BYTES = 64 * 1024 * 1024;
/** The bound on each process's RSS growth during the upload. */
const BOUND_MB = 32;
/** Request timeouts long enough for a 64 MiB upload on a busy machine (node:http's requestTimeout counts the whole upload). */
const LIMITS = { requestTimeoutMs: 120_000 };

const dir = mkdtempSync(join(tmpdir(), "veil-chunked-memory-"));
const NODE_ARGS = ["--no-liftoff"];

let target: RoleChild;
let client: RoleChild;
let relay: VeilChild;
let gateway: VeilChild;
let keys: string;

beforeAll(async () => {
  target = await forkChunkedRole("target", undefined, NODE_ARGS);
  client = await forkChunkedRole("client", undefined, NODE_ARGS);
  const targetUrl = `http://127.0.0.1:${target.port}`;
  const keyFile = join(dir, "gateway-keys.json");
  const data = await makeKeyData([{ keyId: 1 }]);
  writeKeyFile(keyFile, data.data);
  keys = toHex(encodeKeyConfigs([data.configs.get(1)!]));
  gateway = await spawnVeil(
    "gateway",
    join(dir, "gateway.json"),
    { listen: { host: "127.0.0.1", port: 0 }, keys: keyFile, policy: "targets-only", targets: { "https://t.example": targetUrl }, tokens: { required: false }, limits: LIMITS },
    [],
    NODE_ARGS,
  );
  relay = await spawnVeil(
    "relay",
    join(dir, "relay.json"),
    { listen: { host: "127.0.0.1", port: 0 }, routes: [{ path: "/gw", gateway: `${gateway.url}/gateway` }], limits: LIMITS },
    [],
    NODE_ARGS,
  );
}, 60_000);

afterAll(async () => {
  await killAllVeilChildren();
  await Promise.all([target?.stop(), client?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m![1]) / 1024;
}

function upload(bytes: number, path: string): Promise<Result> {
  return client.upload({ url: `${relay.url}/gw`, mode: "chunked", bytes, keys, target: `https://t.example${path}` });
}

describe("chunked OHTTP through veil relay and veil gateway processes", () => {
  it("uploads 64 MiB byte for byte with the RSS of the relay, the gateway and the client growing by at most 32 MiB each", async () => {
    // Warm-up (see the header comment): one-time costs (the HTTP parser's compile, connections,
    // JIT code, V8's young generation) are paid before the baseline.
    expect((await upload(16 * 1024 * 1024, "/warm")).status).toBe(200);
    const pids = { relay: relay.child.pid!, gateway: gateway.child.pid! };
    const base = { relay: rssMb(pids.relay), gateway: rssMb(pids.gateway) };
    const peak = { ...base };
    const sample = setInterval(() => {
      peak.relay = Math.max(peak.relay, rssMb(pids.relay));
      peak.gateway = Math.max(peak.gateway, rssMb(pids.gateway));
    }, 25);
    let r: Result;
    try {
      r = await upload(UPLOAD_BYTES, "/upload");
    } finally {
      clearInterval(sample);
    }
    expect(r.status).toBe(200);
    // The target's SHA-256 of what arrived is the client's of what it sent.
    expect(JSON.parse(r.answer)).toEqual({ bytes: UPLOAD_BYTES, sha256: r.sha256 });
    const growth = { relay: peak.relay - base.relay, gateway: peak.gateway - base.gateway, client: r.rssPeakMb - r.rssBaseMb };
    process.stdout.write(`64 MiB chunked upload in ${(r.ms / 1000).toFixed(1)} s, RSS growth (MiB): relay ${growth.relay.toFixed(1)}, gateway ${growth.gateway.toFixed(1)}, client ${growth.client.toFixed(1)}\n`);
    expect(growth.relay).toBeLessThanOrEqual(BOUND_MB);
    expect(growth.gateway).toBeLessThanOrEqual(BOUND_MB);
    expect(growth.client).toBeLessThanOrEqual(BOUND_MB);
  }, 90_000);
});
