// The gateway as a Fastify plugin, for operators who already run a Fastify server in front of their
// aggregator:
//
//   import { veilGateway } from "veil-ohttp/gateway";
//   await app.register(veilGateway, { config: { keys: "keys.json", targets: {...}, tokens: {...} } });
//
// mounts GET /ohttp-keys and POST /gateway (with the token gate, its nonce store and the gateway's
// metrics) into `app`. The options are the gateway's configuration file as an object (`listen` and
// the server's own timeouts do not apply: the host app owns its server), validated at registration:
// a bad configuration, key file or store rejects `app.register`/`app.ready()` with CFG_ERR_INVALID
// (or CFG_ERR_KEY_FILE) before anything listens.
//
// Plugin conventions (fastify-plugin and encapsulation): the routes live in their own encapsulated
// context, so their content-type parsers (message/ohttp-req only), problem+json error handler,
// CORS hooks and request decorator do not touch the host's other routes; only the `veilGateway`
// decorator (keys, readiness, metrics registry) is visible to the host, thanks to fastify-plugin.
// Closing the host app closes the forwarder's connection pools and the token store (onClose).
//
// Of the server's limits, the plugin applies `limits.maxConcurrentRequests` to its own routes (503
// HTTP_ERR_OVERLOADED beyond it) and `limits.maxRequestBytes` to their bodies.
//
// What the standalone `veil gateway` adds and the host keeps for itself: the listening server and
// its other limits, /healthz, /readyz and /metrics (use `app.veilGateway.ready()` and
// `app.veilGateway.registry`), the request log, and the lean path that serves canonical POST
// /gateway requests before Fastify.

import type { FastifyInstance, FastifyPluginAsync } from "fastify";
import fp from "fastify-plugin";
import { Registry } from "prom-client";
import { limitConcurrency } from "../server/lifecycle.js";
import { installProblemHandler } from "../server/problem-handler.js";
import type { Logger } from "../server/logging.js";
import { gatewayReadiness, registerGatewayResource } from "./app.js";
import { parseGatewayConfig, type GatewayConfig } from "./config.js";
import { OPEN_GATE, type Gate } from "./gate-contract.js";
import { KeyStore } from "./key-store.js";
import { createConfiguredGate } from "./main.js";

/** A configuration object as written in a gateway JSON file: every field with a default may be left out. */
export type ConfigInput<T> = {
  [K in keyof T]?: T[K] extends readonly unknown[] ? T[K] : T[K] extends object ? ConfigInput<T[K]> : T[K];
};

export interface VeilGatewayOptions {
  /** The gateway's configuration (the shape of `veil gateway --config FILE`); validated on registration. */
  config: ConfigInput<GatewayConfig>;
  /** URL prefix of the two routes (default none: /ohttp-keys and /gateway). */
  prefix?: string;
  /** Where the gateway's metrics go (default: a new registry, at `app.veilGateway.registry`). */
  registry?: Registry;
  /** A token gate to use instead of the one `config.tokens` describes (tests). */
  gate?: Gate;
}

/** What the plugin exposes on the host app as `app.veilGateway`. */
export interface VeilGatewayHandle {
  /** The validated, frozen configuration. */
  readonly config: GatewayConfig;
  /** The gateway's metrics (decapsulations, upstream results, keys, tokens): merge or serve them. */
  readonly registry: Registry;
  /** Resolves when an active key is loaded and the token store answers; rejects naming what is not ready. */
  ready(): Promise<void>;
  /** Re-reads the key file (requests in flight keep their key); rejects, keeping the old keys, on a bad file. */
  reloadKeys(): Promise<void>;
}

declare module "fastify" {
  interface FastifyInstance {
    veilGateway: VeilGatewayHandle;
  }
}

const plugin: FastifyPluginAsync<VeilGatewayOptions> = async (app, options) => {
  const config = parseGatewayConfig(options.config);
  const log = app.log as Logger;
  const keys = await KeyStore.fromFile(config.keys, { retiredGraceSec: config.retiredKeyGraceSec });
  const registry = options.registry ?? new Registry();
  const gate = options.gate ?? (await createConfiguredGate(config, log, registry));
  const checks = gatewayReadiness(keys, gate ?? OPEN_GATE);

  app.decorate("veilGateway", {
    config,
    registry,
    async ready() {
      for (const [name, check] of Object.entries(checks)) {
        try {
          await check();
        } catch (e) {
          throw new Error(`veil gateway not ready: ${name}`, { cause: e });
        }
      }
    },
    reloadKeys: () => keys.reload(),
  } satisfies VeilGatewayHandle);

  try {
    await app.register(
      async (scope: FastifyInstance) => {
        if (!scope.hasRequestDecorator("veilOutcome")) scope.decorateRequest("veilOutcome", "");
        // Only message/ohttp-req bodies are parsed here: anything else is a 415 problem document.
        scope.removeAllContentTypeParsers();
        installProblemHandler(scope, { notFound: false });
        // The gateway's own cap (limits.maxConcurrentRequests) on its routes, whatever the host
        // allows its other routes: each request holds a key, a nonce reservation and an upstream
        // connection until answered.
        limitConcurrency(scope, config.limits.maxConcurrentRequests);
        registerGatewayResource(scope, config, { keys, log, registry, ...(gate === undefined ? {} : { gate }) });
      },
      options.prefix === undefined ? {} : { prefix: options.prefix },
    );
  } catch (e) {
    // Nothing was mounted: the gate's store would otherwise stay open (onClose never sees it).
    if (options.gate === undefined) await gate?.close?.();
    throw e;
  }
};

/** `app.register(veilGateway, { config })`: the Oblivious Gateway Resource inside an existing Fastify app. */
export const veilGateway = fp(plugin, { name: "veil-gateway", fastify: "5.x" });

export { parseGatewayConfig, type GatewayConfig } from "./config.js";
