// Faults of whole processes (`node bin/veil.js ...`; needs a built dist/: `npm run build`):
//
// - a gateway SIGKILLed between reserving a token's nonce and committing it (the aggregator holds
//   the request, before or after taking the report): after a restart on the same SQLite store the
//   reservation is still bound to its report, so resending that report with the token works and any
//   other report with it is refused; the leader has the report once;
// - a gateway behind a relay dies mid-request, then stays down: the relay answers 502 at once (not a
//   504 after its timeouts);
// - SIGTERM under load (gateway, relay): every request that was in flight is answered, none fails;
// - key rotation under load (SIGHUP re-reads the key file; a broken file keeps the old keys): no
//   request fails, old and new keys both decrypt.

import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeResponse, encodeRequest } from "../../core/bhttp/index.js";
import { toHex } from "../../core/bytes.js";
import { decodeKeyConfigs, encapsulateRequest, type KeyConfig } from "../../core/ohttp/index.js";
import { formatAuthorization, type TokenChallenge } from "../../core/privacypass/index.js";
import { startFaultProxy, type FaultMode, type FaultProxy } from "../../bench/fault-proxy.js";
import { createDapTask, startDapAggregator, type DapAggregator, type DapTask } from "../../demo/dap-aggregator.js";
import { parseGatewayConfig } from "../../gateway/config.js";
import { setKeyState, writeKeyFile, type KeyFileData } from "../../gateway/key-file.js";
import { startGateway, type StartedGateway } from "../../gateway/main.js";
import { createLogger } from "../../server/logging.js";
import { makeKeyData } from "../helpers/gateway-fixture.js";
import { fetchKeyConfig } from "../helpers/oblivious-fetch.js";
import { startTestRelay } from "../helpers/relay-harness.js";
import { makeDapReports, problem, sealedUpload, startDirectoryServer, uploadPath, type DirectoryServer } from "../helpers/token-gateway.js";
import { makeBlindRsaIssuerKey, makeToken } from "../helpers/tokens.js";
import { killAllVeilChildren, spawnVeil } from "../helpers/veil-child.js";
import { until } from "../helpers/wait.js";

const ISSUER = "issuer.example";
const key = makeBlindRsaIssuerKey({ reuse: 0 });
const CHALLENGE: TokenChallenge = { tokenType: 2, issuerName: ISSUER, redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] };
const newToken = (): string => formatAuthorization(makeToken({ key, challenge: CHALLENGE }));

const dir = mkdtempSync(join(tmpdir(), "veil-faultproc-"));
let task: DapTask;
let leader: DapAggregator;
let helper: DapAggregator;
let proxy: FaultProxy;
let directory: DirectoryServer;
let reports: Uint8Array[];
let keyData: KeyFileData;
let reportNo = 0;
const nextReport = (): Uint8Array => reports[reportNo++]!;
let fileNo = 0;
const configFile = (): string => join(dir, `config-${fileNo++}.json`);

beforeAll(async () => {
  task = await createDapTask();
  leader = await startDapAggregator({ role: "leader", tasks: [task] });
  helper = await startDapAggregator({ role: "helper", tasks: [task] });
  proxy = await startFaultProxy({ target: leader.url });
  directory = await startDirectoryServer([{ key, notBeforeSec: Math.floor(Date.now() / 1000) - 60 }]);
  reports = await makeDapReports(task, leader.url, helper.url, 12);
  keyData = (await makeKeyData([{ keyId: 1 }, { keyId: 2, state: "pending" }])).data;
});

afterAll(async () => {
  await killAllVeilChildren();
  await proxy?.close();
  await directory?.close();
  await leader?.close();
  await helper?.close();
  rmSync(dir, { recursive: true, force: true });
});

function keyFileWith(data: KeyFileData): string {
  const file = join(dir, `keys-${fileNo++}.json`);
  writeKeyFile(file, data);
  return file;
}

/** How often the leader saw `report` (accepted plus ignored duplicates). */
function atLeader(report: Uint8Array): number {
  const id = toHex(report.subarray(0, 16));
  return (leader.reports.get(task.idBase64Url) ?? []).filter((r) => r.reportId === id).length + leader.duplicates.filter((d) => d.reportId === id).length;
}

// --- SIGKILL between reserve and commit ----------------------------------------------------------

describe("a gateway killed (SIGKILL) between reserving and committing a token", () => {
  const tokenGateway = (store: string): unknown => ({
    listen: { host: "127.0.0.1", port: 0 },
    keys: keyFileWith(keyData),
    targets: { "https://leader.example": proxy.url },
    upstream: { connectTimeoutMs: 1000, totalTimeoutMs: 30_000, headersTimeoutMs: 30_000 },
    tokens: { required: true, issuers: [{ name: ISSUER, directory: directory.url, keyLifetimeSec: 3600 }], store, greaseProbability: 0 },
  });

  it.each([
    ["stall-before", "before the aggregator took the report", 0],
    ["stall-after", "after the aggregator took the report", 1],
  ] as [FaultMode, string, number][])("%s: killed %s, the report resent with its token lands once and nothing else rides on the token", async (mode, _when, seenBefore) => {
    const store = `sqlite:${join(dir, `kill-${mode}.db`)}`;
    const token = newToken();
    const report = nextReport();
    const first = await spawnVeil("gateway", configFile(), tokenGateway(store));
    const keyConfig = await fetchKeyConfig(first.url);
    proxy.mode = mode;
    const held = proxy.counts[mode];
    const pending = sealedUpload(first.url, keyConfig, { path: uploadPath(task), body: report, authorization: token }).then(
      () => "answered",
      () => "cut",
    );
    try {
      // The gate has reserved the nonce and the request is at the aggregator: kill now.
      await until(() => proxy.counts[mode] > held && atLeader(report) === seenBefore, "the upload to reach the aggregator");
      expect((await first.kill("SIGKILL")).signal).toBe("SIGKILL");
      expect(await pending).toBe("cut");
    } finally {
      proxy.mode = "pass";
    }
    expect(atLeader(report)).toBe(seenBefore);

    const second = await spawnVeil("gateway", configFile(), tokenGateway(store));
    try {
      const other = nextReport();
      const refused = await sealedUpload(second.url, keyConfig, { path: uploadPath(task), body: other, authorization: token });
      expect(refused.status).toBe(401);
      expect(problem(refused).type).toBe("urn:veil:error:PP_ERR_TOKEN_REPLAYED");
      expect(atLeader(other)).toBe(0);
      const resent = await sealedUpload(second.url, keyConfig, { path: uploadPath(task), body: report, authorization: token });
      expect(resent.status).toBe(201);
      expect(leader.reports.get(task.idBase64Url)!.filter((r) => r.reportId === toHex(report.subarray(0, 16)))).toHaveLength(1);
    } finally {
      await second.kill();
    }
  });
});

// --- the gateway down behind the relay -------------------------------------------------------------

describe("the gateway down behind the relay", () => {
  it("answers 502 at once when the gateway dies mid-request and while it is down, not a 504 after its timeouts", async () => {
    const gateway = await spawnVeil("gateway", configFile(), {
      listen: { host: "127.0.0.1", port: 0 },
      keys: keyFileWith(keyData),
      targets: { "https://leader.example": proxy.url },
      upstream: { totalTimeoutMs: 30_000, headersTimeoutMs: 30_000 },
      tokens: { required: false },
    });
    // Timeouts far beyond the test's own: a 502 can only come from the failure itself.
    const relay = await startTestRelay({
      routes: [{ path: "/leader-gateway", gateway: `${gateway.url}/gateway` }],
      timeouts: { connectMs: 60_000, headersMs: 60_000, bodyMs: 60_000 },
    });
    try {
      const keyConfig = await fetchKeyConfig(gateway.url);
      const inner = encodeRequest({ method: "PUT", scheme: "https", authority: "leader.example", path: uploadPath(task), headers: [], body: nextReport(), trailers: [] });
      const post = async (): Promise<{ status: number; code: unknown }> => {
        const { encapsulated } = await encapsulateRequest(keyConfig, inner);
        const res = await fetch(`${relay.url}/leader-gateway`, { method: "POST", headers: { "content-type": "message/ohttp-req" }, body: new Uint8Array(encapsulated) });
        const body = (await res.json()) as { code?: unknown };
        return { status: res.status, code: body.code };
      };
      proxy.mode = "stall-before";
      const held = proxy.counts["stall-before"];
      const midRequest = post();
      await until(() => proxy.counts["stall-before"] > held, "the request to reach the aggregator");
      await gateway.kill("SIGKILL");
      expect(await midRequest).toEqual({ status: 502, code: "RELAY_ERR_UPSTREAM_FAILED" });
      expect(await post()).toEqual({ status: 502, code: "RELAY_ERR_UPSTREAM_UNREACHABLE" });
    } finally {
      proxy.mode = "pass";
      await relay.stop();
      await gateway.kill("SIGKILL");
    }
  }, 20_000);
});

// --- load: SIGTERM and SIGHUP ----------------------------------------------------------------------

/** A target that records each request id (/work/<id>) and answers after `delayMs`. */
async function startSlowTarget(delayMs: number): Promise<{ url: string; arrived: Set<number>; pending: () => number; close(): Promise<void> }> {
  const arrived = new Set<number>();
  let pending = 0;
  const server: Server = createServer((req, res) => {
    req.resume();
    const id = Number(/^\/work\/(\d+)$/.exec(req.url ?? "")?.[1] ?? -1);
    arrived.add(id);
    pending++;
    setTimeout(() => {
      pending--;
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(`done ${id}`);
    }, delayMs);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    arrived,
    pending: () => pending,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** One oblivious request for /work/<id> through `postUrl`: "ok" or what went wrong. */
async function work(postUrl: string, keyConfig: KeyConfig, id: number): Promise<string> {
  const inner = encodeRequest({ method: "POST", scheme: "https", authority: "work.example", path: `/work/${id}`, headers: [], body: new Uint8Array([1, 2, 3]), trailers: [] });
  const { encapsulated, response } = await encapsulateRequest(keyConfig, inner);
  let res: Response;
  try {
    res = await fetch(postUrl, { method: "POST", headers: { "content-type": "message/ohttp-req" }, body: new Uint8Array(encapsulated) });
  } catch (e) {
    return `network error ${String((e as { cause?: { code?: unknown } }).cause?.code ?? e)}`;
  }
  const body = new Uint8Array(await res.arrayBuffer());
  if (res.status !== 200) return `outer ${res.status}`;
  const answer = decodeResponse(await response.decapsulateResponse(body));
  if (answer.status !== 200) return `inner ${answer.status}`;
  return new TextDecoder().decode(answer.body) === `done ${id}` ? "ok" : "wrong answer";
}

interface Load {
  results: Map<number, string>;
  /** Stops the workers after their current request; resolves when they are done. */
  stop(): Promise<void>;
}

/** `concurrency` workers sending requests back to back until stopped (or, with `untilFailure`, until one fails). */
function startLoad(concurrency: number, send: (id: number) => Promise<string>, untilFailure = false): Load {
  const results = new Map<number, string>();
  let next = 0;
  let stopped = false;
  const workers = Array.from({ length: concurrency }, async () => {
    while (!stopped) {
      const id = next++;
      const r = await send(id).catch((e: unknown) => `threw ${String(e)}`);
      results.set(id, r);
      if (r !== "ok" && untilFailure) return;
    }
  });
  return {
    results,
    stop: async () => {
      stopped = true;
      await Promise.all(workers);
    },
  };
}

const workGatewayConfig = (targetUrl: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  listen: { host: "127.0.0.1", port: 0 },
  keys: keyFileWith(keyData),
  policy: "targets-only",
  targets: { "https://work.example": targetUrl },
  tokens: { required: false },
  limits: { shutdownGraceMs: 10_000 },
  ...extra,
});

describe("SIGTERM under load", () => {
  it("gateway: answers every request in flight, then exits 0", async () => {
    const target = await startSlowTarget(150);
    const gateway = await spawnVeil("gateway", configFile(), workGatewayConfig(target.url));
    try {
      const keyConfig = await fetchKeyConfig(gateway.url);
      const load = startLoad(24, (id) => work(`${gateway.url}/gateway`, keyConfig, id), true);
      await until(() => target.pending() >= 16, "16 requests in flight");
      const inFlight = target.pending();
      expect((await gateway.kill("SIGTERM")).code).toBe(0);
      await load.stop();
      const failedAfterArrival = [...target.arrived].filter((id) => load.results.get(id) !== "ok");
      expect(failedAfterArrival).toEqual([]);
      expect(inFlight).toBeGreaterThanOrEqual(16);
      // Requests after the shutdown began were refused before reaching the target (never a sealed error).
      for (const [id, r] of load.results) if (r !== "ok") expect(target.arrived.has(id), `${id}: ${r}`).toBe(false);
    } finally {
      await gateway.kill("SIGKILL");
      await target.close();
    }
  }, 30_000);

  it("relay: answers every request in flight, then exits 0", async () => {
    const target = await startSlowTarget(150);
    const gateway: StartedGateway = await startGateway(parseGatewayConfig(workGatewayConfig(target.url)), { log: createLogger("gateway", { level: "silent" }), handleSignals: false });
    const relay = await spawnVeil("relay", configFile(), {
      listen: { host: "127.0.0.1", port: 0 },
      routes: [{ path: "/work-gateway", gateway: `${gateway.url}/gateway` }],
      rateLimit: { perClientPerWindow: 0 },
      limits: { shutdownGraceMs: 10_000 },
    });
    try {
      const keyConfig = await fetchKeyConfig(gateway.url);
      const load = startLoad(24, (id) => work(`${relay.url}/work-gateway`, keyConfig, id), true);
      await until(() => target.pending() >= 16, "16 requests in flight");
      expect((await relay.kill("SIGTERM")).code).toBe(0);
      await load.stop();
      expect([...target.arrived].filter((id) => load.results.get(id) !== "ok")).toEqual([]);
      for (const [id, r] of load.results) if (r !== "ok") expect(target.arrived.has(id), `${id}: ${r}`).toBe(false);
    } finally {
      await relay.kill("SIGKILL");
      await gateway.stop();
      await target.close();
    }
  }, 30_000);
});

describe("key rotation under load", () => {
  it("SIGHUP re-reads the key file: no request fails, old and new keys decrypt, a broken file keeps the keys", async () => {
    const target = await startSlowTarget(5);
    const config = workGatewayConfig(target.url);
    const keys = config.keys as string;
    const gateway = await spawnVeil("gateway", configFile(), config);
    try {
      const oldConfig = await fetchKeyConfig(gateway.url);
      expect(oldConfig.keyId).toBe(1);
      let fresh: KeyConfig = oldConfig;
      const sentWith = new Map<number, number>();
      const load = startLoad(12, async (id) => {
        // Half the clients keep the key config they started with; the others refetch it often.
        let kc = oldConfig;
        if (id % 2 === 1) {
          if (id % 10 === 1) fresh = decodeKeyConfigs(new Uint8Array(await (await fetch(`${gateway.url}/ohttp-keys`)).arrayBuffer()))[0]!;
          kc = fresh;
        }
        sentWith.set(id, kc.keyId);
        return work(`${gateway.url}/gateway`, kc, id);
      });
      // Uploads with key 1 complete before the rotation.
      await until(() => load.results.size >= 12, "12 uploads before the rotation");
      // Rotate: key 2 becomes active, key 1 is retired (it still decrypts during its grace period).
      const now = new Date();
      writeKeyFile(keys, setKeyState(setKeyState(keyData, 2, "active", now), 1, "retired", now));
      gateway.child.kill("SIGHUP");
      await until(async () => decodeKeyConfigs(new Uint8Array(await (await fetch(`${gateway.url}/ohttp-keys`)).arrayBuffer()))[0]?.keyId === 2, "key 2 to be served");
      await until(() => [...load.results.keys()].some((id) => sentWith.get(id) === 2), "requests with key 2");
      // Uploads with both keys go on after the rotation.
      const afterRotation = load.results.size;
      await until(() => load.results.size >= afterRotation + 12, "12 more uploads after the rotation");
      // A broken file: the reload fails and the current keys stay.
      writeFileSync(keys, "{ not json", { mode: 0o600 });
      gateway.child.kill("SIGHUP");
      await until(() => gateway.output.join("").includes("key file reload failed"), "the failed reload to be logged");
      const afterFailedReload = load.results.size;
      await until(() => load.results.size >= afterFailedReload + 12, "12 more uploads after the failed reload");
      await load.stop();
      const failures = [...load.results].filter(([, r]) => r !== "ok");
      expect(failures).toEqual([]);
      const byKey = (k: number): number => [...load.results.keys()].filter((id) => sentWith.get(id) === k).length;
      expect(byKey(1)).toBeGreaterThan(10);
      expect(byKey(2)).toBeGreaterThan(0);
    } finally {
      await gateway.kill("SIGKILL");
      await target.close();
    }
  }, 30_000);
});
