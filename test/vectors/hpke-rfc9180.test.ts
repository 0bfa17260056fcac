// RFC 9180 (HPKE) vectors through Veil's HPKE backends: the official Base-mode vectors for
// DHKEM(X25519)/HKDF-SHA256 with AES-128-GCM and ChaCha20Poly1305 and DHKEM(P-256)/HKDF-SHA256
// with AES-128-GCM (all 257 encryptions and the exports), and the hpke-js X-Wing KEM vectors.
// test/vectors/hpke-rfc9180-subset.json is the team's vector file without its ML-KEM KATs.

import { readFileSync } from "node:fs";
import type { CipherSuite } from "@hpke/core";
import { describe, expect, it } from "vitest";
import { fromHex, toHex } from "../../core/bytes.js";
import { KEM, type AeadId, type KdfId, type KemId } from "../../core/ohttp/index.js";
import { NodeHkdf } from "../../core/ohttp/fast-node.js";
import { BACKENDS } from "../helpers/ohttp.js";

interface Rfc9180Vector {
  mode: number;
  kem_id: KemId;
  kdf_id: KdfId;
  aead_id: AeadId;
  info: string;
  ikmR: string;
  ikmE: string;
  skRm: string;
  skEm: string;
  pkRm: string;
  pkEm: string;
  enc: string;
  shared_secret: string;
  key_schedule_context: string;
  secret: string;
  key: string;
  base_nonce: string;
  exporter_secret: string;
  encryptions: { aad: string; ct: string; nonce: string; pt: string }[];
  exports: { exporter_context: string; L: number; exported_value: string }[];
}
interface XWingVector {
  seed: string;
  sk: string;
  pk: string;
  eseed: string;
  ct: string;
  ss: string;
}

const file = JSON.parse(readFileSync(new URL("hpke-rfc9180-subset.json", import.meta.url), "utf8")) as {
  rfc9180_test_vectors: Rfc9180Vector[];
  hpke_js_pq_kem_vectors: { xwing_draft_connolly_cfrg_xwing_kem_06: XWingVector[] };
};
const VECTORS = file.rfc9180_test_vectors;
const XWING = file.hpke_js_pq_kem_vectors.xwing_draft_connolly_cfrg_xwing_kem_06;
const hex = (b: ArrayBuffer | Uint8Array): string => toHex(b instanceof Uint8Array ? b : new Uint8Array(b));
const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);
const name = (v: Rfc9180Vector): string => `KEM 0x${v.kem_id.toString(16).padStart(4, "0")}, KDF ${v.kdf_id}, AEAD ${v.aead_id}`;

it("has the three Base-mode vectors and the X-Wing vectors", () => {
  expect(VECTORS.map((v) => [v.mode, v.kem_id, v.kdf_id, v.aead_id])).toEqual([
    [0, 0x20, 1, 1],
    [0, 0x20, 1, 3],
    [0, 0x10, 1, 1],
  ]);
  expect(VECTORS.every((v) => v.encryptions.length === 257 && v.exports.length === 3)).toBe(true);
  expect(XWING.length).toBe(3);
});

describe.each(VECTORS.map((v) => [name(v), v] as const))("RFC 9180 key schedule in the node:crypto KDF (%s)", (_n, v) => {
  it("derives key_schedule_context, secret, key, base_nonce and exporter_secret", () => {
    const kdf = new NodeHkdf(v.kdf_id);
    // suite_id = "HPKE" || I2OSP(kem_id, 2) || I2OSP(kdf_id, 2) || I2OSP(aead_id, 2)
    kdf.init(Uint8Array.of(0x48, 0x50, 0x4b, 0x45, v.kem_id >> 8, v.kem_id & 0xff, 0, v.kdf_id, 0, v.aead_id));
    const empty = new Uint8Array(0);
    const pskIdHash = kdf.labeledExtractSync(empty, ascii("psk_id_hash"), empty);
    const infoHash = kdf.labeledExtractSync(empty, ascii("info_hash"), fromHex(v.info));
    const ksc = new Uint8Array([0, ...pskIdHash, ...infoHash]);
    expect(hex(ksc)).toBe(v.key_schedule_context);
    const secret = kdf.labeledExtractSync(fromHex(v.shared_secret), ascii("secret"), empty);
    expect(hex(secret)).toBe(v.secret);
    expect(hex(kdf.labeledExpandSync(secret, ascii("key"), ksc, fromHex(v.key).length))).toBe(v.key);
    expect(hex(kdf.labeledExpandSync(secret, ascii("base_nonce"), ksc, 12))).toBe(v.base_nonce);
    expect(hex(kdf.labeledExpandSync(secret, ascii("exp"), ksc, 32))).toBe(v.exporter_secret);
  });
});

describe.each(BACKENDS.map((b) => [b.name, b] as const))("RFC 9180 Base-mode vectors through hpke-js on %s", (_b, backend) => {
  describe.each(VECTORS.map((v) => [name(v), v] as const))("%s", (_n, v) => {
    const suite = (): CipherSuite => backend.suite(v.kem_id, v.kdf_id, v.aead_id);

    it("derives both key pairs from ikmR and ikmE (DeriveKeyPair)", async () => {
      const kem = suite().kem;
      for (const [ikm, sk, pk] of [
        [v.ikmR, v.skRm, v.pkRm],
        [v.ikmE, v.skEm, v.pkEm],
      ] as const) {
        const pair = await kem.deriveKeyPair(fromHex(ikm));
        expect(hex(await kem.serializePrivateKey(pair.privateKey))).toBe(sk);
        expect(hex(await kem.serializePublicKey(pair.publicKey))).toBe(pk);
      }
    });

    it("imports skRm and derives pkRm", async () => {
      const { publicKey } = await backend.importPrivateKey(v.kem_id, fromHex(v.skRm));
      expect(hex(publicKey)).toBe(v.pkRm);
    });

    it("encapsulates to enc and shared_secret with ikmE, and decapsulates", async () => {
      const kem = suite().kem;
      const pkR = await backend.importPublicKey(v.kem_id, fromHex(v.pkRm));
      const { enc, sharedSecret } = await kem.encap({ recipientPublicKey: pkR, ekm: fromHex(v.ikmE) });
      expect(hex(enc)).toBe(v.enc);
      expect(hex(sharedSecret)).toBe(v.shared_secret);
      const { pair } = await backend.importPrivateKey(v.kem_id, fromHex(v.skRm));
      expect(hex(await kem.decap({ recipientKey: pair, enc: fromHex(v.enc) }))).toBe(v.shared_secret);
    });

    it("seals all 257 messages in sequence and exports (sender)", async () => {
      const pkR = await backend.importPublicKey(v.kem_id, fromHex(v.pkRm));
      const ctx = await suite().createSenderContext({ recipientPublicKey: pkR, info: fromHex(v.info), ekm: fromHex(v.ikmE) });
      expect(hex(ctx.enc)).toBe(v.enc);
      for (const e of v.encryptions) expect(hex(await ctx.seal(fromHex(e.pt), fromHex(e.aad)))).toBe(e.ct);
      for (const x of v.exports) expect(hex(await ctx.export(fromHex(x.exporter_context), x.L))).toBe(x.exported_value);
    });

    // The gateway's one-call open exists on the node:crypto backend only (the stock backend leaves
    // it to hpke-js's recipient context, tested below).
    const openRequest = backend.openRequest;
    if (openRequest !== undefined) {
      it("opens the first message and exports in one synchronous call (the gateway's openRequest)", async () => {
        const { pair } = await backend.importPrivateKey(v.kem_id, fromHex(v.skRm));
        const first = v.encryptions[0]!;
        const open = (enc: string, aad: string, ct: Uint8Array, exporterContext: string, L: number) =>
          openRequest(v.kem_id, v.kdf_id, v.aead_id, pair, fromHex(enc), fromHex(v.info), fromHex(aad), ct, fromHex(exporterContext), L);
        for (const x of v.exports) {
          const r = open(v.enc, first.aad, fromHex(first.ct), x.exporter_context, x.L);
          expect(hex(r!.plaintext)).toBe(first.pt);
          expect(hex(r!.exported)).toBe(x.exported_value);
        }
        // A flipped tag bit, another aad, another (valid) enc: none opens.
        const flipped = fromHex(first.ct);
        flipped[flipped.length - 1]! ^= 1;
        expect(() => open(v.enc, first.aad, flipped, "", 32)).toThrow();
        expect(() => open(v.enc, "", fromHex(first.ct), "", 32)).toThrow();
        expect(() => open(v.pkRm, first.aad, fromHex(first.ct), "", 32)).toThrow();
      });
    }

    it("opens all 257 messages in sequence and exports (recipient)", async () => {
      const { pair } = await backend.importPrivateKey(v.kem_id, fromHex(v.skRm));
      const ctx = await suite().createRecipientContext({ recipientKey: pair, enc: fromHex(v.enc), info: fromHex(v.info) });
      for (const e of v.encryptions) expect(hex(await ctx.open(fromHex(e.ct), fromHex(e.aad)))).toBe(e.pt);
      for (const x of v.exports) expect(hex(await ctx.export(fromHex(x.exporter_context), x.L))).toBe(x.exported_value);
    });
  });

  // X-Wing has no node:crypto primitive in Node 20: both backends use the stock hpke-js KEM.
  describe.each(XWING.map((x, i) => [i, x] as const))("X-Wing KEM vector %i", (_i, x) => {
    it("derives the public key from the seed", async () => {
      expect(hex((await backend.importPrivateKey(KEM.XWING, fromHex(x.sk))).publicKey)).toBe(x.pk);
    });

    it("encapsulates to ct and ss with eseed, and decapsulates", async () => {
      const kem = backend.suite(KEM.XWING, 1, 1).kem;
      const pkR = await backend.importPublicKey(KEM.XWING, fromHex(x.pk));
      const { enc, sharedSecret } = await kem.encap({ recipientPublicKey: pkR, ekm: fromHex(x.eseed) });
      expect(hex(enc)).toBe(x.ct);
      expect(hex(sharedSecret)).toBe(x.ss);
      const { pair } = await backend.importPrivateKey(KEM.XWING, fromHex(x.sk));
      expect(hex(await kem.decap({ recipientKey: pair, enc: fromHex(x.ct) }))).toBe(x.ss);
    });
  });
});
