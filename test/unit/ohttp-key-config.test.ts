// Key configurations (RFC 9458 §3): single configs, application/ohttp-keys lists, and every way
// they can be malformed.

import { describe, expect, it } from "vitest";
import { ByteWriter, concatBytes, fromHex } from "../../core/bytes.js";
import {
  AEAD,
  KDF,
  KEM,
  decodeKeyConfig,
  decodeKeyConfigs,
  encodeKeyConfig,
  encodeKeyConfigs,
  type KeyConfig,
} from "../../core/ohttp/index.js";
import { A, inSubarray, throwsWith } from "../helpers/ohttp.js";

const x25519: KeyConfig = { keyId: 1, kemId: KEM.X25519, publicKey: new Uint8Array(32).fill(7), symmetric: [{ kdfId: KDF.SHA256, aeadId: AEAD.AES128GCM }] };
const p256Key = new Uint8Array(65).fill(9);
p256Key[0] = 0x04;
const p256: KeyConfig = { keyId: 2, kemId: KEM.P256, publicKey: p256Key, symmetric: [{ kdfId: KDF.SHA384, aeadId: AEAD.AES256GCM }] };
const xwing: KeyConfig = {
  keyId: 3,
  kemId: KEM.XWING,
  publicKey: new Uint8Array(1216).fill(5),
  symmetric: [
    { kdfId: KDF.SHA512, aeadId: AEAD.CHACHA20POLY1305 },
    { kdfId: KDF.SHA256, aeadId: AEAD.AES128GCM },
  ],
};

/** A length-prefixed entry for an arbitrary (possibly unknown) KEM. */
function entry(body: Uint8Array): Uint8Array {
  return new ByteWriter().u16(body.length).bytes(body).finish();
}

describe("single key config", () => {
  it.each([x25519, p256, xwing])("round-trips KEM %#", (c) => {
    const b = encodeKeyConfig(c);
    expect(b.length).toBe(3 + c.publicKey.length + 2 + 4 * c.symmetric.length);
    expect(decodeKeyConfig(b)).toEqual(c);
    expect(decodeKeyConfig(inSubarray(b))).toEqual(c);
  });

  it("keeps unknown KDF/AEAD ids of a known KEM (the client picks a pair it supports)", () => {
    const c = { ...x25519, symmetric: [{ kdfId: 0x99, aeadId: 0xffff }] };
    expect(decodeKeyConfig(encodeKeyConfig(c))).toEqual(c);
  });

  it("returns a public key that does not alias the input", () => {
    const b = encodeKeyConfig(x25519);
    const c = decodeKeyConfig(b);
    b[3] = 0;
    expect(c.publicKey[0]).toBe(7);
    expect(c.publicKey.byteOffset).toBe(0);
  });

  it("rejects an unknown KEM", () => {
    const b = fromHex(A.key_config);
    b[2] = 0x21;
    throwsWith(() => decodeKeyConfig(b), "OHTTP_ERR_KEY_CONFIG");
  });

  it("rejects every truncation", () => {
    const b = encodeKeyConfig(xwing);
    for (let n = 0; n < b.length; n++) throwsWith(() => decodeKeyConfig(b.subarray(0, n)), "OHTTP_ERR_KEY_CONFIG");
  });

  it("rejects trailing bytes", () => {
    throwsWith(() => decodeKeyConfig(concatBytes(fromHex(A.key_config), Uint8Array.of(0))), "OHTTP_ERR_KEY_CONFIG");
  });

  it.each([0, 2, 6, 65533, 65536 - 4 + 4])("rejects a symmetric algorithms length of %i", (n) => {
    const w = new ByteWriter().u8(1).u16(KEM.X25519).bytes(new Uint8Array(32)).u16(n & 0xffff).zeros(n & 0xffff);
    throwsWith(() => decodeKeyConfig(w.finish()), "OHTTP_ERR_KEY_CONFIG");
  });

  it("rejects a compressed P-256 public key", () => {
    const b = encodeKeyConfig(p256);
    b[3] = 0x02;
    throwsWith(() => decodeKeyConfig(b), "OHTTP_ERR_KEY_CONFIG");
  });

  it.each([
    ["a key id above 255", { ...x25519, keyId: 256 }],
    ["a negative key id", { ...x25519, keyId: -1 }],
    ["an unknown KEM", { ...x25519, kemId: 0x21 }],
    ["a short X25519 key", { ...x25519, publicKey: new Uint8Array(31) }],
    ["a long X25519 key", { ...x25519, publicKey: new Uint8Array(33) }],
    ["a 64-byte P-256 key", { ...p256, publicKey: new Uint8Array(64) }],
    ["a compressed-size P-256 key", { ...p256, publicKey: new Uint8Array(33).fill(2) }],
    ["a P-256 key without 0x04", { ...p256, publicKey: new Uint8Array(65) }],
    ["a short X-Wing key", { ...xwing, publicKey: new Uint8Array(1215) }],
    ["no symmetric algorithms", { ...x25519, symmetric: [] }],
    ["a 17-bit algorithm id", { ...x25519, symmetric: [{ kdfId: 0x10000, aeadId: 1 }] }],
  ] as [string, KeyConfig][])("refuses to encode %s", (_name, c) => {
    throwsWith(() => encodeKeyConfig(c), "OHTTP_ERR_KEY_CONFIG");
  });
});

describe("application/ohttp-keys", () => {
  it("round-trips several configs of every KEM", () => {
    const b = encodeKeyConfigs([x25519, p256, xwing]);
    expect(decodeKeyConfigs(b)).toEqual([x25519, p256, xwing]);
    expect(decodeKeyConfigs(inSubarray(b))).toEqual([x25519, p256, xwing]);
  });

  it("skips configs with an unknown KEM and keeps the others", () => {
    const unknown = entry(new ByteWriter().u8(9).u16(0x0021).bytes(new Uint8Array(56)).u16(4).u16(1).u16(1).finish());
    const b = concatBytes(unknown, encodeKeyConfigs([x25519]), unknown, encodeKeyConfigs([p256]));
    expect(decodeKeyConfigs(b)).toEqual([x25519, p256]);
    expect(decodeKeyConfigs(unknown)).toEqual([]);
  });

  it("rejects an empty body and refuses to encode an empty list", () => {
    throwsWith(() => decodeKeyConfigs(new Uint8Array(0)), "OHTTP_ERR_KEY_CONFIG");
    throwsWith(() => encodeKeyConfigs([]), "OHTTP_ERR_KEY_CONFIG");
  });

  it("rejects every truncation except at a config boundary", () => {
    const b = encodeKeyConfigs([x25519, p256]);
    const boundary = 2 + encodeKeyConfig(x25519).length;
    for (let n = 1; n < b.length; n++) {
      if (n === boundary) expect(decodeKeyConfigs(b.subarray(0, n))).toEqual([x25519]);
      else throwsWith(() => decodeKeyConfigs(b.subarray(0, n)), "OHTTP_ERR_KEY_CONFIG");
    }
  });

  it("rejects the whole list if any config is malformed (RFC 9458 §3.2)", () => {
    const bad = encodeKeyConfig(x25519);
    bad[bad.length - 5] = 3; // symmetric algorithms length 0x0003
    throwsWith(() => decodeKeyConfigs(concatBytes(encodeKeyConfigs([p256]), entry(bad))), "OHTTP_ERR_KEY_CONFIG");
  });

  it("rejects a length prefix that disagrees with the config", () => {
    const one = encodeKeyConfig(x25519);
    throwsWith(() => decodeKeyConfigs(entry(concatBytes(one, Uint8Array.of(0)))), "OHTTP_ERR_KEY_CONFIG");
    throwsWith(() => decodeKeyConfigs(entry(one.subarray(0, one.length - 1))), "OHTTP_ERR_KEY_CONFIG");
    throwsWith(() => decodeKeyConfigs(entry(Uint8Array.of(1, 0))), "OHTTP_ERR_KEY_CONFIG");
  });

  it("rejects the unprefixed form of drafts -00 to -08", () => {
    throwsWith(() => decodeKeyConfigs(fromHex(A.key_config)), "OHTTP_ERR_KEY_CONFIG");
  });
});
