// Browser entry of the client library (bundled by client/build-browser.ts). The same API as
// client/index.ts; a bundle built as an IIFE also exposes it as `globalThis.veil`.
export * from "./index.js";
