// Which primitives drive hpke-js: the HPKE "backend".
//
// hpke-js (`@hpke/core` CipherSuite) is the HPKE engine everywhere. Its stock primitives go through
// WebCrypto (about 130 µs a call on the project's machines, some twenty calls per decapsulation)
// or pure JavaScript; on Node, `fast-node.ts` gives it synchronous node:crypto primitives instead.
//
// Selection: `setHpkeBackend()` wins; otherwise the first use picks the node:crypto backend when
// running on Node and the stock one elsewhere. fast-node.ts is loaded by a dynamic import whose
// specifier is not a literal, so a browser bundle (esbuild) never pulls in node:crypto.

import type { CipherSuite } from "@hpke/core";
import type { AeadId, KdfId, KemId } from "./constants.js";
import { stockHpkeBackend } from "./stock.js";

/** A KEM key pair in the backend's own representation, with the serialized public key. */
export interface KemKeyPair {
  /** What hpke-js receives as `recipientKey` (gateway) or `ekm` (client's ephemeral key). */
  readonly pair: CryptoKeyPair;
  readonly publicKey: Uint8Array;
}

/** A one-shot request open, once the suite is chosen: skR, enc, info, aad, ct and what to export. */
export type OpenRequestArgs = [
  recipientKey: CryptoKeyPair,
  enc: Uint8Array,
  info: Uint8Array,
  aad: Uint8Array,
  ct: Uint8Array,
  exporterContext: Uint8Array,
  length: number,
];

/** What a one-shot request open gives: the request's plaintext and the exported secret. */
export interface OpenedRequest {
  plaintext: Uint8Array;
  exported: Uint8Array;
}

export interface HpkeBackend {
  readonly name: string;
  /** The hpke-js cipher suite built from this backend's primitives (cached per combination). */
  suite(kemId: KemId, kdfId: KdfId, aeadId: AeadId): CipherSuite;
  /** Deserializes a public key (RFC 9180 DeserializePublicKey); throws on an invalid key. */
  importPublicKey(kemId: KemId, publicKey: Uint8Array): Promise<CryptoKey>;
  /** Imports a private key (RFC 9180 DeserializePrivateKey) and derives its public key. */
  importPrivateKey(kemId: KemId, privateKey: Uint8Array): Promise<KemKeyPair>;
  /** A fresh key pair, serialized. */
  generateKeyPair(kemId: KemId): Promise<{ privateKey: Uint8Array; publicKey: Uint8Array }>;
  /**
   * Optional synchronous RFC 9458 §4.4 response AEAD: `Seal`/`Open` under
   * key = Expand(Extract(salt, secret), "key", Nk), nonce = Expand(.., "nonce", Nn).
   * Without it the suite's (async) KDF and AEAD are used.
   */
  readonly responseCrypto?: ResponseCrypto;
  /**
   * Optional synchronous chunked OHTTP response AEAD (draft-ietf-ohai-chunked-ohttp §6.2): the
   * key and nonce of RFC 9458 §4.4 from `secret` and `salt`, then one chunk after another under
   * nonce XOR the chunk counter. Returns undefined for an AEAD it does not do (the caller then uses
   * the suite's hpke-js AEAD).
   */
  readonly responseChunkAead?: (kdfId: KdfId, aeadId: AeadId, secret: Uint8Array, salt: Uint8Array) => ChunkAeadSync | undefined;
  /**
   * Optional synchronous RFC 9180 SetupBaseR(enc, skR, info) + Open(aad, ct) (sequence number 0) +
   * Export(exporterContext, length): the whole of an RFC 9458 §4.3 decapsulation. Returns
   * undefined for a suite it does not do (the caller then uses the suite's hpke-js context);
   * throws if enc is invalid or ct does not authenticate.
   */
  readonly openRequest?: (kemId: KemId, kdfId: KdfId, aeadId: AeadId, ...args: OpenRequestArgs) => OpenedRequest | undefined;
  /**
   * Optional synchronous RFC 9180 SetupBaseR(enc, skR, info): a context that opens one message
   * after another (chunked OHTTP's request chunks). Returns undefined for a suite it does not do
   * (the caller then uses the suite's hpke-js context); throws if enc is invalid.
   */
  readonly setupRecipientSync?: (kemId: KemId, kdfId: KdfId, aeadId: AeadId, recipientKey: CryptoKeyPair, enc: Uint8Array, info: Uint8Array) => RecipientContextSync | undefined;
  /**
   * Optional synchronous RFC 9180 SetupBaseS(pkR, info): a context that seals one message after
   * another (a client's chunked request chunks). `recipientPublicKey` comes from this backend's
   * importPublicKey; `ekm` is the ephemeral key for test vectors (a pair from this backend's
   * importPrivateKey, or RFC 9180 DeriveKeyPair input), undefined for a fresh one. Returns
   * undefined for a suite it does not do (the caller then uses the suite's hpke-js context).
   */
  readonly setupSenderSync?: (
    kemId: KemId,
    kdfId: KdfId,
    aeadId: AeadId,
    recipientPublicKey: CryptoKey,
    info: Uint8Array,
    ekm: CryptoKeyPair | Uint8Array | undefined,
  ) => SenderContextSync | undefined;
}

/** Messages sealed or opened one after another under one key, each with the next nonce of the sequence. */
export interface ChunkAeadSync {
  /** Seals the next message into out[offset, offset + pt.length + Nt) (ciphertext, then tag); returns the end offset. */
  sealInto(pt: Uint8Array, aad: Uint8Array, out: Uint8Array, offset: number): number;
  /** Opens the next message; throws if it does not authenticate (the sequence then stays where it was). */
  open(ct: Uint8Array, aad: Uint8Array): Uint8Array;
}

/** A synchronous HPKE recipient context (RFC 9180 §5.2 Open, §5.3 Export). */
export interface RecipientContextSync {
  /** Opens the next message (sequence numbers 0, 1, ...); throws if it does not authenticate. */
  open(ct: Uint8Array, aad: Uint8Array): Uint8Array;
  export(exporterContext: Uint8Array, length: number): Uint8Array;
}

/** A synchronous HPKE sender context (RFC 9180 §5.2 Seal, §5.3 Export). */
export interface SenderContextSync {
  /** The encapsulated KEM shared secret (Nenc bytes). */
  readonly enc: Uint8Array;
  /**
   * Seals the next message (sequence numbers 0, 1, ...) into out[offset, offset + pt.length + Nt):
   * the ciphertext then the tag, written where the caller frames it. Returns the end offset.
   */
  sealInto(pt: Uint8Array, aad: Uint8Array, out: Uint8Array, offset: number): number;
  export(exporterContext: Uint8Array, length: number): Uint8Array;
}

export interface ResponseCrypto {
  seal(kdfId: KdfId, aeadId: AeadId, secret: Uint8Array, salt: Uint8Array, plaintext: Uint8Array): Uint8Array;
  /** Throws on authentication failure. */
  open(kdfId: KdfId, aeadId: AeadId, secret: Uint8Array, salt: Uint8Array, ciphertext: Uint8Array): Uint8Array;
}

let selected: HpkeBackend | undefined;
let loading: Promise<HpkeBackend> | undefined;

/** Overrides the automatic choice (undefined restores it). Keys keep the backend that made them. */
export function setHpkeBackend(backend: HpkeBackend | undefined): void {
  selected = backend;
  loading = undefined;
}

function onNode(): boolean {
  const p = (globalThis as { process?: { versions?: { node?: string } } }).process;
  return typeof p?.versions?.node === "string";
}

// A parameter, not a literal: bundlers only follow `import("literal")`.
function importModule(specifier: string): Promise<unknown> {
  return import(specifier);
}

async function loadDefault(): Promise<HpkeBackend> {
  if (!onNode()) return stockHpkeBackend;
  const m = (await importModule("./fast-node.js")) as { nodeHpkeBackend: HpkeBackend };
  return m.nodeHpkeBackend;
}

/** The backend in use (resolved once; later calls return without a promise hop). */
export function hpkeBackend(): HpkeBackend | Promise<HpkeBackend> {
  if (selected !== undefined) return selected;
  loading ??= loadDefault().then((b) => {
    selected ??= b;
    return selected;
  });
  return loading;
}
