// Binary HTTP requests (RFC 9292 §3.1, §3.2, §3.4).
//
//   Known-Length Request {
//     Framing Indicator (i) = 0,
//     Request Control Data (..),
//     Known-Length Field Section (..),
//     Known-Length Content (..),
//     Known-Length Field Section (..),
//     Padding (..),
//   }
//
//   Indeterminate-Length Request  {
//     Framing Indicator (i) = 2,
//     Request Control Data (..),
//     Indeterminate-Length Field Section (..),
//     Indeterminate-Length Content (..),
//     Indeterminate-Length Field Section (..),
//     Padding (..),
//   }
//
// RFC 9292 §3.4, "Request Control Data":
//   Request Control Data {
//     Method Length (i),
//     Method (..),
//     Scheme Length (i),
//     Scheme (..),
//     Authority Length (i),
//     Authority (..),
//     Path Length (i),
//     Path (..),
//   }
//   "The values of these fields follow the rules in HTTP/2 (Section 8.3.1 of [H2]) that apply to
//   the ":method", ":scheme", ":authority", and ":path" pseudo-header fields, respectively.
//   However, where the ":authority" pseudo-header field might be omitted in HTTP/2, a zero-length
//   value is encoded instead."

import { ByteReader } from "../bytes.js";
import { ProtocolError } from "../errors.js";
import { isToken, latin1Decode, latin1Encode, type Field } from "./fields.js";
import { resolveLimits, type BhttpLimits } from "./limits.js";
import { FRAMING, MessageDecoder, MessageEncoder } from "./sections.js";

export interface BhttpRequest {
  method: string;
  scheme: string;
  /** Empty when the request had no authority (§3.4). */
  authority: string;
  /** Path and query ("/a/b?c"), or "*" for a server-wide OPTIONS request. */
  path: string;
  headers: Field[];
  body: Uint8Array;
  trailers: Field[];
}

export interface EncodeOptions {
  /** Zero bytes appended after the message (§3.8). */
  padding?: number;
  /** Omit the trailing empty sections (trailers, then content, then headers), §3.8 and §3.1. */
  truncate?: boolean;
}

/** RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ). */
const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*$/;
/** RFC 3986 §3.2 authority characters: unreserved, pct-encoded, sub-delims, ":", "@", "[", "]". */
const AUTHORITY = /^[A-Za-z0-9\-._~%!$&'()*+,;=:@[\]]*$/;
/** Visible ASCII (VCHAR): a request target has no spaces or control characters. */
const VISIBLE = /^[\x21-\x7e]*$/;

function invalid(detail: string): ProtocolError {
  return new ProtocolError("BHTTP_ERR_FORMAT", detail);
}

/**
 * HTTP/2 §8.3.1 rules for the control data, as RFC 9292 §3.4 requires. CONNECT (HTTP/2 §8.5)
 * omits scheme and path, which RFC 9292 encodes as empty values.
 */
function checkControlData(method: string, scheme: string, authority: string, path: string): void {
  if (!isToken(method)) throw invalid("request control data: method is not an HTTP token");
  const connect = method === "CONNECT";
  if (scheme === "") {
    if (!connect) throw invalid("request control data: scheme is empty");
  } else if (!SCHEME.test(scheme)) {
    throw invalid("request control data: scheme is not a URI scheme");
  }
  if (!AUTHORITY.test(authority)) throw invalid("request control data: authority has characters a URI authority cannot have");
  const web = /^https?$/i.test(scheme);
  // HTTP/2 §8.3.1: ":authority MUST NOT include the deprecated userinfo subcomponent for "http"
  // or "https" schemed URIs".
  if (web && authority.includes("@")) throw invalid("request control data: authority includes userinfo");
  if (connect && authority === "") throw invalid("request control data: CONNECT needs an authority");
  if (!VISIBLE.test(path)) throw invalid("request control data: path is not visible ASCII");
  if (path === "") {
    if (!connect) throw invalid("request control data: path is empty");
  } else if (web && path !== "*" && !path.startsWith("/")) {
    // HTTP/2 §8.3.1: origin-form ("/...") or "*" for OPTIONS; never an absolute URI here.
    throw invalid("request control data: path must start with '/' or be '*'");
  }
  if (path === "*" && method !== "OPTIONS") throw invalid("request control data: path '*' is only for OPTIONS");
}

/** Encodes a known-length request (framing indicator 0). */
export function encodeRequest(r: BhttpRequest, opts: EncodeOptions = {}): Uint8Array {
  checkControlData(r.method, r.scheme, r.authority, r.path);
  const e = new MessageEncoder();
  e.varint(FRAMING.KNOWN_LENGTH_REQUEST);
  e.controlValue(latin1Encode(r.method, "method"));
  e.controlValue(latin1Encode(r.scheme, "scheme"));
  e.controlValue(latin1Encode(r.authority, "authority"));
  e.controlValue(latin1Encode(r.path, "path"));
  e.tail(r.headers, r.body, r.trailers, opts.truncate === true);
  e.padding(opts.padding);
  return e.finish();
}

/** Request Control Data (§3.4), checked by the HTTP/2 rules. */
export function readRequestControlData(d: MessageDecoder): { method: string; scheme: string; authority: string; path: string } {
  const method = latin1Decode(d.controlValue("method"));
  const scheme = latin1Decode(d.controlValue("scheme"));
  const authority = latin1Decode(d.controlValue("authority"));
  const path = latin1Decode(d.controlValue("path"));
  checkControlData(method, scheme, authority, path);
  return { method, scheme, authority, path };
}

/** The framing indicator of a request: true for indeterminate-length. */
export function readRequestFraming(r: ByteReader): boolean {
  const framing = r.varint("framing indicator");
  if (framing === FRAMING.KNOWN_LENGTH_RESPONSE || framing === FRAMING.INDETERMINATE_LENGTH_RESPONSE) {
    throw invalid(`framing indicator ${framing} is a response, not a request`);
  }
  if (framing !== FRAMING.KNOWN_LENGTH_REQUEST && framing !== FRAMING.INDETERMINATE_LENGTH_REQUEST) {
    throw invalid(`framing indicator ${framing} is not defined`);
  }
  return framing === FRAMING.INDETERMINATE_LENGTH_REQUEST;
}

/** Encodes the start of an indeterminate-length request (framing indicator 2): control data and header section. */
export function encodeRequestHead(r: Pick<BhttpRequest, "method" | "scheme" | "authority" | "path" | "headers">): Uint8Array {
  checkControlData(r.method, r.scheme, r.authority, r.path);
  const e = new MessageEncoder();
  e.varint(FRAMING.INDETERMINATE_LENGTH_REQUEST);
  e.controlValue(latin1Encode(r.method, "method"));
  e.controlValue(latin1Encode(r.scheme, "scheme"));
  e.controlValue(latin1Encode(r.authority, "authority"));
  e.controlValue(latin1Encode(r.path, "path"));
  e.indeterminateFieldSection(r.headers, "header section");
  return e.finish();
}

/** Decodes a known- or indeterminate-length request, truncated forms included (§3.8). */
export function decodeRequest(b: Uint8Array, limits?: Partial<BhttpLimits>): BhttpRequest {
  const L = resolveLimits(limits);
  if (b.length > L.maxMessageBytes) {
    throw new ProtocolError("BHTTP_ERR_TOO_LARGE", `message of ${b.length} bytes exceeds maxMessageBytes ${L.maxMessageBytes}`);
  }
  const r = new ByteReader(b, "BHTTP_ERR_TRUNCATED", "BHTTP_ERR_FORMAT");
  const d = new MessageDecoder(b, r, L, readRequestFraming(r));
  const { method, scheme, authority, path } = readRequestControlData(d);
  const headers = d.ended ? [] : d.fieldSection("header section");
  const body = d.ended ? new Uint8Array(0) : d.content();
  const trailers = d.ended ? [] : d.fieldSection("trailer section");
  d.padding();
  return { method, scheme, authority, path, headers, body, trailers };
}
