// Binary HTTP responses (RFC 9292 §3.1, §3.2, §3.5).
//
//   Known-Length Response {
//     Framing Indicator (i) = 1,
//     Known-Length Informational Response (..) ...,
//     Final Response Control Data (..),
//     Known-Length Field Section (..),
//     Known-Length Content (..),
//     Known-Length Field Section (..),
//     Padding (..),
//   }
//
//   Known-Length Informational Response {
//     Informational Response Control Data (..),
//     Known-Length Field Section (..),
//   }
//
//   Indeterminate-Length Response  {
//     Framing Indicator (i) = 3,
//     Indeterminate-Length Informational Response (..) ...,
//     Final Response Control Data (..),
//     Indeterminate-Length Field Section (..),
//     Indeterminate-Length Content (..),
//     Indeterminate-Length Field Section (..),
//     Padding (..),
//   }
//
//   Indeterminate-Length Informational Response {
//     Informational Response Control Data (..),
//     Indeterminate-Length Field Section (..),
//   }
//
// RFC 9292 §3.5, "Response Control Data", and §3.5.1, "Informational Status Codes":
//   Final Response Control Data {
//     Status Code (i) = 200..599,
//   }
//   Informational Response Control Data {
//     Status Code (i) = 100..199,
//   }
//   "This pattern repeats until the control data contains a final status code (200 to 599
//   inclusive)."

import { ByteReader } from "../bytes.js";
import { ProtocolError } from "../errors.js";
import type { Field } from "./fields.js";
import { resolveLimits, type BhttpLimits } from "./limits.js";
import type { EncodeOptions } from "./request.js";
import { FRAMING, MessageDecoder, MessageEncoder } from "./sections.js";

export interface BhttpInformational {
  /** 100..199 */
  status: number;
  headers: Field[];
}

export interface BhttpResponse {
  /** Informational (1xx) responses, in order, before the final one. */
  informational: BhttpInformational[];
  /** 200..599 */
  status: number;
  headers: Field[];
  body: Uint8Array;
  trailers: Field[];
}

function invalid(detail: string): ProtocolError {
  return new ProtocolError("BHTTP_ERR_FORMAT", detail);
}

function isInformational(status: number): boolean {
  return Number.isInteger(status) && status >= 100 && status <= 199;
}

function isFinal(status: number): boolean {
  return Number.isInteger(status) && status >= 200 && status <= 599;
}

/** Encodes a known-length response (framing indicator 1). */
export function encodeResponse(r: BhttpResponse, opts: EncodeOptions = {}): Uint8Array {
  if (!isFinal(r.status)) throw invalid(`final status ${r.status} is outside 200..599`);
  const e = new MessageEncoder();
  e.varint(FRAMING.KNOWN_LENGTH_RESPONSE);
  for (const info of r.informational) {
    if (!isInformational(info.status)) throw invalid(`informational status ${info.status} is outside 100..199`);
    e.varint(info.status);
    e.fieldSection(info.headers, "informational header section");
  }
  e.varint(r.status);
  e.tail(r.headers, r.body, r.trailers, opts.truncate === true);
  e.padding(opts.padding);
  return e.finish();
}

/** The framing indicator of a response: true for indeterminate-length. */
export function readResponseFraming(r: ByteReader): boolean {
  const framing = r.varint("framing indicator");
  if (framing === FRAMING.KNOWN_LENGTH_REQUEST || framing === FRAMING.INDETERMINATE_LENGTH_REQUEST) {
    throw invalid(`framing indicator ${framing} is a request, not a response`);
  }
  if (framing !== FRAMING.KNOWN_LENGTH_RESPONSE && framing !== FRAMING.INDETERMINATE_LENGTH_RESPONSE) {
    throw invalid(`framing indicator ${framing} is not defined`);
  }
  return framing === FRAMING.INDETERMINATE_LENGTH_RESPONSE;
}

/** Informational responses (§3.5) up to the final status code. */
export function readResponseStatus(d: MessageDecoder): { informational: BhttpInformational[]; status: number } {
  const informational: BhttpInformational[] = [];
  for (;;) {
    const status = d.r.varint("status code");
    if (isFinal(status)) return { informational, status };
    if (!isInformational(status)) throw invalid(`status ${status} is neither informational (1xx) nor final (200..599)`);
    if (informational.length >= d.limits.maxInformational) {
      throw new ProtocolError("BHTTP_ERR_TOO_LARGE", `more than maxInformational ${d.limits.maxInformational} informational responses`);
    }
    // Not optional: a final status must follow, so ending here is a truncated message.
    informational.push({ status, headers: d.fieldSection("informational header section") });
  }
}

/** Encodes the start of an indeterminate-length response (framing indicator 3): status and header section. */
export function encodeResponseHead(r: Pick<BhttpResponse, "status" | "headers">): Uint8Array {
  if (!isFinal(r.status)) throw invalid(`final status ${r.status} is outside 200..599`);
  const e = new MessageEncoder();
  e.varint(FRAMING.INDETERMINATE_LENGTH_RESPONSE);
  e.varint(r.status);
  e.indeterminateFieldSection(r.headers, "header section");
  return e.finish();
}

/** Decodes a known- or indeterminate-length response, truncated forms included (§3.8). */
export function decodeResponse(b: Uint8Array, limits?: Partial<BhttpLimits>): BhttpResponse {
  const L = resolveLimits(limits);
  if (b.length > L.maxMessageBytes) {
    throw new ProtocolError("BHTTP_ERR_TOO_LARGE", `message of ${b.length} bytes exceeds maxMessageBytes ${L.maxMessageBytes}`);
  }
  const r = new ByteReader(b, "BHTTP_ERR_TRUNCATED", "BHTTP_ERR_FORMAT");
  const d = new MessageDecoder(b, r, L, readResponseFraming(r));
  const { informational, status } = readResponseStatus(d);
  const headers = d.ended ? [] : d.fieldSection("header section");
  const body = d.ended ? new Uint8Array(0) : d.content();
  const trailers = d.ended ? [] : d.fieldSection("trailer section");
  d.padding();
  return { informational, status, headers, body, trailers };
}
