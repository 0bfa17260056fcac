// A faithful DAP-09 leader/helper double (draft-ietf-ppm-dap-09 §4.4.1, §4.4.2). It decodes every upload strictly, checks the task, decrypts the
// leader's input share with HPKE and rejects what a real leader (Janus release/0.7) rejects. It
// does no VDAF preparation, aggregation or collection. Tests use it as the gateway's target; the
// demo (`npm start`) runs one as leader and one as helper.
// demo/dap18-aggregator.ts is its DAP-18 sibling; demo/dap-double.ts holds what both share.

import type { IncomingMessage, ServerResponse } from "node:http";
import { ByteReader, toBase64Url, toHex } from "../core/bytes.js";
import { DAP09_MEDIA_TYPES, type DapHpkeCiphertext } from "../core/dap/index.js";
import {
  Reject,
  TASK_ID,
  createDapHpkeKey,
  decodeHpkeCiphertext,
  encodeHpkeConfigList,
  inputShareInfoFor,
  listenDouble,
  openBase,
  routeDapRequest,
  send,
  firstSeen,
  openHelperShare,
  readUpload,
  storeReport,
  type DapDouble,
  type DapDoubleOptions,
  type DapHpkeKey,
  type DapRole,
  type DapRoutes,
  type ReceivedRequest,
} from "./dap-double.js";

export { DAP_ERROR_URN, DAP_ROLE, createDapHpkeKey, encodeHpkeConfigList } from "./dap-double.js";
export type { DapHpkeConfig, DapHpkeKey, DapRole, ReceivedRequest } from "./dap-double.js";

/** dap-09 §4.4.1: media type of an `HpkeConfigList`. @divviup/dap requires it without parameters. */
export const DAP_HPKE_CONFIG_LIST = DAP09_MEDIA_TYPES.hpkeConfigList;
/** dap-09 §4.4.2: media type of a `Report`. */
export const DAP_REPORT = DAP09_MEDIA_TYPES.report;

/** dap-09 §4.4.2: `"dap-09 input share" || 0x01 || server_role`. */
export function inputShareInfo(role: DapRole): Uint8Array {
  return inputShareInfoFor("09", role);
}

/** A DAP task as both aggregators know it: its id and each aggregator's HPKE keys. */
export interface DapTask {
  /** 32-byte TaskID (dap-09 §4.1). */
  id: Uint8Array;
  /** Unpadded base64url of `id`, as it appears in URLs and problem documents. */
  idBase64Url: string;
  /** Leader keys: the first is served; the others are "recently rotated" and still accepted. */
  leaderKeys: DapHpkeKey[];
  helperKeys: DapHpkeKey[];
  /** dap-09 `task_expiration`, seconds since the epoch; reports after it are rejected. */
  expirationSec?: number;
}

/** Makes a task with a random id (unless given) and one fresh X25519 key per aggregator. */
export async function createDapTask(
  opts: { id?: Uint8Array; leaderConfigId?: number; helperConfigId?: number; expirationSec?: number } = {},
): Promise<DapTask> {
  const id = opts.id ?? crypto.getRandomValues(new Uint8Array(32));
  if (id.length !== 32) throw new RangeError("task id must be 32 bytes");
  const task: DapTask = {
    id,
    idBase64Url: toBase64Url(id, false),
    leaderKeys: [await createDapHpkeKey(opts.leaderConfigId ?? 1)],
    helperKeys: [await createDapHpkeKey(opts.helperConfigId ?? 2)],
  };
  if (opts.expirationSec !== undefined) task.expirationSec = opts.expirationSec;
  return task;
}

/** A report the leader accepted, with its decrypted leader input share. */
export interface AcceptedReport {
  taskId: string;
  reportId: string;
  /** dap-09 `Time`: seconds since the epoch. */
  time: number;
  publicShare: Uint8Array;
  /** The decoded `PlaintextInputShare.payload` of the leader (the VDAF leader share). */
  leaderShare: Uint8Array;
  /** The helper's share, decrypted too when this double holds the helper key (it always does). */
  helperShare: Uint8Array | undefined;
}

/**
 * dap-09: a report too far in the future gets `reportTooEarly` (dap-09 §4.4.2); a replay gets
 * Janus's silent 2xx, or `reportRejected` (a MAY) with `duplicates: "reject"`.
 */
export interface DapAggregatorOptions extends DapDoubleOptions {
  tasks?: DapTask[];
  /** Status of a successful upload: 201 (dap-09) by default; Janus answers 200. */
  uploadStatus?: number;
  /**
   * Keep every accepted report in `reports` (default true, for tests). The demo (`npm start`)
   * turns it off and aggregates through `onAccepted` instead, so memory does not grow per report.
   */
  keepReports?: boolean;
  /** Called with each newly accepted report, after it was stored and before the answer is sent. */
  onAccepted?: (report: AcceptedReport) => void;
}

export interface DapAggregator extends DapDouble<AcceptedReport> {
  /** Duplicate uploads seen (ignored, not counted again). */
  readonly duplicates: { taskId: string; reportId: string }[];
  /** The encoded HpkeConfigList this aggregator serves for `task`. */
  hpkeConfigList(task: DapTask | string): Uint8Array;
  addTask(task: DapTask): void;
  /** Adds a new current key for this aggregator's role; the old ones stay accepted (rotation). */
  rotateKey(taskId: string, key: DapHpkeKey): void;
  /** Forgets every key but the current one: old config ids then get `outdatedConfig`. */
  dropOldKeys(taskId: string): void;
}

const TITLES: Readonly<Record<string, string>> = {
  invalidMessage: "A message received by a protocol participant could not be parsed or otherwise was invalid.",
  unrecognizedTask: "An endpoint received a message with an unknown task ID.",
  outdatedConfig: "The message was generated using an outdated configuration.",
  reportRejected: "Report could not be processed for an unspecified reason.",
  reportTooEarly: "Report could not be processed because its timestamp is too far in the future.",
  missingTaskID: "HPKE configuration was requested without specifying a task ID.",
};

/*
 * dap-09 §4.4.2:
 *   struct { ReportID report_id; Time time; } ReportMetadata;          // 16 + 8 bytes
 *   struct { HpkeConfigId config_id; opaque enc<1..2^16-1>; opaque payload<1..2^32-1>; } HpkeCiphertext;
 *   struct {
 *     ReportMetadata report_metadata;
 *     opaque public_share<0..2^32-1>;
 *     HpkeCiphertext leader_encrypted_input_share;
 *     HpkeCiphertext helper_encrypted_input_share;
 *   } Report;
 */
interface DecodedReport {
  reportId: Uint8Array;
  time: bigint;
  publicShare: Uint8Array;
  /** `report_id || time || u32 len || public_share`: the part of InputShareAad after task_id. */
  aadTail: Uint8Array;
  leader: DapHpkeCiphertext;
  helper: DapHpkeCiphertext;
}

export function decodeReport(body: Uint8Array): DecodedReport {
  const r = new ByteReader(body, "HTTP_ERR_BAD_REQUEST", "HTTP_ERR_BAD_REQUEST");
  const reportId = r.bytes(16, "report_id");
  const time = r.u64("time");
  const publicShare = r.bytes(r.u32("public_share length"), "public_share");
  const aadTail = body.subarray(0, r.offset);
  const leader = decodeHpkeCiphertext(r, "leader");
  const helper = decodeHpkeCiphertext(r, "helper");
  r.end("Report");
  return { reportId, time, publicShare, aadTail, leader, helper };
}

/*
 * dap-09 §4.4.2:
 *   struct { Extension extensions<0..2^16-1>; opaque payload<0..2^32-1>; } PlaintextInputShare;
 *   struct { ExtensionType extension_type; opaque extension_data<0..2^16-1>; } Extension;
 */
export function decodePlaintextInputShare(b: Uint8Array): { extensions: number[]; payload: Uint8Array } {
  const r = new ByteReader(b, "HTTP_ERR_BAD_REQUEST", "HTTP_ERR_BAD_REQUEST");
  const ext = new ByteReader(r.bytes(r.u16("extensions length"), "extensions"), "HTTP_ERR_BAD_REQUEST", "HTTP_ERR_BAD_REQUEST");
  const extensions: number[] = [];
  while (!ext.done) {
    extensions.push(ext.u16("extension_type"));
    ext.bytes(ext.u16("extension_data length"), "extension_data");
  }
  const payload = r.bytes(r.u32("payload length"), "payload");
  r.end("PlaintextInputShare");
  return { extensions, payload };
}

function openShare(key: DapHpkeKey, role: DapRole, ct: DapHpkeCiphertext, aad: Uint8Array): Promise<Uint8Array> {
  return openBase(key, inputShareInfo(role), ct.enc, ct.payload, aad);
}


/** Starts the double; `await close()` stops it. */
export async function startDapAggregator(opts: DapAggregatorOptions): Promise<DapAggregator> {
  const role = opts.role;
  const now = opts.now ?? Date.now;
  const skewSec = opts.tolerableClockSkewSec ?? 300;
  const maxBody = opts.maxBodyBytes ?? 1 << 20;
  const maxRecorded = opts.maxRecorded ?? 10_000;
  const tasks = new Map<string, DapTask>();
  for (const t of opts.tasks ?? []) tasks.set(t.idBase64Url, t);
  const reports = new Map<string, AcceptedReport[]>();
  const seen = new Set<string>();
  const duplicates: { taskId: string; reportId: string }[] = [];
  const rejections = new Map<string, number>();
  const received: ReceivedRequest[] = [];
  const counts = { hpkeConfig: 0, uploads: 0, accepted: 0 };

  const keysOf = (t: DapTask): DapHpkeKey[] => (role === "leader" ? t.leaderKeys : t.helperKeys);
  const configList = (t: DapTask): Uint8Array => {
    const current = keysOf(t)[0];
    if (current === undefined) throw new Error(`task ${t.idBase64Url} has no ${role} key`);
    return encodeHpkeConfigList([current.config]);
  };

  function handleHpkeConfig(url: URL, res: ServerResponse): void {
    counts.hpkeConfig++;
    const taskId = url.searchParams.get("task_id");
    if (taskId === null) throw new Reject(400, "missingTaskID", "task_id query parameter is required");
    const task = tasks.get(taskId);
    if (task === undefined) {
      throw new Reject(400, "unrecognizedTask", "unknown task", TASK_ID.test(taskId) ? taskId : undefined);
    }
    send(
      res,
      200,
      // Exact media type (no parameters) and the caching the draft recommends (§4.4.1).
      { "content-type": DAP_HPKE_CONFIG_LIST, "cache-control": "max-age=86400" },
      configList(task),
    );
  }

  async function handleUpload(taskIdText: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    counts.uploads++;
    // 1. Exact media type, 2. a task id of 32 bytes (Janus: bare 400s).
    const mediaTypeOk = req.headers["content-type"] === DAP_REPORT;
    const body = await readUpload(req, taskIdText, { mediaTypeOk, mediaType: DAP_REPORT, problemType: undefined, maxBodyBytes: maxBody });
    // 3. Task lookup; a helper leads no task, so it recognises none for uploads (Janus).
    const task = tasks.get(taskIdText);
    if (task === undefined || role !== "leader") {
      throw new Reject(400, "unrecognizedTask", "unknown task", taskIdText);
    }
    // 4. Strict decode.
    let report: DecodedReport;
    try {
      report = decodeReport(body);
    } catch (e) {
      if (e instanceof Reject) throw new Reject(e.status, e.problemType, e.message, taskIdText);
      throw new Reject(400, "invalidMessage", (e as Error).message, taskIdText);
    }
    // 5. Time checks.
    const nowSec = BigInt(Math.floor(now() / 1000));
    if (report.time > nowSec + BigInt(skewSec)) {
      throw new Reject(400, "reportTooEarly", "report time is in the future", taskIdText);
    }
    if (task.expirationSec !== undefined && report.time > BigInt(task.expirationSec)) {
      throw new Reject(400, "reportRejected", "task expired", taskIdText);
    }
    // 6. The leader's config id must be one of ours.
    const key = task.leaderKeys.find((k) => k.config.id === report.leader.configId);
    if (key === undefined) throw new Reject(400, "outdatedConfig", "unknown HPKE config id", taskIdText);
    // 7. Decrypt: aad = task_id || ReportMetadata || opaque32(public_share).
    const aad = new Uint8Array(32 + report.aadTail.length);
    aad.set(task.id);
    aad.set(report.aadTail, 32);
    let leaderPlain: Uint8Array;
    try {
      leaderPlain = await openShare(key, "leader", report.leader, aad);
    } catch {
      throw new Reject(400, "reportRejected", "leader input share could not be decrypted", taskIdText);
    }
    // 8. PlaintextInputShare: no extensions (dap-09's registry has none usable).
    let leaderShare: Uint8Array;
    try {
      const pt = decodePlaintextInputShare(leaderPlain);
      if (pt.extensions.length > 0) throw new Reject(400, "invalidMessage", "unrecognized extension");
      leaderShare = pt.payload;
    } catch (e) {
      if (e instanceof Reject) throw new Reject(e.status, e.problemType, e.message, taskIdText);
      throw new Reject(400, "invalidMessage", "leader input share is malformed", taskIdText);
    }
    if (opts.leaderShareLength !== undefined && leaderShare.length !== opts.leaderShareLength) {
      throw new Reject(400, "reportRejected", "leader share has the wrong length", taskIdText);
    }
    // 12 (stronger than a leader): open the helper's share with role 0x03 and the same AAD.
    let helperShare: Uint8Array | undefined;
    try {
      helperShare = await openHelperShare(task.helperKeys, report.helper, inputShareInfo("helper"), aad, (pt) => decodePlaintextInputShare(pt).payload);
    } catch {
      throw new Reject(400, "reportRejected", "helper input share could not be decrypted", taskIdText);
    }
    // 9. Replay: ignore (do not count again), answer like Janus unless told to reject.
    const reportId = toHex(report.reportId);
    if (!firstSeen(seen, taskIdText, reportId)) {
      duplicates.push({ taskId: taskIdText, reportId });
      if (opts.duplicates === "reject") throw new Reject(400, "reportRejected", "duplicate report id", taskIdText);
      send(res, opts.uploadStatus ?? 201, {});
      return;
    }
    // 10. Store and answer 201 Created.
    const accepted: AcceptedReport = {
      taskId: taskIdText,
      reportId,
      time: Number(report.time),
      publicShare: report.publicShare.slice(),
      leaderShare: leaderShare.slice(),
      helperShare: helperShare?.slice(),
    };
    if (opts.keepReports !== false) storeReport(reports, taskIdText, accepted);
    counts.accepted++;
    opts.onAccepted?.(accepted);
    send(res, opts.uploadStatus ?? 201, {});
  }

  const routes: DapRoutes = {
    uploadMethod: "PUT",
    hpkeConfig: handleHpkeConfig,
    upload: handleUpload,
    titles: TITLES,
    rejections,
  };
  const handle = (req: IncomingMessage, res: ServerResponse): Promise<void> => routeDapRequest(req, res, routes);

  const listening = await listenDouble(opts, received, maxRecorded, handle);

  return {
    role,
    url: listening.url,
    port: listening.port,
    reports,
    duplicates,
    rejections,
    received,
    counts,
    hpkeConfigList(task: DapTask | string): Uint8Array {
      const t = typeof task === "string" ? tasks.get(task) : task;
      if (t === undefined) throw new Error("unknown task");
      return configList(t);
    },
    addTask(task: DapTask): void {
      tasks.set(task.idBase64Url, task);
    },
    rotateKey(taskId: string, key: DapHpkeKey): void {
      const t = tasks.get(taskId);
      if (t === undefined) throw new Error("unknown task");
      keysOf(t).unshift(key);
    },
    dropOldKeys(taskId: string): void {
      const t = tasks.get(taskId);
      if (t === undefined) throw new Error("unknown task");
      keysOf(t).splice(1);
    },
    acceptedCount(): number {
      return counts.accepted;
    },
    close: () => listening.close(),
  };
}
