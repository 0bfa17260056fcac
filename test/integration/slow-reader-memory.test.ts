// Memory a client that never reads its answers can make each server hold (needs a built dist/).
//
// Every server runs as its own process (`veil relay|gateway|issuer --config`); one connection
// pipelines the same request as fast as the server reads, and never reads a byte of the answers.
// A server that keeps reading and answering would hold every answer in memory (the relay's lean
// front once grew by 415 MB in 10 s this way). Each server must stop reading that connection while
// its unsent answers exceed a small bound: the client's writes then stall, and the server's RSS
// (from /proc) grows by a few MB at most, whatever kind of answer it is (forwarded, refused 4xx,
// rate-limited 429, served by the lean paths or by node:http and Fastify). Once stalled, the
// connection is cut by the server's timeouts. The measured growth is printed for the record.
//
// The servers run with a garbage collection forced every 200 ms (a test-only --import), so that
// RSS follows the memory held rather than garbage V8 has not collected yet (without it, RSS after
// one flood differs by tens of MB from one run to the next, with the same live heap).

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { connect, type AddressInfo, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeKeyFile } from "../../gateway/key-file.js";
import { makeKeyData } from "../helpers/gateway-fixture.js";
import { killAllVeilChildren, spawnVeil, type VeilChild } from "../helpers/veil-child.js";

/** Growth of a server's RSS (MB) one never-reading connection may cause. */
const BOUND_MB = 32; // RSS noise of a Node process under load reaches ~18 MB; an unbounded server grows by hundreds of MB
/** The flood stops after this much was written (a server that never stops reading fails on RSS long before). */
const FLOOD_BYTES = 96 * 1024 * 1024;
/** Requests sent (and answered, and read) before the flood: the server's heap reaches its working size. */
const WARM_UP_BYTES = 1024 * 1024;
/** The client's writes have stalled when the server reads nothing for this long. */
const STALL_MS = 1500;
/** Short request timeouts: the stalled connection must be cut by them. */
const LIMITS = { headersTimeoutMs: 1000, requestTimeoutMs: 2000, keepAliveTimeoutMs: 1000 };

const dir = mkdtempSync(join(tmpdir(), "veil-slow-reader-"));
const gcEvery = join(dir, "gc.mjs");
writeFileSync(gcEvery, "setInterval(() => globalThis.gc(), 200).unref();\n");
const NODE_ARGS = ["--expose-gc", "--import", gcEvery];
let fileNo = 0;
const configFile = (): string => join(dir, `config-${fileNo++}.json`);
const measured: string[] = [];

let gateway: VeilChild;
let issuer: VeilChild;

beforeAll(async () => {
  const keys = join(dir, "gateway-keys.json");
  writeKeyFile(keys, (await makeKeyData([{ keyId: 1 }])).data);
  gateway = await spawnVeil("gateway", configFile(), {
    listen: { host: "127.0.0.1", port: 0 },
    keys,
    targets: { "https://leader.example": "http://127.0.0.1:9/" },
    tokens: { required: false },
    limits: LIMITS,
  }, [], NODE_ARGS);
  const issuerKeys = join(dir, "issuer-keys.json");
  issuer = await spawnVeil("issuer", configFile(), {
    listen: { host: "127.0.0.1", port: 0 },
    name: "issuer.example",
    keys: issuerKeys,
    attester: { credentials: ["cred-1"], tokensPerWindow: 5 },
    limits: LIMITS,
  }, [], NODE_ARGS);
}, 120_000);

afterAll(async () => {
  await killAllVeilChildren();
  rmSync(dir, { recursive: true, force: true });
  process.stdout.write(`never-reading client, RSS growth per server:\n${measured.join("\n")}\n`);
});

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m![1]) / 1024;
}

function post(path: string, contentType: string, body: string, extra = ""): string {
  return `POST ${path} HTTP/1.1\r\nHost: s\r\nContent-Type: ${contentType}\r\nContent-Length: ${body.length}\r\n${extra}\r\n${body}`;
}

/**
 * Sends about WARM_UP_BYTES (at most 5000) copies of `one` on a connection that reads its answers, so the
 * server's heap reaches the size it has under this load; returns the largest RSS seen meanwhile.
 */
async function warmUp(port: number, pid: number, one: string): Promise<number> {
  const count = Math.min(5000, Math.ceil(WARM_UP_BYTES / one.length));
  const socket = connect(port, "127.0.0.1");
  let seen = 0;
  let peak = rssMb(pid);
  let sent = 0;
  await new Promise<void>((resolve, reject) => {
    const send = (): void => {
      // In rounds of 1000, so the server never has many unread answers for this client.
      if (sent < count && sent - seen < 1000) {
        const n = Math.min(1000, count - sent);
        sent += n;
        socket.write(one.repeat(n));
      }
    };
    socket.on("data", (c: Buffer) => {
      seen += c.toString("latin1").split("HTTP/1.1 ").length - 1;
      if (seen % 500 < 5) peak = Math.max(peak, rssMb(pid));
      if (seen >= count) resolve();
      else send();
    });
    socket.on("error", reject);
    socket.on("close", () => reject(new Error(`closed after ${seen} answers`)));
    send();
  });
  socket.destroy();
  return Math.max(peak, rssMb(pid));
}

interface Flood {
  growthMb: number;
  writtenMb: number;
  /** The server closed the stalled connection (by its timeouts). */
  cut: boolean;
}

/**
 * One connection that writes `one` back to back and never reads. Returns the server's largest RSS
 * growth over its working size (the largest RSS of the warm-up), once the writes have stalled (or
 * FLOOD_BYTES were written).
 */
async function flood(server: VeilChild, one: string): Promise<Flood> {
  const pid = server.child.pid!;
  const baseline = await warmUp(server.port, pid, one);
  let peak = baseline;
  const socket: Socket = connect(server.port, "127.0.0.1");
  socket.pause();
  let closed = false;
  const closedP = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  void closedP.then(() => (closed = true));
  socket.on("error", () => {});
  await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
  const block = Buffer.from(one.repeat(Math.ceil(65536 / one.length)), "latin1");
  let written = 0;
  while (written < FLOOD_BYTES && !closed) {
    const more = socket.write(block);
    written += block.length;
    peak = Math.max(peak, rssMb(pid));
    if (!more) {
      const drained = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), STALL_MS);
        socket.once("drain", () => {
          clearTimeout(timer);
          resolve(true);
        });
        void closedP.then(() => resolve(false));
      });
      if (!drained) break;
    }
  }
  peak = Math.max(peak, rssMb(pid));
  // Stalled: the server's timeouts must now cut the connection. A client that neither reads nor
  // has writes pending hears of the reset only when it writes: so it keeps writing one byte.
  const probe = setInterval(() => socket.write("P"), 200);
  const cut = await Promise.race([closedP.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 60_000))]);
  clearInterval(probe);
  socket.destroy();
  return { growthMb: peak - baseline, writtenMb: written / 1024 / 1024, cut };
}

async function check(server: string, kind: string, child: VeilChild, one: string): Promise<void> {
  const r = await flood(child, one);
  measured.push(`  ${server} ${kind}: ${r.growthMb.toFixed(1)} MB (client wrote ${r.writtenMb.toFixed(1)} MB before stalling)`);
  expect(r.growthMb, `${server} ${kind}`).toBeLessThan(BOUND_MB);
  expect(r.writtenMb, `${server} ${kind}: the server kept reading`).toBeLessThan(FLOOD_BYTES / 1024 / 1024);
  expect(r.cut, `${server} ${kind}: the stalled connection was not cut`).toBe(true);
  // And the server still serves others.
  const client = new Client(child.url);
  const health = await client.request({ method: "GET", path: "/healthz" });
  expect(health.statusCode, `${JSON.stringify(health.headers)} ${await health.body.text()}`).toBe(200);
  await client.close();
}

describe("a client that pipelines requests and never reads the answers", () => {
  it("makes the relay hold a few MB at most, for every kind of answer", async () => {
    // The gateway here answers every request at once, with 16 KiB (the relay's behaviour is what
    // is measured; large answers fill the kernel's socket buffers in a few hundred requests).
    const answer = Buffer.alloc(16 * 1024, 0x61);
    const stand = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "message/ohttp-res", "content-length": answer.length });
        res.end(answer);
      });
    });
    await new Promise<void>((resolve) => stand.listen(0, "127.0.0.1", resolve));
    const standUrl = `http://127.0.0.1:${(stand.address() as AddressInfo).port}/gateway`;
    const relay = await spawnVeil("relay", configFile(), {
      listen: { host: "127.0.0.1", port: 0 },
      routes: [{ path: "/gw", gateway: standUrl }],
      rateLimit: { perClientPerWindow: 0 },
      limits: LIMITS,
    }, [], NODE_ARGS);
    const limited = await spawnVeil("relay", configFile(), {
      listen: { host: "127.0.0.1", port: 0 },
      routes: [{ path: "/gw", gateway: standUrl }],
      rateLimit: { perClientPerWindow: 1, windowMs: 3_600_000 },
      limits: LIMITS,
    }, [], NODE_ARGS);
    try {
      await check("relay", "415 (lean front)", relay, post("/gw", "text/plain", "x"));
      await check("relay", "forwarded (lean front)", relay, post("/gw", "message/ohttp-req", "not an encapsulated request"));
      await check("relay", "429 (lean front)", limited, post("/gw", "message/ohttp-req", "x"));
      await check("relay", "404 (node:http)", relay, post("/other", "message/ohttp-req", "x"));
    } finally {
      await relay.kill();
      await limited.kill();
      stand.close();
    }
  }, 300_000);

  it("makes the gateway hold a few MB at most (lean path and Fastify)", async () => {
    await check("gateway", "400 (lean path)", gateway, post("/gateway", "message/ohttp-req", "not an encapsulated request"));
    await check("gateway", "415 (Fastify)", gateway, post("/gateway", "text/plain", "x"));
  }, 300_000);

  it("makes the issuer hold a few MB at most", async () => {
    await check("issuer", "401 (Fastify)", issuer, post("/token-request", "application/private-token-request", "x"));
  }, 300_000);
});
