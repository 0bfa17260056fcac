// Secrets never print (secrets are wrapped so that JSON.stringify and util.inspect print [redacted]): the whole stack in process
// (issuer with both token types, gateway with an epoch secret and the issuer's type 1 keys, relay
// with an operator auth header, the client library), every server logging at trace level, one
// upload with tokens through it. Then no log line, and no util.inspect / JSON / String rendering
// of the objects that hold them, contains a gateway or issuer private key, the epoch secret, the
// attester credential, the relay's auth header value, a token or the report: in hex, base64,
// base64url or as the decimal byte list util.inspect prints for a Uint8Array.
// Key files: a gateway key file that group or others can read is refused at start and on reload.

import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createObliviousFetch, createTokenSource, type ObliviousFetch, type TokenSource } from "../../client/index.js";
import { fromBase64Url, toBase64Url, toHex } from "../../core/bytes.js";
import { formatAuthorization } from "../../core/privacypass/index.js";
import { createDapTask, startDapAggregator, type DapAggregator, type DapTask } from "../../demo/dap-aggregator.js";
import { parseGatewayConfig, type GatewayConfig } from "../../gateway/config.js";
import { readKeyFile, writeKeyFile } from "../../gateway/key-file.js";
import { KeyStore } from "../../gateway/key-store.js";
import { startGateway, type StartedGateway } from "../../gateway/main.js";
import { createTokenGate } from "../../gateway/tokens.js";
import type { TokenGate } from "../../gateway/gate.js";
import { parseIssuerConfig } from "../../issuer/config.js";
import { startIssuer, type StartedIssuer } from "../../issuer/main.js";
import { parseRelayConfig } from "../../relay/config.js";
import { startRelay, type StartedRelay } from "../../relay/main.js";
import { createLogger } from "../../server/logging.js";
import { captureLines, makeKeyData } from "../helpers/gateway-fixture.js";
import { rsaKeyPool } from "../helpers/issuer.js";
import { makeDapReports, sealedUpload, uploadPath } from "../helpers/token-gateway.js";
import { fetchKeyConfig } from "../helpers/oblivious-fetch.js";

const CREDENTIAL = "attester-credential-S3cret-4d1f";
const RELAY_AUTH = "relay-auth-S3cret-90ab";

const dir = mkdtempSync(join(tmpdir(), "veil-secrets-"));
const logs = captureLines();
const log = (name: string) => createLogger(name, { destination: logs.stream, level: "trace" });
let task: DapTask;
let leader: DapAggregator;
let helper: DapAggregator;
let issuer: StartedIssuer;
let gateway: StartedGateway;
let gatewayConfig: GatewayConfig;
let gate: TokenGate;
let relay: StartedRelay;
let tokens: TokenSource;
let ofetch: ObliviousFetch;
let report: Uint8Array;
let secondReport: Uint8Array;
let spentToken: Uint8Array;
/** Every secret, as raw bytes or text. */
const secrets: { what: string; bytes?: Uint8Array; text?: string }[] = [];

beforeAll(async () => {
  task = await createDapTask();
  leader = await startDapAggregator({ role: "leader", tasks: [task] });
  helper = await startDapAggregator({ role: "helper", tasks: [task] });
  [report, secondReport] = (await makeDapReports(task, leader.url, helper.url, 2)) as [Uint8Array, Uint8Array];

  const issuerKeys = join(dir, "issuer-keys.json");
  issuer = await startIssuer(
    parseIssuerConfig({
      listen: { host: "127.0.0.1", port: 0 },
      name: "issuer.example",
      keys: issuerKeys,
      tokenTypes: [2, 1],
      keyLifetimeSec: 3600,
      attester: { credentials: [CREDENTIAL], tokensPerWindow: 100, windowSec: 60 },
    }),
    { log: log("issuer"), handleSignals: false, generateRsaKey: rsaKeyPool() },
  );
  for (const k of (JSON.parse(readFileSync(issuerKeys, "utf8")) as { keys: { tokenType: number; privateKey: string }[] }).keys) {
    secrets.push({ what: `issuer type ${k.tokenType} private key`, bytes: new Uint8Array(k.tokenType === 2 ? Buffer.from(k.privateKey, "base64") : Buffer.from(k.privateKey, "hex")) });
  }

  const gatewayKeys = join(dir, "gateway-keys.json");
  const made = await makeKeyData([{ keyId: 1 }, { keyId: 2, state: "pending" }]);
  writeKeyFile(gatewayKeys, made.data);
  made.secrets.forEach((s, i) => secrets.push({ what: `gateway private key ${i + 1}`, bytes: s }));
  const epochSecret = new Uint8Array(randomBytes(32));
  secrets.push({ what: "epoch secret", bytes: epochSecret });
  const epochFile = join(dir, "epoch.secret");
  writeFileSync(epochFile, epochSecret, { mode: 0o600 });
  gatewayConfig = parseGatewayConfig({
    listen: { host: "127.0.0.1", port: 0 },
    keys: gatewayKeys,
    targets: { "https://leader.example": leader.url },
    tokens: {
      required: true,
      issuers: [{ name: "issuer.example", directory: `${issuer.url}/.well-known/private-token-issuer-directory`, keyLifetimeSec: 3600, keyFile: issuerKeys }],
      store: "memory",
      redemptionContext: "epoch",
      epochSecretFile: epochFile,
    },
    logLevel: "trace",
  });
  gate = await createTokenGate(gatewayConfig.tokens, { log: log("gateway") });
  gateway = await startGateway(gatewayConfig, { log: log("gateway"), handleSignals: false, gate });

  relay = await startRelay(
    parseRelayConfig({
      listen: { host: "127.0.0.1", port: 0 },
      routes: [{ path: "/leader-gateway", gateway: `${gateway.url}/gateway`, keys: `${gateway.url}/ohttp-keys`, authHeader: { name: "x-relay-auth", value: RELAY_AUTH } }],
      logLevel: "trace",
    }),
    { log: log("relay"), handleSignals: false },
  );
  secrets.push({ what: "attester credential", text: CREDENTIAL }, { what: "relay auth header", text: RELAY_AUTH });

  tokens = createTokenSource({ issuer: issuer.url, credential: CREDENTIAL, batch: 3, refillJitterMs: 0 });
  ofetch = createObliviousFetch({ relay: `${relay.url}/leader-gateway`, keys: `${gateway.url}/ohttp-keys`, tokens });
  const url = new URL(`https://leader.example${uploadPath(task)}`);
  await ofetch.prepare(url);
  const res = await ofetch(url, { method: "PUT", headers: { "content-type": "application/dap-report" }, body: new Uint8Array(report) });
  expect(res.status).toBe(201);
  // A token we hold ourselves (the library keeps its own), spent on a second report.
  spentToken = (await tokens.take(url))!;
  const up = await sealedUpload(gateway.url, await fetchKeyConfig(gateway.url), { path: uploadPath(task), body: secondReport, authorization: formatAuthorization(spentToken) });
  expect(up.status).toBe(201);
  secrets.push({ what: "token", bytes: spentToken }, { what: "report", bytes: report }, { what: "second report", bytes: secondReport });
}, 60_000);

afterAll(async () => {
  tokens?.close();
  await relay?.stop();
  await gateway?.stop();
  await issuer?.stop();
  await leader?.close();
  await helper?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The ways a secret can show up in text. */
function renderings(s: { bytes?: Uint8Array; text?: string }): string[] {
  if (s.text !== undefined) return [s.text];
  const b = s.bytes!;
  // A 12-byte window from the middle is enough to be sure, short enough to survive line breaks.
  const mid = b.subarray(Math.max(0, Math.floor(b.length / 2) - 6), Math.floor(b.length / 2) + 6);
  return [
    toHex(mid),
    toHex(mid).toUpperCase(),
    toBase64Url(b, false).slice(8, 24),
    Buffer.from(b).toString("base64").slice(8, 24),
    [...mid].join(","),
  ];
}

function leaks(text: string): string[] {
  const compact = text.replace(/\s+/g, "");
  const found: string[] = [];
  for (const s of secrets) for (const r of renderings(s)) if (r.length >= 8 && (text.includes(r) || compact.includes(r))) found.push(s.what);
  return [...new Set(found)];
}

describe("secrets never print", () => {
  it("the upload went through, so every path was exercised", () => {
    expect(secrets.length).toBeGreaterThanOrEqual(9);
    expect(logs.lines.length).toBeGreaterThan(10);
    expect(fromBase64Url(toBase64Url(spentToken))).toEqual(spentToken);
  });

  it("in no log line of the issuer, the gateway or the relay (trace level)", () => {
    const bad = logs.lines.filter((l) => leaks(l).length > 0).map((l) => `${leaks(l).join(", ")}: ${l.slice(0, 200)}`);
    expect(bad).toEqual([]);
  });

  it.each([
    ["the running gateway and its key store", () => gateway],
    ["the gateway's configuration", () => gatewayConfig],
    ["the running issuer and its key store", () => issuer],
    ["the running relay", () => relay],
    ["the client's token source and oblivious fetch", () => [tokens, ofetch]],
    ["key records read from the gateway's key file", () => readKeyFile(gatewayConfig.keys)],
  ] as [string, () => unknown][])("in util.inspect, JSON and String of %s", (_what, get) => {
    const o = get();
    const shown = [inspect(o, { depth: 6, showHidden: true, getters: true, maxArrayLength: 10_000, maxStringLength: 100_000 })];
    try {
      shown.push(JSON.stringify(o) ?? "");
    } catch {
      // circular (Fastify instances): inspect covers them
    }
    shown.push(String(o));
    expect(leaks(shown.join("\n"))).toEqual([]);
  });
});

describe("the token gate", () => {
  // The epoch PRF key lives in a private field, out of the gate's public options.
  it("util.inspect of the token gate does not print the epoch secret", () => {
    expect(leaks(inspect(gate, { depth: 6, showHidden: true, getters: true }))).toEqual([]);
  });
});

describe("key files readable by others are refused", () => {
  it("the gateway's key file, at start and on reload (the old keys stay)", async () => {
    const file = join(dir, "loose-keys.json");
    writeKeyFile(file, (await makeKeyData([{ keyId: 7 }])).data);
    const store = await KeyStore.fromFile(file, { retiredGraceSec: 86_400 });
    for (const mode of [0o640, 0o604, 0o644]) {
      chmodSync(file, mode);
      const reload = await store.reload().then(() => undefined, (e: unknown) => e as Error & { code?: string });
      expect(reload?.code).toBe("CFG_ERR_KEY_FILE");
      expect(reload?.message).toContain("chmod 600");
      await expect(KeyStore.fromFile(file, { retiredGraceSec: 86_400 })).rejects.toMatchObject({ code: "CFG_ERR_KEY_FILE" });
      expect(store.published().body.length).toBeGreaterThan(0);
    }
    chmodSync(file, 0o600);
    await store.reload();
  });
});
