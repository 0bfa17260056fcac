// The client's synchronous node:crypto HPKE sender (setupSenderSync of core/ohttp/fast-node.ts, which
// seals a chunked request's chunks on Node) against stock hpke-js, for every KEM/KDF/AEAD
// combination: byte for byte hpke-js's sender from the same ephemeral key; sealed message after
// message (sequence numbers past one byte), opened by hpke-js's recipient context and by the
// gateway's synchronous one, a wrong AAD or order failing; and whole chunked requests through
// encapsulateChunkedRequest, opened by gateways on either backend. X-Wing (no node:crypto KEM)
// falls back to hpke-js's sender.

import { describe, expect, it } from "vitest";
import { concatBytes, toHex } from "../../core/bytes.js";
import {
  ChunkWriter,
  ChunkedRequestDecapsulator,
  KEM,
  encapsulateChunkedRequest,
  importGatewayKey,
  stockHpkeBackend,
} from "../../core/ohttp/index.js";
import { nodeHpkeBackend } from "../../core/ohttp/fast-node.js";
import type { SenderContextSync } from "../../core/ohttp/backend.js";
import { COMBOS, countingSync, rejectsWith } from "../helpers/ohttp.js";

const hex = (b: ArrayBuffer | Uint8Array): string => toHex(b instanceof Uint8Array ? b : new Uint8Array(b));
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Seals one message with `s` at offset 3 of a larger buffer whose other bytes must stay untouched. */
function sealAt(s: SenderContextSync, pt: Uint8Array, aad: Uint8Array): Uint8Array {
  const out = new Uint8Array(3 + pt.length + 16 + 5).fill(0xa5);
  expect(s.sealInto(pt, aad, out, 3)).toBe(3 + pt.length + 16);
  expect(hex(concatBytes(out.subarray(0, 3), out.subarray(3 + pt.length + 16)))).toBe("a5".repeat(8));
  return out.slice(3, 3 + pt.length + 16);
}

describe.each(COMBOS)("synchronous HPKE sender against stock hpke-js: %s", (_name, kemId, kdfId, aeadId) => {
  const info = text(`veil sender ${kemId} ${kdfId} ${aeadId}`);

  it("seals and exports byte for byte as hpke-js's sender does from the same ephemeral key", async () => {
    const { publicKey } = await stockHpkeBackend.generateKeyPair(kemId);
    const ikm = new Uint8Array(32).map((_, i) => i * 7 + kemId);
    const sync = nodeHpkeBackend.setupSenderSync!(kemId, kdfId, aeadId, await nodeHpkeBackend.importPublicKey(kemId, publicKey), info, ikm);
    if (kemId === KEM.XWING) {
      expect(sync).toBeUndefined(); // no node:crypto X-Wing: hpke-js's context does it
      return;
    }
    const stock = await stockHpkeBackend
      .suite(kemId, kdfId, aeadId)
      .createSenderContext({ recipientPublicKey: await stockHpkeBackend.importPublicKey(kemId, publicKey), info, ekm: ikm });
    expect(hex(sync!.enc)).toBe(hex(stock.enc));
    for (let seq = 0; seq < 5; seq++) {
      const pt = new Uint8Array(seq * 300).fill(seq);
      const aad = seq === 4 ? text("final") : new Uint8Array(0);
      expect(hex(sealAt(sync!, pt, aad))).toBe(hex(await stock.seal(pt, aad)));
    }
    const ctx = text("message/bhttp chunked response");
    expect(hex(sync!.export(ctx, 16))).toBe(hex(await stock.export(ctx, 16)));
    expect(() => sync!.export(ctx, 1000)).toThrow(RangeError);
  });

  it("seals message after message (sequence numbers past one byte) that hpke-js's recipient and the gateway's synchronous recipient open; a wrong AAD or order fails", async () => {
    const { privateKey, publicKey } = await nodeHpkeBackend.generateKeyPair(kemId);
    const sync = nodeHpkeBackend.setupSenderSync!(kemId, kdfId, aeadId, await nodeHpkeBackend.importPublicKey(kemId, publicKey), info, undefined);
    if (kemId === KEM.XWING) {
      expect(sync).toBeUndefined();
      return;
    }
    const stockKey = await stockHpkeBackend.importPrivateKey(kemId, privateKey);
    const stock = await stockHpkeBackend.suite(kemId, kdfId, aeadId).createRecipientContext({ recipientKey: stockKey.pair, enc: sync!.enc, info });
    const nodeKey = await nodeHpkeBackend.importPrivateKey(kemId, privateKey);
    const gateway = nodeHpkeBackend.setupRecipientSync!(kemId, kdfId, aeadId, nodeKey.pair, sync!.enc, info)!;
    for (let seq = 0; seq < 260; seq++) {
      const pt = new Uint8Array(seq % 40).fill(seq & 0xff);
      const aad = seq % 3 === 0 ? text("final") : new Uint8Array(0);
      const ct = sealAt(sync!, pt, aad);
      expect(hex(await stock.open(ct, aad))).toBe(hex(pt));
      expect(hex(gateway.open(ct, aad))).toBe(hex(pt));
    }
    // Out of order, or under another AAD, a message does not open (nor moves either recipient on).
    const first = sealAt(sync!, Uint8Array.of(1), new Uint8Array(0));
    const second = sealAt(sync!, Uint8Array.of(2), text("final"));
    await expect(stock.open(second, text("final"))).rejects.toThrow();
    expect(() => gateway.open(second, text("final"))).toThrow();
    await expect(stock.open(first, text("final"))).rejects.toThrow();
    expect(() => gateway.open(first, text("final"))).toThrow();
    expect(hex(await stock.open(first, new Uint8Array(0)))).toBe("01");
    expect(hex(gateway.open(first, new Uint8Array(0)))).toBe("01");
    await expect(stock.open(second, new Uint8Array(0))).rejects.toThrow();
    expect(() => gateway.open(second, new Uint8Array(0))).toThrow();
    expect(hex(await stock.open(second, text("final")))).toBe("02");
    expect(hex(gateway.open(second, text("final")))).toBe("02");
    const ctx = text("chunked");
    const exported = hex(sync!.export(ctx, 32));
    expect(hex(await stock.export(ctx, 32))).toBe(exported);
    expect(hex(gateway.export(ctx, 32))).toBe(exported);
  });

  it("seals a chunked request of hundreds of chunks that gateways on both backends open, byte for byte as hpke-js's sender", async () => {
    const body = new Uint8Array(1900).map((_, i) => (i * 31) & 0xff);
    const ikm = new Uint8Array(64).fill(kemId & 0xff); // X-Wing takes 64 bytes, the DHKEMs any length
    const { privateKey } = await stockHpkeBackend.generateKeyPair(kemId);
    const sealed: string[] = [];
    for (const [client, expectSync] of [
      [countingSync(nodeHpkeBackend), kemId !== KEM.XWING],
      [{ backend: stockHpkeBackend, syncSenders: () => 0 }, false],
    ] as const) {
      const gatewayKey = await importGatewayKey(3, kemId, privateKey, [{ kdfId, aeadId }], { backend: client.backend });
      const req = await encapsulateChunkedRequest(gatewayKey.config, { backend: client.backend, chunkBytes: 7, ephemeral: { ikm } });
      // 270 non-final chunks from three calls (one of them empty), then 12 bytes for the end: longer
      // than a chunk, so one more non-final chunk of 5 and a final one of 7.
      const bytes = concatBytes(
        req.header,
        await req.writer.seal(body.subarray(0, 1000)),
        await req.writer.seal(new Uint8Array(0)),
        await req.writer.seal(body.subarray(1000, 1888)),
        await req.writer.sealFinal(body.subarray(1888)),
      );
      expect(client.syncSenders()).toBe(expectSync ? 1 : 0);
      sealed.push(hex(bytes));
      for (const gatewayBackend of [nodeHpkeBackend, stockHpkeBackend]) {
        const key = await importGatewayKey(3, kemId, privateKey, [{ kdfId, aeadId }], { backend: gatewayBackend });
        const d = new ChunkedRequestDecapsulator(new Map([[3, key]]));
        const chunks = await d.push(bytes);
        expect(chunks.length).toBe(143 + 127 + 1);
        chunks.push(await d.end());
        expect(hex(concatBytes(...chunks))).toBe(hex(body));
      }
    }
    expect(sealed[0]).toBe(sealed[1]);
  });
});

describe("chunk writer on a synchronous sealer", () => {
  it("closes the message with INTERNAL_ERR when a chunk cannot be sealed; nothing more is sealed", async () => {
    let calls = 0;
    const w = new ChunkWriter({
      sealInto: (pt, _aad, out, offset) => {
        if (++calls === 2) throw new Error("seal failed");
        out.set(pt, offset);
        return offset + pt.length + 16;
      },
      tagBytes: 16,
    }, 4);
    await rejectsWith(w.seal(new Uint8Array(10)), "INTERNAL_ERR");
    expect(w.closed).toBe(true);
    await rejectsWith(w.seal(new Uint8Array(1)), "OHTTP_ERR_CONTEXT_USED");
    await rejectsWith(w.sealFinal(), "OHTTP_ERR_CONTEXT_USED");
    expect(calls).toBe(2);
  });

  it("refuses a sealer that writes another length than the framing laid out (INTERNAL_ERR, the message closed)", async () => {
    const w = new ChunkWriter({ sealInto: (pt, _aad, _out, offset) => offset + pt.length + 15, tagBytes: 16 });
    await rejectsWith(w.seal(new Uint8Array(3)), "INTERNAL_ERR");
    expect(w.closed).toBe(true);
  });

  it("frames each chunk with its sealed length (one-, two- and four-byte varints) and the final chunk with 0", async () => {
    for (const chunkBytes of [40, 16000, 20000]) {
      const w = new ChunkWriter({ sealInto: (pt, _aad, out, offset) => (out.set(pt, offset), offset + pt.length + 16), tagBytes: 16 }, chunkBytes);
      const pt = new Uint8Array(2 * chunkBytes + 1).fill(1);
      const framed = await w.seal(pt);
      const prefix = chunkBytes + 16 < 64 ? [chunkBytes + 16] : chunkBytes + 16 < 16384 ? [0x40 | ((chunkBytes + 16) >> 8), (chunkBytes + 16) & 0xff] : [0x80, 0, (chunkBytes + 16) >> 8, (chunkBytes + 16) & 0xff];
      const sealedChunk = prefix.length + chunkBytes + 16;
      expect(framed.length).toBe(2 * sealedChunk + 1 + 17);
      expect([...framed.subarray(0, prefix.length)]).toEqual(prefix);
      expect([...framed.subarray(sealedChunk, sealedChunk + prefix.length)]).toEqual(prefix);
      expect(framed[2 * sealedChunk]).toBe(17);
      const final = await w.sealFinal(Uint8Array.of(5));
      expect(final.length).toBe(1 + 1 + 16);
      expect([final[0], final[1]]).toEqual([0, 5]);
      expect(w.closed).toBe(true);
    }
  });
});
