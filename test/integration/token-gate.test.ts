// The token gate inside a listening gateway: sealed uploads of real DAP-09 reports (made by
// @divviup/dap) to the leader double, with tokens of a trusted issuer, for each nonce store.

import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { KeyConfig } from "../../core/ohttp/index.js";
import { decodeTokenChallenge, formatAuthorization, parseWwwAuthenticate, type TokenChallenge } from "../../core/privacypass/index.js";
import { createDapTask, startDapAggregator, type DapAggregator, type DapTask } from "../../demo/dap-aggregator.js";
import { parseGatewayConfig, type GatewayConfig } from "../../gateway/config.js";
import { writeKeyFile } from "../../gateway/key-file.js";
import { startGateway, type StartedGateway } from "../../gateway/main.js";
import { createTokenGate } from "../../gateway/tokens.js";
import { createLogger } from "../../server/logging.js";
import { captureLines, makeKeyData } from "../helpers/gateway-fixture.js";
import { fetchKeyConfig } from "../helpers/oblivious-fetch.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import {
  header,
  makeDapReports,
  problem,
  sealedUpload,
  startDirectoryServer,
  uploadPath,
  type DirectoryServer,
} from "../helpers/token-gateway.js";
import { makeBlindRsaIssuerKey, makeToken } from "../helpers/tokens.js";

const ISSUER = "issuer.example";
const LIFETIME = 3600;
const key = makeBlindRsaIssuerKey({ reuse: 0 });
const notBeforeSec = Math.floor(Date.now() / 1000) - 60;
const CHALLENGE: TokenChallenge = { tokenType: 2, issuerName: ISSUER, redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] };
const newToken = (): string => formatAuthorization(makeToken({ key, challenge: CHALLENGE }));

const dir = mkdtempSync(join(tmpdir(), "veil-tokgw-"));
let task: DapTask;
let leader: DapAggregator;
let helper: DapAggregator;
let directory: DirectoryServer;
let redis: TestRedis;
let reports: Uint8Array[];
let keyFile: string;
let reportNo = 0;
const nextReport = (): Uint8Array => {
  const r = reports[reportNo++];
  if (r === undefined) throw new Error("out of test reports");
  return r;
};

beforeAll(async () => {
  task = await createDapTask();
  leader = await startDapAggregator({ role: "leader", tasks: [task] });
  helper = await startDapAggregator({ role: "helper", tasks: [task] });
  directory = await startDirectoryServer([{ key, notBeforeSec }]);
  redis = await startRedis();
  reports = await makeDapReports(task, leader.url, helper.url, 120);
  keyFile = join(dir, "keys.json");
  writeKeyFile(keyFile, (await makeKeyData([{ keyId: 1 }])).data);
});

afterAll(async () => {
  await leader?.close();
  await helper?.close();
  await directory?.close();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function gatewayConfig(store: string, over: Record<string, unknown> = {}): GatewayConfig {
  return parseGatewayConfig({
    listen: { host: "127.0.0.1", port: 0 },
    keys: keyFile,
    targets: { "https://leader.example": leader.url },
    upstream: { connectTimeoutMs: 1000 },
    tokens: {
      required: true,
      issuers: [{ name: ISSUER, directory: directory.url, keyLifetimeSec: LIFETIME }],
      store,
      greaseProbability: 0,
      ...over,
    },
  });
}

interface Running {
  gw: StartedGateway;
  keyConfig: KeyConfig;
  lines: string[];
}

async function start(config: GatewayConfig, options: Parameters<typeof startGateway>[1] = {}): Promise<Running> {
  const capture = captureLines();
  const gw = await startGateway(config, { log: createLogger("gateway", { destination: capture.stream }), handleSignals: false, ...options });
  return { gw, keyConfig: await fetchKeyConfig(gw.url), lines: capture.lines };
}

function accepted(task: DapTask): number {
  return leader.reports.get(task.idBase64Url)?.length ?? 0;
}

function expectChallenge(r: { status: number; headers: [string, string][] }, code: string, body: Record<string, unknown>): void {
  expect(r.status).toBe(401);
  const h = r.headers.find(([n]) => n === "www-authenticate")?.[1];
  expect(h).toMatch(/^PrivateToken challenge="[A-Za-z0-9_-]+={0,2}", token-key="[A-Za-z0-9_-]+={0,2}"$/);
  const [c] = parseWwwAuthenticate(h!);
  expect(decodeTokenChallenge(c!.challenge)).toEqual(CHALLENGE);
  expect(c!.tokenKey).toEqual(key.tokenKey);
  expect(body.type).toBe(`urn:veil:error:${code}`);
  expect(body.taskid).toBe(task.idBase64Url);
}

describe.each([
  ["memory", () => "memory"],
  ["sqlite", () => `sqlite:${join(dir, "race.db")}`],
  ["redis", () => redis.url],
])("one token through the gateway (%s store)", (_name, store) => {
  let r: Running;
  beforeAll(async () => {
    r = await start(gatewayConfig(store()));
  });
  afterAll(async () => {
    await r?.gw.stop();
  });

  it("accepts exactly one of 25 concurrent uploads of 25 different reports", async () => {
    const before = accepted(task);
    const token = newToken();
    const answers = await Promise.all(
      Array.from({ length: 25 }, () => sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: nextReport(), authorization: token })),
    );
    expect(answers.filter((a) => a.status === 201)).toHaveLength(1);
    for (const a of answers.filter((x) => x.status !== 201)) expectChallenge(a, "PP_ERR_TOKEN_REPLAYED", problem(a));
    expect(accepted(task)).toBe(before + 1);
  });

  it("accepts the same report resent with its token, as a retry", async () => {
    const token = newToken();
    const report = nextReport();
    const dupes = leader.duplicates.length;
    const first = await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: report, authorization: token });
    const again = await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: report, authorization: token });
    expect([first.status, again.status]).toEqual([201, 201]);
    expect(leader.duplicates.length).toBe(dupes + 1);
    const other = await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: nextReport(), authorization: token });
    expectChallenge(other, "PP_ERR_TOKEN_REPLAYED", problem(other));
  });
});

describe("the gate in the request path", () => {
  let r: Running;
  beforeAll(async () => {
    r = await start(gatewayConfig(`sqlite:${join(dir, "path.db")}`));
  });
  afterAll(async () => {
    await r?.gw.stop();
  });

  it("answers each refusal with a sealed 401 carrying the challenge and the task id", async () => {
    const cases: [string | undefined, string][] = [
      [undefined, "PP_ERR_TOKEN_MISSING"],
      ['PrivateToken token="AAIA"', "PP_ERR_TOKEN_MALFORMED"],
      ['PrivateToken token="AAAA"', "PP_ERR_TOKEN_TYPE"],
      [formatAuthorization(makeToken({ key, challenge: CHALLENGE, corrupt: true })), "PP_ERR_TOKEN_SIGNATURE"],
      [formatAuthorization(makeToken({ key: makeBlindRsaIssuerKey({ reuse: 1 }), challenge: CHALLENGE })), "PP_ERR_TOKEN_KEY"],
      [formatAuthorization(makeToken({ key, challenge: { ...CHALLENGE, originInfo: ["helper.example"] } })), "PP_ERR_TOKEN_CHALLENGE"],
    ];
    for (const [authorization, code] of cases) {
      const a = await sealedUpload(r.gw.url, r.keyConfig, {
        path: uploadPath(task),
        body: nextReport(),
        ...(authorization === undefined ? {} : { authorization }),
      });
      expectChallenge(a, code, problem(a));
    }
    const metrics = await (await fetch(new URL("/metrics", r.gw.url))).text();
    expect(metrics).toMatch(/veil_gateway_tokens_refused_total\{reason="signature"[^}]*\} 1/);
  });

  it("lets hpke_config through without a token", async () => {
    const a = await sealedUpload(r.gw.url, r.keyConfig, { method: "GET", path: `/hpke_config?task_id=${task.idBase64Url}`, body: new Uint8Array() });
    expect(a.status).toBe(200);
  });

  it("never forwards the token to the aggregator", async () => {
    const a = await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: nextReport(), authorization: newToken() });
    expect(a.status).toBe(201);
    const last = leader.received[leader.received.length - 1]!;
    expect(last.method).toBe("PUT");
    expect(last.headers.authorization).toBeUndefined();
    expect(JSON.stringify(last.headers)).not.toContain("PrivateToken");
  });

  it("keeps the token good when the aggregator refused the connection, then spends it once it is back", async () => {
    const port = leader.port;
    const token = newToken();
    await leader.close();
    try {
      const down = await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: nextReport(), authorization: token });
      expect(down.status).toBe(502);
      expect(problem(down).type).toBe("urn:veil:error:GATEWAY_ERR_UPSTREAM_UNREACHABLE");
    } finally {
      leader = await startDapAggregator({ role: "leader", tasks: [task], port });
    }
    const back = await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: nextReport(), authorization: token });
    expect(back.status).toBe(201);
    const again = await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: nextReport(), authorization: token });
    expect(again.status).toBe(401);
  });
});

describe("an aggregator that cuts the connection after reading the upload", () => {
  it("spends the token (the report may have been processed), yet accepts the same report again", async () => {
    const { createServer } = await import("node:http");
    let bodies = 0;
    const cutter = createServer((req) => {
      req.resume();
      req.on("end", () => {
        bodies++;
        req.socket.destroy();
      });
    });
    await new Promise<void>((ok) => cutter.listen(0, "127.0.0.1", () => ok()));
    const port = (cutter.address() as { port: number }).port;
    const config = parseGatewayConfig({
      ...JSON.parse(JSON.stringify(gatewayConfig("memory"))),
      targets: { "https://leader.example": `http://127.0.0.1:${port}` },
    });
    const r = await start(config);
    try {
      const token = newToken();
      const report = nextReport();
      const cut = await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: report, authorization: token });
      expect(cut.status).toBe(502);
      expect(bodies).toBe(1);
      const other = await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: nextReport(), authorization: token });
      expectChallenge(other, "PP_ERR_TOKEN_REPLAYED", problem(other));
      const retry = await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: report, authorization: token });
      expect(retry.status).toBe(502); // let through again as a retry: the aggregator cut it again
      expect(bodies).toBe(2);
    } finally {
      await r.gw.stop();
      cutter.closeAllConnections();
      await new Promise((ok) => cutter.close(ok));
    }
  });
});

describe("failing closed", () => {
  it("answers a sealed 503 while Redis is down, and works again once it is back", async () => {
    const own = await startRedis();
    const r = await start(gatewayConfig(own.url));
    try {
      expect((await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: nextReport(), authorization: newToken() })).status).toBe(201);
      await own.stop();
      const token = newToken();
      const down = await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: nextReport(), authorization: token });
      expect(down.status).toBe(503);
      expect(problem(down).type).toBe("urn:veil:error:PP_ERR_STORE_UNAVAILABLE");
      expect(header(down, "retry-after")).toBeDefined();
      expect((await fetch(new URL("/readyz", r.gw.url))).status).toBe(503);
      await own.restart();
      await expect.poll(async () => (await fetch(new URL("/readyz", r.gw.url))).status, { timeout: 5000, interval: 100 }).toBe(200);
      expect((await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: nextReport(), authorization: token })).status).toBe(201);
    } finally {
      await r.gw.stop();
      await own.stop();
    }
  });

  /** Makes a file unwritable even for root (chattr +i), or with chmod when not root; undefined if impossible. */
  function makeUnwritable(file: string): (() => void) | undefined {
    if (process.getuid?.() !== 0) {
      chmodSync(file, 0o444);
      return () => chmodSync(file, 0o644);
    }
    try {
      execFileSync("chattr", ["+i", file], { stdio: "ignore" });
      return () => execFileSync("chattr", ["-i", file], { stdio: "ignore" });
    } catch {
      return undefined;
    }
  }

  it("answers a sealed 503 while the SQLite file is unwritable, and works once it is writable again", async (ctx) => {
    const file = join(dir, "unwritable.db");
    const first = await start(gatewayConfig(`sqlite:${file}`));
    await first.gw.stop(); // the file now exists, with its schema
    const undo = makeUnwritable(file);
    if (undo === undefined) ctx.skip();
    let r: Running | undefined;
    try {
      r = await start(gatewayConfig(`sqlite:${file}`));
      const token = newToken();
      const down = await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: nextReport(), authorization: token });
      expect(down.status).toBe(503);
      expect(problem(down).type).toBe("urn:veil:error:PP_ERR_STORE_UNAVAILABLE");
      undo!();
      const up = await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: nextReport(), authorization: token });
      expect(up.status).toBe(201);
    } finally {
      try {
        undo?.();
      } catch {
        // already undone
      }
      await r?.gw.stop();
    }
  });

  it("keeps the last good issuer keys while the issuer is unreachable, until they expire", async () => {
    const clock = { t: Date.now() };
    const own = await startDirectoryServer([{ key, notBeforeSec }]);
    const config = gatewayConfig("memory", { issuers: [{ name: ISSUER, directory: own.url, keyLifetimeSec: LIFETIME }] });
    const gate = await createTokenGate(config.tokens, { log: createLogger("gateway", { level: "silent" }), now: () => clock.t });
    const r = await start(config, { gate });
    try {
      await own.down();
      clock.t += 5 * 60_000; // the directory (max-age 60) is stale; the issuer is unreachable
      const stale = await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: nextReport(), authorization: newToken() });
      expect(stale.status).toBe(201);
      clock.t = (notBeforeSec + LIFETIME) * 1000; // the key's lifetime is over
      const expired = await sealedUpload(r.gw.url, r.keyConfig, { path: uploadPath(task), body: nextReport(), authorization: newToken() });
      expect(expired.status).toBe(503);
      expect(problem(expired).type).toBe("urn:veil:error:PP_ERR_ISSUER_UNAVAILABLE");
    } finally {
      await r.gw.stop();
      await own.close();
    }
  });
});
