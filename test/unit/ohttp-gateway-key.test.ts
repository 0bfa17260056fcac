// Gateway keys: generation, import from raw private keys, validation, and redaction.

import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import { toHex } from "../../core/bytes.js";
import {
  AEAD,
  DEFAULT_SYMMETRIC,
  KDF,
  KEM,
  KEM_INFO,
  exportPublic,
  generateGatewayKey,
  importGatewayKey,
  type KemId,
} from "../../core/ohttp/index.js";
import { A, A_PRIVATE_KEY, BACKENDS, rejectsWith } from "../helpers/ohttp.js";

const P256_ORDER = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";

describe.each(BACKENDS.map((b) => [b.name, b] as const))("gateway keys (%s)", (_name, backend) => {
  it.each([KEM.X25519, KEM.P256, KEM.XWING] as KemId[])("generates a key of KEM %i that re-imports to the same config", async (kemId) => {
    const { key, privateKey } = await generateGatewayKey(42, kemId, undefined, { backend });
    expect(privateKey.length).toBe(KEM_INFO[kemId].Nsk);
    expect(key.config.keyId).toBe(42);
    expect(key.config.kemId).toBe(kemId);
    expect(key.config.publicKey.length).toBe(KEM_INFO[kemId].Npk);
    expect(key.config.symmetric).toEqual(DEFAULT_SYMMETRIC);
    const again = await importGatewayKey(42, kemId, privateKey, undefined, { backend });
    expect(toHex(again.config.publicKey)).toBe(toHex(key.config.publicKey));
  });

  it("imports the RFC 9458 Appendix A key with a chosen suite list", async () => {
    const symmetric = [{ kdfId: KDF.SHA512, aeadId: AEAD.AES256GCM }];
    const key = await importGatewayKey(1, KEM.X25519, A_PRIVATE_KEY, symmetric, { backend });
    expect(toHex(key.config.publicKey)).toBe(A.gateway_key.public_key);
    expect(key.config.symmetric).toEqual(symmetric);
    expect(exportPublic(key)).toBe(key.config);
  });

  it("never prints its private key", async () => {
    const { key, privateKey } = await generateGatewayKey(3, KEM.X25519, undefined, { backend });
    const secretHex = toHex(privateKey);
    // Stringifying the key object is the point: it must print [redacted], never the key.
    // eslint-disable-next-line @typescript-eslint/no-base-to-string, @typescript-eslint/restrict-template-expressions
    for (const s of [JSON.stringify(key), JSON.stringify({ key }), inspect(key, { depth: 10, showHidden: true }), String(key), `${key}`]) {
      expect(s).toContain("[redacted]");
      expect(s.toLowerCase()).not.toContain(secretHex);
    }
    expect(Object.keys(key)).toEqual(["config"]);
  });

  it("has a frozen config", async () => {
    const { key } = await generateGatewayKey(3, KEM.X25519, undefined, { backend });
    expect(Object.isFrozen(key.config)).toBe(true);
    expect(Object.isFrozen(key.config.symmetric)).toBe(true);
  });

  it.each([
    ["a key id above 255", 256, KEM.X25519, 32],
    ["a fractional key id", 1.5, KEM.X25519, 32],
    ["an unknown KEM", 1, 0x21, 32],
    ["a short X25519 key", 1, KEM.X25519, 31],
    ["a long X25519 key", 1, KEM.X25519, 33],
    ["a short P-256 key", 1, KEM.P256, 31],
    ["a long X-Wing seed", 1, KEM.XWING, 64],
  ])("rejects %s as OHTTP_ERR_KEY_CONFIG", async (_what, keyId, kemId, len) => {
    await rejectsWith(importGatewayKey(keyId, kemId, new Uint8Array(len).fill(1), undefined, { backend }), "OHTTP_ERR_KEY_CONFIG");
  });

  it("rejects P-256 private keys of 0 and of the group order", async () => {
    await rejectsWith(importGatewayKey(1, KEM.P256, new Uint8Array(32), undefined, { backend }), "OHTTP_ERR_KEY_CONFIG");
    await rejectsWith(importGatewayKey(1, KEM.P256, Uint8Array.from(Buffer.from(P256_ORDER, "hex")), undefined, { backend }), "OHTTP_ERR_KEY_CONFIG");
  });

  it("rejects an empty or unsupported suite list as OHTTP_ERR_KEY_CONFIG", async () => {
    for (const symmetric of [[], [{ kdfId: KDF.SHA256, aeadId: 0xffff }], [{ kdfId: 4, aeadId: AEAD.AES128GCM }]]) {
      await rejectsWith(importGatewayKey(1, KEM.X25519, A_PRIVATE_KEY, symmetric, { backend }), "OHTTP_ERR_KEY_CONFIG");
      await rejectsWith(generateGatewayKey(1, KEM.X25519, symmetric, { backend }), "OHTTP_ERR_KEY_CONFIG");
    }
    await rejectsWith(generateGatewayKey(300, KEM.X25519, undefined, { backend }), "OHTTP_ERR_KEY_CONFIG");
  });
});
