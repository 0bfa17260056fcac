// Child process of bench/tokens-gateway.ts: the Veil gateway with the token gate on (tokens
// required, one trusted issuer whose directory the parent serves, the nonce store given), so its
// CPU time can be measured alone. IPC as bench/gateway-child.ts: {ready, port, keyConfig} once
// listening; {cpu} on request; exits on "stop".

import { toHex } from "../core/bytes.js";
import { encodeKeyConfig } from "../core/ohttp/index.js";
import { benchLogger, oneKeyStore } from "./stack.js";
import { buildGateway } from "../gateway/app.js";
import { parseGatewayConfig } from "../gateway/config.js";
import { createTokenGate } from "../gateway/tokens.js";
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
const { keys, config: keyConfig } = await oneKeyStore(config.retiredKeyGraceSec);
const log = benchLogger();
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
  keyConfig: toHex(encodeKeyConfig(keyConfig)),
});
