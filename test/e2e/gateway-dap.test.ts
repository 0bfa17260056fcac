// End to end: @divviup/dap's Task (Prio3Count, Prio3Histogram) with its fetch replaced by a small
// oblivious fetch -> a listening gateway (keys from a real 0600 key file) -> the DAP-09 leader and
// helper doubles, which decrypt every report.

import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { DAPError, Task } from "@divviup/dap";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDapTask, startDapAggregator, type DapAggregator, type DapTask } from "../../demo/dap-aggregator.js";
import { parseGatewayConfig } from "../../gateway/config.js";
import { writeKeyFile } from "../../gateway/key-file.js";
import { startGateway, type StartedGateway } from "../../gateway/main.js";
import { createLogger } from "../../server/logging.js";
import { captureLines, makeKeyData } from "../helpers/gateway-fixture.js";
import { fetchKeyConfig, obliviousFetch } from "../helpers/oblivious-fetch.js";

let leader: DapAggregator;
let helper: DapAggregator;
let countTask: DapTask;
let histogramTask: DapTask;
let gateway: StartedGateway;
let keyFile: string;
let lines: string[];

beforeAll(async () => {
  countTask = await createDapTask();
  histogramTask = await createDapTask();
  leader = await startDapAggregator({ role: "leader", tasks: [countTask, histogramTask] });
  helper = await startDapAggregator({ role: "helper", tasks: [countTask, histogramTask] });
  keyFile = join(mkdtempSync(join(tmpdir(), "veil-gw-")), "keys.json");
  writeKeyFile(keyFile, (await makeKeyData([{ keyId: 1 }])).data);
  const config = parseGatewayConfig({
    listen: { host: "127.0.0.1", port: 0 },
    keys: keyFile,
    targets: { "https://leader.example/api/dap/": leader.url, "https://helper.example": helper.url },
    policy: "dap",
    tokens: { required: false },
    limits: { maxRequestBytes: 4096 },
  });
  const capture = captureLines();
  lines = capture.lines;
  gateway = await startGateway(config, { log: createLogger("gateway", { destination: capture.stream }), handleSignals: false });
});

afterAll(async () => {
  await gateway.stop();
  await leader.close();
  await helper.close();
});

const LEADER = "https://leader.example/api/dap";
const HELPER = "https://helper.example";

describe("end to end: @divviup/dap through the gateway to the DAP-09 leader double", () => {
  it("uploads Prio3Count reports that the leader decrypts", async () => {
    const keyConfig = await fetchKeyConfig(gateway.url);
    const calls: string[] = [];
    const t = new Task({ type: "count", id: countTask.idBase64Url, leader: LEADER, helper: HELPER, timePrecisionSeconds: 3600 });
    t.fetch = obliviousFetch({ gatewayUrl: gateway.url, keyConfig, calls });
    for (const m of [true, false, true]) await t.sendMeasurement(m);
    const stored = leader.reports.get(countTask.idBase64Url) ?? [];
    expect(stored.length).toBe(3);
    for (const r of stored) {
      expect(r.leaderShare.length).toBe(48);
      expect(r.helperShare).toBeDefined();
    }
    expect(calls[0]).toMatch(/^GET https:\/\/(leader|helper)\.example\/.*hpke_config\?task_id=/);
    expect(calls.filter((c) => c.startsWith("PUT https://leader.example/api/dap/tasks/")).length).toBe(3);
    expect(helper.counts.hpkeConfig).toBeGreaterThanOrEqual(1);
  });

  it("uploads Prio3Histogram reports that the leader decrypts", async () => {
    const keyConfig = await fetchKeyConfig(gateway.url);
    const t = new Task({ type: "histogram", length: 4, chunkLength: 2, id: histogramTask.idBase64Url, leader: LEADER, helper: HELPER, timePrecisionSeconds: 3600 });
    t.fetch = obliviousFetch({ gatewayUrl: gateway.url, keyConfig });
    for (const m of [0, 3, 1]) await t.sendMeasurement(m);
    const stored = leader.reports.get(histogramTask.idBase64Url) ?? [];
    expect(stored.length).toBe(3);
    expect(stored.every((r) => r.helperShare !== undefined)).toBe(true);
  });

  it("recovers from an aggregator key rotation through the sealed outdatedConfig problem", async () => {
    const keyConfig = await fetchKeyConfig(gateway.url);
    const rotated = await createDapTask();
    leader.addTask(rotated);
    helper.addTask(rotated);
    const t = new Task({ type: "count", id: rotated.idBase64Url, leader: LEADER, helper: HELPER, timePrecisionSeconds: 3600 });
    t.fetch = obliviousFetch({ gatewayUrl: gateway.url, keyConfig });
    await t.fetchKeyConfiguration();
    const { createDapHpkeKey } = await import("../../demo/dap-aggregator.js");
    leader.rotateKey(rotated.idBase64Url, await createDapHpkeKey(9));
    leader.dropOldKeys(rotated.idBase64Url);
    await t.sendMeasurement(true);
    expect(leader.rejections.get("outdatedConfig")).toBeGreaterThanOrEqual(1);
    expect(leader.reports.get(rotated.idBase64Url)?.length).toBe(1);
  });

  it("gives @divviup/dap a DAPError (not a TypeError) for a gateway refusal on a DAP path", async () => {
    const keyConfig = await fetchKeyConfig(gateway.url);
    const t = new Task({ type: "count", id: countTask.idBase64Url, leader: "https://elsewhere.example", helper: "https://helper.example", timePrecisionSeconds: 3600 });
    t.fetch = obliviousFetch({ gatewayUrl: gateway.url, keyConfig });
    const err = await t.sendMeasurement(true).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DAPError);
    expect((err as DAPError).shortType).toBe("GATEWAY_ERR_TARGET_FORBIDDEN");
    expect((err as DAPError).taskId.toString()).toBe(countTask.idBase64Url);
  });

  it("keeps serving while the key file is rotated and reloaded (SIGHUP), and old keys decrypt", async () => {
    const oldConfig = await fetchKeyConfig(gateway.url);
    const t = new Task({ type: "count", id: countTask.idBase64Url, leader: LEADER, helper: HELPER, timePrecisionSeconds: 3600 });
    t.fetch = obliviousFetch({ gatewayUrl: gateway.url, keyConfig: oldConfig });
    const before = leader.acceptedCount();
    // Rotate: key 2 becomes active, key 1 retired (still decrypts during the grace period).
    const { readKeyFile, addKey } = await import("../../gateway/key-file.js");
    const fresh = (await makeKeyData([{ keyId: 2 }])).data.keys[0]!;
    const { data } = addKey(readKeyFile(keyFile), fresh, { now: new Date() });
    writeKeyFile(keyFile, data);
    const uploads = Promise.all([1, 2, 3, 4].map(() => t.sendMeasurement(true)));
    await gateway.reloadKeys();
    await uploads;
    expect(leader.acceptedCount()).toBe(before + 4);
    const newConfig = await fetchKeyConfig(gateway.url);
    expect(newConfig.keyId).toBe(2);
    await t.sendMeasurement(false); // still with the retired key 1
    expect(leader.acceptedCount()).toBe(before + 5);
  });

  it("answers 413 while reading a chunked body over the limit", async () => {
    async function* chunks() {
      for (let i = 0; i < 8; i++) yield Buffer.alloc(1024, 1);
    }
    const res = await request(`${gateway.url}/gateway`, { method: "POST", body: Readable.from(chunks()), headers: { "content-type": "message/ohttp-req" } });
    expect(res.statusCode).toBe(413);
    expect(await res.body.json()).toMatchObject({ code: "HTTP_ERR_TOO_LARGE" });
  });

  it("never logs an address, a task id, a body or a key", () => {
    // The start-up lines name the gateway's own listening address; no other line has an address.
    const all = lines.filter((l) => !/listening/.test(l)).join("\n");
    expect(lines.filter((l) => l.includes('"msg":"request"')).length).toBeGreaterThan(10);
    for (const s of ["127.0.0.1:", countTask.idBase64Url, histogramTask.idBase64Url, "privateKey\":\"", "dap-report"]) {
      expect(all).not.toContain(s);
    }
  });
});
