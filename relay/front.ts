// The relay's lean HTTP/1.1 front for its one hot request: `POST <route path>` with a
// Content-Length body. It sits on the connections of the node:http(s) server that Fastify owns
// (relay/app.ts puts it in front of node:http's connection listener) and reads each connection
// itself until a request is anything other than a canonical POST to a route (relay/http1.ts): from
// that request on, the connection, with the bytes already read, is handed to node:http and Fastify,
// which serve everything else (keys, health, metrics, 404, 405, chunked bodies, Expect, HTTP/1.0,
// malformed requests) and also relay non-canonical POSTs with the same checks (relay/routes/).
// Chunked OHTTP (`message/ohttp-chunked-req`) is handed over too, also with a Content-Length: it
// streams through node:http (relay/forward.ts's forwardStream) instead of being read whole here.
//
// Why (bench/relay.ts, against nginx proxy_pass on the same shared 2-core machine): relaying
// through node:http + Fastify reached 0.41-0.48x nginx's throughput at about 4x its CPU per
// request, and node:http alone measured about 0.5x; reading the few bytes of a canonical request
// directly and answering with one write brings the relay to 0.62-0.78x at 1.5-2x nginx's CPU.
//
// Limits kept here as in node:http: request head size (maxHeaderBytes: larger heads go to node:http,
// which answers 431), body size (413 by Content-Length, before reading the body), headers timeout
// (from the first byte of a request), request timeout (whole request), keep-alive timeout (idle
// connection), the concurrency cap and the rate limit (relay/forward.ts). Only the status,
// Content-Type and Content-Length of the gateway's answer are sent back.
//
// Memory per connection is bounded whatever the client does, as in node:http: the unread bytes of a
// request (head + body limits), and the answers the client has not read yet. While more than
// MAX_UNSENT_BYTES of answers wait in the socket, the connection is not read (no further request is
// parsed or answered) until they drain; a client that leaves them unread for requestTimeoutMs is cut
// off. Closing flushes the answers already written before the socket ends, and gives up after a
// deadline too.

import { STATUS_CODES } from "node:http";
import { performance } from "node:perf_hooks";
import { ProtocolError } from "../core/errors.js";
import { isMediaType } from "../core/http-fields.js";
import { MEDIA_TYPES } from "../core/ohttp/index.js";
import type { DrainState, RequestRecorder } from "../server/lean-answers.js";
import { renderProblem } from "../server/problem-handler.js";
import type { RelayLimits } from "./config.js";
import type { Forwarder, RelayRoute } from "./forward.js";
import { parseCanonicalPost } from "./http1.js";
import type { UpstreamAnswer } from "./upstream.js";

/**
 * What the front uses of a connection: a net.Socket or tls.TLSSocket (tests drive it with a model
 * socket, test/prop/relay-front.prop.test.ts).
 */
export interface FrontSocket {
  readonly remoteAddress?: string | undefined;
  readonly destroyed: boolean;
  /** Bytes written and not yet handed to the operating system. */
  readonly writableLength: number;
  setNoDelay(noDelay?: boolean): unknown;
  on(event: "data", listener: (chunk: Buffer) => void): unknown;
  on(event: "end" | "close" | "drain", listener: () => void): unknown;
  on(event: "error", listener: (err: Error) => void): unknown;
  off(event: "data", listener: (chunk: Buffer) => void): unknown;
  off(event: "end" | "close" | "drain", listener: () => void): unknown;
  off(event: "error", listener: (err: Error) => void): unknown;
  write(data: Buffer): boolean;
  end(): unknown;
  destroy(): unknown;
  destroySoon(): void;
  pause(): unknown;
  resume(): unknown;
  isPaused(): boolean;
  unshift(chunk: Buffer): void;
}

export interface FrontOptions<S extends FrontSocket> {
  /** Route path (exact request-target) -> route. */
  routes: ReadonlyMap<string, RelayRoute>;
  forwarder: Forwarder;
  recorder: RequestRecorder;
  /** The server's drain state: while stopping, every answer closes its connection. */
  drain: DrainState;
  limits: Pick<RelayLimits, "maxRequestBytes" | "maxHeaderBytes" | "headersTimeoutMs" | "requestTimeoutMs" | "keepAliveTimeoutMs">;
  /** Gives a connection to node:http (its connection listener). */
  handoff: (socket: S) => void;
  /** Requests with an Origin header go to Fastify, which adds the CORS headers (relay/app.ts). */
  handOffOrigin?: boolean;
  now?: () => number;
}

const enum State {
  /** Between requests. */
  Idle,
  /** Part of a request head received. */
  Head,
  /** Head parsed, reading the body. */
  Body,
  /** Waiting for the gateway's answer (further bytes are buffered, reading pauses if they pile up). */
  Busy,
  /**
   * Closing (after an answer with Connection: close, a timeout or the client's end): the answers
   * written are flushed, unread client bytes are drained and dropped until the client closes (so it
   * reads the answer instead of a connection reset), until the deadline.
   */
  Lingering,
  /** Closed or handed to node:http. */
  Gone,
}

interface Conn<S extends FrontSocket> {
  socket: S;
  /** Captured once: used only for the rate limit. */
  address: string;
  state: State;
  /** When the sweeper acts on the connection (ms, the injected clock): see #sweep. */
  deadline: number;
  /** When the current request's first byte was taken up (ms): the request timeout runs from it. */
  requestStart: number;
  /** More than MAX_UNSENT_BYTES of answers are unsent: not reading until they drain. */
  blocked: boolean;
  /** Bytes read and not yet consumed (a view into a socket chunk or into `store`). */
  buf: Buffer | undefined;
  /** Growable buffer the bytes are gathered in when they arrive in several chunks. */
  store: Buffer | undefined;
  /** Where the search for the end of the head resumes. */
  scanned: number;
  /** The client ended its side: answer the current request, then close. */
  ended: boolean;
  route: RelayRoute | undefined;
  /** Route label of the current request in logs and metrics. */
  label: string;
  bodyStart: number;
  contentLength: number;
  contentType: string | undefined;
  closeAfter: boolean;
  startedAt: number;
  /** Removes the lean path's listeners (before a handoff). */
  detach: (() => void) | undefined;
}

const CRLFCRLF = Buffer.from("\r\n\r\n", "latin1");

const STATUS_LINES: string[] = [];
/** "HTTP/1.1 200 OK\r\n" (100 <= status <= 599, as ResponseParser and the catalogue ensure). */
function statusLine(status: number): string {
  return (STATUS_LINES[status] ??= `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Unknown"}\r\n`);
}

/** Lingering close: how long unread client bytes are drained before the connection is cut. */
const LINGER_MS = 2000;
/**
 * Unsent answer bytes above which a connection is not read until they drain. node:http pauses at
 * the socket's 16 KiB high-water mark; answers here are single writes of up to maxResponseBytes, so
 * a connection holds at most this plus one answer plus the unread bytes of one request.
 */
export const MAX_UNSENT_BYTES = 64 * 1024;
const UNMATCHED = "(unmatched)";

/**
 * Adds a chunk to the unread bytes: zero-copy for the first, amortised O(1) copying after it (a
 * request trickled in byte by byte must not cost a copy of everything before each byte).
 */
function append(c: Conn<FrontSocket>, chunk: Buffer): void {
  const buf = c.buf;
  if (buf === undefined) {
    c.buf = chunk;
    return;
  }
  const need = buf.length + chunk.length;
  const store = c.store;
  if (store !== undefined && buf.buffer === store.buffer) {
    const start = buf.byteOffset - store.byteOffset;
    if (start >= 0 && start + need <= store.length) {
      chunk.copy(store, start + buf.length);
      c.buf = store.subarray(start, start + need);
      return;
    }
  }
  const grown = Buffer.allocUnsafe(Math.max(2 * need, 4096));
  buf.copy(grown, 0);
  chunk.copy(grown, buf.length);
  c.store = grown;
  c.buf = grown.subarray(0, need);
}

export class Front<S extends FrontSocket = FrontSocket> {
  readonly #o: FrontOptions<S>;
  readonly #now: () => number;
  readonly #conns = new Set<Conn<S>>();
  readonly #sweeper: NodeJS.Timeout;
  /** Unread request bytes a connection may buffer (one request) before it is paused. */
  readonly #readAhead: number;

  constructor(opts: FrontOptions<S>) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    const l = opts.limits;
    this.#readAhead = l.maxHeaderBytes + l.maxRequestBytes;
    const tick = Math.max(10, Math.min(1000, Math.floor(Math.min(l.headersTimeoutMs, l.requestTimeoutMs, l.keepAliveTimeoutMs) / 4)));
    this.#sweeper = setInterval(() => this.sweep(), tick);
    this.#sweeper.unref();
  }

  /** Connections currently served by the lean path. */
  get connections(): number {
    return this.#conns.size;
  }

  /** A new connection (plain TCP, or TLS after the handshake). */
  accept(socket: S): void {
    socket.setNoDelay(true);
    const now = this.#now();
    const conn: Conn<S> = {
      socket,
      address: socket.remoteAddress ?? "unknown",
      state: State.Idle,
      deadline: now + this.#o.limits.headersTimeoutMs,
      requestStart: now,
      blocked: false,
      buf: undefined,
      store: undefined,
      scanned: 0,
      ended: false,
      route: undefined,
      label: UNMATCHED,
      bodyStart: 0,
      contentLength: 0,
      contentType: undefined,
      closeAfter: false,
      startedAt: 0,
      detach: undefined,
    };
    this.#conns.add(conn);
    const onData = (chunk: Buffer): void => this.#onData(conn, chunk);
    const onEnd = (): void => this.#onEnd(conn);
    const onDrain = (): void => this.#onDrain(conn);
    const onError = (): void => {
      socket.destroy();
    };
    const onClose = (): void => {
      conn.state = State.Gone;
      this.#conns.delete(conn);
    };
    socket.on("data", onData);
    socket.on("end", onEnd);
    socket.on("drain", onDrain);
    socket.on("error", onError);
    socket.on("close", onClose);
    conn.detach = () => {
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("drain", onDrain);
      socket.off("error", onError);
      socket.off("close", onClose);
    };
  }

  /** Shutdown: idle connections close now, busy ones after their answer (the drain state). */
  closeIdle(): void {
    for (const c of this.#conns) if (c.state === State.Idle) this.#close(c);
  }

  destroyAll(): void {
    for (const c of this.#conns) c.socket.destroy();
  }

  stop(): void {
    clearInterval(this.#sweeper);
  }

  #onData(c: Conn<S>, chunk: Buffer): void {
    if (c.state === State.Lingering || c.state === State.Gone) return;
    append(c, chunk);
    if (c.state !== State.Busy && !c.blocked) {
      this.#process(c);
    } else if ((c.buf?.length ?? 0) > this.#readAhead) {
      // A client pipelining ahead while its request is with the gateway (or while its answers are
      // unread): stop reading until the requests buffered are served (not paused per request,
      // which costs a tick per request on the common path).
      c.socket.pause();
    }
  }

  /** Reads on if the connection was paused and no longer has to be (see #onData, #respond). */
  #resumeIfRoom(c: Conn<S>): void {
    if (!c.blocked && (c.buf?.length ?? 0) <= this.#readAhead && c.socket.isPaused()) c.socket.resume();
  }

  #onEnd(c: Conn<S>): void {
    c.ended = true;
    // Busy: answered first, then closed. Blocked: the requests already received are answered once
    // the client reads, then the connection closes. Lingering: closes once the answers are flushed.
    if (c.state === State.Busy || c.state === State.Lingering || c.state === State.Gone || c.blocked) return;
    this.#next(c);
  }

  /** The answers written have all been sent: read on. */
  #onDrain(c: Conn<S>): void {
    if (!c.blocked) return;
    c.blocked = false;
    if (c.state !== State.Idle) return;
    c.deadline = this.#now() + this.#o.limits.keepAliveTimeoutMs;
    this.#resumeIfRoom(c);
    this.#next(c);
  }

  /** Between requests: serves the bytes already received; closes if the client sends no more. */
  #next(c: Conn<S>): void {
    if (c.state !== State.Idle && c.state !== State.Head && c.state !== State.Body) return;
    if (c.buf !== undefined) this.#process(c);
    // The client ended its side and what it sent holds no further complete request.
    if (c.ended && (c.state === State.Idle || c.state === State.Head || c.state === State.Body)) this.#close(c);
  }

  /** Reads as far as the buffered bytes go: a head, a body, then the checks and the forward. */
  #process(c: Conn<S>): void {
    const limits = this.#o.limits;
    if (c.state === State.Idle || c.state === State.Head) {
      const buf = c.buf;
      if (buf === undefined) return;
      if (c.state === State.Idle) {
        // The request's first byte: both of its timers start here (node:http's headersTimeout and
        // requestTimeout both count from the start of the request, so they never add up).
        c.startedAt = performance.now();
        c.requestStart = this.#now();
      }
      const end = buf.indexOf(CRLFCRLF, Math.max(0, c.scanned - 3));
      if (end < 0) {
        // Larger heads are node:http's to refuse (431).
        if (buf.length > limits.maxHeaderBytes) return this.#handoff(c);
        c.scanned = buf.length;
        if (c.state === State.Idle) {
          c.state = State.Head;
          c.deadline = c.requestStart + Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs);
        }
        return;
      }
      if (end > limits.maxHeaderBytes) return this.#handoff(c);
      const head = parseCanonicalPost(buf.toString("latin1", 0, end));
      const route = head === undefined ? undefined : this.#o.routes.get(head.target);
      if (head === undefined || route === undefined) return this.#handoff(c);
      if (head.origin !== undefined && this.#o.handOffOrigin === true) return this.#handoff(c);
      // Chunked OHTTP streams through node:http (relay/forward.ts's forwardStream), never read whole here.
      if (isMediaType(head.contentType, MEDIA_TYPES.chunkedRequest)) return this.#handoff(c);
      c.route = route;
      c.label = route.path;
      c.bodyStart = end + 4;
      c.contentLength = head.contentLength;
      c.contentType = head.contentType;
      c.closeAfter = head.close;
      c.scanned = 0;
      if (head.contentLength > limits.maxRequestBytes) {
        // 413 before reading the body; the connection cannot be reused.
        return this.#reject(c, new ProtocolError("HTTP_ERR_TOO_LARGE", `the limit is ${limits.maxRequestBytes} bytes`), true);
      }
      c.state = State.Body;
      c.deadline = c.requestStart + limits.requestTimeoutMs;
    }
    if (c.state === State.Body) {
      const buf = c.buf!;
      const bodyEnd = c.bodyStart + c.contentLength;
      if (buf.length < bodyEnd) return;
      const body = buf.subarray(c.bodyStart, bodyEnd);
      c.buf = buf.length > bodyEnd ? buf.subarray(bodyEnd) : undefined;
      c.state = State.Busy;
      this.#resumeIfRoom(c);
      this.#dispatch(c, body);
    }
  }

  #dispatch(c: Conn<S>, body: Buffer): void {
    if (!isMediaType(c.contentType, MEDIA_TYPES.request)) {
      return this.#reject(c, new ProtocolError("HTTP_ERR_MEDIA_TYPE", `use ${MEDIA_TYPES.request} or ${MEDIA_TYPES.chunkedRequest}`), false);
    }
    // RFC 9458 §5: a relay MAY reject obviously invalid requests, such as an empty one.
    if (body.length === 0) return this.#reject(c, new ProtocolError("HTTP_ERR_BAD_REQUEST", "the request is empty"), false);
    this.#o.forwarder.forward(c.route!, c.address, body, (err, answer) => {
      if (err !== undefined) this.#reject(c, err, err.code === "HTTP_ERR_UNAVAILABLE");
      else this.#answer(c, answer!);
    });
  }

  #answer(c: Conn<S>, a: UpstreamAnswer): void {
    const head = a.contentType === undefined ? "" : `content-type: ${a.contentType}\r\n`;
    this.#respond(c, a.status, head, a.body, "forwarded", false);
  }

  #reject(c: Conn<S>, err: ProtocolError, close: boolean): void {
    const p = renderProblem(err);
    let head = "";
    // Connection is this front's to decide (#respond).
    for (const [k, v] of p.headers) if (k !== "connection") head += `${k}: ${v}\r\n`;
    this.#respond(c, p.status, head, p.body, err.code, close);
  }

  /** Writes the answer in one go, records it, then reads the next request or closes. */
  #respond(c: Conn<S>, status: number, fields: string, body: Uint8Array, outcome: string, forceClose: boolean): void {
    const route = c.label;
    const durationMs = performance.now() - c.startedAt;
    if (c.state === State.Gone || c.state === State.Lingering || c.socket.destroyed) {
      this.#o.recorder.record(route, "POST", status, "client_closed", durationMs);
      return;
    }
    const close = forceClose || c.closeAfter || c.ended || this.#o.drain.closesConnections;
    const head = `${statusLine(status)}${fields}content-length: ${body.length}\r\n${close ? "connection: close\r\n" : ""}\r\n`;
    // One buffer, one write: head (latin1: the gateway's Content-Type bytes as received) then body.
    const out = Buffer.allocUnsafe(head.length + body.length);
    out.write(head, 0, "latin1");
    out.set(body, head.length);
    c.socket.write(out);
    this.#o.recorder.record(route, "POST", status, outcome, durationMs);
    c.route = undefined;
    c.label = UNMATCHED;
    c.contentType = undefined;
    if (close) {
      this.#close(c);
      return;
    }
    c.state = State.Idle;
    if (c.socket.writableLength > MAX_UNSENT_BYTES) {
      // The client is not reading its answers: read nothing more until they drain ("drain").
      c.blocked = true;
      c.deadline = this.#now() + this.#o.limits.requestTimeoutMs;
      c.socket.pause();
      return;
    }
    c.deadline = this.#now() + this.#o.limits.keepAliveTimeoutMs;
    this.#resumeIfRoom(c);
    // Pipelined requests (or the client's end): continue on a fresh stack.
    if (c.buf !== undefined || c.ended) queueMicrotask(() => this.#next(c));
  }

  /**
   * Ends the connection once the answers written are sent; unread client bytes are drained and
   * dropped meanwhile (a lingering close, as nginx does), so the client reads its answer instead of
   * a connection reset. Cut at the deadline: LINGER_MS, or requestTimeoutMs while answers are unsent.
   */
  #close(c: Conn<S>): void {
    c.state = State.Lingering;
    c.buf = undefined;
    c.store = undefined;
    c.blocked = false;
    c.deadline = this.#now() + (c.socket.writableLength > 0 ? this.#o.limits.requestTimeoutMs : LINGER_MS);
    c.socket.end();
    c.socket.resume();
  }

  /** From this request on, node:http serves the connection, starting with the unread bytes. */
  #handoff(c: Conn<S>): void {
    const socket = c.socket;
    socket.pause();
    c.detach?.();
    c.state = State.Gone;
    this.#conns.delete(c);
    if (c.buf !== undefined) socket.unshift(c.buf);
    c.buf = undefined;
    this.#o.handoff(socket);
    socket.resume();
  }

  /**
   * Acts on every connection past its deadline (called every few ms; tests call it with their
   * clock): a request not received in time gets 408 (as node:http answers it), a connection idle
   * past its keep-alive timeout is closed once its answers are sent, and one with answers unread
   * for requestTimeoutMs, or lingering past its deadline, is cut. A connection waiting for the gateway has no deadline here (the upstream's
   * timeouts answer it).
   */
  sweep(): void {
    const now = this.#now();
    for (const c of this.#conns) {
      if (now < c.deadline || c.state === State.Busy) continue;
      switch (c.state) {
        case State.Head:
        case State.Body:
          this.#reject(c, new ProtocolError("HTTP_ERR_TIMEOUT"), true);
          break;
        case State.Idle:
          // Idle past the keep-alive timeout: closed after the answers written are sent. Answers
          // left unread for requestTimeoutMs (blocked): cut.
          if (c.blocked) this.#cut(c);
          else this.#close(c);
          break;
        default:
          this.#cut(c);
      }
    }
  }

  #cut(c: Conn<S>): void {
    c.state = State.Gone;
    this.#conns.delete(c);
    c.socket.destroy();
  }
}
