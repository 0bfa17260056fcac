// Veil's protocol core as a library: bytes, the error catalogue and problem details, Binary HTTP
// (RFC 9292), Oblivious HTTP (RFC 9458), Privacy Pass wire formats (RFC 9577/9578) and the DAP
// upload framing (draft-ietf-ppm-dap-09 and -18). No I/O;
// runs in browsers (node:crypto speed-ups load only on Node).
export * from "./bytes.js";
export * from "./errors.js";
export * from "./problem.js";
export * from "./http-fields.js";
export * from "./secret.js";
export * from "./bhttp/index.js";
export * from "./ohttp/index.js";
// Both protocols name their media types MEDIA_TYPES: the Privacy Pass ones are PRIVACY_PASS_MEDIA_TYPES here.
export * from "./privacypass/index.js";
export * from "./dap/index.js";
export { MEDIA_TYPES } from "./ohttp/index.js";
export { MEDIA_TYPES as PRIVACY_PASS_MEDIA_TYPES } from "./privacypass/index.js";
