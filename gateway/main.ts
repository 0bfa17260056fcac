// `veil gateway --config FILE`: loads and validates the configuration, the key file and the token
// gate, then serves until SIGTERM/SIGINT. SIGHUP re-reads the key file: requests in flight keep the
// key they were decapsulated with, new requests see the new keys; a bad file keeps the old keys.

import { Command } from "commander";
import type { Registry } from "prom-client";
import { isProtocolError } from "../core/errors.js";
import { parseWorkers, serveWithWorkers } from "../server/cluster.js";
import { redactConfig } from "../server/config.js";
import { runServer, type RunningServer } from "../server/lifecycle.js";
import { createLogger, safeError, type Logger } from "../server/logging.js";
import { createMetrics } from "../server/metrics.js";
import { buildGateway } from "./app.js";
import { GATEWAY_SCHEMA, loadGatewayConfig, type GatewayConfig } from "./config.js";
import type { Gate } from "./gate-contract.js";
import { KeyStore } from "./key-store.js";
import { createTokenGate } from "./tokens.js";

/**
 * TOKEN GATE SEAM (start-up): the gate for `config.tokens` (gateway/tokens.ts: issuer directories,
 * nonce store from `tokens.store`). `tokens.required: false` needs none (OPEN_GATE is used).
 */
export async function createConfiguredGate(config: GatewayConfig, log: Logger, registry?: Registry): Promise<Gate | undefined> {
  if (!config.tokens.required) return undefined;
  return createTokenGate(config.tokens, { log, ...(registry === undefined ? {} : { registry }) });
}

export interface StartedGateway extends RunningServer {
  keys: KeyStore;
  /** Re-reads the key file (what SIGHUP does). Rejects, keeping the old keys, on a bad file. */
  reloadKeys(): Promise<void>;
}

/** Starts a gateway from a validated config (used by the command and by the demo). */
export async function startGateway(
  config: GatewayConfig,
  options: { log?: Logger; handleSignals?: boolean; gate?: Gate } = {},
): Promise<StartedGateway> {
  const log = options.log ?? createLogger("gateway", { level: config.logLevel });
  const keys = await KeyStore.fromFile(config.keys, { retiredGraceSec: config.retiredKeyGraceSec });
  const metrics = createMetrics("gateway");
  const gate = options.gate ?? (await createConfiguredGate(config, log, metrics.registry));
  const app = buildGateway(config, { keys, log, metrics, ...(gate === undefined ? {} : { gate }) });
  const reloadKeys = async (): Promise<void> => {
    await keys.reload();
    log.info({ keys: keys.states().map((k) => ({ keyId: k.keyId, state: k.state })) }, "key file reloaded");
  };
  const onHup = (): void => {
    reloadKeys().catch((e: unknown) => log.error({ err: safeError(e) }, "key file reload failed: keeping the current keys"));
  };
  if (options.handleSignals !== false) {
    // Hooks must be added before the app listens (Fastify refuses addHook afterwards).
    app.addHook("onClose", async () => {
      process.off("SIGHUP", onHup);
    });
  }
  const running = await runServer(app, {
    listen: config.listen,
    shutdownGraceMs: config.limits.shutdownGraceMs,
    log,
    ...(options.handleSignals === undefined ? {} : { handleSignals: options.handleSignals }),
  });
  if (options.handleSignals !== false) process.on("SIGHUP", onHup);
  log.info({ url: running.url, targets: Object.keys(config.targets), policy: config.policy, tokensRequired: config.tokens.required }, "gateway listening");
  return { ...running, keys, reloadKeys };
}

export function gatewayCommand(): Command {
  return new Command("gateway")
    .description("run the Oblivious HTTP gateway in front of the DAP aggregators")
    .option("--config <file>", "JSON configuration file (VEIL_GATEWAY_* environment variables override it)")
    .option("--print-config", "print the effective configuration (secrets redacted) and exit")
    .option("--workers <n>", "processes sharing the port, the key file and the nonce store (node:cluster)", parseWorkers, 1)
    .action(async (o: { config?: string; printConfig?: boolean; workers: number }) => {
      try {
        const config = loadGatewayConfig(o.config);
        if (o.printConfig === true) {
          process.stdout.write(JSON.stringify(redactConfig(GATEWAY_SCHEMA, config), null, 2) + "\n");
          return;
        }
        await serveWithWorkers({
          name: "gateway",
          workers: o.workers,
          shutdownGraceMs: config.limits.shutdownGraceMs,
          log: createLogger("gateway", { level: config.logLevel }),
          start: () => startGateway(config),
        });
      } catch (e) {
        if (!isProtocolError(e)) throw e;
        process.stderr.write(`veil gateway: ${e.message}\n`);
        process.exitCode = 1;
      }
    });
}
