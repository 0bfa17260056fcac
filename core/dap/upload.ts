// DAP upload messages as the gateway sees them: the media types of DAP-09 (draft-ietf-ppm-dap-09,
// what @divviup/dap 0.9 and Janus 0.7 speak) and DAP-18 (draft-ietf-ppm-dap-18, what Janus's main
// branch speaks), the DAP-18 Report encoder, and a strict walk over the Report framing of a DAP-18
// upload body that counts its reports without copying anything.
//
// The gateway never decrypts or interprets a report: the walk only proves that the body is a whole
// number of well-formed Reports (every length inside the body, every vector within its bounds,
// nothing left over), so that a token pays for a known number of reports and a malformed body is
// never forwarded.

import { ByteReader, ByteWriter } from "../bytes.js";
import { ProtocolError } from "../errors.js";
import { isMediaType } from "../http-fields.js";

/** The DAP drafts Veil's policy knows, by the draft number of their wire format. */
export type DapVersion = "09" | "18";
export const DAP_VERSIONS: readonly DapVersion[] = Object.freeze(["09", "18"]);

/** dap-09 §4.4.1 and §4.4.2: one media type per message. */
export const DAP09_MEDIA_TYPES = Object.freeze({
  hpkeConfigList: "application/dap-hpke-config-list",
  report: "application/dap-report",
});

/**
 * dap-18 §9.1 ("Protocol Message Media Type"): one media type, `application/ppm-dap`, whose
 * required `message` parameter names the message.
 */
export const DAP18_MEDIA_TYPES = Object.freeze({
  hpkeConfigList: "application/ppm-dap;message=hpke-config-list",
  uploadRequest: "application/ppm-dap;message=upload-req",
  uploadErrors: "application/ppm-dap;message=upload-errors",
});

const PPM_DAP = "application/ppm-dap";

/**
 * True when a Content-Type value is `application/ppm-dap` with `message=<message>` (RFC 9110
 * §8.3.1: type, subtype and parameter names are case-insensitive; the value may be quoted). Other
 * parameters are allowed: dap-18 §9.1 lets a request add `version=NN`, which is only a hint.
 */
export function isPpmDapMessage(contentType: string | undefined, message: string): boolean {
  if (contentType === undefined || !isMediaType(contentType, PPM_DAP)) return false;
  const params = contentType.split(";").slice(1);
  let found: string | undefined;
  for (const p of params) {
    const eq = p.indexOf("=");
    if (eq < 0) return false;
    if (p.slice(0, eq).trim().toLowerCase() !== "message") continue;
    if (found !== undefined) return false; // two message parameters: ambiguous
    const raw = p.slice(eq + 1).trim();
    found = raw.length >= 2 && raw.startsWith('"') && raw.endsWith('"') ? raw.slice(1, -1) : raw;
  }
  return found === message;
}

/*
 * dap-18 §4.4.2 ("Upload Request") and §4.1 ("Basic Type Definitions"):
 *
 *   struct { ExtensionType extension_type; opaque extension_data<0..2^16-1>; } Extension;  // type: uint16
 *   struct { ReportID report_id; Time time; Extension public_extensions<0..2^16-1>; } ReportMetadata;
 *   struct { HpkeConfigId config_id; opaque enc<1..2^16-1>; opaque payload<1..2^32-1>; } HpkeCiphertext;
 *   struct {
 *     ReportMetadata report_metadata;
 *     opaque public_share<0..2^32-1>;
 *     HpkeCiphertext leader_encrypted_input_share;
 *     HpkeCiphertext helper_encrypted_input_share;
 *   } Report;
 *   struct { Report reports[message_length]; } UploadRequest;
 *
 * ReportID is opaque[16]; Time is uint64 (a number of the task's time_precision units).
 */
export interface DapExtension {
  type: number;
  data: Uint8Array;
}

export interface DapHpkeCiphertext {
  configId: number;
  enc: Uint8Array;
  payload: Uint8Array;
}

export interface Dap18ReportMetadata {
  reportId: Uint8Array;
  time: bigint;
  publicExtensions: readonly DapExtension[];
}

export interface Dap18Report {
  metadata: Dap18ReportMetadata;
  publicShare: Uint8Array;
  leader: DapHpkeCiphertext;
  helper: DapHpkeCiphertext;
}

export const REPORT_ID_LENGTH = 16;

function check(ok: boolean, what: string): void {
  if (!ok) throw new RangeError(`cannot encode ${what}`);
}

/** ReportMetadata: also the middle part of dap-18's InputShareAad. */
export function encodeReportMetadata(m: Dap18ReportMetadata, w: ByteWriter = new ByteWriter()): Uint8Array {
  check(m.reportId.length === REPORT_ID_LENGTH, "report_id: must be 16 bytes");
  const extensions = new ByteWriter();
  for (const e of m.publicExtensions) {
    check(Number.isInteger(e.type) && e.type >= 0 && e.type <= 0xffff && e.data.length <= 0xffff, "public extension");
    extensions.u16(e.type).u16(e.data.length).bytes(e.data);
  }
  const list = extensions.finish();
  check(list.length <= 0xffff, "public_extensions: longer than 2^16-1 bytes");
  return w.bytes(m.reportId).u64(m.time).u16(list.length).bytes(list).finish();
}

function encodeCiphertext(w: ByteWriter, c: DapHpkeCiphertext, who: string): void {
  check(Number.isInteger(c.configId) && c.configId >= 0 && c.configId <= 0xff, `${who} config_id`);
  check(c.enc.length >= 1 && c.enc.length <= 0xffff, `${who} enc: 1..2^16-1 bytes`);
  check(c.payload.length >= 1 && c.payload.length <= 0xffffffff, `${who} payload: 1..2^32-1 bytes`);
  w.u8(c.configId).u16(c.enc.length).bytes(c.enc).u32(c.payload.length).bytes(c.payload);
}

/** One Report, appended to `w` (a fresh writer by default). */
export function encodeReport(r: Dap18Report, w: ByteWriter = new ByteWriter()): Uint8Array {
  encodeReportMetadata(r.metadata, w);
  w.u32(r.publicShare.length).bytes(r.publicShare);
  encodeCiphertext(w, r.leader, "leader");
  encodeCiphertext(w, r.helper, "helper");
  return w.finish();
}

/** An UploadRequest: the reports concatenated, no count and no length prefix. */
export function encodeUploadRequest(reports: readonly Dap18Report[]): Uint8Array {
  const w = new ByteWriter(512 * Math.max(1, reports.length));
  for (const r of reports) encodeReport(r, w);
  return w.finish().slice();
}

/** Extension lists are opaque vectors whose content must be whole Extensions. */
function walkExtensions(r: ByteReader, what: string): void {
  const list = new ByteReader(r.bytes(r.u16(`${what} length`), what), "DAP_ERR_FORMAT", "DAP_ERR_FORMAT");
  while (!list.done) {
    list.u16(`${what}: extension_type`);
    list.bytes(list.u16(`${what}: extension_data length`), `${what}: extension_data`);
  }
}

function walkCiphertext(r: ByteReader, who: string): void {
  r.u8(`${who} config_id`);
  const enc = r.u16(`${who} enc length`);
  if (enc === 0) throw new ProtocolError("DAP_ERR_FORMAT", `${who} enc is empty (HpkeCiphertext.enc is 1..2^16-1 bytes)`);
  r.bytes(enc, `${who} enc`);
  const payload = r.u32(`${who} payload length`);
  if (payload === 0) throw new ProtocolError("DAP_ERR_FORMAT", `${who} payload is empty (HpkeCiphertext.payload is 1..2^32-1 bytes)`);
  r.bytes(payload, `${who} payload`);
}

/**
 * Walks a DAP-18 UploadRequest and returns how many Reports it holds, or throws DAP_ERR_TRUNCATED
 * (a length points past the end of the body) or DAP_ERR_FORMAT (a vector outside its bounds, an
 * extension list that is not whole Extensions). The walk reads each length, checks it against what
 * is left and skips: no allocation per report, time linear in the body, which the caller has
 * already bounded. An empty body is zero reports: the grammar allows it (Janus answers it 200).
 */
export function countReports(body: Uint8Array): number {
  const r = new ByteReader(body, "DAP_ERR_TRUNCATED", "DAP_ERR_FORMAT");
  let n = 0;
  while (!r.done) {
    const at = `report ${n + 1}`;
    r.bytes(REPORT_ID_LENGTH, `${at}: report_id`);
    r.u64(`${at}: time`);
    walkExtensions(r, `${at}: public_extensions`);
    r.bytes(r.u32(`${at}: public_share length`), `${at}: public_share`);
    walkCiphertext(r, `${at}: leader`);
    walkCiphertext(r, `${at}: helper`);
    n++;
  }
  return n;
}
