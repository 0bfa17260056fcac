// Aggregator faults with tokens (docs/architecture.md, "Token spend semantics"): a fault-injecting
// proxy (bench/fault-proxy.ts) in front of the DAP-09 leader double answers 5xx (before or after
// passing the report on), cuts the answer mid-body or the connection before passing it on, or stalls
// past the gateway's deadline. Each time the client gets the sealed 5xx, 502 or 504; the token is
// committed and bound to that report: any other report with it is refused, and resending the same
// report with it works once the aggregator is back, so the report is neither lost nor double-spent.
// (Refused connections, which leave the token good for any report, are in token-gate.test.ts.)

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { toHex } from "../../core/bytes.js";
import type { KeyConfig } from "../../core/ohttp/index.js";
import { formatAuthorization, type TokenChallenge } from "../../core/privacypass/index.js";
import { startFaultProxy, type FaultMode, type FaultProxy } from "../../bench/fault-proxy.js";
import { createDapTask, startDapAggregator, type DapAggregator, type DapTask } from "../../demo/dap-aggregator.js";
import { parseGatewayConfig } from "../../gateway/config.js";
import { writeKeyFile } from "../../gateway/key-file.js";
import { startGateway, type StartedGateway } from "../../gateway/main.js";
import { createLogger } from "../../server/logging.js";
import { captureLines, makeKeyData } from "../helpers/gateway-fixture.js";
import { fetchKeyConfig } from "../helpers/oblivious-fetch.js";
import { makeDapReports, problem, sealedUpload, startDirectoryServer, uploadPath, type DirectoryServer } from "../helpers/token-gateway.js";
import { makeBlindRsaIssuerKey, makeToken } from "../helpers/tokens.js";

const ISSUER = "issuer.example";
const key = makeBlindRsaIssuerKey({ reuse: 0 });
const CHALLENGE: TokenChallenge = { tokenType: 2, issuerName: ISSUER, redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] };
const newToken = (): string => formatAuthorization(makeToken({ key, challenge: CHALLENGE }));
/** The gateway's deadline for the whole exchange with the aggregator. */
const TOTAL_TIMEOUT_MS = 400;

const dir = mkdtempSync(join(tmpdir(), "veil-faults-"));
const logs = captureLines();
let task: DapTask;
let leader: DapAggregator;
let helper: DapAggregator;
let proxy: FaultProxy;
let directory: DirectoryServer;
let gateway: StartedGateway;
let keyConfig: KeyConfig;
let reports: Uint8Array[];
let reportNo = 0;
const nextReport = (): Uint8Array => reports[reportNo++]!;

beforeAll(async () => {
  task = await createDapTask();
  leader = await startDapAggregator({ role: "leader", tasks: [task] });
  helper = await startDapAggregator({ role: "helper", tasks: [task] });
  proxy = await startFaultProxy({ target: leader.url });
  directory = await startDirectoryServer([{ key, notBeforeSec: Math.floor(Date.now() / 1000) - 60 }]);
  reports = await makeDapReports(task, leader.url, helper.url, 20);
  const keyFile = join(dir, "keys.json");
  writeKeyFile(keyFile, (await makeKeyData([{ keyId: 1 }])).data);
  gateway = await startGateway(
    parseGatewayConfig({
      listen: { host: "127.0.0.1", port: 0 },
      keys: keyFile,
      targets: { "https://leader.example": proxy.url },
      upstream: { connectTimeoutMs: 1000, headersTimeoutMs: 10_000, bodyTimeoutMs: 10_000, totalTimeoutMs: TOTAL_TIMEOUT_MS },
      tokens: { required: true, issuers: [{ name: ISSUER, directory: directory.url, keyLifetimeSec: 3600 }], store: `sqlite:${join(dir, "nonces.db")}`, greaseProbability: 0 },
    }),
    { log: createLogger("gateway", { destination: logs.stream }), handleSignals: false },
  );
  keyConfig = await fetchKeyConfig(gateway.url);
});

afterAll(async () => {
  await gateway?.stop();
  await proxy?.close();
  await directory?.close();
  await leader?.close();
  await helper?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Report ids (hex) the leader accepted, counting duplicates. */
function atLeader(report: Uint8Array): number {
  const id = toHex(report.subarray(0, 16));
  const accepted = (leader.reports.get(task.idBase64Url) ?? []).filter((r) => r.reportId === id).length;
  return accepted + leader.duplicates.filter((d) => d.reportId === id).length;
}

async function settled(result: "committed" | "released"): Promise<number> {
  const text = await (await fetch(new URL("/metrics", gateway.url))).text();
  const m = new RegExp(`veil_gateway_tokens_settled_total\\{result="${result}"[^}]*\\} (\\d+)`).exec(text);
  return Number(m?.[1] ?? 0);
}

const CASES: [FaultMode, string, number, string | undefined, boolean][] = [
  // mode, what the aggregator does, sealed status, Veil's problem code (none: the aggregator's own answer), reached the leader
  ["error-before", "answers 503 without taking the report", 503, undefined, false],
  ["error-after", "takes the report, then answers 500", 500, undefined, true],
  ["reset-before", "cuts the connection before taking the report", 502, "GATEWAY_ERR_UPSTREAM_FAILED", false],
  ["reset-after", "takes the report, then cuts its answer mid-body", 502, "GATEWAY_ERR_UPSTREAM_FAILED", true],
  ["stall-before", "stalls past the deadline without taking the report", 504, "GATEWAY_ERR_UPSTREAM_TIMEOUT", false],
  ["stall-after", "takes the report, then stalls past the deadline", 504, "GATEWAY_ERR_UPSTREAM_TIMEOUT", true],
];

describe("aggregator faults: the token is committed, bound to its report, and the resend works", () => {
  it.each(CASES)("%s: the aggregator %s", async (mode, _what, status, code, reached) => {
    const token = newToken();
    const report = nextReport();
    const committed = await settled("committed");
    proxy.mode = mode;
    const faultsBefore = proxy.counts[mode];
    let first;
    try {
      first = await sealedUpload(gateway.url, keyConfig, { path: uploadPath(task), body: report, authorization: token });
    } finally {
      proxy.mode = "pass";
    }
    expect(proxy.counts[mode]).toBe(faultsBefore + 1);
    expect(first.status).toBe(status);
    if (code !== undefined) {
      expect(problem(first).type).toBe(`urn:veil:error:${code}`);
      expect(problem(first).taskid).toBe(task.idBase64Url);
    }
    // A stall is answered by the gateway's deadline: the aggregator never answered it.
    expect(await settled("committed")).toBe(committed + 1);
    expect(atLeader(report)).toBe(reached ? 1 : 0);

    // Any other report with this token is a double spend.
    const other = nextReport();
    const refused = await sealedUpload(gateway.url, keyConfig, { path: uploadPath(task), body: other, authorization: token });
    expect(refused.status).toBe(401);
    expect(problem(refused).type).toBe("urn:veil:error:PP_ERR_TOKEN_REPLAYED");
    expect(atLeader(other)).toBe(0);

    // The same report with the same token is a retry: it lands (a leader ignores a repeated report id).
    const again = await sealedUpload(gateway.url, keyConfig, { path: uploadPath(task), body: report, authorization: token });
    expect(again.status).toBe(201);
    expect(atLeader(report)).toBe(reached ? 2 : 1);
    expect(leader.reports.get(task.idBase64Url)?.filter((r) => r.reportId === toHex(report.subarray(0, 16)))).toHaveLength(1);
  });

  it("logs no unexpected error for any of these faults", () => {
    expect(logs.lines.filter((l) => /"level":(50|60)/.test(l))).toEqual([]);
  });
});
