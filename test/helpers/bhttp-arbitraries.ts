// Arbitraries for Binary HTTP messages (RFC 9292), and a test-only indeterminate-length encoder,
// shared by the codec and stream properties.

import fc from "fast-check";
import { ByteWriter } from "../../core/bytes.js";
import type { BhttpInformational, BhttpRequest, BhttpResponse, Field } from "../../core/bhttp/index.js";

// --- arbitraries ----------------------------------------------------------------------------

/** Lowercase tokens (RFC 9110 tchar), as the decoder returns names. */
export const fieldName = fc.stringMatching(/^[!#$%&'*+\-.^_`|~0-9a-z]{1,16}$/);
/** Latin-1 field-content: no CTLs except inner HTAB, no leading/trailing whitespace. */
export const fieldValue = fc.stringMatching(/^([\x21-\x7e\x80-\xff]([\t\x20-\x7e\x80-\xff]{0,24}[\x21-\x7e\x80-\xff])?)?$/);
export const field: fc.Arbitrary<Field> = fc.tuple(fieldName, fieldValue);
export const fields = fc.array(field, { maxLength: 6 });
export const body = fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ maxLength: 300 }));

export const method = fc.oneof(
  fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"),
  fc.stringMatching(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}$/).filter((m) => m !== "CONNECT"),
);
export const request: fc.Arbitrary<BhttpRequest> = fc.record({
  method,
  scheme: fc.oneof(fc.constantFrom("https", "http"), fc.stringMatching(/^[a-z][a-z0-9+.-]{0,8}$/)),
  authority: fc.stringMatching(/^[A-Za-z0-9\-._~%!$&'()*+,;=:[\]]{0,24}$/),
  path: fc.stringMatching(/^\/[\x21-\x7e]{0,40}$/),
  headers: fields,
  body,
  trailers: fields,
});

export const informational: fc.Arbitrary<BhttpInformational> = fc.record({
  status: fc.integer({ min: 100, max: 199 }),
  headers: fields,
});
export const response: fc.Arbitrary<BhttpResponse> = fc.record({
  informational: fc.array(informational, { maxLength: 3 }),
  status: fc.integer({ min: 200, max: 599 }),
  headers: fields,
  body,
  trailers: fields,
});

export const encodeOptions = fc.record({ padding: fc.nat(16), truncate: fc.boolean() });

// --- a test-only indeterminate-length encoder (the library encodes known-length only) --------

function writeLines(w: ByteWriter, fs: readonly Field[]): void {
  const latin1 = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
  for (const [n, v] of fs) w.varintBytes(latin1(n)).varintBytes(latin1(v));
}

/** RFC 9292 §3.2 tail: header lines + 0, content in chunks + 0, trailer lines + 0, then padding. */
function writeIndeterminateTail(
  w: ByteWriter,
  m: { headers: Field[]; body: Uint8Array; trailers: Field[] },
  chunk: number,
  truncate: boolean,
  padding: number,
): void {
  let parts = 3;
  if (truncate && m.trailers.length === 0) parts = m.body.length === 0 ? (m.headers.length === 0 ? 0 : 1) : 2;
  if (parts >= 1) {
    writeLines(w, m.headers);
    w.varint(0);
  }
  if (parts >= 2) {
    for (let o = 0; o < m.body.length; o += chunk) w.varintBytes(m.body.subarray(o, o + chunk));
    w.varint(0);
  }
  if (parts >= 3) {
    writeLines(w, m.trailers);
    w.varint(0);
  }
  w.zeros(padding);
}

export function encodeIndeterminateRequest(r: BhttpRequest, chunk: number, truncate: boolean, padding: number): Uint8Array {
  const w = new ByteWriter().varint(2);
  for (const s of [r.method, r.scheme, r.authority, r.path]) w.varintBytes(Uint8Array.from(s, (c) => c.charCodeAt(0)));
  writeIndeterminateTail(w, r, chunk, truncate, padding);
  return w.finish().slice();
}

export function encodeIndeterminateResponse(r: BhttpResponse, chunk: number, truncate: boolean, padding: number): Uint8Array {
  const w = new ByteWriter().varint(3);
  for (const i of r.informational) {
    w.varint(i.status);
    writeLines(w, i.headers);
    w.varint(0);
  }
  w.varint(r.status);
  writeIndeterminateTail(w, r, chunk, truncate, padding);
  return w.finish().slice();
}

