// The relay's lean HTTP/1.1 front for its one hot request: `POST <route path>` with a
// Content-Length body. It sits on the connections of the node:http(s) server that Fastify owns
// (relay/app.ts puts it in front of node:http's connection listener) and reads each connection
// itself until a request is anything other than a canonical POST to a route (relay/http1.ts): from
// that request on, the connection, with the bytes already read, is handed to node:http and Fastify,
// which serve everything else (keys, health, metrics, 404, 405, chunked bodies, Expect, HTTP/1.0,
// malformed requests) and also relay non-canonical POSTs with the same checks (relay/routes/).
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

import { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
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

export interface FrontOptions {
  /** Route path (exact request-target) -> route. */
  routes: ReadonlyMap<string, RelayRoute>;
  forwarder: Forwarder;
  recorder: RequestRecorder;
  /** The server's drain state: while stopping, every answer closes its connection. */
  drain: DrainState;
  limits: Pick<RelayLimits, "maxRequestBytes" | "maxHeaderBytes" | "headersTimeoutMs" | "requestTimeoutMs" | "keepAliveTimeoutMs">;
  /** Gives a connection to node:http (its connection listener). */
  handoff: (socket: Socket) => void;
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
  /** Answered with Connection: close; unread client bytes are drained until the client closes. */
  Lingering,
  /** Closed or handed to node:http. */
  Gone,
}

interface Conn {
  socket: Socket;
  /** Captured once: used only for the rate limit. */
  address: string;
  state: State;
  deadline: number;
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
const UNMATCHED = "(unmatched)";

/**
 * Adds a chunk to the unread bytes: zero-copy for the first, amortised O(1) copying after it (a
 * request trickled in byte by byte must not cost a copy of everything before each byte).
 */
function append(c: Conn, chunk: Buffer): void {
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

export class Front {
  readonly #o: FrontOptions;
  readonly #now: () => number;
  readonly #conns = new Set<Conn>();
  readonly #sweeper: NodeJS.Timeout;

  constructor(opts: FrontOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    const l = opts.limits;
    const tick = Math.max(10, Math.min(1000, Math.floor(Math.min(l.headersTimeoutMs, l.requestTimeoutMs, l.keepAliveTimeoutMs) / 4)));
    this.#sweeper = setInterval(() => this.#sweep(), tick);
    this.#sweeper.unref();
  }

  /** Connections currently served by the lean path. */
  get connections(): number {
    return this.#conns.size;
  }

  /** A new connection (plain TCP, or TLS after the handshake). */
  accept(socket: Socket): void {
    socket.setNoDelay(true);
    const conn: Conn = {
      socket,
      address: socket.remoteAddress ?? "unknown",
      state: State.Idle,
      deadline: this.#now() + this.#o.limits.headersTimeoutMs,
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
    const onError = (): void => {
      socket.destroy();
    };
    const onClose = (): void => {
      conn.state = State.Gone;
      this.#conns.delete(conn);
    };
    socket.on("data", onData);
    socket.on("end", onEnd);
    socket.on("error", onError);
    socket.on("close", onClose);
    conn.detach = () => {
      socket.off("data", onData);
      socket.off("end", onEnd);
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

  #onData(c: Conn, chunk: Buffer): void {
    if (c.state === State.Lingering || c.state === State.Gone) return;
    append(c, chunk);
    if (c.state !== State.Busy) {
      this.#process(c);
    } else if ((c.buf?.length ?? 0) > this.#o.limits.maxHeaderBytes + this.#o.limits.maxRequestBytes) {
      // A client pipelining ahead while its request is with the gateway: stop reading (not paused
      // per request, which costs a tick per request on the common path).
      c.socket.pause();
    }
  }

  #onEnd(c: Conn): void {
    c.ended = true;
    if (c.state === State.Busy) return; // answered first, then closed
    if (c.state === State.Idle && c.buf === undefined) c.socket.end();
    else c.socket.destroy();
  }

  /** Reads as far as the buffered bytes go: a head, a body, then the checks and the forward. */
  #process(c: Conn): void {
    const limits = this.#o.limits;
    if (c.state === State.Idle || c.state === State.Head) {
      const buf = c.buf;
      if (buf === undefined) return;
      const end = buf.indexOf(CRLFCRLF, Math.max(0, c.scanned - 3));
      if (end < 0) {
        // Larger heads are node:http's to refuse (431).
        if (buf.length > limits.maxHeaderBytes) return this.#handoff(c);
        c.scanned = buf.length;
        if (c.state === State.Idle) {
          c.state = State.Head;
          c.startedAt = performance.now();
          c.deadline = this.#now() + limits.headersTimeoutMs;
        }
        return;
      }
      if (end > limits.maxHeaderBytes) return this.#handoff(c);
      const head = parseCanonicalPost(buf.toString("latin1", 0, end));
      const route = head === undefined ? undefined : this.#o.routes.get(head.target);
      if (head === undefined || route === undefined) return this.#handoff(c);
      if (head.origin !== undefined && this.#o.handOffOrigin === true) return this.#handoff(c);
      if (c.state === State.Idle) c.startedAt = performance.now();
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
      c.deadline = this.#now() + limits.requestTimeoutMs;
    }
    if (c.state === State.Body) {
      const buf = c.buf!;
      const bodyEnd = c.bodyStart + c.contentLength;
      if (buf.length < bodyEnd) return;
      const body = buf.subarray(c.bodyStart, bodyEnd);
      c.buf = buf.length > bodyEnd ? buf.subarray(bodyEnd) : undefined;
      c.state = State.Busy;
      this.#dispatch(c, body);
    }
  }

  #dispatch(c: Conn, body: Buffer): void {
    if (!isMediaType(c.contentType, MEDIA_TYPES.request)) {
      return this.#reject(c, new ProtocolError("HTTP_ERR_MEDIA_TYPE", `use ${MEDIA_TYPES.request}`), false);
    }
    // RFC 9458 §5: a relay MAY reject obviously invalid requests, such as an empty one.
    if (body.length === 0) return this.#reject(c, new ProtocolError("HTTP_ERR_BAD_REQUEST", "the request is empty"), false);
    this.#o.forwarder.forward(c.route!, c.address, body, (err, answer) => {
      if (err !== undefined) this.#reject(c, err, err.code === "HTTP_ERR_UNAVAILABLE");
      else this.#answer(c, answer!);
    });
  }

  #answer(c: Conn, a: UpstreamAnswer): void {
    const head = a.contentType === undefined ? "" : `content-type: ${a.contentType}\r\n`;
    this.#respond(c, a.status, head, a.body, "forwarded", false);
  }

  #reject(c: Conn, err: ProtocolError, close: boolean): void {
    const p = renderProblem(err);
    let head = "";
    // Connection is this front's to decide (#respond).
    for (const [k, v] of p.headers) if (k !== "connection") head += `${k}: ${v}\r\n`;
    this.#respond(c, p.status, head, p.body, err.code, close);
  }

  /** Writes the answer in one go, records it, then reads the next request or closes. */
  #respond(c: Conn, status: number, fields: string, body: Uint8Array, outcome: string, forceClose: boolean): void {
    const route = c.label;
    const durationMs = performance.now() - c.startedAt;
    if (c.state === State.Gone || c.socket.destroyed) {
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
      if (c.state === State.Body || c.state === State.Head || (c.buf !== undefined && !c.ended)) {
        // Unread request bytes may follow: drain them so the client reads this answer instead of
        // a connection reset (a lingering close, as nginx does).
        c.state = State.Lingering;
        c.buf = undefined;
        c.deadline = this.#now() + LINGER_MS;
        c.socket.end();
        c.socket.resume();
      } else {
        this.#close(c);
      }
      return;
    }
    c.state = State.Idle;
    c.deadline = this.#now() + this.#o.limits.keepAliveTimeoutMs;
    if (c.socket.isPaused()) c.socket.resume();
    // Pipelined requests: continue on a fresh stack.
    if (c.buf !== undefined) queueMicrotask(() => this.#process(c));
  }

  #close(c: Conn): void {
    c.state = State.Gone;
    this.#conns.delete(c);
    c.socket.destroySoon();
  }

  /** From this request on, node:http serves the connection, starting with the unread bytes. */
  #handoff(c: Conn): void {
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

  #sweep(): void {
    const now = this.#now();
    for (const c of this.#conns) {
      if (now < c.deadline || c.state === State.Busy) continue;
      switch (c.state) {
        case State.Head:
        case State.Body:
          // As node:http does when a request is not received in time.
          this.#reject(c, new ProtocolError("HTTP_ERR_TIMEOUT"), true);
          break;
        default:
          c.state = State.Gone;
          this.#conns.delete(c);
          c.socket.destroy();
      }
    }
  }
}
