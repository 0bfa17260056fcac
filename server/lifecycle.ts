// What every Veil server shares: the HTTP(S) server with explicit limits, the problem handler, one
// privacy-safe log line and metrics per request, a cap on concurrent requests, /healthz, /readyz,
// /metrics, and graceful shutdown (stop accepting, finish in-flight requests, close stores).

import cluster from "node:cluster";
import { readFileSync } from "node:fs";
import { Server as NetServer, type Socket } from "node:net";
import { Server as HttpServer, createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import {
  createSecureServer as createHttp2SecureServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type SecureServerOptions as Http2Options,
} from "node:http2";
import { createServer as createHttpsServer } from "node:https";
import Fastify, { LogController, type FastifyInstance, type RawServerDefault } from "fastify";
import { ProtocolError } from "../core/errors.js";
import type { HttpLimits, ListenConfig } from "./config.js";
import { drainStateOf } from "./lean-answers.js";
import { logRequest, safeError, type Logger } from "./logging.js";
import type { HttpMetrics } from "./metrics.js";
import { installProblemHandler, sendProblem } from "./problem-handler.js";

declare module "fastify" {
  interface FastifyRequest {
    /** A short outcome word for the request log and metrics ("ok", "forwarded", an error code). */
    veilOutcome: string;
  }
}

export type ReadinessChecks = Readonly<Record<string, () => Promise<void> | void>>;

export interface ServerAppOptions {
  listen: ListenConfig;
  limits: HttpLimits;
  log: Logger;
  metrics: HttpMetrics;
  /** Named checks for /readyz (keys loaded, store reachable, ...): each throws when not ready. */
  readiness?: ReadinessChecks;
  /**
   * Offer HTTP/2 on the TLS listener (ALPN h2 and http/1.1) with these node:http2 settings and
   * limits; HTTP/1.1 connections keep node:http's behaviour and limits. No effect without listen.tls.
   */
  http2?: Http2Limits;
}

/** The node:http2 options a server chooses (the rest, TLS and ALPN, come from listen.tls). */
export type Http2Limits = Pick<Http2Options, "settings" | "maxHeaderListPairs" | "maxSessionMemory" | "maxSessionRejectedStreams">;

/**
 * A readiness failure whose message is for the operator reading /readyz (what happened, what to
 * do): shown under `detail`. Any other error only names the failing check.
 */
export class ReadinessProblem extends Error {}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
type Http2Handler = (req: Http2ServerRequest, res: Http2ServerResponse) => void;

/**
 * A client that leaves its answers unread: node:http stops reading a connection while its unsent
 * answers exceed the socket's high-water mark (so memory stays bounded), and the relay's lean front
 * does the same, but such a connection would stay open forever. A connection with answers unsent
 * on which nothing at all was sent for requestTimeoutMs is closed (a slow reader whose answers
 * make progress is not). Checked on the TCP socket, so TLS connections are covered as well.
 */
function closeStalledReaders(server: Server, limits: HttpLimits): void {
  const timeoutMs = limits.requestTimeoutMs;
  const watched = new Map<Socket, { flushed: number; since: number }>();
  server.on("connection", (socket: Socket) => {
    watched.set(socket, { flushed: 0, since: 0 });
    socket.once("close", () => watched.delete(socket));
  });
  const check = (): void => {
    const now = Date.now();
    for (const [socket, w] of watched) {
      if (socket.writableLength === 0) continue;
      // bytesWritten counts the bytes still buffered too.
      const flushed = socket.bytesWritten - socket.writableLength;
      if (flushed !== w.flushed || w.since === 0) {
        w.flushed = flushed;
        w.since = now;
      } else if (now - w.since >= timeoutMs) {
        socket.destroy();
      }
    }
  };
  const timer = setInterval(check, Math.max(10, Math.min(1000, Math.floor(timeoutMs / 4))));
  timer.unref();
  server.once("close", () => clearInterval(timer));
}

/** How long a connection closed under a request that is still arriving keeps reading (see lingerOnClose). */
const LINGER_MS = 2000;

/**
 * Lingering close (RFC 9112 §9.6) for an answer with Connection: close sent while the request's
 * body is still arriving (an upload refused early: 413 by Content-Length, or any refusal before the
 * body was read; Fastify closes the connection after such errors). node:http would close the
 * socket as soon as the answer is written; closing a socket with unread bytes makes the kernel
 * send a reset, which can destroy the answer before the client has read it: a relay sending a
 * large upload then sees its write fail (EPIPE, ECONNRESET) and reports a broken gateway
 * connection instead of the 413. Instead the server half-closes (its answer and FIN go out), keeps
 * reading (node:http discards the rest of the request), and closes once the client has closed its
 * side, or after LINGER_MS.
 */
function lingerOnClose(socket: Socket): void {
  socket.destroySoon = function lingeringClose(this: Socket): void {
    if (this.destroyed) return;
    const timer = setTimeout(() => this.destroy(), LINGER_MS);
    timer.unref();
    this.once("close", () => clearTimeout(timer));
    this.once("end", () => this.destroy());
    this.end();
  };
}

/** node:http(s) server with every limit explicit (no library default timeouts). */
function createNodeServer(listen: ListenConfig, limits: HttpLimits, handler: Handler, http2: Http2Limits | undefined): Server {
  const server = createNodeServerOf(listen, limits, handler, http2);
  closeStalledReaders(server, limits);
  return server;
}

function createNodeServerOf(listen: ListenConfig, limits: HttpLimits, handler: Handler, http2: Http2Limits | undefined): Server {
  const common = {
    maxHeaderSize: limits.maxHeaderBytes,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    // The socket-level idle timeout: slow-loris clients that trickle bytes are cut off.
    connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutMs),
  };
  const tls = listen.tls;
  if (tls?.cert !== undefined && tls.key !== undefined) {
    const secure = {
      cert: readFileSync(tls.cert),
      key: readFileSync(tls.key),
      ...(tls.ca === undefined ? {} : { ca: readFileSync(tls.ca), requestCert: true, rejectUnauthorized: true }),
    };
    if (http2 === undefined) return createHttpsServer({ ...common, ...secure }, handler);
    // ALPN h2 and http/1.1 on one listener. node:http2 serves HTTP/1.1 connections with node:http's
    // own connection code, which reads its limits from the server object, as an https.Server holds
    // them; without this, an HTTP/1.1 connection would have no keep-alive timeout, no Host check
    // and node's default head size.
    // Fastify's handler takes node:http2's compatibility request and response as it takes node:http's.
    const server = createHttp2SecureServer({ ...http2, ...secure, allowHTTP1: true }, handler as unknown as Http2Handler);
    Object.assign(server, { ...common, requireHostHeader: true, rejectNonStandardBodyWrites: false });
    // For HTTP/1.1 connections it is an http.Server (node:http's connection code runs on it).
    return server as unknown as Server;
  }
  if (tls !== undefined && (tls.cert !== undefined || tls.key !== undefined)) {
    throw new ProtocolError("CFG_ERR_INVALID", "listen.tls: needs both cert and key");
  }
  return createHttpServer(common, handler);
}

/**
 * The cap on concurrent requests (limits.maxConcurrentRequests), one per app: Fastify's onRequest
 * hook and any lean path served before Fastify (gateway/routes/lean-gateway.ts) take their slots
 * from the same counter, so together they never exceed the cap.
 */
export class InFlightLimiter {
  readonly max: number;
  #inFlight = 0;
  constructor(max: number) {
    this.max = max;
  }
  get inFlight(): number {
    return this.#inFlight;
  }
  /** A release function (idempotent) if a slot was free, else undefined. */
  tryAcquire(): (() => void) | undefined {
    if (this.#inFlight >= this.max) return undefined;
    this.#inFlight++;
    let held = true;
    return () => {
      if (held) {
        held = false;
        this.#inFlight--;
      }
    };
  }
}

const LIMITERS = new WeakMap<object, InFlightLimiter>();

/** The concurrency limiter of an app made by createServerApp (undefined for other apps). */
export function inFlightLimiterOf(app: FastifyInstance): InFlightLimiter | undefined {
  return LIMITERS.get(app);
}

/**
 * Caps the requests `app` (or an encapsulated scope of it) handles at once: an onRequest hook takes
 * a slot, the answer's close gives it back, and a request beyond `max` gets 503
 * HTTP_ERR_OVERLOADED with Retry-After. Returns the limiter, for lean paths that share it.
 */
export function limitConcurrency(app: FastifyInstance, max: number): InFlightLimiter {
  const limiter = new InFlightLimiter(max);
  app.addHook("onRequest", (_request, reply, done) => {
    const release = limiter.tryAcquire();
    if (release === undefined) {
      sendProblem(reply, new ProtocolError("HTTP_ERR_OVERLOADED", undefined, { headers: { "retry-after": "1" } }));
      return;
    }
    reply.raw.once("close", release);
    done();
  });
  return limiter;
}

/**
 * In a cluster worker (`--workers N`), stopping must not fail a single request, because the other
 * workers take over the port: stop accepting connections but keep serving the open ones, each
 * answer closing its connection (the drain state); idle keep-alive connections end by their
 * keep-alive timeout (clients use a shorter one, so neither side races the other). node's
 * server.close() instead closes idle connections at once, which races a client that is just
 * sending a request on one. Resolves when no connection is left, or after `graceMs`.
 */
async function drainConnections(server: Server, graceMs: number): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, graceMs);
    timer.unref();
    // net.Server#close: stop accepting and call back once every connection has ended, without
    // http.Server#close's closeIdleConnections().
    NetServer.prototype.close.call(server, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** A Fastify app with Veil's shared plumbing installed; components add their routes. */
export function createServerApp(options: ServerAppOptions): FastifyInstance {
  const { limits, metrics } = options;
  const app = Fastify({
    loggerInstance: options.log,
    // Fastify's request log records client addresses: we write our own line instead.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: limits.maxRequestBytes,
    // While stopping, a request that arrives on an open connection is still served (with
    // Connection: close) rather than refused: a refused request is a failed upload.
    return503OnClosing: false,
    forceCloseConnections: "idle",
    // Never trust X-Forwarded-For: a relay's clients must not be able to spoof their rate-limit key.
    trustProxy: false,
    serverFactory: (handler) => createNodeServer(options.listen, limits, handler, options.http2),
  }) as unknown as FastifyInstance<RawServerDefault>;

  app.decorateRequest("veilOutcome", "");
  installProblemHandler(app);
  const drain = drainStateOf(app);

  LIMITERS.set(app, limitConcurrency(app, limits.maxConcurrentRequests));
  // Stopping (runServer's stop, or app.close()): this answer closes its connection, also for a
  // request that was in flight when the stop began; the client's next request opens a new
  // connection, which another worker or replica accepts (or which is refused once the server has
  // stopped). Without it, node answers such a request with keep-alive, and the process lingers
  // until the client's idle connection times out. Lean paths read the same state
  // (server/lean-answers.ts).
  app.addHook("onSend", (request, reply, payload, done) => {
    // (HTTP/2 has no Connection field: its connections get GOAWAY instead, relay/h2.ts.)
    if (request.raw.httpVersionMajor < 2) {
      if (drain.closesConnections) reply.header("connection", "close");
      if (reply.getHeader("connection") === "close" && !request.raw.complete) lingerOnClose(request.raw.socket);
    }
    done(null, payload);
  });
  app.addHook("onResponse", (request, reply, done) => {
    const route = request.routeOptions.url ?? "(unmatched)";
    const status = reply.statusCode;
    const outcome = request.veilOutcome !== "" ? request.veilOutcome : status < 400 ? "ok" : `status_${status}`;
    const seconds = reply.elapsedTime / 1000;
    metrics.requests.inc({ route, outcome, status: String(status) });
    metrics.duration.observe({ route }, seconds);
    logRequest(request.log, { route, method: request.method, status, outcome, durationMs: reply.elapsedTime });
    done();
  });

  app.get("/healthz", async (_request, reply) => reply.header("cache-control", "no-store").send({ status: "ok" }));
  app.get("/readyz", async (_request, reply) => {
    const failing: string[] = [];
    const detail: Record<string, string> = {};
    for (const [name, check] of Object.entries(options.readiness ?? {})) {
      try {
        await check();
      } catch (e) {
        failing.push(name);
        if (e instanceof ReadinessProblem) detail[name] = e.message;
      }
    }
    return reply
      .code(failing.length === 0 ? 200 : 503)
      .header("cache-control", "no-store")
      .send({ status: failing.length === 0 ? "ready" : "not ready", failing, ...(Object.keys(detail).length === 0 ? {} : { detail }) });
  });
  app.get("/metrics", async (_request, reply) =>
    reply.header("content-type", metrics.registry.contentType).send(await metrics.registry.metrics()),
  );
  return app;
}

/** Accepts a binary body of one media type (exact, parameters ignored) as a Buffer. */
export function acceptBinaryBody(app: FastifyInstance, mediaType: string): void {
  app.addContentTypeParser(mediaType, { parseAs: "buffer" }, (_request, body, done) => done(null, body));
}

export interface RunningServer {
  /** e.g. "http://127.0.0.1:8081" */
  url: string;
  port: number;
  /** Graceful stop: stop accepting, let in-flight requests finish (up to the grace period). */
  stop(): Promise<void>;
}

/**
 * Listens, then stops gracefully on SIGTERM/SIGINT (or `stop()`): new connections are refused,
 * in-flight requests finish, `onClose` closes stores; after `shutdownGraceMs` the rest is cut.
 */
export async function runServer(
  app: FastifyInstance,
  options: { listen: ListenConfig; shutdownGraceMs: number; log: Logger; onClose?: () => Promise<void>; handleSignals?: boolean },
): Promise<RunningServer> {
  const drain = drainStateOf(app);
  await app.listen({ host: options.listen.host, port: options.listen.port });
  const address = app.server.address();
  const port = typeof address === "object" && address !== null ? address.port : options.listen.port;
  const scheme = options.listen.tls?.cert !== undefined ? "https" : "http";
  const host = options.listen.host.includes(":") ? `[${options.listen.host}]` : options.listen.host;

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const timer = setTimeout(() => {
        options.log.warn("shutdown grace period over: closing remaining connections");
        // (http.Server's, also for the HTTP/1.1 connections of an HTTP/2 server.)
        HttpServer.prototype.closeAllConnections.call(app.server);
      }, options.shutdownGraceMs);
      timer.unref();
      try {
        drain.drain();
        if (cluster.isWorker) await drainConnections(app.server, options.shutdownGraceMs);
        await app.close();
        await options.onClose?.();
      } catch (e) {
        options.log.error({ err: safeError(e) }, "error during shutdown");
      } finally {
        clearTimeout(timer);
        // Buffered log lines (server/logging.ts) are written before stop() resolves.
        options.log.flush();
      }
    })();
    return stopping;
  };
  if (options.handleSignals !== false) {
    const onSignal = (signal: string): void => {
      options.log.info({ signal }, "shutting down");
      void stop().then(() => {
        options.log.info("stopped");
        options.log.flush();
        process.exit(0);
      });
    };
    process.once("SIGTERM", onSignal);
    process.once("SIGINT", onSignal);
  }
  return { url: `${scheme}://${host}:${port}`, port, stop };
}
