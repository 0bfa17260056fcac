// Chunked OHTTP end to end with real processes (needs a built dist/): `veil relay` and `veil
// gateway`, the client library and a targets-only target, each its own process
// (bench/chunked-child.ts), so that each one's RSS is its own.
//
// A 64 MiB upload (a ReadableStream body through createObliviousFetch) reaches the target byte for
// byte (SHA-256 of what was sent and of what arrived), while the RSS of the relay (from /proc)
// grows by at most 32 MiB and that of the gateway and of the client by at most 48 MiB: nothing
// holds the body whole. (The early answer and the cut connections through the relay:
// relay-chunked.test.ts.)
//
// Why the gateway and the client get 48 MiB: the processes that run the OHTTP cryptography grow by
// a working set that does not follow the body's size (gateway, measured: 14 MiB for a 4 MiB upload,
// 26 for 16, 31-38 for 32 to 256 MiB). Their V8 heap stays flat while it happens (heap total
// ~54 MiB, used ~20 MiB, array buffers < 1 MiB after each forced collection): the growth is native
// memory the allocator keeps after the per-chunk AEAD work, not bytes held. It stays under 48 MiB
// but not reliably under 32 MiB.
//
// Every process runs with a garbage collection forced every 200 ms (a test-only --import), so that
// RSS follows the memory held rather than garbage V8 has not collected yet.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
/** The bound on the relay's RSS growth during the upload. */
const RELAY_BOUND_MB = 32;
/** The bound on the gateway's and the client's RSS growth (see the header comment). */
const CRYPTO_BOUND_MB = 48;
/** Request timeouts long enough for a 64 MiB upload on a busy machine (node:http's requestTimeout counts the whole upload). */
const LIMITS = { requestTimeoutMs: 120_000 };

const dir = mkdtempSync(join(tmpdir(), "veil-chunked-memory-"));
const gcEvery = join(dir, "gc.mjs");
writeFileSync(gcEvery, "setInterval(() => globalThis.gc(), 200).unref();\n");
const NODE_ARGS = ["--expose-gc", "--import", gcEvery];

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
  target?.stop();
  client?.stop();
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
  it("uploads 64 MiB byte for byte with the relay's RSS growing by at most 32 MiB, the gateway's and the client's by at most 48", async () => {
    // Warm-up: every process reaches its working size (connections, code, buffers, and V8's young
    // generation, which grows to its maximum under a high allocation rate).
    expect((await upload(8 * 1024 * 1024, "/warm")).status).toBe(200);
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
    expect(growth.relay).toBeLessThanOrEqual(RELAY_BOUND_MB);
    expect(growth.gateway).toBeLessThanOrEqual(CRYPTO_BOUND_MB);
    expect(growth.client).toBeLessThanOrEqual(CRYPTO_BOUND_MB);
  }, 90_000);
});
