// Request and response encapsulation (RFC 9458 §4).

import type { AeadEncryptionContext, CipherSuite, RecipientContext, SenderContext } from "@hpke/core";
import { ByteWriter, concatBytes, exactCopy } from "../bytes.js";
import { ProtocolError, wrapError } from "../errors.js";
import { AEAD_INFO, KEM_INFO, isAeadId, isKdfId, isKemId, type AeadId, type KdfId, type KemId } from "./constants.js";
import { checkPublicKey, type KeyConfig } from "./key-config.js";
import { hpkeBackend, type HpkeBackend, type RecipientContextSync, type SenderContextSync } from "./backend.js";
import { gatewayKeyMaterial, type Keyring } from "./gateway-key.js";

const encoder = new TextEncoder();
/** RFC 9458 §4.3 / §4.4 labels. */
const REQUEST_LABEL = encoder.encode("message/bhttp request");
const RESPONSE_LABEL = encoder.encode("message/bhttp response");
const KEY_LABEL = encoder.encode("key");
const EMPTY = new Uint8Array(0);
const NONCE_LABEL = encoder.encode("nonce");
/** key_id(8) kem_id(16) kdf_id(16) aead_id(16) */
export const HEADER_BYTES = 7;

export interface ServerResponseContext {
  /** Encapsulates the response (RFC 9458 §4.4). Single use: a second call throws OHTTP_ERR_CONTEXT_USED. */
  encapsulateResponse(response: Uint8Array, opts?: { responseNonce?: Uint8Array }): Promise<Uint8Array>;
}

export interface ClientResponseContext {
  /** Decapsulates the response (RFC 9458 §4.4). Single use: a second call throws OHTTP_ERR_CONTEXT_USED. */
  decapsulateResponse(encResponse: Uint8Array): Promise<Uint8Array>;
}

export interface DecapsulateRequestDeps {
  /** Fills the response nonce (default crypto.getRandomValues). */
  randomBytes?: (n: number) => Uint8Array;
}

export interface EncapsulateRequestOptions {
  /** KDF to use; must be offered by the config (default: the first supported pair). */
  kdfId?: number;
  /** AEAD to use; must be offered by the config with the KDF. */
  aeadId?: number;
  /**
   * The client's ephemeral key, for test vectors only: `ikm` (RFC 9180 DeriveKeyPair input) or a
   * serialized private key `privateKey` (skE). Default: a fresh random key.
   */
  ephemeral?: { ikm: Uint8Array } | { privateKey: Uint8Array };
  /** HPKE backend (default: the selected one). */
  backend?: HpkeBackend;
}

function defaultRandom(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

/** info = label || 0x00 || hdr (RFC 9458 §4.3; label "message/bhttp request"). */
function requestInfo(label: Uint8Array, hdr: Uint8Array): Uint8Array {
  const info = new Uint8Array(label.length + 1 + hdr.length);
  info.set(label);
  info.set(hdr, label.length + 1);
  return info;
}

export function u8(b: ArrayBuffer): Uint8Array {
  return new Uint8Array(b);
}

/** Shared by both response contexts: RFC 9458 §4.4 key derivation and AEAD, single use. */
abstract class ResponseContext {
  protected readonly backend: HpkeBackend;
  protected readonly kemId: KemId;
  protected readonly kdfId: KdfId;
  protected readonly aeadId: AeadId;
  protected readonly enc: Uint8Array;
  #secret: Uint8Array | undefined;

  constructor(backend: HpkeBackend, kemId: KemId, kdfId: KdfId, aeadId: AeadId, enc: Uint8Array, secret: Uint8Array) {
    this.backend = backend;
    this.kemId = kemId;
    this.kdfId = kdfId;
    this.aeadId = aeadId;
    this.enc = enc;
    this.#secret = secret;
  }

  /** max(Nn, Nk) */
  protected get nonceBytes(): number {
    return responseNonceBytes(this.aeadId);
  }

  /** Hands out the exported secret once, then forgets it. */
  protected take(): Uint8Array {
    const s = this.#secret;
    if (s === undefined) throw new ProtocolError("OHTTP_ERR_CONTEXT_USED");
    this.#secret = undefined;
    return s;
  }

  protected async seal(secret: Uint8Array, salt: Uint8Array, pt: Uint8Array): Promise<Uint8Array> {
    const rc = this.backend.responseCrypto;
    if (rc !== undefined) return rc.seal(this.kdfId, this.aeadId, secret, salt, pt);
    const [key, nonce] = await this.#keys(secret, salt);
    return u8(await this.#aead(key).seal(nonce, pt, new Uint8Array(0)));
  }

  protected async open(secret: Uint8Array, salt: Uint8Array, ct: Uint8Array): Promise<Uint8Array> {
    const rc = this.backend.responseCrypto;
    if (rc !== undefined) return rc.open(this.kdfId, this.aeadId, secret, salt, ct);
    const [key, nonce] = await this.#keys(secret, salt);
    return u8(await this.#aead(key).open(nonce, ct, new Uint8Array(0)));
  }

  #aead(key: Uint8Array): AeadEncryptionContext {
    return this.backend.suite(this.kemId, this.kdfId, this.aeadId).aead.createEncryptionContext(key);
  }

  #keys(secret: Uint8Array, salt: Uint8Array): Promise<[Uint8Array, Uint8Array]> {
    return responseKeys(this.backend.suite(this.kemId, this.kdfId, this.aeadId), this.aeadId, secret, salt);
  }
}

/** aead_key = Expand(Extract(salt, secret), "key", Nk); aead_nonce = Expand(.., "nonce", Nn) (§4.4). */
export async function responseKeys(suite: CipherSuite, aeadId: AeadId, secret: Uint8Array, salt: Uint8Array): Promise<[Uint8Array, Uint8Array]> {
  const { Nk, Nn } = AEAD_INFO[aeadId];
  const key = await suite.kdf.extractAndExpand(salt, secret, KEY_LABEL, Nk);
  const nonce = await suite.kdf.extractAndExpand(salt, secret, NONCE_LABEL, Nn);
  return [u8(key), u8(nonce)];
}

class ServerResponseContextImpl extends ResponseContext implements ServerResponseContext {
  readonly #random: (n: number) => Uint8Array;

  constructor(backend: HpkeBackend, kemId: KemId, kdfId: KdfId, aeadId: AeadId, enc: Uint8Array, secret: Uint8Array, random: (n: number) => Uint8Array) {
    super(backend, kemId, kdfId, aeadId, enc, secret);
    this.#random = random;
  }

  async encapsulateResponse(response: Uint8Array, opts: { responseNonce?: Uint8Array } = {}): Promise<Uint8Array> {
    const secret = this.take();
    const n = this.nonceBytes;
    const nonce = opts.responseNonce ?? this.#random(n);
    if (nonce.length !== n) {
      secret.fill(0);
      throw new ProtocolError("INTERNAL_ERR", `response nonce must be ${n} bytes`);
    }
    // salt = enc || response_nonce; enc_response = response_nonce || ct
    const salt = concatBytes(this.enc, nonce);
    let ct: Uint8Array;
    try {
      ct = await this.seal(secret, salt, response);
    } catch (e) {
      throw wrapError(e, "INTERNAL_ERR", "response encapsulation failed");
    } finally {
      secret.fill(0);
    }
    const out = new Uint8Array(n + ct.length);
    out.set(nonce);
    out.set(ct, n);
    return out;
  }
}

class ClientResponseContextImpl extends ResponseContext implements ClientResponseContext {
  async decapsulateResponse(encResponse: Uint8Array): Promise<Uint8Array> {
    const secret = this.take();
    const n = this.nonceBytes;
    if (encResponse.length < n + AEAD_INFO[this.aeadId].Nt) {
      secret.fill(0);
      throw new ProtocolError("OHTTP_ERR_TRUNCATED", `encapsulated response needs at least ${n + AEAD_INFO[this.aeadId].Nt} bytes`);
    }
    const salt = concatBytes(this.enc, encResponse.subarray(0, n));
    try {
      return await this.open(secret, salt, encResponse.subarray(n));
    } catch (e) {
      throw wrapError(e, "OHTTP_ERR_DECRYPT");
    } finally {
      secret.fill(0);
    }
  }
}

/**
 * RFC 9458 §4.1:
 * ```
 * Encapsulated Request {
 *   Key Identifier (8),
 *   HPKE KEM ID (16),
 *   HPKE KDF ID (16),
 *   HPKE AEAD ID (16),
 *   Encapsulated KEM Shared Secret (8 * Nenc),
 *   HPKE-Protected Request (..),
 * }
 * ```
 * Gateway side (§4.3): finds the key by key id, checks the suite, opens the request and keeps the
 * HPKE context's exported secret for the response.
 */
export async function decapsulateRequest(
  keys: Keyring,
  enc: Uint8Array,
  deps: DecapsulateRequestDeps = {},
): Promise<{ request: Uint8Array; keyId: number; enc: Uint8Array; response: ServerResponseContext }> {
  const h = readRequestHeader(keys, enc);
  const { Nt } = AEAD_INFO[h.aeadId];
  if (enc.length < h.headerBytes + Nt) {
    throw new ProtocolError("OHTTP_ERR_TRUNCATED", `encapsulated request needs at least ${h.headerBytes + Nt} bytes`);
  }
  // Copies: the caller may reuse its buffer, and the context outlives this call.
  const kemEnc = exactCopy(enc.subarray(HEADER_BYTES, h.headerBytes));
  let request: Uint8Array;
  let secret: Uint8Array;
  try {
    const hdr = enc.subarray(0, HEADER_BYTES);
    const ct = enc.subarray(h.headerBytes);
    const n = responseNonceBytes(h.aeadId);
    const once = h.backend.openRequest?.(h.kemId, h.kdfId, h.aeadId, h.recipientKey, kemEnc, requestInfo(REQUEST_LABEL, hdr), EMPTY, ct, RESPONSE_LABEL, n);
    if (once !== undefined) {
      request = once.plaintext;
      secret = once.exported;
    } else {
      const ctx = await setupRecipient(h, kemEnc, hdr, REQUEST_LABEL);
      request = u8(await ctx.open(ct));
      secret = u8(await ctx.export(RESPONSE_LABEL, n));
    }
  } catch (e) {
    throw wrapError(e, "OHTTP_ERR_DECRYPT");
  }
  const response = new ServerResponseContextImpl(h.backend, h.kemId, h.kdfId, h.aeadId, kemEnc, secret, deps.randomBytes ?? defaultRandom);
  return { request, keyId: h.keyId, enc: kemEnc, response };
}

/** What the request header names: the key, its suite, and where the HPKE ciphertext starts. */
export interface RequestHeader {
  readonly keyId: number;
  readonly kemId: KemId;
  readonly kdfId: KdfId;
  readonly aeadId: AeadId;
  /** HEADER_BYTES + Nenc */
  readonly headerBytes: number;
  readonly backend: HpkeBackend;
  readonly recipientKey: CryptoKeyPair;
}

/**
 * Reads key_id, kem_id, kdf_id, aead_id (the first 7 bytes; more may follow) and checks them
 * against the keyring (RFC 9458 §4.3): unknown key id, or a KEM or KDF/AEAD pair the key does not
 * offer, throw the §5.3 key problems. The caller checks that `headerBytes` are there. Shared by the
 * chunked variant, whose header is the same.
 */
export function readRequestHeader(keys: Keyring, enc: Uint8Array): RequestHeader {
  if (enc.length < HEADER_BYTES) throw new ProtocolError("OHTTP_ERR_TRUNCATED", "encapsulated request header is truncated");
  const keyId = enc[0]!;
  const kemId = (enc[1]! << 8) | enc[2]!;
  const kdfId = (enc[3]! << 8) | enc[4]!;
  const aeadId = (enc[5]! << 8) | enc[6]!;
  const key = keys.get(keyId);
  if (key === undefined) throw new ProtocolError("OHTTP_ERR_KEY_UNKNOWN", `no key with id ${keyId}`);
  const config = key.config;
  if (kemId !== config.kemId || !isKemId(kemId)) {
    throw new ProtocolError("OHTTP_ERR_SUITE_UNSUPPORTED", `key ${keyId} is not a key of KEM 0x${kemId.toString(16)}`);
  }
  if (!isKdfId(kdfId) || !isAeadId(aeadId) || !config.symmetric.some((s) => s.kdfId === kdfId && s.aeadId === aeadId)) {
    throw new ProtocolError("OHTTP_ERR_SUITE_UNSUPPORTED", `key ${keyId} does not offer KDF ${kdfId} with AEAD ${aeadId}`);
  }
  const headerBytes = HEADER_BYTES + KEM_INFO[kemId].Nenc;
  const { backend, recipientKey } = gatewayKeyMaterial(key);
  return { keyId, kemId, kdfId, aeadId, headerBytes, backend, recipientKey };
}

/** SetupBaseR(enc, skR, info) with info = label || 0x00 || hdr. Throws the backend's errors. */
export function setupRecipient(h: RequestHeader, kemEnc: Uint8Array, hdr: Uint8Array, label: Uint8Array): Promise<RecipientContext> {
  return h.backend.suite(h.kemId, h.kdfId, h.aeadId).createRecipientContext({ recipientKey: h.recipientKey, enc: kemEnc, info: requestInfo(label, hdr) });
}

/** The backend's synchronous recipient context for the request's suite, if it has one (backend.ts). */
export function setupRecipientSync(h: RequestHeader, kemEnc: Uint8Array, hdr: Uint8Array, label: Uint8Array): RecipientContextSync | undefined {
  return h.backend.setupRecipientSync?.(h.kemId, h.kdfId, h.aeadId, h.recipientKey, kemEnc, requestInfo(label, hdr));
}

/** max(Nn, Nk): the response nonce, and the secret exported for the response. */
export function responseNonceBytes(aeadId: AeadId): number {
  const { Nn, Nk } = AEAD_INFO[aeadId];
  return Math.max(Nn, Nk);
}

/** Client side (RFC 9458 §4.3): encapsulates `request` to the gateway key of `config`. */
export async function encapsulateRequest(
  config: KeyConfig,
  request: Uint8Array,
  opts: EncapsulateRequestOptions = {},
): Promise<{ encapsulated: Uint8Array; response: ClientResponseContext }> {
  const s = await setupSender(config, opts, REQUEST_LABEL);
  let ct: Uint8Array;
  let secret: Uint8Array;
  try {
    ct = u8(await s.ctx.seal(request));
    secret = u8(await s.ctx.export(RESPONSE_LABEL, responseNonceBytes(s.aeadId)));
  } catch (e) {
    throw wrapError(e, "INTERNAL_ERR", "request encapsulation failed");
  }
  const encapsulated = concatBytes(s.hdr, s.enc, ct);
  return { encapsulated, response: new ClientResponseContextImpl(s.backend, s.kemId, s.kdfId, s.aeadId, s.enc, secret) };
}

/** What a client's sender context is set up from: the suite, the gateway's key, the request header. */
interface SenderKeys {
  readonly kemId: KemId;
  readonly kdfId: KdfId;
  readonly aeadId: AeadId;
  readonly backend: HpkeBackend;
  /** key_id(8) kem_id(16) kdf_id(16) aead_id(16) */
  readonly hdr: Uint8Array;
  readonly recipientPublicKey: CryptoKey;
  /** The ephemeral key given for test vectors, in the backend's form (undefined: a fresh one). */
  readonly ekm: CryptoKeyPair | Uint8Array | undefined;
}

/** A client's HPKE sender context with the request header it belongs to. */
export interface SenderSetup extends Omit<SenderKeys, "recipientPublicKey" | "ekm"> {
  /** The encapsulated KEM shared secret (Nenc bytes). */
  readonly enc: Uint8Array;
  readonly ctx: SenderContext;
}

/** The same with the backend's synchronous sender context (backend.ts). */
export interface SyncSenderSetup extends Omit<SenderKeys, "recipientPublicKey" | "ekm"> {
  readonly enc: Uint8Array;
  readonly sync: SenderContextSync;
}

/** Picks the suite, imports the gateway's public key and the test vectors' ephemeral key, if any. */
async function senderKeys(config: KeyConfig, opts: EncapsulateRequestOptions): Promise<SenderKeys> {
  const { keyId, kemId } = config;
  if (!isKemId(kemId)) throw new ProtocolError("OHTTP_ERR_SUITE_UNSUPPORTED", `unsupported KEM 0x${kemId.toString(16)}`);
  if (!Number.isInteger(keyId) || keyId < 0 || keyId > 0xff) throw new ProtocolError("OHTTP_ERR_KEY_CONFIG", "key id must be 0..255");
  checkPublicKey(kemId, config.publicKey);
  const suite = config.symmetric.find(
    (s) => isKdfId(s.kdfId) && isAeadId(s.aeadId) && (opts.kdfId ?? s.kdfId) === s.kdfId && (opts.aeadId ?? s.aeadId) === s.aeadId,
  );
  if (suite === undefined) throw new ProtocolError("OHTTP_ERR_SUITE_UNSUPPORTED", "the key config offers no usable KDF/AEAD pair");
  const kdfId = suite.kdfId as KdfId;
  const aeadId = suite.aeadId as AeadId;
  const backend = opts.backend ?? (await hpkeBackend());
  const hdr = new ByteWriter(HEADER_BYTES).u8(keyId).u16(kemId).u16(kdfId).u16(aeadId).finish();
  let recipientPublicKey: CryptoKey;
  try {
    recipientPublicKey = await backend.importPublicKey(kemId, config.publicKey);
  } catch (e) {
    throw wrapError(e, "OHTTP_ERR_KEY_CONFIG", "invalid public key");
  }
  const ephemeral = opts.ephemeral;
  let ekm: CryptoKeyPair | Uint8Array | undefined;
  if (ephemeral !== undefined) {
    ekm = "ikm" in ephemeral ? ephemeral.ikm : (await backend.importPrivateKey(kemId, ephemeral.privateKey)).pair;
  }
  return { kemId, kdfId, aeadId, backend, hdr, recipientPublicKey, ekm };
}

/**
 * SetupBaseS(pkR, info) with info = label || 0x00 || hdr (RFC 9458 §4.3; the chunked variant only
 * changes the label), on hpke-js's sender context.
 */
export async function setupSender(config: KeyConfig, opts: EncapsulateRequestOptions, label: Uint8Array): Promise<SenderSetup> {
  return hpkeSender(await senderKeys(config, opts), label);
}

/**
 * The same on the backend's synchronous sender context where it has one for the suite (node:crypto
 * with a DHKEM), else on hpke-js's (browsers, X-Wing): a sender that seals message after message
 * without a promise or an ArrayBuffer of its own per message.
 */
export async function setupSenderPreferSync(config: KeyConfig, opts: EncapsulateRequestOptions, label: Uint8Array): Promise<SenderSetup | SyncSenderSetup> {
  const k = await senderKeys(config, opts);
  let sync: SenderContextSync | undefined;
  try {
    sync = k.backend.setupSenderSync?.(k.kemId, k.kdfId, k.aeadId, k.recipientPublicKey, requestInfo(label, k.hdr), k.ekm);
  } catch (e) {
    throw wrapError(e, "INTERNAL_ERR", "request encapsulation failed");
  }
  if (sync === undefined) return hpkeSender(k, label);
  return { kemId: k.kemId, kdfId: k.kdfId, aeadId: k.aeadId, backend: k.backend, hdr: k.hdr, enc: sync.enc, sync };
}

async function hpkeSender(k: SenderKeys, label: Uint8Array): Promise<SenderSetup> {
  const { recipientPublicKey, ekm } = k;
  try {
    const hpke = k.backend.suite(k.kemId, k.kdfId, k.aeadId);
    const info = requestInfo(label, k.hdr);
    const ctx = await hpke.createSenderContext(ekm === undefined ? { recipientPublicKey, info } : { recipientPublicKey, info, ekm });
    return { kemId: k.kemId, kdfId: k.kdfId, aeadId: k.aeadId, backend: k.backend, hdr: k.hdr, enc: u8(ctx.enc), ctx };
  } catch (e) {
    throw wrapError(e, "INTERNAL_ERR", "request encapsulation failed");
  }
}
