// `veil relay --config FILE`: loads and validates the configuration, then relays until
// SIGTERM/SIGINT (graceful: in-flight requests finish, idle connections close).

import { Command } from "commander";
import type { FastifyInstance } from "fastify";
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
  const log = options.log ?? createLogger("relay", { level: config.logLevel });
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
