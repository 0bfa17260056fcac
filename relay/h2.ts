// The relay's HTTP/2 front: streams of the `h2` connections that the TLS listener negotiates by ALPN
// (server/lifecycle.ts makes a node:http2 secure server with allowHTTP1; HTTP/1.1 connections on the
// same port keep their path, relay/front.ts and node:http). A `POST <route path>` stream is served
// here; every other stream (keys, /healthz, /metrics, 404, 405, preflights) goes on to node's
// compatibility layer and Fastify, as HTTP/1.1 requests do.
//
// The rules are those of HTTP/1.1 (relay/forward.ts checks and forwards, server/lean-answers.ts
// records, server/problem-handler.ts renders the problems): only the body goes to the gateway, with
// the relay's own Content-Type and Content-Length (no pseudo-header, cookie or user agent; request
// trailers are dropped); 413 (declared or counted while reading), 415, 429, 503 as problem
// documents; nothing of the client in logs or metrics.
//
// HTTP/2 specifics:
// - A `message/ohttp-req` stream is forwarded only once its body is complete (END_STREAM): a stream
//   the client resets, or that times out, never becomes a gateway request. A `content-length` that
//   disagrees with the DATA received makes the stream malformed (RFC 9113 §8.1.1): nghttp2 resets
//   it with PROTOCOL_ERROR, and the check is repeated here before forwarding.
// - Memory per connection: each stream's body is at most maxRequestBytes; the request bytes being
//   read plus the answer bytes not yet sent on a connection are kept under
//   http2.maxBufferedBytes, and the requests a connection has in progress (being read, or with the
//   gateway, also after the client reset their stream) under http2.maxConcurrentStreams: a stream
//   beyond either is reset with REFUSED_STREAM, which tells the client it was not processed (RFC
//   9113 §8.7) so it may retry it (RFC 9458 §6.5). The connection stays open for the uploads in flight.
// - Rapid reset (CVE-2023-44487): reset streams are never forwarded and their gateway requests in
//   flight still count against the cap above; a client that cancels more than http2.maxClientResets
//   streams within RESET_WINDOW_MS gets GOAWAY(ENHANCE_YOUR_CALM) and its connection is closed
//   (nghttp2's own limit, a burst of 1000 then 33 per second, is far looser).
// - Timeouts: a request body not complete within requestTimeoutMs of its HEADERS gets 408; an
//   answer the client does not take (no WINDOW_UPDATE) within requestTimeoutMs is reset; a
//   connection with no stream for keepAliveTimeoutMs is closed with GOAWAY(NO_ERROR).
// - Graceful stop: GOAWAY(NO_ERROR) to every connection when the drain begins (where HTTP/1.1
//   answers carry Connection: close): streams already received finish, new ones go elsewhere.

import { constants as h2c, type Http2SecureServer, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from "node:http2";
import { performance } from "node:perf_hooks";
import type { Counter } from "prom-client";
import { ProtocolError } from "../core/errors.js";
import { isMediaType } from "../core/http-fields.js";
import { MEDIA_TYPES } from "../core/ohttp/index.js";
import type { CorsPolicy } from "../server/cors.js";
import type { DrainState, RequestRecorder } from "../server/lean-answers.js";
import { renderProblem } from "../server/problem-handler.js";
import type { RelayConfig, RelayLimits } from "./config.js";
import type { Forwarder, RelayRoute } from "./forward.js";
import type { UpstreamAnswer } from "./upstream.js";

export type Http2Config = RelayConfig["http2"];

/** Window in which a connection's client resets are counted (see the file comment). */
export const RESET_WINDOW_MS = 10_000;
/** After GOAWAY, how long a connection gets to finish before it is destroyed. */
const GOAWAY_LINGER_MS = 2_000;

/** How a forwarding stream ended: "timeout" is an answer the client did not take in time. */
export type StreamOutcome = "forwarded" | "answered" | "refused_stream" | "client_reset" | "malformed" | "timeout";

export interface H2FrontOptions {
  routes: ReadonlyMap<string, RelayRoute>;
  forwarder: Forwarder;
  recorder: RequestRecorder;
  drain: DrainState;
  limits: Pick<RelayLimits, "maxRequestBytes" | "maxHeaderBytes" | "requestTimeoutMs" | "keepAliveTimeoutMs">;
  http2: Http2Config;
  /** Allowed browser origins: their answers carry the CORS headers (server/cors.ts). */
  cors?: CorsPolicy;
  /** veil_relay_http2_streams_total{outcome}: forwarding streams by how they ended. */
  streams: Counter<"outcome">;
  /** veil_relay_http2_sessions_total: connections that negotiated h2. */
  sessions: Counter;
  now?: () => number;
}

/** How a request body is taken, by media type: read whole then forwarded, streamed, or refused. */
type BodyHandling = { kind: "whole" } | { kind: "stream" } | { kind: "refuse"; err: ProtocolError };
const WHOLE: BodyHandling = { kind: "whole" };
const STREAM: BodyHandling = { kind: "stream" };

function ignore(): void {}

/**
 * The one place that decides by media type what happens to a forwarding stream's body, as for
 * HTTP/1.1: `message/ohttp-req` read whole; `message/ohttp-chunked-req` streamed (the stream goes
 * to node's compatibility layer and the relay's route, which pass it through with
 * Forwarder.forwardStream, the same exchange as over HTTP/1.1); anything else 415.
 */
function bodyHandling(contentType: string | undefined): BodyHandling {
  if (isMediaType(contentType, MEDIA_TYPES.request)) return WHOLE;
  if (isMediaType(contentType, MEDIA_TYPES.chunkedRequest)) return STREAM;
  return { kind: "refuse", err: new ProtocolError("HTTP_ERR_MEDIA_TYPE", `use ${MEDIA_TYPES.request} or ${MEDIA_TYPES.chunkedRequest}`) };
}

interface Session {
  session: ServerHttp2Session;
  /** Captured once: used only for the rate limit. */
  address: string;
  /** Streams open on the session (all routes). */
  open: number;
  /** Forwarding requests in progress: being read, or with the gateway (also once reset). */
  working: number;
  /** Request bytes buffered plus answer bytes not yet sent. */
  held: number;
  /** Client resets counted in the current window, and when it began. */
  resets: number;
  resetWindowStart: number;
  /** When the session last had no open stream (ms), or 0 while it has some. */
  idleSince: number;
  closing: boolean;
}

const enum Phase {
  Reading,
  /** With the gateway. */
  Forwarding,
  /** Answer written, waiting for the client to take it. */
  Answered,
  Done,
}

interface Stream {
  s: Session;
  stream: ServerHttp2Stream;
  route: RelayRoute;
  phase: Phase;
  /** Bytes this stream counts in s.held. */
  held: number;
  /** Counted in s.working (until answered, closed while reading, or back from the gateway). */
  working: boolean;
  deadline: number;
  startedAt: number;
  origin: string | undefined;
}

type OutgoingHeaders = Record<string, string | number>;

/** A problem document (server/problem-handler.ts) as h2 answer headers and body. */
function problemAnswer(err: ProtocolError): { status: number; headers: OutgoingHeaders; body: Uint8Array } {
  const p = renderProblem(err);
  const headers: OutgoingHeaders = { ":status": p.status };
  // Connection-specific fields do not exist in HTTP/2 (RFC 9113 §8.2.2).
  for (const [k, v] of p.headers) if (k !== "connection") headers[k] = v;
  return { status: p.status, headers, body: p.body };
}

/**
 * Writes a whole answer with its Content-Length. `early`: the request body is not complete and is
 * not wanted (RFC 9113 §8.1: RST_STREAM with NO_ERROR once the answer is sent).
 */
function writeAnswer(stream: ServerHttp2Stream, headers: OutgoingHeaders, body: Uint8Array, early: boolean): void {
  headers["content-length"] = body.length;
  stream.respond(headers);
  stream.end(body);
  if (early) stream.close(h2c.NGHTTP2_NO_ERROR);
}

/**
 * What a served stream's writable side reports as its error once the stream closed cleanly (see
 * destroyClosedStream). Frozen and shared: nothing reads it.
 */
const CLOSED_CLEANLY: Error = Object.freeze(new Error("the stream closed after its answer was sent"));

/** Node's Http2Stream `_destroy`, found on the first stream served (node:http2 does not export the class). */
let http2StreamDestroy: ((this: ServerHttp2Stream, err: Error | null, callback: (err?: Error | null) => void) => void) | undefined;

/** What destroyClosedStream touches: a Duplex's writable state and its `_destroy` hook. */
interface DestroyHooks {
  _destroy: typeof http2StreamDestroy;
  _writableState: { errored: Error | null };
}

/**
 * A served stream's `_destroy`: node's, after marking a stream that closed cleanly (RST_STREAM
 * NO_ERROR or both sides ended) as done with a shared error. Node 20's Writable builds a new
 * ERR_STREAM_DESTROYED (message formatted, stack captured) whenever a write completes on a stream
 * already destroyed, unless the stream has an error already, whether or not anything listens. Every
 * answered stream is in that case: the answer's last DATA frame carries END_STREAM, nghttp2 closes
 * the stream, node destroys it, and only then does the write's callback run. That error was 4–12%
 * of the CPU of an h2 server that answers small requests. Once a stream is destroyed, its writable
 * side's error reaches only callbacks registered for the end of writing (the front registers none)
 * and `finished()` (the front does not use it); a stream reset with an error code is left alone,
 * so node reports its error as before.
 */
function destroyClosedStream(this: ServerHttp2Stream, err: Error | null, callback: (err?: Error | null) => void): void {
  if (err === null && this.closed && this.rstCode === h2c.NGHTTP2_NO_ERROR) {
    const state = (this as unknown as DestroyHooks)._writableState;
    if (state.errored === null) state.errored = CLOSED_CLEANLY;
  }
  http2StreamDestroy!.call(this, err, callback);
}

/** Gives a stream the front serves destroyClosedStream as its `_destroy`. */
export function destroyQuietly(stream: ServerHttp2Stream): void {
  const hooks = stream as unknown as DestroyHooks;
  http2StreamDestroy ??= hooks._destroy;
  hooks._destroy = destroyClosedStream;
}

/** RFC 9113 §6.5.2: a field's size is its name and value lengths plus 32. */
function headerListSize(rawHeaders: readonly string[]): number {
  let n = 0;
  for (const h of rawHeaders) n += h.length;
  return n + (rawHeaders.length / 2) * 32;
}

/** The node:http2 server settings and session limits that go with `config` (server/lifecycle.ts). */
export function http2ServerOptions(config: Http2Config, maxHeaderBytes: number) {
  return {
    settings: {
      maxConcurrentStreams: config.maxConcurrentStreams,
      // The per-stream receive window (RFC 9113's default): the relay reads each body as it comes
      // and counts it against maxRequestBytes and http2.maxBufferedBytes.
      initialWindowSize: 65_535,
      // Header lists up to twice the limit are received and answered 431 (RFC 9113 §10.5.1);
      // larger ones are reset by node:http2 without being decoded further.
      maxHeaderListSize: 2 * maxHeaderBytes,
      enablePush: false,
    },
    maxHeaderListPairs: 128,
    // nghttp2's own memory per session (MB): frames queued, header tables.
    maxSessionMemory: 4,
    // The stream cap is enforced here (REFUSED_STREAM), not by closing the connection.
    maxSessionRejectedStreams: 2 ** 31 - 1,
  };
}

export class H2Front {
  readonly #o: H2FrontOptions;
  readonly #now: () => number;
  readonly #sessions = new Map<ServerHttp2Session, Session>();
  readonly #streams = new Set<Stream>();
  readonly #sweeper: NodeJS.Timeout;
  /** The counter's children by outcome (label hashing per stream is measurable). */
  readonly #outcomes = new Map<StreamOutcome, { inc(): void }>();
  #compat: ((stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => void) | undefined;

  constructor(opts: H2FrontOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    const l = opts.limits;
    const tick = Math.max(10, Math.min(1000, Math.floor(Math.min(l.requestTimeoutMs, l.keepAliveTimeoutMs) / 4)));
    this.#sweeper = setInterval(() => this.sweep(), tick);
    this.#sweeper.unref();
    opts.drain.onDrain(() => this.goawayAll());
  }

  /**
   * Takes the server's streams: node's compatibility listener (which makes the request objects for
   * Fastify) is kept for the streams this front does not serve.
   */
  attach(server: Http2SecureServer): void {
    const compat = server.listeners("stream").filter((l) => l.name === "bound onServerStream");
    if (compat.length !== 1) throw new Error(`expected node:http2's one compatibility stream listener, found ${compat.length}`);
    const listener = compat[0] as (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => void;
    server.removeListener("stream", listener);
    this.#compat = (stream, headers, flags, rawHeaders) => listener.call(server, stream, headers, flags, rawHeaders);
    server.on("session", (session: ServerHttp2Session) => this.#onSession(session));
    server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) =>
      this.#onStream(stream, headers, flags, rawHeaders),
    );
  }

  #count(outcome: StreamOutcome): void {
    let c = this.#outcomes.get(outcome);
    if (c === undefined) {
      c = this.#o.streams.labels({ outcome });
      this.#outcomes.set(outcome, c);
    }
    c.inc();
  }

  /** Open h2 connections. */
  get sessions(): number {
    return this.#sessions.size;
  }

  #onSession(session: ServerHttp2Session): void {
    const s: Session = {
      session,
      address: session.socket?.remoteAddress ?? "unknown",
      open: 0,
      working: 0,
      held: 0,
      resets: 0,
      resetWindowStart: this.#now(),
      idleSince: this.#now(),
      closing: false,
    };
    this.#sessions.set(session, s);
    this.#o.sessions.inc();
    session.on("error", () => {
      // A broken connection: node destroys the session; its streams close with it.
    });
    session.once("close", () => this.#sessions.delete(session));
    // A connection that arrives while the server drains is told at once to go elsewhere.
    if (this.#o.drain.closesConnections) this.#goaway(s);
  }

  #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]): void {
    const s = this.#sessions.get(stream.session as ServerHttp2Session);
    if (s === undefined) {
      stream.close(h2c.NGHTTP2_REFUSED_STREAM);
      return;
    }
    s.open++;
    s.idleSince = 0;
    // (A stream's events come from later turns of the event loop: listening after this is in time.)
    const served = this.#take(s, stream, headers, flags, rawHeaders);
    // One "close" listener per stream: the session's count, then the forwarding stream's end.
    stream.on("close", () => {
      if (--s.open === 0) s.idleSince = this.#now();
      if (served !== undefined) this.#onClose(served);
    });
    // Reset by the client or broken with the connection: handled on "close".
    stream.on("error", ignore);
  }

  /** Answers 431, or hands the stream to the compatibility layer, or serves it (its record). */
  #take(s: Session, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]): Stream | undefined {
    const method = headers[":method"];
    const path = headers[":path"] ?? "";
    const q = path.indexOf("?");
    const route = method === "POST" ? this.#o.routes.get(q < 0 ? path : path.slice(0, q)) : undefined;
    if (headerListSize(rawHeaders) > this.#o.limits.maxHeaderBytes) {
      const err = new ProtocolError("HTTP_ERR_HEADERS_TOO_LARGE", `the limit is ${this.#o.limits.maxHeaderBytes} bytes`);
      const p = problemAnswer(err);
      writeAnswer(stream, p.headers, p.body, true);
      this.#o.recorder.record(route?.path ?? "(unmatched)", method ?? "", p.status, err.code, 0);
      return undefined;
    }
    if (route === undefined || bodyHandling(headers["content-type"]).kind === "stream") {
      this.#compat!(stream, headers, flags, rawHeaders);
      return undefined;
    }
    return this.#serve(s, stream, headers, route);
  }

  /** Serves a forwarding stream; returns its record unless it was refused at once. */
  #serve(s: Session, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, route: RelayRoute): Stream | undefined {
    const limits = this.#o.limits;
    const cfg = this.#o.http2;
    if (s.closing || s.working >= cfg.maxConcurrentStreams || s.held >= cfg.maxBufferedBytes) {
      stream.close(h2c.NGHTTP2_REFUSED_STREAM);
      this.#count("refused_stream");
      return undefined;
    }
    const st: Stream = {
      s,
      stream,
      route,
      phase: Phase.Reading,
      held: 0,
      working: true,
      deadline: this.#now() + limits.requestTimeoutMs,
      startedAt: performance.now(),
      origin: this.#o.cors?.allowed(headers.origin),
    };
    s.working++;
    this.#streams.add(st);
    destroyQuietly(stream);

    const handling = bodyHandling(headers["content-type"]);
    const declared = headers["content-length"];
    const declaredLength = declared === undefined ? undefined : Number(declared);
    if (handling.kind === "refuse") {
      this.#reject(st, handling.err);
      return st;
    }
    if (handling.kind === "stream") throw new Error("streamed bodies go to the compatibility layer (#onStream)");
    if (declaredLength !== undefined && declaredLength > limits.maxRequestBytes) {
      this.#reject(st, new ProtocolError("HTTP_ERR_TOO_LARGE", `the limit is ${limits.maxRequestBytes} bytes`));
      return st;
    }
    const chunks: Buffer[] = [];
    let received = 0;
    stream.on("data", (chunk: Buffer) => {
      if (st.phase !== Phase.Reading) return;
      received += chunk.length;
      if (received > limits.maxRequestBytes) {
        chunks.length = 0;
        this.#release(st);
        this.#reject(st, new ProtocolError("HTTP_ERR_TOO_LARGE", `the limit is ${limits.maxRequestBytes} bytes`));
        return;
      }
      if (s.held + chunk.length > cfg.maxBufferedBytes) {
        // Not processed: the client may retry it (on this connection once it has room).
        chunks.length = 0;
        this.#finish(st, "refused_stream");
        stream.close(h2c.NGHTTP2_REFUSED_STREAM);
        return;
      }
      chunks.push(chunk);
      st.held += chunk.length;
      s.held += chunk.length;
    });
    // END_STREAM: the body is complete (trailers, if any, were dropped on the way). node:http2 also
    // ends the readable side of a stream that was reset (RST_STREAM from the client, or from
    // nghttp2 for a malformed one): such a stream is closed by then, and "close" accounts for it.
    stream.on("end", () => {
      if (st.phase !== Phase.Reading || stream.closed || stream.aborted) return;
      if (declaredLength !== undefined && declaredLength !== received) {
        // RFC 9113 §8.1.1: malformed; never forwarded (nghttp2 resets such streams first).
        this.#finish(st, "malformed");
        stream.close(h2c.NGHTTP2_PROTOCOL_ERROR);
        return;
      }
      if (received === 0) return this.#reject(st, new ProtocolError("HTTP_ERR_BAD_REQUEST", "the request is empty"));
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received);
      chunks.length = 0;
      st.phase = Phase.Forwarding;
      this.#o.forwarder.forward(route, s.address, body, (err, answer) => {
        this.#release(st);
        this.#unwork(st);
        if (err !== undefined) this.#reject(st, err);
        else this.#answer(st, answer!);
      });
    });
    return st;
  }

  /** Gives back the bytes the stream holds. */
  #release(st: Stream): void {
    st.s.held -= st.held;
    st.held = 0;
  }

  /** Gives back the stream's place among the requests in progress. */
  #unwork(st: Stream): void {
    if (!st.working) return;
    st.working = false;
    st.s.working--;
  }

  #answer(st: Stream, a: UpstreamAnswer): void {
    const headers: OutgoingHeaders = { ":status": a.status };
    if (a.contentType !== undefined) headers["content-type"] = a.contentType;
    this.#respond(st, headers, a.body, "forwarded");
  }

  #reject(st: Stream, err: ProtocolError): void {
    const p = problemAnswer(err);
    this.#respond(st, p.headers, p.body, err.code);
  }

  /** Writes the answer, records it, and keeps its bytes counted until the client has taken them. */
  #respond(st: Stream, headers: OutgoingHeaders, body: Uint8Array, outcome: string): void {
    const stream = st.stream;
    const status = Number(headers[":status"]);
    const durationMs = performance.now() - st.startedAt;
    this.#unwork(st);
    if (st.phase === Phase.Done || stream.destroyed || stream.closed) {
      this.#o.recorder.record(st.route.path, "POST", status, "client_closed", durationMs);
      this.#finish(st, undefined);
      return;
    }
    const wasReading = st.phase === Phase.Reading;
    st.phase = Phase.Answered;
    if (st.origin !== undefined) Object.assign(headers, this.#o.cors!.responseHeaders(st.origin, ["retry-after"]));
    st.held += body.length;
    st.s.held += body.length;
    st.deadline = this.#now() + this.#o.limits.requestTimeoutMs;
    // Answered before the body was complete (413, 415, 408): the rest of it is not wanted.
    writeAnswer(stream, headers, body, wasReading);
    this.#o.recorder.record(st.route.path, "POST", status, outcome, durationMs);
    this.#count(outcome === "forwarded" ? "forwarded" : "answered");
  }

  #onClose(st: Stream): void {
    if (st.phase === Phase.Done) return;
    if (st.phase === Phase.Answered) {
      this.#finish(st, undefined);
      return;
    }
    // Closed before its answer: by the client (RST_STREAM, or the connection went away). A request
    // with the gateway keeps its place in s.working until the gateway answers (the callback).
    if (st.phase === Phase.Reading) this.#unwork(st);
    // nghttp2 resets a malformed stream itself (a content-length that disagrees with the DATA).
    const malformed = st.stream.rstCode === h2c.NGHTTP2_PROTOCOL_ERROR;
    this.#finish(st, malformed ? "malformed" : "client_reset");
    if (!malformed) this.#countReset(st.s);
  }

  /** The stream is over: its bytes are given back. */
  #finish(st: Stream, outcome: StreamOutcome | undefined): void {
    if (st.phase === Phase.Done) return;
    if (st.phase === Phase.Reading) this.#unwork(st);
    st.phase = Phase.Done;
    st.s.held -= st.held;
    st.held = 0;
    this.#streams.delete(st);
    if (outcome !== undefined) this.#count(outcome);
  }

  #countReset(s: Session): void {
    const now = this.#now();
    if (now - s.resetWindowStart >= RESET_WINDOW_MS) {
      s.resetWindowStart = now;
      s.resets = 0;
    }
    if (++s.resets > this.#o.http2.maxClientResets && !s.session.destroyed) {
      s.closing = true;
      s.session.goaway(h2c.NGHTTP2_ENHANCE_YOUR_CALM);
      s.session.destroy();
    }
  }

  #goaway(s: Session): void {
    if (s.closing || s.session.destroyed) return;
    s.closing = true;
    // GOAWAY(NO_ERROR) with the last stream received: those finish, later ones are not processed.
    s.session.close();
    setTimeout(() => s.session.destroy(), GOAWAY_LINGER_MS + this.#o.limits.requestTimeoutMs).unref();
  }

  /** Graceful stop: GOAWAY(NO_ERROR) to every connection (the drain state's hook). */
  goawayAll(): void {
    for (const s of this.#sessions.values()) this.#goaway(s);
  }

  destroyAll(): void {
    for (const s of this.#sessions.values()) s.session.destroy();
  }

  stop(): void {
    clearInterval(this.#sweeper);
  }

  /**
   * Acts on deadlines (called every few ms; tests may call it): a body not complete in time gets
   * 408, an answer not taken in time is reset, a connection idle past keepAliveTimeoutMs gets GOAWAY.
   */
  sweep(): void {
    const now = this.#now();
    for (const st of this.#streams) {
      if (now < st.deadline) continue;
      if (st.phase === Phase.Reading) {
        // (Counted as answered: the 408 is its answer.)
        this.#release(st);
        this.#reject(st, new ProtocolError("HTTP_ERR_TIMEOUT"));
      } else if (st.phase === Phase.Answered) {
        this.#finish(st, "timeout");
        st.stream.close(h2c.NGHTTP2_CANCEL);
      }
    }
    for (const s of this.#sessions.values()) {
      if (s.idleSince !== 0 && now - s.idleSince >= this.#o.limits.keepAliveTimeoutMs) this.#goaway(s);
    }
  }
}
