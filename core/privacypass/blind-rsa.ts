// Client side of RSABSSA-SHA384-PSS-Deterministic (RFC 9474 §4.2 Blind, §4.3 Finalize), the
// variant RFC 9578 §6 token type 2 uses: EMSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt,
// no message preparation (the AuthenticatorInput is the message).
//
// Browser-safe and synchronous: native BigInt arithmetic (the public exponent is short, so plain
// square-and-multiply is fast), an extended-Euclid inverse, SHA-384 from @noble/hashes, and
// randomness from crypto.getRandomValues unless injected. The blind r is secret to the client;
// BigInt arithmetic is not constant-time (nor was the sjcl code it replaces).

import { sha384 } from "@noble/hashes/sha2.js";
import { ByteReader, concatBytes, equalBytes, fromHex, toHex } from "../bytes.js";
import { ProtocolError } from "../errors.js";
import { RSASSA_PSS_SHA384_ALGORITHM } from "./token-key.js";

/** SHA-384 output length (hLen). */
const HASH_LENGTH = 48;
/** RFC 9578 §6: saltLength 48. */
export const PSS_SALT_LENGTH = 48;

export interface RsaPublicKey {
  readonly n: bigint;
  readonly e: bigint;
  /** Bit length of n. */
  readonly modBits: number;
  /** Byte length of n (k). */
  readonly modLen: number;
}

export type RandomBytes = (length: number) => Uint8Array;

export const defaultRandomBytes: RandomBytes = (length) => crypto.getRandomValues(new Uint8Array(length));

// ---- integers and octet strings (RFC 8017 §4) ----

export function os2ip(b: Uint8Array): bigint {
  return b.length === 0 ? 0n : BigInt("0x" + toHex(b));
}

/** I2OSP; throws PP_ERR_FORMAT ("integer too large") when x does not fit in `length` bytes. */
export function i2osp(x: bigint, length: number): Uint8Array {
  if (x < 0n) throw new ProtocolError("PP_ERR_FORMAT", "negative integer");
  const hex = x.toString(16);
  if (hex.length > 2 * length) throw new ProtocolError("PP_ERR_FORMAT", "integer too large");
  return fromHex(hex.padStart(2 * length, "0"));
}

function bitLength(x: bigint): number {
  return x === 0n ? 0 : x.toString(2).length;
}

/** base^exp mod m, left-to-right square-and-multiply (for the short public exponent). */
export function modPow(base: bigint, exp: bigint, m: bigint): bigint {
  let b = base % m;
  if (b < 0n) b += m;
  let result = 1n % m;
  for (const bit of exp.toString(2)) {
    result = (result * result) % m;
    if (bit === "1") result = (result * b) % m;
  }
  return result;
}

/** a^-1 mod m by the plain extended Euclidean algorithm; undefined when gcd(a, m) != 1. */
export function modInverseEuclid(a: bigint, m: bigint): bigint | undefined {
  const r1 = a % m;
  return finishEuclid(m, r1 < 0n ? r1 + m : r1, 0n, 1n, m);
}

/**
 * The plain extended-Euclid steps from the state (r0, r1, t0, t1) to a^-1 mod m, where t tracks
 * the coefficient of a; undefined when gcd(a, m) != 1. Shared by both inverses below.
 */
function finishEuclid(r0: bigint, r1: bigint, t0: bigint, t1: bigint, m: bigint): bigint | undefined {
  while (r1 !== 0n) {
    const q = r0 / r1;
    const r2 = r0 - q * r1;
    r0 = r1;
    r1 = r2;
    const t2 = t0 - q * t1;
    t0 = t1;
    t1 = t2;
  }
  if (r0 !== 1n) return undefined;
  t0 %= m;
  return t0 < 0n ? t0 + m : t0;
}

/** floor(a / b) for non-negative integers a, b > 0 below 2^50, corrected for float rounding. */
function floorDiv(a: number, b: number): number {
  let q = Math.floor(a / b);
  if (q * b > a) q--;
  else if ((q + 1) * b <= a) q++;
  return q;
}

const LEHMER_BITS = 48;
const LEHMER_MIN = 1n << 64n;

/**
 * a^-1 mod m; undefined when gcd(a, m) != 1. Extended Euclid with Lehmer's acceleration (Knuth
 * TAOCP 4.5.2 Algorithm L): the quotients are found from the leading 48 bits in exact float
 * arithmetic and applied to the big numbers in one 2x2 step, several times fewer BigInt
 * divisions than the plain algorithm. The invariant r_i = t_i * a (mod m) holds throughout.
 */
export function modInverse(a: bigint, m: bigint): bigint | undefined {
  let r0 = m;
  let r1 = a % m;
  if (r1 < 0n) r1 += m;
  let t0 = 0n;
  let t1 = 1n;
  while (r1 >= LEHMER_MIN) {
    const shift = BigInt(Math.max(0, r0.toString(16).length * 4 - LEHMER_BITS));
    let x = Number(r0 >> shift);
    let y = Number(r1 >> shift);
    let A = 1;
    let B = 0;
    let C = 0;
    let D = 1;
    for (;;) {
      if (y + C <= 0 || y + D <= 0) break;
      const q = floorDiv(x + A, y + C);
      if (q !== floorDiv(x + B, y + D)) break;
      let t = A - q * C;
      A = C;
      C = t;
      t = B - q * D;
      B = D;
      D = t;
      t = x - q * y;
      x = y;
      y = t;
    }
    if (B === 0) {
      const q = r0 / r1;
      const r2 = r0 - q * r1;
      r0 = r1;
      r1 = r2;
      const t2 = t0 - q * t1;
      t0 = t1;
      t1 = t2;
    } else {
      const bA = BigInt(A);
      const bB = BigInt(B);
      const bC = BigInt(C);
      const bD = BigInt(D);
      const n0 = bA * r0 + bB * r1;
      const n1 = bC * r0 + bD * r1;
      r0 = n0;
      r1 = n1;
      const u0 = bA * t0 + bB * t1;
      const u1 = bC * t0 + bD * t1;
      t0 = u0;
      t1 = u1;
    }
  }
  return finishEuclid(r0, r1, t0, t1, m);
}

// ---- the token key ----

function readTlv(r: ByteReader, expectedTag: number, what: string): Uint8Array {
  const tag = r.u8(`${what} tag`);
  if (tag !== expectedTag) throw new ProtocolError("PP_ERR_FORMAT", `${what} has the wrong DER tag`);
  const first = r.u8(`${what} length`);
  let len: number;
  if (first < 0x80) len = first;
  else if (first === 0x81) len = r.u8(`${what} length`);
  else if (first === 0x82) len = r.u16(`${what} length`);
  else throw new ProtocolError("PP_ERR_FORMAT", `unsupported DER length in ${what}`);
  return r.bytes(len, what);
}

function derPositiveInteger(v: Uint8Array, what: string): bigint {
  if (v.length === 0 || (v[0]! & 0x80) !== 0) throw new ProtocolError("PP_ERR_FORMAT", `${what} is not a positive INTEGER`);
  return os2ip(v);
}

/**
 * Reads n and e from a type 2 token-key (the RSASSA-PSS SHA-384 SPKI of RFC 9578 §6.5). Strict:
 * the algorithm identifier must be exactly the SHA-384 / MGF1-SHA-384 / 48 one, n odd, e odd > 1.
 */
export function parseRsaPssTokenKey(tokenKey: Uint8Array): RsaPublicKey {
  const outer = new ByteReader(tokenKey, "PP_ERR_TRUNCATED", "PP_ERR_FORMAT");
  const inner = readTlv(outer, 0x30, "SubjectPublicKeyInfo");
  outer.end("SubjectPublicKeyInfo");
  const spki = new ByteReader(inner, "PP_ERR_TRUNCATED", "PP_ERR_FORMAT");
  readTlv(spki, 0x30, "AlgorithmIdentifier");
  const algorithm = inner.subarray(0, spki.offset);
  if (!equalBytes(algorithm, RSASSA_PSS_SHA384_ALGORITHM)) {
    throw new ProtocolError("PP_ERR_FORMAT", "token key is not an RSASSA-PSS SHA-384 key");
  }
  const bits = readTlv(spki, 0x03, "subjectPublicKey");
  spki.end("SubjectPublicKeyInfo");
  if (bits[0] !== 0) throw new ProtocolError("PP_ERR_FORMAT", "subjectPublicKey has unused bits");
  const rsaKey = new ByteReader(bits.subarray(1), "PP_ERR_TRUNCATED", "PP_ERR_FORMAT");
  const seq = new ByteReader(readTlv(rsaKey, 0x30, "RSAPublicKey"), "PP_ERR_TRUNCATED", "PP_ERR_FORMAT");
  rsaKey.end("RSAPublicKey");
  const n = derPositiveInteger(readTlv(seq, 0x02, "modulus"), "modulus");
  const e = derPositiveInteger(readTlv(seq, 0x02, "publicExponent"), "publicExponent");
  seq.end("RSAPublicKey");
  return rsaPublicKey(n, e);
}

export function rsaPublicKey(n: bigint, e: bigint): RsaPublicKey {
  if (n % 2n === 0n || n < 3n || e % 2n === 0n || e < 3n || e >= n) {
    throw new ProtocolError("PP_ERR_FORMAT", "RSA public key parameters are invalid");
  }
  const modBits = bitLength(n);
  return { n, e, modBits, modLen: Math.ceil(modBits / 8) };
}

// ---- EMSA-PSS (RFC 8017 §9.1) with SHA-384 and MGF1-SHA-384 ----

function mgf1(seed: Uint8Array, maskLen: number): Uint8Array {
  const out = new Uint8Array(maskLen);
  const input = new Uint8Array(seed.length + 4);
  input.set(seed);
  for (let counter = 0, off = 0; off < maskLen; counter++, off += HASH_LENGTH) {
    new DataView(input.buffer).setUint32(seed.length, counter);
    const h = sha384(input);
    out.set(h.subarray(0, Math.min(HASH_LENGTH, maskLen - off)), off);
  }
  return out;
}

/** EMSA-PSS-ENCODE(msg, emBits) with the given salt. */
export function emsaPssEncode(msg: Uint8Array, emBits: number, salt: Uint8Array): Uint8Array {
  const emLen = Math.ceil(emBits / 8);
  const sLen = salt.length;
  if (emLen < HASH_LENGTH + sLen + 2) throw new ProtocolError("PP_ERR_FORMAT", "encoding error");
  const mHash = sha384(msg);
  const h = sha384(concatBytes(new Uint8Array(8), mHash, salt));
  const dbLen = emLen - HASH_LENGTH - 1;
  const db = new Uint8Array(dbLen);
  db[dbLen - sLen - 1] = 0x01;
  db.set(salt, dbLen - sLen);
  const mask = mgf1(h, dbLen);
  for (let i = 0; i < dbLen; i++) db[i]! ^= mask[i]!;
  db[0]! &= 0xff >>> (8 * emLen - emBits);
  const em = new Uint8Array(emLen);
  em.set(db);
  em.set(h, dbLen);
  em[emLen - 1] = 0xbc;
  return em;
}

/** EMSA-PSS-VERIFY(msg, em, emBits) for a salt of `sLen` bytes. */
export function emsaPssVerify(msg: Uint8Array, em: Uint8Array, emBits: number, sLen: number): boolean {
  const emLen = Math.ceil(emBits / 8);
  if (em.length !== emLen || emLen < HASH_LENGTH + sLen + 2) return false;
  if (em[emLen - 1] !== 0xbc) return false;
  const dbLen = emLen - HASH_LENGTH - 1;
  const topMask = 0xff >>> (8 * emLen - emBits);
  if ((em[0]! & ~topMask & 0xff) !== 0) return false;
  const h = em.subarray(dbLen, dbLen + HASH_LENGTH);
  const db = mgf1(h, dbLen);
  for (let i = 0; i < dbLen; i++) db[i]! ^= em[i]!;
  db[0]! &= topMask;
  const psLen = dbLen - sLen - 1;
  for (let i = 0; i < psLen; i++) if (db[i] !== 0) return false;
  if (db[psLen] !== 0x01) return false;
  const salt = db.subarray(dbLen - sLen);
  return equalBytes(sha384(concatBytes(new Uint8Array(8), sha384(msg), salt)), h);
}

/** RSASSA-PSS-VERIFY (RFC 8017 §8.1.2) with SHA-384, MGF1-SHA-384 and `sLen`-byte salts. */
export function rsassaPssVerify(pk: RsaPublicKey, msg: Uint8Array, sig: Uint8Array, sLen = PSS_SALT_LENGTH): boolean {
  if (sig.length !== pk.modLen) return false;
  const s = os2ip(sig);
  if (s >= pk.n) return false;
  const m = modPow(s, pk.e, pk.n);
  const emBits = pk.modBits - 1;
  const emLen = Math.ceil(emBits / 8);
  if (m >> BigInt(8 * emLen) !== 0n) return false;
  return emsaPssVerify(msg, i2osp(m, emLen), emBits, sLen);
}

// ---- RFC 9474 §4.2 Blind and §4.3 Finalize ----

export interface BlindOptions {
  /** The PSS salt (default: 48 random bytes). */
  salt?: Uint8Array;
  /** The blind r in [1, n) (default: uniformly random, invertible). For tests. */
  r?: bigint;
  randomBytes?: RandomBytes;
}

export interface BlindResult {
  blindedMsg: Uint8Array;
  /** r^-1 mod n as I2OSP(., modLen), the secret the client keeps for Finalize. */
  inv: Uint8Array;
  /** EMSA-PSS-ENCODE(msg, modBits - 1), exposed for tests. */
  encodedMsg: Uint8Array;
}

/** random_integer_uniform(1, n): rejection sampling of modLen random bytes, masked to bit_len(n). */
function randomBelow(pk: RsaPublicKey, randomBytes: RandomBytes): bigint {
  const excess = 8 * pk.modLen - pk.modBits;
  for (let attempt = 0; attempt < 256; attempt++) {
    const bytes = randomBytes(pk.modLen);
    if (bytes.length !== pk.modLen) throw new ProtocolError("INTERNAL_ERR", "random source returned the wrong length");
    const b = bytes.slice();
    b[0]! &= 0xff >>> excess;
    const r = os2ip(b);
    if (r !== 0n && r < pk.n) return r;
  }
  throw new ProtocolError("INTERNAL_ERR", "blinding error");
}

function isCoprime(a: bigint, b: bigint): boolean {
  while (b !== 0n) [a, b] = [b, a % b];
  return a === 1n;
}

/**
 * RFC 9474 §4.2 Blind(pk, msg) for the PSS (48-byte salt) deterministic variant. The steps
 * is_coprime(m, n) and inverse_mod(r, n) share one extended Euclid: w = (m * r)^-1 exists exactly
 * when both m and r are invertible, and then r^-1 = m * w. Only when it does not exist is m
 * checked on its own ("invalid input"); otherwise r is redrawn (RFC 9474 "blinding error").
 */
export function blind(pk: RsaPublicKey, msg: Uint8Array, opts: BlindOptions = {}): BlindResult {
  const randomBytes = opts.randomBytes ?? defaultRandomBytes;
  const salt = opts.salt ?? randomBytes(PSS_SALT_LENGTH);
  const encodedMsg = emsaPssEncode(msg, pk.modBits - 1, salt);
  const m = os2ip(encodedMsg);
  if (m === 0n || m >= pk.n) throw new ProtocolError("PP_ERR_FORMAT", "invalid input");
  for (let attempt = 0; attempt < 256; attempt++) {
    const r = opts.r ?? randomBelow(pk, randomBytes);
    const w = r > 0n && r < pk.n ? modInverse((m * r) % pk.n, pk.n) : undefined;
    if (w === undefined) {
      if (!isCoprime(pk.n, m)) throw new ProtocolError("PP_ERR_FORMAT", "invalid input");
      if (opts.r !== undefined) throw new ProtocolError("INTERNAL_ERR", "blinding error");
      continue;
    }
    const inv = (m * w) % pk.n;
    const x = modPow(r, pk.e, pk.n);
    const z = (m * x) % pk.n;
    return { blindedMsg: i2osp(z, pk.modLen), inv: i2osp(inv, pk.modLen), encodedMsg };
  }
  throw new ProtocolError("INTERNAL_ERR", "blinding error");
}

/**
 * RFC 9474 §4.3 Finalize(pk, msg, blind_sig, inv): unblinds and then verifies the signature.
 * Throws PP_ERR_TOKEN_SIGNATURE when the signature does not verify (or blind_sig is out of range).
 */
export function finalize(pk: RsaPublicKey, msg: Uint8Array, blindSig: Uint8Array, inv: Uint8Array, sLen = PSS_SALT_LENGTH): Uint8Array {
  if (blindSig.length !== pk.modLen || inv.length !== pk.modLen) {
    throw new ProtocolError("PP_ERR_FORMAT", "unexpected input size");
  }
  const z = os2ip(blindSig);
  if (z >= pk.n) throw new ProtocolError("PP_ERR_TOKEN_SIGNATURE", "invalid signature");
  const s = (z * os2ip(inv)) % pk.n;
  const sig = i2osp(s, pk.modLen);
  if (!rsassaPssVerify(pk, msg, sig, sLen)) throw new ProtocolError("PP_ERR_TOKEN_SIGNATURE", "invalid signature");
  return sig;
}
