// What sealing a chunked request costs the client, per byte: ArrayBuffer bytes allocated and CPU
// time, for each way of sealing, against the floor in the same process: node:crypto AES-128-GCM
// alone over the same 16 KiB chunks (one cipher per chunk, as HPKE's per-message nonce requires).
// Run by `npm run bench -- chunked-memory --seal` in a child process of its own (role "seal" of
// bench/chunked-child.ts, with --expose-gc and a 64 MiB young generation).
//
// Ways of sealing, all through encapsulateChunkedRequest's ChunkWriter, in 64 KiB pieces (what the
// benchmarks' client streams) with the default suite (X25519, HKDF-SHA256, AES-128-GCM):
//   sync      the node:crypto backend's synchronous sender (setupSenderSync): what a Node client does
//   hpke-js   hpke-js's sender context over the same node:crypto primitives: what it did before
//   stock     stock hpke-js (WebCrypto): what a browser does
//
// Allocation: a garbage collection, process.memoryUsage().arrayBuffers, 1 MiB sealed, the same
// again; the difference is what was allocated, since nothing in between collects (the young
// generation is large, and a few MiB stay under V8's external-memory trigger). A round in which a
// collection ran anyway (seen by a PerformanceObserver: stock hpke-js makes enough JavaScript
// garbage for scavenges in 4 MiB rounds) is dropped and counted, since a scavenge frees
// ArrayBuffers too. CPU: process.cpuUsage() over 32 MiB per way, the ways alternated, the median
// of three.
//
// `--seal --respond` measures the response direction the same way (the gateway sealing its
// answer's chunks, the client opening them; 16 KiB chunks, 64 KiB pieces) against the same floor:
//   seal sync / open sync        the node:crypto backend's synchronous response AEAD (what Node does)
//   seal hpke-js / open hpke-js  hpke-js's AEAD over the same node:crypto primitives (before it)
// Only the response is counted: the request it answers is sealed and opened beforehand, and what
// the client opens was sealed beforehand; the response's key derivation is counted.

import { createCipheriv } from "node:crypto";
import { PerformanceObserver } from "node:perf_hooks";
import { ChunkedRequestDecapsulator, encapsulateChunkedRequest, importGatewayKey, KDF, AEAD, KEM, stockHpkeBackend, type HpkeBackend, type KeyConfig } from "../core/ohttp/index.js";
import { nodeHpkeBackend } from "../core/ohttp/fast-node.js";
import { median } from "./args.js";

const MIB = 2 ** 20;
const PIECE = 64 * 1024;
const CHUNK = 16 * 1024;

/** `b` without its synchronous sender: chunked requests then seal through hpke-js's sender context. */
export function hpkeJsSender(b: HpkeBackend): HpkeBackend {
  const { setupSenderSync: _dropped, ...rest } = b;
  return { ...rest, name: `${b.name} in hpke-js's sender context` };
}

/** `b` without its synchronous response AEAD: chunked responses then seal and open through hpke-js's AEAD. */
export function hpkeJsResponder(b: HpkeBackend): HpkeBackend {
  const { responseChunkAead: _dropped, ...rest } = b;
  return { ...rest, name: `${b.name} in hpke-js's response AEAD` };
}

export const SEAL_WAYS = ["floor", "sync", "hpke-js", "stock"] as const;
export const RESPOND_WAYS = ["floor", "seal sync", "seal hpke-js", "open sync", "open hpke-js"] as const;
export type SealWay = (typeof SEAL_WAYS)[number] | (typeof RESPOND_WAYS)[number];
/** Which direction `--seal` measures: the client's request, or the gateway's response and the client opening it. */
export type SealDirection = "request" | "response";

export interface SealRow {
  way: SealWay;
  /** ArrayBuffer bytes allocated per plaintext byte sealed or opened (median over the rounds kept; -1 if none was). */
  abPerByte: number;
  /** Rounds dropped because a garbage collection ran inside them, of the rounds run. */
  dropped: number;
  rounds: number;
  /** CPU (user + system) per MiB sealed or opened, µs (median of the repetitions). */
  cpuUsPerMib: number;
}

/** Sets up what `bytes` needs (not counted), then gives the counted work. */
type Sealer = (bytes: Uint8Array) => Promise<() => Promise<void>>;

async function sealerFor(way: SealWay, config: KeyConfig, privateKey: Uint8Array): Promise<Sealer> {
  if (way === "floor") {
    const key = new Uint8Array(16).fill(7);
    const nonce = new Uint8Array(12);
    let counter = 0;
    return async (bytes) => async () => {
      for (let o = 0; o < bytes.length; o += CHUNK) {
        new DataView(nonce.buffer).setUint32(8, counter++);
        const c = createCipheriv("aes-128-gcm", key, nonce);
        c.update(bytes.subarray(o, o + CHUNK));
        c.final();
        c.getAuthTag();
      }
    };
  }
  if (way === "seal sync" || way === "seal hpke-js" || way === "open sync" || way === "open hpke-js") return responderFor(way, config, privateKey);
  const backend = way === "sync" ? nodeHpkeBackend : way === "hpke-js" ? hpkeJsSender(nodeHpkeBackend) : stockHpkeBackend;
  // A fresh request per call: a request's sequence numbers are never exhausted, and its setup (one
  // DH, a dozen HMACs) is a fixed cost next to megabytes of chunks.
  return async (bytes) => async () => {
    const req = await encapsulateChunkedRequest(config, { backend });
    for (let o = 0; o < bytes.length; o += PIECE) await req.writer.seal(bytes.subarray(o, o + PIECE));
    await req.writer.sealFinal();
  };
}

/** The response ways: a fresh request answered per call; the gateway seals, or the client opens what was sealed. */
async function responderFor(way: "seal sync" | "seal hpke-js" | "open sync" | "open hpke-js", config: KeyConfig, privateKey: Uint8Array): Promise<Sealer> {
  const backend = way.endsWith("sync") ? nodeHpkeBackend : hpkeJsResponder(nodeHpkeBackend);
  const key = await importGatewayKey(config.keyId, config.kemId, privateKey, config.symmetric, { backend });
  const answer = async () => {
    const req = await encapsulateChunkedRequest(config, { backend });
    const d = new ChunkedRequestDecapsulator(new Map([[config.keyId, key]]));
    await d.push(req.header);
    await d.push(await req.writer.sealFinal());
    await d.end();
    return { response: req.response, respond: () => d.respond() };
  };
  /** Seals `bytes` as the answer, each framed piece to `sink` (the sealing ways drop them, as a socket write would). */
  const sealAll = async (respond: () => ReturnType<ChunkedRequestDecapsulator["respond"]>, bytes: Uint8Array, sink: (piece: Uint8Array) => void): Promise<void> => {
    const { nonce, writer } = await respond();
    sink(nonce);
    for (let o = 0; o < bytes.length; o += PIECE) sink(await writer.seal(bytes.subarray(o, o + PIECE)));
    sink(await writer.sealFinal());
  };
  if (way.startsWith("seal")) {
    return async (bytes) => {
      const a = await answer();
      return () => sealAll(a.respond, bytes, () => undefined);
    };
  }
  return async (bytes) => {
    const a = await answer();
    const sealed: Uint8Array[] = [];
    await sealAll(a.respond, bytes, (p) => sealed.push(p));
    // What the client receives, in 64 KiB pieces as a socket would give them (chunks straddle them).
    const wire = new Uint8Array(sealed.reduce((n, p) => n + p.length, 0));
    sealed.reduce((o, p) => (wire.set(p, o), o + p.length), 0);
    return async () => {
      for (let o = 0; o < wire.length; o += PIECE) await a.response.push(wire.subarray(o, o + PIECE));
      await a.response.end();
    };
  };
}

export async function measureSealing(direction: SealDirection = "request"): Promise<SealRow[]> {
  const ways: readonly SealWay[] = direction === "request" ? SEAL_WAYS : RESPOND_WAYS;
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("the seal measurement needs node --expose-gc");
  const { publicKey, privateKey } = await nodeHpkeBackend.generateKeyPair(KEM.X25519);
  const config: KeyConfig = { keyId: 1, kemId: KEM.X25519, publicKey, symmetric: [{ kdfId: KDF.SHA256, aeadId: AEAD.AES128GCM }] };
  const sealers = new Map<SealWay, Sealer>();
  for (const way of ways) sealers.set(way, await sealerFor(way, config, privateKey));
  const round = new Uint8Array(MIB).fill(0x5a);
  const big = new Uint8Array(32 * MIB).fill(0x5a);
  let collections: number[] = [];
  const observer = new PerformanceObserver((list) => collections.push(...list.getEntries().map((e) => e.startTime)));
  observer.observe({ entryTypes: ["gc"] });
  const flush = () => new Promise<void>((resolve) => setImmediate(resolve));
  try {
    // Warm-up: every way's code compiled and its caches filled before anything is counted.
    for (const s of sealers.values()) await (await s(round))();
    const allocated = new Map<SealWay, number[]>(ways.map((w) => [w, []]));
    const dropped = new Map<SealWay, number>(ways.map((w) => [w, 0]));
    const rounds = 10;
    for (let r = 0; r < rounds; r++) {
      for (const way of ways) {
        const work = await sealers.get(way)!(round);
        gc();
        await flush();
        collections = [];
        const t0 = performance.now();
        const a0 = process.memoryUsage().arrayBuffers;
        await work();
        const a1 = process.memoryUsage().arrayBuffers;
        const t1 = performance.now();
        await flush();
        if (collections.some((t) => t >= t0 && t <= t1)) dropped.set(way, dropped.get(way)! + 1);
        else allocated.get(way)!.push((a1 - a0) / round.length);
      }
    }
    const cpu = new Map<SealWay, number[]>(ways.map((w) => [w, []]));
    for (let rep = 0; rep < 3; rep++) {
      for (const way of ways) {
        const work = await sealers.get(way)!(big);
        gc();
        const c0 = process.cpuUsage();
        await work();
        const c = process.cpuUsage(c0);
        cpu.get(way)!.push((c.user + c.system) / (big.length / MIB));
      }
    }
    return ways.map((way) => ({
      way,
      // -1: every round had a collection in it (printed as n/a)
      abPerByte: allocated.get(way)!.length > 0 ? median(allocated.get(way)!) : -1,
      dropped: dropped.get(way)!,
      rounds,
      cpuUsPerMib: median(cpu.get(way)!),
    }));
  } finally {
    observer.disconnect();
  }
}

/** The table `npm run bench -- chunked-memory --seal [--respond]` prints. */
export function printSealing(rows: readonly SealRow[]): void {
  const floor = rows.find((r) => r.way === "floor")!;
  const label: Record<SealWay, string> = {
    floor: "floor: AES-128-GCM alone",
    sync: "synchronous sender (Node)",
    "hpke-js": "hpke-js context, node prims",
    stock: "stock hpke-js (browsers)",
    "seal sync": "gateway seals, sync AEAD",
    "seal hpke-js": "gateway seals, hpke-js AEAD",
    "open sync": "client opens, sync AEAD",
    "open hpke-js": "client opens, hpke-js AEAD",
  };
  console.log("way                         | ArrayBuffer B/B        | vs floor | rounds kept | CPU µs/MiB | vs floor");
  for (const r of rows) {
    const ab = r.abPerByte < 0 || floor.abPerByte < 0 ? ["n/a", "n/a"] : [r.abPerByte.toFixed(3), `${(r.abPerByte / floor.abPerByte).toFixed(2)}x`];
    console.log(
      `${label[r.way].padEnd(27)} | ${ab[0]!.padStart(22)} | ${ab[1]!.padStart(8)} | ${`${r.rounds - r.dropped}/${r.rounds}`.padStart(11)} | ${r.cpuUsPerMib.toFixed(0).padStart(10)} | ${(r.cpuUsPerMib / floor.cpuUsPerMib).toFixed(2).padStart(7)}x`,
    );
  }
}
