// Privacy-safe logging (pino). By construction, nothing here can print a client address, a token, a
// key, a credential or a body: Fastify's own request logging is off, servers log one line per request
// through `logRequest` with a fixed set of fields, and errors are reduced to their code and name
// (a foreign error's message can quote input, e.g. JSON.parse's, so it is not logged).
//
// Lines are buffered (BufferedLines): one request line per request written with its own write(2)
// cost the servers more CPU than their metrics and routing together. A line waits at most
// LOG_FLUSH_MS (so a crash loses at most that much), is written at once when LOG_BUFFER_BYTES are
// pending, and everything pending is written on a graceful stop (runServer calls `log.flush()`)
// and when the process exits (process.exit, an uncaught exception, the end of the event loop).

import { destination as pinoDestination, pino, type Logger, type DestinationStream } from "pino";
import { isProtocolError } from "../core/errors.js";

export type { Logger } from "pino";

export interface LoggerOptions {
  level?: string;
  /** Where lines go (tests capture them); default stdout, human-readable when it is a terminal. */
  destination?: DestinationStream;
}

/** Reduces an error to what is safe to log: our code and detail, or a foreign error's name/code. */
export function safeError(e: unknown): Record<string, unknown> {
  if (isProtocolError(e)) {
    const out: Record<string, unknown> = { code: e.code, detail: e.message };
    if (e.cause !== undefined) out.cause = safeError(e.cause);
    return out;
  }
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    const out: Record<string, unknown> = { name: e.name };
    if (typeof code === "string") out.code = code;
    // Stack frames without the first line (which repeats the message).
    if (e.stack !== undefined) out.stack = e.stack.split("\n").slice(1, 8).map((l) => l.trim());
    if (e.cause !== undefined) out.cause = safeError(e.cause);
    return out;
  }
  return { name: typeof e };
}

/** Longest time a log line waits in the buffer before it is written. */
export const LOG_FLUSH_MS = 10;
/** Pending lines are written at once when they reach this many characters. */
export const LOG_BUFFER_BYTES = 8192;

const PENDING = new Set<BufferedLines>();
let exitHookInstalled = false;

/**
 * A log destination that collects lines and writes them in one write(2) per LOG_BUFFER_BYTES or
 * LOG_FLUSH_MS, whichever comes first. The writing itself is pino's (sonic-boom, synchronous: it
 * retries EAGAIN and partial writes), so nothing is in flight in a thread when the process exits.
 */
export class BufferedLines implements DestinationStream {
  readonly #out: { write(data: string): unknown };
  #pending = "";
  #timer: NodeJS.Timeout | undefined;
  readonly #onTimer = (): void => {
    this.#timer = undefined;
    this.flush();
  };

  constructor(fd: number) {
    this.#out = pinoDestination({ dest: fd, sync: true });
    PENDING.add(this);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      // Runs on process.exit() and after an uncaught exception, as on a normal end.
      process.on("exit", () => {
        for (const b of PENDING) b.flush();
      });
    }
  }

  write(line: string): void {
    this.#pending += line;
    if (this.#pending.length >= LOG_BUFFER_BYTES) {
      this.flush();
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(this.#onTimer, LOG_FLUSH_MS);
      this.#timer.unref();
    }
  }

  /** Writes whatever is pending now (pino's `logger.flush(cb)` calls this). */
  flush(cb?: (err?: Error) => void): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#pending !== "") {
      const lines = this.#pending;
      this.#pending = "";
      this.#out.write(lines);
    }
    cb?.();
  }
}

export function createLogger(component: string, options: LoggerOptions = {}): Logger {
  const pinoOptions = {
    level: options.level ?? "info",
    base: { component },
    serializers: { err: safeError, error: safeError },
    // Belt and braces: these never get logged by Veil's code, but must not slip in via a child.
    redact: {
      paths: ["req", "res", "headers", "*.headers", "body", "*.body", "token", "*.token", "authorization", "*.authorization", "privateKey", "*.privateKey", "credential", "*.credential", "ip", "*.ip", "remoteAddress", "*.remoteAddress"],
      censor: "[redacted]",
    },
  };
  if (options.destination === undefined && process.stdout.isTTY) {
    return pino({ ...pinoOptions, transport: { target: "pino-pretty", options: { colorize: true, ignore: "pid,hostname" } } });
  }
  const destination = options.destination ?? new BufferedLines(process.stdout.fd || 1);
  const log = pino(pinoOptions, destination);
  LINE_SINKS.set(log, destination);
  return log;
}

const LINE_SINKS = new WeakMap<Logger, DestinationStream>();

/**
 * The stream a logger made by createLogger writes its lines to, for the one caller that formats a
 * fixed-shape request line itself (server/lean-answers.ts, where pino's generic serialisation cost
 * more than the request's own work); undefined for any other logger (a child, a pretty-printing
 * terminal logger), which then gets its lines through pino as usual.
 */
export function lineSinkOf(log: Logger): DestinationStream | undefined {
  return LINE_SINKS.get(log);
}

export interface RequestLogLine {
  /** The route pattern (never the raw URL, which could carry a task id or a query). */
  route: string;
  method: string;
  status: number;
  /** A short word: "ok", "forwarded", an error code... */
  outcome: string;
  durationMs: number;
}

export function logRequest(log: Pick<Logger, "info">, line: RequestLogLine): void {
  log.info({ route: line.route, method: line.method, status: line.status, outcome: line.outcome, durationMs: Math.round(line.durationMs * 100) / 100 }, "request");
}
