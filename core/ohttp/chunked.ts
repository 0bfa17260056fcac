// Chunked Oblivious HTTP messages (draft-ietf-ohai-chunked-ohttp-08): requests and responses
// sealed and opened chunk by chunk, so neither side holds a whole message.
//
// §4 (requests), after the same header as RFC 9458 §4.1:
//   Chunked Request Chunks {
//     Non-Final Request Chunk (..) ...,
//     Final Request Chunk Indicator (i) = 0,
//     HPKE-Protected Final Chunk (..),
//   }
//   Non-Final Request Chunk {
//     Length (i) = 1..,
//     HPKE-Protected Chunk (..),
//   }
// §5 (responses):
//   Chunked Encapsulated Response {
//     Response Nonce (8 * max(Nn, Nk)),
//     Chunked Response Chunks (..),      -- the same framing as the request chunks
//   }
// §6: each request chunk is `sctxt.Seal(aad, chunk)` under info "message/bhttp chunked request";
// each response chunk is `Seal(aead_key, aead_nonce XOR encode(Nn, counter), aad, chunk)` with the
// key and nonce of RFC 9458 §4.4 derived from the secret exported as "message/bhttp chunked
// response". The AAD is empty, except "final" for the final chunk, whose length prefix is 0: it runs
// to the end of the outer message. "A non-final chunk MUST NOT contain a zero-length plaintext. A
// receiver MUST treat the receipt of a chunk that contains no data as equivalent to a decryption
// error, unless that chunk is the final chunk." §3: "Implementations MUST support receiving chunks
// that contain 2^14 (16384) octets of data prior to encapsulation. Senders of chunks SHOULD limit
// their chunks to this size". §7.1: a receiver that needs the whole message must not consider it
// complete before the final chunk has opened with the "final" AAD: `end()` below is that moment.

import type { AeadEncryptionContext } from "@hpke/core";
import { ByteQueue, ByteWriter, exactCopy } from "../bytes.js";
import { ProtocolError, wrapError } from "../errors.js";
import { varintSize } from "../bhttp/sections.js";
import { AEAD_INFO, type AeadId } from "./constants.js";
import type { HpkeBackend, SenderContextSync } from "./backend.js";
import {
  HEADER_BYTES,
  readRequestHeader,
  responseKeys,
  responseNonceBytes,
  setupRecipient,
  setupRecipientSync,
  setupSenderPreferSync,
  u8,
  type EncapsulateRequestOptions,
  type RequestHeader,
} from "./encapsulation.js";
import type { Keyring } from "./gateway-key.js";
import type { KeyConfig } from "./key-config.js";
import type { KdfId, KemId } from "./constants.js";

const encoder = new TextEncoder();
/** §6.1 / §6.2 labels. */
const CHUNKED_REQUEST_LABEL = encoder.encode("message/bhttp chunked request");
const CHUNKED_RESPONSE_LABEL = encoder.encode("message/bhttp chunked response");
/** §6: the AAD of the final chunk; every other chunk has an empty AAD. */
const FINAL_AAD = encoder.encode("final");
const EMPTY = new Uint8Array(0);

/** §3: what every receiver accepts and what senders should not exceed (plaintext bytes). */
export const CHUNK_BYTES = 16384;

/** What a receiver buffers of one chunk before it can open it. */
export interface ChunkLimits {
  /**
   * The largest chunk plaintext accepted (the sealed chunk may be Nt bytes longer). At least
   * CHUNK_BYTES, as §3 requires; larger chunks fail with OHTTP_ERR_CHUNK_TOO_LARGE.
   */
  maxChunkBytes?: number;
}

/** Four times what §3 requires: room for senders that chunk larger, still a bounded buffer. */
const DEFAULT_MAX_CHUNK_BYTES = 4 * CHUNK_BYTES;

function maxChunkBytes(limits: ChunkLimits): number {
  const n = limits.maxChunkBytes ?? DEFAULT_MAX_CHUNK_BYTES;
  if (!Number.isSafeInteger(n) || n < CHUNK_BYTES) throw new RangeError(`maxChunkBytes must be an integer >= ${CHUNK_BYTES}, got ${n}`);
  return n;
}

type Seal = (pt: Uint8Array, aad: Uint8Array) => Promise<Uint8Array>;
type Open = (ct: Uint8Array, aad: Uint8Array) => Promise<Uint8Array>;

/**
 * How a reader opens a chunk: through a promise (hpke-js's contexts), or synchronously (the
 * backend's node:crypto contexts: no promise per chunk).
 */
type ChunkOpener = { readonly open: Open } | { readonly openSync: (ct: Uint8Array, aad: Uint8Array) => Uint8Array };

/**
 * How a writer seals a chunk: through a promise that gives the sealed chunk (hpke-js's contexts, the
 * response AEAD), or synchronously straight into the framed output (`sealInto` writes pt.length +
 * tagBytes bytes at the offset and returns the end), which leaves no sealed copy to frame.
 */
export type ChunkSealer = { readonly seal: Seal } | { readonly sealInto: SenderContextSync["sealInto"]; readonly tagBytes: number };

/**
 * The sending half of one chunked message body: seals plaintext into framed chunks. `seal` splits
 * its input into chunks of at most CHUNK_BYTES and skips empty input (a non-final chunk is never
 * empty); `sealFinal` writes the final chunk (possibly empty) and closes the writer.
 */
export class ChunkWriter {
  readonly #sealer: ChunkSealer;
  readonly #chunkBytes: number;
  #closed = false;

  /** @internal built by the encapsulation functions below */
  constructor(sealer: ChunkSealer, chunkBytes = CHUNK_BYTES) {
    this.#sealer = sealer;
    this.#chunkBytes = chunkBytes;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Non-final chunks for `pt`: each `Length (i) = 1..` then the sealed chunk. Empty for empty input. */
  async seal(pt: Uint8Array): Promise<Uint8Array> {
    this.#open();
    if (pt.length === 0) return EMPTY;
    const s = this.#sealer;
    if ("sealInto" in s) return this.#sealFramed(s, pt);
    const sealed: Uint8Array[] = [];
    let total = 0;
    for (let o = 0; o < pt.length; o += this.#chunkBytes) {
      const one = await this.#sealOne(s, pt.subarray(o, o + this.#chunkBytes), EMPTY);
      sealed.push(one);
      total += varintSize(one.length) + one.length;
    }
    const w = new ByteWriter(total);
    for (const one of sealed) w.varintBytes(one);
    return w.finish();
  }

  /** The final chunk: a zero length prefix, then `pt` sealed with the AAD "final". */
  async sealFinal(pt: Uint8Array = EMPTY): Promise<Uint8Array> {
    this.#open();
    if (pt.length > this.#chunkBytes) {
      const head = await this.seal(pt.subarray(0, pt.length - this.#chunkBytes));
      const tail = await this.sealFinal(pt.subarray(pt.length - this.#chunkBytes));
      const out = new Uint8Array(head.length + tail.length);
      out.set(head);
      out.set(tail, head.length);
      return out;
    }
    const s = this.#sealer;
    let out: Uint8Array; // out[0] = 0: the final chunk indicator
    if ("sealInto" in s) {
      out = new Uint8Array(1 + pt.length + s.tagBytes);
      this.#sealInto(s, pt, FINAL_AAD, out, 1);
    } else {
      const sealed = await this.#sealOne(s, pt, FINAL_AAD);
      out = new Uint8Array(1 + sealed.length);
      out.set(sealed, 1);
    }
    this.#closed = true;
    return out;
  }

  #open(): void {
    if (this.#closed) throw new ProtocolError("OHTTP_ERR_CONTEXT_USED", "the final chunk was already sealed");
  }

  /** The framing laid out first (each length prefix, room for its chunk), then each chunk sealed into its room. */
  #sealFramed(s: Extract<ChunkSealer, { sealInto: unknown }>, pt: Uint8Array): Uint8Array {
    const n = this.#chunkBytes;
    let total = 0;
    for (let o = 0; o < pt.length; o += n) {
      const sealed = Math.min(n, pt.length - o) + s.tagBytes;
      total += varintSize(sealed) + sealed;
    }
    const w = new ByteWriter(total);
    const at: number[] = [];
    for (let o = 0; o < pt.length; o += n) {
      const sealed = Math.min(n, pt.length - o) + s.tagBytes;
      w.varint(sealed);
      at.push(w.length);
      w.zeros(sealed);
    }
    const out = w.finish();
    for (let o = 0, i = 0; o < pt.length; o += n, i++) this.#sealInto(s, pt.subarray(o, o + n), EMPTY, out, at[i]!);
    return out;
  }

  #sealInto(s: Extract<ChunkSealer, { sealInto: unknown }>, pt: Uint8Array, aad: Uint8Array, out: Uint8Array, offset: number): void {
    try {
      // The framing was laid out for exactly this length: anything else would corrupt the message.
      if (s.sealInto(pt, aad, out, offset) !== offset + pt.length + s.tagBytes) throw new RangeError("a sealed chunk has the wrong length");
    } catch (e) {
      this.#failed(e);
    }
  }

  async #sealOne(s: Extract<ChunkSealer, { seal: unknown }>, pt: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    try {
      return await s.seal(pt, aad);
    } catch (e) {
      this.#failed(e);
    }
  }

  /** A chunk that could not be sealed ends the message: nothing after it could be opened. */
  #failed(e: unknown): never {
    this.#closed = true;
    throw wrapError(e, "INTERNAL_ERR", "chunk encapsulation failed");
  }
}

/**
 * The receiving half: splits framed chunks out of the bytes as they arrive and opens them. What it
 * buffers is bounded by one chunk (`maxChunkBytes` + Nt) plus a length prefix.
 */
class ChunkReader {
  readonly #q: ByteQueue;
  readonly #maxSealed: number;
  #opener: ChunkOpener | undefined;
  #final = false;
  #done = false;

  /** `q` may hold bytes already (the header or nonce is read off it first). */
  constructor(q: ByteQueue, maxChunk: number, tagBytes: number) {
    this.#q = q;
    this.#maxSealed = maxChunk + tagBytes;
  }

  /** Set once the key is known (after the request header or the response nonce). */
  start(opener: ChunkOpener): void {
    this.#opener = opener;
  }

  get final(): boolean {
    return this.#final;
  }

  /** Opens every complete non-final chunk now in the queue. */
  async drain(): Promise<Uint8Array[]> {
    const out: Uint8Array[] = [];
    while (!this.#final) {
      const len = this.#q.peekVarint(0, "OHTTP_ERR_FORMAT", "chunk length");
      if (len === undefined) break;
      if (len.value === 0) {
        this.#q.take(len.size);
        this.#final = true;
        break;
      }
      this.#checkSize(len.value);
      if (this.#q.length < len.size + len.value) break;
      this.#q.take(len.size);
      const pt = await this.#openOne(this.#q.take(len.value), EMPTY);
      if (pt.length === 0) throw new ProtocolError("OHTTP_ERR_DECRYPT", "a non-final chunk is empty");
      out.push(pt);
    }
    if (this.#final) this.#checkSize(this.#q.length);
    return out;
  }

  /** The outer message ended: opens the final chunk, which must have begun. */
  async end(): Promise<Uint8Array> {
    if (this.#done) throw new ProtocolError("OHTTP_ERR_CONTEXT_USED", "the message already ended");
    const rest = await this.drain();
    if (rest.length > 0) throw new Error("unreachable: end() after push() left whole chunks unread");
    if (!this.#final) throw new ProtocolError("OHTTP_ERR_TRUNCATED", "the message ended before its final chunk");
    this.#done = true;
    return this.#openOne(this.#q.take(this.#q.length), FINAL_AAD);
  }

  #checkSize(sealedBytes: number): void {
    if (sealedBytes > this.#maxSealed) {
      throw new ProtocolError("OHTTP_ERR_CHUNK_TOO_LARGE", `chunk of ${sealedBytes} bytes exceeds the limit of ${this.#maxSealed}`);
    }
  }

  /** A synchronous opener's plaintext as it is (awaiting it costs no promise of its own), else the promise's. */
  #openOne(ct: Uint8Array, aad: Uint8Array): Uint8Array | Promise<Uint8Array> {
    const o = this.#opener!;
    if ("openSync" in o) {
      try {
        return o.openSync(ct, aad);
      } catch (e) {
        throw wrapError(e, "OHTTP_ERR_DECRYPT");
      }
    }
    return o.open(ct, aad).catch((e: unknown) => {
      throw wrapError(e, "OHTTP_ERR_DECRYPT");
    });
  }
}

/**
 * The response chunks' AEAD (§6.2) for both ends: the backend's synchronous one where it has one
 * (node:crypto: each chunk sealed straight into the framed output, opened without a promise, a
 * nonce or a ciphertext copy per chunk, what a gateway does most while a large answer streams),
 * else hpke-js's (browsers, the stock backend).
 */
async function responseChunkAead(backend: HpkeBackend, ids: SuiteIds, secret: Uint8Array, salt: Uint8Array): Promise<{ sealer: ChunkSealer; opener: ChunkOpener }> {
  const sync = backend.responseChunkAead?.(ids.kdfId, ids.aeadId, secret, salt);
  if (sync === undefined) {
    const a = await ResponseChunkAead.create(backend, ids, secret, salt);
    return { sealer: { seal: a.seal }, opener: { open: a.open } };
  }
  secret.fill(0);
  return {
    sealer: { sealInto: (pt, aad, out, offset) => sync.sealInto(pt, aad, out, offset), tagBytes: AEAD_INFO[ids.aeadId].Nt },
    opener: { openSync: (ct, aad) => sync.open(ct, aad) },
  };
}

/**
 * Response chunk AEAD (§6.2) on hpke-js: key and base nonce from RFC 9458 §4.4, each chunk's nonce
 * the base nonce XOR the chunk counter (big-endian, Nn bytes).
 */
class ResponseChunkAead {
  readonly #aead: AeadEncryptionContext;
  readonly #nonce: Uint8Array;
  #counter = 0;

  private constructor(aead: AeadEncryptionContext, nonce: Uint8Array) {
    this.#aead = aead;
    this.#nonce = nonce;
  }

  static async create(backend: HpkeBackend, ids: SuiteIds, secret: Uint8Array, salt: Uint8Array): Promise<ResponseChunkAead> {
    const suite = backend.suite(ids.kemId, ids.kdfId, ids.aeadId);
    const [key, nonce] = await responseKeys(suite, ids.aeadId, secret, salt);
    secret.fill(0);
    const aead = suite.aead.createEncryptionContext(key);
    key.fill(0);
    return new ResponseChunkAead(aead, nonce);
  }

  /** chunk_nonce = aead_nonce XOR encode(Nn, counter); counter++ */
  #next(): Uint8Array {
    const n = exactCopy(this.#nonce);
    let c = this.#counter++;
    for (let i = n.length - 1; c > 0 && i >= 0; i--) {
      n[i]! ^= c % 256;
      c = Math.floor(c / 256);
    }
    return n;
  }

  readonly seal: Seal = async (pt, aad) => u8(await this.#aead.seal(this.#next(), pt, aad));
  readonly open: Open = async (ct, aad) => u8(await this.#aead.open(this.#next(), ct, aad));
}

interface SuiteIds {
  readonly kemId: KemId;
  readonly kdfId: KdfId;
  readonly aeadId: AeadId;
}

// ---------------------------------------------------------------------------------------------
// Gateway side.

export interface ChunkedDecapsulateOptions extends ChunkLimits {
  /** Fills the response nonce (default crypto.getRandomValues). */
  randomBytes?: (n: number) => Uint8Array;
}

/** The gateway's sealed answer: the response nonce to send first, then the writer's chunks. */
export interface ChunkedResponseStart {
  readonly nonce: Uint8Array;
  readonly writer: ChunkWriter;
}

/**
 * Decapsulates a `message/ohttp-chunked-req` as it arrives (§4, §6.1). Feed it with `push` and
 * `end`; the header's key problems throw the RFC 9458 §5.3 errors as soon as the first 7 bytes are
 * in. Not reentrant: await each call before the next.
 */
export class ChunkedRequestDecapsulator {
  readonly #keys: Keyring;
  readonly #q = new ByteQueue();
  readonly #reader: ChunkReader;
  readonly #random: (n: number) => Uint8Array;
  #header: RequestHeader | undefined;
  #enc: Uint8Array | undefined;
  #secret: Uint8Array | undefined;
  #responded = false;

  constructor(keys: Keyring, opts: ChunkedDecapsulateOptions = {}) {
    this.#keys = keys;
    // Nt is 16 for every AEAD Veil implements; the reader is built before the header names one.
    this.#reader = new ChunkReader(this.#q, maxChunkBytes(opts), 16);
    this.#random = opts.randomBytes ?? ((n) => crypto.getRandomValues(new Uint8Array(n)));
  }

  /** The key id once the header is in. */
  get keyId(): number | undefined {
    return this.#header?.keyId;
  }

  /** The encapsulated KEM shared secret once the header is in (unique per request: RFC 9458 §6.5). */
  get enc(): Uint8Array | undefined {
    return this.#enc;
  }

  /** True once the header has been read and the HPKE context set up. */
  get started(): boolean {
    return this.#secret !== undefined || this.#responded;
  }

  /** Takes more of the message; resolves with the plaintext of each chunk it completes. */
  async push(bytes: Uint8Array): Promise<Uint8Array[]> {
    this.#q.push(bytes);
    if (this.#enc === undefined && !(await this.#readHeader())) return [];
    return this.#reader.drain();
  }

  /** The message ended: the final chunk's plaintext. Throws OHTTP_ERR_TRUNCATED if it never began. */
  async end(): Promise<Uint8Array> {
    if (this.#enc === undefined && !(await this.#readHeader())) {
      throw new ProtocolError("OHTTP_ERR_TRUNCATED", "chunked request ended inside its header");
    }
    return this.#reader.end();
  }

  /**
   * Starts the response (§6.2): derives its key from the request's context and a fresh nonce.
   * Single use; only after the header is in.
   */
  async respond(opts: { responseNonce?: Uint8Array } = {}): Promise<ChunkedResponseStart> {
    const h = this.#header;
    const secret = this.#secret;
    if (h === undefined || secret === undefined || this.#enc === undefined) {
      throw new ProtocolError("OHTTP_ERR_CONTEXT_USED", "no request context to respond with");
    }
    this.#secret = undefined;
    this.#responded = true;
    const n = responseNonceBytes(h.aeadId);
    const nonce = opts.responseNonce ?? this.#random(n);
    if (nonce.length !== n) throw new ProtocolError("INTERNAL_ERR", `response nonce must be ${n} bytes`);
    const salt = new Uint8Array(this.#enc.length + n);
    salt.set(this.#enc);
    salt.set(nonce, this.#enc.length);
    const { sealer } = await responseChunkAead(h.backend, h, secret, salt);
    return { nonce: exactCopy(nonce), writer: new ChunkWriter(sealer) };
  }

  /** Reads the header once it is all in (key problems as soon as 7 bytes are); false while more are needed. */
  async #readHeader(): Promise<boolean> {
    if (this.#q.length < HEADER_BYTES) return false;
    if (this.#header === undefined) {
      const peek = new Uint8Array(HEADER_BYTES);
      for (let i = 0; i < HEADER_BYTES; i++) peek[i] = this.#q.at(i);
      this.#header = readRequestHeader(this.#keys, peek);
    }
    const h = this.#header;
    if (this.#q.length < h.headerBytes) return false;
    const hdr = exactCopy(this.#q.take(HEADER_BYTES));
    const kemEnc = exactCopy(this.#q.take(h.headerBytes - HEADER_BYTES));
    try {
      // The backend's synchronous context where it has one (no promise, copy or ArrayBuffer per
      // chunk: what a gateway does most while a large body streams), else hpke-js's.
      const sync = setupRecipientSync(h, kemEnc, hdr, CHUNKED_REQUEST_LABEL);
      if (sync !== undefined) {
        this.#secret = sync.export(CHUNKED_RESPONSE_LABEL, responseNonceBytes(h.aeadId));
        this.#reader.start({ openSync: (ct, aad) => sync.open(ct, aad) });
      } else {
        const ctx = await setupRecipient(h, kemEnc, hdr, CHUNKED_REQUEST_LABEL);
        this.#secret = u8(await ctx.export(CHUNKED_RESPONSE_LABEL, responseNonceBytes(h.aeadId)));
        this.#reader.start({ open: async (ct, aad) => u8(await ctx.open(ct, aad)) });
      }
    } catch (e) {
      throw wrapError(e, "OHTTP_ERR_DECRYPT");
    }
    this.#enc = kemEnc;
    return true;
  }
}

// ---------------------------------------------------------------------------------------------
// Client side.

/** The client's chunked request: send `header`, then the writer's chunks; open the answer with `response`. */
export interface ChunkedRequest {
  /** key_id, kem_id, kdf_id, aead_id and enc: the first bytes of the message. */
  readonly header: Uint8Array;
  readonly writer: ChunkWriter;
  readonly response: ChunkedResponseDecapsulator;
}

export interface ChunkedRequestOptions extends EncapsulateRequestOptions, ChunkLimits {
  /** Plaintext bytes per request chunk sent (default CHUNK_BYTES, what every receiver accepts). */
  chunkBytes?: number;
}

/** Client side (§6.1): the HPKE sender context of a chunked request to the key of `config`. */
export async function encapsulateChunkedRequest(config: KeyConfig, opts: ChunkedRequestOptions = {}): Promise<ChunkedRequest> {
  const chunkBytes = opts.chunkBytes ?? CHUNK_BYTES;
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) throw new RangeError(`chunkBytes must be a positive integer, got ${chunkBytes}`);
  // On Node with a DHKEM, a synchronous node:crypto sender: each chunk sealed straight into the
  // framed output, without hpke-js's promise, nonce ArrayBuffer and ciphertext copies per chunk
  // (what a client does most while a large body streams). Elsewhere (browsers, X-Wing) hpke-js's.
  const s = await setupSenderPreferSync(config, opts, CHUNKED_REQUEST_LABEL);
  let secret: Uint8Array;
  try {
    const n = responseNonceBytes(s.aeadId);
    secret = "sync" in s ? s.sync.export(CHUNKED_RESPONSE_LABEL, n) : u8(await s.ctx.export(CHUNKED_RESPONSE_LABEL, n));
  } catch (e) {
    throw wrapError(e, "INTERNAL_ERR", "request encapsulation failed");
  }
  const header = new Uint8Array(s.hdr.length + s.enc.length);
  header.set(s.hdr);
  header.set(s.enc, s.hdr.length);
  const sealer: ChunkSealer =
    "sync" in s
      ? { sealInto: (pt, aad, out, offset) => s.sync.sealInto(pt, aad, out, offset), tagBytes: AEAD_INFO[s.aeadId].Nt }
      : { seal: async (pt, aad) => u8(await s.ctx.seal(pt, aad)) };
  const writer = new ChunkWriter(sealer, chunkBytes);
  return { header, writer, response: new ChunkedResponseDecapsulator(s, secret, maxChunkBytes(opts)) };
}

/**
 * Opens a `message/ohttp-chunked-res` as it arrives (§5, §6.2): the response nonce first, then the
 * chunks. Single use. Not reentrant: await each call before the next.
 */
export class ChunkedResponseDecapsulator {
  readonly #q = new ByteQueue();
  readonly #reader: ChunkReader;
  readonly #ids: SuiteIds;
  readonly #backend: HpkeBackend;
  readonly #enc: Uint8Array;
  #secret: Uint8Array | undefined;

  /** @internal made by encapsulateChunkedRequest */
  constructor(s: SuiteIds & { backend: HpkeBackend; enc: Uint8Array }, secret: Uint8Array, maxChunk: number) {
    this.#ids = { kemId: s.kemId, kdfId: s.kdfId, aeadId: s.aeadId };
    this.#backend = s.backend;
    this.#enc = s.enc;
    this.#secret = secret;
    this.#reader = new ChunkReader(this.#q, maxChunk, AEAD_INFO[s.aeadId].Nt);
  }

  /** Takes more of the response; resolves with the plaintext of each chunk it completes. */
  async push(bytes: Uint8Array): Promise<Uint8Array[]> {
    this.#q.push(bytes);
    if (this.#secret !== undefined && !(await this.#readNonce())) return [];
    return this.#reader.drain();
  }

  /** The response ended: the final chunk's plaintext. Throws OHTTP_ERR_TRUNCATED if it never began. */
  async end(): Promise<Uint8Array> {
    if (this.#secret !== undefined && !(await this.#readNonce())) {
      throw new ProtocolError("OHTTP_ERR_TRUNCATED", "chunked response ended inside its nonce");
    }
    return this.#reader.end();
  }

  async #readNonce(): Promise<boolean> {
    const n = responseNonceBytes(this.#ids.aeadId);
    if (this.#q.length < n) return false;
    const secret = this.#secret!;
    this.#secret = undefined;
    const nonce = this.#q.take(n);
    const salt = new Uint8Array(this.#enc.length + n);
    salt.set(this.#enc);
    salt.set(nonce, this.#enc.length);
    const { opener } = await responseChunkAead(this.#backend, this.#ids, secret, salt);
    this.#reader.start(opener);
    return true;
  }
}
