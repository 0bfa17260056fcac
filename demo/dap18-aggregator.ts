// A faithful DAP-18 leader/helper double (draft-ietf-ppm-dap-18 §4.4: HPKE configuration request
// and upload), the sibling of the DAP-09 one in dap-aggregator.ts. It decodes every upload body
// strictly (its own decoder, independent of the gateway's framing walk in core/dap, so each checks
// the other), opens each report's leader input share with DAP-18's HPKE info string and AAD (the
// AAD includes the encoded TaskConfiguration, as published draft-18 gives it) and answers as DAP-18
// says: 200 with an empty body when every report is accepted, 200 with an UploadErrors document
// listing per-report ReportError codes otherwise, and the problem documents DAP-18 still has for
// the whole request (unrecognizedTask, invalidMessage). It does no VDAF verification, aggregation
// or collection. It also holds the client half used by tests: TaskConfiguration encoding and
// sealing a Report to the aggregators' keys.
//
// Where it follows Janus (main branch, the DAP-18 leader) rather than a choice the draft leaves
// open: the upload is decoded whole before any report is handled; an empty upload (zero reports)
// is accepted; a bad media type or task id in the path gets a 400 `about:blank` problem; reports
// are checked in Janus's order (too early, task interval, config id, decryption, decoding,
// extensions, replay). Where Janus departs from the published draft the double follows the draft:
// an unknown leader config id is `outdated_config` (11), where Janus answers
// `hpke_unknown_config_id` (4).

import type { IncomingMessage, ServerResponse } from "node:http";
import { ByteReader, ByteWriter, toBase64Url, toHex } from "../core/bytes.js";
import { DAP18_MEDIA_TYPES, encodeReportMetadata, isPpmDapMessage, type Dap18Report, type Dap18ReportMetadata, type DapExtension, type DapHpkeCiphertext } from "../core/dap/index.js";
import {
  Reject,
  TEXT,
  firstSeen,
  openHelperShare,
  readUpload,
  storeReport,
  type DapDouble,
  type DapDoubleOptions,
  decodeHpkeCiphertext,
  encodeHpkeConfigList,
  inputShareInfoFor,
  listenDouble,
  openBase,
  sealBase,
  routeDapRequest,
  send,
  type DapHpkeConfig,
  type DapHpkeKey,
  type DapRole,
  type DapRoutes,
  type ReceivedRequest,
} from "./dap-double.js";

/** dap-18 §4.4.2.1: `"dap-18 input share" || 0x01 || server_role`. */
export function inputShareInfo18(role: DapRole): Uint8Array {
  return inputShareInfoFor("18", role);
}

/*
 * dap-18 §4.1:
 *   enum { reserved(0), batch_collected(1), report_replayed(2), report_dropped(3),
 *          hpke_unknown_config_id(4), hpke_decrypt_error(5), vdaf_verify_error(6), task_expired(7),
 *          invalid_message(8), report_too_early(9), task_not_started(10), outdated_config(11),
 *          (255) } ReportError;
 */
export const REPORT_ERROR = Object.freeze({
  batch_collected: 1,
  report_replayed: 2,
  report_dropped: 3,
  hpke_unknown_config_id: 4,
  hpke_decrypt_error: 5,
  vdaf_verify_error: 6,
  task_expired: 7,
  invalid_message: 8,
  report_too_early: 9,
  task_not_started: 10,
  outdated_config: 11,
});
export type ReportErrorName = keyof typeof REPORT_ERROR;

/*
 * dap-18 §4.2 ("Task Configuration"):
 *   struct {
 *     opaque task_info<1..2^8-1>;
 *     Url leader_aggregator_endpoint;          // opaque Url<1..2^16-1>
 *     Url helper_aggregator_endpoint;
 *     TimePrecision time_precision;            // uint64 seconds
 *     uint64 min_batch_size;
 *     BatchMode batch_mode;                    // uint8: time_interval(1), leader_selected(2)
 *     opaque batch_config<0..2^16-1>;
 *     VdafType vdaf_type;                      // uint32 (VDAF registry: Prio3Count = 1)
 *     opaque vdaf_configuration<0..2^16-1>;
 *     TaskExtension extensions<0..2^16-1>;     // { uint16 extension_type; opaque extension_data<0..2^16-1>; }
 *   } TaskConfiguration;
 */
export interface Dap18TaskConfiguration {
  taskInfo: Uint8Array;
  leaderEndpoint: string;
  helperEndpoint: string;
  timePrecisionSec: number;
  minBatchSize: number;
  batchMode: number;
  batchConfig: Uint8Array;
  vdafType: number;
  vdafConfiguration: Uint8Array;
  /** Strictly increasing types. The double knows only task_interval (1). */
  extensions: readonly DapExtension[];
}

/** dap-18 §4.2.3: the task_interval task extension. */
export const TASK_INTERVAL_EXTENSION = 1;

export function encodeTaskConfiguration(c: Dap18TaskConfiguration): Uint8Array {
  const leader = TEXT.encode(c.leaderEndpoint);
  const helper = TEXT.encode(c.helperEndpoint);
  if (c.taskInfo.length < 1 || c.taskInfo.length > 0xff) throw new RangeError("task_info: 1..255 bytes");
  if (leader.length < 1 || helper.length < 1) throw new RangeError("aggregator endpoints must not be empty");
  const ext = new ByteWriter();
  for (const e of c.extensions) ext.u16(e.type).u16(e.data.length).bytes(e.data);
  const extensions = ext.finish();
  return new ByteWriter()
    .u8(c.taskInfo.length)
    .bytes(c.taskInfo)
    .u16(leader.length)
    .bytes(leader)
    .u16(helper.length)
    .bytes(helper)
    .u64(BigInt(c.timePrecisionSec))
    .u64(BigInt(c.minBatchSize))
    .u8(c.batchMode)
    .u16(c.batchConfig.length)
    .bytes(c.batchConfig)
    .u32(c.vdafType)
    .u16(c.vdafConfiguration.length)
    .bytes(c.vdafConfiguration)
    .u16(extensions.length)
    .bytes(extensions)
    .finish()
    .slice();
}

/** A DAP-18 task as both aggregators and the client know it. */
export interface Dap18Task {
  /** 32-byte TaskID. */
  id: Uint8Array;
  idBase64Url: string;
  configuration: Dap18TaskConfiguration;
  /** encodeTaskConfiguration(configuration): part of every InputShareAad of the task. */
  encodedConfiguration: Uint8Array;
  /** From the task_interval extension, in time_precision units: [start, end). */
  interval?: { start: bigint; end: bigint };
}

/** A task with a random id (unless given): Prio3Count, time-interval batches, an hour's precision. */
export function createDap18Task(opts: { id?: Uint8Array; configuration?: Partial<Dap18TaskConfiguration> } = {}): Dap18Task {
  const id = opts.id ?? crypto.getRandomValues(new Uint8Array(32));
  if (id.length !== 32) throw new RangeError("task id must be 32 bytes");
  const configuration: Dap18TaskConfiguration = {
    taskInfo: TEXT.encode("veil demo"),
    leaderEndpoint: "https://leader.example/",
    helperEndpoint: "https://helper.example/",
    timePrecisionSec: 3600,
    minBatchSize: 100,
    batchMode: 1,
    batchConfig: new Uint8Array(0),
    vdafType: 1,
    vdafConfiguration: new Uint8Array(0),
    extensions: [],
    ...opts.configuration,
  };
  const task: Dap18Task = { id, idBase64Url: toBase64Url(id, false), configuration, encodedConfiguration: encodeTaskConfiguration(configuration) };
  let previous = -1;
  for (const e of configuration.extensions) {
    // dap-18 §4.2.2: strictly increasing, and participants MUST NOT take part in a task with an
    // extension they do not recognise.
    if (e.type <= previous) throw new RangeError("task extensions must be in strictly increasing order");
    previous = e.type;
    if (e.type !== TASK_INTERVAL_EXTENSION || e.data.length !== 16) throw new RangeError(`unsupported task extension ${e.type}`);
    const r = new ByteReader(e.data, "DAP_ERR_FORMAT", "DAP_ERR_FORMAT");
    const start = r.u64();
    task.interval = { start, end: start + r.u64() };
  }
  return task;
}

/*
 * dap-18 §4.4.2.1:
 *   struct { TaskID task_id; TaskConfiguration task_configuration; ReportMetadata report_metadata;
 *            opaque public_share<0..2^32-1>; } InputShareAad;
 * Builds before draft-18's change (#774) left `task_configuration` out; `withTaskConfiguration:
 * false` makes that older AAD (tests show the double refuses it).
 */
export function encodeInputShareAad(
  task: Dap18Task,
  metadata: Uint8Array,
  publicShare: Uint8Array,
  withTaskConfiguration = true,
): Uint8Array {
  const w = new ByteWriter(64 + task.encodedConfiguration.length + metadata.length + publicShare.length).bytes(task.id);
  if (withTaskConfiguration) w.bytes(task.encodedConfiguration);
  return w.bytes(metadata).u32(publicShare.length).bytes(publicShare).finish().slice();
}

/*
 * dap-18 §4.4.2.1:
 *   struct { Extension private_extensions<0..2^16-1>; opaque payload<1..2^32-1>; } PlaintextInputShare;
 */
export function encodePlaintextInputShare(privateExtensions: readonly DapExtension[], payload: Uint8Array): Uint8Array {
  const ext = new ByteWriter();
  for (const e of privateExtensions) ext.u16(e.type).u16(e.data.length).bytes(e.data);
  const list = ext.finish();
  return new ByteWriter().u16(list.length).bytes(list).u32(payload.length).bytes(payload).finish().slice();
}

/**
 * Strict framing: whole Extensions, nothing left over. Their order (strictly increasing types,
 * dap-18 §4.5.1.4) is a per-report matter, so it is reported rather than thrown.
 */
function decodeExtensions(bytes: Uint8Array): { types: number[]; inOrder: boolean } {
  const r = new ByteReader(bytes, "DAP_ERR_FORMAT", "DAP_ERR_FORMAT");
  const types: number[] = [];
  let inOrder = true;
  while (!r.done) {
    const type = r.u16("extension_type");
    r.bytes(r.u16("extension_data length"), "extension_data");
    if (types.length > 0 && type <= types[types.length - 1]!) inOrder = false;
    types.push(type);
  }
  return { types, inOrder };
}

export function decodePlaintextInputShare(b: Uint8Array): { extensions: { types: number[]; inOrder: boolean }; payload: Uint8Array } {
  const r = new ByteReader(b, "DAP_ERR_FORMAT", "DAP_ERR_FORMAT");
  const extensions = decodeExtensions(r.bytes(r.u16("private_extensions length"), "private_extensions"));
  const payload = r.bytes(r.u32("payload length"), "payload");
  if (payload.length === 0) throw new Reject(400, "invalidMessage", "payload is empty");
  r.end("PlaintextInputShare");
  return { extensions, payload };
}

/** What the client chooses for one report; the rest (ids, encryption) is done by sealReport18. */
export interface Dap18ReportInput {
  time: bigint;
  publicShare?: Uint8Array;
  /** The VDAF input shares (payloads of the two PlaintextInputShares): random bytes are fine here. */
  leaderShare: Uint8Array;
  helperShare: Uint8Array;
  publicExtensions?: DapExtension[];
  leaderPrivateExtensions?: DapExtension[];
  reportId?: Uint8Array;
  /** false: the AAD of builds before draft-18's change, without the task configuration. */
  aadWithTaskConfiguration?: boolean;
}

/** A DAP-18 client's job for one report: PlaintextInputShares sealed to each aggregator (§4.4.2.1). */
export async function sealReport18(task: Dap18Task, leader: DapHpkeConfig, helper: DapHpkeConfig, input: Dap18ReportInput): Promise<Dap18Report> {
  const metadata: Dap18ReportMetadata = {
    reportId: input.reportId ?? crypto.getRandomValues(new Uint8Array(16)),
    time: input.time,
    publicExtensions: input.publicExtensions ?? [],
  };
  const publicShare = input.publicShare ?? new Uint8Array(0);
  const aad = encodeInputShareAad(task, encodeReportMetadata(metadata), publicShare, input.aadWithTaskConfiguration ?? true);
  const seal = async (role: DapRole, config: DapHpkeConfig, pt: Uint8Array): Promise<DapHpkeCiphertext> => ({
    configId: config.id,
    ...(await sealBase(config, inputShareInfo18(role), aad, pt)),
  });
  return {
    metadata,
    publicShare,
    leader: await seal("leader", leader, encodePlaintextInputShare(input.leaderPrivateExtensions ?? [], input.leaderShare)),
    helper: await seal("helper", helper, encodePlaintextInputShare([], input.helperShare)),
  };
}

/** A report as the double decodes it: views into the body. */
export interface DecodedReport18 {
  reportId: Uint8Array;
  time: bigint;
  publicExtensions: { types: number[]; inOrder: boolean };
  publicShare: Uint8Array;
  /** The encoded ReportMetadata (part of the AAD). */
  metadata: Uint8Array;
  leader: DapHpkeCiphertext;
  helper: DapHpkeCiphertext;
}

/**
 * Strict decoding of an UploadRequest (dap-18 §4.4.2): Reports until the body ends, each fully in
 * bounds. Throws a Reject (invalidMessage) or a ProtocolError (DAP_ERR_*) for anything malformed.
 */
export function decodeUploadRequest(body: Uint8Array): DecodedReport18[] {
  const r = new ByteReader(body, "DAP_ERR_TRUNCATED", "DAP_ERR_FORMAT");
  const reports: DecodedReport18[] = [];
  while (!r.done) {
    const start = r.offset;
    const reportId = r.bytes(16, "report_id");
    const time = r.u64("time");
    const publicExtensions = decodeExtensions(r.bytes(r.u16("public_extensions length"), "public_extensions"));
    const metadata = body.subarray(start, r.offset);
    const publicShare = r.bytes(r.u32("public_share length"), "public_share");
    const leader = decodeHpkeCiphertext(r, "leader");
    const helper = decodeHpkeCiphertext(r, "helper");
    reports.push({ reportId, time, publicExtensions, publicShare, metadata, leader, helper });
  }
  return reports;
}

/*
 * dap-18 §4.4.2.2:
 *   struct { ReportID id; ReportError error; } ReportUploadStatus;
 *   struct { ReportUploadStatus status[message_length]; } UploadErrors;
 */
export function encodeUploadErrors(statuses: readonly { reportId: Uint8Array; error: number }[]): Uint8Array {
  const w = new ByteWriter(17 * statuses.length + 1);
  for (const s of statuses) w.bytes(s.reportId).u8(s.error);
  return w.finish().slice();
}

export function decodeUploadErrors(b: Uint8Array): { reportId: string; error: number }[] {
  const r = new ByteReader(b, "DAP_ERR_TRUNCATED", "DAP_ERR_FORMAT");
  const out: { reportId: string; error: number }[] = [];
  while (!r.done) out.push({ reportId: toHex(r.bytes(16, "id")), error: r.u8("error") });
  return out;
}

/** A report the leader accepted, with its decrypted input shares. */
export interface AcceptedReport18 {
  taskId: string;
  reportId: string;
  /** In the task's time_precision units. */
  time: bigint;
  publicShare: Uint8Array;
  leaderShare: Uint8Array;
  helperShare: Uint8Array | undefined;
}

/**
 * dap-18: a report too far in the future gets `report_too_early`, a replay is silently dropped
 * (Janus) or gets `report_replayed` with `duplicates: "reject"`, a share of the wrong length
 * `invalid_message`.
 */
export interface Dap18AggregatorOptions extends DapDoubleOptions {
  /** The aggregators' HPKE keys (dap-18 has no per-task keys): the first of each list is served. */
  keys: { leader: DapHpkeKey[]; helper: DapHpkeKey[] };
  tasks?: Dap18Task[];
}

/** `rejections` counts per-report refusals by ReportError name, and whole-request problems by DAP type. */
export interface Dap18Aggregator extends DapDouble<AcceptedReport18> {
  hpkeConfigList(): Uint8Array;
  addTask(task: Dap18Task): void;
}

const TITLES: Readonly<Record<string, string>> = {
  invalidMessage: "A message received by a protocol participant could not be parsed or otherwise was invalid.",
  unrecognizedTask: "A server received a message with an unknown task ID.",
  "about:blank": "Bad Request.",
};


/** Starts the double; `await close()` stops it. */
export async function startDap18Aggregator(opts: Dap18AggregatorOptions): Promise<Dap18Aggregator> {
  const role = opts.role;
  const now = opts.now ?? Date.now;
  const skewSec = BigInt(opts.tolerableClockSkewSec ?? 300);
  const maxBody = opts.maxBodyBytes ?? 1 << 20;
  const tasks = new Map<string, Dap18Task>();
  for (const t of opts.tasks ?? []) tasks.set(t.idBase64Url, t);
  const reports = new Map<string, AcceptedReport18[]>();
  const seen = new Set<string>();
  const rejections = new Map<string, number>();
  const received: ReceivedRequest[] = [];
  const counts = { hpkeConfig: 0, uploads: 0, accepted: 0 };
  const ownKeys = role === "leader" ? opts.keys.leader : opts.keys.helper;
  const configList = (): Uint8Array => {
    const current = ownKeys[0];
    if (current === undefined) throw new Error(`the ${role} has no HPKE key`);
    return encodeHpkeConfigList([current.config]);
  };

  /** dap-18 §4.4.2.2 and §4.5.1.4, in Janus's order; undefined when the report is accepted. */
  async function judge(task: Dap18Task, rep: DecodedReport18): Promise<ReportErrorName | undefined> {
    const tp = BigInt(task.configuration.timePrecisionSec);
    const nowSec = BigInt(Math.floor(now() / 1000));
    if (rep.time * tp > nowSec + skewSec) return "report_too_early";
    if (task.interval !== undefined && rep.time < task.interval.start) return "task_not_started";
    if (task.interval !== undefined && rep.time >= task.interval.end) return "task_expired";
    const key = opts.keys.leader.find((k) => k.config.id === rep.leader.configId);
    if (key === undefined) return "outdated_config";
    const aad = encodeInputShareAad(task, rep.metadata, rep.publicShare);
    let leaderPlain: Uint8Array;
    try {
      leaderPlain = await openBase(key, inputShareInfo18("leader"), rep.leader.enc, rep.leader.payload, aad);
    } catch {
      return "hpke_decrypt_error";
    }
    let leaderShare: ReturnType<typeof decodePlaintextInputShare>;
    try {
      leaderShare = decodePlaintextInputShare(leaderPlain);
    } catch {
      return "invalid_message";
    }
    // Out of order, or any extension at all: the double recognises none (§4.5.1.4: invalid_message).
    if (rep.publicExtensions.types.length > 0 || leaderShare.extensions.types.length > 0) return "invalid_message";
    if (opts.leaderShareLength !== undefined && leaderShare.payload.length !== opts.leaderShareLength) return "invalid_message";
    // Stronger than a leader: open the helper's share too (role 0x03, same AAD).
    let helperShare: Uint8Array | undefined;
    try {
      helperShare = await openHelperShare(opts.keys.helper, rep.helper, inputShareInfo18("helper"), aad, (pt) => decodePlaintextInputShare(pt).payload);
    } catch {
      return "hpke_decrypt_error";
    }
    const reportId = toHex(rep.reportId);
    if (!firstSeen(seen, task.idBase64Url, reportId)) return opts.duplicates === "reject" ? "report_replayed" : undefined;
    const accepted: AcceptedReport18 = {
      taskId: task.idBase64Url,
      reportId,
      time: rep.time,
      publicShare: rep.publicShare.slice(),
      leaderShare: leaderShare.payload.slice(),
      helperShare: helperShare?.slice(),
    };
    storeReport(reports, task.idBase64Url, accepted);
    counts.accepted++;
    return undefined;
  }

  async function handleUpload(taskIdText: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    counts.uploads++;
    const body = await readUpload(req, taskIdText, {
      mediaTypeOk: isPpmDapMessage(req.headers["content-type"], "upload-req"),
      mediaType: DAP18_MEDIA_TYPES.uploadRequest,
      problemType: "about:blank",
      maxBodyBytes: maxBody,
    });
    const task = tasks.get(taskIdText);
    if (task === undefined || role !== "leader") throw new Reject(400, "unrecognizedTask", "unknown task", taskIdText);
    let decoded: DecodedReport18[];
    try {
      decoded = decodeUploadRequest(body);
    } catch (e) {
      throw new Reject(400, "invalidMessage", e instanceof Error ? e.message : "malformed upload", taskIdText);
    }
    const statuses: { reportId: Uint8Array; error: number }[] = [];
    for (const rep of decoded) {
      const error = await judge(task, rep);
      if (error === undefined) continue;
      rejections.set(error, (rejections.get(error) ?? 0) + 1);
      statuses.push({ reportId: rep.reportId, error: REPORT_ERROR[error] });
    }
    if (statuses.length === 0) {
      send(res, 200, {});
      return;
    }
    send(res, 200, { "content-type": DAP18_MEDIA_TYPES.uploadErrors }, encodeUploadErrors(statuses));
  }

  const routes: DapRoutes = {
    uploadMethod: "POST",
    hpkeConfig: (_url, res) => {
      counts.hpkeConfig++;
      // dap-18 §4.4.1: one list for the aggregator, whatever the task; cacheable for a day.
      send(res, 200, { "content-type": DAP18_MEDIA_TYPES.hpkeConfigList, "cache-control": "max-age=86400" }, configList());
    },
    upload: handleUpload,
    titles: TITLES,
    rejections,
  };
  const handle = (req: IncomingMessage, res: ServerResponse): Promise<void> => routeDapRequest(req, res, routes);

  const listening = await listenDouble(opts, received, opts.maxRecorded ?? 10_000, handle);
  return {
    role,
    url: listening.url,
    port: listening.port,
    reports,
    rejections,
    received,
    counts,
    hpkeConfigList: configList,
    addTask(task: Dap18Task): void {
      tasks.set(task.idBase64Url, task);
    },
    acceptedCount: () => counts.accepted,
    close: () => listening.close(),
  };
}
