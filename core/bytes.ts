// Bounds-checked byte reading and writing, and QUIC variable-length integers (RFC 9000 §16).
//
// Every decoder in core/ reads through ByteReader so that truncated input throws a ProtocolError
// with the caller's `..._TRUNCATED` code instead of a RangeError or a silent `undefined`.

import { ProtocolError, type ErrorCode } from "./errors.js";

export class ByteReader {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  readonly #truncated: ErrorCode;
  readonly #format: ErrorCode;
  #offset = 0;

  /**
   * @param truncated error code thrown when the input ends early
   * @param format error code thrown for a malformed value (e.g. a varint too large for JS numbers)
   */
  constructor(bytes: Uint8Array, truncated: ErrorCode, format: ErrorCode) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#truncated = truncated;
    this.#format = format;
  }

  get offset(): number {
    return this.#offset;
  }

  get remaining(): number {
    return this.#bytes.length - this.#offset;
  }

  get done(): boolean {
    return this.#offset === this.#bytes.length;
  }

  #need(n: number, what: string): void {
    if (n > this.remaining) {
      throw new ProtocolError(this.#truncated, `${what}: needs ${n} bytes, ${this.remaining} left`);
    }
  }

  u8(what = "u8"): number {
    this.#need(1, what);
    return this.#view.getUint8(this.#offset++);
  }

  u16(what = "u16"): number {
    this.#need(2, what);
    const v = this.#view.getUint16(this.#offset);
    this.#offset += 2;
    return v;
  }

  u32(what = "u32"): number {
    this.#need(4, what);
    const v = this.#view.getUint32(this.#offset);
    this.#offset += 4;
    return v;
  }

  u64(what = "u64"): bigint {
    this.#need(8, what);
    const v = this.#view.getBigUint64(this.#offset);
    this.#offset += 8;
    return v;
  }

  /** A view (not a copy) of the next `n` bytes. */
  bytes(n: number, what = "bytes"): Uint8Array {
    this.#need(n, what);
    const out = this.#bytes.subarray(this.#offset, this.#offset + n);
    this.#offset += n;
    return out;
  }

  /** Everything that is left, as a view. */
  rest(): Uint8Array {
    const out = this.#bytes.subarray(this.#offset);
    this.#offset = this.#bytes.length;
    return out;
  }

  /** The next byte without consuming it, or undefined at the end. */
  peek(): number | undefined {
    return this.#offset < this.#bytes.length ? this.#view.getUint8(this.#offset) : undefined;
  }

  /** RFC 9000 §16: 2-bit length prefix, 6/14/30/62-bit value. Non-minimal encodings are allowed. */
  varint(what = "varint"): number {
    this.#need(1, what);
    const first = this.#view.getUint8(this.#offset);
    const len = 1 << (first >> 6);
    this.#need(len, what);
    let v: number;
    switch (len) {
      case 1:
        v = first & 0x3f;
        break;
      case 2:
        v = this.#view.getUint16(this.#offset) & 0x3fff;
        break;
      case 4:
        v = this.#view.getUint32(this.#offset) & 0x3fffffff;
        break;
      default: {
        const big = this.#view.getBigUint64(this.#offset) & 0x3fffffffffffffffn;
        if (big > BigInt(Number.MAX_SAFE_INTEGER)) {
          throw new ProtocolError(this.#format, `${what}: varint too large`);
        }
        v = Number(big);
      }
    }
    this.#offset += len;
    return v;
  }

  /** A varint length followed by that many bytes (RFC 9292 §3: "length-prefixed"). */
  varintBytes(what = "field", max = Number.MAX_SAFE_INTEGER): Uint8Array {
    const n = this.varint(what);
    if (n > max) throw new ProtocolError(this.#format, `${what}: ${n} bytes exceeds limit ${max}`);
    return this.bytes(n, what);
  }

  /** Throws the format error if any bytes are left. */
  end(what = "message"): void {
    if (!this.done) {
      throw new ProtocolError(this.#format, `${what}: ${this.remaining} trailing bytes`);
    }
  }
}

/** Grows as needed; `finish()` returns an exact-length copy-free view of what was written. */
export class ByteWriter {
  #buf: Uint8Array;
  #view: DataView;
  #len = 0;

  constructor(initialSize = 256) {
    this.#buf = new Uint8Array(initialSize);
    this.#view = new DataView(this.#buf.buffer);
  }

  get length(): number {
    return this.#len;
  }

  #room(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.#len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.#len));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }

  u8(v: number): this {
    this.#room(1);
    this.#view.setUint8(this.#len, v);
    this.#len += 1;
    return this;
  }

  u16(v: number): this {
    this.#room(2);
    this.#view.setUint16(this.#len, v);
    this.#len += 2;
    return this;
  }

  u32(v: number): this {
    this.#room(4);
    this.#view.setUint32(this.#len, v);
    this.#len += 4;
    return this;
  }

  u64(v: bigint): this {
    this.#room(8);
    this.#view.setBigUint64(this.#len, v);
    this.#len += 8;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.#room(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
    return this;
  }

  zeros(n: number): this {
    this.#room(n);
    this.#buf.fill(0, this.#len, this.#len + n);
    this.#len += n;
    return this;
  }

  /** Minimal-length QUIC varint (RFC 9000 §16). */
  varint(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`varint out of range: ${v}`);
    if (v < 0x40) return this.u8(v);
    if (v < 0x4000) return this.u16(v | 0x4000);
    if (v < 0x40000000) return this.u32((v | 0x80000000) >>> 0);
    this.#room(8);
    this.#view.setBigUint64(this.#len, BigInt(v) | 0xc000000000000000n);
    this.#len += 8;
    return this;
  }

  varintBytes(b: Uint8Array): this {
    return this.varint(b.length).bytes(b);
  }

  /** The written bytes (a view of the internal buffer; do not write afterwards). */
  finish(): Uint8Array {
    return this.#buf.subarray(0, this.#len);
  }
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** An exact-length copy that owns its buffer (byteOffset 0): some libraries ignore byteOffset. */
export function exactCopy(b: Uint8Array): Uint8Array {
  return new Uint8Array(b);
}

export function toHex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

export function fromHex(hex: string): Uint8Array {
  const clean = hex.replace(/\s+/g, "");
  if (clean.length % 2 !== 0 || /[^0-9a-fA-F]/.test(clean)) throw new TypeError("invalid hex");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Constant-time equality for secrets (length is not secret). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

const B64URL = /^[A-Za-z0-9_-]*={0,2}$/;

/** base64url; padded unless `pad` is false. (btoa/atob: core/ runs in browsers too, no Buffer.) */
export function toBase64Url(b: Uint8Array, pad = true): string {
  let bin = "";
  for (let i = 0; i < b.length; i += 0x8000) {
    bin += String.fromCharCode(...b.subarray(i, i + 0x8000));
  }
  const s = btoa(bin).replace(/\+/g, "-").replace(/\//g, "_");
  return pad ? s : s.replace(/=+$/, "");
}

/** Accepts padded and unpadded base64url; returns undefined for anything else. */
export function fromBase64Url(s: string): Uint8Array | undefined {
  if (!B64URL.test(s) || s.length % 4 === 1) return undefined;
  if (s.includes("=") && s.length % 4 !== 0) return undefined;
  const std = s.replace(/=+$/, "").replace(/-/g, "+").replace(/_/g, "/");
  let bin: string;
  try {
    bin = atob(std + "=".repeat((4 - (std.length % 4)) % 4));
  } catch {
    return undefined;
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * Bytes received in pieces (a stream), read from the front. Pushed pieces are kept as views, not
 * copied: the pusher must not change them afterwards. Reads copy only when they span pieces.
 */
export class ByteQueue {
  readonly #parts: Uint8Array[] = [];
  /** Offset of the first unread byte in #parts[0]. */
  #head = 0;
  #length = 0;

  get length(): number {
    return this.#length;
  }

  push(b: Uint8Array): void {
    if (b.length === 0) return;
    this.#parts.push(b);
    this.#length += b.length;
  }

  /** The byte at `i` from the front (i < length). */
  at(i: number): number {
    let k = this.#head + i;
    for (const p of this.#parts) {
      if (k < p.length) return p[k]!;
      k -= p.length;
    }
    throw new RangeError("ByteQueue.at beyond the end");
  }

  /** The first `n` bytes (n <= length), consumed: a view when they lie in one piece, else a copy. */
  take(n: number): Uint8Array {
    if (n > this.#length) throw new RangeError("ByteQueue.take beyond the end");
    const first = this.#parts[0];
    if (n === 0 || first === undefined) return new Uint8Array(0);
    if (first.length - this.#head >= n) return this.#consumeFirst(n);
    const out = new Uint8Array(n);
    let o = 0;
    while (o < n) {
      const piece = this.#consumeFirst(Math.min(n - o, this.#parts[0]!.length - this.#head));
      out.set(piece, o);
      o += piece.length;
    }
    return out;
  }

  /** Up to `n` bytes from the first piece only, consumed, never copied (empty when the queue is). */
  takeSome(n: number): Uint8Array {
    const first = this.#parts[0];
    if (first === undefined) return new Uint8Array(0);
    return this.#consumeFirst(Math.min(n, first.length - this.#head));
  }

  #consumeFirst(n: number): Uint8Array {
    const first = this.#parts[0]!;
    const out = first.subarray(this.#head, this.#head + n);
    this.#head += n;
    this.#length -= n;
    if (this.#head === first.length) {
      this.#parts.shift();
      this.#head = 0;
    }
    return out;
  }

  /**
   * Reads a QUIC varint (RFC 9000 §16) at offset `at` without consuming it: its value and size, or
   * undefined when the queue ends first. Values above 2^53-1 throw `format`.
   */
  peekVarint(at: number, format: ErrorCode, what = "varint"): { value: number; size: number } | undefined {
    if (this.#length <= at) return undefined;
    const first = this.at(at);
    const size = 1 << (first >> 6);
    if (this.#length < at + size) return undefined;
    let v = BigInt(first & 0x3f);
    for (let i = 1; i < size; i++) v = (v << 8n) | BigInt(this.at(at + i));
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(format, `${what}: varint too large`);
    return { value: Number(v), size };
  }
}
