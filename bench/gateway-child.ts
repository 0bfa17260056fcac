// Child process of bench/gateway.ts: runs ONE server (the Veil gateway; the peer: a bare
// fastify + undici pass-through proxy; the peer with the gateway's OHTTP crypto; Veil's plumbing)
// so that its CPU time can be measured alone. Talks to the
// parent over IPC: {ready, port, keyConfig?} once listening; {cpu} on request; exits on "stop".

import Fastify from "fastify";
import { Pool } from "undici";
import { KEM, decapsulateRequest, encapsulateRequest, encodeKeyConfig, generateGatewayKey } from "../core/ohttp/index.js";
import { benchLogger, oneKeyStore } from "./stack.js";
import { buildGateway } from "../gateway/app.js";
import { parseGatewayConfig } from "../gateway/config.js";
import { createMetrics } from "../server/metrics.js";
import { acceptBinaryBody, createServerApp } from "../server/lifecycle.js";
import { compileTargets } from "../gateway/policy.js";
import { Targets } from "../gateway/target.js";
import { toHex } from "../core/bytes.js";

type Msg = "cpu" | "stop";

async function startGateway(upstream: string): Promise<{ port: number; keyConfig: string }> {
  const config = parseGatewayConfig({
    listen: { host: "127.0.0.1", port: 0 },
    targets: { "https://leader.example": upstream },
    tokens: { required: false },
    logLevel: "info",
  });
  const { keys, config: keyConfig } = await oneKeyStore(config.retiredKeyGraceSec);
  const log = benchLogger();
  const app = buildGateway(config, { keys, log, metrics: createMetrics("gateway", { defaultMetrics: false }) });
  await app.listen({ host: "127.0.0.1", port: 0 });
  const addr = app.server.address();
  return { port: typeof addr === "object" && addr !== null ? addr.port : 0, keyConfig: toHex(encodeKeyConfig(keyConfig)) };
}

/** The OHTTP work per request of the "peer + crypto" server: one sealed request to open, one answer to seal. */
interface CryptoWork {
  keys: Parameters<typeof decapsulateRequest>[0];
  encapsulated: Uint8Array;
  answer: Uint8Array;
}

/**
 * The peer: what a careful engineer would write for a plain forwarding proxy, nothing more. With
 * `work` it is the peer plus the OHTTP crypto the gateway does per request, and nothing else: the
 * same handler also decapsulates one sealed request (made once, at start) and encapsulates a
 * response with Veil's core/ohttp (X25519, HKDF-SHA256, AES-128-GCM), as the gateway does. What
 * the gateway would cost if its only addition to the peer were the cryptography. (Without `work`
 * the two checks below are all that is added: no await, no allocation.)
 */
async function startProxy(upstream: string, work?: CryptoWork): Promise<{ port: number }> {
  const pool = new Pool(upstream, { connections: 32, connectTimeout: 5000, headersTimeout: 15000, bodyTimeout: 15000 });
  const app = Fastify({ logger: false });
  app.addContentTypeParser("application/dap-report", { parseAs: "buffer" }, (_req, body, done) => done(null, body));
  app.put("/tasks/:id/reports", async (request, reply) => {
    const d = work === undefined ? undefined : await decapsulateRequest(work.keys, work.encapsulated);
    const res = await pool.request({
      method: "PUT",
      path: request.url,
      headers: { "content-type": "application/dap-report" },
      body: request.body as Buffer,
    });
    const body = Buffer.from(await res.body.arrayBuffer());
    if (work !== undefined && d !== undefined) await d.response.encapsulateResponse(work.answer);
    return reply.code(res.statusCode).send(body);
  });
  await app.listen({ host: "127.0.0.1", port: 0 });
  const addr = app.server.address();
  return { port: typeof addr === "object" && addr !== null ? addr.port : 0 };
}

async function startProxyWithCrypto(upstream: string): Promise<{ port: number }> {
  const { key } = await generateGatewayKey(1, KEM.X25519);
  const { encapsulated } = await encapsulateRequest(key.config, crypto.getRandomValues(new Uint8Array(300)));
  return startProxy(upstream, { keys: new Map([[1, key]]), encapsulated, answer: crypto.getRandomValues(new Uint8Array(40)) });
}

/**
 * The gateway's plumbing without Oblivious HTTP: Veil's server app (limits, hooks, one log line and
 * metrics per request) and gateway/target.ts forwarding the plain upload. The difference to the
 * gateway is what OHTTP + Binary HTTP + policy cost; the difference to the peer is the plumbing.
 */
async function startPlumbing(upstream: string): Promise<{ port: number }> {
  const config = parseGatewayConfig({ listen: { host: "127.0.0.1", port: 0 }, targets: { "https://leader.example": upstream }, tokens: { required: false } });
  const log = benchLogger();
  const app = createServerApp({ listen: config.listen, limits: config.limits, log, metrics: createMetrics("gateway", { defaultMetrics: false }) });
  app.removeAllContentTypeParsers();
  acceptBinaryBody(app, "application/dap-report");
  const targets = new Targets(compileTargets(config.targets), config.upstream);
  const origin = new URL(upstream).origin;
  app.put("/tasks/:id/reports", async (request, reply) => {
    const body = request.body as Buffer;
    const out = await targets.forward({ origin, method: "PUT", path: request.url, headers: { "content-type": "application/dap-report" }, body });
    if (!out.ok) throw out.error;
    request.veilOutcome = "forwarded";
    return reply.code(out.response.status).send(Buffer.from(out.response.body));
  });
  await app.listen({ host: "127.0.0.1", port: 0 });
  const addr = app.server.address();
  return { port: typeof addr === "object" && addr !== null ? addr.port : 0 };
}

const MODES = { gateway: startGateway, proxy: startProxy, "proxy-crypto": startProxyWithCrypto, plumbing: startPlumbing };
const [mode, upstream] = process.argv.slice(2);
if (upstream === undefined || mode === undefined || !Object.hasOwn(MODES, mode)) {
  console.error(`usage: gateway-child.js ${Object.keys(MODES).join("|")} UPSTREAM_URL`);
  process.exit(2);
}
const started = await MODES[mode as keyof typeof MODES](upstream);
process.on("message", (m: Msg) => {
  if (m === "cpu") process.send?.({ cpu: process.cpuUsage() });
  if (m === "stop") process.exit(0);
});
process.send?.({ ready: true, ...started });
