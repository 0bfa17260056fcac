// Field lines of Binary HTTP (RFC 9292 §3.6) and the character rules they must follow.
//
// RFC 9292 §3.6, "Header and Trailer Field Lines":
//
//   Field Line {
//     Name Length (i) = 1..,
//     Name (..),
//     Value Length (i),
//     Value (..),
//   }
//
//   "For field names, byte values that are not permitted in an HTTP field name cause the message
//   to be invalid; see Section 5.1 of [HTTP] ... A recipient MUST treat a message that contains
//   field values that would cause an HTTP/2 message to be malformed according to Section 8.2.1 of
//   [H2] as invalid."
//   "Messages are invalid if they contain fields named ":method", ":scheme", ":authority",
//   ":path", or ":status". Other pseudo-fields that are defined by protocol extensions MAY be
//   included"
//
// Field values are strings that hold the octets as Latin-1 (one char per byte, 0x00-0xff), since
// HTTP field values are octets, not text.

import { ProtocolError } from "../errors.js";

export type Field = [name: string, value: string];

/** RFC 9110 §5.6.2 tchar. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") {
  TCHAR[c.charCodeAt(0)] = 1;
}

export function isTchar(c: number): boolean {
  return TCHAR[c] === 1;
}

/** RFC 9110 §5.6.2: token = 1*tchar. */
export function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) if (TCHAR[s.charCodeAt(i)] !== 1) return false;
  return true;
}

function fieldError(detail: string): ProtocolError {
  return new ProtocolError("BHTTP_ERR_FORMAT", detail);
}

/**
 * Checks a decoded field name (bytes) and returns it lowercased. Uppercase is accepted here: RFC
 * 9292 §3.6 invalidates only bytes that RFC 9110 §5.1 forbids in a name, and RFC 9110 names are
 * case-insensitive tokens. Lowercasing means no later check can be dodged with "Authorization".
 */
export function decodeFieldName(b: Uint8Array, section: string): string {
  if (b[0] === 0x3a) {
    // No pseudo-field extension is supported; HTTP/2 §8.3 treats unknown ones as malformed.
    throw fieldError(`${section}: pseudo-field names (starting with ':') are not allowed`);
  }
  let s = "";
  for (let i = 0; i < b.length; i++) {
    let c = b[i]!;
    if (TCHAR[c] !== 1) throw fieldError(`${section}: field name is not an HTTP token`);
    if (c >= 0x41 && c <= 0x5a) c += 0x20;
    s += String.fromCharCode(c);
  }
  return s;
}

/**
 * A field value must be RFC 9110 §5.5 field-content: no NUL, CR or LF (HTTP/2 §8.2.1, which RFC
 * 9292 §3.6 makes binding), no leading or trailing SP/HTAB (also HTTP/2 §8.2.1), and no other
 * control characters. RFC 9110 calls those invalid too but lets recipients keep them; we reject
 * them because the gateway forwards these values and an HTTP client library would refuse them.
 */
function checkValueCodes(get: (i: number) => number, n: number, section: string): void {
  if (n === 0) return;
  const first = get(0);
  const last = get(n - 1);
  if (first === 0x20 || first === 0x09 || last === 0x20 || last === 0x09) {
    throw fieldError(`${section}: field value starts or ends with whitespace`);
  }
  for (let i = 0; i < n; i++) {
    const c = get(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f || c > 0xff) {
      throw fieldError(
        c === 0x00 || c === 0x0a || c === 0x0d
          ? `${section}: field value contains NUL, CR or LF`
          : `${section}: field value contains a control character`,
      );
    }
  }
}

export function decodeFieldValue(b: Uint8Array, section: string): string {
  checkValueCodes((i) => b[i]!, b.length, section);
  return latin1Decode(b);
}

/** Bytes as a string of char codes 0x00-0xff. */
export function latin1Decode(b: Uint8Array): string {
  // apply() takes the typed array as its argument list directly; a spread would iterate it first
  // (about 8x slower for the short strings of a request's control data and fields).
  if (b.length <= 0x2000) return String.fromCharCode.apply(null, b as unknown as number[]);
  let s = "";
  for (let i = 0; i < b.length; i += 0x2000) {
    s += String.fromCharCode.apply(null, b.subarray(i, i + 0x2000) as unknown as number[]);
  }
  return s;
}

/** The inverse of latin1Decode; a char above 0xff cannot be an octet and is rejected. */
export function latin1Encode(s: string, what: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw fieldError(`${what}: character U+${c.toString(16)} is not an octet`);
    out[i] = c;
  }
  return out;
}

/**
 * Encoder-side check of a field line. Names must already be lowercase: that is what HTTP/2 and
 * HTTP/3 (whose rules RFC 9292 §1 builds on) require on the wire, and what our decoder returns.
 */
export function checkFieldForEncoding(field: Field, section: string): void {
  const [name, value] = field;
  if (name.startsWith(":")) throw fieldError(`${section}: pseudo-field names are not allowed`);
  if (!isToken(name)) throw fieldError(`${section}: field name "${name}" is not an HTTP token`);
  if (name !== name.toLowerCase()) throw fieldError(`${section}: field name "${name}" is not lowercase`);
  checkValueCodes((i) => value.charCodeAt(i), value.length, section);
}

/** The first value of the field `name` (compared lowercase), or undefined if absent. */
export function headerValue(fields: readonly Field[], name: string): string | undefined {
  const want = name.toLowerCase();
  for (const [n, v] of fields) if (n === want) return v;
  return undefined;
}

/** Every value of the field `name` (compared lowercase), in message order. */
export function headerValues(fields: readonly Field[], name: string): string[] {
  const want = name.toLowerCase();
  const out: string[] = [];
  for (const [n, v] of fields) if (n === want) out.push(v);
  return out;
}
