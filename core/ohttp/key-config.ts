// Key configurations (RFC 9458 §3).

import { ByteReader, ByteWriter, exactCopy } from "../bytes.js";
import { ProtocolError } from "../errors.js";
import { KEM, KEM_INFO, isKemId } from "./constants.js";

/** RFC 9458 §3.1: `HPKE Symmetric Algorithms { HPKE KDF ID (16), HPKE AEAD ID (16) }`. */
export interface SymmetricSuite {
  kdfId: number;
  aeadId: number;
}

/**
 * RFC 9458 §3.1:
 * ```
 * Key Config {
 *   Key Identifier (8),
 *   HPKE KEM ID (16),
 *   HPKE Public Key (Npk * 8),
 *   HPKE Symmetric Algorithms Length (16) = 4..65532,
 *   HPKE Symmetric Algorithms (32) = 4..65532,
 * }
 * ```
 */
export interface KeyConfig {
  keyId: number;
  kemId: number;
  publicKey: Uint8Array;
  symmetric: SymmetricSuite[];
}

const MAX_SYMMETRIC_BYTES = 65532;

function fail(detail: string): never {
  throw new ProtocolError("OHTTP_ERR_KEY_CONFIG", detail);
}

/** Checks a config's values; returns its encoded length. */
function checkKeyConfig(c: KeyConfig): number {
  if (!Number.isInteger(c.keyId) || c.keyId < 0 || c.keyId > 0xff) fail("key id must be 0..255");
  if (!isKemId(c.kemId)) fail(`unsupported KEM 0x${c.kemId.toString(16).padStart(4, "0")}`);
  checkPublicKey(c.kemId, c.publicKey);
  const n = c.symmetric.length * 4;
  if (n < 4 || n > MAX_SYMMETRIC_BYTES) fail("needs 1..16383 symmetric algorithm pairs");
  for (const s of c.symmetric) {
    for (const id of [s.kdfId, s.aeadId]) {
      if (!Number.isInteger(id) || id < 0 || id > 0xffff) fail("algorithm ids are 16-bit");
    }
  }
  return 1 + 2 + c.publicKey.length + 2 + n;
}

/** The public key length is fixed per KEM (Npk); P-256 keys are uncompressed points (0x04 || x || y). */
export function checkPublicKey(kemId: number, publicKey: Uint8Array): void {
  if (!isKemId(kemId)) fail(`unsupported KEM 0x${kemId.toString(16).padStart(4, "0")}`);
  const { Npk } = KEM_INFO[kemId];
  if (publicKey.length !== Npk) fail(`public key must be ${Npk} bytes, got ${publicKey.length}`);
  if (kemId === KEM.P256 && publicKey[0] !== 0x04) fail("P-256 public key must be uncompressed");
}

function writeKeyConfig(w: ByteWriter, c: KeyConfig): void {
  w.u8(c.keyId).u16(c.kemId).bytes(c.publicKey).u16(c.symmetric.length * 4);
  for (const s of c.symmetric) w.u16(s.kdfId).u16(s.aeadId);
}

export function encodeKeyConfig(c: KeyConfig): Uint8Array {
  const w = new ByteWriter(checkKeyConfig(c));
  writeKeyConfig(w, c);
  return w.finish();
}

/**
 * Reads one Key Config from `r`. Returns undefined (having read only key id and KEM id) if the
 * KEM is unknown: its public key length is then unknown too, so only a length-prefixed list can
 * skip it.
 */
function readKeyConfig(r: ByteReader): KeyConfig | undefined {
  const keyId = r.u8("key id");
  const kemId = r.u16("KEM id");
  if (!isKemId(kemId)) return undefined;
  const publicKey = exactCopy(r.bytes(KEM_INFO[kemId].Npk, "public key"));
  if (kemId === KEM.P256 && publicKey[0] !== 0x04) fail("P-256 public key must be uncompressed");
  const n = r.u16("symmetric algorithms length");
  if (n < 4 || n > MAX_SYMMETRIC_BYTES || n % 4 !== 0) {
    fail(`symmetric algorithms length ${n} is not a multiple of 4 in 4..65532`);
  }
  const algs = new ByteReader(r.bytes(n, "symmetric algorithms"), "OHTTP_ERR_KEY_CONFIG", "OHTTP_ERR_KEY_CONFIG");
  const symmetric: SymmetricSuite[] = [];
  while (!algs.done) symmetric.push({ kdfId: algs.u16("KDF id"), aeadId: algs.u16("AEAD id") });
  return { keyId, kemId, publicKey, symmetric };
}

/** Decodes exactly one Key Config (no length prefix). An unknown KEM is an error here. */
export function decodeKeyConfig(bytes: Uint8Array): KeyConfig {
  const r = new ByteReader(bytes, "OHTTP_ERR_KEY_CONFIG", "OHTTP_ERR_KEY_CONFIG");
  const c = readKeyConfig(r);
  if (c === undefined) {
    const kemId = ((bytes[1] ?? 0) << 8) | (bytes[2] ?? 0);
    fail(`unsupported KEM 0x${kemId.toString(16).padStart(4, "0")}`);
  }
  r.end("key config");
  return c;
}

/** RFC 9458 §3.2 `application/ohttp-keys`: each Key Config prefixed by its 2-byte length. */
export function encodeKeyConfigs(cs: KeyConfig[]): Uint8Array {
  if (cs.length === 0) fail("application/ohttp-keys needs at least one key config");
  let total = 0;
  for (const c of cs) total += 2 + checkKeyConfig(c);
  const w = new ByteWriter(total);
  for (const c of cs) {
    const n = checkKeyConfig(c);
    if (n > 0xffff) fail("key config longer than 65535 bytes");
    w.u16(n);
    writeKeyConfig(w, c);
  }
  return w.finish();
}

/**
 * Decodes `application/ohttp-keys`. Configs with a KEM Veil does not implement are skipped (a
 * gateway may offer more than a client supports); anything malformed rejects the whole list, as
 * RFC 9458 §3.2 requires ("Clients MUST discard incorrectly encoded collections").
 */
export function decodeKeyConfigs(bytes: Uint8Array): KeyConfig[] {
  if (bytes.length === 0) fail("application/ohttp-keys is empty");
  const r = new ByteReader(bytes, "OHTTP_ERR_KEY_CONFIG", "OHTTP_ERR_KEY_CONFIG");
  const out: KeyConfig[] = [];
  while (!r.done) {
    const n = r.u16("key config length");
    const one = new ByteReader(r.bytes(n, "key config"), "OHTTP_ERR_KEY_CONFIG", "OHTTP_ERR_KEY_CONFIG");
    const c = readKeyConfig(one);
    if (c === undefined) continue; // unknown KEM: skip its (length-delimited) remainder
    one.end("key config");
    out.push(c);
  }
  return out;
}
