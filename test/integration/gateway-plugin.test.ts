// The gateway as a Fastify plugin (`app.register(veilGateway, { config })`) inside a host app that
// has routes of its own: sealed uploads of real DAP-09 reports with tokens, through inject() and over
// real HTTP; the host's parsers, 404s and error handling untouched; a bad configuration refused at
// registration; the token store closed with the host app.

import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Fastify, { type FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeKeyConfigs, type KeyConfig } from "../../core/ohttp/index.js";
import { formatAuthorization, type TokenChallenge } from "../../core/privacypass/index.js";
import { createDapTask, startDapAggregator, type DapAggregator, type DapTask } from "../../demo/dap-aggregator.js";
import { writeKeyFile } from "../../gateway/key-file.js";
import type { Gate, GateTicket } from "../../gateway/gate-contract.js";
import { veilGateway, type VeilGatewayOptions } from "../../gateway/plugin.js";
import { makeKeyData } from "../helpers/gateway-fixture.js";
import { sealRequest } from "../helpers/oblivious-fetch.js";
import { makeDapReports, problem, sealedUpload, startDirectoryServer, uploadPath, type DirectoryServer } from "../helpers/token-gateway.js";
import { makeBlindRsaIssuerKey, makeToken } from "../helpers/tokens.js";
import { until } from "../helpers/wait.js";

const ISSUER = "issuer.example";
const key = makeBlindRsaIssuerKey({ reuse: 0 });
const CHALLENGE: TokenChallenge = { tokenType: 2, issuerName: ISSUER, redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] };
const newToken = (): string => formatAuthorization(makeToken({ key, challenge: CHALLENGE }));

const dir = mkdtempSync(join(tmpdir(), "veil-plugin-"));
let task: DapTask;
let leader: DapAggregator;
let helper: DapAggregator;
let directory: DirectoryServer;
let reports: Uint8Array[];
let keyFile: string;
let keyConfig: KeyConfig;

beforeAll(async () => {
  task = await createDapTask();
  leader = await startDapAggregator({ role: "leader", tasks: [task] });
  helper = await startDapAggregator({ role: "helper", tasks: [task] });
  directory = await startDirectoryServer([{ key, notBeforeSec: Math.floor(Date.now() / 1000) - 60 }]);
  reports = await makeDapReports(task, leader.url, helper.url, 8);
  keyFile = join(dir, "keys.json");
  const keys = await makeKeyData([{ keyId: 1 }]);
  writeKeyFile(keyFile, keys.data);
  keyConfig = keys.configs.get(1)!;
});

afterAll(async () => {
  await leader?.close();
  await helper?.close();
  await directory?.close();
  rmSync(dir, { recursive: true, force: true });
});

function gatewayOptions(store: string, over: Partial<VeilGatewayOptions> = {}): VeilGatewayOptions {
  return {
    config: {
      keys: keyFile,
      targets: { "https://leader.example": leader.url },
      tokens: { required: true, issuers: [{ name: ISSUER, directory: directory.url, keyLifetimeSec: 3600 }], store, greaseProbability: 0 },
    },
    ...over,
  };
}

/** A host app with routes of its own (a JSON route, Fastify's default 404), then the plugin. */
async function hostApp(options: VeilGatewayOptions): Promise<FastifyInstance> {
  const app = Fastify();
  app.post("/echo", async (request) => ({ echoed: request.body }));
  await app.register(veilGateway, options);
  await app.ready();
  return app;
}

function accepted(): number {
  return leader.reports.get(task.idBase64Url)?.length ?? 0;
}

describe("veilGateway mounted into a host Fastify app (inject)", () => {
  let app: FastifyInstance;
  const db = join(dir, "inject.db");
  beforeAll(async () => {
    app = await hostApp(gatewayOptions(`sqlite:${db}`));
  });
  afterAll(async () => {
    await app?.close();
  });

  const upload = async (body: Uint8Array, authorization?: string) => {
    const sealed = await sealRequest(keyConfig, {
      method: "PUT",
      path: uploadPath(task),
      headers: [["content-type", "application/dap-report"], ...(authorization === undefined ? [] : [["authorization", authorization] as [string, string]])],
      body,
    });
    const res = await app.inject({ method: "POST", url: "/gateway", headers: { "content-type": "message/ohttp-req" }, payload: Buffer.from(sealed.body) });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toBe("message/ohttp-res");
    return sealed.open(new Uint8Array(res.rawPayload));
  };

  it("serves the key configurations at /ohttp-keys", async () => {
    const res = await app.inject({ method: "GET", url: "/ohttp-keys" });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toBe("application/ohttp-keys");
    expect(decodeKeyConfigs(new Uint8Array(res.rawPayload))[0]!.keyId).toBe(1);
  });

  it("forwards a report with a good token to the leader, once; another report with the same token is refused", async () => {
    const before = accepted();
    const token = newToken();
    expect((await upload(reports[0]!, token)).status).toBe(201);
    expect(accepted()).toBe(before + 1);
    const replay = await upload(reports[1]!, token);
    expect(replay.status).toBe(401);
    expect(problem(replay).type).toBe("urn:veil:error:PP_ERR_TOKEN_REPLAYED");
    expect(accepted()).toBe(before + 1);
  });

  it("answers a tokenless upload with a sealed 401 carrying the challenge", async () => {
    const r = await upload(reports[2]!);
    expect(r.status).toBe(401);
    expect(r.headers.find(([n]) => n === "www-authenticate")?.[1]).toMatch(/^PrivateToken challenge=/);
    expect(problem(r).type).toBe("urn:veil:error:PP_ERR_TOKEN_MISSING");
  });

  it("refuses other media types on /gateway with a problem document, while the host's JSON route still parses JSON", async () => {
    const refused = await app.inject({ method: "POST", url: "/gateway", payload: { a: 1 } });
    expect(refused.statusCode).toBe(415);
    expect(refused.headers["content-type"]).toBe("application/problem+json");
    expect(refused.json()).toMatchObject({ type: "urn:veil:error:HTTP_ERR_MEDIA_TYPE", status: 415 });
    const echo = await app.inject({ method: "POST", url: "/echo", payload: { a: 1 } });
    expect(echo.json()).toEqual({ echoed: { a: 1 } });
    const wrongMethod = await app.inject({ method: "DELETE", url: "/ohttp-keys" });
    expect(wrongMethod.statusCode).toBe(405);
  });

  it("leaves the host's 404 answers alone", async () => {
    const res = await app.inject({ method: "GET", url: "/nowhere" });
    expect(res.statusCode).toBe(404);
    expect(res.headers["content-type"]).toMatch(/^application\/json/);
    expect(res.json()).toMatchObject({ message: "Route GET:/nowhere not found" });
  });

  it("exposes readiness, the configuration and the gateway's metrics on app.veilGateway", async () => {
    await expect(app.veilGateway.ready()).resolves.toBeUndefined();
    expect(app.veilGateway.config.tokens.store).toBe(`sqlite:${db}`);
    const text = await app.veilGateway.registry.metrics();
    expect(text).toMatch(/veil_gateway_decapsulations_total\{key_id="1"\} [1-9]/);
    expect(text).toMatch(/veil_gateway_keys\{key_id="1"/);
  });
});

describe("veilGateway over real HTTP", () => {
  it("takes uploads on the host's listening server, under a prefix, and closes its store with the host", async () => {
    const db = join(dir, "http.db");
    const app = await hostApp(gatewayOptions(`sqlite:${db}`, { prefix: "/veil" }));
    let closed = false;
    try {
      const url = await app.listen({ host: "127.0.0.1", port: 0 });
      const keys = await fetch(`${url}/veil/ohttp-keys`);
      expect(decodeKeyConfigs(new Uint8Array(await keys.arrayBuffer()))[0]).toEqual(keyConfig);
      expect((await fetch(`${url}/ohttp-keys`)).status).toBe(404);

      const before = accepted();
      const sealed = await sealRequest(keyConfig, {
        method: "PUT",
        path: uploadPath(task),
        headers: [
          ["content-type", "application/dap-report"],
          ["authorization", newToken()],
        ],
        body: reports[3]!,
      });
      const res = await fetch(`${url}/veil/gateway`, { method: "POST", headers: { "content-type": "message/ohttp-req" }, body: sealed.body });
      expect(res.status).toBe(200);
      expect((await sealed.open(new Uint8Array(await res.arrayBuffer()))).status).toBe(201);
      expect(accepted()).toBe(before + 1);

      // SQLite keeps the -wal file while a connection is open and removes it when the last one closes.
      expect(existsSync(`${db}-wal`)).toBe(true);
      await app.close();
      closed = true;
      expect(existsSync(`${db}-wal`)).toBe(false);
    } finally {
      if (!closed) await app.close();
    }
  });

  it("serves the same uploads as the standalone gateway's route (the test helper's sealed upload)", async () => {
    const app = await hostApp(gatewayOptions("memory"));
    try {
      const url = await app.listen({ host: "127.0.0.1", port: 0 });
      const a = await sealedUpload(url, keyConfig, { path: uploadPath(task), body: reports[4]!, authorization: newToken() });
      expect(a.status).toBe(201);
    } finally {
      await app.close();
    }
  });
});

describe("veilGateway caps its concurrent requests", () => {
  it("answers a request beyond limits.maxConcurrentRequests with 503 and Retry-After, frees the slot when the held one ends, and leaves the host's routes alone", async () => {
    // A gate that holds every admitted request until released: the one request it holds is the
    // one in flight.
    const held: Array<() => void> = [];
    const gate: Gate = {
      admit: () => new Promise<GateTicket>((resolve) => held.push(() => resolve({ settle: async () => {} }))),
    };
    const options = gatewayOptions("memory", { gate });
    const app = await hostApp({ ...options, config: { ...options.config, limits: { maxConcurrentRequests: 1 } } });
    try {
      const url = await app.listen({ host: "127.0.0.1", port: 0 });
      const before = accepted();
      const first = sealedUpload(url, keyConfig, { path: uploadPath(task), body: reports[5]! });
      await until(() => held.length === 1, "the first upload held at the gate");

      const second = await sealRequest(keyConfig, { method: "PUT", path: uploadPath(task), headers: [["content-type", "application/dap-report"]], body: reports[6]! });
      const refused = await fetch(`${url}/gateway`, { method: "POST", headers: { "content-type": "message/ohttp-req" }, body: second.body });
      expect(refused.status).toBe(503);
      expect(refused.headers.get("retry-after")).toBe("1");
      expect(refused.headers.get("content-type")).toMatch(/^application\/problem\+json/);
      expect(await refused.json()).toMatchObject({ status: 503, code: "HTTP_ERR_OVERLOADED" });
      expect(held).toHaveLength(1); // the refused request never reached the gate
      // The host's own route is not counted against the gateway's cap.
      const echo = await fetch(`${url}/echo`, { method: "POST", headers: { "content-type": "application/json" }, body: "{\"a\":1}" });
      expect(echo.status).toBe(200);

      held[0]!();
      expect((await first).status).toBe(201);
      expect(accepted()).toBe(before + 1);
      // The slot is free again.
      const again = sealedUpload(url, keyConfig, { path: uploadPath(task), body: reports[7]! });
      await until(() => held.length === 2, "the third upload held at the gate");
      held[1]!();
      expect((await again).status).toBe(201);
      expect(accepted()).toBe(before + 2);
    } finally {
      for (const release of held) release();
      await app.close();
    }
  });
});

describe("veilGateway validates its configuration at registration", () => {
  it.each<[string, Partial<VeilGatewayOptions["config"]>, RegExp]>([
    ["an unknown field", { unknownField: 1 } as Partial<VeilGatewayOptions["config"]>, /unknownField/],
    ["a missing key file", { keys: join(tmpdir(), "veil-no-such-keys.json") }, /key/i],
    ["tokens required without issuers", { tokens: { required: true, issuers: [] } }, /issuers/],
    ["an unknown store", { tokens: { required: true, issuers: [{ name: ISSUER, directory: "http://127.0.0.1:9/d", keyLifetimeSec: 60 }], store: "mongo://x" } }, /store/],
  ])("refuses %s: registration rejects", async (_name, over, message) => {
    const app = Fastify();
    const base = gatewayOptions("memory");
    const boot = async (): Promise<void> => {
      await app.register(veilGateway, { ...base, config: { ...base.config, ...over } });
      await app.ready();
    };
    const err = await boot().then(
      () => undefined,
      (e: unknown) => e as { code?: string; message: string },
    );
    expect(err?.code).toMatch(/^CFG_ERR_/);
    expect(err?.message).toMatch(message);
    await app.close();
  });
});
