// What the relay does with an encapsulated request once its body has been read, whichever HTTP
// front received it (the lean path in relay/front.ts or the Fastify route in relay/routes/):
// refuse it while shutting down, over the concurrency cap or over the client's rate limit, else
// forward it to the route's gateway. Also the one place that records a request in the log and the
// metrics for both fronts, and that renders problem documents as raw bytes for the lean path.

import { symbols } from "pino";
import { ProtocolError } from "../core/errors.js";
import { PROBLEM_MEDIA_TYPE, encodeProblem, toProblem } from "../core/problem.js";
import { logRequest, type Logger } from "../server/logging.js";
import type { HttpMetrics } from "../server/metrics.js";
import type { KeyCache } from "./key-cache.js";
import { clientKey, type RateLimiter } from "./rate-limit.js";
import type { Upstream, UpstreamAnswer } from "./upstream.js";

export const REQUEST_MEDIA_TYPE = "message/ohttp-req";

export interface RelayRoute {
  /** The configured path (also the route label in logs and metrics). */
  path: string;
  upstream: Upstream;
  keys: KeyCache | undefined;
}

export type ForwardCallback = (err: ProtocolError | undefined, answer: UpstreamAnswer | undefined) => void;

export interface ForwarderOptions {
  limiter: RateLimiter | undefined;
  maxConcurrent: number;
  ipv6PrefixBits: number;
}

export class Forwarder {
  readonly #o: ForwarderOptions;
  /** Requests between their checks and the gateway's answer (both fronts). */
  inFlight = 0;
  /** Set when the server starts shutting down: new requests get 503. */
  closing = false;
  /**
   * A cluster worker is draining (server/lifecycle.ts): requests are still forwarded, but every
   * answer closes its connection, so clients move to the other workers.
   */
  draining = false;

  constructor(opts: ForwarderOptions) {
    this.#o = opts;
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
    if (this.closing) {
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
}

function rateLimited(retryAfterSec: number): ProtocolError {
  return new ProtocolError("HTTP_ERR_RATE_LIMITED", `try again in ${retryAfterSec} s`, { headers: { "retry-after": String(retryAfterSec) } });
}

/** A problem document as bytes plus the headers to send with it (lean path). */
export function renderProblem(err: ProtocolError): { status: number; headers: [string, string][]; body: Buffer } {
  const headers: [string, string][] = [
    ["content-type", PROBLEM_MEDIA_TYPE],
    ["cache-control", "no-store"],
  ];
  for (const [k, v] of Object.entries(err.headers)) if (k !== "connection") headers.push([k, v]);
  return { status: err.status, headers, body: Buffer.from(encodeProblem(toProblem(err))) };
}

interface Children {
  inc(): void;
  observe(seconds: number): void;
  /** The request log line's JSON between "time" and "durationMs" (fixed per route, outcome, status). */
  fields: string;
}

/**
 * One log line and the request metrics of a request served outside Fastify (the same fields as
 * server/lifecycle.ts's onResponse hook). Metric children are cached: label hashing per request
 * would be a measurable share of the lean path. For the same reason the request line, whose shape
 * is fixed (route pattern, method, status, outcome word, duration: nothing from the client), is
 * formatted here as the exact JSON that `logRequest` would produce through pino (a unit test holds
 * the two equal), without pino's generic serialisation and redaction walk, and lines are handed to
 * the logger's stream in batches (every 64 lines or 100 ms, and on close): one stream write per
 * line cost more than a tenth of the relay's CPU per request. So request lines can appear up to
 * 100 ms after other log lines written meanwhile; each carries its own time.
 */
export class Recorder {
  readonly #log: Logger;
  readonly #metrics: HttpMetrics;
  readonly #children = new Map<string, Children>();
  readonly #stream: { write(line: string): unknown } | undefined;
  readonly #head: string;
  #batch = "";
  #lines = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(log: Logger, metrics: HttpMetrics) {
    this.#log = log;
    this.#metrics = metrics;
    const stream = (log as unknown as Record<symbol, unknown>)[symbols.streamSym];
    this.#stream = typeof (stream as { write?: unknown } | undefined)?.write === "function" ? (stream as { write(line: string): unknown }) : undefined;
    this.#head = `{"level":${log.levels.values.info},"time":`;
  }

  record(route: string, method: string, status: number, outcome: string, durationMs: number): void {
    const key = `${route}\n${outcome}\n${status}\n${method}`;
    let c = this.#children.get(key);
    if (c === undefined) {
      const counter = this.#metrics.requests.labels({ route, outcome, status: String(status) });
      const histogram = this.#metrics.duration.labels({ route });
      const bindings = JSON.stringify(this.#log.bindings()).slice(1, -1);
      const fields = `${bindings === "" ? "" : `,${bindings}`},"route":${JSON.stringify(route)},"method":${JSON.stringify(method)},"status":${status},"outcome":${JSON.stringify(outcome)},"durationMs":`;
      c = { inc: () => counter.inc(), observe: (s) => histogram.observe(s), fields };
      this.#children.set(key, c);
    }
    c.inc();
    c.observe(durationMs / 1000);
    if (this.#stream === undefined) {
      logRequest(this.#log, { route, method, status, outcome, durationMs });
      return;
    }
    if (!this.#log.isLevelEnabled("info")) return;
    this.#batch += `${this.#head}${Date.now()}${c.fields}${Math.round(durationMs * 100) / 100},"msg":"request"}\n`;
    if (++this.#lines >= 64) {
      this.flush();
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => this.flush(), 100);
      this.#timer.unref();
    }
  }

  /** Writes the pending request lines now. */
  flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#lines === 0) return;
    const batch = this.#batch;
    this.#batch = "";
    this.#lines = 0;
    this.#stream?.write(batch);
  }
}
