import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Task } from "@divviup/dap";
import {
  createDapHpkeKey,
  createDapTask,
  decodeReport,
  encodeHpkeConfigList,
  inputShareInfo,
  startDapAggregator,
  type DapAggregator,
  type DapTask,
} from "../../../demo/dap-aggregator.js";

let leader: DapAggregator;
let helper: DapAggregator;
let task: DapTask;

beforeAll(async () => {
  task = await createDapTask();
  leader = await startDapAggregator({ role: "leader", tasks: [task], leaderShareLength: 48 });
  helper = await startDapAggregator({ role: "helper", tasks: [task] });
});
afterAll(async () => {
  await leader.close();
  await helper.close();
});

function countTask(t: DapTask): Task<{ type: "count" }, boolean> {
  return new Task({ type: "count", id: t.idBase64Url, leader: leader.url, helper: helper.url, timePrecisionSeconds: 60 });
}

async function put(path: string, body: Uint8Array<ArrayBuffer>, contentType = "application/dap-report"): Promise<Response> {
  return fetch(new URL(path, leader.url), { method: "PUT", headers: { "content-type": contentType }, body });
}

describe("DAP-09 aggregator double", () => {
  it("builds the 20-byte HPKE info string of dap-09 for each role", () => {
    const info = inputShareInfo("leader");
    expect(new TextDecoder().decode(info.subarray(0, 18))).toBe("dap-09 input share");
    expect([...info.subarray(18)]).toEqual([1, 2]);
    expect([...inputShareInfo("helper").subarray(18)]).toEqual([1, 3]);
  });

  it("serves the HPKE config list with the exact media type and caching", async () => {
    const res = await fetch(new URL(`hpke_config?task_id=${task.idBase64Url}`, leader.url));
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/dap-hpke-config-list");
    expect(res.headers.get("cache-control")).toBe("max-age=86400");
    const body = new Uint8Array(await res.arrayBuffer());
    expect(body).toEqual(encodeHpkeConfigList([task.leaderKeys[0]!.config]));
    expect(body.length).toBe(2 + 9 + 32);
  });

  it("answers unrecognizedTask with the taskid and missingTaskID without one", async () => {
    const other = (await createDapTask()).idBase64Url;
    const res = await fetch(new URL(`hpke_config?task_id=${other}`, leader.url));
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(await res.json()).toMatchObject({ type: "urn:ietf:params:ppm:dap:error:unrecognizedTask", taskid: other });
    const missing = await fetch(new URL("hpke_config", leader.url));
    expect(await missing.json()).toMatchObject({ type: "urn:ietf:params:ppm:dap:error:missingTaskID" });
  });

  it("accepts reports from @divviup/dap, decrypting both shares, and ignores a duplicate", async () => {
    const t = countTask(task);
    const before = leader.acceptedCount();
    await t.sendMeasurement(true);
    expect(leader.acceptedCount()).toBe(before + 1);
    const stored = leader.reports.get(task.idBase64Url)!.at(-1)!;
    expect(stored.leaderShare.length).toBe(48);
    expect(stored.helperShare).toBeDefined();

    const report = await t.generateReport(false);
    const body = new Uint8Array(report.encode());
    expect((await put(`tasks/${task.idBase64Url}/reports`, body)).status).toBe(201);
    const again = await put(`tasks/${task.idBase64Url}/reports`, body);
    expect(again.status).toBe(201);
    expect(leader.acceptedCount()).toBe(before + 2);
    expect(leader.duplicates.at(-1)?.reportId).toBe(leader.reports.get(task.idBase64Url)!.at(-1)!.reportId);
    expect(leader.duplicates.length).toBe(1);
  });

  it("rejects a report with trailing bytes, a wrong media type and a bad task id", async () => {
    const t = countTask(task);
    const body = new Uint8Array((await t.generateReport(true)).encode());
    const trailing = new Uint8Array([...body, 0]);
    const res = await put(`tasks/${task.idBase64Url}/reports`, trailing);
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ type: "urn:ietf:params:ppm:dap:error:invalidMessage", taskid: task.idBase64Url });
    expect((await put(`tasks/${task.idBase64Url}/reports`, body, "application/octet-stream")).status).toBe(400);
    expect((await put(`tasks/short/reports`, body)).status).toBe(400);
    const post = await fetch(new URL(`tasks/${task.idBase64Url}/reports`, leader.url), { method: "POST", body });
    expect(post.status).toBe(405);
  });

  it("rejects every truncation of a report as invalidMessage", async () => {
    const body = new Uint8Array((await countTask(task).generateReport(true)).encode());
    expect(() => decodeReport(body)).not.toThrow();
    for (let n = 0; n < body.length; n++) {
      expect(() => decodeReport(body.subarray(0, n))).toThrow();
    }
  });

  it("rejects a share sealed for another task as reportRejected", async () => {
    const other = await createDapTask({ leaderConfigId: 1 });
    other.leaderKeys = task.leaderKeys;
    other.helperKeys = task.helperKeys;
    leader.addTask(other);
    const body = new Uint8Array((await countTask(task).generateReport(true)).encode());
    const res = await put(`tasks/${other.idBase64Url}/reports`, body);
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ type: "urn:ietf:params:ppm:dap:error:reportRejected", taskid: other.idBase64Url });
  });

  it("rejects reports from the far future as reportTooEarly", async () => {
    const body = new Uint8Array(
      (await countTask(task).generateReport(true, { timestamp: new Date(Date.now() + 3_600_000) })).encode(),
    );
    const res = await put(`tasks/${task.idBase64Url}/reports`, body);
    expect(await res.json()).toMatchObject({ type: "urn:ietf:params:ppm:dap:error:reportTooEarly" });
  });

  it("answers outdatedConfig after a key rotation, and @divviup/dap recovers by retrying", async () => {
    const rotated = await createDapTask();
    leader.addTask(rotated);
    helper.addTask(rotated);
    const t = countTask(rotated);
    await t.fetchKeyConfiguration();
    leader.rotateKey(rotated.idBase64Url, await createDapHpkeKey(7));
    leader.dropOldKeys(rotated.idBase64Url);
    const stale = new Uint8Array((await t.generateReport(true)).encode());
    const res = await put(`tasks/${rotated.idBase64Url}/reports`, stale);
    expect(await res.json()).toMatchObject({ type: "urn:ietf:params:ppm:dap:error:outdatedConfig", taskid: rotated.idBase64Url });
    await t.sendMeasurement(true);
    expect(leader.reports.get(rotated.idBase64Url)?.length).toBe(1);
  });

  it("does not accept uploads as a helper", async () => {
    const body = new Uint8Array((await countTask(task).generateReport(true)).encode());
    const res = await fetch(new URL(`tasks/${task.idBase64Url}/reports`, helper.url), {
      method: "PUT",
      headers: { "content-type": "application/dap-report" },
      body,
    });
    expect(await res.json()).toMatchObject({ type: "urn:ietf:params:ppm:dap:error:unrecognizedTask" });
  });
});
