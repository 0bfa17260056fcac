// `veil issuer --config FILE`: loads and validates the configuration and the key file (creating
// it, mode 0600, on first start), then serves until SIGTERM/SIGINT. Keys rotate on schedule: a
// timer runs the key store's rotation step, and every request checks it too (a no-op when nothing
// is due).

import type { KeyObject } from "node:crypto";
import { Command } from "commander";
import { ProtocolError, isProtocolError } from "../core/errors.js";
import { toHex } from "../core/bytes.js";
import { isClusterWorker, parseWorkers, serveWithWorkers } from "../server/cluster.js";
import { redactConfig } from "../server/config.js";
import { runServer, type RunningServer } from "../server/lifecycle.js";
import { createLogger, safeError, type Logger } from "../server/logging.js";
import { createMetrics } from "../server/metrics.js";
import { buildIssuer } from "./app.js";
import { ISSUER_SCHEMA, loadIssuerConfig, type IssuerConfig } from "./config.js";
import { IssuerKeyStore, type IssuerKey } from "./key-store.js";
import type { QuotaAttester } from "./attester.js";
import { RemoteAttester, startIssuerPrimary } from "./cluster.js";

export interface StartedIssuer extends RunningServer {
  keys: IssuerKeyStore;
}

/** Starts an issuer from a validated config (used by the command, the demo and tests). */
export async function startIssuer(
  config: IssuerConfig,
  options: {
    log?: Logger;
    handleSignals?: boolean;
    now?: () => number;
    generateRsaKey?: () => Promise<KeyObject>;
    /** Workers of `--workers N`: the primary rotates the key file, this process only re-reads it. */
    followKeyFile?: boolean;
    /** Workers of `--workers N`: the quota is held by the primary (issuer/cluster.ts). */
    attester?: QuotaAttester;
  } = {},
): Promise<StartedIssuer> {
  const log = options.log ?? createLogger("issuer", { level: config.logLevel });
  const keys = await openKeyStore(config, options);
  const app = buildIssuer(config, {
    keys,
    log,
    metrics: createMetrics("issuer"),
    ...(options.now === undefined ? {} : { now: options.now }),
    ...(options.attester === undefined ? {} : { attester: options.attester }),
  });
  // Rotation ahead of requests, so no request waits for an RSA key generation.
  const everyMs = Math.min(60_000, Math.max(1000, (config.keyLifetimeSec * 1000) / 8));
  const timer = setInterval(() => {
    keys.refresh().catch((e: unknown) => log.error({ err: safeError(e) }, "key rotation failed"));
  }, everyMs);
  timer.unref();
  app.addHook("onClose", async () => clearInterval(timer));
  const running = await runServer(app, {
    listen: config.listen,
    shutdownGraceMs: config.limits.shutdownGraceMs,
    log,
    ...(options.handleSignals === undefined ? {} : { handleSignals: options.handleSignals }),
  });
  log.info(
    { url: running.url, tokenTypes: config.tokenTypes, keys: keys.published().map((k) => ({ tokenType: k.tokenType, notBefore: k.notBefore })) },
    "issuer listening",
  );
  return { ...running, keys };
}

/**
 * The emergency rotation of `veil issuer rotate --now`: replaces every key of the key file by a new
 * one (per token type) valid from the next whole second (issuer/key-store.ts rotateNow says why not
 * this one). Returns the new keys.
 */
export async function rotateIssuerKeysNow(
  config: Pick<IssuerConfig, "keys" | "tokenTypes" | "keyLifetimeSec">,
  options: { now?: () => number; generateRsaKey?: () => Promise<KeyObject> } = {},
): Promise<IssuerKey[]> {
  return await (await openKeyStore(config, options)).rotateNow();
}

/** The issuer's key store for `config`, with the clock and key generation of tests when given. */
function openKeyStore(
  config: Pick<IssuerConfig, "keys" | "tokenTypes" | "keyLifetimeSec">,
  options: { now?: () => number; generateRsaKey?: () => Promise<KeyObject>; followKeyFile?: boolean },
): Promise<IssuerKeyStore> {
  return IssuerKeyStore.open({
    file: config.keys,
    tokenTypes: config.tokenTypes,
    keyLifetimeSec: config.keyLifetimeSec,
    ...(options.now === undefined ? {} : { now: options.now }),
    ...(options.generateRsaKey === undefined ? {} : { generateRsaKey: options.generateRsaKey }),
    ...(options.followKeyFile === true ? { follower: true } : {}),
  });
}

/**
 * `veil issuer rotate --now --config FILE`: the emergency rotation (rotateIssuerKeysNow); the
 * running issuer (every worker) picks the file up within a second, and gateways that refetch its
 * directory accept only tokens of the new key. For when old tokens must stop working at once: a
 * gateway whose nonce store lost its data refuses tokens of keys published before the loss until
 * they leave the directory, and accepts the new key's.
 */
function rotateCommand(): Command {
  return new Command("rotate")
    .description("emergency key rotation: publish a new token key for immediate use, dropping the current ones")
    .option("--config <file>", "the issuer's JSON configuration file (VEIL_ISSUER_* environment variables override it)")
    .option("--now", "required: rotate now (old tokens stop being accepted once gateways refetch the directory)")
    .action(async (_opts: unknown, cmd: Command) => {
      // --config may be parsed by `veil issuer` itself (it has the same option): read both.
      const o = cmd.optsWithGlobals<{ config?: string; now?: boolean }>();
      try {
        if (o.now !== true) throw new ProtocolError("CFG_ERR_INVALID", "rotate: pass --now (an emergency rotation invalidates every token issued so far)");
        const config = loadIssuerConfig(o.config);
        const fresh = await rotateIssuerKeysNow(config);
        for (const k of fresh) {
          process.stdout.write(`token type ${k.tokenType}: new key ${toHex(k.tokenKeyId).slice(0, 16)}… valid from ${new Date(k.notBefore * 1000).toISOString()}\n`);
        }
        process.stdout.write(`${config.keys} rewritten; the running issuer publishes the new key within a second.\n`);
      } catch (e) {
        if (!isProtocolError(e)) throw e;
        process.stderr.write(`veil issuer rotate: ${e.message}\n`);
        process.exitCode = 1;
      }
    });
}

export function issuerCommand(): Command {
  return new Command("issuer")
    .addCommand(rotateCommand())
    .description("run the Privacy Pass token issuer (RFC 9578) with its built-in attester")
    .option("--config <file>", "JSON configuration file (VEIL_ISSUER_* environment variables override it)")
    .option("--print-config", "print the effective configuration (secrets redacted) and exit")
    .option("--workers <n>", "processes sharing the port, the key file and the quota (node:cluster)", parseWorkers, 1)
    .action(async (o: { config?: string; printConfig?: boolean; workers: number }) => {
      try {
        const config = loadIssuerConfig(o.config);
        if (o.printConfig === true) {
          process.stdout.write(JSON.stringify(redactConfig(ISSUER_SCHEMA, config), null, 2) + "\n");
          return;
        }
        const log = createLogger("issuer", { level: config.logLevel });
        await serveWithWorkers({
          name: "issuer",
          workers: o.workers,
          shutdownGraceMs: config.limits.shutdownGraceMs,
          log,
          // Workers: keys and quota are the primary's (issuer/cluster.ts).
          start: () => startIssuer(config, isClusterWorker() ? { followKeyFile: true, attester: new RemoteAttester(config.attester) } : {}),
          primaryStart: () => startIssuerPrimary(config, log),
        });
      } catch (e) {
        if (!isProtocolError(e)) throw e;
        process.stderr.write(`veil issuer: ${e.message}\n`);
        process.exitCode = 1;
      }
    });
}
