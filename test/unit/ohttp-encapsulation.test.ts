// Request and response encapsulation (RFC 9458 §4): every error path, on both HPKE backends.

import { describe, expect, it } from "vitest";
import { concatBytes, fromHex, toHex } from "../../core/bytes.js";
import { ProtocolError } from "../../core/errors.js";
import {
  AEAD,
  KDF,
  KEM,
  decapsulateRequest,
  decodeKeyConfig,
  encapsulateRequest,
  generateGatewayKey,
  importGatewayKey,
  type GatewayKey,
  type KeyConfig,
} from "../../core/ohttp/index.js";
import { A, A_PRIVATE_KEY, A_SYMMETRIC, BACKENDS, inSubarray, rejectsWith } from "../helpers/ohttp.js";

const REQUEST = new TextEncoder().encode("a binary HTTP request");
const RESPONSE = new TextEncoder().encode("a binary HTTP response");

describe.each(BACKENDS.map((b) => [b.name, b] as const))("decapsulateRequest (%s)", (_name, backend) => {
  const setup = async (): Promise<{ key: GatewayKey; keys: Map<number, GatewayKey>; enc: Uint8Array }> => {
    const key = await importGatewayKey(1, KEM.X25519, A_PRIVATE_KEY, A_SYMMETRIC, { backend });
    return { key, keys: new Map([[1, key]]), enc: fromHex(A.encapsulated_request) };
  };

  it("rejects every truncation of the header as OHTTP_ERR_TRUNCATED", async () => {
    const { keys, enc } = await setup();
    for (let n = 0; n < 7; n++) await rejectsWith(decapsulateRequest(keys, enc.subarray(0, n)), "OHTTP_ERR_TRUNCATED");
  });

  it("rejects a truncated enc or a ciphertext shorter than the tag as OHTTP_ERR_TRUNCATED, a cut ciphertext as OHTTP_ERR_DECRYPT", async () => {
    const { keys, enc } = await setup();
    for (let n = 7; n < 7 + 32 + 16; n++) await rejectsWith(decapsulateRequest(keys, enc.subarray(0, n)), "OHTTP_ERR_TRUNCATED");
    for (let n = 7 + 32 + 16; n < enc.length; n++) await rejectsWith(decapsulateRequest(keys, enc.subarray(0, n)), "OHTTP_ERR_DECRYPT");
  });

  it("rejects an unknown key id as OHTTP_ERR_KEY_UNKNOWN", async () => {
    const { keys, enc } = await setup();
    enc[0] = 2;
    await rejectsWith(decapsulateRequest(keys, enc), "OHTTP_ERR_KEY_UNKNOWN");
    await rejectsWith(decapsulateRequest(new Map(), fromHex(A.encapsulated_request)), "OHTTP_ERR_KEY_UNKNOWN");
  });

  it("rejects a KEM id that does not match the key as OHTTP_ERR_SUITE_UNSUPPORTED", async () => {
    const { keys, enc } = await setup();
    for (const kem of [KEM.P256, KEM.XWING, 0x0021]) {
      const e = enc.slice();
      e[1] = kem >> 8;
      e[2] = kem & 0xff;
      await rejectsWith(decapsulateRequest(keys, e), "OHTTP_ERR_SUITE_UNSUPPORTED");
    }
  });

  it("rejects a KDF/AEAD pair the key does not offer as OHTTP_ERR_SUITE_UNSUPPORTED", async () => {
    const { keys, enc } = await setup();
    for (const [kdf, aead] of [
      [KDF.SHA384, AEAD.AES128GCM],
      [KDF.SHA256, AEAD.AES256GCM],
      [0x0099, AEAD.AES128GCM],
      [KDF.SHA256, 0xffff], // export-only
    ]) {
      const e = enc.slice();
      e.set([kdf! >> 8, kdf! & 0xff, aead! >> 8, aead! & 0xff], 3);
      await rejectsWith(decapsulateRequest(keys, e), "OHTTP_ERR_SUITE_UNSUPPORTED");
    }
  });

  it("rejects a modified header, enc or ciphertext as OHTTP_ERR_DECRYPT", async () => {
    const { keys, enc } = await setup();
    const other = enc.slice();
    other[6] = AEAD.CHACHA20POLY1305; // offered, but not what the client used (and bound into info)
    await rejectsWith(decapsulateRequest(keys, other), "OHTTP_ERR_DECRYPT");
    for (const i of [7, 20, 38, 39, enc.length - 17, enc.length - 1]) {
      const e = enc.slice();
      e[i]! ^= 0x01;
      await rejectsWith(decapsulateRequest(keys, e), "OHTTP_ERR_DECRYPT");
    }
  });

  it("rejects a request for another key with the same id as OHTTP_ERR_DECRYPT", async () => {
    const { key: other } = await generateGatewayKey(1, KEM.X25519, A_SYMMETRIC, { backend });
    await rejectsWith(decapsulateRequest(new Map([[1, other]]), fromHex(A.encapsulated_request)), "OHTTP_ERR_DECRYPT");
  });

  it("rejects a low-order X25519 enc (all-zero shared secret) as OHTTP_ERR_DECRYPT", async () => {
    const { keys, enc } = await setup();
    const zero = enc.slice();
    zero.fill(0, 7, 39);
    await rejectsWith(decapsulateRequest(keys, zero), "OHTTP_ERR_DECRYPT");
  });

  it("rejects a P-256 enc that is not on the curve or not uncompressed as OHTTP_ERR_DECRYPT", async () => {
    const { key } = await generateGatewayKey(4, KEM.P256, [{ kdfId: KDF.SHA256, aeadId: AEAD.AES128GCM }], { backend });
    const keys = new Map([[4, key]]);
    const { encapsulated } = await encapsulateRequest(key.config, REQUEST, { backend });
    expect((await decapsulateRequest(keys, encapsulated)).request).toEqual(REQUEST);
    const offCurve = encapsulated.slice();
    offCurve[7 + 64]! ^= 1;
    await rejectsWith(decapsulateRequest(keys, offCurve), "OHTTP_ERR_DECRYPT");
    const compressed = encapsulated.slice();
    compressed[7] = 0x02;
    await rejectsWith(decapsulateRequest(keys, compressed), "OHTTP_ERR_DECRYPT");
  });

  it("keeps library error messages out of the error it throws", async () => {
    const { keys, enc } = await setup();
    enc[enc.length - 1]! ^= 1;
    const e = await decapsulateRequest(keys, enc).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(ProtocolError);
    expect((e as ProtocolError).message).toBe("Encapsulated message could not be decrypted");
    expect((e as ProtocolError).cause).toBeDefined();
  });

  it("accepts a subarray, a Buffer and any Keyring", async () => {
    const { key } = await setup();
    const keys = { get: (id: number) => (id === 1 ? key : undefined) };
    expect(toHex((await decapsulateRequest(keys, inSubarray(fromHex(A.encapsulated_request)))).request)).toBe(A.request);
    expect(toHex((await decapsulateRequest(keys, Buffer.from(A.encapsulated_request, "hex"))).request)).toBe(A.request);
  });

  it("refuses a key that did not come from importGatewayKey/generateGatewayKey", async () => {
    const { key } = await setup();
    const fake: GatewayKey = { config: key.config };
    await rejectsWith(decapsulateRequest(new Map([[1, fake]]), fromHex(A.encapsulated_request)), "INTERNAL_ERR");
  });
});

describe.each(BACKENDS.map((b) => [b.name, b] as const))("response contexts (%s)", (_name, backend) => {
  const exchange = async (aeadId: number = AEAD.AES128GCM) => {
    const { key } = await generateGatewayKey(9, KEM.X25519, [{ kdfId: KDF.SHA256, aeadId }], { backend });
    const client = await encapsulateRequest(key.config, REQUEST, { backend });
    const gateway = await decapsulateRequest(new Map([[9, key]]), client.encapsulated);
    return { client: client.response, gateway: gateway.response };
  };

  it("round-trips with a response nonce of max(Nn, Nk) bytes", async () => {
    for (const [aeadId, nonceBytes] of [
      [AEAD.AES128GCM, 16],
      [AEAD.AES256GCM, 32],
      [AEAD.CHACHA20POLY1305, 32],
    ] as const) {
      const { client, gateway } = await exchange(aeadId);
      const enc = await gateway.encapsulateResponse(RESPONSE);
      expect(enc.length).toBe(nonceBytes + RESPONSE.length + 16);
      expect(await client.decapsulateResponse(enc)).toEqual(RESPONSE);
    }
  });

  it("carries empty messages", async () => {
    const { key } = await generateGatewayKey(9, KEM.X25519, undefined, { backend });
    const client = await encapsulateRequest(key.config, new Uint8Array(0), { backend });
    const gateway = await decapsulateRequest(new Map([[9, key]]), client.encapsulated);
    expect(gateway.request.length).toBe(0);
    expect((await client.response.decapsulateResponse(await gateway.response.encapsulateResponse(new Uint8Array(0)))).length).toBe(0);
  });

  it("uses a fresh response nonce each time", async () => {
    const a = await exchange();
    const b = await exchange();
    const na = (await a.gateway.encapsulateResponse(RESPONSE)).subarray(0, 16);
    const nb = (await b.gateway.encapsulateResponse(RESPONSE)).subarray(0, 16);
    expect(toHex(na)).not.toBe(toHex(nb));
  });

  it("throws OHTTP_ERR_CONTEXT_USED when a context is used twice", async () => {
    const { client, gateway } = await exchange();
    const enc = await gateway.encapsulateResponse(RESPONSE);
    await rejectsWith(gateway.encapsulateResponse(RESPONSE), "OHTTP_ERR_CONTEXT_USED");
    expect(await client.decapsulateResponse(enc)).toEqual(RESPONSE);
    await rejectsWith(client.decapsulateResponse(enc), "OHTTP_ERR_CONTEXT_USED");
  });

  it("spends the client context on a failed attempt", async () => {
    const { client, gateway } = await exchange();
    const enc = await gateway.encapsulateResponse(RESPONSE);
    await rejectsWith(client.decapsulateResponse(enc.subarray(0, 5)), "OHTTP_ERR_TRUNCATED");
    await rejectsWith(client.decapsulateResponse(enc), "OHTTP_ERR_CONTEXT_USED");
  });

  it("rejects a response shorter than nonce + tag as OHTTP_ERR_TRUNCATED", async () => {
    for (let n = 0; n < 32; n++) {
      const { client, gateway } = await exchange();
      const enc = await gateway.encapsulateResponse(new Uint8Array(0));
      expect(enc.length).toBe(32);
      await rejectsWith(client.decapsulateResponse(enc.subarray(0, n)), "OHTTP_ERR_TRUNCATED");
    }
  });

  it("rejects a modified response or one for another request as OHTTP_ERR_DECRYPT", async () => {
    for (const i of [0, 15, 16, 16 + RESPONSE.length + 15]) {
      const { client, gateway } = await exchange();
      const enc = await gateway.encapsulateResponse(RESPONSE);
      enc[i]! ^= 0x80;
      await rejectsWith(client.decapsulateResponse(enc), "OHTTP_ERR_DECRYPT");
    }
    const a = await exchange();
    const b = await exchange();
    await rejectsWith(a.client.decapsulateResponse(await b.gateway.encapsulateResponse(RESPONSE)), "OHTTP_ERR_DECRYPT");
  });

  it("refuses an injected response nonce of the wrong length", async () => {
    const { gateway } = await exchange();
    await rejectsWith(gateway.encapsulateResponse(RESPONSE, { responseNonce: new Uint8Array(12) }), "INTERNAL_ERR");
  });
});

describe.each(BACKENDS.map((b) => [b.name, b] as const))("encapsulateRequest (%s)", (_name, backend) => {
  const config = decodeKeyConfig(fromHex(A.key_config)); // offers (SHA256, AES-128-GCM), (SHA256, ChaCha20Poly1305)

  it("uses the first supported pair unless told otherwise", async () => {
    const first = await encapsulateRequest({ ...config, symmetric: [{ kdfId: 0x99, aeadId: 1 }, ...config.symmetric] }, REQUEST, { backend });
    expect(toHex(first.encapsulated.subarray(0, 7))).toBe("01002000010001");
    const chacha = await encapsulateRequest(config, REQUEST, { aeadId: AEAD.CHACHA20POLY1305, backend });
    expect(toHex(chacha.encapsulated.subarray(0, 7))).toBe("01002000010003");
  });

  it("rejects a KDF/AEAD the config does not offer, or a config offering none, as OHTTP_ERR_SUITE_UNSUPPORTED", async () => {
    await rejectsWith(encapsulateRequest(config, REQUEST, { aeadId: AEAD.AES256GCM, backend }), "OHTTP_ERR_SUITE_UNSUPPORTED");
    await rejectsWith(encapsulateRequest(config, REQUEST, { kdfId: KDF.SHA512, backend }), "OHTTP_ERR_SUITE_UNSUPPORTED");
    await rejectsWith(encapsulateRequest({ ...config, symmetric: [{ kdfId: 1, aeadId: 0xffff }] }, REQUEST, { backend }), "OHTTP_ERR_SUITE_UNSUPPORTED");
    await rejectsWith(encapsulateRequest({ ...config, kemId: 0x21 }, REQUEST, { backend }), "OHTTP_ERR_SUITE_UNSUPPORTED");
  });

  it("rejects an invalid public key or key id as OHTTP_ERR_KEY_CONFIG", async () => {
    const bad = new Uint8Array(65).fill(1);
    bad[0] = 4;
    const p256: KeyConfig = { keyId: 1, kemId: KEM.P256, publicKey: bad, symmetric: config.symmetric };
    await rejectsWith(encapsulateRequest(p256, REQUEST, { backend }), "OHTTP_ERR_KEY_CONFIG");
    await rejectsWith(encapsulateRequest({ ...config, publicKey: new Uint8Array(31) }, REQUEST, { backend }), "OHTTP_ERR_KEY_CONFIG");
    await rejectsWith(encapsulateRequest({ ...config, keyId: 256 }, REQUEST, { backend }), "OHTTP_ERR_KEY_CONFIG");
  });

  it("is deterministic with an injected ephemeral ikm and random without", async () => {
    const ikm = new Uint8Array(32).fill(4);
    const a = await encapsulateRequest(config, REQUEST, { ephemeral: { ikm }, backend });
    const b = await encapsulateRequest(config, REQUEST, { ephemeral: { ikm }, backend });
    expect(toHex(a.encapsulated)).toBe(toHex(b.encapsulated));
    const c = await encapsulateRequest(config, REQUEST, { backend });
    const d = await encapsulateRequest(config, REQUEST, { backend });
    expect(toHex(c.encapsulated.subarray(7, 39))).not.toBe(toHex(d.encapsulated.subarray(7, 39)));
  });

  it("does not depend on the caller's buffers after returning", async () => {
    const key = await importGatewayKey(1, KEM.X25519, A_PRIVATE_KEY, A_SYMMETRIC, { backend });
    const enc = concatBytes(fromHex(A.encapsulated_request));
    const { response } = await decapsulateRequest(new Map([[1, key]]), enc);
    enc.fill(0);
    const out = await response.encapsulateResponse(fromHex(A.response), { responseNonce: fromHex("c789e7151fcba46158ca84b04464910d") });
    expect(toHex(out)).toBe(A.encapsulated_response);
  });
});
