// Binary Representation of HTTP Messages (RFC 9292, "message/bhttp"): encode (known-length) and
// decode (known- and indeterminate-length, truncated and padded forms). No I/O, no crypto; runs in
// browsers.

export { DEFAULT_BHTTP_LIMITS, type BhttpLimits } from "./limits.js";
export { headerValue, headerValues, type Field } from "./fields.js";
export { FRAMING } from "./sections.js";
export { decodeRequest, encodeRequest, type BhttpRequest, type EncodeOptions } from "./request.js";
export { decodeResponse, encodeResponse, type BhttpInformational, type BhttpResponse } from "./response.js";

/** The media type of a Binary HTTP message (RFC 9292 §6). */
export const BHTTP_MEDIA_TYPE = "message/bhttp";
export { BhttpRequestStreamDecoder, BhttpResponseStreamDecoder, BhttpStreamEncoder, padding, padToMultiple } from "./stream.js";
export type { BhttpRequestHead, BhttpResponseHead, BhttpStreamEvents } from "./stream.js";
