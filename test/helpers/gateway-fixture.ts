// Builds gateways for tests: in-memory keys, a validated config, captured log lines.

import type { FastifyInstance } from "fastify";
import { Secret } from "../../core/secret.js";
import { KEM, generateGatewayKey, type KeyConfig } from "../../core/ohttp/index.js";
import { createLogger } from "../../server/logging.js";
import { createMetrics } from "../../server/metrics.js";
import { buildGateway, type GatewayDeps } from "../../gateway/app.js";
import { parseGatewayConfig, type GatewayConfig } from "../../gateway/config.js";
import { KEY_FILE_VERSION, type KeyFileData, type KeyRecord, type KeyState } from "../../gateway/key-file.js";
import { KeyStore } from "../../gateway/key-store.js";

export interface KeySpec {
  keyId: number;
  kemId?: number;
  state?: KeyState;
  retiredAt?: string;
}

/** Key file contents with fresh keys, plus their public configs. */
export async function makeKeyData(specs: KeySpec[]): Promise<{ data: KeyFileData; configs: Map<number, KeyConfig>; secrets: Uint8Array[] }> {
  const keys: KeyRecord[] = [];
  const configs = new Map<number, KeyConfig>();
  const secrets: Uint8Array[] = [];
  for (const s of specs) {
    const { key, privateKey } = await generateGatewayKey(s.keyId, s.kemId ?? KEM.X25519);
    configs.set(s.keyId, key.config);
    secrets.push(privateKey);
    const r: KeyRecord = {
      keyId: s.keyId,
      kemId: key.config.kemId,
      symmetric: key.config.symmetric.map((x) => ({ ...x })),
      state: s.state ?? "active",
      createdAt: new Date(0).toISOString(),
      publicKey: key.config.publicKey,
      privateKey: new Secret(privateKey),
    };
    if (r.state === "retired") r.retiredAt = s.retiredAt ?? new Date().toISOString();
    keys.push(r);
  }
  return { data: { version: KEY_FILE_VERSION, keys }, configs, secrets };
}

import { captureLines } from "./log-lines.js";

export { captureLines };

export interface Fixture {
  app: FastifyInstance;
  config: GatewayConfig;
  keys: KeyStore;
  keyConfig: KeyConfig;
  configs: Map<number, KeyConfig>;
  secrets: Uint8Array[];
  lines: string[];
}

/** A gateway app (not listening) with one active X25519 key unless `keySpecs` says otherwise. */
export async function makeGateway(
  raw: Record<string, unknown>,
  opts: { keySpecs?: KeySpec[]; deps?: Partial<GatewayDeps>; now?: () => number } = {},
): Promise<Fixture> {
  const config = parseGatewayConfig({ tokens: { required: false }, ...raw });
  const { data, configs, secrets } = await makeKeyData(opts.keySpecs ?? [{ keyId: 1 }]);
  const keys = await KeyStore.fromData(data, { retiredGraceSec: config.retiredKeyGraceSec, ...(opts.now === undefined ? {} : { now: opts.now }) });
  const { stream, lines } = captureLines();
  const log = createLogger("gateway", { destination: stream });
  const app = buildGateway(config, { keys, log, metrics: createMetrics("gateway", { defaultMetrics: false }), ...opts.deps });
  await app.ready();
  const first = [...configs.values()][0]!;
  return { app, config, keys, keyConfig: first, configs, secrets, lines };
}
