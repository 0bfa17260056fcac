// draft-ietf-ohai-chunked-ohttp-08 Appendix A, byte for byte in both directions and on both HPKE
// backends: the client seals the printed request chunks from the printed ephemeral key (on Node
// with the synchronous node:crypto sender, and with hpke-js's sender context), the gateway opens
// them and seals the printed response chunks from the printed nonce, the client opens those.

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { concatBytes, fromHex, toHex } from "../../core/bytes.js";
import {
  AEAD,
  KDF,
  KEM,
  ChunkedRequestDecapsulator,
  decodeKeyConfig,
  encapsulateChunkedRequest,
  encodeKeyConfig,
  importGatewayKey,
  type HpkeBackend,
} from "../../core/ohttp/index.js";
import { NodeHkdf, aeadSeal, nodeHpkeBackend } from "../../core/ohttp/fast-node.js";
import { hpkeJsResponder, hpkeJsSender } from "../../bench/chunked-seal.js";
import { BACKENDS, countingSync, inSubarray } from "../helpers/ohttp.js";

interface ChunkedVector {
  appendix_a: {
    gateway_private_key: string;
    key_config: string;
    request: string;
    client_ephemeral_private_key: string;
    client_ephemeral_public_key: string;
    hpke_info: string;
    request_chunks: string[];
    request_plaintext_chunk_lengths: number[];
    response: string;
    response_secret: string;
    response_salt: string;
    response_prk: string;
    response_aead_key: string;
    response_aead_nonce: string;
    response_chunks: string[];
    response_plaintext_chunk_lengths: number[];
    response_chunk_nonces: string[];
  };
}

const V = (JSON.parse(readFileSync(new URL("./chunked-ohttp-08.json", import.meta.url), "utf8")) as ChunkedVector).appendix_a;
const SYMMETRIC = [
  { kdfId: KDF.SHA256, aeadId: AEAD.AES128GCM },
  { kdfId: KDF.SHA256, aeadId: AEAD.CHACHA20POLY1305 },
];
const encapsulatedRequest = V.request_chunks.join("");
const encapsulatedResponse = V.response_chunks.join("");

/** Splits `whole` into pieces of the given lengths. */
function split(whole: Uint8Array, lengths: readonly number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let o = 0;
  for (const n of lengths) {
    out.push(whole.subarray(o, o + n));
    o += n;
  }
  return out;
}

/** The client's request from the printed ephemeral key: header (as the draft's first two lines), then each sealed piece. */
async function sealPrinted(backend: HpkeBackend): Promise<string[]> {
  const config = decodeKeyConfig(fromHex(V.key_config));
  const req = await encapsulateChunkedRequest(config, {
    kdfId: KDF.SHA256,
    aeadId: AEAD.AES128GCM,
    ephemeral: { privateKey: fromHex(V.client_ephemeral_private_key) },
    backend,
  });
  const [a, b] = split(fromHex(V.request), V.request_plaintext_chunk_lengths);
  const lines = [toHex(req.header.subarray(0, 7)), toHex(req.header.subarray(7)), toHex(await req.writer.seal(a!)), toHex(await req.writer.seal(b!)), toHex(await req.writer.sealFinal())];
  expect(req.writer.closed).toBe(true);
  return lines;
}

describe("chunked OHTTP -08 Appendix A: the client's two ways of sealing on Node", () => {
  it("the synchronous node:crypto sender (what a Node client uses) seals the printed request byte for byte", async () => {
    const counted = countingSync(nodeHpkeBackend);
    expect(await sealPrinted(counted.backend)).toEqual(V.request_chunks);
    expect(counted.syncSenders()).toBe(1);
  });

  it("hpke-js's sender context over the same node:crypto primitives seals it byte for byte too", async () => {
    const counted = countingSync(hpkeJsSender(nodeHpkeBackend));
    expect(await sealPrinted(counted.backend)).toEqual(V.request_chunks);
    expect(counted.syncSenders()).toBe(0);
  });
});

describe("chunked OHTTP -08 Appendix A: the response's two ways of sealing and opening on Node", () => {
  it.each([
    ["the synchronous node:crypto response AEAD (what Node does)", nodeHpkeBackend, 1],
    ["hpke-js's AEAD over the same node:crypto primitives", hpkeJsResponder(nodeHpkeBackend), 0],
  ] as const)("%s seals the printed response byte for byte and opens it", async (_name, b, syncAeads) => {
    const counted = countingSync(b);
    const backend = counted.backend;
    const key = await importGatewayKey(1, KEM.X25519, fromHex(V.gateway_private_key), SYMMETRIC, { backend });
    const d = new ChunkedRequestDecapsulator(new Map([[1, key]]));
    await d.push(fromHex(encapsulatedRequest));
    await d.end();
    const { writer } = await d.respond({ responseNonce: fromHex(V.response_chunks[0]!) });
    const [a, b2] = split(fromHex(V.response), V.response_plaintext_chunk_lengths);
    expect([toHex(await writer.seal(a!)), toHex(await writer.seal(b2!)), toHex(await writer.sealFinal())]).toEqual(V.response_chunks.slice(1));
    expect(counted.syncAeads()).toBe(syncAeads);

    const req = await encapsulateChunkedRequest(decodeKeyConfig(fromHex(V.key_config)), { ephemeral: { privateKey: fromHex(V.client_ephemeral_private_key) }, backend });
    const out = await req.response.push(fromHex(encapsulatedResponse));
    out.push(await req.response.end());
    expect(toHex(concatBytes(...out))).toBe(V.response);
    expect(counted.syncAeads()).toBe(2 * syncAeads);
  });
});

describe.each(BACKENDS.map((b) => [b.name, b] as const))("chunked OHTTP -08 Appendix A (%s)", (_name, backend) => {
  const gatewayKey = () => importGatewayKey(1, KEM.X25519, fromHex(V.gateway_private_key), SYMMETRIC, { backend });

  it("derives the printed key configuration from the gateway's private key", async () => {
    const key = await gatewayKey();
    expect(toHex(encodeKeyConfig(key.config))).toBe(V.key_config);
  });

  it("client: seals the request chunk by chunk byte for byte", async () => {
    expect(await sealPrinted(backend)).toEqual(V.request_chunks);
  });

  it("gateway: opens the request chunk by chunk and seals the response byte for byte", async () => {
    const d = new ChunkedRequestDecapsulator(new Map([[1, await gatewayKey()]]));
    const plaintext: Uint8Array[] = [];
    // Fed in the draft's own lines, the last one in a subarray of a larger buffer.
    for (const line of V.request_chunks.slice(0, -1)) plaintext.push(...(await d.push(fromHex(line))));
    plaintext.push(...(await d.push(inSubarray(fromHex(V.request_chunks.at(-1)!)))));
    expect(plaintext.map((p) => p.length)).toEqual(V.request_plaintext_chunk_lengths.slice(0, 2));
    const final = await d.end();
    expect(final.length).toBe(0);
    expect(toHex(concatBytes(...plaintext, final))).toBe(V.request);
    expect(d.keyId).toBe(1);

    const { nonce, writer } = await d.respond({ responseNonce: fromHex(V.response_chunks[0]!) });
    expect(toHex(nonce)).toBe(V.response_chunks[0]);
    const [a, b] = split(fromHex(V.response), V.response_plaintext_chunk_lengths);
    expect(toHex(await writer.seal(a!))).toBe(V.response_chunks[1]);
    expect(toHex(await writer.seal(b!))).toBe(V.response_chunks[2]);
    expect(toHex(await writer.sealFinal())).toBe(V.response_chunks[3]);
  });

  it("gateway: opens the request fed one byte at a time", async () => {
    const d = new ChunkedRequestDecapsulator(new Map([[1, await gatewayKey()]]));
    const bytes = fromHex(encapsulatedRequest);
    const plaintext: Uint8Array[] = [];
    for (let i = 0; i < bytes.length; i++) plaintext.push(...(await d.push(bytes.subarray(i, i + 1))));
    plaintext.push(await d.end());
    expect(toHex(concatBytes(...plaintext))).toBe(V.request);
  });

  it("client: opens the printed response, whole and one byte at a time", async () => {
    for (const step of [Infinity, 1]) {
      const config = decodeKeyConfig(fromHex(V.key_config));
      const req = await encapsulateChunkedRequest(config, { ephemeral: { privateKey: fromHex(V.client_ephemeral_private_key) }, backend });
      const bytes = fromHex(encapsulatedResponse);
      const out: Uint8Array[] = [];
      for (let i = 0; i < bytes.length; i += Math.min(step, bytes.length)) out.push(...(await req.response.push(bytes.subarray(i, i + step))));
      out.push(await req.response.end());
      expect(toHex(concatBytes(...out))).toBe(V.response);
    }
  });
});

describe("chunked OHTTP -08 Appendix A intermediate values", () => {
  it("builds the HPKE info with the chunked request label", () => {
    const info = new Uint8Array([...new TextEncoder().encode("message/bhttp chunked request"), 0, ...fromHex(V.request_chunks[0]!)]);
    expect(toHex(info)).toBe(V.hpke_info);
  });

  it("derives the response key and nonce, and seals each chunk under the base nonce XOR its counter", () => {
    const kdf = new NodeHkdf(KDF.SHA256);
    expect(V.response_salt).toBe(V.client_ephemeral_public_key + V.response_chunks[0]);
    const prk = kdf.extractSync(fromHex(V.response_salt), fromHex(V.response_secret));
    expect(toHex(prk)).toBe(V.response_prk);
    const key = kdf.expandSync(prk, new TextEncoder().encode("key"), 16);
    expect(toHex(key)).toBe(V.response_aead_key);
    expect(toHex(kdf.expandSync(prk, new TextEncoder().encode("nonce"), 12))).toBe(V.response_aead_nonce);
    const [a, b, c] = split(fromHex(V.response), V.response_plaintext_chunk_lengths);
    const aad = ["", "", "final"].map((s) => new TextEncoder().encode(s));
    const sealed = [a!, b!, c!].map((pt, i) => toHex(aeadSeal(AEAD.AES128GCM, key, fromHex(V.response_chunk_nonces[i]!), pt, aad[i]!)));
    // Each line is its length prefix (one byte; 0 for the final chunk) then the sealed chunk.
    expect(sealed).toEqual(V.response_chunks.slice(1).map((line) => line.slice(2)));
    expect(V.response_chunks.slice(1).map((line) => line.slice(0, 2))).toEqual(["11", "12", "00"]);
  });
});
