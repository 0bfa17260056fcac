// The relay's connection to one gateway: a pool of keep-alive HTTP/1.1 connections (TCP or TLS,
// with the route's CA and optional client certificate) that sends encapsulated requests and reads
// the answers.
//
// Why not undici: on the forwarding hot path undici's dispatcher machinery cost about 40% of the
// relay's throughput in bench/relay.ts (per request it builds a Request object, runs interceptors
// and header validation, and parses with llhttp-in-wasm). The relay sends exactly one request shape
// (POST, three fixed headers, a buffered body) and reads one answer, so a small client does the job
// with every limit explicit. undici is still used where speed does not matter (key fetches).
//
// Chunked OHTTP (draft-ietf-ohai-chunked-ohttp-08) goes through `openStream`: the request is sent
// with chunked transfer coding as the caller writes it (no Content-Length: its length is unknown),
// the answer's head and body pieces are handed on as they arrive, and both directions apply
// backpressure (`write` returns false until `drain`; `pause`/`resume` stop reading the answer). A
// stream the caller aborts destroys the connection without the terminating zero-length chunk, so
// the gateway never sees that request complete.
//
// Rules this client keeps (RFC 9458 §5, §6.2, §6.5):
// - It sends only Host, Content-Type, Content-Length (Transfer-Encoding: chunked and
//   Incremental: ?1 for a stream) and the operator's own auth header.
// - It never retries: a request that failed for any reason is answered 502/504, even when the
//   connection was a reused keep-alive one (a broken connection is no proof that nothing was
//   processed). Idle connections are closed before the gateway's keep-alive timeout to make that rare.
// - Every phase has a deadline: waiting for a connection + connecting (connectMs), the answer
//   headers (headersMs after the request was written), each pause in the answer body (bodyMs).

import { isIP, connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { ProtocolError } from "../core/errors.js";
import type { Secret } from "../core/secret.js";
import { ResponseParser } from "./http1.js";

export interface UpstreamOptions {
  /** The gateway URL requests are POSTed to. */
  gateway: URL;
  /** TLS material for an https gateway: CA(s) instead of the system store, client certificate. */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  /** The operator's own header authenticating the relay to the gateway. */
  authHeader?: { name: string; value: Secret<string> };
  connectMs: number;
  headersMs: number;
  bodyMs: number;
  keepAliveMs: number;
  maxConnections: number;
  maxResponseBytes: number;
  /** Cap on a streamed answer's body (counted as it passes; the stream fails above it). */
  maxStreamedResponseBytes?: number;
  maxHeaderBytes: number;
  /** Clock in ms (injected in tests). */
  now?: () => number;
  /** Opens a connection to the gateway (injected in tests; default: TCP or TLS to `gateway`). */
  connect?: () => UpstreamSocket;
}

/** What the pool needs of a connection: a net.Socket or tls.TLSSocket (a model socket in tests). */
export interface UpstreamSocket {
  readonly destroyed: boolean;
  setNoDelay(noDelay?: boolean): unknown;
  once(event: "connect" | "secureConnect", listener: () => void): unknown;
  on(event: "data", listener: (chunk: Buffer) => void): unknown;
  on(event: "end" | "close" | "drain", listener: () => void): unknown;
  on(event: "error", listener: (err: Error) => void): unknown;
  write(data: Buffer | string): unknown;
  cork(): void;
  uncork(): void;
  destroy(): unknown;
  /** Streams only (openStream): backpressure on the request (`drain`) and on the answer (pause). */
  readonly writableNeedDrain: boolean;
  pause(): unknown;
  resume(): unknown;
  isPaused(): boolean;
}

export interface UpstreamAnswer {
  status: number;
  contentType: string | undefined;
  body: Buffer;
}

export type UpstreamCallback = (err: ProtocolError | undefined, answer: UpstreamAnswer | undefined) => void;

/**
 * What a streamed exchange reports, in this order: `head` once, `body` for each piece of the answer,
 * then exactly one of `end` (the answer is complete) or `error` (it is not, whatever was passed on;
 * also before `head`). `drain` says the gateway takes request bytes again after `write` returned false.
 */
export interface StreamHandlers {
  head(status: number, contentType: string | undefined): void;
  body(piece: Buffer): void;
  end(): void;
  error(err: ProtocolError): void;
  drain(): void;
}

/** The caller's side of a streamed exchange (`Upstream.openStream`). */
export interface UpstreamStream {
  /** Sends a piece of the request body; false: wait for `drain` before writing more. */
  write(piece: Buffer): boolean;
  /** The request body is complete: sends the terminating chunk. */
  end(): void;
  /** Gives up: the connection is destroyed, so the gateway never sees the request complete. No handler is called after it. */
  abort(): void;
  /** Stops reading the answer (the client is not taking it as fast). */
  pause(): void;
  resume(): void;
}

interface StreamState {
  handlers: StreamHandlers;
  /** Pieces written before a connection was ready. */
  queued: Buffer[];
  /** The caller called end(). */
  ended: boolean;
  /** The terminating chunk was written. */
  endWritten: boolean;
  /** The answer is complete (`end` reported). */
  answered: boolean;
  paused: boolean;
}

const enum Phase {
  Queued,
  Connecting,
  Headers,
  Body,
}

interface Pending {
  body: Buffer;
  cb: UpstreamCallback;
  /** Set for a streamed exchange (then `body` is empty and `cb` reports only errors). */
  stream: StreamState | undefined;
  phase: Phase;
  deadline: number;
  conn: Connection | undefined;
  parser: ResponseParser | undefined;
}

interface Connection {
  socket: UpstreamSocket;
  connected: boolean;
  current: Pending | undefined;
  /** When an idle connection is closed (ms). */
  idleUntil: number;
  keepAliveMs: number;
}

/** A gateway's keep-alive hint is shortened by this much (transport delays, clock granularity). */
const KEEP_ALIVE_MARGIN_MS = 1000;
const CRLF = Buffer.from("\r\n", "latin1");
const LAST_CHUNK = Buffer.from("0\r\n\r\n", "latin1");
const EMPTY = Buffer.alloc(0);

function timeout(phase: Phase): ProtocolError {
  const what = phase === Phase.Body ? "the answer body stalled" : phase === Phase.Headers ? "no answer headers in time" : "no connection in time";
  return new ProtocolError("RELAY_ERR_UPSTREAM_TIMEOUT", what);
}

export class Upstream {
  readonly #opts: UpstreamOptions;
  readonly #now: () => number;
  readonly #isTls: boolean;
  readonly #host: string;
  readonly #port: number;
  readonly #servername: string | undefined;
  /** `POST <path> HTTP/1.1` and the fixed header lines, up to the Content-Length value. */
  readonly #prefix: Buffer;
  /** The whole head of a streamed request. */
  readonly #streamHead: Buffer;
  readonly #idle: Connection[] = [];
  readonly #all = new Set<Connection>();
  readonly #queue: Pending[] = [];
  readonly #active = new Set<Pending>();
  readonly #sweeper: NodeJS.Timeout;
  #closed = false;

  constructor(opts: UpstreamOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    const url = opts.gateway;
    this.#isTls = url.protocol === "https:";
    this.#host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
    this.#port = url.port === "" ? (this.#isTls ? 443 : 80) : Number(url.port);
    // RFC 6066 §3: no SNI for an IP address literal.
    this.#servername = isIP(this.#host) === 0 ? this.#host : undefined;
    const auth = opts.authHeader === undefined ? "" : `${opts.authHeader.name}: ${opts.authHeader.value.reveal()}\r\n`;
    const path = `${url.pathname}${url.search}`;
    this.#prefix = Buffer.from(`POST ${path} HTTP/1.1\r\nhost: ${url.host}\r\ncontent-type: message/ohttp-req\r\n${auth}content-length: `, "latin1");
    // draft-ietf-ohai-chunked-ohttp-08 §3: Incremental: ?1 asks every intermediary to forward the
    // message as it comes. It is sent on every stream (never copied from the client, so it carries
    // nothing of the client's own).
    this.#streamHead = Buffer.from(
      `POST ${path} HTTP/1.1\r\nhost: ${url.host}\r\ncontent-type: message/ohttp-chunked-req\r\nincremental: ?1\r\n${auth}transfer-encoding: chunked\r\n\r\n`,
      "latin1",
    );
    const tick = Math.max(5, Math.min(250, Math.floor(Math.min(opts.connectMs, opts.headersMs, opts.bodyMs, opts.keepAliveMs) / 8)));
    this.#sweeper = setInterval(() => this.#sweep(), tick);
    this.#sweeper.unref();
  }

  /** Open connections (for metrics). */
  get connections(): number {
    return this.#all.size;
  }

  /** Sends `body` as `message/ohttp-req`; `cb` gets the answer or a ProtocolError, exactly once. */
  forward(body: Buffer, cb: UpstreamCallback): void {
    if (this.#closed) {
      cb(new ProtocolError("HTTP_ERR_UNAVAILABLE"), undefined);
      return;
    }
    this.#start({ body, cb, stream: undefined, phase: Phase.Queued, deadline: this.#now() + this.#opts.connectMs, conn: undefined, parser: undefined });
  }

  /**
   * Starts a streamed exchange (a `message/ohttp-chunked-req`): the request body is what the
   * caller writes, the answer goes to `handlers` as it arrives. Deadlines here: connectMs to get a
   * connection, headersMs from the request's end to the answer's head; pauses while the request or
   * the answer streams are the caller's to bound (the two sides' backpressure meets there).
   */
  openStream(handlers: StreamHandlers): UpstreamStream {
    const s: StreamState = { handlers, queued: [], ended: false, endWritten: false, answered: false, paused: false };
    const p: Pending = {
      body: EMPTY,
      cb: (err) => handlers.error(err ?? new ProtocolError("INTERNAL_ERR")),
      stream: s,
      phase: Phase.Queued,
      deadline: this.#now() + this.#opts.connectMs,
      conn: undefined,
      parser: undefined,
    };
    if (this.#closed) {
      queueMicrotask(() => handlers.error(new ProtocolError("HTTP_ERR_UNAVAILABLE")));
    } else {
      this.#start(p);
    }
    return {
      write: (piece) => this.#streamWrite(p, piece),
      end: () => this.#streamEnd(p),
      abort: () => this.#streamAbort(p),
      pause: () => {
        s.paused = true;
        p.conn?.socket.pause();
      },
      resume: () => {
        s.paused = false;
        p.conn?.socket.resume();
      },
    };
  }

  #start(p: Pending): void {
    this.#active.add(p);
    let conn = this.#idle.pop();
    while (conn !== undefined && conn.socket.destroyed) conn = this.#idle.pop();
    if (conn !== undefined) {
      this.#send(conn, p);
    } else if (this.#all.size < this.#opts.maxConnections) {
      this.#open(p);
    } else {
      this.#queue.push(p);
    }
  }

  /** Closes every connection; anything still pending fails. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#sweeper);
    for (const p of [...this.#active]) this.#fail(p, new ProtocolError("HTTP_ERR_UNAVAILABLE"));
    for (const c of [...this.#all]) c.socket.destroy();
    this.#all.clear();
    this.#idle.length = 0;
  }

  #open(p: Pending): void {
    p.phase = Phase.Connecting;
    const socket = this.#opts.connect?.() ?? this.#connect();
    socket.setNoDelay(true);
    const conn: Connection = { socket, connected: false, current: p, idleUntil: 0, keepAliveMs: this.#opts.keepAliveMs };
    p.conn = conn;
    this.#all.add(conn);
    socket.once(this.#isTls ? "secureConnect" : "connect", () => {
      conn.connected = true;
      const q = conn.current;
      if (q !== undefined) this.#write(conn, q);
      else this.#release(conn);
    });
    socket.on("data", (chunk: Buffer) => this.#onData(conn, chunk));
    socket.on("end", () => this.#onEnd(conn));
    socket.on("drain", () => {
      const s = conn.current?.stream;
      if (s !== undefined && !s.endWritten) s.handlers.drain();
    });
    socket.on("error", (e: Error) => this.#onBroken(conn, e));
    socket.on("close", () => this.#onBroken(conn, undefined));
  }

  #connect(): Socket {
    const tls = this.#opts.tls;
    return this.#isTls
      ? tlsConnect({
          host: this.#host,
          port: this.#port,
          ...(this.#servername === undefined ? {} : { servername: this.#servername }),
          ...(tls?.ca === undefined ? {} : { ca: tls.ca }),
          ...(tls?.cert === undefined ? {} : { cert: tls.cert }),
          ...(tls?.key === undefined ? {} : { key: tls.key }),
          ALPNProtocols: ["http/1.1"],
          rejectUnauthorized: true,
        })
      : netConnect({ host: this.#host, port: this.#port });
  }

  #send(conn: Connection, p: Pending): void {
    conn.current = p;
    p.conn = conn;
    this.#write(conn, p);
  }

  #write(conn: Connection, p: Pending): void {
    if (p.stream !== undefined) return this.#writeStreamHead(conn, p, p.stream);
    p.phase = Phase.Headers;
    p.deadline = this.#now() + this.#opts.headersMs;
    p.parser = new ResponseParser({ maxHeaderBytes: this.#opts.maxHeaderBytes, maxBodyBytes: this.#opts.maxResponseBytes });
    const length = `${p.body.length}\r\n\r\n`;
    if (p.body.length <= 16 * 1024) {
      // One buffer, one write.
      const prefix = this.#prefix;
      const out = Buffer.allocUnsafe(prefix.length + length.length + p.body.length);
      prefix.copy(out, 0);
      out.write(length, prefix.length, "latin1");
      p.body.copy(out, prefix.length + length.length);
      conn.socket.write(out);
    } else {
      conn.socket.cork();
      conn.socket.write(this.#prefix);
      conn.socket.write(length);
      conn.socket.write(p.body);
      conn.socket.uncork();
    }
  }

  #writeStreamHead(conn: Connection, p: Pending, s: StreamState): void {
    p.phase = Phase.Headers;
    p.deadline = Infinity;
    p.parser = new ResponseParser({
      maxHeaderBytes: this.#opts.maxHeaderBytes,
      maxBodyBytes: this.#opts.maxStreamedResponseBytes ?? this.#opts.maxResponseBytes,
      onHead: () => {
        if (!this.#active.has(p)) return;
        p.phase = Phase.Body;
        p.deadline = Infinity;
        s.handlers.head(p.parser!.status, p.parser!.contentType);
      },
      // (An abort from inside a handler stops the rest of the chunk from being reported.)
      onBody: (piece) => {
        if (this.#active.has(p)) s.handlers.body(piece);
      },
    });
    if (s.paused) conn.socket.pause();
    const socket = conn.socket;
    socket.cork();
    socket.write(this.#streamHead);
    for (const piece of s.queued) this.#writeChunk(socket, piece);
    s.queued.length = 0;
    if (s.ended) this.#writeEnd(p, s);
    socket.uncork();
    // The caller waits for `drain` since its first write was queued.
    if (!s.endWritten && !socket.writableNeedDrain) s.handlers.drain();
  }

  #writeChunk(socket: UpstreamSocket, piece: Buffer): boolean {
    socket.write(`${piece.length.toString(16)}\r\n`);
    socket.write(piece);
    socket.write(CRLF);
    return !socket.writableNeedDrain;
  }

  #writeEnd(p: Pending, s: StreamState): void {
    s.endWritten = true;
    p.conn!.socket.write(LAST_CHUNK);
    if (!s.answered && p.phase === Phase.Headers) p.deadline = this.#now() + this.#opts.headersMs;
  }

  #streamWrite(p: Pending, piece: Buffer): boolean {
    const s = p.stream!;
    if (!this.#active.has(p) || s.ended || piece.length === 0) return true;
    const conn = p.conn;
    if (conn === undefined || !conn.connected || conn.current !== p) {
      s.queued.push(piece);
      return false;
    }
    return this.#writeChunk(conn.socket, piece);
  }

  #streamEnd(p: Pending): void {
    const s = p.stream!;
    if (s.ended || !this.#active.has(p)) return;
    s.ended = true;
    const conn = p.conn;
    if (conn === undefined || !conn.connected || conn.current !== p) return; // written with the head
    this.#writeEnd(p, s);
    if (s.answered) this.#finishStream(conn, p);
  }

  #streamAbort(p: Pending): void {
    if (!this.#active.delete(p)) return;
    const i = this.#queue.indexOf(p);
    if (i >= 0) this.#queue.splice(i, 1);
    const conn = p.conn;
    if (conn !== undefined && conn.current === p) {
      conn.current = undefined;
      // No terminating chunk: the gateway sees a request that broke off.
      conn.socket.destroy();
    }
  }

  /** Both directions are complete: the connection is reused if the answer allows it. */
  #finishStream(conn: Connection, p: Pending): void {
    this.#active.delete(p);
    conn.current = undefined;
    const parser = p.parser!;
    if (parser.keepAlive && parser.extra === 0 && !this.#closed) {
      if (conn.socket.isPaused()) conn.socket.resume();
      this.#release(conn);
    } else {
      conn.socket.destroy();
    }
  }

  #onData(conn: Connection, chunk: Buffer): void {
    const p = conn.current;
    if (p === undefined || p.parser === undefined) {
      // Bytes nobody asked for: the connection is out of step.
      conn.socket.destroy();
      return;
    }
    let complete: boolean;
    try {
      complete = p.parser.execute(chunk);
    } catch (e) {
      this.#fail(p, e instanceof ProtocolError ? e : new ProtocolError("RELAY_ERR_UPSTREAM_INVALID", undefined, { cause: e }));
      conn.socket.destroy();
      return;
    }
    if (complete) {
      this.#complete(conn, p);
    } else if (!p.parser.inHead && p.stream === undefined) {
      p.phase = Phase.Body;
      p.deadline = this.#now() + this.#opts.bodyMs;
    }
  }

  #onEnd(conn: Connection): void {
    const p = conn.current;
    if (p?.parser !== undefined && p.parser.finish()) {
      this.#complete(conn, p);
      return;
    }
    conn.socket.destroy();
  }

  #onBroken(conn: Connection, e: Error | undefined): void {
    if (!this.#all.delete(conn)) return;
    const i = this.#idle.indexOf(conn);
    if (i >= 0) this.#idle.splice(i, 1);
    conn.socket.destroy();
    const p = conn.current;
    conn.current = undefined;
    if (p !== undefined) {
      const code = conn.connected ? "RELAY_ERR_UPSTREAM_FAILED" : "RELAY_ERR_UPSTREAM_UNREACHABLE";
      this.#fail(p, new ProtocolError(code, undefined, e === undefined ? {} : { cause: e }));
    }
    this.#drainQueue();
  }

  #complete(conn: Connection, p: Pending): void {
    const s = p.stream;
    if (s !== undefined) {
      if (s.answered || !this.#active.has(p)) return;
      s.answered = true;
      // The answer may be complete before the request (the gateway answered early): the
      // connection stays with this exchange until the caller ends or aborts its request.
      if (s.endWritten) this.#finishStream(conn, p);
      s.handlers.end();
      return;
    }
    const parser = p.parser!;
    conn.current = undefined;
    this.#active.delete(p);
    const answer: UpstreamAnswer = { status: parser.status, contentType: parser.contentType, body: parser.body() };
    if (parser.keepAlive && parser.extra === 0 && !this.#closed) {
      if (parser.keepAliveTimeoutMs !== undefined) {
        conn.keepAliveMs = Math.max(0, Math.min(this.#opts.keepAliveMs, parser.keepAliveTimeoutMs - KEEP_ALIVE_MARGIN_MS));
      }
      this.#release(conn);
    } else {
      conn.socket.destroy();
    }
    p.cb(undefined, answer);
  }

  /** A connection is free: give it to the next queued request or park it. */
  #release(conn: Connection): void {
    if (conn.keepAliveMs === 0) {
      conn.socket.destroy();
      this.#drainQueue();
      return;
    }
    const next = this.#queue.shift();
    if (next !== undefined) {
      this.#send(conn, next);
      return;
    }
    conn.idleUntil = this.#now() + conn.keepAliveMs;
    this.#idle.push(conn);
  }

  #drainQueue(): void {
    while (this.#queue.length > 0 && this.#all.size < this.#opts.maxConnections && !this.#closed) {
      this.#open(this.#queue.shift()!);
    }
  }

  #fail(p: Pending, err: ProtocolError): void {
    if (!this.#active.delete(p)) return;
    if (p.stream?.answered === true) {
      // The answer was complete: what fails now is only the rest of a request nobody waits for.
      if (p.conn !== undefined && p.conn.current === p) p.conn.current = undefined;
      return;
    }
    const i = this.#queue.indexOf(p);
    if (i >= 0) this.#queue.splice(i, 1);
    if (p.conn !== undefined && p.conn.current === p) p.conn.current = undefined;
    p.cb(err, undefined);
  }

  #sweep(): void {
    const now = this.#now();
    for (const p of this.#active) {
      if (now < p.deadline) continue;
      const conn = p.conn;
      this.#fail(p, timeout(p.phase));
      // The connection is out of step with its request (or not connected yet): never reused.
      if (conn !== undefined) conn.socket.destroy();
    }
    for (let i = this.#idle.length - 1; i >= 0; i--) {
      const conn = this.#idle[i]!;
      if (now >= conn.idleUntil) {
        this.#idle.splice(i, 1);
        conn.socket.destroy();
      }
    }
  }
}
