// The two small HTTP/1.1 parsers of the relay's lean forwarding path (RFC 9112):
//
// - `parseCanonicalPost` recognises the one request shape the fast path serves: `POST <path>
//   HTTP/1.1` with a single Content-Length, a single Host, no Transfer-Encoding, Expect or Upgrade,
//   every line well formed. Anything else is not an error here: the connection is handed, from that
//   request on, to node:http and Fastify (relay/front.ts), which implement all of HTTP/1.x. Being
//   strict costs nothing and means both parsers agree on every message boundary the fast path acts
//   on (no request smuggling between them).
// - `ResponseParser` reads a gateway's answer incrementally: status line, headers, a body delimited
//   by Content-Length, chunked coding or the end of the connection, with explicit size limits.
//   Anything malformed is RELAY_ERR_UPSTREAM_INVALID (502) and the connection is not reused.

import { ProtocolError } from "../core/errors.js";
import { trimOws } from "../core/http-fields.js";

export interface CanonicalPost {
  /** The request-target as sent (origin-form). */
  target: string;
  contentLength: number;
  /** The Content-Type field value as sent (undefined if absent). */
  contentType: string | undefined;
  /** The client asked to close the connection after this exchange (`Connection: close`). */
  close: boolean;
  /** The Origin field value (browser clients; set only when present). */
  origin?: string;
}

// Request line and header lines (RFC 9112 §3, §5): token field names, no whitespace before the
// colon, values of HTAB/SP/VCHAR/obs-text (no CTL, so no bare CR or LF and no obs-fold line).
const CANONICAL_POST_HEAD = /^POST (\/[!-~]*) HTTP\/1\.1((?:\r\n[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*)*)$/;
const DIGITS = /^[0-9]{1,15}$/;

function hasToken(list: string, token: string): boolean {
  for (const part of list.split(",")) if (trimOws(part).toLowerCase() === token) return true;
  return false;
}

/**
 * Parses a request head (the bytes before the blank line, as a latin1 string) if it is a canonical
 * POST; returns undefined for anything else, which node:http then parses (and answers 4xx if bad).
 */
export function parseCanonicalPost(head: string): CanonicalPost | undefined {
  const m = CANONICAL_POST_HEAD.exec(head);
  if (m === null) return undefined;
  const target = m[1]!;
  const fields = m[2]!;
  let contentLength = -1;
  let contentType: string | undefined;
  let hosts = 0;
  let close = false;
  let origin: string | undefined;
  let at = 2; // fields starts with "\r\n"
  while (at < fields.length) {
    let end = fields.indexOf("\r\n", at);
    if (end < 0) end = fields.length;
    const colon = fields.indexOf(":", at);
    const name = fields.slice(at, colon).toLowerCase();
    const value = trimOws(fields.slice(colon + 1, end));
    switch (name) {
      case "content-length":
        if (contentLength !== -1 || !DIGITS.test(value)) return undefined;
        contentLength = Number(value);
        break;
      case "content-type":
        if (contentType !== undefined) return undefined;
        contentType = value;
        break;
      case "origin":
        if (origin !== undefined) return undefined;
        origin = value;
        break;
      case "host":
        hosts++;
        if (value === "") return undefined;
        break;
      case "connection":
        if (hasToken(value, "upgrade")) return undefined;
        if (hasToken(value, "close")) close = true;
        break;
      case "transfer-encoding":
      case "expect":
      case "upgrade":
        return undefined;
    }
    at = end + 2;
  }
  if (contentLength === -1 || hosts !== 1) return undefined;
  return origin === undefined ? { target, contentLength, contentType, close } : { target, contentLength, contentType, close, origin };
}


export interface ResponseLimits {
  maxHeaderBytes: number;
  maxBodyBytes: number;
  /**
   * Streaming mode (chunked OHTTP answers): the final head is announced here as soon as it is
   * parsed, and body bytes go to `onBody` as they arrive instead of being kept (`body()` is then
   * empty). maxBodyBytes still caps their total.
   */
  onHead?: () => void;
  onBody?: (piece: Buffer) => void;
}

const enum State {
  Head,
  Body,
  ChunkSize,
  ChunkData,
  ChunkDataEnd,
  Trailers,
  UntilClose,
  Done,
}

/** Status line (codes 100-599: the classes a client understands, RFC 9110 §15) and field lines. */
const RESPONSE_HEAD = /^HTTP\/1\.([01]) ([1-5][0-9]{2})(?: [\t\x20-\x7e\x80-\xff]*)?((?:\r\n[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*)*)$/;
const FIELD_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):([\t\x20-\x7e\x80-\xff]*)$/;
const CHUNK_SIZE = /^([0-9A-Fa-f]{1,12})[\t ]*(;[\t\x20-\x7e\x80-\xff]*)?$/;
const KEEP_ALIVE_TIMEOUT = /(?:^|,)\s*timeout\s*=\s*(\d{1,9})\s*(?:,|$)/i;
/** Longest chunk-size line or trailer line accepted. */
const MAX_LINE = 4096;

function invalid(detail: string): ProtocolError {
  return new ProtocolError("RELAY_ERR_UPSTREAM_INVALID", detail);
}

/**
 * Incremental parser of one HTTP/1.1 response to a POST. Feed it with `execute`; it returns true
 * once the response is complete. Interim 1xx responses are skipped.
 */
export class ResponseParser {
  status = 0;
  contentType: string | undefined;
  /** May the connection carry another request afterwards? */
  keepAlive = true;
  /** The gateway's `Keep-Alive: timeout=N`, in ms, if it sent one. */
  keepAliveTimeoutMs: number | undefined;
  /** Bytes received after the end of the response (a protocol violation if non-empty). */
  extra = 0;

  readonly #limits: ResponseLimits;
  #state = State.Head;
  #pending: Buffer | undefined;
  #headBytes = 0;
  #remaining = 0;
  #chunks: Buffer[] = [];
  #bodyBytes = 0;

  constructor(limits: ResponseLimits) {
    this.#limits = limits;
  }

  get done(): boolean {
    return this.#state === State.Done;
  }

  /** True once any byte of the response arrived. */
  get started(): boolean {
    return this.#headBytes > 0 || this.#state !== State.Head || this.#pending !== undefined;
  }

  /** True while headers have not been completely received. */
  get inHead(): boolean {
    return this.#state === State.Head;
  }

  body(): Buffer {
    if (this.#chunks.length === 1) return this.#chunks[0]!;
    return Buffer.concat(this.#chunks, this.#bodyBytes);
  }

  /** Feeds bytes; returns true when the response is complete. Throws RELAY_ERR_UPSTREAM_INVALID. */
  execute(chunk: Buffer): boolean {
    let buf = chunk;
    if (this.#pending !== undefined) {
      buf = Buffer.concat([this.#pending, chunk]);
      this.#pending = undefined;
    }
    let at = 0;
    while (at < buf.length) {
      switch (this.#state) {
        case State.Head: {
          const end = buf.indexOf("\r\n\r\n", at, "latin1");
          if (end < 0) {
            if (buf.length - at > this.#limits.maxHeaderBytes) throw invalid("answer headers too large");
            this.#pending = buf.subarray(at);
            return false;
          }
          if (end - at > this.#limits.maxHeaderBytes) throw invalid("answer headers too large");
          this.#headBytes += end - at + 4;
          this.#parseHead(buf.toString("latin1", at, end));
          at = end + 4;
          break;
        }
        case State.Body: {
          const n = Math.min(this.#remaining, buf.length - at);
          this.#push(buf.subarray(at, at + n));
          at += n;
          this.#remaining -= n;
          if (this.#remaining === 0) this.#state = State.Done;
          break;
        }
        case State.UntilClose: {
          this.#push(buf.subarray(at));
          at = buf.length;
          break;
        }
        case State.ChunkSize: {
          const end = buf.indexOf("\r\n", at, "latin1");
          if (end < 0) {
            if (buf.length - at > MAX_LINE) throw invalid("chunk size line too long");
            this.#pending = buf.subarray(at);
            return false;
          }
          const m = CHUNK_SIZE.exec(buf.toString("latin1", at, end));
          if (m === null) throw invalid("bad chunk size");
          const size = parseInt(m[1]!, 16);
          at = end + 2;
          if (size === 0) {
            this.#state = State.Trailers;
          } else {
            if (this.#bodyBytes + size > this.#limits.maxBodyBytes) throw invalid("answer too large");
            this.#remaining = size;
            this.#state = State.ChunkData;
          }
          break;
        }
        case State.ChunkData: {
          const n = Math.min(this.#remaining, buf.length - at);
          this.#push(buf.subarray(at, at + n));
          at += n;
          this.#remaining -= n;
          if (this.#remaining === 0) this.#state = State.ChunkDataEnd;
          break;
        }
        case State.ChunkDataEnd: {
          if (buf.length - at < 2) {
            this.#pending = buf.subarray(at);
            return false;
          }
          if (buf[at] !== 0x0d || buf[at + 1] !== 0x0a) throw invalid("chunk not followed by CRLF");
          at += 2;
          this.#state = State.ChunkSize;
          break;
        }
        case State.Trailers: {
          const end = buf.indexOf("\r\n", at, "latin1");
          if (end < 0) {
            if (buf.length - at > MAX_LINE) throw invalid("trailer line too long");
            this.#pending = buf.subarray(at);
            return false;
          }
          this.#headBytes += end - at + 2;
          if (this.#headBytes > 2 * this.#limits.maxHeaderBytes) throw invalid("answer trailers too large");
          const line = buf.toString("latin1", at, end);
          at = end + 2;
          if (line === "") this.#state = State.Done;
          else if (!FIELD_LINE.test(line)) throw invalid("bad trailer field");
          break;
        }
        case State.Done:
          this.extra += buf.length - at;
          return true;
      }
    }
    return this.#state === State.Done;
  }

  /** The connection ended: completes a close-delimited body; true if the response is complete. */
  finish(): boolean {
    if (this.#state === State.UntilClose) {
      this.#state = State.Done;
      this.keepAlive = false;
    }
    return this.#state === State.Done;
  }

  #push(b: Buffer): void {
    if (b.length === 0) return;
    this.#bodyBytes += b.length;
    if (this.#bodyBytes > this.#limits.maxBodyBytes) throw invalid("answer too large");
    const onBody = this.#limits.onBody;
    if (onBody === undefined) this.#chunks.push(b);
    else onBody(b);
  }

  #parseHead(head: string): void {
    // One pass validates the whole head (status line and field lines, no obs-fold, no bare CR/LF),
    // then the few fields that matter are picked out.
    const m = RESPONSE_HEAD.exec(head);
    if (m === null) throw invalid("bad status line or header field");
    const status = Number(m[2]);
    const fields = m[3]!;
    let contentLength = -1;
    let chunked = false;
    let contentType: string | undefined;
    let keepAlive = m[1] === "1";
    let keepAliveTimeoutMs: number | undefined;
    let at = 2; // fields starts with "\r\n"
    while (at < fields.length) {
      let end = fields.indexOf("\r\n", at);
      if (end < 0) end = fields.length;
      const colon = fields.indexOf(":", at);
      const nameLength = colon - at;
      // Only names of these lengths matter: skip the rest without lowercasing them.
      if (nameLength === 10 || nameLength === 12 || nameLength === 14 || nameLength === 17) {
        const name = fields.slice(at, colon).toLowerCase();
        const value = trimOws(fields.slice(colon + 1, end));
        switch (name) {
          case "content-length": {
            if (!DIGITS.test(value)) throw invalid("bad content-length");
            const n = Number(value);
            if (contentLength !== -1 && contentLength !== n) throw invalid("conflicting content-length");
            contentLength = n;
            break;
          }
          case "transfer-encoding": {
            // RFC 9112 §6.1: chunked must be the final coding; the relay asks for no other coding.
            if (value.toLowerCase() !== "chunked" || chunked) throw invalid("unsupported transfer-encoding");
            chunked = true;
            break;
          }
          case "content-type":
            contentType ??= value;
            break;
          case "connection":
            if (hasToken(value, "close")) keepAlive = false;
            else if (hasToken(value, "keep-alive")) keepAlive = true;
            break;
          case "keep-alive": {
            const t = KEEP_ALIVE_TIMEOUT.exec(value);
            if (t !== null) keepAliveTimeoutMs = Number(t[1]) * 1000;
            break;
          }
        }
      }
      at = end + 2;
    }
    if (status < 200) {
      // RFC 9110 §15.2: interim responses carry no content; 101 would switch protocols: refused.
      if (status === 101) throw invalid("unexpected protocol switch");
      return;
    }
    this.status = status;
    this.contentType = contentType;
    this.keepAlive = keepAlive;
    this.keepAliveTimeoutMs = keepAliveTimeoutMs;
    if (chunked) {
      // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; such a message is a smuggling
      // hint, so the connection is not reused.
      if (contentLength !== -1) this.keepAlive = false;
      this.#state = State.ChunkSize;
    } else if (status === 204 || status === 304) {
      this.#state = State.Done;
    } else if (contentLength !== -1) {
      if (contentLength > this.#limits.maxBodyBytes) throw invalid("answer too large");
      this.#remaining = contentLength;
      this.#state = contentLength === 0 ? State.Done : State.Body;
    } else {
      this.keepAlive = false;
      this.#state = State.UntilClose;
    }
    this.#limits.onHead?.();
  }
}
