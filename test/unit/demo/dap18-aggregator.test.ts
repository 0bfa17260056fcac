// The DAP-18 leader/helper double: reports sealed with real HPKE to its keys (random VDAF shares),
// the TaskConfiguration encoding against Janus's vector, and each of its answers: 200 empty, 200
// with UploadErrors, the unrecognizedTask and invalidMessage problems, and Janus's bare 400s.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ByteWriter, concatBytes, fromHex, toHex } from "../../../core/bytes.js";
import { encodeUploadRequest, type Dap18Report } from "../../../core/dap/index.js";
import { createDapHpkeKey, type DapHpkeKey } from "../../../demo/dap-double.js";
import {
  REPORT_ERROR,
  createDap18Task,
  decodeUploadErrors,
  encodeTaskConfiguration,
  inputShareInfo18,
  sealReport18,
  startDap18Aggregator,
  type Dap18Aggregator,
  type Dap18ReportInput,
  type Dap18Task,
} from "../../../demo/dap18-aggregator.js";

const NOW_MS = Date.UTC(2026, 0, 1, 12);
const HOUR = 3600n;
const nowUnits = BigInt(NOW_MS / 1000) / HOUR;

let keys: { leader: DapHpkeKey[]; helper: DapHpkeKey[] };
let task: Dap18Task;
let leader: Dap18Aggregator;
let helper: Dap18Aggregator;

beforeAll(async () => {
  keys = { leader: [await createDapHpkeKey(7)], helper: [await createDapHpkeKey(9)] };
  task = createDap18Task({
    configuration: {
      timePrecisionSec: 3600,
      // task_interval: [now - 10 h, now + 10 h) in hours.
      extensions: [{ type: 1, data: new ByteWriter().u64(nowUnits - 10n).u64(20n).finish().slice() }],
    },
  });
  leader = await startDap18Aggregator({ role: "leader", keys, tasks: [task], now: () => NOW_MS, leaderShareLength: 48 });
  helper = await startDap18Aggregator({ role: "helper", keys, tasks: [task], now: () => NOW_MS });
});
afterAll(async () => {
  await leader.close();
  await helper.close();
});

const random = (n: number): Uint8Array => crypto.getRandomValues(new Uint8Array(n));
function seal(input: Partial<Dap18ReportInput> = {}, t: Dap18Task = task): Promise<Dap18Report> {
  return sealReport18(t, keys.leader[0]!.config, keys.helper[0]!.config, { time: nowUnits, leaderShare: random(48), helperShare: random(32), ...input });
}
function post(body: Uint8Array, o: { taskId?: string; contentType?: string } = {}): Promise<Response> {
  return fetch(new URL(`tasks/${o.taskId ?? task.idBase64Url}/reports`, leader.url), {
    method: "POST",
    headers: { "content-type": o.contentType ?? "application/ppm-dap;message=upload-req" },
    body: new Uint8Array(body),
  });
}
async function uploadErrors(res: Response): Promise<{ reportId: string; error: number }[]> {
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe("application/ppm-dap;message=upload-errors");
  return decodeUploadErrors(new Uint8Array(await res.arrayBuffer()));
}

describe("DAP-18 aggregator double", () => {
  it("encodes the TaskConfiguration exactly as Janus's vector", () => {
    // Janus main, messages/src/tests/task.rs `roundtrip_task_configuration` (first case).
    const encoded = encodeTaskConfiguration({
      taskInfo: new TextEncoder().encode("foobar"),
      leaderEndpoint: "https://example.com/",
      helperEndpoint: "https://another.example.com/",
      timePrecisionSec: 3600,
      minBatchSize: 10000,
      batchMode: 1,
      batchConfig: new Uint8Array(0),
      vdafType: 1,
      vdafConfiguration: new Uint8Array(0),
      extensions: [{ type: 1, data: fromHex("0000000000000115000000000000001C") }],
    });
    expect(toHex(encoded)).toBe(
      (
        "06666F6F626172" + "001468747470733A2F2F6578616D706C652E636F6D2F" + "001C68747470733A2F2F616E6F746865722E6578616D706C652E636F6D2F" +
        "0000000000000E10" + "0000000000002710" + "01" + "0000" + "00000001" + "0000" + "0014" + "0001" + "0010" + "0000000000000115000000000000001C"
      ).toLowerCase(),
    );
  });

  it("builds the 20-byte HPKE info string of dap-18 for each role", () => {
    expect(new TextDecoder().decode(inputShareInfo18("leader").subarray(0, 18))).toBe("dap-18 input share");
    expect([...inputShareInfo18("leader").subarray(18)]).toEqual([1, 2]);
    expect([...inputShareInfo18("helper").subarray(18)]).toEqual([1, 3]);
  });

  it("serves its HPKE config list without a task id, with the DAP-18 media type", async () => {
    const res = await fetch(new URL("hpke_config", helper.url));
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/ppm-dap;message=hpke-config-list");
    expect(res.headers.get("cache-control")).toBe("max-age=86400");
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(helper.hpkeConfigList());
    expect((await fetch(new URL("hpke_config", leader.url), { method: "POST" })).status).toBe(405);
  });

  it("accepts several reports in one upload with 200 and an empty body, opening both shares", async () => {
    const reports = [await seal(), await seal(), await seal()];
    const before = leader.acceptedCount();
    const res = await post(encodeUploadRequest(reports));
    expect(res.status).toBe(200);
    expect((await res.arrayBuffer()).byteLength).toBe(0);
    expect(leader.acceptedCount()).toBe(before + 3);
    const stored = leader.reports.get(task.idBase64Url)!.slice(-3);
    expect(stored.map((r) => r.reportId)).toEqual(reports.map((r) => toHex(r.metadata.reportId)));
    expect(stored.every((r) => r.leaderShare.length === 48 && r.helperShare?.length === 32)).toBe(true);
  });

  it("accepts an empty upload (zero reports), as Janus does", async () => {
    const res = await post(new Uint8Array(0));
    expect(res.status).toBe(200);
    expect((await res.arrayBuffer()).byteLength).toBe(0);
  });

  it("lists per-report errors in request order: outdated config, too early, task interval, decryption", async () => {
    const good = await seal();
    const otherKey = await createDapHpkeKey(200);
    const outdated = await sealReport18(task, otherKey.config, keys.helper[0]!.config, { time: nowUnits, leaderShare: random(48), helperShare: random(32) });
    const early = await seal({ time: nowUnits + 2n });
    const notStarted = await seal({ time: nowUnits - 11n });
    // A report sealed with the AAD of builds before draft-18 (no task configuration) does not open.
    const oldAad = await seal({ aadWithTaskConfiguration: false });
    const res = await post(encodeUploadRequest([outdated, good, early, notStarted, oldAad]));
    expect(await uploadErrors(res)).toEqual([
      { reportId: toHex(outdated.metadata.reportId), error: REPORT_ERROR.outdated_config },
      { reportId: toHex(early.metadata.reportId), error: REPORT_ERROR.report_too_early },
      { reportId: toHex(notStarted.metadata.reportId), error: REPORT_ERROR.task_not_started },
      { reportId: toHex(oldAad.metadata.reportId), error: REPORT_ERROR.hpke_decrypt_error },
    ]);
    expect(leader.reports.get(task.idBase64Url)!.at(-1)!.reportId).toBe(toHex(good.metadata.reportId));
    // A task whose interval ended at the start of this hour (exclusive end): task_expired.
    const late = createDap18Task({ configuration: { extensions: [{ type: 1, data: new ByteWriter().u64(0n).u64(nowUnits).finish().slice() }] } });
    leader.addTask(late);
    const r = await seal({ time: nowUnits }, late);
    expect(await uploadErrors(await post(encodeUploadRequest([r]), { taskId: late.idBase64Url }))).toEqual([
      { reportId: toHex(r.metadata.reportId), error: REPORT_ERROR.task_expired },
    ]);
  });

  it("refuses a report sealed for another task configuration, and a report with an extension", async () => {
    const twin = createDap18Task({ id: task.id, configuration: { ...task.configuration, minBatchSize: 101 } });
    const wrongConfig = await seal({}, twin);
    const withExtension = await seal({ publicExtensions: [{ type: 0xff00, data: new Uint8Array(0) }] });
    const wrongShare = await seal({ leaderShare: random(47) });
    expect(await uploadErrors(await post(encodeUploadRequest([wrongConfig, withExtension, wrongShare])))).toEqual([
      { reportId: toHex(wrongConfig.metadata.reportId), error: REPORT_ERROR.hpke_decrypt_error },
      { reportId: toHex(withExtension.metadata.reportId), error: REPORT_ERROR.invalid_message },
      { reportId: toHex(wrongShare.metadata.reportId), error: REPORT_ERROR.invalid_message },
    ]);
  });

  it("drops a replayed report silently by default, and says report_replayed when told to", async () => {
    const r = await seal();
    const body = encodeUploadRequest([r]);
    expect((await post(body)).status).toBe(200);
    const before = leader.acceptedCount();
    const again = await post(body);
    expect(again.status).toBe(200);
    expect((await again.arrayBuffer()).byteLength).toBe(0);
    expect(leader.acceptedCount()).toBe(before);
    const strict = await startDap18Aggregator({ role: "leader", keys, tasks: [task], now: () => NOW_MS, duplicates: "reject" });
    try {
      const send = (): Promise<Response> =>
        fetch(new URL(`tasks/${task.idBase64Url}/reports`, strict.url), { method: "POST", headers: { "content-type": "application/ppm-dap;message=upload-req" }, body: new Uint8Array(body) });
      expect((await send()).status).toBe(200);
      expect(await uploadErrors(await send())).toEqual([{ reportId: toHex(r.metadata.reportId), error: REPORT_ERROR.report_replayed }]);
    } finally {
      await strict.close();
    }
  });

  it("answers unrecognizedTask and invalidMessage as problem documents with the taskid", async () => {
    const other = createDap18Task();
    const res = await post(encodeUploadRequest([await seal()]), { taskId: other.idBase64Url });
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(await res.json()).toMatchObject({ type: "urn:ietf:params:ppm:dap:error:unrecognizedTask", taskid: other.idBase64Url });
    const before = leader.acceptedCount();
    const good = encodeUploadRequest([await seal()]);
    for (const bad of [concatBytes(good, new Uint8Array([0])), good.subarray(0, good.length - 1)]) {
      const r = await post(bad);
      expect(r.status).toBe(400);
      expect(await r.json()).toMatchObject({ type: "urn:ietf:params:ppm:dap:error:invalidMessage", taskid: task.idBase64Url });
    }
    // A malformed upload stores nothing, not even its well-formed first report.
    expect(leader.acceptedCount()).toBe(before);
    // A helper leads no task.
    const h = await fetch(new URL(`tasks/${task.idBase64Url}/reports`, helper.url), { method: "POST", headers: { "content-type": "application/ppm-dap;message=upload-req" }, body: new Uint8Array(good) });
    expect(await h.json()).toMatchObject({ type: "urn:ietf:params:ppm:dap:error:unrecognizedTask" });
  });

  it("refuses the DAP-09 forms and a bad task id like Janus: 405 for PUT, 400 about:blank otherwise", async () => {
    const body = encodeUploadRequest([await seal()]);
    const put = await fetch(new URL(`tasks/${task.idBase64Url}/reports`, leader.url), { method: "PUT", headers: { "content-type": "application/dap-report" }, body: new Uint8Array(body) });
    expect(put.status).toBe(405);
    const wrongType = await post(body, { contentType: "application/dap-report" });
    expect(wrongType.status).toBe(400);
    expect(await wrongType.json()).toMatchObject({ type: "about:blank" });
    const badId = await post(body, { taskId: "not-a-task-id" });
    expect(await badId.json()).toMatchObject({ type: "about:blank", detail: "invalid TaskId" });
    expect((await post(body, { contentType: "application/ppm-dap;message=upload-req;version=18" })).status).toBe(200);
  });
});
