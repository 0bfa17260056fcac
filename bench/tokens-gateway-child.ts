// Child process of bench/tokens-gateway.ts: the Veil gateway with the token gate on (tokens
// required, one trusted issuer whose directory the parent serves, the nonce store given), so its
// CPU time can be measured alone. IPC as bench/gateway-child.ts: {ready, port, keyConfig} once
// listening; {cpu} on request; exits on "stop".

import { destination } from "pino";
import { toHex } from "../core/bytes.js";
import { encodeKeyConfig, generateGatewayKey } from "../core/ohttp/index.js";
import { Secret } from "../core/secret.js";
import { buildGateway } from "../gateway/app.js";
import { parseGatewayConfig } from "../gateway/config.js";
import { KEY_FILE_VERSION } from "../gateway/key-file.js";
import { KeyStore } from "../gateway/key-store.js";
import { createTokenGate } from "../gateway/tokens.js";
import { createLogger } from "../server/logging.js";
import { createMetrics } from "../server/metrics.js";

const [upstream, directory, store] = process.argv.slice(2);
if (upstream === undefined || directory === undefined || store === undefined) {
  console.error("usage: tokens-gateway-child.js UPSTREAM_URL DIRECTORY_URL STORE");
  process.exit(2);
}
const config = parseGatewayConfig({
  listen: { host: "127.0.0.1", port: 0 },
  targets: { "https://leader.example": upstream },
  tokens: { required: true, issuers: [{ name: "issuer.example", directory, keyLifetimeSec: 86_400 }], store },
  logLevel: "info",
});
const { key, privateKey } = await generateGatewayKey(1);
const keys = await KeyStore.fromData(
  {
    version: KEY_FILE_VERSION,
    keys: [
      {
        keyId: 1,
        kemId: key.config.kemId,
        symmetric: [...key.config.symmetric],
        state: "active",
        createdAt: new Date().toISOString(),
        publicKey: key.config.publicKey,
        privateKey: new Secret(privateKey),
      },
    ],
  },
  { retiredGraceSec: config.retiredKeyGraceSec },
);
// As in bench/gateway-child.ts: one JSON line per request into a buffered /dev/null destination.
const log = createLogger("gateway", { destination: destination({ dest: "/dev/null", minLength: 4096, sync: false }) });
const metrics = createMetrics("gateway", { defaultMetrics: false });
const gate = await createTokenGate(config.tokens, { log, registry: metrics.registry });
const app = buildGateway(config, { keys, log, metrics, gate });
await app.listen({ host: "127.0.0.1", port: 0 });
const addr = app.server.address();
process.on("message", (m: string) => {
  if (m === "cpu") process.send?.({ cpu: process.cpuUsage() });
  if (m === "stop") void app.close().then(() => process.exit(0));
});
process.send?.({
  ready: true,
  port: typeof addr === "object" && addr !== null ? addr.port : 0,
  keyConfig: toHex(encodeKeyConfig(key.config)),
});
