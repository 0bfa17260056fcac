// DAP (draft-ietf-ppm-dap) wire pieces the gateway and the clients need: media types of DAP-09 and
// DAP-18, the DAP-18 Report encoder and the strict walk over an upload's Report framing.
export * from "./upload.js";
