// What the relay does with an encapsulated request once its body has been read, whichever HTTP
// front received it (the lean path in relay/front.ts or the Fastify route in relay/routes/):
// refuse it while the server is closing, over the concurrency cap or over the client's rate limit,
// else forward it to the route's gateway. (Both fronts record the request and render problems
// with server/lean-answers.ts and server/problem-handler.ts.)
//
// A chunked OHTTP request (`message/ohttp-chunked-req`, draft-ietf-ohai-chunked-ohttp-08) is not
// read first: `forwardStream` passes it through as a stream (StreamExchange below), with the same
// checks before its first byte goes upstream.

import { isMediaType } from "../core/http-fields.js";
import { ProtocolError } from "../core/errors.js";
import { MEDIA_TYPES } from "../core/ohttp/index.js";
import type { DrainState } from "../server/lean-answers.js";
import { renderProblem } from "../server/problem-handler.js";
import { DEFAULTS, type RelayChunkedConfig } from "./config.js";
import type { KeyCache } from "./key-cache.js";
import { clientKey, type RateLimiter } from "./rate-limit.js";
import type { Upstream, UpstreamAnswer, UpstreamStream } from "./upstream.js";

export interface RelayRoute {
  /** The configured path (also the route label in logs and metrics). */
  path: string;
  upstream: Upstream;
  keys: KeyCache | undefined;
}

export type ForwardCallback = (err: ProtocolError | undefined, answer: UpstreamAnswer | undefined) => void;

export interface ForwarderOptions {
  /** The server's drain state: once closing, new requests get 503. */
  drain: DrainState;
  limiter: RateLimiter | undefined;
  maxConcurrent: number;
  ipv6PrefixBits: number;
  /** Limits of streamed (chunked OHTTP) exchanges (default: the configuration's defaults). */
  chunked?: RelayChunkedConfig;
}

const CHUNKED_DEFAULTS: RelayChunkedConfig = Object.freeze({
  maxRequestBytes: DEFAULTS.chunkedMaxRequestBytes,
  maxResponseBytes: DEFAULTS.chunkedMaxResponseBytes,
  idleTimeoutMs: DEFAULTS.chunkedIdleTimeoutMs,
});

/**
 * The client's request of a streamed exchange: node:http's IncomingMessage, or node:http2's
 * compatibility Http2ServerRequest (the HTTP/2 front).
 */
export interface StreamClientRequest {
  readonly headers: Record<string, string | string[] | undefined>;
  /** 1 or 2: HTTP/2 has no Connection field, and a refused stream is closed instead. */
  readonly httpVersionMajor: number;
  /** The whole body was received. */
  readonly complete: boolean;
  /** The client went away or reset its stream (an HTTP/2 stream also "ends" then). */
  readonly aborted: boolean;
  on(event: "data", listener: (chunk: Buffer) => void): unknown;
  on(event: "end" | "close" | "aborted", listener: () => void): unknown;
  on(event: "error", listener: (err: Error) => void): unknown;
  pause(): unknown;
  resume(): unknown;
}

/** The answer side: node:http's ServerResponse or node:http2's Http2ServerResponse. */
export interface StreamClientResponse {
  readonly headersSent: boolean;
  readonly writableFinished: boolean;
  writeHead(status: number, headers: Record<string, string>): unknown;
  write(chunk: Buffer): boolean;
  end(chunk?: Buffer): unknown;
  destroy(): unknown;
  once(event: "drain" | "close", listener: () => void): unknown;
  /** HTTP/2 only: the stream, closed after a refusal (RST_STREAM NO_ERROR: the rest is not wanted, RFC 9113 §8.1). */
  readonly stream?: { close(code?: number): unknown };
}

export class Forwarder {
  readonly #o: ForwarderOptions;
  readonly #chunked: RelayChunkedConfig;
  /** Requests between their checks and the gateway's answer (both fronts). */
  inFlight = 0;

  constructor(opts: ForwarderOptions) {
    this.#o = opts;
    this.#chunked = opts.chunked ?? CHUNKED_DEFAULTS;
  }

  /**
   * Counts a request of the client at `address` against its rate limit: undefined when allowed,
   * else the 429 error (with Retry-After). The address goes to the limiter and nowhere else.
   */
  checkRate(address: string): ProtocolError | undefined | Promise<ProtocolError | undefined> {
    const limiter = this.#o.limiter;
    if (limiter === undefined) return undefined;
    const r = limiter.hit(clientKey(address, this.#o.ipv6PrefixBits));
    if (r === undefined) return undefined;
    if (typeof r === "number") return rateLimited(r);
    return r.then((s) => (s === undefined ? undefined : rateLimited(s)));
  }

  /** Checks, then forwards `body` to the route's gateway; `cb` is called exactly once. */
  forward(route: RelayRoute, address: string, body: Buffer, cb: ForwardCallback): void {
    if (this.#o.drain.closing) {
      cb(new ProtocolError("HTTP_ERR_UNAVAILABLE", undefined, { headers: { connection: "close" } }), undefined);
      return;
    }
    if (this.inFlight >= this.#o.maxConcurrent) {
      cb(new ProtocolError("HTTP_ERR_OVERLOADED", undefined, { headers: { "retry-after": "1" } }), undefined);
      return;
    }
    this.inFlight++;
    const done: ForwardCallback = (err, answer) => {
      this.inFlight--;
      cb(err, answer);
    };
    const rate = this.checkRate(address);
    if (rate === undefined) {
      route.upstream.forward(body, done);
    } else if (rate instanceof ProtocolError) {
      done(rate, undefined);
    } else {
      rate.then(
        (err) => (err === undefined ? route.upstream.forward(body, done) : done(err, undefined)),
        (e: unknown) => done(new ProtocolError("INTERNAL_ERR", undefined, { cause: e }), undefined),
      );
    }
  }

  /**
   * A chunked OHTTP request: the same checks as `forward`, then a streamed exchange (the answer,
   * or a problem, is written to `res`). `done` gets the outcome word for the request log, once.
   */
  forwardStream(route: RelayRoute, address: string, req: StreamClientRequest, res: StreamClientResponse, done: (outcome: string) => void): void {
    const refuse = (err: ProtocolError): void => {
      refuseStream(req, res, err);
      done(err.code);
    };
    if (this.#o.drain.closing) return refuse(new ProtocolError("HTTP_ERR_UNAVAILABLE"));
    if (this.inFlight >= this.#o.maxConcurrent) return refuse(new ProtocolError("HTTP_ERR_OVERLOADED", undefined, { headers: { "retry-after": "1" } }));
    const max = this.#chunked.maxRequestBytes;
    const declared = req.headers["content-length"];
    if (typeof declared === "string" && Number(declared) > max) {
      return refuse(new ProtocolError("HTTP_ERR_TOO_LARGE", `the limit for chunked requests is ${max} bytes`));
    }
    this.inFlight++;
    const start = (): void => void new StreamExchange(this, route, req, res, { chunked: this.#chunked, drain: this.#o.drain }, done);
    const rate = this.checkRate(address);
    if (rate === undefined) return start();
    const refuseCounted = (err: ProtocolError): void => {
      this.inFlight--;
      refuse(err);
    };
    if (rate instanceof ProtocolError) return refuseCounted(rate);
    rate.then(
      (err) => (err === undefined ? start() : refuseCounted(err)),
      (e: unknown) => refuseCounted(new ProtocolError("INTERNAL_ERR", undefined, { cause: e })),
    );
  }
}

/**
 * One chunked exchange between a client and a gateway. The request streams upstream as it arrives
 * (chunked transfer coding, never a Content-Length: its length is unknown), the answer streams back
 * as it arrives, possibly before the request has ended (draft-ietf-ohai-chunked-ohttp-08: a gateway
 * may answer early). Only the status, Content-Type and, for a chunked answer, `Incremental: ?1` are
 * passed back, as for `message/ohttp-req`.
 *
 * - Backpressure both ways: the client's request is paused while the gateway's connection does not
 *   take more; the gateway's answer is not read while the client does not take it. At most a
 *   socket's buffers are held per direction, whatever the body's size.
 * - Limits: chunked.maxRequestBytes counted as the request streams (413 if the answer has not
 *   begun, else the client's connection is cut), chunked.maxResponseBytes on the answer (the
 *   upstream parser fails it), chunked.idleTimeoutMs without progress in either direction (408 if
 *   the client was the one to stall, 504 if the gateway was; once the answer has begun, the
 *   connection is cut). Between the request's end and the answer's head, the upstream's headersMs.
 * - A failure after the answer began destroys the client's connection, so the client sees an
 *   answer that broke off (no final HTTP/1.1 chunk, an HTTP/2 stream reset), never one that looks
 *   complete. A client that goes away aborts the upstream request: the gateway never sees its
 *   terminating chunk, so it never takes the request as complete.
 */
class StreamExchange {
  readonly #f: Forwarder;
  readonly #route: RelayRoute;
  readonly #req: StreamClientRequest;
  readonly #res: StreamClientResponse;
  readonly #chunked: RelayChunkedConfig;
  readonly #drain: DrainState;
  readonly #done: (outcome: string) => void;
  readonly #timer: NodeJS.Timeout;
  #upstream: UpstreamStream | undefined;
  #bytes = 0;
  #requestEnded = false;
  #answered = false;
  #finished = false;
  /** The gateway does not take request bytes now (waiting for `drain`). */
  #upstreamBlocked = false;

  constructor(
    f: Forwarder,
    route: RelayRoute,
    req: StreamClientRequest,
    res: StreamClientResponse,
    o: { chunked: RelayChunkedConfig; drain: DrainState },
    done: (outcome: string) => void,
  ) {
    this.#f = f;
    this.#route = route;
    this.#req = req;
    this.#res = res;
    this.#chunked = o.chunked;
    this.#drain = o.drain;
    this.#done = done;
    this.#timer = setTimeout(() => this.#onIdle(), o.chunked.idleTimeoutMs);
    this.#timer.unref();
    req.on("data", (piece) => this.#onPiece(piece));
    req.on("end", () => this.#onRequestEnd());
    req.on("error", () => this.#clientGone());
    req.on("aborted", () => this.#clientGone());
    req.on("close", () => {
      if (!req.complete) this.#clientGone();
    });
    res.once("close", () => {
      if (!res.writableFinished) this.#clientGone();
    });
    req.resume();
  }

  /** Progress in either direction: the idle deadline starts again. */
  #touch(): void {
    if (!this.#finished) this.#timer.refresh();
  }

  #onPiece(piece: Buffer): void {
    if (this.#finished) return;
    this.#bytes += piece.length;
    if (this.#bytes > this.#chunked.maxRequestBytes) {
      this.#fail(new ProtocolError("HTTP_ERR_TOO_LARGE", `the limit for chunked requests is ${this.#chunked.maxRequestBytes} bytes`));
      return;
    }
    this.#touch();
    // The gateway is asked only once there is something to send (an empty request never goes).
    this.#upstream ??= this.#route.upstream.openStream({
      head: (status, contentType) => this.#onHead(status, contentType),
      body: (p) => this.#onAnswerPiece(p),
      end: () => this.#onAnswerEnd(),
      error: (err) => this.#fail(err),
      drain: () => {
        this.#upstreamBlocked = false;
        this.#touch();
        this.#req.resume();
      },
    });
    if (!this.#upstream.write(piece)) {
      this.#upstreamBlocked = true;
      this.#req.pause();
    }
  }

  #onRequestEnd(): void {
    if (this.#finished) return;
    // node:http2 ends the readable side of a stream the client reset: never a complete request.
    if (this.#req.aborted) return this.#clientGone();
    this.#requestEnded = true;
    // RFC 9458 §5: a relay MAY reject obviously invalid requests, such as an empty one.
    if (this.#upstream === undefined) return this.#fail(new ProtocolError("HTTP_ERR_BAD_REQUEST", "the request is empty"));
    this.#upstream.end();
    if (this.#answered) return this.#finish("forwarded");
    // Until the answer's head, the upstream's headersMs applies (the gateway is working).
    if (!this.#res.headersSent) clearTimeout(this.#timer);
  }

  #onHead(status: number, contentType: string | undefined): void {
    const headers: Record<string, string> = {};
    if (contentType !== undefined) headers["content-type"] = contentType;
    if (isMediaType(contentType, MEDIA_TYPES.chunkedResponse)) headers.incremental = "?1";
    if (this.#drain.closesConnections && this.#req.httpVersionMajor < 2) headers.connection = "close";
    this.#res.writeHead(status, headers);
    this.#timer.refresh();
  }

  #onAnswerPiece(piece: Buffer): void {
    this.#touch();
    if (!this.#res.write(piece)) {
      this.#upstream!.pause();
      this.#res.once("drain", () => {
        this.#touch();
        this.#upstream?.resume();
      });
    }
  }

  #onAnswerEnd(): void {
    this.#answered = true;
    this.#res.end();
    if (this.#requestEnded) this.#finish("forwarded");
  }

  #onIdle(): void {
    if (this.#finished) return;
    // Before the answer began: whose stall was it? The client's if it owes request bytes and the
    // gateway was taking them.
    const clientStalled = !this.#requestEnded && !this.#upstreamBlocked && !this.#res.headersSent;
    this.#fail(clientStalled ? new ProtocolError("HTTP_ERR_TIMEOUT", "no request bytes within chunked.idleTimeoutMs") : new ProtocolError("RELAY_ERR_UPSTREAM_TIMEOUT", "no progress within chunked.idleTimeoutMs"));
  }

  /** The client closed its connection or reset its stream before the exchange ended. */
  #clientGone(): void {
    if (this.#finished) return;
    this.#upstream?.abort();
    this.#finish("client_closed");
  }

  #fail(err: ProtocolError): void {
    if (this.#finished) return;
    this.#upstream?.abort();
    const res = this.#res;
    if (res.headersSent) {
      // The answer began: cut it, so that it cannot pass for complete.
      res.destroy();
    } else {
      refuseStream(this.#req, res, err);
    }
    this.#finish(err.code);
  }

  #finish(outcome: string): void {
    if (this.#finished) return;
    this.#finished = true;
    clearTimeout(this.#timer);
    this.#f.inFlight--;
    this.#done(outcome);
  }
}

/** A problem answering a streamed request, written whole (the connection closes: the rest of the request is unread). */
function refuseStream(req: StreamClientRequest, res: StreamClientResponse, err: ProtocolError): void {
  const p = renderProblem(err);
  const headers: Record<string, string> = Object.fromEntries(p.headers);
  const h2 = req.httpVersionMajor >= 2;
  // Connection-specific fields do not exist in HTTP/2 (RFC 9113 §8.2.2).
  if (h2) delete headers.connection;
  else headers.connection = "close";
  headers["content-length"] = String(p.body.length);
  res.writeHead(p.status, headers);
  res.end(Buffer.from(p.body.buffer, p.body.byteOffset, p.body.byteLength));
  if (h2) res.stream?.close(0);
}

function rateLimited(retryAfterSec: number): ProtocolError {
  return new ProtocolError("HTTP_ERR_RATE_LIMITED", `try again in ${retryAfterSec} s`, { headers: { "retry-after": String(retryAfterSec) } });
}
