// Chunked OHTTP responses (draft-ietf-ohai-chunked-ohttp-08 §6.2) on the node:crypto backend's
// synchronous response AEAD (responseChunkAead of core/ohttp/fast-node.ts: each chunk sealed
// straight into the framed output, opened without a promise) against hpke-js's AEAD, over the same
// node:crypto primitives and on stock hpke-js, for every KEM/KDF/AEAD combination: hundreds of
// chunks (chunk counters past one byte) sealed by each way byte for byte alike and opened by each
// way; chunks swapped, re-framed with the other AAD, cut short or altered failing on both ways.

import { describe, expect, it } from "vitest";
import { concatBytes, toHex } from "../../core/bytes.js";
import { ChunkedRequestDecapsulator, encapsulateChunkedRequest, importGatewayKey, stockHpkeBackend, type HpkeBackend, type KeyConfig } from "../../core/ohttp/index.js";
import { responseNonceBytes } from "../../core/ohttp/encapsulation.js";
import { nodeHpkeBackend } from "../../core/ohttp/fast-node.js";
import { hpkeJsResponder } from "../../bench/chunked-seal.js";
import { ALL_AEADS, KDF } from "../../core/ohttp/constants.js";
import { COMBOS, countingSync, rejectsWith } from "../helpers/ohttp.js";

/** The ways a chunked response is sealed or opened, and whether each runs on the synchronous AEAD. */
const WAYS: readonly [string, HpkeBackend, boolean][] = [
  ["sync", nodeHpkeBackend, true],
  ["hpke-js", hpkeJsResponder(nodeHpkeBackend), false],
  ["stock", stockHpkeBackend, false],
];

/** A response of 300 chunks of 1..37 bytes, one call of 40000 bytes (three chunks), then a final chunk of 9. */
const PIECES: Uint8Array[] = [];
for (let i = 0; i < 300; i++) PIECES.push(new Uint8Array(1 + (i % 37)).fill(i & 0xff));
PIECES.push(new Uint8Array(40000).map((_, i) => (i * 7) & 0xff));
const FINAL = new Uint8Array(9).fill(0xfe);
const PLAINTEXT = concatBytes(...PIECES, FINAL);
const NON_FINAL_CHUNKS = 300 + 3;

describe.each(COMBOS)("chunked responses, synchronous AEAD against hpke-js's: %s", (_name, kemId, kdfId, aeadId) => {
  const ikm = new Uint8Array(64).fill(0x42); // X-Wing takes 64 bytes, the DHKEMs any length

  /** A client request to `config` from the fixed ephemeral key: the same response opens with each. */
  const request = (config: KeyConfig, backend: HpkeBackend) => encapsulateChunkedRequest(config, { backend, ephemeral: { ikm } });

  /** The gateway's response on `backend`: the nonce, each piece's framed chunks, the final chunk. */
  async function respond(privateKey: Uint8Array, backend: HpkeBackend): Promise<{ nonce: Uint8Array; chunks: Uint8Array[]; final: Uint8Array; config: KeyConfig }> {
    const key = await importGatewayKey(5, kemId, privateKey, [{ kdfId, aeadId }], { backend });
    const req = await request(key.config, backend);
    const d = new ChunkedRequestDecapsulator(new Map([[5, key]]));
    await d.push(concatBytes(req.header, await req.writer.sealFinal(Uint8Array.of(1))));
    await d.end();
    const { nonce, writer } = await d.respond({ responseNonce: new Uint8Array(responseNonceBytes(aeadId)).fill(aeadId & 0xff) });
    const chunks: Uint8Array[] = [];
    for (const p of PIECES) chunks.push(await writer.seal(p));
    const final = await writer.sealFinal(FINAL);
    return { nonce, chunks, final, config: key.config };
  }

  it("seals a response of hundreds of chunks byte for byte alike on every way, and every way opens every way's", async () => {
    const { privateKey } = await stockHpkeBackend.generateKeyPair(kemId);
    const sealed: string[] = [];
    for (const [, backend, sync] of WAYS) {
      const gateway = countingSync(backend);
      const r = await respond(privateKey, gateway.backend);
      expect(gateway.syncAeads()).toBe(sync ? 1 : 0);
      const bytes = concatBytes(r.nonce, ...r.chunks, r.final);
      sealed.push(toHex(bytes));
      for (const [, clientBackend, clientSync] of WAYS) {
        const client = countingSync(clientBackend);
        const req = await request(r.config, client.backend);
        const out = await req.response.push(bytes);
        expect(out.length).toBe(NON_FINAL_CHUNKS);
        out.push(await req.response.end());
        expect(client.syncAeads()).toBe(clientSync ? 1 : 0);
        expect(toHex(concatBytes(...out))).toBe(toHex(PLAINTEXT));
      }
    }
    expect(new Set(sealed).size).toBe(1);
  });

  it("fails chunks swapped, re-framed with the other AAD, cut short or altered, on every way of opening", async () => {
    const { privateKey } = await stockHpkeBackend.generateKeyPair(kemId);
    const { nonce, chunks, final, config } = await respond(privateKey, nodeHpkeBackend);
    const body = (c: Uint8Array) => c.subarray(1); // the first 300 chunks are under 64 bytes sealed: a one-byte prefix
    const altered = Uint8Array.from(final);
    altered[altered.length - 1]! ^= 1;
    const bad: [Uint8Array, "OHTTP_ERR_DECRYPT" | "OHTTP_ERR_TRUNCATED"][] = [
      [concatBytes(nonce, chunks[1]!, chunks[0]!, ...chunks.slice(2), final), "OHTTP_ERR_DECRYPT"],
      // a non-final chunk as the final one (AAD "final" on a chunk sealed with ""), and the reverse
      [concatBytes(nonce, ...chunks.slice(0, 299), Uint8Array.of(0), body(chunks[299]!)), "OHTTP_ERR_DECRYPT"],
      [concatBytes(nonce, ...chunks, Uint8Array.of(final.length - 1), final.subarray(1), final), "OHTTP_ERR_DECRYPT"],
      [concatBytes(nonce, ...chunks, altered), "OHTTP_ERR_DECRYPT"],
      [concatBytes(nonce, ...chunks, final.subarray(0, final.length - 1)), "OHTTP_ERR_DECRYPT"],
      [concatBytes(nonce, ...chunks), "OHTTP_ERR_TRUNCATED"],
      [concatBytes(nonce, ...chunks.slice(0, 150)), "OHTTP_ERR_TRUNCATED"],
      [concatBytes(nonce, ...chunks.slice(0, 150), chunks[150]!.subarray(0, 4)), "OHTTP_ERR_TRUNCATED"],
    ];
    for (const [, backend] of WAYS) {
      for (const [bytes, code] of bad) {
        const req = await request(config, backend);
        await rejectsWith(
          (async () => {
            await req.response.push(bytes);
            await req.response.end();
          })(),
          code,
        );
      }
      // and the untouched response still opens on this way
      const req = await request(config, backend);
      const out = await req.response.push(concatBytes(nonce, ...chunks, final));
      out.push(await req.response.end());
      expect(toHex(concatBytes(...out))).toBe(toHex(PLAINTEXT));
    }
  });
});

describe.each(ALL_AEADS.map((a) => [a] as const))("synchronous response chunk AEAD %i", (aeadId) => {
  it("seals into the caller's buffer at an offset; opens in order only, a wrong order or AAD failing without moving the chunk counter", () => {
    const secret = new Uint8Array(32).fill(3);
    const salt = new Uint8Array(48).fill(4);
    const sealer = nodeHpkeBackend.responseChunkAead!(KDF.SHA256, aeadId, secret, salt)!;
    const opener = nodeHpkeBackend.responseChunkAead!(KDF.SHA256, aeadId, secret, salt)!;
    const a = Uint8Array.of(1, 2, 3);
    const b = Uint8Array.of(4, 5);
    const out = new Uint8Array(2 + 19 + 18 + 2).fill(0xa5);
    expect(sealer.sealInto(a, new Uint8Array(0), out, 2)).toBe(21);
    expect(sealer.sealInto(b, new TextEncoder().encode("final"), out, 21)).toBe(39);
    expect([out[0], out[1], out[39], out[40]]).toEqual([0xa5, 0xa5, 0xa5, 0xa5]);
    const ctA = out.subarray(2, 21);
    const ctB = out.subarray(21, 39);
    expect(() => opener.open(ctB, new TextEncoder().encode("final"))).toThrow();
    expect(() => opener.open(ctA, new TextEncoder().encode("final"))).toThrow();
    expect(toHex(opener.open(ctA, new Uint8Array(0)))).toBe(toHex(a));
    expect(() => opener.open(ctB, new Uint8Array(0))).toThrow();
    expect(toHex(opener.open(ctB, new TextEncoder().encode("final")))).toBe(toHex(b));
  });
});
