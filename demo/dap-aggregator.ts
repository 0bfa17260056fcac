// A faithful DAP-09 leader/helper double (draft-ietf-ppm-dap-09 §4.4.1, §4.4.2; see
// shared/notes/dap-09.md §5). It decodes every upload strictly, checks the task, decrypts the
// leader's input share with HPKE and rejects what a real leader (Janus release/0.7) rejects. It
// does no VDAF preparation, aggregation or collection. Tests use it as the gateway's target; the
// demo (`npm start`) runs one as leader and one as helper.
//
// It is a small node:http server on purpose: it must not share the gateway's plumbing, so a bug
// there cannot hide a bug here.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { AeadId, CipherSuite, KdfId, KemId } from "hpke-js";
import { ByteReader, ByteWriter, fromBase64Url, toBase64Url, toHex } from "../core/bytes.js";

/** dap-09 §4.4.1: media type of an `HpkeConfigList`. @divviup/dap requires it without parameters. */
export const DAP_HPKE_CONFIG_LIST = "application/dap-hpke-config-list";
/** dap-09 §4.4.2: media type of a `Report`. */
export const DAP_REPORT = "application/dap-report";
/** dap-09 §3.2: problem types live in this URN namespace. */
export const DAP_ERROR_URN = "urn:ietf:params:ppm:dap:error:";

/** dap-09 §4.1 `enum { collector(0), client(1), leader(2), helper(3) } Role`. */
export const DAP_ROLE = { client: 1, leader: 2, helper: 3 } as const;
export type DapRole = "leader" | "helper";

const TEXT = new TextEncoder();
/** dap-09 §4.4.2: `"dap-09 input share" || 0x01 || server_role`. */
export function inputShareInfo(role: DapRole): Uint8Array {
  const label = TEXT.encode("dap-09 input share");
  const info = new Uint8Array(label.length + 2);
  info.set(label);
  info[label.length] = DAP_ROLE.client;
  info[label.length + 1] = DAP_ROLE[role];
  return info;
}

/*
 * dap-09 §4.4.1:
 *   struct {
 *     HpkeConfigId id;            // uint8
 *     HpkeKemId kem_id;           // uint16
 *     HpkeKdfId kdf_id;           // uint16
 *     HpkeAeadId aead_id;         // uint16
 *     HpkePublicKey public_key;   // opaque HpkePublicKey<1..2^16-1>
 *   } HpkeConfig;
 *   HpkeConfig HpkeConfigList<1..2^16-1>;
 */
export interface DapHpkeConfig {
  id: number;
  kemId: number;
  kdfId: number;
  aeadId: number;
  publicKey: Uint8Array;
}

/** An HPKE key of one aggregator for one task: the public config and the private key. */
export interface DapHpkeKey {
  config: DapHpkeConfig;
  privateKey: CryptoKey;
}

export function encodeHpkeConfigList(configs: readonly DapHpkeConfig[]): Uint8Array {
  const inner = new ByteWriter();
  for (const c of configs) {
    inner.u8(c.id).u16(c.kemId).u16(c.kdfId).u16(c.aeadId).u16(c.publicKey.length).bytes(c.publicKey);
  }
  const body = inner.finish();
  return new ByteWriter(body.length + 2).u16(body.length).bytes(body).finish().slice();
}

const suites = new Map<string, CipherSuite>();
function suiteFor(kemId: number, kdfId: number, aeadId: number): CipherSuite {
  const name = `${kemId}/${kdfId}/${aeadId}`;
  let s = suites.get(name);
  if (s === undefined) {
    s = new CipherSuite({ kem: kemId as KemId, kdf: kdfId as KdfId, aead: aeadId as AeadId });
    suites.set(name, s);
  }
  return s;
}

/**
 * A new HPKE key for a DAP aggregator. The default suite is DAP-09's mandatory one (§6):
 * DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-128-GCM.
 */
export async function createDapHpkeKey(
  id: number,
  suite: { kemId?: number; kdfId?: number; aeadId?: number } = {},
): Promise<DapHpkeKey> {
  const kemId = suite.kemId ?? KemId.DhkemX25519HkdfSha256;
  const kdfId = suite.kdfId ?? KdfId.HkdfSha256;
  const aeadId = suite.aeadId ?? AeadId.Aes128Gcm;
  const s = suiteFor(kemId, kdfId, aeadId);
  const pair = await s.kem.generateKeyPair();
  const publicKey = new Uint8Array(await s.kem.serializePublicKey(pair.publicKey));
  return { config: { id, kemId, kdfId, aeadId, publicKey }, privateKey: pair.privateKey };
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

/** What the double saw on the wire, for tests that check what a proxy forwarded. */
export interface ReceivedRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  bodyBytes: number;
}

export interface DapAggregatorOptions {
  role: DapRole;
  host?: string;
  /** 0 (the default) picks a free port. */
  port?: number;
  tasks?: DapTask[];
  /** Clock in ms (injected for tests). */
  now?: () => number;
  /** dap-09 §4.4.2: leeway for reports from the future before `reportTooEarly` (default 300 s). */
  tolerableClockSkewSec?: number;
  /** What a duplicate report id gets: Janus's silent 2xx ("accept") or `reportRejected` (a MAY). */
  duplicates?: "accept" | "reject";
  /** Largest request body accepted (default 1 MiB); larger gets 413. */
  maxBodyBytes?: number;
  /** Expected leader share length (e.g. 48 for Prio3Count); checked when given. */
  leaderShareLength?: number;
  /** Status of a successful upload: 201 (dap-09) by default; Janus answers 200. */
  uploadStatus?: number;
  /** Keeps at most this many `received` entries (default 10,000). */
  maxRecorded?: number;
  /**
   * Keep every accepted report in `reports` (default true, for tests). The demo (`npm start`)
   * turns it off and aggregates through `onAccepted` instead, so memory does not grow per report.
   */
  keepReports?: boolean;
  /** Serve HTTPS with this certificate chain and key (PEM). */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Called with each newly accepted report, after it was stored and before the answer is sent. */
  onAccepted?: (report: AcceptedReport) => void;
}

export interface DapAggregator {
  readonly role: DapRole;
  /** Base URL, e.g. `http://127.0.0.1:40123/`. */
  readonly url: string;
  readonly port: number;
  /** Accepted reports by task id (base64url). */
  readonly reports: Map<string, AcceptedReport[]>;
  /** Duplicate uploads seen (ignored, not counted again). */
  readonly duplicates: { taskId: string; reportId: string }[];
  /** Rejections by DAP problem type (or "badRequest" for Janus's bare 400s). */
  readonly rejections: Map<string, number>;
  readonly received: ReceivedRequest[];
  readonly counts: { hpkeConfig: number; uploads: number; accepted: number };
  /** The encoded HpkeConfigList this aggregator serves for `task`. */
  hpkeConfigList(task: DapTask | string): Uint8Array;
  addTask(task: DapTask): void;
  /** Adds a new current key for this aggregator's role; the old ones stay accepted (rotation). */
  rotateKey(taskId: string, key: DapHpkeKey): void;
  /** Forgets every key but the current one: old config ids then get `outdatedConfig`. */
  dropOldKeys(taskId: string): void;
  acceptedCount(): number;
  close(): Promise<void>;
}

interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  taskid?: string;
}

class Reject extends Error {
  constructor(
    readonly status: number,
    readonly problemType: string | undefined,
    detail: string,
    readonly taskId?: string,
  ) {
    super(detail);
  }
}

const TITLES: Record<string, string> = {
  invalidMessage: "A message received by a protocol participant could not be parsed or otherwise was invalid.",
  unrecognizedTask: "An endpoint received a message with an unknown task ID.",
  outdatedConfig: "The message was generated using an outdated configuration.",
  reportRejected: "Report could not be processed for an unspecified reason.",
  reportTooEarly: "Report could not be processed because its timestamp is too far in the future.",
  missingTaskID: "HPKE configuration was requested without specifying a task ID.",
};

/*
 * dap-09 §4.4.2 (and notes §1.3):
 *   struct { ReportID report_id; Time time; } ReportMetadata;          // 16 + 8 bytes
 *   struct { HpkeConfigId config_id; opaque enc<1..2^16-1>; opaque payload<1..2^32-1>; } HpkeCiphertext;
 *   struct {
 *     ReportMetadata report_metadata;
 *     opaque public_share<0..2^32-1>;
 *     HpkeCiphertext leader_encrypted_input_share;
 *     HpkeCiphertext helper_encrypted_input_share;
 *   } Report;
 */
interface DecodedCiphertext {
  configId: number;
  enc: Uint8Array;
  payload: Uint8Array;
}
interface DecodedReport {
  reportId: Uint8Array;
  time: bigint;
  publicShare: Uint8Array;
  /** `report_id || time || u32 len || public_share`: the part of InputShareAad after task_id. */
  aadTail: Uint8Array;
  leader: DecodedCiphertext;
  helper: DecodedCiphertext;
}

function decodeCiphertext(r: ByteReader, who: string): DecodedCiphertext {
  const configId = r.u8(`${who} config_id`);
  const enc = r.bytes(r.u16(`${who} enc length`), `${who} enc`);
  const payload = r.bytes(r.u32(`${who} payload length`), `${who} payload`);
  if (enc.length === 0) throw new Reject(400, "invalidMessage", `${who} enc is empty`);
  if (payload.length === 0) throw new Reject(400, "invalidMessage", `${who} payload is empty`);
  return { configId, enc, payload };
}

export function decodeReport(body: Uint8Array): DecodedReport {
  const r = new ByteReader(body, "HTTP_ERR_BAD_REQUEST", "HTTP_ERR_BAD_REQUEST");
  const reportId = r.bytes(16, "report_id");
  const time = r.u64("time");
  const publicShare = r.bytes(r.u32("public_share length"), "public_share");
  const aadTail = body.subarray(0, r.offset);
  const leader = decodeCiphertext(r, "leader");
  const helper = decodeCiphertext(r, "helper");
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

async function openShare(
  key: DapHpkeKey,
  role: DapRole,
  ct: DecodedCiphertext,
  aad: Uint8Array,
): Promise<Uint8Array> {
  const { kemId, kdfId, aeadId } = key.config;
  const suite = suiteFor(kemId, kdfId, aeadId);
  const pt = await suite.open(
    { recipientKey: key.privateKey, enc: ct.enc.slice(), info: inputShareInfo(role) },
    ct.payload.slice(),
    aad,
  );
  return new Uint8Array(pt);
}

const TASK_ID = /^[A-Za-z0-9_-]{43}$/;

function readBody(req: IncomingMessage, max: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"] ?? "0");
    if (declared > max) {
      reject(new Reject(413, undefined, "body too large"));
      req.resume();
      return;
    }
    const chunks: Buffer[] = [];
    let n = 0;
    req.on("data", (c: Buffer) => {
      n += c.length;
      if (n > max) {
        reject(new Reject(413, undefined, "body too large"));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(new Uint8Array(Buffer.concat(chunks))));
    req.on("error", reject);
  });
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

  function send(res: ServerResponse, status: number, headers: Record<string, string>, body?: Uint8Array): void {
    res.writeHead(status, { ...headers, "content-length": String(body?.length ?? 0) });
    res.end(body);
  }

  function sendReject(res: ServerResponse, r: Reject): void {
    rejections.set(r.problemType ?? "badRequest", (rejections.get(r.problemType ?? "badRequest") ?? 0) + 1);
    if (r.problemType === undefined) {
      // Janus answers these (bad content type, bad task id in the path) with a bare status.
      send(res, r.status, { "content-type": "text/plain" }, TEXT.encode(r.message));
      return;
    }
    const p: Problem = {
      type: DAP_ERROR_URN + r.problemType,
      title: TITLES[r.problemType] ?? r.problemType,
      status: r.status,
      detail: r.message,
    };
    if (r.taskId !== undefined) p.taskid = r.taskId;
    send(res, r.status, { "content-type": "application/problem+json" }, TEXT.encode(JSON.stringify(p)));
  }

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
    // 1. Exact media type (Janus: bare 400).
    if (req.headers["content-type"] !== DAP_REPORT) {
      req.resume();
      throw new Reject(400, undefined, `Content-Type must be ${DAP_REPORT}`);
    }
    // 2. A task id that decodes to 32 bytes (Janus: bare 400).
    const taskIdBytes = TASK_ID.test(taskIdText) ? fromBase64Url(taskIdText) : undefined;
    if (taskIdBytes?.length !== 32) {
      req.resume();
      throw new Reject(400, undefined, "invalid TaskId");
    }
    const body = await readBody(req, maxBody);
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
    const helperKey = task.helperKeys.find((k) => k.config.id === report.helper.configId);
    if (helperKey !== undefined) {
      try {
        helperShare = decodePlaintextInputShare(await openShare(helperKey, "helper", report.helper, aad)).payload;
      } catch {
        throw new Reject(400, "reportRejected", "helper input share could not be decrypted", taskIdText);
      }
    }
    // 9. Replay: ignore (do not count again), answer like Janus unless told to reject.
    const reportId = toHex(report.reportId);
    const replayKey = `${taskIdText}/${reportId}`;
    if (seen.has(replayKey)) {
      duplicates.push({ taskId: taskIdText, reportId });
      if (opts.duplicates === "reject") throw new Reject(400, "reportRejected", "duplicate report id", taskIdText);
      send(res, opts.uploadStatus ?? 201, {});
      return;
    }
    seen.add(replayKey);
    // 10. Store and answer 201 Created.
    const accepted: AcceptedReport = {
      taskId: taskIdText,
      reportId,
      time: Number(report.time),
      publicShare: report.publicShare.slice(),
      leaderShare: leaderShare.slice(),
      helperShare: helperShare?.slice(),
    };
    if (opts.keepReports !== false) {
      let list = reports.get(taskIdText);
      if (list === undefined) reports.set(taskIdText, (list = []));
      list.push(accepted);
    }
    counts.accepted++;
    opts.onAccepted?.(accepted);
    send(res, opts.uploadStatus ?? 201, {});
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://double.invalid");
    if (received.length < maxRecorded) {
      received.push({
        method: req.method ?? "",
        path: req.url ?? "",
        headers: { ...req.headers },
        bodyBytes: Number(req.headers["content-length"] ?? 0),
      });
    }
    const upload = /^\/tasks\/([^/]*)\/reports$/.exec(url.pathname);
    try {
      if (url.pathname === "/hpke_config") {
        req.resume();
        if (req.method !== "GET") {
          send(res, 405, { allow: "GET" });
          return;
        }
        handleHpkeConfig(url, res);
      } else if (upload !== null) {
        if (req.method !== "PUT") {
          req.resume();
          send(res, 405, { allow: "PUT" });
          return;
        }
        await handleUpload(upload[1] ?? "", req, res);
      } else {
        req.resume();
        send(res, 404, { "content-type": "text/plain" }, TEXT.encode("not found"));
      }
    } catch (e) {
      if (e instanceof Reject) sendReject(res, e);
      else {
        send(res, 500, { "content-type": "text/plain" }, TEXT.encode("internal error"));
      }
    }
  }

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    void handle(req, res);
  };
  const server: Server =
    opts.tls === undefined ? createServer(onRequest) : (createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }, onRequest) as unknown as Server);
  // Explicit limits instead of node's defaults.
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;

  return {
    role,
    url: `${opts.tls === undefined ? "http" : "https"}://${host}:${addr.port}/`,
    port: addr.port,
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
    close(): Promise<void> {
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
