// `npm run bench -- ohttp [--rounds N] [--ms N]`: µs per OHTTP request decapsulation + response
// encapsulation (X25519, HKDF-SHA256, AES-128-GCM), measured in one process for
//   (a) stock hpke-js primitives (WebCrypto / pure JS),
//   (b) Veil's path (core/ohttp: the gateway's one-call openRequest and response seal on node:crypto),
//   (c) the native floor: the same work written directly against node:crypto (X25519 DH, the
//       RFC 9180 key schedule's HKDF calls, AES-128-GCM open, export, RFC 9458 response key
//       derivation and seal), with the private key as a ready KeyObject, as the gateway holds it.
// Variants run interleaved in rounds; the medians are printed with the ratio to the floor.

import { createCipheriv, createDecipheriv, createHmac, createPublicKey, diffieHellman, randomBytes, type KeyObject } from "node:crypto";
import { equalBytes, toHex } from "../core/bytes.js";
import {
  AEAD,
  KDF,
  KEM,
  decapsulateRequest,
  encapsulateRequest,
  importGatewayKey,
  stockHpkeBackend,
  type GatewayKey,
} from "../core/ohttp/index.js";
import { nodeHpkeBackend } from "../core/ohttp/fast-node.js";
import { median, numberArg } from "./args.js";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

// ---- the floor -------------------------------------------------------------------------------

const HPKE_V1 = enc("HPKE-v1");
const KEM_SUITE = Uint8Array.of(0x4b, 0x45, 0x4d, 0x00, 0x20); // "KEM" || 0x0020
const HPKE_SUITE = Uint8Array.of(0x48, 0x50, 0x4b, 0x45, 0x00, 0x20, 0x00, 0x01, 0x00, 0x01);
const cat = (...p: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(p.reduce((n, x) => n + x.length, 0));
  let o = 0;
  for (const x of p) {
    out.set(x, o);
    o += x.length;
  }
  return out;
};
// One update per HMAC (several small updates cost more than concatenating first).
const hmac = (key: Uint8Array, ...data: Uint8Array[]): Uint8Array =>
  createHmac("sha256", key).update(data.length === 1 ? data[0]! : cat(...data)).digest();
const ONE = Uint8Array.of(1);
const EMPTY = new Uint8Array(0);
const u16 = (n: number): Uint8Array => Uint8Array.of(n >> 8, n & 0xff);
const labeledExtract = (suite: Uint8Array, salt: Uint8Array, label: string, ikm: Uint8Array): Uint8Array =>
  hmac(salt, HPKE_V1, suite, enc(label), ikm);
// Expand for L <= Nh: one HMAC block.
const labeledExpand = (suite: Uint8Array, prk: Uint8Array, label: string, info: Uint8Array, len: number): Uint8Array =>
  hmac(prk, u16(len), HPKE_V1, suite, enc(label), info, ONE).subarray(0, len);

/** Decapsulate (RFC 9458 §4.3) and encapsulate `resp` (§4.4) with node:crypto only. */
function floor(skR: KeyObject, pkRm: Uint8Array, req: Uint8Array, resp: Uint8Array, nonce?: Uint8Array): { request: Uint8Array; response: Uint8Array } {
  const hdr = req.subarray(0, 7);
  const encKey = req.subarray(7, 39);
  const ct = req.subarray(39);
  const pkE = createPublicKey({ key: { kty: "OKP", crv: "X25519", x: Buffer.from(encKey).toString("base64url") }, format: "jwk" });
  const dh = diffieHellman({ privateKey: skR, publicKey: pkE });
  // DHKEM ExtractAndExpand
  const eaePrk = labeledExtract(KEM_SUITE, EMPTY, "eae_prk", dh);
  const shared = labeledExpand(KEM_SUITE, eaePrk, "shared_secret", cat(encKey, pkRm), 32);
  // Key schedule (base mode)
  const info = cat(enc("message/bhttp request"), Uint8Array.of(0), hdr);
  const pskIdHash = labeledExtract(HPKE_SUITE, EMPTY, "psk_id_hash", EMPTY);
  const infoHash = labeledExtract(HPKE_SUITE, EMPTY, "info_hash", info);
  const ksc = cat(Uint8Array.of(0), pskIdHash, infoHash);
  const secret = labeledExtract(HPKE_SUITE, shared, "secret", EMPTY);
  const key = labeledExpand(HPKE_SUITE, secret, "key", ksc, 16);
  const baseNonce = labeledExpand(HPKE_SUITE, secret, "base_nonce", ksc, 12);
  const exporterSecret = labeledExpand(HPKE_SUITE, secret, "exp", ksc, 32);
  // Open (seq 0: nonce = base_nonce)
  const d = createDecipheriv("aes-128-gcm", key, baseNonce);
  d.setAuthTag(ct.subarray(ct.length - 16));
  const request = d.update(ct.subarray(0, ct.length - 16));
  d.final();
  // Export and response (RFC 9458 §4.4)
  const respSecret = labeledExpand(HPKE_SUITE, exporterSecret, "sec", enc("message/bhttp response"), 16);
  const respNonce = nonce ?? randomBytes(16);
  const prk = hmac(cat(encKey, respNonce), respSecret);
  const aeadKey = hmac(prk, enc("key"), ONE).subarray(0, 16);
  const aeadNonce = hmac(prk, enc("nonce"), ONE).subarray(0, 12);
  const c = createCipheriv("aes-128-gcm", aeadKey, aeadNonce);
  const body = c.update(resp);
  c.final();
  return { request, response: cat(respNonce, body, c.getAuthTag()) };
}

// ---- measurement -----------------------------------------------------------------------------

interface Sample {
  /** wall-clock µs per operation */
  wall: number;
  /** CPU µs per operation (user + system, all threads: WebCrypto work runs in the thread pool) */
  cpu: number;
}

async function timeFor(ms: number, op: () => Promise<void> | void): Promise<Sample> {
  let n = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  let now = start;
  while (now - start < ms) {
    for (let i = 0; i < 8; i++) await op();
    n += 8;
    now = performance.now();
  }
  const cpu = process.cpuUsage(cpu0);
  return { wall: ((now - start) * 1000) / n, cpu: (cpu.user + cpu.system) / n };
}



export async function run(args: string[]): Promise<void> {
  const rounds = numberArg(args, "--rounds", 15);
  const ms = numberArg(args, "--ms", 150);
  const suite = [{ kdfId: KDF.SHA256, aeadId: AEAD.AES128GCM }];
  const sk = randomBytes(32);
  const ours = await importGatewayKey(1, KEM.X25519, sk, suite, { backend: nodeHpkeBackend });
  const stock = await importGatewayKey(1, KEM.X25519, sk, suite, { backend: stockHpkeBackend });
  const skR = (await nodeHpkeBackend.importPrivateKey(KEM.X25519, sk)).pair.privateKey as unknown as { keyObject: KeyObject };
  const pkRm = ours.config.publicKey;
  const body = randomBytes(600); // about a DAP-09 report upload inside Binary HTTP
  const answer = randomBytes(40);
  const reqs: Uint8Array[] = [];
  for (let i = 0; i < 64; i++) reqs.push((await encapsulateRequest(ours.config, body)).encapsulated);

  // The floor must do exactly what Veil does: compare outputs once.
  const nonce = randomBytes(16);
  const f = floor(skR.keyObject, pkRm, reqs[0]!, answer, nonce);
  const v = await decapsulateRequest(new Map([[1, ours]]), reqs[0]!);
  const vr = await v.response.encapsulateResponse(answer, { responseNonce: nonce });
  if (!equalBytes(f.request, v.request) || !equalBytes(f.response, vr)) {
    throw new Error(`floor and Veil disagree: ${toHex(f.response)} vs ${toHex(vr)}`);
  }

  let i = 0;
  const next = (): Uint8Array => reqs[i++ & 63]!;
  const viaKey = (key: GatewayKey): (() => Promise<void>) => {
    const ring = new Map([[1, key]]);
    return async () => {
      const { response } = await decapsulateRequest(ring, next());
      await response.encapsulateResponse(answer);
    };
  };
  const variants: [string, () => Promise<void> | void, number][] = [
    ["stock hpke-js", viaKey(stock), ms],
    ["veil (core/ohttp on node:crypto)", viaKey(ours), ms],
    ["native floor (node:crypto only)", () => void floor(skR.keyObject, pkRm, next(), answer), ms],
  ];
  const results = variants.map(() => [] as Sample[]);
  for (const [, op] of variants) await timeFor(100, op); // warm-up
  // Short interleaved slices: other processes share the cores, so each round's ratio compares
  // slices that ran moments apart, and the medians discard the disturbed rounds. CPU time is
  // reported too: it does not count the time this process waited for a core.
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < variants.length; k++) results[k]!.push(await timeFor(variants[k]![2], variants[k]![1]));
  }
  console.log(`ohttp: decapsulate request + encapsulate response, X25519/HKDF-SHA256/AES-128-GCM, ${body.length}-byte request`);
  console.log(`medians of ${rounds} interleaved rounds of ${ms} ms per variant (Node ${process.version}); ratios = medians of per-round ratios`);
  console.log(`  ${"".padEnd(34)} ${"wall µs".padStart(9)} ${"ratio".padStart(7)}   ${"CPU µs".padStart(9)} ${"ratio".padStart(7)}`);
  const floorRuns = results[2]!;
  for (let k = 0; k < variants.length; k++) {
    const rs = results[k]!;
    const wall = median(rs.map((x) => x.wall));
    const cpu = median(rs.map((x) => x.cpu));
    const wallRatio = median(rs.map((x, r) => x.wall / floorRuns[r]!.wall));
    const cpuRatio = median(rs.map((x, r) => x.cpu / floorRuns[r]!.cpu));
    console.log(
      `  ${variants[k]![0].padEnd(34)} ${wall.toFixed(1).padStart(9)} ${(wallRatio.toFixed(2) + "x").padStart(7)}   ${cpu.toFixed(1).padStart(9)} ${(cpuRatio.toFixed(2) + "x").padStart(7)}`,
    );
  }
}
