// The whole chain over HTTPS once (RFC 9458 §6), with a throwaway CA made by openssl: the client
// library -> relay (veil relay, TLS) -> gateway (veil gateway, TLS requiring a client certificate:
// the relay presents one) -> DAP-09 leader and helper doubles (HTTPS), with tokens from the issuer
// (veil issuer, TLS), whose directory the gateway fetches over HTTPS. Needs a built dist/.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent, fetch as undiciFetch, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createObliviousFetch, createTokenSource, type FetchLike, type TokenSource } from "../../client/index.js";
import { createDapTask as createClientTask, uploadUrl } from "../../client/dap.js";
import { createDapTask, startDapAggregator, type DapAggregator, type DapTask } from "../../demo/dap-aggregator.js";
import { writeKeyFile } from "../../gateway/key-file.js";
import { makeKeyData } from "../helpers/gateway-fixture.js";
import { logLine, startVeil, stopAll, type VeilProcess } from "../helpers/veil-process.js";

const dir = mkdtempSync(join(tmpdir(), "veil-tls-"));
const file = (name: string): string => join(dir, name);
const CREDENTIAL = "tls-demo-credential";

function openssl(...args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
}

function makeCert(name: string, ext: string): void {
  writeFileSync(file(`${name}.ext`), ext);
  openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
  openssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${name}.pem`, "-days", "2", "-extfile", `${name}.ext`);
}

function config(name: string, c: unknown): string {
  writeFileSync(file(name), JSON.stringify(c));
  return file(name);
}

let task: DapTask;
let leader: DapAggregator;
let helper: DapAggregator;
let issuer: VeilProcess;
let gateway: VeilProcess;
let relay: VeilProcess;
let urls: { issuer: string; gateway: string; relay: string };
const agent = (): Agent => new Agent({ connect: { ca: readFileSync(file("ca.pem")) } });

async function started(p: VeilProcess, msg: string): Promise<string> {
  await p.waitFor(`"msg":"${msg}"`);
  return logLine(p.stdout(), msg)!.url as string;
}

beforeAll(async () => {
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=veil-test-ca");
  makeCert("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  makeCert("relay-client", "extendedKeyUsage=clientAuth\n");
  const tls = { cert: file("server.pem"), key: file("server.key") };
  const serverTls = { cert: readFileSync(tls.cert), key: readFileSync(tls.key) };

  task = await createDapTask();
  leader = await startDapAggregator({ role: "leader", tasks: [task], tls: serverTls });
  helper = await startDapAggregator({ role: "helper", tasks: [task], tls: serverTls });
  // The servers trust the test CA for their outgoing HTTPS (the gateway's directory fetch).
  const env = { NODE_EXTRA_CA_CERTS: file("ca.pem") };

  issuer = startVeil(
    ["issuer", "--config", config("issuer.json", { listen: { host: "127.0.0.1", port: 0, tls }, name: "issuer.example", keys: file("issuer-keys.json"), attester: { credentials: [CREDENTIAL] } })],
    env,
  );
  const issuerUrl = await started(issuer, "issuer listening");

  writeKeyFile(file("gateway-keys.json"), (await makeKeyData([{ keyId: 1 }])).data);
  gateway = startVeil(
    [
      "gateway",
      "--config",
      config("gateway.json", {
        // ca: only clients with a certificate from the test CA (the relay) may connect.
        listen: { host: "127.0.0.1", port: 0, tls: { ...tls, ca: file("ca.pem") } },
        keys: file("gateway-keys.json"),
        targets: { "https://leader.example": leader.url, "https://helper.example": helper.url },
        upstream: { ca: file("ca.pem") },
        tokens: { issuers: [{ name: "issuer.example", directory: `${issuerUrl}/.well-known/private-token-issuer-directory` }], store: "memory" },
      }),
    ],
    env,
  );
  const gatewayUrl = await started(gateway, "gateway listening");

  relay = startVeil(
    [
      "relay",
      "--config",
      config("relay.json", {
        listen: { host: "127.0.0.1", port: 0, tls },
        routes: [
          {
            path: "/gw",
            gateway: `${gatewayUrl}/gateway`,
            keys: `${gatewayUrl}/ohttp-keys`,
            ca: file("ca.pem"),
            clientCert: file("relay-client.pem"),
            clientKey: file("relay-client.key"),
          },
        ],
      }),
    ],
    env,
  );
  const relayUrl = await started(relay, "relay listening");
  urls = { issuer: issuerUrl, gateway: gatewayUrl, relay: relayUrl };
}, 120_000);

afterAll(async () => {
  await stopAll();
  await leader?.close();
  await helper?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("the whole chain over HTTPS", () => {
  it("serves every hop over HTTPS", () => {
    for (const u of [urls.issuer, urls.gateway, urls.relay, leader.url, helper.url]) expect(u).toMatch(/^https:\/\/127\.0\.0\.1:\d+/);
  });

  it("refuses a connection to the gateway without a client certificate", async () => {
    const a = agent();
    try {
      await expect(request(`${urls.gateway}/healthz`, { dispatcher: a })).rejects.toThrow();
    } finally {
      await a.close();
    }
  });

  /** Two DAP-09 uploads through relay and gateway with `clientAgent` (the client's HTTPS connections). */
  async function uploadTwo(clientAgent: Agent): Promise<void> {
    // The operator's copy of the gateway's keys (the gateway wants a client certificate: clients pin
    // them, and the library still compares them with the relay's copy).
    const withCert = new Agent({
      connect: { ca: readFileSync(file("ca.pem")), cert: readFileSync(file("relay-client.pem")), key: readFileSync(file("relay-client.key")) },
    });
    let tokens: TokenSource | undefined;
    try {
      const keysRes = await request(`${urls.gateway}/ohttp-keys`, { dispatcher: withCert });
      expect(keysRes.statusCode).toBe(200);
      const keys = new Uint8Array(await keysRes.body.arrayBuffer());

      const fetchTls = ((input: Parameters<typeof undiciFetch>[0], init?: Parameters<typeof undiciFetch>[1]) =>
        undiciFetch(input, { ...init, dispatcher: clientAgent })) as unknown as FetchLike;
      tokens = createTokenSource({ issuer: urls.issuer, credential: CREDENTIAL, batch: 2, budget: 2, refillJitterMs: 0, fetch: fetchTls });
      const f = createObliviousFetch({ relay: `${urls.relay}/gw`, keys, relayKeys: true, tokens, fetch: fetchTls });
      const dap = createClientTask({ vdaf: "count", taskId: task.idBase64Url, leader: "https://leader.example", helper: "https://helper.example", timePrecisionSec: 3600, fetch: f });
      const before = leader.reports.get(task.idBase64Url)?.length ?? 0;
      await f.prepare(uploadUrl("https://leader.example", task.idBase64Url));
      await dap.sendMeasurement(true);
      await dap.sendMeasurement(false);

      const stored = leader.reports.get(task.idBase64Url) ?? [];
      expect(stored.length - before).toBe(2);
      for (const r of stored) expect(r.helperShare).toBeDefined();
      expect(tokens.stats().issued).toBe(2);
      // What reached the aggregator carried no token.
      for (const r of leader.received) expect(r.headers.authorization).toBeUndefined();
    } finally {
      tokens?.close();
      await Promise.all([clientAgent.close(), withCert.close()]);
    }
  }

  /** The relay's count of forwarding streams that came over h2 and were forwarded. */
  async function forwardedOverH2(): Promise<number> {
    const a = agent();
    try {
      const text = await (await request(`${urls.relay}/metrics`, { dispatcher: a })).body.text();
      return Number(/veil_relay_http2_streams_total\{outcome="forwarded",component="relay"\} (\d+)/.exec(text)?.[1] ?? 0);
    } finally {
      await a.close();
    }
  }

  it("uploads DAP reports through relay and gateway (mTLS between them) with tokens from the issuer", async () => {
    const before = await forwardedOverH2();
    await uploadTwo(agent());
    expect(await forwardedOverH2()).toBe(before);
  }, 60_000);

  it("uploads the same way with the client's connections over HTTP/2 (undici allowH2)", async () => {
    const before = await forwardedOverH2();
    await uploadTwo(new Agent({ connect: { ca: readFileSync(file("ca.pem")) }, allowH2: true }));
    // Key configuration, challenge and two uploads through the relay, each an h2 stream.
    expect((await forwardedOverH2()) - before).toBeGreaterThanOrEqual(3);
  }, 60_000);
});
