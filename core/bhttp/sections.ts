// The parts shared by requests and responses: framing, field sections, content, padding and
// truncation (RFC 9292 §3.1-§3.3, §3.6-§3.8).
//
// RFC 9292 §3.3, "Framing Indicator":
//   * A value of 0 describes a request of known length.
//   * A value of 1 describes a response of known length.
//   * A value of 2 describes a request of indeterminate length.
//   * A value of 3 describes a response of indeterminate length.
//   Other values cause the message to be invalid.
//
// RFC 9292 §3.1, "Known-Length Messages":
//   Known-Length Field Section {
//     Length (i),
//     Field Line (..) ...,
//   }
//   Known-Length Content {
//     Content Length (i),
//     Content (..),
//   }
//
// RFC 9292 §3.2, "Indeterminate-Length Messages":
//   Indeterminate-Length Content {
//     Indeterminate-Length Content Chunk (..) ...,
//     Content Terminator (i) = 0,
//   }
//   Indeterminate-Length Content Chunk {
//     Chunk Length (i) = 1..,
//     Chunk (..),
//   }
//   Indeterminate-Length Field Section {
//     Field Line (..) ...,
//     Content Terminator (i) = 0,
//   }
//
// RFC 9292 §3.8, "Padding and Truncation":
//   "Messages can be padded with any number of zero-valued bytes. Non-zero padding bytes cause a
//   message to be invalid ... Truncation can be used to reduce the size of messages that have no
//   data in trailing field sections or content. If the trailers of a message are empty, they MAY
//   be omitted by the encoder in place of adding a length field equal to zero. An encoder MAY omit
//   empty content in the same way if the trailers are also empty. A message that is truncated at
//   any other point is invalid ... Decoders MUST treat missing truncated fields as equivalent to
//   having been sent with the length field set to zero."
// and §3.1: "The format allows for the message to be truncated before any of the length prefixes
// that precede the field sections or content" -- so a message may also end right after its control
// data (RFC 9458 Appendix A's request and response do exactly that).
//
// All integers are QUIC varints (RFC 9000 §16); "Integer values do not need to be encoded on the
// minimum number of bytes necessary" (§3), so non-minimal encodings are accepted.

import { ByteReader, ByteWriter } from "../bytes.js";
import { ProtocolError } from "../errors.js";
import { checkFieldForEncoding, decodeFieldName, decodeFieldValue, latin1Encode, type Field } from "./fields.js";
import type { BhttpLimits } from "./limits.js";

export const FRAMING = Object.freeze({
  KNOWN_LENGTH_REQUEST: 0,
  KNOWN_LENGTH_RESPONSE: 1,
  INDETERMINATE_LENGTH_REQUEST: 2,
  INDETERMINATE_LENGTH_RESPONSE: 3,
});

function tooLarge(detail: string): ProtocolError {
  return new ProtocolError("BHTTP_ERR_TOO_LARGE", detail);
}

function format(detail: string): ProtocolError {
  return new ProtocolError("BHTTP_ERR_FORMAT", detail);
}

/** The message's reader plus what the limits need to remember (fields seen so far). */
export class MessageDecoder {
  readonly r: ByteReader;
  readonly limits: Readonly<BhttpLimits>;
  readonly indeterminate: boolean;
  readonly #bytes: Uint8Array;
  #fieldCount = 0;

  /** `r` must read `bytes` (it may already have consumed the framing indicator). */
  constructor(bytes: Uint8Array, r: ByteReader, limits: Readonly<BhttpLimits>, indeterminate: boolean) {
    this.#bytes = bytes;
    this.r = r;
    this.limits = limits;
    this.indeterminate = indeterminate;
  }

  /** True when the input has ended: what follows is a truncated (empty) part, §3.8. */
  get ended(): boolean {
    return this.r.done;
  }

  /** A length that must fit in the rest of the input: too large for any message, or truncated. */
  #checkLength(n: number, what: string): void {
    if (n > this.limits.maxMessageBytes) {
      throw tooLarge(`${what}: ${n} bytes exceeds maxMessageBytes ${this.limits.maxMessageBytes}`);
    }
    if (n > this.r.remaining) {
      throw new ProtocolError("BHTTP_ERR_TRUNCATED", `${what}: needs ${n} bytes, ${this.r.remaining} left`);
    }
  }

  /** One length-prefixed value of request control data (§3.4), at most maxFieldBytes long. */
  controlValue(what: string): Uint8Array {
    const n = this.r.varint(`${what} length`);
    if (n > this.limits.maxFieldBytes) {
      throw tooLarge(`${what}: ${n} bytes exceeds maxFieldBytes ${this.limits.maxFieldBytes}`);
    }
    return this.r.bytes(n, what);
  }

  /** A field section, known- or indeterminate-length according to the framing indicator. */
  fieldSection(section: string): Field[] {
    const fields: Field[] = [];
    if (this.indeterminate) {
      for (;;) {
        const nameLength = this.r.varint(`${section} field name length`);
        if (nameLength === 0) return fields; // the Content Terminator
        fields.push(this.#fieldLine(this.r, nameLength, section));
      }
    }
    const length = this.r.varint(`${section} length`);
    this.#checkLength(length, section);
    // Inside a section whose length we have, running past its end is a malformed length, not a
    // truncated message.
    const sr = new ByteReader(this.r.bytes(length, section), "BHTTP_ERR_FORMAT", "BHTTP_ERR_FORMAT");
    while (!sr.done) {
      const nameLength = sr.varint(`${section} field name length`);
      if (nameLength === 0) throw format(`${section}: field name is empty`);
      fields.push(this.#fieldLine(sr, nameLength, section));
    }
    return fields;
  }

  #fieldLine(r: ByteReader, nameLength: number, section: string): Field {
    const { maxFields, maxFieldBytes } = this.limits;
    if (this.#fieldCount >= maxFields) throw tooLarge(`${section}: more than maxFields ${maxFields} field lines`);
    if (nameLength > maxFieldBytes) {
      throw tooLarge(`${section}: field name of ${nameLength} bytes exceeds maxFieldBytes ${maxFieldBytes}`);
    }
    const name = r.bytes(nameLength, `${section} field name`);
    const valueLength = r.varint(`${section} field value length`);
    if (nameLength + valueLength > maxFieldBytes) {
      throw tooLarge(`${section}: field line of ${nameLength + valueLength} bytes exceeds maxFieldBytes ${maxFieldBytes}`);
    }
    const value = r.bytes(valueLength, `${section} field value`);
    this.#fieldCount++;
    return [decodeFieldName(name, section), decodeFieldValue(value, section)];
  }

  /** The content, copied into a buffer of its own (never a view of the caller's input). */
  content(): Uint8Array {
    if (!this.indeterminate) {
      const length = this.r.varint("content length");
      this.#checkLength(length, "content");
      return this.r.bytes(length, "content").slice();
    }
    // Two passes: find the total first so that the only allocation is the exact result.
    const start = this.r.offset;
    let total = 0;
    for (;;) {
      const n = this.r.varint("content chunk length");
      if (n === 0) break;
      this.#checkLength(n, "content chunk");
      this.r.bytes(n, "content chunk");
      total += n;
    }
    const out = new Uint8Array(total);
    if (total === 0) return out;
    // Re-reading bytes this pass already validated: it cannot fail.
    const again = new ByteReader(this.#bytes.subarray(start, this.r.offset), "BHTTP_ERR_FORMAT", "BHTTP_ERR_FORMAT");
    let o = 0;
    for (;;) {
      const n = again.varint();
      if (n === 0) break;
      out.set(again.bytes(n), o);
      o += n;
    }
    return out;
  }

  /** §3.8: whatever is left must be zero-valued padding. */
  padding(): void {
    const rest = this.r.rest();
    for (let i = 0; i < rest.length; i++) {
      if (rest[i] !== 0) throw format(`padding: non-zero byte at offset ${this.r.offset - rest.length + i}`);
    }
  }
}

/** Writes the parts of a known-length message. */
export class MessageEncoder {
  readonly w = new ByteWriter(512);

  varint(v: number): void {
    this.w.varint(v);
  }

  controlValue(bytes: Uint8Array): void {
    this.w.varintBytes(bytes);
  }

  /** A Known-Length Field Section: the total length of the field lines, then the lines. */
  fieldSection(fields: readonly Field[], section: string): void {
    const encoded: Uint8Array[] = [];
    let length = 0;
    for (const field of fields) {
      checkFieldForEncoding(field, section);
      const name = latin1Encode(field[0], `${section} field name`);
      const value = latin1Encode(field[1], `${section} field value`);
      encoded.push(name, value);
      length += varintSize(name.length) + name.length + varintSize(value.length) + value.length;
    }
    this.w.varint(length);
    for (const part of encoded) this.w.varintBytes(part);
  }

  /** An Indeterminate-Length Field Section: the field lines, then a 0 (the Content Terminator). */
  indeterminateFieldSection(fields: readonly Field[], section: string): void {
    for (const field of fields) {
      checkFieldForEncoding(field, section);
      this.w.varintBytes(latin1Encode(field[0], `${section} field name`));
      this.w.varintBytes(latin1Encode(field[1], `${section} field value`));
    }
    this.w.varint(0);
  }

  /**
   * Header section, content and trailer section. With `truncate`, empty parts at the end are
   * omitted as §3.8 (and §3.1 for the header section) allows.
   */
  tail(headers: readonly Field[], body: Uint8Array, trailers: readonly Field[], truncate: boolean): void {
    let parts = 3;
    if (truncate && trailers.length === 0) {
      parts = 2;
      if (body.length === 0) {
        parts = 1;
        if (headers.length === 0) parts = 0;
      }
    }
    // Validate every section even when it is truncated away, so `truncate` never hides an error.
    if (parts >= 1) this.fieldSection(headers, "header section");
    else for (const f of headers) checkFieldForEncoding(f, "header section");
    if (parts >= 2) this.w.varintBytes(body);
    if (parts >= 3) this.fieldSection(trailers, "trailer section");
  }

  padding(n: number | undefined): void {
    if (n === undefined || n === 0) return;
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`padding must be a non-negative integer, got ${n}`);
    this.w.zeros(n);
  }

  /** An exact-length copy that owns its buffer. */
  finish(): Uint8Array {
    return this.w.finish().slice();
  }
}

export function varintSize(v: number): number {
  return v < 0x40 ? 1 : v < 0x4000 ? 2 : v < 0x40000000 ? 4 : 8;
}
