// Oblivious HTTP (RFC 9458): key configurations and encapsulation on hpke-js.
// Browser-safe: node:crypto primitives live in fast-node.ts, loaded only on Node (see backend.ts).

export { KEM, KDF, AEAD, MEDIA_TYPES, KEM_INFO, KDF_INFO, AEAD_INFO, isKemId, isKdfId, isAeadId } from "./constants.js";
export type { KemId, KdfId, AeadId } from "./constants.js";
export { encodeKeyConfig, decodeKeyConfig, encodeKeyConfigs, decodeKeyConfigs } from "./key-config.js";
export type { KeyConfig, SymmetricSuite } from "./key-config.js";
export { DEFAULT_SYMMETRIC, generateGatewayKey, importGatewayKey, exportPublic } from "./gateway-key.js";
export type { GatewayKey, Keyring, KeyOptions } from "./gateway-key.js";
export { decapsulateRequest, encapsulateRequest } from "./encapsulation.js";
export type {
  ServerResponseContext,
  ClientResponseContext,
  DecapsulateRequestDeps,
  EncapsulateRequestOptions,
} from "./encapsulation.js";
export { setHpkeBackend, hpkeBackend } from "./backend.js";
export type { HpkeBackend, KemKeyPair, ResponseCrypto } from "./backend.js";
export { stockHpkeBackend } from "./stock.js";
export { CHUNK_BYTES, ChunkWriter, ChunkedRequestDecapsulator, ChunkedResponseDecapsulator, encapsulateChunkedRequest } from "./chunked.js";
export type { ChunkLimits, ChunkedDecapsulateOptions, ChunkedRequest, ChunkedRequestOptions, ChunkedResponseStart } from "./chunked.js";
