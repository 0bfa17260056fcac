// The lean path for the gateway's one hot request: a canonical `POST /gateway` (Content-Type
// message/ohttp-req, a Content-Length within maxRequestBytes, no Transfer-Encoding, no Expect) is
// served straight from node:http's request event, before Fastify. Every other request (other
// paths and methods, chunked or oversized bodies, other media types, /ohttp-keys, health, metrics)
// goes to Fastify unchanged, which answers them exactly as before (routes/gateway.ts serves
// non-canonical POSTs with the same function, serveEncapsulatedRequest).
//
// Why: Fastify's routing, hooks, per-request child logger, content-type parser and reply pipeline
// cost about as much CPU per request as the whole pass-through proxy the gateway is measured
// against (bench/gateway.ts); the request itself needs none of them. What Fastify gave the route
// is kept here: node:http's limits (header size, headers and request timeouts, keep-alive) still
// apply, the body is capped by Content-Length before it is read, the concurrency cap applies, the
// answer is one write, and the request gets the same log line and metrics as in
// server/lifecycle.ts (route "/gateway", method, status, outcome, duration; nothing else).

import type { IncomingMessage, ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import type { FastifyInstance } from "fastify";
import { symbols } from "pino";
import { ProtocolError } from "../../core/errors.js";
import { MEDIA_TYPES } from "../../core/ohttp/index.js";
import { PROBLEM_MEDIA_TYPE, encodeProblem, toProblem } from "../../core/problem.js";
import { InFlightLimiter, inFlightLimiterOf } from "../../server/lifecycle.js";
import { logRequest, safeError, type Logger } from "../../server/logging.js";
import type { HttpMetrics } from "../../server/metrics.js";
import { toProtocolError } from "../../server/problem-handler.js";
import { mediaType, type OuterAnswer } from "./gateway.js";

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

export interface LeanPathOptions {
  maxRequestBytes: number;
  /** Used only when the app has no limiter of its own (not made by createServerApp). */
  maxConcurrentRequests: number;
  serve: (body: Uint8Array) => Promise<OuterAnswer>;
  log: Logger;
  metrics: HttpMetrics;
}

const ROUTE = "/gateway";

/** True for the requests the lean path serves; anything unusual is left to Fastify. */
export function isCanonicalGatewayPost(req: IncomingMessage, maxRequestBytes: number): boolean {
  if (req.method !== "POST" || req.url !== ROUTE) return false;
  const h = req.headers;
  if (h["transfer-encoding"] !== undefined || h.expect !== undefined) return false;
  const length = h["content-length"];
  if (length === undefined || !/^\d{1,9}$/.test(length) || Number(length) > maxRequestBytes) return false;
  return mediaType(h["content-type"]) === MEDIA_TYPES.request;
}

/**
 * One log line and the request metrics, as server/lifecycle.ts's onResponse hook records them.
 * Metric children are cached per (outcome, status): label hashing per request is measurable. The
 * log line has a fixed shape (route pattern, method, status, outcome word, duration: nothing from
 * the client), so it is written to the logger's own stream as the exact JSON that `logRequest`
 * produces through pino (a unit test holds the two equal), without pino's generic serialisation
 * and redaction walk, which cost more per request than the gateway's Binary HTTP and policy work
 * together (bench/gateway.ts --profile).
 */
export class RequestRecorder {
  readonly #children = new Map<string, { inc(): void; observe(s: number): void; fields: string }>();
  readonly #log: Logger;
  readonly #metrics: HttpMetrics;
  readonly #stream: { write(line: string): unknown } | undefined;
  readonly #head: string;

  constructor(log: Logger, metrics: HttpMetrics) {
    this.#log = log;
    this.#metrics = metrics;
    const stream = (log as unknown as Record<symbol, unknown>)[symbols.streamSym] as { write?: unknown } | undefined;
    this.#stream = typeof stream?.write === "function" ? (stream as { write(line: string): unknown }) : undefined;
    this.#head = `{"level":${log.levels.values.info},"time":`;
  }

  record(status: number, outcome: string, durationMs: number): void {
    const key = `${outcome}\n${status}`;
    let c = this.#children.get(key);
    if (c === undefined) {
      const counter = this.#metrics.requests.labels({ route: ROUTE, outcome, status: String(status) });
      const histogram = this.#metrics.duration.labels({ route: ROUTE });
      const bindings = JSON.stringify(this.#log.bindings()).slice(1, -1);
      const fields =
        `${bindings === "" ? "" : `,${bindings}`},"route":${JSON.stringify(ROUTE)},"method":"POST",` +
        `"status":${status},"outcome":${JSON.stringify(outcome)},"durationMs":`;
      c = { inc: () => counter.inc(), observe: (s) => histogram.observe(s), fields };
      this.#children.set(key, c);
    }
    c.inc();
    c.observe(durationMs / 1000);
    if (this.#stream === undefined) {
      logRequest(this.#log, { route: ROUTE, method: "POST", status, outcome, durationMs });
    } else if (this.#log.isLevelEnabled("info")) {
      this.#stream.write(`${this.#head}${Date.now()}${c.fields}${Math.round(durationMs * 100) / 100},"msg":"request"}\n`);
    }
  }
}

/** Puts the lean path in front of Fastify's request handler on `app.server`. */
export function installLeanGatewayPath(app: FastifyInstance, o: LeanPathOptions): void {
  const server = app.server;
  const handlers = server.listeners("request") as Handler[];
  // Fastify registers exactly one handler; anything else means an unexpected setup: leave it alone.
  if (handlers.length !== 1) return;
  const fastify = handlers[0]!;
  const recorder = new RequestRecorder(o.log, o.metrics);
  // The app's own cap (server/lifecycle.ts): lean and Fastify-served requests share one counter.
  const limiter = inFlightLimiterOf(app) ?? new InFlightLimiter(o.maxConcurrentRequests);
  let closing = false;
  app.addHook("preClose", async () => {
    closing = true;
  });
  // A cluster worker drains before it closes (server/lifecycle.ts): its answers close their
  // connections from then on, so clients move to the other workers without a failed request.
  server.once("veil:drain", () => {
    closing = true;
  });

  const answer = (res: ServerResponse, started: number, status: number, headers: Record<string, string>, body: Uint8Array, outcome: string): void => {
    // Stopping (app.close()) or draining as a cluster worker (server/lifecycle.ts closes the
    // listener first): this answer closes its connection, so the client's next request goes to a
    // server that stays, as Fastify's routes do.
    if (closing) headers.connection = "close";
    headers["content-length"] = String(body.length);
    res.writeHead(status, headers);
    res.end(body);
    recorder.record(status, outcome, performance.now() - started);
  };

  const problem = (res: ServerResponse, started: number, e: unknown): void => {
    const err = toProtocolError(e);
    if (err.code === "INTERNAL_ERR") o.log.error({ err: safeError(e) }, "unexpected error");
    const headers: Record<string, string> = { "content-type": PROBLEM_MEDIA_TYPE, "cache-control": "no-store" };
    for (const [k, v] of Object.entries(err.headers)) headers[k.toLowerCase()] = v;
    answer(res, started, err.status, headers, encodeProblem(toProblem(err)), err.code);
  };

  const serveLean = (req: IncomingMessage, res: ServerResponse): void => {
    const started = performance.now();
    const release = limiter.tryAcquire();
    if (release === undefined) {
      req.resume();
      problem(res, started, new ProtocolError("HTTP_ERR_OVERLOADED", undefined, { headers: { "retry-after": "1" } }));
      return;
    }
    res.once("close", release);
    const declared = Number(req.headers["content-length"]);
    const body = Buffer.allocUnsafe(declared);
    let read = 0;
    req.on("data", (chunk: Buffer) => {
      // node:http delivers at most Content-Length bytes; the check keeps the copy in bounds anyway.
      if (read + chunk.length > declared) {
        req.destroy();
        return;
      }
      chunk.copy(body, read);
      read += chunk.length;
    });
    req.once("end", () => {
      if (read !== declared) {
        problem(res, started, new ProtocolError("HTTP_ERR_BAD_REQUEST", "body shorter than its Content-Length"));
        return;
      }
      o.serve(new Uint8Array(body.buffer, body.byteOffset, read)).then(
        (a) => {
          if (!a.ok) {
            problem(res, started, a.error);
            return;
          }
          // RFC 9458 §5: the outer response carries only what it needs: 200, content type, content.
          answer(res, started, 200, { "content-type": MEDIA_TYPES.response }, a.sealed, a.outcome);
        },
        (e: unknown) => problem(res, started, e),
      );
    });
    // A client that goes away mid-body: nothing to answer; node:http closes the socket.
    req.once("error", release);
  };

  server.removeListener("request", fastify);
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    if (isCanonicalGatewayPost(req, o.maxRequestBytes)) serveLean(req, res);
    else fastify(req, res);
  });
}
