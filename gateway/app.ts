// buildGateway(config, deps): the Oblivious Gateway Resource as a Fastify app (testable with
// inject()). Routes: GET /ohttp-keys, POST /gateway, plus /healthz, /readyz and /metrics from
// server/lifecycle.ts. Keys, the token gate and the forwarder are injected.

import type { FastifyInstance } from "fastify";
import { Counter, Gauge, type Registry } from "prom-client";
import { ProtocolError } from "../core/errors.js";
import { createServerApp, type ReadinessChecks } from "../server/lifecycle.js";
import type { Logger } from "../server/logging.js";
import { ChildCache, createMetrics, type HttpMetrics } from "../server/metrics.js";
import { installCors } from "../server/cors.js";
import type { GatewayConfig } from "./config.js";
import { OPEN_GATE, type Gate } from "./gate-contract.js";
import { kemName } from "./key-file.js";
import type { KeyStore } from "./key-store.js";
import { compileTargets } from "./policy.js";
import type { NonceStore } from "../core/privacypass/index.js";
import { openNonceStore } from "./nonce-stores/index.js";
import { ReplayGuard } from "./replay.js";
import { serveEncapsulatedRequest, type Forwarder, type RequestPathDeps } from "./request-path.js";
import { WELL_KNOWN_GATEWAY, registerGatewayRoute, type GatewayRouteDeps } from "./routes/gateway.js";
import { installLeanGatewayPath } from "./routes/lean-gateway.js";
import { registerOhttpKeysRoute } from "./routes/ohttp-keys.js";
import { pooledRandomBytes } from "./random-pool.js";
import { Targets } from "./target.js";

export interface GatewayDeps {
  keys: KeyStore;
  log: Logger;
  metrics?: HttpMetrics;
  /** The token gate; required when `tokens.required` is true (gateway/gate.ts). */
  gate?: Gate;
  /** Response nonces (default: a pooled node:crypto CSPRNG buffer, gateway/random-pool.ts). */
  randomBytes?: (n: number) => Uint8Array;
  /** Where `replay` remembers encapsulations (default: a store opened from `tokens.store`). */
  replayStore?: NonceStore;
  /** Forwarding to the targets (default: undici pools from `config.upstream`). */
  forwarder?: Forwarder & { close?(): Promise<void> };
}

/** /readyz checks of a gateway: an active key, and the token gate's store (when it has one). */
export function gatewayReadiness(keys: KeyStore, gate: Gate): ReadinessChecks {
  return {
    keys: () => {
      if (keys.published().body.length === 0) throw new Error("no active key");
    },
    ...(gate.ready === undefined ? {} : { tokens: () => gate.ready!() }),
  };
}

export interface GatewayResourceDeps extends Omit<GatewayDeps, "metrics"> {
  /** Where the gateway's own metrics (decapsulations, upstream results, keys) are registered. */
  registry: Registry;
}

/**
 * The Oblivious Gateway Resource on `app`: GET /ohttp-keys and POST /gateway (with CORS for the
 * keys), the gateway's metrics, and the forwarder and token gate closed with `app`. Used by
 * buildGateway (the standalone server) and by the Fastify plugin (gateway/plugin.ts). Returns what
 * the lean path needs to serve POST /gateway itself. `app` must parse no other bodies than the
 * ones registered here (call removeAllContentTypeParsers first).
 */
export function registerGatewayResource(app: FastifyInstance, config: GatewayConfig, deps: GatewayResourceDeps): GatewayRouteDeps {
  if (config.tokens.required && deps.gate === undefined) {
    throw new ProtocolError("CFG_ERR_INVALID", "tokens.required is true but no token gate was given");
  }
  const gate = deps.gate ?? OPEN_GATE;
  const registry = deps.registry;
  const table = compileTargets(config.targets);
  const forwarder = deps.forwarder ?? new Targets(table, config.upstream);

  const decapsulations = new Counter({
    name: "veil_gateway_decapsulations_total",
    help: "Requests decapsulated, by key id (shows which keys clients still use)",
    labelNames: ["key_id"],
    registers: [registry],
  });
  const upstream = new Counter({
    name: "veil_gateway_upstream_total",
    help: "Forwarded requests by target and result (status class or error code)",
    labelNames: ["target", "result"],
    registers: [registry],
  });
  const keys = deps.keys;
  new Gauge({
    name: "veil_gateway_keys",
    help: "Keys in the key file by id, KEM and state (1 = usable for decryption)",
    labelNames: ["key_id", "kem", "state"],
    registers: [registry],
    collect() {
      this.reset();
      for (const k of keys.states()) {
        this.set({ key_id: String(k.keyId), kem: kemName(k.kemId) ?? String(k.kemId), state: k.state }, k.usable ? 1 : 0);
      }
    },
  });

  // Opt-in CORS for browser clients fetching the keys directly (RFC 9458 §6.1; server/cors.ts).
  installCors(app, config.cors, [{ url: "/ohttp-keys", methods: ["GET"], headers: ["content-type"] }]);
  registerOhttpKeysRoute(app, keys, config.keysMaxAgeSec);
  registerOhttpKeysRoute(app, keys, config.keysMaxAgeSec, WELL_KNOWN_GATEWAY);
  const replay =
    config.replay.windowSec === 0
      ? undefined
      : new ReplayGuard({ windowSec: config.replay.windowSec, store: deps.replayStore ?? openNonceStore(config.tokens.store) });
  const randomBytes = deps.randomBytes ?? pooledRandomBytes();
  // Metric children by label value, made once (server/metrics.ts's ChildCache).
  const byKeyId = new ChildCache((keyId: number) => decapsulations.labels({ key_id: String(keyId) }));
  const byTarget = new ChildCache((target: string) => new ChildCache((result: string) => upstream.labels({ target, result })));
  const onDecapsulated = (keyId: number): void => {
    byKeyId.get(keyId).inc();
  };
  const path: RequestPathDeps = {
      policy: config.policy,
      table,
      forwarder,
      gate,
      bhttpLimits: {
        maxFields: config.inner.maxFields,
        maxFieldBytes: config.inner.maxFieldBytes,
        maxMessageBytes: config.limits.maxRequestBytes,
      },
      maxReportsPerToken: config.tokens.maxReportsPerToken,
      log: deps.log,
      onUpstream: (target, result) => byTarget.get(target).get(result).inc(),
      padToBytes: config.inner.padToBytes,
      ...(replay === undefined ? {} : { replay }),
  };
  const routeDeps: GatewayRouteDeps = {
    keys,
    maxRequestBytes: config.limits.maxRequestBytes,
    randomBytes,
    onDecapsulated,
    path,
    chunked: { keys, path, chunked: config.chunked, maxWholeBytes: config.limits.maxRequestBytes, randomBytes, onDecapsulated },
  };
  registerGatewayRoute(app, routeDeps);

  app.addHook("onClose", async () => {
    if (deps.forwarder === undefined) await (forwarder as Targets).close();
    await replay?.close();
    await gate.close?.();
  });
  return routeDeps;
}

export function buildGateway(config: GatewayConfig, deps: GatewayDeps): FastifyInstance {
  const metrics = deps.metrics ?? createMetrics("gateway");
  const app = createServerApp({
    listen: config.listen,
    limits: config.limits,
    log: deps.log,
    metrics,
    readiness: gatewayReadiness(deps.keys, deps.gate ?? OPEN_GATE),
  });
  // Only message/ohttp-req bodies are parsed: anything else is a 415, never parsed as JSON or text.
  app.removeAllContentTypeParsers();
  const routeDeps = registerGatewayResource(app, config, { ...deps, registry: metrics.registry });
  // Canonical POST /gateway requests skip Fastify (routes/lean-gateway.ts explains why).
  installLeanGatewayPath(app, {
    maxRequestBytes: config.limits.maxRequestBytes,
    maxConcurrentRequests: config.limits.maxConcurrentRequests,
    serve: (body) => serveEncapsulatedRequest(body, routeDeps),
    log: deps.log,
    metrics,
  });
  return app;
}
