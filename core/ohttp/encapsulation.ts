// Request and response encapsulation (RFC 9458 §4).

import type { AeadEncryptionContext } from "@hpke/core";
import { ByteWriter, concatBytes, exactCopy } from "../bytes.js";
import { ProtocolError, wrapError } from "../errors.js";
import { AEAD_INFO, KEM_INFO, isAeadId, isKdfId, isKemId, type AeadId, type KdfId, type KemId } from "./constants.js";
import { checkPublicKey, type KeyConfig } from "./key-config.js";
import { hpkeBackend, type HpkeBackend } from "./backend.js";
import { gatewayKeyMaterial, type Keyring } from "./gateway-key.js";

const encoder = new TextEncoder();
/** RFC 9458 §4.3 / §4.4 labels. */
const REQUEST_LABEL = encoder.encode("message/bhttp request");
const RESPONSE_LABEL = encoder.encode("message/bhttp response");
/** key_id(8) kem_id(16) kdf_id(16) aead_id(16) */
const HEADER_BYTES = 7;

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

/** info = "message/bhttp request" || 0x00 || hdr (RFC 9458 §4.3). */
function requestInfo(hdr: Uint8Array): Uint8Array {
  const info = new Uint8Array(REQUEST_LABEL.length + 1 + hdr.length);
  info.set(REQUEST_LABEL);
  info.set(hdr, REQUEST_LABEL.length + 1);
  return info;
}

function u8(b: ArrayBuffer): Uint8Array {
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
    const { Nn, Nk } = AEAD_INFO[this.aeadId];
    return Math.max(Nn, Nk);
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

  /** aead_key = Expand(Extract(salt, secret), "key", Nk); aead_nonce = Expand(.., "nonce", Nn). */
  async #keys(secret: Uint8Array, salt: Uint8Array): Promise<[Uint8Array, Uint8Array]> {
    const kdf = this.backend.suite(this.kemId, this.kdfId, this.aeadId).kdf;
    const { Nk, Nn } = AEAD_INFO[this.aeadId];
    const key = await kdf.extractAndExpand(salt, secret, encoder.encode("key"), Nk);
    const nonce = await kdf.extractAndExpand(salt, secret, encoder.encode("nonce"), Nn);
    return [u8(key), u8(nonce)];
  }
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
): Promise<{ request: Uint8Array; keyId: number; response: ServerResponseContext }> {
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
  const { Nenc } = KEM_INFO[kemId];
  const { Nt, Nn, Nk } = AEAD_INFO[aeadId];
  if (enc.length < HEADER_BYTES + Nenc + Nt) {
    throw new ProtocolError("OHTTP_ERR_TRUNCATED", `encapsulated request needs at least ${HEADER_BYTES + Nenc + Nt} bytes`);
  }
  const { backend, recipientKey } = gatewayKeyMaterial(key);
  // Copies: the caller may reuse its buffer, and the context outlives this call.
  const kemEnc = exactCopy(enc.subarray(HEADER_BYTES, HEADER_BYTES + Nenc));
  const info = requestInfo(enc.subarray(0, HEADER_BYTES));
  let request: Uint8Array;
  let secret: Uint8Array;
  try {
    const ctx = await backend.suite(kemId, kdfId, aeadId).createRecipientContext({ recipientKey, enc: kemEnc, info });
    request = u8(await ctx.open(enc.subarray(HEADER_BYTES + Nenc)));
    secret = u8(await ctx.export(RESPONSE_LABEL, Math.max(Nn, Nk)));
  } catch (e) {
    throw wrapError(e, "OHTTP_ERR_DECRYPT");
  }
  const response = new ServerResponseContextImpl(backend, kemId, kdfId, aeadId, kemEnc, secret, deps.randomBytes ?? defaultRandom);
  return { request, keyId, response };
}

/** Client side (RFC 9458 §4.3): encapsulates `request` to the gateway key of `config`. */
export async function encapsulateRequest(
  config: KeyConfig,
  request: Uint8Array,
  opts: EncapsulateRequestOptions = {},
): Promise<{ encapsulated: Uint8Array; response: ClientResponseContext }> {
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
  const { Nn, Nk } = AEAD_INFO[aeadId];
  let enc: Uint8Array;
  let ct: Uint8Array;
  let secret: Uint8Array;
  try {
    const hpke = backend.suite(kemId, kdfId, aeadId);
    const ctx = await hpke.createSenderContext(ekm === undefined ? { recipientPublicKey, info: requestInfo(hdr) } : { recipientPublicKey, info: requestInfo(hdr), ekm });
    ct = u8(await ctx.seal(request));
    enc = u8(ctx.enc);
    secret = u8(await ctx.export(RESPONSE_LABEL, Math.max(Nn, Nk)));
  } catch (e) {
    throw wrapError(e, "INTERNAL_ERR", "request encapsulation failed");
  }
  const encapsulated = concatBytes(hdr, enc, ct);
  return { encapsulated, response: new ClientResponseContextImpl(backend, kemId, kdfId, aeadId, enc, secret) };
}
