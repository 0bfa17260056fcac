// Issuer fixtures: a config in a temporary directory, a controllable clock, a pool of RSA keys (the
// vector keys, so tests need not wait for RSA key generation) and an app built with inject().
import { createPrivateKey, type KeyObject } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { buildIssuer } from "../../issuer/app.js";
import { parseIssuerConfig, type IssuerConfig } from "../../issuer/config.js";
import { IssuerKeyStore } from "../../issuer/key-store.js";
import { createLogger } from "../../server/logging.js";
import { createMetrics } from "../../server/metrics.js";
import { TYPE2_VECTORS } from "./pp-vectors.js";

export const CREDENTIAL = "client-credential-1";

/** Distinct RSA-2048 keys from the RFC 9578 vectors. */
export const VECTOR_RSA_KEYS: KeyObject[] = [...new Set(TYPE2_VECTORS.map((v) => Buffer.from(v.skS).toString("utf8")))].map((pem) => createPrivateKey(pem));

/** A generator that hands out the vector keys in turn (stand-in for RSA key generation). */
export function rsaKeyPool(): () => Promise<KeyObject> {
  let i = 0;
  return async () => VECTOR_RSA_KEYS[i++ % VECTOR_RSA_KEYS.length]!;
}

export class TestClock {
  ms: number;
  constructor(startSec = 1_800_000_000) {
    this.ms = startSec * 1000;
  }
  readonly now = (): number => this.ms;
  get sec(): number {
    return Math.floor(this.ms / 1000);
  }
  advance(sec: number): void {
    this.ms += sec * 1000;
  }
}

export function tempDir(): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), "veil-issuer-"));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

import { captureLines } from "./log-lines.js";

export { captureLines };

export function issuerConfig(dir: string, raw: Record<string, unknown> = {}): IssuerConfig {
  return parseIssuerConfig({
    listen: { host: "127.0.0.1", port: 0 },
    name: "issuer.example",
    keys: join(dir, "issuer-keys.json"),
    tokenTypes: [2],
    keyLifetimeSec: 604_800,
    attester: { credentials: [CREDENTIAL, "client-credential-2"], tokensPerWindow: 100, windowSec: 86_400 },
    ...raw,
  });
}

export interface IssuerFixture {
  app: FastifyInstance;
  config: IssuerConfig;
  keys: IssuerKeyStore;
  clock: TestClock;
  lines: string[];
}

/** An issuer app (not listening) with keys in `dir`, on a test clock. */
export async function makeIssuer(dir: string, raw: Record<string, unknown> = {}, clock = new TestClock()): Promise<IssuerFixture> {
  const config = issuerConfig(dir, raw);
  const keys = await IssuerKeyStore.open({
    file: config.keys,
    tokenTypes: config.tokenTypes,
    keyLifetimeSec: config.keyLifetimeSec,
    now: clock.now,
    generateRsaKey: rsaKeyPool(),
  });
  const { stream, lines } = captureLines();
  const app = buildIssuer(config, { keys, log: createLogger("issuer", { destination: stream }), metrics: createMetrics("issuer", { defaultMetrics: false }), now: clock.now });
  await app.ready();
  return { app, config, keys, clock, lines };
}

/**
 * What a running issuer's /metrics says it served: POSTs to /token-request (any outcome) and tokens
 * issued. Lets a test see whether a client fetched its tokens in batches (one request, many tokens).
 */
export async function issuerCounts(issuerUrl: string): Promise<{ tokenRequests: number; tokensIssued: number }> {
  const text = await (await fetch(`${issuerUrl}/metrics`)).text();
  const sum = (name: string, labelFilter: string): number =>
    text
      .split("\n")
      .filter((l) => l.startsWith(`${name}{`) && l.includes(labelFilter))
      .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
  return { tokenRequests: sum("veil_http_requests_total", 'route="/token-request"'), tokensIssued: sum("veil_issuer_tokens_issued_total", "") };
}
