// Veil's client library: a fetch that sends requests through an Oblivious HTTP relay to the
// gateway (RFC 9458), with Privacy Pass tokens (RFC 9577/9578) when the gateway asks for them.
// Isomorphic: Node and browsers. On Node, core/ohttp picks its node:crypto HPKE primitives by
// itself (core/ohttp/backend.ts, a dynamic import a browser bundle never follows); in browsers the
// stock hpke-js primitives on WebCrypto are used.

export { createObliviousFetch, OBLIVIOUS_FETCH_DEFAULTS } from "./oblivious-fetch.js";
export type { ObliviousFetch, ObliviousFetchOptions, ObliviousFetchStats } from "./oblivious-fetch.js";
export { createTokenSource, TOKEN_SOURCE_DEFAULTS } from "./token-source.js";
export type { TokenSource, TokenSourceOptions, TokenSourceStats } from "./token-source.js";
export { KEY_SOURCE_DEFAULTS } from "./key-source.js";
export type { LoadedKeys } from "./key-source.js";
export type { FetchLike } from "./options.js";
export { ProtocolError, isProtocolError, ERRORS, type ErrorCode } from "../core/errors.js";

import { hpkeBackend } from "../core/ohttp/index.js";

/** The HPKE primitives in use: "node:crypto" on Node, "stock hpke-js" (WebCrypto) in browsers. */
export async function cryptoBackendName(): Promise<string> {
  return (await hpkeBackend()).name;
}
