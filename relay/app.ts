// The Oblivious Relay Resource (RFC 9458 §5): buildRelay(config, deps) -> a Fastify app.
//
// For each configured route (and nothing else: RFC 9458 §8.2, not an open proxy):
//   POST <path>              forwards the encapsulated request to the route's gateway
//   GET  <path>/ohttp-keys   the cached copy of the gateway's key configurations
// plus /healthz, /readyz and /metrics from server/lifecycle.ts.
//
// Two HTTP fronts share the same checks and forwarding (relay/forward.ts): the lean path
// (relay/front.ts) reads canonical POSTs straight off the connection; Fastify serves the rest
// (and everything under inject()). Neither logs or counts a client address: log lines and metrics
// have fixed fields (server/logging.ts), and the address reaches only the rate limiter.

import { randomBytes as nodeRandomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Http2SecureServer } from "node:http2";
import type { Socket } from "node:net";
import { Server as TlsServer } from "node:tls";
import type { FastifyInstance } from "fastify";
import { Counter, Gauge } from "prom-client";
import { ProtocolError } from "../core/errors.js";
import { MEDIA_TYPES } from "../core/ohttp/index.js";
import { Secret } from "../core/secret.js";
import { RequestRecorder, drainStateOf } from "../server/lean-answers.js";
import { acceptBinaryBody, createServerApp } from "../server/lifecycle.js";
import { safeError, type Logger } from "../server/logging.js";
import { createMetrics, type HttpMetrics } from "../server/metrics.js";
import { installCors, type CorsResource } from "../server/cors.js";
import type { RelayConfig, RouteConfig } from "./config.js";
import { Forwarder, type RelayRoute } from "./forward.js";
import { Front } from "./front.js";
import { H2Front, http2ServerOptions } from "./h2.js";
import { KeyCache, fetchKeys } from "./key-cache.js";
import { MemoryRateLimiter, RedisRateLimiter, type RateLimiter } from "./rate-limit.js";
import { registerForwardRoute } from "./routes/forward.js";
import { registerKeysRoute } from "./routes/keys.js";
import { Upstream, type UpstreamOptions } from "./upstream.js";
import { requireOptional } from "../server/optional-dependency.js";

export interface RelayDeps {
  log: Logger;
  metrics?: HttpMetrics;
  /** Clock in ms for the rate-limit windows and key freshness. */
  now?: () => number;
  /** Randomness for the per-process Redis key secret when rateLimit.keySecret is not set. */
  randomBytes?: (n: number) => Uint8Array;
}

function readPem(file: string | undefined, what: string): Buffer | undefined {
  if (file === undefined) return undefined;
  try {
    return readFileSync(file);
  } catch (e) {
    throw new ProtocolError("CFG_ERR_INVALID", `${what}: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? "error"}`, { cause: e });
  }
}

interface TlsMaterial {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

function tlsMaterial(route: RouteConfig, at: string): TlsMaterial {
  const out: TlsMaterial = {};
  const ca = readPem(route.ca, `${at}.ca`);
  const cert = readPem(route.clientCert, `${at}.clientCert`);
  const key = readPem(route.clientKey, `${at}.clientKey`);
  if (ca !== undefined) out.ca = ca;
  if (cert !== undefined) out.cert = cert;
  if (key !== undefined) out.key = key;
  return out;
}

function createLimiter(config: RelayConfig, deps: RelayDeps, onStoreError: (e: unknown) => void): RateLimiter | undefined {
  const rl = config.rateLimit;
  if (rl.perClientPerWindow === 0) return undefined;
  const window = { perClientPerWindow: rl.perClientPerWindow, windowMs: rl.windowMs, ...(deps.now === undefined ? {} : { now: deps.now }) };
  if (rl.store === "memory") return new MemoryRateLimiter(window);
  let keySecret: Uint8Array;
  if (rl.keySecret !== undefined) {
    keySecret = new TextEncoder().encode(rl.keySecret);
  } else {
    keySecret = (deps.randomBytes ?? nodeRandomBytes)(32);
    deps.log.warn("rateLimit.keySecret is not set: a random per-process secret is used, so replicas sharing this Redis count each client separately");
  }
  // ioredis (an optional dependency) is loaded only when configured: it is a tenth of the relay's memory otherwise.
  const ioredis = requireOptional<typeof import("ioredis")>("ioredis", "rateLimit.store redis://");
  const redis = Promise.resolve().then(() => {
    const client = new ioredis.Redis(rl.store, {
      // Fail fast instead of queueing while Redis is away (the limiter then lets requests through).
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: 500,
      connectTimeout: 2000,
    });
    client.on("error", () => {
      // Reported per failed command (onStoreError); ioredis reconnects by itself.
    });
    return client;
  });
  return new RedisRateLimiter({ ...window, redis, prefix: rl.redisPrefix, keySecret, onError: onStoreError });
}

/** The timeouts and limits of every route's gateway client (relay/upstream.ts), from the config. */
export function upstreamLimits(config: RelayConfig): Omit<UpstreamOptions, "gateway" | "tls" | "authHeader"> {
  const { limits, timeouts } = config;
  return {
    connectMs: timeouts.connectMs,
    headersMs: timeouts.headersMs,
    bodyMs: timeouts.bodyMs,
    keepAliveMs: timeouts.keepAliveMs,
    maxConnections: limits.upstreamConnections,
    maxResponseBytes: limits.maxResponseBytes,
    maxStreamedResponseBytes: config.chunked.maxResponseBytes,
    maxHeaderBytes: limits.maxHeaderBytes,
  };
}

/**
 * Puts the lean front before node:http's own connection listener (see relay/front.ts). On an
 * HTTP/2 server that listener is node:http2's, which serves h2 connections itself and gives the
 * others to node:http: connections that negotiated h2 by ALPN go straight to it.
 */
function installFront(app: FastifyInstance, makeFront: (handoff: (socket: Socket) => void) => Front<Socket>): Front<Socket> {
  const server = app.server;
  const event = server instanceof TlsServer ? "secureConnection" : "connection";
  // node:http's (and node:http2's) own listener is named connectionListener (server/lifecycle.ts
  // adds a watcher of its own).
  const listeners = server.listeners(event).filter((l) => l.name === "connectionListener");
  if (listeners.length !== 1) throw new Error(`expected node:http's one ${event} listener, found ${listeners.length}`);
  const nodeListener = listeners[0] as (socket: Socket) => void;
  server.removeListener(event, nodeListener);
  const front = makeFront((socket) => nodeListener.call(server, socket));
  server.on(event, (socket: Socket & { alpnProtocol?: string | false | null }) => {
    if (socket.alpnProtocol === "h2") nodeListener.call(server, socket);
    else front.accept(socket);
  });
  return front;
}

export function buildRelay(config: RelayConfig, deps: RelayDeps): FastifyInstance {
  const log = deps.log;
  const metrics = deps.metrics ?? createMetrics("relay");
  const { limits, timeouts } = config;

  const storeErrors = new Counter({
    name: "veil_relay_rate_limit_store_errors_total",
    help: "Rate-limit store failures (the requests were let through)",
    registers: [metrics.registry],
  });
  const keyFetchFailures = new Counter({
    name: "veil_relay_key_fetch_failures_total",
    help: "Failed key configuration fetches by route",
    labelNames: ["route"],
    registers: [metrics.registry],
  });
  let lastStoreErrorLog = 0;
  const limiter = createLimiter(config, deps, (e) => {
    storeErrors.inc();
    const now = Date.now();
    if (now - lastStoreErrorLog > 10_000) {
      lastStoreErrorLog = now;
      log.warn({ err: safeError(e) }, "rate-limit store unavailable: requests are let through");
    }
  });

  const routes: RelayRoute[] = [];
  config.routes.forEach((r, i) => {
    const at = `routes[${i}]`;
    const tls = tlsMaterial(r, at);
    const authHeader = r.authHeader === undefined ? undefined : { name: r.authHeader.name, value: new Secret(r.authHeader.value) };
    const upstream = new Upstream({
      gateway: new URL(r.gateway),
      ...(Object.keys(tls).length === 0 ? {} : { tls }),
      ...(authHeader === undefined ? {} : { authHeader }),
      ...upstreamLimits(config),
    });
    let keys: KeyCache | undefined;
    if (r.keys !== undefined) {
      const url = new URL(r.keys);
      const headers = authHeader === undefined ? undefined : { [authHeader.name]: authHeader.value.reveal() };
      keys = new KeyCache({
        fetch: () =>
          fetchKeys({
            url,
            ...(headers === undefined ? {} : { headers }),
            ...(Object.keys(tls).length === 0 ? {} : { tls }),
            connectMs: timeouts.connectMs,
            timeoutMs: timeouts.keysFetchMs,
            maxBytes: limits.maxKeysBytes,
          }),
        config: config.keyCache,
        ...(deps.now === undefined ? {} : { now: deps.now }),
        onError: (e) => {
          keyFetchFailures.inc({ route: r.path });
          log.warn({ route: r.path, err: safeError(e) }, "key configuration fetch failed");
        },
      });
    }
    routes.push({ path: r.path, upstream, keys });
  });

  const http2 = config.http2.enabled && config.listen.tls?.cert !== undefined;
  const app = createServerApp({
    listen: config.listen,
    limits,
    log,
    metrics,
    ...(http2 ? { http2: http2ServerOptions(config.http2, limits.maxHeaderBytes) } : {}),
    ...(limiter !== undefined && config.rateLimit.store !== "memory" ? { readiness: { rateLimitStore: () => limiter.ping() } } : {}),
  });
  // One drain state for both fronts and Fastify (server/lean-answers.ts): while stopping, answers
  // close their connections; once closing, new requests get 503.
  const drain = drainStateOf(app);
  const forwarder = new Forwarder({
    drain,
    limiter,
    maxConcurrent: limits.maxConcurrentRequests,
    ipv6PrefixBits: config.rateLimit.ipv6PrefixBits,
    chunked: config.chunked,
  });
  const recorder = new RequestRecorder(log, metrics);
  // Only encapsulated requests are ever parsed: no JSON or text bodies from clients.
  app.removeAllContentTypeParsers();
  acceptBinaryBody(app, MEDIA_TYPES.request);
  // Chunked OHTTP requests are never buffered: the route passes the raw stream on (relay/forward.ts).
  app.addContentTypeParser(MEDIA_TYPES.chunkedRequest, (_request, payload, done) => done(null, payload));
  // Opt-in CORS for browser clients (server/cors.ts): the relay's own response headers only.
  const corsResources: CorsResource[] = [];
  for (const route of routes) {
    corsResources.push({ url: route.path, methods: ["POST"], headers: ["content-type"], expose: ["retry-after"] });
    if (route.keys !== undefined) corsResources.push({ url: `${route.path}/ohttp-keys`, methods: ["GET"], headers: ["content-type"], expose: ["retry-after"] });
  }
  const cors = installCors(app, config.cors, corsResources);
  for (const route of routes) {
    registerForwardRoute(app, route, { forwarder, drain, ...(cors === undefined ? {} : { cors }) });
    if (route.keys !== undefined) registerKeysRoute(app, route.path, route.keys, { forwarder });
  }

  let h2: H2Front | undefined;
  if (http2) {
    h2 = new H2Front({
      routes: new Map(routes.map((r) => [r.path, r])),
      forwarder,
      recorder,
      drain,
      limits,
      http2: config.http2,
      ...(cors === undefined ? {} : { cors }),
      streams: new Counter({
        name: "veil_relay_http2_streams_total",
        help: "HTTP/2 forwarding streams by how they ended (forwarded, answered with a problem, refused_stream, client_reset, malformed, timeout: answer not taken)",
        labelNames: ["outcome"],
        registers: [metrics.registry],
      }),
      sessions: new Counter({ name: "veil_relay_http2_sessions_total", help: "Connections that negotiated HTTP/2", registers: [metrics.registry] }),
    });
    // createServerApp made a node:http2 server (server/lifecycle.ts).
    h2.attach(app.server as unknown as Http2SecureServer);
  }

  let front: Front<Socket> | undefined;
  if (config.fastPath) {
    front = installFront(
      app,
      (handoff) => new Front<Socket>({ routes: new Map(routes.map((r) => [r.path, r])), forwarder, recorder, drain, limits, handoff, handOffOrigin: cors !== undefined }),
    );
  }

  const gauges = [
    new Gauge({
      name: "veil_relay_upstream_connections",
      help: "Open connections to the gateways",
      labelNames: ["route"],
      registers: [metrics.registry],
      collect() {
        for (const r of routes) this.set({ route: r.path }, r.upstream.connections);
      },
    }),
    new Gauge({
      name: "veil_relay_requests_in_flight",
      help: "Requests between their checks and the gateway's answer",
      registers: [metrics.registry],
      collect() {
        this.set(forwarder.inFlight);
      },
    }),
  ];
  void gauges;

  app.addHook("onReady", async () => {
    for (const r of routes) r.keys?.prefetch();
  });
  app.addHook("preClose", async () => {
    if (h2 !== undefined) {
      // GOAWAY went out when the drain began (DrainState.onDrain); what is left is cut at the end.
      const f = h2;
      setTimeout(() => f.destroyAll(), limits.shutdownGraceMs).unref();
    }
    if (front !== undefined) {
      front.closeIdle();
      const f = front;
      setTimeout(() => f.destroyAll(), limits.shutdownGraceMs).unref();
    }
  });
  app.addHook("onClose", async () => {
    front?.stop();
    h2?.stop();
    for (const r of routes) r.upstream.close();
    await limiter?.close();
  });
  return app;
}
