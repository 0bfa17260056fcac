// `veil relay --config FILE`: loads and validates the configuration, then relays until
// SIGTERM/SIGINT (graceful: in-flight requests finish, idle connections close).

import { Command } from "commander";
import type { FastifyInstance } from "fastify";
import { destination as pinoDestination } from "pino";
import { isProtocolError } from "../core/errors.js";
import { parseWorkers, serveWithWorkers } from "../server/cluster.js";
import { redactConfig } from "../server/config.js";
import { runServer, type RunningServer } from "../server/lifecycle.js";
import { createLogger, safeError, type Logger } from "../server/logging.js";
import { buildRelay, type RelayDeps } from "./app.js";
import { RELAY_SCHEMA, loadRelayConfig, type RelayConfig } from "./config.js";

export interface StartedRelay extends RunningServer {
  app: FastifyInstance;
}

/** Starts a relay from a validated config (used by the command, the demo and tests). */
export async function startRelay(
  config: RelayConfig,
  options: { log?: Logger; handleSignals?: boolean; deps?: Omit<RelayDeps, "log"> } = {},
): Promise<StartedRelay> {
  const log = options.log ?? createRelayLogger(config.logLevel);
  const app = buildRelay(config, { ...options.deps, log });
  const running = await runServer(app, {
    listen: config.listen,
    shutdownGraceMs: config.limits.shutdownGraceMs,
    log,
    ...(options.handleSignals === undefined ? {} : { handleSignals: options.handleSignals }),
  });
  log.info({ url: running.url, routes: config.routes.map((r) => r.path), rateLimitStore: config.rateLimit.store.startsWith("redis") ? "redis" : "memory" }, "relay listening");
  return { ...running, app };
}

/**
 * The relay's log: one line per request, so lines are written in 4 KiB batches (and at least every
 * second) instead of one write per line, which was a tenth of the relay's CPU per request. pino
 * flushes the rest when the process exits. On a terminal, lines stay pretty and immediate.
 */
function createRelayLogger(level: string): Logger {
  if (process.stdout.isTTY) return createLogger("relay", { level });
  // Bounded: if stdout stalls, lines beyond 16 MiB are dropped rather than filling the memory.
  const destination = pinoDestination({ dest: 1, sync: false, minLength: 4096, maxLength: 16 * 1024 * 1024 });
  setInterval(() => destination.flush(), 1000).unref();
  return createLogger("relay", { level, destination });
}

export function relayCommand(): Command {
  return new Command("relay")
    .description("run the Oblivious HTTP relay (RFC 9458) in front of one or more gateways")
    .option("--config <file>", "JSON configuration file (VEIL_RELAY_* environment variables override it)")
    .option("--print-config", "print the effective configuration (secrets redacted) and exit")
    .option("--workers <n>", "processes sharing the port (node:cluster); the relay keeps no shared state but its rate limits", parseWorkers, 1)
    .action(async (o: { config?: string; printConfig?: boolean; workers: number }) => {
      try {
        const config = loadRelayConfig(o.config);
        if (o.printConfig === true) {
          process.stdout.write(JSON.stringify(redactConfig(RELAY_SCHEMA, config), null, 2) + "\n");
          return;
        }
        await serveWithWorkers({
          name: "relay",
          workers: o.workers,
          shutdownGraceMs: config.limits.shutdownGraceMs,
          log: createLogger("relay", { level: config.logLevel }),
          start: () => startRelay(config),
        });
      } catch (e) {
        // Configuration errors are ours and safe to print; anything else only by name and code.
        process.stderr.write(`veil relay: ${isProtocolError(e) ? e.message : JSON.stringify(safeError(e))}\n`);
        process.exitCode = 1;
      }
    });
}
