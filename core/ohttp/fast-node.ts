// hpke-js primitives on synchronous node:crypto (Node only; never imported by a browser build).
//
// Why: the stock primitives cost a WebCrypto thread-pool round trip (~130 µs here) per call, and an
// HPKE key schedule makes about twenty calls. These classes implement hpke-js's KEM/KDF/AEAD
// interfaces with one-shot node:crypto calls, so hpke-js keeps the protocol logic (key schedule,
// nonces, sequence numbers, exporter) while each primitive costs a few µs. X-Wing keeps the stock
// KEM (node:crypto has no ML-KEM in Node 20) but gets the fast KDF and AEAD.
//
// Key handling: public keys are imported from JWK (about 13 µs; SPKI DER takes about 100 µs);
// private keys once, from PKCS#8 (slow, but only when a key is imported) into a KeyObject.

import {
  createCipheriv,
  createDecipheriv,
  createECDH,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  type CipherGCMTypes,
  type ECKeyPairKeyObjectOptions,
  type KeyObject,
} from "node:crypto";
import {
  AeadId as HpkeAeadId,
  CipherSuite,
  DecapError,
  DeserializeError,
  EncapError,
  KdfId as HpkeKdfId,
  KemId as HpkeKemId,
  NotSupportedError,
  type AeadEncryptionContext,
  type AeadInterface,
  type KdfInterface,
  type KemInterface,
  type RecipientContextParams,
  type SenderContextParams,
} from "@hpke/core";
import { equalBytes } from "../bytes.js";
import { AEAD, AEAD_INFO, KDF, KDF_INFO, KEM, type AeadId, type KdfId, type KemId } from "./constants.js";
import type { ChunkAeadSync, HpkeBackend, KemKeyPair, OpenedRequest, OpenRequestArgs, RecipientContextSync, ResponseCrypto, SenderContextSync } from "./backend.js";
import { stockHpkeBackend, stockKem } from "./stock.js";

type Bytes = ArrayBufferLike | ArrayBufferView;

/** A view of `b` (no copy). */
function view(b: Bytes): Uint8Array {
  return ArrayBuffer.isView(b) ? new Uint8Array(b.buffer, b.byteOffset, b.byteLength) : new Uint8Array(b);
}

/** An ArrayBuffer holding exactly `u` (no copy when `u` already owns its whole buffer). */
function exact(u: Uint8Array): ArrayBuffer {
  if (u.byteOffset === 0 && u.byteLength === u.buffer.byteLength && u.buffer instanceof ArrayBuffer) return u.buffer;
  return new Uint8Array(u).buffer; // a copy (Buffer#slice would be a view)
}

function concat2(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function b64url(u: Uint8Array): string {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength).toString("base64url");
}

function fromB64url(s: string): Uint8Array {
  const b = Buffer.from(s, "base64url");
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength).slice();
}

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);
const HPKE_V1 = ascii("HPKE-v1");
const EMPTY = new Uint8Array(0);
const ONE = Uint8Array.of(1);
// RFC 9180 §5.1: psk_id_hash and info_hash hash public inputs (the PSK id; the info, which in
// OHTTP is the fixed request label and key config header), so their results can be kept.
const PUBLIC_LABELS = [ascii("psk_id_hash"), ascii("info_hash")];
const PUBLIC_MEMO_MAX = 64;

// ---------------------------------------------------------------------------------------------
// KDF: HKDF (RFC 5869) with HMAC from node:crypto; labeled variants per RFC 9180 §4.

export class NodeHkdf implements KdfInterface {
  readonly id: HpkeKdfId;
  readonly hashSize: number;
  readonly #hash: string;
  #suiteId: Uint8Array = EMPTY;
  /**
   * hpke-js's key schedule calls extractAndExpand(shared_secret, ikm, ...) three times with the
   * same two buffers (RFC 9180 §5.1 extracts `secret` once); so does the OHTTP response for
   * "key" and "nonce". Remember the PRK per ikm buffer (compared by content, so a reused or
   * mutated buffer can never give a stale answer); entries die with the buffer.
   */
  readonly #prks = new WeakMap<object, { salt: Uint8Array; ikm: Uint8Array; prk: Uint8Array }>();
  /** LabeledExtract("", psk_id_hash | info_hash, ikm) by label index and ikm (bounded). */
  #publicExtracts = new Map<string, Uint8Array>();

  constructor(kdfId: KdfId) {
    this.id = kdfId;
    this.hashSize = KDF_INFO[kdfId].Nh;
    this.#hash = KDF_INFO[kdfId].hash;
  }

  init(suiteId: Uint8Array): void {
    this.#suiteId = suiteId;
    this.#publicExtracts = new Map();
  }

  buildLabeledIkm(label: Uint8Array, ikm: Uint8Array): Uint8Array {
    const s = this.#suiteId;
    const out = new Uint8Array(7 + s.length + label.length + ikm.length);
    out.set(HPKE_V1, 0);
    out.set(s, 7);
    out.set(label, 7 + s.length);
    out.set(ikm, 7 + s.length + label.length);
    return out;
  }

  buildLabeledInfo(label: Uint8Array, info: Uint8Array, len: number): Uint8Array {
    const s = this.#suiteId;
    const out = new Uint8Array(9 + s.length + label.length + info.length);
    out[0] = len >> 8;
    out[1] = len & 0xff;
    out.set(HPKE_V1, 2);
    out.set(s, 9);
    out.set(label, 9 + s.length);
    out.set(info, 9 + s.length + label.length);
    return out;
  }

  /** HKDF-Extract. An empty salt equals Nh zero bytes: HMAC zero-pads short keys. */
  extractSync(salt: Uint8Array, ikm: Uint8Array): Uint8Array {
    return createHmac(this.#hash, salt).update(ikm).digest();
  }

  /** HKDF-Expand. */
  expandSync(prk: Uint8Array, info: Uint8Array, len: number): Uint8Array {
    const nh = this.hashSize;
    if (len > 255 * nh) throw new RangeError("HKDF-Expand: length exceeds 255 * Nh");
    if (len <= nh) {
      const t = createHmac(this.#hash, prk).update(info).update(ONE).digest();
      return len === nh ? t : t.subarray(0, len);
    }
    const out = new Uint8Array(len);
    let prev: Uint8Array = EMPTY;
    for (let i = 1, off = 0; off < len; i++) {
      prev = createHmac(this.#hash, prk).update(prev).update(info).update(Uint8Array.of(i)).digest();
      out.set(prev.subarray(0, Math.min(nh, len - off)), off);
      off += nh;
    }
    return out;
  }

  /** Expand(Extract(salt, ikm), info, len), reusing the PRK of an identical earlier call. */
  extractAndExpandSync(salt: Uint8Array, ikm: Uint8Array, info: Uint8Array, len: number, memoKey?: object): Uint8Array {
    let prk: Uint8Array;
    if (memoKey === undefined) {
      prk = this.extractSync(salt, ikm);
    } else {
      const m = this.#prks.get(memoKey);
      if (m !== undefined && equalBytes(m.salt, salt) && equalBytes(m.ikm, ikm)) {
        prk = m.prk;
      } else {
        prk = this.extractSync(salt, ikm);
        this.#prks.set(memoKey, { salt: new Uint8Array(salt), ikm: new Uint8Array(ikm), prk });
      }
    }
    return this.expandSync(prk, info, len);
  }

  labeledExtractSync(salt: Uint8Array, label: Uint8Array, ikm: Uint8Array): Uint8Array {
    if (salt.length === 0 && ikm.length <= 256) {
      const i = PUBLIC_LABELS.findIndex((l) => l === label || equalBytes(l, label));
      if (i >= 0) return this.#publicExtract(i, label, ikm);
    }
    return this.extractSync(salt, this.buildLabeledIkm(label, ikm));
  }

  #publicExtract(i: number, label: Uint8Array, ikm: Uint8Array): Uint8Array {
    const key = i + Buffer.from(ikm.buffer, ikm.byteOffset, ikm.byteLength).toString("latin1");
    let prk = this.#publicExtracts.get(key);
    if (prk === undefined) {
      prk = this.extractSync(EMPTY, this.buildLabeledIkm(label, ikm));
      if (this.#publicExtracts.size >= PUBLIC_MEMO_MAX) this.#publicExtracts.clear();
      this.#publicExtracts.set(key, prk);
    }
    return new Uint8Array(prk); // a copy: callers own their result (Buffer#slice would be a view)
  }

  labeledExpandSync(prk: Uint8Array, label: Uint8Array, info: Uint8Array, len: number): Uint8Array {
    return this.expandSync(prk, this.buildLabeledInfo(label, info, len), len);
  }

  // hpke-js's asynchronous interface.
  async extract(salt: Bytes, ikm: Bytes): Promise<ArrayBuffer> {
    return exact(this.extractSync(view(salt), view(ikm)));
  }
  async expand(prk: Bytes, info: Bytes, len: number): Promise<ArrayBuffer> {
    return exact(this.expandSync(view(prk), view(info), len));
  }
  async extractAndExpand(salt: Bytes, ikm: Bytes, info: Bytes, len: number): Promise<ArrayBuffer> {
    return exact(this.extractAndExpandSync(view(salt), view(ikm), view(info), len, ikm));
  }
  async labeledExtract(salt: Bytes, label: Uint8Array, ikm: Uint8Array): Promise<ArrayBuffer> {
    return exact(this.labeledExtractSync(view(salt), label, ikm));
  }
  async labeledExpand(prk: Bytes, label: Uint8Array, info: Uint8Array, len: number): Promise<ArrayBuffer> {
    return exact(this.labeledExpandSync(view(prk), label, info, len));
  }
}

// ---------------------------------------------------------------------------------------------
// AEAD: AES-GCM and ChaCha20-Poly1305 with createCipheriv.

type CipherName = CipherGCMTypes | "chacha20-poly1305";
const CIPHERS: Record<AeadId, CipherName> = {
  [AEAD.AES128GCM]: "aes-128-gcm",
  [AEAD.AES256GCM]: "aes-256-gcm",
  [AEAD.CHACHA20POLY1305]: "chacha20-poly1305",
};
const TAG = 16;

export function aeadSeal(aeadId: AeadId, key: Uint8Array, nonce: Uint8Array, pt: Uint8Array, aad: Uint8Array): Uint8Array {
  const out = new Uint8Array(pt.length + TAG);
  aeadSealInto(aeadId, key, nonce, pt, aad, out, 0);
  return out;
}

/**
 * Seals `pt` into out[offset, offset + pt.length + 16) (ciphertext then tag; the three AEADs are
 * stream ciphers, so the ciphertext is as long as the plaintext). Returns the end offset.
 */
export function aeadSealInto(aeadId: AeadId, key: Uint8Array, nonce: Uint8Array, pt: Uint8Array, aad: Uint8Array, out: Uint8Array, offset: number): number {
  // The union overloads of createCipheriv need a literal mode; all three take authTagLength.
  const c = createCipheriv(CIPHERS[aeadId] as "aes-128-gcm", key, nonce, { authTagLength: TAG });
  if (aad.length > 0) c.setAAD(aad);
  const body = c.update(pt);
  c.final();
  out.set(body, offset);
  out.set(c.getAuthTag(), offset + body.length);
  return offset + body.length + TAG;
}

/** Throws if `ct` is shorter than the tag or does not authenticate. */
export function aeadOpen(aeadId: AeadId, key: Uint8Array, nonce: Uint8Array, ct: Uint8Array, aad: Uint8Array): Uint8Array {
  if (ct.length < TAG) throw new RangeError("ciphertext shorter than the tag");
  const d = createDecipheriv(CIPHERS[aeadId] as "aes-128-gcm", key, nonce, { authTagLength: TAG });
  if (aad.length > 0) d.setAAD(aad);
  d.setAuthTag(ct.subarray(ct.length - TAG));
  const body = d.update(ct.subarray(0, ct.length - TAG));
  d.final();
  return new Uint8Array(body.buffer, body.byteOffset, body.byteLength); // not a Buffer
}

class NodeAeadContext implements AeadEncryptionContext {
  readonly #aeadId: AeadId;
  readonly #key: Uint8Array;
  constructor(aeadId: AeadId, key: Uint8Array) {
    this.#aeadId = aeadId;
    this.#key = key;
  }
  async seal(iv: Bytes, data: Bytes, aad: Bytes): Promise<ArrayBuffer> {
    return exact(aeadSeal(this.#aeadId, this.#key, view(iv), view(data), view(aad)));
  }
  async open(iv: Bytes, data: Bytes, aad: Bytes): Promise<ArrayBuffer> {
    return exact(aeadOpen(this.#aeadId, this.#key, view(iv), view(data), view(aad)));
  }
}

export class NodeAead implements AeadInterface {
  readonly id: HpkeAeadId;
  readonly keySize: number;
  readonly nonceSize: number;
  readonly tagSize: number;
  readonly #aeadId: AeadId;
  constructor(aeadId: AeadId) {
    this.#aeadId = aeadId;
    this.id = aeadId;
    this.keySize = AEAD_INFO[aeadId].Nk;
    this.nonceSize = AEAD_INFO[aeadId].Nn;
    this.tagSize = AEAD_INFO[aeadId].Nt;
  }
  createEncryptionContext(key: Bytes): AeadEncryptionContext {
    return new NodeAeadContext(this.#aeadId, view(key).slice());
  }
}

// ---------------------------------------------------------------------------------------------
// DHKEM (RFC 9180 §4.1) over X25519 and P-256 with crypto.diffieHellman on KeyObjects.

/** A KEM key as hpke-js sees it (a CryptoKey look-alike) holding a node:crypto KeyObject. */
export class NodeKemKey implements CryptoKey {
  readonly algorithm: KeyAlgorithm;
  readonly extractable = false;
  readonly type: KeyType;
  readonly usages: KeyUsage[];
  readonly keyObject: KeyObject;
  /** The serialized public key (of the pair, for a private key): pkRm in the KEM context. */
  readonly publicKey: Uint8Array;
  constructor(name: string, type: KeyType, keyObject: KeyObject, publicKey: Uint8Array) {
    this.algorithm = { name };
    this.type = type;
    this.usages = type === "private" ? ["deriveBits"] : [];
    this.keyObject = keyObject;
    this.publicKey = publicKey;
  }
  toJSON(): string {
    return "[redacted]";
  }
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `NodeKemKey(${this.algorithm.name}, ${this.type})`;
  }
}

function asNodeKey(k: CryptoKey, type: KeyType): NodeKemKey {
  if (!(k instanceof NodeKemKey) || k.type !== type) throw new TypeError(`expected a node:crypto ${type} KEM key`);
  return k;
}

function isPair(k: unknown): k is CryptoKeyPair {
  return typeof k === "object" && k !== null && "privateKey" in k && "publicKey" in k;
}

/**
 * The JWK members of a key encoded by generateKeyPairSync itself ({ format: "jwk" } encodings).
 * Why keys are never generated first and exported afterwards: Node 20 exports a JWK while holding
 * the key's mutex and allocating JavaScript strings; a garbage collection at that moment can run
 * the destructor of the key's generation job (unreferenced once generateKeyPairSync returned),
 * which takes the same mutex, and the process deadlocks (seen in the benchmarks' load generator:
 * main thread in ExportJWKEdKey -> GC -> ~KeyGenJob -> uv_mutex_lock, forever). Encoded by the
 * generation, the key is never exported while its job can be collected.
 */
function generatedJwk(k: unknown): { x: string; y: string; d: string } {
  const j = k as { x?: unknown; y?: unknown; d?: unknown };
  const str = (v: unknown): string => (typeof v === "string" ? v : "");
  return { x: str(j.x), y: str(j.y), d: str(j.d) };
}

/** The uncompressed P-256 point (0x04 || x || y) of a JWK. */
function p256Point(jwk: { x: string; y: string }): Uint8Array {
  const pk = new Uint8Array(65);
  pk[0] = 0x04;
  pk.set(fromB64url(jwk.x), 1);
  pk.set(fromB64url(jwk.y), 33);
  return pk;
}

const LABEL_DKP_PRK = ascii("dkp_prk");
const LABEL_SK = ascii("sk");
const LABEL_CANDIDATE = ascii("candidate");
const LABEL_EAE_PRK = ascii("eae_prk");
const LABEL_SHARED_SECRET = ascii("shared_secret");
// RFC 8410 PKCS#8 wrapping of a raw X25519 private key.
const X25519_PKCS8 = Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20]);
const P256_ORDER = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

abstract class NodeDhkem implements KemInterface {
  abstract readonly id: HpkeKemId;
  readonly secretSize = 32;
  abstract readonly encSize: number;
  abstract readonly publicKeySize: number;
  readonly privateKeySize = 32;
  protected readonly kdf = new NodeHkdf(KDF.SHA256);

  protected init(kemId: number): void {
    // suite_id = "KEM" || I2OSP(kem_id, 2)
    this.kdf.init(Uint8Array.of(0x4b, 0x45, 0x4d, kemId >> 8, kemId & 0xff));
  }

  abstract importPublicSync(pk: Uint8Array): NodeKemKey;
  abstract importPrivateSync(sk: Uint8Array): { privateKey: NodeKemKey; publicKey: NodeKemKey };
  abstract generateSync(): { privateKey: NodeKemKey; publicKey: NodeKemKey };
  /** A fresh key pair, serialized (RFC 9180 SerializePrivateKey / SerializePublicKey). */
  abstract generateRawSync(): { privateKey: Uint8Array; publicKey: Uint8Array };
  abstract deriveSync(ikm: Uint8Array): { privateKey: NodeKemKey; publicKey: NodeKemKey };
  abstract exportPrivateSync(sk: NodeKemKey): Uint8Array;

  dhSync(sk: NodeKemKey, pk: NodeKemKey): Uint8Array {
    // Throws for an all-zero X25519 result (RFC 9180 §7.1.4); P-256 points are checked on import.
    return diffieHellman({ privateKey: sk.keyObject, publicKey: pk.keyObject });
  }

  /** RFC 9180 §4.1 ExtractAndExpand(dh, kem_context). */
  sharedSecretSync(dh: Uint8Array, enc: Uint8Array, pkRm: Uint8Array): Uint8Array {
    const kemContext = concat2(enc, pkRm);
    const prk = this.kdf.labeledExtractSync(EMPTY, LABEL_EAE_PRK, dh);
    return this.kdf.labeledExpandSync(prk, LABEL_SHARED_SECRET, kemContext, this.secretSize);
  }

  decapSync(enc: Uint8Array, recipientKey: CryptoKey | CryptoKeyPair): Uint8Array {
    const skR = asNodeKey(isPair(recipientKey) ? recipientKey.privateKey : recipientKey, "private");
    const pkE = this.importPublicSync(enc);
    return this.sharedSecretSync(this.dhSync(skR, pkE), enc, skR.publicKey);
  }

  /** The sender's ephemeral private key: fresh, or (test vectors) a given pair or DeriveKeyPair input. */
  ephemeralSync(ekm: SenderContextParams["ekm"]): NodeKemKey {
    if (ekm === undefined) return this.generateSync().privateKey;
    if (isPair(ekm)) return asNodeKey(ekm.privateKey, "private");
    return this.deriveSync(view(ekm)).privateKey;
  }

  encapSync(pkR: NodeKemKey, ekm: SenderContextParams["ekm"]): { sharedSecret: Uint8Array; enc: Uint8Array } {
    const skE = this.ephemeralSync(ekm);
    const enc = skE.publicKey;
    return { sharedSecret: this.sharedSecretSync(this.dhSync(skE, pkR), enc, pkR.publicKey), enc };
  }

  async serializePublicKey(key: CryptoKey): Promise<ArrayBuffer> {
    return exact(new Uint8Array(asNodeKey(key, "public").publicKey));
  }
  async deserializePublicKey(key: Bytes): Promise<CryptoKey> {
    try {
      return this.importPublicSync(view(key));
    } catch (e) {
      throw new DeserializeError(e);
    }
  }
  async serializePrivateKey(key: CryptoKey): Promise<ArrayBuffer> {
    return exact(this.exportPrivateSync(asNodeKey(key, "private")));
  }
  async deserializePrivateKey(key: Bytes): Promise<CryptoKey> {
    try {
      return this.importPrivateSync(view(key)).privateKey;
    } catch (e) {
      throw new DeserializeError(e);
    }
  }
  async importKey(format: "raw" | "jwk", key: ArrayBuffer | JsonWebKey, isPublic = true): Promise<CryptoKey> {
    if (format !== "raw" || !(key instanceof ArrayBuffer)) throw new NotSupportedError("only raw keys");
    return isPublic ? this.deserializePublicKey(key) : this.deserializePrivateKey(key);
  }
  async generateKeyPair(): Promise<CryptoKeyPair> {
    return this.generateSync();
  }
  async deriveKeyPair(ikm: Bytes): Promise<CryptoKeyPair> {
    return this.deriveSync(view(ikm));
  }
  async encap(params: SenderContextParams): Promise<{ sharedSecret: ArrayBuffer; enc: ArrayBuffer }> {
    if (params.senderKey !== undefined) throw new NotSupportedError("auth mode");
    try {
      const r = this.encapSync(asNodeKey(params.recipientPublicKey, "public"), params.ekm);
      return { sharedSecret: exact(r.sharedSecret), enc: exact(new Uint8Array(r.enc)) };
    } catch (e) {
      throw new EncapError(e);
    }
  }
  async decap(params: RecipientContextParams): Promise<ArrayBuffer> {
    if (params.senderPublicKey !== undefined) throw new NotSupportedError("auth mode");
    try {
      return exact(this.decapSync(view(params.enc), params.recipientKey));
    } catch (e) {
      throw new DecapError(e);
    }
  }
}

export class NodeDhkemX25519 extends NodeDhkem {
  readonly id = HpkeKemId.DhkemX25519HkdfSha256;
  readonly encSize = 32;
  readonly publicKeySize = 32;
  constructor() {
    super();
    this.init(KEM.X25519);
  }
  importPublicSync(pk: Uint8Array): NodeKemKey {
    if (pk.length !== 32) throw new RangeError("X25519 public key must be 32 bytes");
    const k = createPublicKey({ key: { kty: "OKP", crv: "X25519", x: b64url(pk) }, format: "jwk" });
    return new NodeKemKey("X25519", "public", k, new Uint8Array(pk));
  }
  #fromPrivate(k: KeyObject): { privateKey: NodeKemKey; publicKey: NodeKemKey } {
    const pub = createPublicKey(k);
    const pk = fromB64url((pub.export({ format: "jwk" }) as { x: string }).x);
    return { privateKey: new NodeKemKey("X25519", "private", k, pk), publicKey: new NodeKemKey("X25519", "public", pub, pk) };
  }
  importPrivateSync(sk: Uint8Array): { privateKey: NodeKemKey; publicKey: NodeKemKey } {
    if (sk.length !== 32) throw new RangeError("X25519 private key must be 32 bytes");
    const der = concat2(X25519_PKCS8, sk);
    try {
      return this.#fromPrivate(createPrivateKey({ key: Buffer.from(der.buffer), format: "der", type: "pkcs8" }));
    } finally {
      der.fill(0);
    }
  }
  generateSync(): { privateKey: NodeKemKey; publicKey: NodeKemKey } {
    // The public key comes encoded by the generation itself: see generatedJwk.
    const { privateKey, publicKey } = generateKeyPairSync("x25519", { publicKeyEncoding: { format: "jwk" } });
    const pk = fromB64url(generatedJwk(publicKey).x);
    return { privateKey: new NodeKemKey("X25519", "private", privateKey, pk), publicKey: new NodeKemKey("X25519", "public", createPublicKey(privateKey), pk) };
  }
  generateRawSync(): { privateKey: Uint8Array; publicKey: Uint8Array } {
    const pair = generateKeyPairSync("x25519", { publicKeyEncoding: { format: "jwk" }, privateKeyEncoding: { format: "jwk" } });
    return { privateKey: fromB64url(generatedJwk(pair.privateKey).d), publicKey: fromB64url(generatedJwk(pair.publicKey).x) };
  }
  deriveSync(ikm: Uint8Array): { privateKey: NodeKemKey; publicKey: NodeKemKey } {
    // RFC 9180 §7.1.3
    const dkpPrk = this.kdf.labeledExtractSync(EMPTY, LABEL_DKP_PRK, ikm);
    return this.importPrivateSync(this.kdf.labeledExpandSync(dkpPrk, LABEL_SK, EMPTY, 32));
  }
  exportPrivateSync(sk: NodeKemKey): Uint8Array {
    return fromB64url((sk.keyObject.export({ format: "jwk" }) as { d: string }).d);
  }
}

export class NodeDhkemP256 extends NodeDhkem {
  readonly id = HpkeKemId.DhkemP256HkdfSha256;
  readonly encSize = 65;
  readonly publicKeySize = 65;
  constructor() {
    super();
    this.init(KEM.P256);
  }
  importPublicSync(pk: Uint8Array): NodeKemKey {
    if (pk.length !== 65 || pk[0] !== 0x04) throw new RangeError("P-256 public key must be 65 bytes, uncompressed");
    // The JWK import rejects points that are not on the curve.
    const k = createPublicKey({
      key: { kty: "EC", crv: "P-256", x: b64url(pk.subarray(1, 33)), y: b64url(pk.subarray(33)) },
      format: "jwk",
    });
    return new NodeKemKey("P-256", "public", k, new Uint8Array(pk));
  }
  importPrivateSync(sk: Uint8Array): { privateKey: NodeKemKey; publicKey: NodeKemKey } {
    if (sk.length !== 32) throw new RangeError("P-256 private key must be 32 bytes");
    const ecdh = createECDH("prime256v1");
    ecdh.setPrivateKey(sk); // rejects 0 and values >= the group order
    const pk = new Uint8Array(ecdh.getPublicKey());
    const jwk = { kty: "EC", crv: "P-256", d: b64url(sk), x: b64url(pk.subarray(1, 33)), y: b64url(pk.subarray(33)) };
    const priv = createPrivateKey({ key: jwk, format: "jwk" });
    return { privateKey: new NodeKemKey("P-256", "private", priv, pk), publicKey: this.importPublicSync(pk) };
  }
  generateSync(): { privateKey: NodeKemKey; publicKey: NodeKemKey } {
    // The public key comes encoded by the generation itself: see generatedJwk.
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256", publicKeyEncoding: { format: "jwk" } } as unknown as ECKeyPairKeyObjectOptions);
    const pk = p256Point(generatedJwk(publicKey));
    return { privateKey: new NodeKemKey("P-256", "private", privateKey, pk), publicKey: new NodeKemKey("P-256", "public", createPublicKey(privateKey), pk) };
  }
  generateRawSync(): { privateKey: Uint8Array; publicKey: Uint8Array } {
    // @types/node 20 lists no JWK encodings for "ec" (Node 20 has them).
    const pair = generateKeyPairSync("ec", { namedCurve: "P-256", publicKeyEncoding: { format: "jwk" }, privateKeyEncoding: { format: "jwk" } } as unknown as ECKeyPairKeyObjectOptions);
    return { privateKey: fromB64url(generatedJwk(pair.privateKey).d), publicKey: p256Point(generatedJwk(pair.publicKey)) };
  }
  deriveSync(ikm: Uint8Array): { privateKey: NodeKemKey; publicKey: NodeKemKey } {
    // RFC 9180 §7.1.3: rejection sampling, bitmask 0xff for P-256.
    const dkpPrk = this.kdf.labeledExtractSync(EMPTY, LABEL_DKP_PRK, ikm);
    for (let counter = 0; counter < 256; counter++) {
      const bytes = this.kdf.labeledExpandSync(dkpPrk, LABEL_CANDIDATE, Uint8Array.of(counter), 32);
      const sk = BigInt("0x" + Buffer.from(bytes).toString("hex"));
      if (sk !== 0n && sk < P256_ORDER) return this.importPrivateSync(bytes);
    }
    throw new Error("DeriveKeyPairError");
  }
  exportPrivateSync(sk: NodeKemKey): Uint8Array {
    return fromB64url((sk.keyObject.export({ format: "jwk" }) as { d: string }).d);
  }
}

// ---------------------------------------------------------------------------------------------
// RFC 9458 §4.4 response AEAD, synchronous.

const LABEL_KEY = ascii("key");
const LABEL_NONCE = ascii("nonce");

const kdfs = new Map<KdfId, NodeHkdf>();
function kdfFor(kdfId: KdfId): NodeHkdf {
  let k = kdfs.get(kdfId);
  if (k === undefined) kdfs.set(kdfId, (k = new NodeHkdf(kdfId)));
  return k;
}

function responseKeys(kdfId: KdfId, aeadId: AeadId, secret: Uint8Array, salt: Uint8Array): [Uint8Array, Uint8Array] {
  const kdf = kdfFor(kdfId);
  const prk = kdf.extractSync(salt, secret);
  const { Nk, Nn } = AEAD_INFO[aeadId];
  return [kdf.expandSync(prk, LABEL_KEY, Nk), kdf.expandSync(prk, LABEL_NONCE, Nn)];
}

/** Chunked OHTTP's response chunks (RFC 9458 §4.4 key and nonce, then one message per chunk). */
const responseChunkAead: NonNullable<HpkeBackend["responseChunkAead"]> = (kdfId, aeadId, secret, salt) => {
  const [key, nonce] = responseKeys(kdfId, aeadId, secret, salt);
  return new NodeAeadSequence(aeadId, key, nonce);
};

const nodeResponseCrypto: ResponseCrypto = {
  seal(kdfId, aeadId, secret, salt, plaintext) {
    const [key, nonce] = responseKeys(kdfId, aeadId, secret, salt);
    return aeadSeal(aeadId, key, nonce, plaintext, EMPTY);
  },
  open(kdfId, aeadId, secret, salt, ciphertext) {
    const [key, nonce] = responseKeys(kdfId, aeadId, secret, salt);
    return aeadOpen(aeadId, key, nonce, ciphertext, EMPTY);
  },
};

// ---------------------------------------------------------------------------------------------
// RFC 9180 SetupBaseR + Open (sequence number 0) + Export in one synchronous call: what an OHTTP
// gateway does for each request (RFC 9458 §4.3). The same steps as hpke-js's recipient context,
// without its promise hops and ArrayBuffer copies, and with every labeled input that does not
// change per request built once per (suite, info, exporter context):
//
//   shared_secret = LabeledExpand(LabeledExtract("", "eae_prk", dh), "shared_secret", enc || pkRm, Nsecret)  (§4.1)
//   psk_id_hash = LabeledExtract("", "psk_id_hash", ""); info_hash = LabeledExtract("", "info_hash", info)     (§5.1, constant)
//   key_schedule_context = mode_base || psk_id_hash || info_hash                                               (constant)
//   secret = LabeledExtract(shared_secret, "secret", "")
//   key = LabeledExpand(secret, "key", ksc, Nk); base_nonce = LabeledExpand(secret, "base_nonce", ksc, Nn)
//   exporter_secret = LabeledExpand(secret, "exp", ksc, Nh)
//   plaintext = Open(key, base_nonce, aad, ct)                                                                  (§5.2, seq 0)
//   exported = LabeledExpand(exporter_secret, "sec", exporter_context, L)                                      (§5.3)
//
// Every expansion here is at most Nh bytes, so HKDF-Expand is one HMAC over info || 0x01; those
// inputs are the precomputed constants. Proven equal to hpke-js by the RFC 9180 / RFC 9458 vectors
// and the interop tests, which go through this path.
//
// The sender's SetupBaseS (RFC 9180 §5.1.1) is the same schedule from the other end of the DH:
// dh = DH(skE, pkR) with a fresh ephemeral key, enc = pkE, and pkRm the gateway's public key. A
// client's chunked request seals its chunks with it (Seal with base_nonce XOR I2OSP(seq, Nn)).

/** The labeled inputs of one (suite, info, exporter context, L), built once. */
interface ScheduleConstants {
  /** "HPKE-v1" || KEM suite_id || "eae_prk" (the DH result follows). */
  readonly eaePrkIkm: Buffer;
  /** I2OSP(Nsecret, 2) || "HPKE-v1" || KEM suite_id || "shared_secret" (enc || pkRm || 0x01 follow). */
  readonly sharedSecretInfo: Buffer;
  /** "HPKE-v1" || HPKE suite_id || "secret" (the empty PSK). */
  readonly secretIkm: Buffer;
  /** LabeledExpand infos with the HKDF counter byte: key, base_nonce, exp, and the export. */
  readonly keyInfo: Buffer;
  readonly nonceInfo: Buffer;
  readonly expInfo: Buffer;
  readonly exportInfo: Buffer;
}

const SCHEDULE_MEMO_MAX = 64;
const LABEL_SECRET = ascii("secret");

class NodeBaseSchedule {
  readonly #kem: NodeDhkem;
  readonly #kdf: NodeHkdf;
  readonly #hash: string;
  readonly #aeadId: AeadId;
  readonly #Nk: number;
  readonly #Nn: number;
  readonly #Nh: number;
  readonly #kemSuite: Uint8Array;
  readonly #hpkeSuite: Uint8Array;
  /** By info || exporter context || L (latin1): a handful of entries (one per key and label). */
  #constants = new Map<string, ScheduleConstants>();

  constructor(kem: NodeDhkem, kemId: KemId, kdfId: KdfId, aeadId: AeadId) {
    this.#kem = kem;
    this.#kdf = new NodeHkdf(kdfId);
    this.#hash = KDF_INFO[kdfId].hash;
    this.#aeadId = aeadId;
    this.#Nk = AEAD_INFO[aeadId].Nk;
    this.#Nn = AEAD_INFO[aeadId].Nn;
    this.#Nh = KDF_INFO[kdfId].Nh;
    this.#kemSuite = Uint8Array.of(0x4b, 0x45, 0x4d, kemId >> 8, kemId & 0xff);
    // suite_id = "HPKE" || I2OSP(kem_id, 2) || I2OSP(kdf_id, 2) || I2OSP(aead_id, 2)
    this.#hpkeSuite = Uint8Array.of(0x48, 0x50, 0x4b, 0x45, kemId >> 8, kemId & 0xff, kdfId >> 8, kdfId & 0xff, aeadId >> 8, aeadId & 0xff);
    this.#kdf.init(this.#hpkeSuite);
  }

  #schedule(info: Uint8Array, exporterContext: Uint8Array, length: number): ScheduleConstants {
    const id = `${length}:${Buffer.from(info.buffer, info.byteOffset, info.byteLength).toString("latin1")}\0${Buffer.from(exporterContext.buffer, exporterContext.byteOffset, exporterContext.byteLength).toString("latin1")}`;
    let c = this.#constants.get(id);
    if (c !== undefined) return c;
    const kdf = this.#kdf;
    const pskIdHash = kdf.extractSync(EMPTY, kdf.buildLabeledIkm(ascii("psk_id_hash"), EMPTY));
    const infoHash = kdf.extractSync(EMPTY, kdf.buildLabeledIkm(ascii("info_hash"), info));
    const ksc = new Uint8Array(1 + pskIdHash.length + infoHash.length); // mode_base = 0x00
    ksc.set(pskIdHash, 1);
    ksc.set(infoHash, 1 + pskIdHash.length);
    const withCounter = (label: string, ctx: Uint8Array, len: number): Buffer => Buffer.concat([kdf.buildLabeledInfo(ascii(label), ctx, len), ONE]);
    const kemPrefix = (label: string): Buffer => Buffer.concat([HPKE_V1, this.#kemSuite, ascii(label)]);
    c = {
      eaePrkIkm: kemPrefix("eae_prk"),
      sharedSecretInfo: Buffer.concat([Uint8Array.of(0, this.#kem.secretSize), kemPrefix("shared_secret")]),
      secretIkm: Buffer.from(kdf.buildLabeledIkm(LABEL_SECRET, EMPTY)),
      keyInfo: withCounter("key", ksc, this.#Nk),
      nonceInfo: withCounter("base_nonce", ksc, this.#Nn),
      expInfo: withCounter("exp", ksc, this.#Nh),
      exportInfo: withCounter("sec", exporterContext, length),
    };
    if (this.#constants.size >= SCHEDULE_MEMO_MAX) this.#constants.clear();
    this.#constants.set(id, c);
    return c;
  }

  /**
   * Throws (a node:crypto error or a RangeError) on a bad enc or a ciphertext that does not
   * authenticate. (Typed by the tuple; the arrow's own parameters are plain positional ones.)
   */
  readonly open: (...args: OpenRequestArgs) => OpenedRequest = (recipientKey, enc, info, aad, ct, exporterContext, length) => {
    if (length > this.#Nh) throw new RangeError("export length exceeds Nh");
    const c = this.#schedule(info, exporterContext, length);
    const { key, nonce, exporterSecret } = this.#recipientSchedule(c, recipientKey, enc);
    const plaintext = aeadOpen(this.#aeadId, key, nonce, ct, aad);
    key.fill(0);
    const exported = createHmac(this.#hash, exporterSecret).update(c.exportInfo).digest();
    exporterSecret.fill(0);
    return { plaintext, exported: new Uint8Array(exported.buffer, exported.byteOffset, length) };
  };

  /**
   * SetupBaseR alone: a context that opens message after message (sequence numbers 0, 1, ...), for
   * chunked OHTTP. Throws (a node:crypto error or a RangeError) on a bad enc.
   */
  context(recipientKey: CryptoKeyPair, enc: Uint8Array, info: Uint8Array): RecipientContextSync {
    const { key, nonce, exporterSecret } = this.#recipientSchedule(this.#schedule(info, EMPTY, 0), recipientKey, enc);
    return new NodeRecipientContext(this.#aeadId, this.#kdf, this.#hash, this.#Nh, key, nonce, exporterSecret);
  }

  /**
   * SetupBaseS(pkR, info): a context that seals message after message (sequence numbers 0, 1, ...),
   * for a client's chunked request. `ekm` as in hpke-js: undefined for a fresh ephemeral key.
   */
  senderContext(recipientPublicKey: CryptoKey, info: Uint8Array, ekm: CryptoKeyPair | Uint8Array | undefined): SenderContextSync {
    const pkR = asNodeKey(recipientPublicKey, "public");
    const skE = this.#kem.ephemeralSync(ekm);
    const enc = new Uint8Array(skE.publicKey);
    const dh = this.#kem.dhSync(skE, pkR);
    const { key, nonce, exporterSecret } = this.#keySchedule(this.#schedule(info, EMPTY, 0), dh, enc, pkR.publicKey);
    return new NodeSenderContext(this.#aeadId, this.#kdf, this.#hash, this.#Nh, key, nonce, exporterSecret, enc);
  }

  /** DHKEM Decap, then the key schedule. */
  #recipientSchedule(c: ScheduleConstants, recipientKey: CryptoKeyPair, enc: Uint8Array): { key: Buffer; nonce: Buffer; exporterSecret: Buffer } {
    const skR = asNodeKey(recipientKey.privateKey, "private");
    return this.#keySchedule(c, this.#kem.dhSync(skR, this.#kem.importPublicSync(enc)), enc, skR.publicKey);
  }

  /** DHKEM ExtractAndExpand(dh, enc || pkRm) and the mode_base key schedule (the steps above, up to Open or Seal). */
  #keySchedule(c: ScheduleConstants, dh: Uint8Array, enc: Uint8Array, pkRm: Uint8Array): { key: Buffer; nonce: Buffer; exporterSecret: Buffer } {
    const hash = this.#hash;
    // The KEM's KDF is HKDF-SHA256 for both DHKEMs here.
    const eaePrk = createHmac("sha256", EMPTY).update(c.eaePrkIkm).update(dh).digest();
    dh.fill(0);
    const sharedSecret = createHmac("sha256", eaePrk).update(c.sharedSecretInfo).update(enc).update(pkRm).update(ONE).digest();
    const secret = createHmac(hash, sharedSecret).update(c.secretIkm).digest();
    sharedSecret.fill(0);
    const key = createHmac(hash, secret).update(c.keyInfo).digest().subarray(0, this.#Nk);
    const nonce = createHmac(hash, secret).update(c.nonceInfo).digest().subarray(0, this.#Nn);
    const exporterSecret = createHmac(hash, secret).update(c.expInfo).digest();
    secret.fill(0);
    return { key, nonce, exporterSecret };
  }
}

/**
 * A key and base nonce that seal or open message after message, each message's nonce
 * base_nonce XOR I2OSP(seq, Nn), seq counting the messages sealed or opened: RFC 9180 §5.2's
 * context, and chunked OHTTP's response chunks (the chunk counter in place of seq). A failed Open
 * does not move seq. No promise, and no nonce or ciphertext ArrayBuffer of its own per message.
 */
class NodeAeadSequence implements ChunkAeadSync {
  readonly #aeadId: AeadId;
  readonly #key: Uint8Array;
  readonly #baseNonce: Uint8Array;
  /** Rewritten for each message (no allocation per message). */
  readonly #nonce: Buffer;
  #seq = 0;

  constructor(aeadId: AeadId, key: Uint8Array, baseNonce: Uint8Array) {
    this.#aeadId = aeadId;
    this.#key = key;
    this.#baseNonce = baseNonce;
    this.#nonce = Buffer.from(baseNonce);
  }

  /** The next message's nonce; `seq` moves on only once that message was sealed or opened. */
  #next(): Buffer {
    if (this.#seq >= Number.MAX_SAFE_INTEGER) throw new RangeError("message limit reached");
    const n = this.#nonce;
    n.set(this.#baseNonce);
    for (let i = n.length - 1, c = this.#seq; c > 0 && i >= 0; i--, c = Math.floor(c / 256)) n[i]! ^= c % 256;
    return n;
  }

  sealInto(pt: Uint8Array, aad: Uint8Array, out: Uint8Array, offset: number): number {
    const end = aeadSealInto(this.#aeadId, this.#key, this.#next(), pt, aad, out, offset);
    this.#seq++;
    return end;
  }

  open(ct: Uint8Array, aad: Uint8Array): Uint8Array {
    const pt = aeadOpen(this.#aeadId, this.#key, this.#next(), ct, aad);
    this.#seq++;
    return pt;
  }
}

/** What both synchronous HPKE contexts share (RFC 9180 §5.2, §5.3): the message sequence, and Export from the exporter secret. */
abstract class NodeContext extends NodeAeadSequence {
  readonly #kdf: NodeHkdf;
  readonly #hash: string;
  readonly #Nh: number;
  readonly #exporterSecret: Buffer;

  constructor(aeadId: AeadId, kdf: NodeHkdf, hash: string, Nh: number, key: Buffer, baseNonce: Buffer, exporterSecret: Buffer) {
    super(aeadId, key, baseNonce);
    this.#kdf = kdf;
    this.#hash = hash;
    this.#Nh = Nh;
    this.#exporterSecret = exporterSecret;
  }

  export(exporterContext: Uint8Array, length: number): Uint8Array {
    if (length > this.#Nh) throw new RangeError("export length exceeds Nh");
    const info = Buffer.concat([this.#kdf.buildLabeledInfo(ascii("sec"), exporterContext, length), ONE]);
    const out = createHmac(this.#hash, this.#exporterSecret).update(info).digest();
    return new Uint8Array(out.buffer, out.byteOffset, length);
  }
}

/** An HPKE recipient context on node:crypto: Open message after message. */
class NodeRecipientContext extends NodeContext implements RecipientContextSync {}

/**
 * An HPKE sender context on node:crypto: Seal message after message, each straight into the
 * caller's buffer.
 */
class NodeSenderContext extends NodeContext implements SenderContextSync {
  readonly enc: Uint8Array;

  constructor(aeadId: AeadId, kdf: NodeHkdf, hash: string, Nh: number, key: Buffer, baseNonce: Buffer, exporterSecret: Buffer, enc: Uint8Array) {
    super(aeadId, kdf, hash, Nh, key, baseNonce, exporterSecret);
    this.enc = enc;
  }
}

// ---------------------------------------------------------------------------------------------
// The backend.

const nodeKems = new Map<KemId, KemInterface>([
  [KEM.X25519, new NodeDhkemX25519()],
  [KEM.P256, new NodeDhkemP256()],
  [KEM.XWING, stockKem(KEM.XWING)],
]);
const suites = new Map<number, CipherSuite>();
const schedules = new Map<number, NodeBaseSchedule | null>();

function nodeDhkem(kemId: KemId): NodeDhkem | undefined {
  const k = nodeKems.get(kemId);
  return k instanceof NodeDhkem ? k : undefined;
}

/** The node:crypto key schedule of a suite, or undefined for a KEM it does not do (X-Wing). */
function baseSchedule(kemId: KemId, kdfId: KdfId, aeadId: AeadId): NodeBaseSchedule | undefined {
  const id = kemId * 0x100000000 + kdfId * 0x10000 + aeadId;
  let r = schedules.get(id);
  if (r === undefined) {
    const kem = nodeDhkem(kemId);
    r = kem === undefined ? null : new NodeBaseSchedule(kem, kemId, kdfId, aeadId);
    schedules.set(id, r);
  }
  return r ?? undefined;
}

const openRequest: NonNullable<HpkeBackend["openRequest"]> = (kemId, kdfId, aeadId, recipientKey, enc, info, aad, ct, exporterContext, length) =>
  baseSchedule(kemId, kdfId, aeadId)?.open(recipientKey, enc, info, aad, ct, exporterContext, length);

const setupRecipientSync: NonNullable<HpkeBackend["setupRecipientSync"]> = (kemId, kdfId, aeadId, recipientKey, enc, info) =>
  baseSchedule(kemId, kdfId, aeadId)?.context(recipientKey, enc, info);

const setupSenderSync: NonNullable<HpkeBackend["setupSenderSync"]> = (kemId, kdfId, aeadId, recipientPublicKey, info, ekm) =>
  baseSchedule(kemId, kdfId, aeadId)?.senderContext(recipientPublicKey, info, ekm);

export const nodeHpkeBackend: HpkeBackend = Object.freeze({
  name: "node:crypto",
  suite(kemId: KemId, kdfId: KdfId, aeadId: AeadId): CipherSuite {
    const id = kemId * 0x100000000 + kdfId * 0x10000 + aeadId;
    let s = suites.get(id);
    if (s === undefined) {
      s = new CipherSuite({ kem: nodeKems.get(kemId)!, kdf: new NodeHkdf(kdfId), aead: new NodeAead(aeadId) });
      suites.set(id, s);
    }
    return s;
  },
  async importPublicKey(kemId: KemId, publicKey: Uint8Array): Promise<CryptoKey> {
    const k = nodeDhkem(kemId);
    return k === undefined ? stockHpkeBackend.importPublicKey(kemId, publicKey) : k.importPublicSync(publicKey);
  },
  async importPrivateKey(kemId: KemId, privateKey: Uint8Array): Promise<KemKeyPair> {
    const k = nodeDhkem(kemId);
    if (k === undefined) return stockHpkeBackend.importPrivateKey(kemId, privateKey);
    const pair = k.importPrivateSync(privateKey);
    return { pair, publicKey: new Uint8Array(pair.publicKey.publicKey) };
  },
  async generateKeyPair(kemId: KemId): Promise<{ privateKey: Uint8Array; publicKey: Uint8Array }> {
    const k = nodeDhkem(kemId);
    if (k === undefined) return stockHpkeBackend.generateKeyPair(kemId);
    return k.generateRawSync();
  },
  responseCrypto: nodeResponseCrypto,
  responseChunkAead,
  openRequest,
  setupRecipientSync,
  setupSenderSync,
});
