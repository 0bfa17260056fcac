// buildIssuer(config, deps): the Privacy Pass issuer (RFC 9578) with its built-in attester, as a
// Fastify app (testable with inject()). Routes: GET /.well-known/private-token-issuer-directory,
// POST /token-request, plus /healthz, /readyz and /metrics from server/lifecycle.ts.
// Keys (and the clock) are injected: see issuer/key-store.ts.

import { ARC_TOKEN_TYPE } from "../core/privacypass/token-type.js";
import type { FastifyInstance } from "fastify";
import { Counter, Gauge } from "prom-client";
import { ISSUER_DIRECTORY_PATH } from "../core/privacypass/issuance.js";
import { acceptBinaryBody, createServerApp } from "../server/lifecycle.js";
import type { Logger } from "../server/logging.js";
import { createMetrics, type HttpMetrics } from "../server/metrics.js";
import { installCors } from "../server/cors.js";
import { Attester, type QuotaAttester } from "./attester.js";
import type { IssuerConfig } from "./config.js";
import type { IssuerKeyStore } from "./key-store.js";
import { registerDirectoryRoute } from "./routes/directory.js";
import { TOKEN_REQUEST_MEDIA_TYPES, TOKEN_REQUEST_PATH, registerTokenRequestRoute } from "./routes/token-request.js";

export interface IssuerDeps {
  keys: IssuerKeyStore;
  log: Logger;
  metrics?: HttpMetrics;
  /** Clock in milliseconds for the attester's quota windows (the key store has its own). */
  now?: () => number;
  /** The attester (default: one in this process, from config.attester; workers share the primary's). */
  attester?: QuotaAttester;
}

const TOKEN_TYPE_LABEL: Readonly<Record<number, string>> = { 1: "voprf_p384", 2: "blind_rsa_2048", 5: "voprf_ristretto255", [ARC_TOKEN_TYPE]: "arc_p256" };

export function buildIssuer(config: IssuerConfig, deps: IssuerDeps): FastifyInstance {
  const metrics = deps.metrics ?? createMetrics("issuer");
  const { keys } = deps;
  const ownAttester = deps.attester === undefined ? new Attester(config.attester, deps.now === undefined ? {} : { now: deps.now }) : undefined;
  const attester = deps.attester ?? ownAttester!;

  const issued = new Counter({
    name: "veil_issuer_tokens_issued_total",
    help: "Tokens issued, by token type",
    labelNames: ["token_type"],
    registers: [metrics.registry],
  });
  const refusals = new Counter({
    name: "veil_issuer_refusals_total",
    help: "Token requests refused, by reason (the error code)",
    labelNames: ["reason"],
    registers: [metrics.registry],
  });

  new Gauge({
    name: "veil_issuer_keys",
    help: "Token keys in the directory by token type, truncated key id and state (1 = in the directory)",
    labelNames: ["token_type", "key_id", "state"],
    registers: [metrics.registry],
    collect() {
      this.reset();
      const now = keys.nowSec();
      for (const k of keys.published()) {
        const state = k.notBefore > now ? "next" : "valid";
        this.set({ token_type: TOKEN_TYPE_LABEL[k.tokenType] ?? String(k.tokenType), key_id: String(k.tokenKeyId[31]), state }, 1);
      }
    },
  });

  const app = createServerApp({
    listen: config.listen,
    limits: config.limits,
    log: deps.log,
    metrics,
    readiness: {
      keys: () => {
        if (keys.published().length === 0) throw new Error("no token key");
      },
      ...(attester.ready === undefined ? {} : { attester: () => attester.ready!() }),
    },
  });
  // Only token requests are parsed (as raw bytes): any other body is a 415, never parsed.
  app.removeAllContentTypeParsers();
  for (const type of TOKEN_REQUEST_MEDIA_TYPES) acceptBinaryBody(app, type);
  app.addHook("onResponse", (request, reply, done) => {
    // The problem handler records the error code as the outcome: that is the reason label.
    if (request.routeOptions.url === TOKEN_REQUEST_PATH && reply.statusCode >= 400) {
      refusals.inc({ reason: request.veilOutcome !== "" ? request.veilOutcome : `status_${reply.statusCode}` });
    }
    done();
  });

  // Opt-in CORS for browser clients (server/cors.ts).
  installCors(app, config.cors, [
    { url: ISSUER_DIRECTORY_PATH, methods: ["GET"], headers: ["content-type"] },
    { url: TOKEN_REQUEST_PATH, methods: ["POST"], headers: ["content-type", "authorization"], expose: ["retry-after", "www-authenticate"] },
  ]);
  if (ownAttester !== undefined) app.addHook("onClose", async () => ownAttester.close());
  registerDirectoryRoute(app, { keys, issuerRequestUri: config.issuerRequestUri, maxAgeSec: config.directoryMaxAgeSec });
  registerTokenRequestRoute(app, {
    keys,
    attester,
    maxBatchTokens: config.maxBatchTokens,
    onIssued: (tokenType, count = 1) => issued.inc({ token_type: TOKEN_TYPE_LABEL[tokenType] ?? String(tokenType) }, count),
    // Entries of a generic batch left absent count as refusals of their reason.
    onAbsent: (reason, count) => refusals.inc({ reason }, count),
  });
  return app;
}
