// Answers served outside Fastify. Two hot requests skip Fastify's routing and reply pipeline (the
// gateway's canonical POST /gateway in gateway/routes/lean-gateway.ts, the relay's canonical POSTs
// in relay/front.ts), and the relay's Fastify route writes its forwarded answer itself (a hijacked
// reply, because Fastify would add a Content-Type of its own). What Fastify would otherwise give
// them lives here, once:
//
// - DrainState: whether the server is stopping, and so whether an answer closes its connection;
//   Fastify's own answers read the same state (server/lifecycle.ts's onSend hook);
// - writeAnswer / writeProblem: one write of status, fields and body, with Connection: close while
//   the server stops (problem documents are rendered by server/problem-handler.ts's renderProblem);
// - RequestRecorder: the request's log line and metrics, the same as lifecycle.ts's onResponse hook.

import type { ServerResponse } from "node:http";
import type { FastifyInstance } from "fastify";
import { logRequest, lineSinkOf, type Logger } from "./logging.js";
import { ChildCache, type HttpMetrics } from "./metrics.js";
import type { RenderedProblem } from "./problem-handler.js";

/**
 * Where a server is in its life: "serving"; "draining" (a graceful stop began: requests are still
 * served, but every answer closes its connection, so clients move to another process or replica);
 * "closing" (app.close() runs: components that refuse new work do so, e.g. the relay's 503).
 * Once stopping, it never goes back.
 */
export class DrainState {
  #phase: "serving" | "draining" | "closing" = "serving";
  readonly #onDrain: (() => void)[] = [];

  get phase(): "serving" | "draining" | "closing" {
    return this.#phase;
  }

  /** Every answer from now on carries Connection: close. */
  get closesConnections(): boolean {
    return this.#phase !== "serving";
  }

  /** The server is closing: new work is refused. */
  get closing(): boolean {
    return this.#phase === "closing";
  }

  /**
   * Calls `listener` once, when the stop begins: for connections that are told to go elsewhere by
   * other means than Connection: close (HTTP/2's GOAWAY, relay/h2.ts).
   */
  onDrain(listener: () => void): void {
    this.#onDrain.push(listener);
  }

  /** A graceful stop began (server/lifecycle.ts's runServer). */
  drain(): void {
    if (this.#phase !== "serving") return;
    this.#phase = "draining";
    for (const l of this.#onDrain.splice(0)) l();
  }

  /** app.close() began (its preClose hook). */
  close(): void {
    this.drain();
    this.#phase = "closing";
  }
}

const DRAIN_STATES = new WeakMap<FastifyInstance, DrainState>();

/**
 * The app's drain state: one per app, made on first use (createServerApp makes it), which moves to
 * "closing" when app.close() begins. Call it before the app is ready (it adds a hook).
 */
export function drainStateOf(app: FastifyInstance): DrainState {
  let state = DRAIN_STATES.get(app);
  if (state === undefined) {
    const created = new DrainState();
    app.addHook("preClose", async () => created.close());
    DRAIN_STATES.set(app, created);
    state = created;
  }
  return state;
}

/**
 * Writes a whole answer at once: status, `headers` (lowercase names), Content-Length, and
 * Connection: close when the server is stopping (so the client's next request goes to a server
 * that stays, as Fastify's answers do).
 */
export function writeAnswer(res: ServerResponse, drain: DrainState, status: number, headers: Record<string, string>, body: Uint8Array): void {
  headers["content-length"] = String(body.length);
  if (drain.closesConnections) headers.connection = "close";
  res.writeHead(status, headers);
  res.end(body);
}

/** Writes a rendered problem document (server/problem-handler.ts's renderProblem). */
export function writeProblem(res: ServerResponse, drain: DrainState, p: RenderedProblem): void {
  writeAnswer(res, drain, p.status, Object.fromEntries(p.headers), p.body);
}

interface Children {
  inc(): void;
  observe(seconds: number): void;
  /** The request line's JSON between "time" and "durationMs" (fixed per route, method, outcome, status). */
  fields: string;
}

/**
 * One log line and the request metrics of a request served outside Fastify, the same fields as
 * server/lifecycle.ts's onResponse hook records (route pattern, method, status, outcome word,
 * duration: nothing from the client). Metric children are cached: label hashing per request is a
 * measurable share of a lean path. For the same reason, when the logger was made by createLogger,
 * the line (whose shape is fixed) is formatted here as the exact JSON that `logRequest` produces
 * through pino (a unit test holds the two equal) and written to the logger's destination, without
 * pino's generic serialisation and redaction walk, which cost more per request than the gateway's
 * Binary HTTP and policy work together (bench/gateway.ts --profile). Other loggers get the line
 * through `logRequest`.
 */
export class RequestRecorder {
  readonly #log: Logger;
  readonly #metrics: HttpMetrics;
  readonly #children = new ChildCache((route: string) =>
    new ChildCache((method: string) =>
      new ChildCache((outcome: string) => new ChildCache((status: number) => this.#makeChildren(route, method, outcome, status))),
    ),
  );
  readonly #sink: { write(line: string): unknown } | undefined;
  readonly #head: string;

  constructor(log: Logger, metrics: HttpMetrics) {
    this.#log = log;
    this.#metrics = metrics;
    this.#sink = lineSinkOf(log);
    this.#head = `{"level":${log.levels.values.info},"time":`;
  }

  #makeChildren(route: string, method: string, outcome: string, status: number): Children {
    const counter = this.#metrics.requests.labels({ route, outcome, status: String(status) });
    const histogram = this.#metrics.duration.labels({ route });
    const bindings = JSON.stringify(this.#log.bindings()).slice(1, -1);
    const fields =
      `${bindings === "" ? "" : `,${bindings}`},"route":${JSON.stringify(route)},"method":${JSON.stringify(method)},` +
      `"status":${status},"outcome":${JSON.stringify(outcome)},"durationMs":`;
    return { inc: () => counter.inc(), observe: (s) => histogram.observe(s), fields };
  }

  record(route: string, method: string, status: number, outcome: string, durationMs: number): void {
    // Nested by value (route, method, outcome: constant strings; status: a number): no key string
    // is built or hashed per request.
    const c = this.#children.get(route).get(method).get(outcome).get(status);
    c.inc();
    c.observe(durationMs / 1000);
    const sink = this.#sink;
    if (sink === undefined) {
      logRequest(this.#log, { route, method, status, outcome, durationMs });
      return;
    }
    if (!this.#log.isLevelEnabled("info")) return;
    // The logger's destination buffers lines (server/logging.ts): no write(2) per request.
    sink.write(`${this.#head}${Date.now()}${c.fields}${Math.round(durationMs * 100) / 100},"msg":"request"}\n`);
  }
}
