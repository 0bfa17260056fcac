// The node:crypto HPKE primitives (core/ohttp/fast-node.ts) against stock hpke-js: random
// messages in both directions for every KEM/KDF/AEAD combination, at the HPKE level and through
// OHTTP encapsulation; plus the primitives on their own (multi-block HKDF, AEAD, PRK memo).

import { spawn } from "node:child_process";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { toHex } from "../../core/bytes.js";
import { ALL_AEADS, ALL_KDFS, AEAD_INFO, KDF_INFO, KEM_INFO } from "../../core/ohttp/constants.js";
import {
  decapsulateRequest,
  encapsulateRequest,
  importGatewayKey,
  stockHpkeBackend,
  KEM,
  type HpkeBackend,
} from "../../core/ohttp/index.js";
import { NodeAead, NodeHkdf, nodeHpkeBackend } from "../../core/ohttp/fast-node.js";
import { stockAead, stockKdf } from "../../core/ohttp/stock.js";
import { COMBOS } from "../helpers/ohttp.js";

/** Deterministic "random" messages (fixed seed per test). */
function messages(seed: number, n = 3): { pt: Uint8Array; aad: Uint8Array; exporterContext: Uint8Array }[] {
  return fc.sample(
    fc.record({
      pt: fc.uint8Array({ maxLength: 1500 }),
      aad: fc.uint8Array({ maxLength: 40 }),
      exporterContext: fc.uint8Array({ maxLength: 40 }),
    }),
    { seed, numRuns: n },
  );
}

const DIRECTIONS: [string, HpkeBackend, HpkeBackend][] = [
  ["node:crypto -> stock", nodeHpkeBackend, stockHpkeBackend],
  ["stock -> node:crypto", stockHpkeBackend, nodeHpkeBackend],
];
const hex = (b: ArrayBuffer | Uint8Array): string => toHex(b instanceof Uint8Array ? b : new Uint8Array(b));

describe.each(COMBOS)("cross-check with stock hpke-js: %s", (_name, kemId, kdfId, aeadId) => {
  it.each(DIRECTIONS)("HPKE seal/open/export agree (%s)", async (_d, sender, recipient) => {
    const { privateKey } = await recipient.generateKeyPair(kemId);
    const r = await recipient.importPrivateKey(kemId, privateKey);
    const s = await sender.importPrivateKey(kemId, privateKey);
    expect(hex(s.publicKey)).toBe(hex(r.publicKey));
    const info = new TextEncoder().encode(`veil ${kemId} ${kdfId} ${aeadId}`);
    const pkR = await sender.importPublicKey(kemId, r.publicKey);
    const sctx = await sender.suite(kemId, kdfId, aeadId).createSenderContext({ recipientPublicKey: pkR, info });
    const rctx = await recipient.suite(kemId, kdfId, aeadId).createRecipientContext({ recipientKey: r.pair, enc: sctx.enc, info });
    for (const m of messages(kemId + kdfId * 7 + aeadId * 31)) {
      const ct = await sctx.seal(m.pt, m.aad);
      expect(ct.byteLength).toBe(m.pt.length + 16);
      expect(hex(await rctx.open(ct, m.aad))).toBe(hex(m.pt));
      expect(hex(await rctx.export(m.exporterContext, 48))).toBe(hex(await sctx.export(m.exporterContext, 48)));
    }
  });

  it("opens a stock hpke-js message and exports in one synchronous call as the hpke-js recipient does", async () => {
    const { privateKey } = await stockHpkeBackend.generateKeyPair(kemId);
    const r = await nodeHpkeBackend.importPrivateKey(kemId, privateKey);
    const pkR = await stockHpkeBackend.importPublicKey(kemId, r.publicKey);
    const info = new TextEncoder().encode(`veil once ${kemId} ${kdfId} ${aeadId}`);
    for (const m of messages(kemId * 3 + kdfId * 5 + aeadId * 11)) {
      const sctx = await stockHpkeBackend.suite(kemId, kdfId, aeadId).createSenderContext({ recipientPublicKey: pkR, info });
      const ct = new Uint8Array(await sctx.seal(m.pt, m.aad));
      const enc = new Uint8Array(sctx.enc);
      const once = nodeHpkeBackend.openRequest!(kemId, kdfId, aeadId, r.pair, enc, info, m.aad, ct, m.exporterContext, 32);
      if (kemId === KEM.XWING) {
        expect(once).toBeUndefined(); // no node:crypto X-Wing: hpke-js's context does it
        continue;
      }
      expect(hex(once!.plaintext)).toBe(hex(m.pt));
      expect(hex(once!.exported)).toBe(hex(await sctx.export(m.exporterContext, 32)));
    }
  });

  it("opens message after message (sequence numbers past one byte) and exports with a synchronous context as the hpke-js recipient does", async () => {
    const { privateKey } = await stockHpkeBackend.generateKeyPair(kemId);
    const r = await nodeHpkeBackend.importPrivateKey(kemId, privateKey);
    const pkR = await stockHpkeBackend.importPublicKey(kemId, r.publicKey);
    const info = new TextEncoder().encode(`veil context ${kemId} ${kdfId} ${aeadId}`);
    const sctx = await stockHpkeBackend.suite(kemId, kdfId, aeadId).createSenderContext({ recipientPublicKey: pkR, info });
    const ctx = nodeHpkeBackend.setupRecipientSync!(kemId, kdfId, aeadId, r.pair, new Uint8Array(sctx.enc), info);
    if (kemId === KEM.XWING) {
      expect(ctx).toBeUndefined(); // no node:crypto X-Wing: hpke-js's context does it
      return;
    }
    const aad = Uint8Array.of(kemId, kdfId, aeadId);
    for (let seq = 0; seq < 260; seq++) {
      const pt = Uint8Array.of(seq & 0xff, seq >> 8);
      expect(hex(ctx!.open(new Uint8Array(await sctx.seal(pt, aad)), aad))).toBe(hex(pt));
    }
    // A message sealed for another sequence number, or with another AAD, does not open (and a
    // failed open does not move the sequence number).
    const first = new Uint8Array(await sctx.seal(Uint8Array.of(1), aad));
    const second = new Uint8Array(await sctx.seal(Uint8Array.of(2), aad));
    expect(() => ctx!.open(second, aad)).toThrow();
    expect(() => ctx!.open(first, Uint8Array.of(0))).toThrow();
    expect(hex(ctx!.open(first, aad))).toBe("01");
    expect(hex(ctx!.open(second, aad))).toBe("02");
    const exporterContext = new TextEncoder().encode("chunked");
    expect(hex(ctx!.export(exporterContext, 32))).toBe(hex(await sctx.export(exporterContext, 32)));
  });

  it.each(DIRECTIONS)("OHTTP request and response round-trip (%s)", async (_d, client, gateway) => {
    const { privateKey } = await gateway.generateKeyPair(kemId);
    const key = await importGatewayKey(7, kemId, privateKey, [{ kdfId, aeadId }], { backend: gateway });
    const clientView = { ...key.config, publicKey: (await client.importPrivateKey(kemId, privateKey)).publicKey };
    for (const m of messages(kemId ^ (kdfId << 4) ^ (aeadId << 8), 2)) {
      const { encapsulated, response } = await encapsulateRequest(clientView, m.pt, { backend: client });
      expect(encapsulated.length).toBe(7 + KEM_INFO[kemId].Nenc + m.pt.length + 16);
      const d = await decapsulateRequest(new Map([[7, key]]), encapsulated);
      expect(hex(d.request)).toBe(hex(m.pt));
      const encResponse = await d.response.encapsulateResponse(m.aad);
      expect(hex(await response.decapsulateResponse(encResponse))).toBe(hex(m.aad));
    }
  });
});

describe("node:crypto HKDF", () => {
  it.each(ALL_KDFS)("matches stock hpke-js for labeled extract and multi-block expand (KDF %i)", async (kdfId) => {
    const ours = new NodeHkdf(kdfId);
    const stock = stockKdf(kdfId);
    const suiteId = Uint8Array.of(0x48, 0x50, 0x4b, 0x45, 0, 0x20, 0, kdfId, 0, 1);
    ours.init(suiteId);
    stock.init(suiteId);
    for (const m of messages(kdfId, 4)) {
      const salt = m.aad.subarray(0, KDF_INFO[kdfId].Nh); // stock extract wants salt of Nh or 0 bytes
      const saltOk = salt.length === KDF_INFO[kdfId].Nh ? salt : new Uint8Array(0);
      const label = new TextEncoder().encode("label");
      const prk = await ours.labeledExtract(saltOk, label, m.pt);
      expect(hex(prk)).toBe(hex(await stock.labeledExtract(saltOk, label, m.pt)));
      for (const len of [1, 12, KDF_INFO[kdfId].Nh, KDF_INFO[kdfId].Nh + 1, 3 * KDF_INFO[kdfId].Nh + 5]) {
        expect(hex(await ours.labeledExpand(prk, label, m.exporterContext, len))).toBe(hex(await stock.labeledExpand(prk, label, m.exporterContext, len)));
      }
      expect(hex(await ours.extractAndExpand(saltOk, m.pt, m.aad, 100))).toBe(hex(await stock.extractAndExpand(saltOk, m.pt, m.aad, 100)));
    }
  });

  it("refuses to expand beyond 255 * Nh bytes", () => {
    expect(() => new NodeHkdf(1).expandSync(new Uint8Array(32), new Uint8Array(0), 255 * 32 + 1)).toThrow(RangeError);
    expect(new NodeHkdf(1).expandSync(new Uint8Array(32), new Uint8Array(0), 255 * 32).length).toBe(255 * 32);
  });

  it("keeps psk_id_hash and info_hash per suite and input, equal to a fresh computation", async () => {
    const kdf = new NodeHkdf(1);
    const plain = (label: Uint8Array, ikm: Uint8Array): string => hex(kdf.extractSync(new Uint8Array(0), kdf.buildLabeledIkm(label, ikm)));
    const enc = (t: string): Uint8Array => new TextEncoder().encode(t);
    kdf.init(Uint8Array.of(0x48, 0x50, 0x4b, 0x45, 0, 0x20, 0, 1, 0, 1));
    for (const label of [enc("psk_id_hash"), enc("info_hash"), enc("other")]) {
      for (const ikm of [new Uint8Array(0), enc("message/bhttp request\0abc"), enc("message/bhttp request\0abd")]) {
        const want = plain(label, ikm);
        const first = await kdf.labeledExtract(new Uint8Array(0), label, ikm);
        expect(hex(first)).toBe(want);
        new Uint8Array(first).fill(0); // a caller scribbling on its result changes nothing
        expect(hex(await kdf.labeledExtract(new Uint8Array(0), label, ikm))).toBe(want);
      }
    }
    // Another suite id: other results (the suite id is part of the labeled input).
    const info = enc("info");
    const before = hex(await kdf.labeledExtract(new Uint8Array(0), enc("info_hash"), info));
    kdf.init(Uint8Array.of(0x48, 0x50, 0x4b, 0x45, 0, 0x10, 0, 1, 0, 1));
    const after = hex(await kdf.labeledExtract(new Uint8Array(0), enc("info_hash"), info));
    expect(after).not.toBe(before);
    expect(after).toBe(plain(enc("info_hash"), info));
  });

  it("never answers from its PRK memo when the remembered buffers changed", async () => {
    const kdf = new NodeHkdf(1);
    const salt = new Uint8Array(32).fill(1);
    const ikm = new Uint8Array(32).fill(2);
    const info = new Uint8Array(3);
    const first = hex(await kdf.extractAndExpand(salt, ikm, info, 32));
    expect(hex(await kdf.extractAndExpand(salt, ikm, info, 32))).toBe(first);
    ikm[0] = 9;
    const changed = hex(await kdf.extractAndExpand(salt, ikm, info, 32));
    expect(changed).not.toBe(first);
    expect(changed).toBe(hex(kdf.expandSync(kdf.extractSync(salt, ikm), info, 32)));
    salt[0] = 9;
    expect(hex(await kdf.extractAndExpand(salt, ikm, info, 32))).toBe(hex(kdf.expandSync(kdf.extractSync(salt, ikm), info, 32)));
  });
});

describe("node:crypto AEAD", () => {
  it.each(ALL_AEADS)("seals and opens like stock hpke-js (AEAD %i)", async (aeadId) => {
    for (const m of messages(100 + aeadId, 4)) {
      const key = m.pt.length >= AEAD_INFO[aeadId].Nk ? m.pt.slice(0, AEAD_INFO[aeadId].Nk) : new Uint8Array(AEAD_INFO[aeadId].Nk).fill(7);
      const nonce = new Uint8Array(12).fill(m.aad.length);
      const ours = new NodeAead(aeadId).createEncryptionContext(key);
      const stock = stockAead(aeadId).createEncryptionContext(key);
      const ct = await ours.seal(nonce, m.pt, m.aad);
      expect(hex(ct)).toBe(hex(await stock.seal(nonce, m.pt, m.aad)));
      expect(hex(await stock.open(nonce, ct, m.aad))).toBe(hex(m.pt));
      expect(hex(await ours.open(nonce, ct, m.aad))).toBe(hex(m.pt));
    }
  });

  it.each(ALL_AEADS)("rejects a modified tag, ciphertext or AAD and a short input (AEAD %i)", async (aeadId) => {
    const ctx = new NodeAead(aeadId).createEncryptionContext(new Uint8Array(AEAD_INFO[aeadId].Nk).fill(3));
    const nonce = new Uint8Array(12);
    const ct = new Uint8Array(await ctx.seal(nonce, new Uint8Array([1, 2, 3]), new Uint8Array([4])));
    for (const i of [0, ct.length - 1]) {
      const bad = ct.slice();
      bad[i]! ^= 1;
      await expect(ctx.open(nonce, bad, new Uint8Array([4]))).rejects.toThrow();
    }
    await expect(ctx.open(nonce, ct, new Uint8Array([5]))).rejects.toThrow();
    await expect(ctx.open(nonce, ct.subarray(0, 15), new Uint8Array([4]))).rejects.toThrow();
  });
});

describe("key generation under frequent garbage collection", () => {
  // Node 20 deadlocks when a key made by generateKeyPairSync is exported as a JWK afterwards and a
  // garbage collection runs during the export (see generatedJwk in core/ohttp/fast-node.ts); with a
  // 1 MiB young generation there is a collection every few keys. Needs the built dist/.
  it("generates 40,000 X25519 and 5,000 P-256 key pairs (ephemeral and serialized) without hanging", async () => {
    const mod = new URL("../../dist/core/ohttp/fast-node.js", import.meta.url).href;
    const script = `
      const { NodeDhkemX25519, NodeDhkemP256 } = await import(${JSON.stringify(mod)});
      for (const [kem, n] of [[new NodeDhkemX25519(), 40000], [new NodeDhkemP256(), 5000]]) {
        for (let i = 0; i < n; i++) {
          const pair = kem.generateSync();
          if (pair.publicKey.publicKey.length !== kem.publicKeySize) throw new Error("bad public key");
          if (i % 8 === 0 && kem.generateRawSync().privateKey.length !== 32) throw new Error("bad private key");
        }
      }
      process.stdout.write("done");`;
    const child = spawn(process.execPath, ["--max-semi-space-size=1", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    try {
      const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
      expect({ code, out }).toEqual({ code: 0, out: "done" });
    } finally {
      child.kill("SIGKILL");
    }
  }, 120_000);
});
