// The lean path for the gateway's one hot request: a canonical `POST /gateway` (Content-Type
// message/ohttp-req, a Content-Length within maxRequestBytes, no Transfer-Encoding, no Expect) is
// served straight from node:http's request event, before Fastify. Every other request (other
// paths and methods, chunked or oversized bodies, other media types, /ohttp-keys, health, metrics)
// goes to Fastify unchanged, which answers them exactly as before (routes/gateway.ts serves
// non-canonical POSTs with the same function, request-path.ts's serveEncapsulatedRequest).
//
// Why: Fastify's routing, hooks, per-request child logger, content-type parser and reply pipeline
// cost about as much CPU per request as the whole pass-through proxy the gateway is measured
// against (bench/gateway.ts); the request itself needs none of them. What Fastify gave the route
// is kept here: node:http's limits (header size, headers and request timeouts, keep-alive) still
// apply, the body is capped by Content-Length before it is read, the concurrency cap applies, the
// answer is one write, and the request gets the same log line and metrics as in
// server/lifecycle.ts (route "/gateway", method, status, outcome, duration; nothing else), written
// by server/lean-answers.ts as for every answer served outside Fastify.

import type { IncomingMessage, ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import type { FastifyInstance } from "fastify";
import { ProtocolError } from "../../core/errors.js";
import { isMediaType } from "../../core/http-fields.js";
import { MEDIA_TYPES } from "../../core/ohttp/index.js";
import { RequestRecorder, drainStateOf, writeAnswer, writeProblem } from "../../server/lean-answers.js";
import { InFlightLimiter, inFlightLimiterOf } from "../../server/lifecycle.js";
import { safeError, type Logger } from "../../server/logging.js";
import type { HttpMetrics } from "../../server/metrics.js";
import { renderProblem } from "../../server/problem-handler.js";
import type { OuterAnswer } from "../request-path.js";

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
  return isMediaType(h["content-type"], MEDIA_TYPES.request);
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
  // Stopping: answers close their connections, as Fastify's do (server/lean-answers.ts).
  const drain = drainStateOf(app);

  const sealed = (res: ServerResponse, started: number, a: { sealed: Uint8Array; outcome: string }): void => {
    // RFC 9458 §5: the outer response carries only what it needs: 200, content type, content.
    writeAnswer(res, drain, 200, { "content-type": MEDIA_TYPES.response }, a.sealed);
    recorder.record(ROUTE, "POST", 200, a.outcome, performance.now() - started);
  };

  const problem = (res: ServerResponse, started: number, e: unknown): void => {
    const p = renderProblem(e);
    if (p.err.code === "INTERNAL_ERR") o.log.error({ err: safeError(e) }, "unexpected error");
    writeProblem(res, drain, p);
    recorder.record(ROUTE, "POST", p.status, p.err.code, performance.now() - started);
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
          if (a.ok) sealed(res, started, a);
          else problem(res, started, a.error);
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
