// Binary HTTP messages (RFC 9292) written and read as streams: the head (control data or status,
// and the header section) as soon as it is complete, then the content piece by piece as it
// arrives, then the trailers and padding. Used inside chunked Oblivious HTTP, where neither side
// holds a whole message.
//
// Both framings are read (§3.1 known-length content is one run of `Content Length` bytes; §3.2
// indeterminate-length content is chunks ending at a 0), with the truncations of §3.8 accepted at
// the end of the stream. Only the indeterminate-length form is written, since a stream's length is
// not known up front. What is buffered is bounded: the head and the trailers by
// `maxMessageBytes`, content never (each piece is handed on as it arrives).

import { ByteQueue, ByteReader, ByteWriter } from "../bytes.js";
import { ProtocolError } from "../errors.js";
import type { Field } from "./fields.js";
import { resolveLimits, type BhttpLimits } from "./limits.js";
import { encodeRequestHead, readRequestControlData, readRequestFraming, type BhttpRequest } from "./request.js";
import { encodeResponseHead, readResponseFraming, readResponseStatus, type BhttpInformational, type BhttpResponse } from "./response.js";
import { MessageDecoder, MessageEncoder } from "./sections.js";

export type BhttpRequestHead = Pick<BhttpRequest, "method" | "scheme" | "authority" | "path" | "headers">;
export interface BhttpResponseHead {
  informational: BhttpInformational[];
  status: number;
  headers: Field[];
}

/** What one `push` or `end` produced, in order: the head once, then content pieces. */
export interface BhttpStreamEvents<H> {
  head?: H;
  body: Uint8Array[];
}

type Phase = "head" | "content-length" | "content" | "chunk-length" | "chunk" | "trailers" | "padding";

/** Reads the framing and head off `d`; returns whether the framing is indeterminate. */
type HeadReader<H> = (r: ByteReader, limits: Readonly<BhttpLimits>, bytes: Uint8Array) => { head: H; indeterminate: boolean; truncated: boolean };

/**
 * An incremental decoder of one Binary HTTP message. `push` bytes as they arrive, then `end()`.
 * Errors are ProtocolErrors with BHTTP_ERR_* codes. A stream that ends where §3.8 allows no
 * truncation throws BHTTP_ERR_TRUNCATED from `end()`.
 */
class BhttpStreamDecoder<H> {
  readonly #q = new ByteQueue();
  readonly #limits: Readonly<BhttpLimits>;
  readonly #readHead: HeadReader<H>;
  #phase: Phase = "head";
  #indeterminate = false;
  /** Content bytes left in the current chunk (or the known-length content). */
  #left = 0;
  /** Queue length at the last incomplete parse of the head or trailers (they are retried when it doubles). */
  #triedAt = 0;
  #ended = false;
  #trailers: Field[] = [];
  /** A content length has been read: the content can no longer be truncated away. */
  #contentStarted = false;

  constructor(readHead: HeadReader<H>, limits?: Partial<BhttpLimits>) {
    this.#readHead = readHead;
    this.#limits = resolveLimits(limits);
  }

  /** True once the head has been read. */
  get started(): boolean {
    return this.#phase !== "head";
  }

  push(bytes: Uint8Array): BhttpStreamEvents<H> {
    if (this.#ended) throw new ProtocolError("BHTTP_ERR_FORMAT", "bytes after the end of the message");
    this.#q.push(bytes);
    return this.#run(false);
  }

  /** The stream ended: what is left, and the trailers (the message is complete). */
  end(): BhttpStreamEvents<H> & { trailers: Field[] } {
    if (this.#ended) throw new ProtocolError("BHTTP_ERR_FORMAT", "the message already ended");
    this.#ended = true;
    return { ...this.#run(true), trailers: this.#trailers };
  }

  #run(ended: boolean): BhttpStreamEvents<H> {
    const out: BhttpStreamEvents<H> = { body: [] };
    for (;;) {
      switch (this.#phase) {
        case "head": {
          const parsed = this.#parse(ended, (r, bytes) => this.#readHead(r, this.#limits, bytes));
          if (parsed === undefined) return out;
          out.head = parsed.head;
          this.#indeterminate = parsed.indeterminate;
          // §3.8: a message may end after its header section (or even its control data).
          this.#phase = this.#indeterminate ? "chunk-length" : "content-length";
          if (parsed.truncated) this.#phase = "padding";
          break;
        }
        case "content-length":
        case "chunk-length": {
          const len = this.#q.peekVarint(0, "BHTTP_ERR_FORMAT", "content length");
          if (len === undefined) {
            if (!ended) return out;
            if (this.#q.length > 0 || this.#contentStarted) throw new ProtocolError("BHTTP_ERR_TRUNCATED", "message ends inside its content");
            this.#phase = "padding"; // content and trailers truncated away (§3.8)
            break;
          }
          this.#contentStarted = true;
          this.#q.take(len.size);
          this.#left = len.value;
          if (this.#phase === "content-length") this.#phase = "content";
          else this.#phase = len.value === 0 ? "trailers" : "chunk";
          break;
        }
        case "content":
        case "chunk": {
          while (this.#left > 0 && this.#q.length > 0) {
            const piece = this.#q.takeSome(this.#left);
            this.#left -= piece.length;
            out.body.push(piece);
          }
          if (this.#left > 0) {
            if (ended) throw new ProtocolError("BHTTP_ERR_TRUNCATED", "message ends inside its content");
            return out;
          }
          this.#phase = this.#phase === "content" ? "trailers" : "chunk-length";
          break;
        }
        case "trailers": {
          if (this.#q.length === 0 && ended) {
            // §3.8: empty trailers may be truncated away.
            this.#phase = "padding";
            break;
          }
          const parsed = this.#parse(ended, (r, bytes) => new MessageDecoder(bytes, r, this.#limits, this.#indeterminate).fieldSection("trailer section"));
          if (parsed === undefined) return out;
          this.#trailers = parsed;
          this.#phase = "padding";
          break;
        }
        case "padding": {
          // §3.8: "Non-zero padding bytes cause a message to be invalid."
          while (this.#q.length > 0) {
            const piece = this.#q.takeSome(this.#q.length);
            if (piece.some((b) => b !== 0)) throw new ProtocolError("BHTTP_ERR_FORMAT", "padding: non-zero byte");
          }
          return out;
        }
      }
    }
  }

  /**
   * Runs `read` over the buffered bytes. Undefined while the stream goes on and they do not hold
   * the whole part yet (retried only once the buffer has doubled, so a part sent byte by byte costs
   * linear, not quadratic, time); at the end a truncated part is an error. Consumes what `read` read.
   */
  #parse<T>(ended: boolean, read: (r: ByteReader, bytes: Uint8Array) => T): T | undefined {
    const n = this.#q.length;
    if (n > this.#limits.maxMessageBytes) {
      throw new ProtocolError("BHTTP_ERR_TOO_LARGE", `head or trailers exceed maxMessageBytes ${this.#limits.maxMessageBytes}`);
    }
    if (!ended && n < 2 * this.#triedAt) return undefined;
    const bytes = this.#q.take(n).slice();
    const r = new ByteReader(bytes, "BHTTP_ERR_TRUNCATED", "BHTTP_ERR_FORMAT");
    let v: T;
    try {
      v = read(r, bytes);
    } catch (e) {
      if (!ended && e instanceof ProtocolError && e.code === "BHTTP_ERR_TRUNCATED") {
        this.#q.push(bytes);
        this.#triedAt = n;
        return undefined;
      }
      throw e;
    }
    // The head's readers stop at the end of the input when the rest was truncated away (§3.8);
    // mid-stream that only means more is coming.
    const truncated = r.done && (v as { truncated?: boolean }).truncated === true;
    if (truncated && !ended) {
      this.#q.push(bytes);
      this.#triedAt = n;
      return undefined;
    }
    this.#triedAt = 0;
    this.#q.push(bytes.subarray(r.offset));
    return v;
  }
}

/** Reads a request head: framing, control data, header section (any of them truncated at the end). */
function readRequestHead(r: ByteReader, limits: Readonly<BhttpLimits>, bytes: Uint8Array): { head: BhttpRequestHead; indeterminate: boolean; truncated: boolean } {
  const indeterminate = readRequestFraming(r);
  const d = new MessageDecoder(bytes, r, limits, indeterminate);
  const control = readRequestControlData(d);
  const truncated = d.ended;
  const headers = truncated ? [] : d.fieldSection("header section");
  return { head: { ...control, headers }, indeterminate, truncated };
}

function readResponseHead(r: ByteReader, limits: Readonly<BhttpLimits>, bytes: Uint8Array): { head: BhttpResponseHead; indeterminate: boolean; truncated: boolean } {
  const indeterminate = readResponseFraming(r);
  const d = new MessageDecoder(bytes, r, limits, indeterminate);
  const { informational, status } = readResponseStatus(d);
  const truncated = d.ended;
  const headers = truncated ? [] : d.fieldSection("header section");
  return { head: { informational, status, headers }, indeterminate, truncated };
}

/** An incremental Binary HTTP request decoder (RFC 9292 §3.1, §3.2, §3.4). */
export class BhttpRequestStreamDecoder extends BhttpStreamDecoder<BhttpRequestHead> {
  constructor(limits?: Partial<BhttpLimits>) {
    super(readRequestHead, limits);
  }
}

/** An incremental Binary HTTP response decoder (RFC 9292 §3.1, §3.2, §3.5). */
export class BhttpResponseStreamDecoder extends BhttpStreamDecoder<BhttpResponseHead> {
  constructor(limits?: Partial<BhttpLimits>) {
    super(readResponseHead, limits);
  }
}

/**
 * Writes one indeterminate-length message in pieces: `head`, any number of `content` pieces, then
 * `end`, which can pad the whole message with zeros to a multiple of `padToMultiple` bytes
 * (§3.8), so that its length says less about its content.
 */
export class BhttpStreamEncoder {
  #bytes = 0;
  #state: "head" | "content" | "done" = "head";

  requestHead(head: BhttpRequestHead): Uint8Array {
    return this.#head(encodeRequestHead(head));
  }

  responseHead(head: Pick<BhttpResponse, "status" | "headers">): Uint8Array {
    return this.#head(encodeResponseHead(head));
  }

  /** One content chunk (`Chunk Length (i) = 1..`, then the bytes); nothing for empty input. */
  content(piece: Uint8Array): Uint8Array {
    if (this.#state !== "content") throw new RangeError("content before the head or after the end");
    if (piece.length === 0) return new Uint8Array(0);
    const out = new ByteWriter(piece.length + 8).varintBytes(piece).finish();
    this.#bytes += out.length;
    return out;
  }

  /** The Content Terminator, the trailer section and the padding. */
  end(trailers: readonly Field[] = [], padToMultiple = 0): Uint8Array {
    if (this.#state !== "content") throw new RangeError("end before the head or twice");
    this.#state = "done";
    const e = new MessageEncoder();
    e.varint(0);
    e.indeterminateFieldSection(trailers, "trailer section");
    const tail = e.finish();
    const total = this.#bytes + tail.length;
    const pad = padding(total, padToMultiple);
    if (pad === 0) return tail;
    const out = new Uint8Array(tail.length + pad);
    out.set(tail);
    return out;
  }

  #head(bytes: Uint8Array): Uint8Array {
    if (this.#state !== "head") throw new RangeError("a message has one head");
    this.#state = "content";
    this.#bytes = bytes.length;
    return bytes;
  }
}

/** Zero bytes to add to a message of `length` bytes to make it a multiple of `multiple` (0: none). */
export function padding(length: number, multiple: number): number {
  if (!Number.isSafeInteger(multiple) || multiple < 0) throw new RangeError(`padding multiple must be a non-negative integer, got ${multiple}`);
  if (multiple <= 1) return 0;
  const r = length % multiple;
  return r === 0 ? 0 : multiple - r;
}

/** `message` followed by zero bytes up to a multiple of `multiple` (§3.8 padding; 0 or 1: unchanged). */
export function padToMultiple(message: Uint8Array, multiple: number): Uint8Array {
  const pad = padding(message.length, multiple);
  if (pad === 0) return message;
  const out = new Uint8Array(message.length + pad);
  out.set(message);
  return out;
}
