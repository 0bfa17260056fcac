// The double-spend store shared by `veil gateway` processes (needs a built dist/: `npm run build`):
// two processes on one SQLite file or one Redis accept one token once; a token spent before a
// SIGKILL stays spent after the restart.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { KeyConfig } from "../../core/ohttp/index.js";
import { formatAuthorization, type TokenChallenge } from "../../core/privacypass/index.js";
import { createDapTask, startDapAggregator, type DapAggregator, type DapTask } from "../../demo/dap-aggregator.js";
import { writeKeyFile } from "../../gateway/key-file.js";
import { makeKeyData } from "../helpers/gateway-fixture.js";
import { fetchKeyConfig } from "../helpers/oblivious-fetch.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import {
  makeDapReports,
  problem,
  sealedUpload,
  spawnGateway,
  startDirectoryServer,
  uploadPath,
  type DirectoryServer,
  type GatewayProcess,
} from "../helpers/token-gateway.js";
import { makeBlindRsaIssuerKey, makeToken } from "../helpers/tokens.js";

const ISSUER = "issuer.example";
const key = makeBlindRsaIssuerKey({ reuse: 0 });
const CHALLENGE: TokenChallenge = { tokenType: 2, issuerName: ISSUER, redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] };
const newToken = (): string => formatAuthorization(makeToken({ key, challenge: CHALLENGE }));

const dir = mkdtempSync(join(tmpdir(), "veil-tokproc-"));
let task: DapTask;
let leader: DapAggregator;
let helper: DapAggregator;
let directory: DirectoryServer;
let redis: TestRedis;
let reports: Uint8Array[];
let keyFile: string;
let keyConfig: KeyConfig;
let reportNo = 0;
const nextReport = (): Uint8Array => reports[reportNo++]!;
const running: GatewayProcess[] = [];

beforeAll(async () => {
  task = await createDapTask();
  leader = await startDapAggregator({ role: "leader", tasks: [task] });
  helper = await startDapAggregator({ role: "helper", tasks: [task] });
  directory = await startDirectoryServer([{ key, notBeforeSec: Math.floor(Date.now() / 1000) - 60 }]);
  redis = await startRedis();
  reports = await makeDapReports(task, leader.url, helper.url, 60);
  keyFile = join(dir, "keys.json");
  writeKeyFile(keyFile, (await makeKeyData([{ keyId: 1 }])).data);
});

afterAll(async () => {
  for (const p of running) await p.kill("SIGKILL");
  await leader?.close();
  await helper?.close();
  await directory?.close();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

let configNo = 0;
async function spawn(store: string): Promise<GatewayProcess> {
  const file = join(dir, `gateway-${configNo++}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      listen: { host: "127.0.0.1", port: 0 },
      keys: keyFile,
      targets: { "https://leader.example": leader.url },
      tokens: { required: true, issuers: [{ name: ISSUER, directory: directory.url, keyLifetimeSec: 3600 }], store, greaseProbability: 0 },
    }),
  );
  const p = await spawnGateway(file);
  running.push(p);
  keyConfig ??= await fetchKeyConfig(p.url);
  return p;
}

function accepted(): number {
  return leader.reports.get(task.idBase64Url)?.length ?? 0;
}

describe.each([
  ["one SQLite file", () => `sqlite:${join(dir, "shared.db")}`],
  ["one Redis", () => redis.url],
])("two gateway processes on %s", (_name, store) => {
  it("accept exactly one of 25 concurrent uploads of 25 reports with one token", async () => {
    const [a, b] = await Promise.all([spawn(store()), spawn(store())]);
    try {
      const before = accepted();
      const token = newToken();
      const answers = await Promise.all(
        Array.from({ length: 25 }, (_, i) => sealedUpload((i % 2 === 0 ? a : b).url, keyConfig, { path: uploadPath(task), body: nextReport(), authorization: token })),
      );
      expect(answers.filter((x) => x.status === 201)).toHaveLength(1);
      for (const x of answers.filter((y) => y.status !== 201)) {
        expect(x.status).toBe(401);
        expect(problem(x).type).toBe("urn:veil:error:PP_ERR_TOKEN_REPLAYED");
      }
      expect(accepted()).toBe(before + 1);
    } finally {
      await a.kill();
      await b.kill();
    }
  });
});

describe("a gateway killed with SIGKILL", () => {
  it("still refuses a token it spent before, for any other report, after a restart", async () => {
    const store = `sqlite:${join(dir, "restart.db")}`;
    const token = newToken();
    const report = nextReport();
    const first = await spawn(store);
    expect((await sealedUpload(first.url, keyConfig, { path: uploadPath(task), body: report, authorization: token })).status).toBe(201);
    await first.kill("SIGKILL");
    const second = await spawn(store);
    try {
      const other = await sealedUpload(second.url, keyConfig, { path: uploadPath(task), body: nextReport(), authorization: token });
      expect(other.status).toBe(401);
      expect(problem(other).type).toBe("urn:veil:error:PP_ERR_TOKEN_REPLAYED");
      const retry = await sealedUpload(second.url, keyConfig, { path: uploadPath(task), body: report, authorization: token });
      expect(retry.status).toBe(201);
    } finally {
      await second.kill();
    }
  });
});
