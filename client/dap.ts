// DAP-09 uploads with @divviup/dap 0.9 over the oblivious fetch: the task (Prio3Count, Prio3Sum,
// Prio3Histogram), measurement parsing, and an upload loop that reports each report's fate.
// Used by `veil client upload`; browser-safe (no node: imports), though the browser bundle of
// client/ leaves it out (a page that wants it bundles @divviup/dap itself).

import { DAPError, Task } from "@divviup/dap";
import { ProtocolError, isProtocolError } from "../core/errors.js";
import type { ObliviousFetch } from "./oblivious-fetch.js";

export type VdafName = "count" | "sum" | "histogram";

export interface VdafParams {
  vdaf: VdafName;
  /** Prio3Sum: bits of the measurement (task parameter). */
  bits?: number;
  /** Prio3Histogram: number of buckets (task parameter). */
  length?: number;
  /** Prio3Histogram: chunk length (task parameter). */
  chunkLength?: number;
}

export type DapMeasurement = boolean | number;

export interface DapTaskOptions extends VdafParams {
  taskId: string;
  leader: string;
  helper: string;
  timePrecisionSec: number;
  fetch: ObliviousFetch;
}

/** The Task as this module uses it (the Task's type parameters differ per VDAF). */
export interface DapUploader {
  fetchKeyConfiguration(): Promise<void>;
  sendMeasurement(m: DapMeasurement): Promise<void>;
}

function bad(detail: string): ProtocolError {
  return new ProtocolError("CFG_ERR_INVALID", detail);
}

/** Checks the VDAF parameters and fills in defaults (sum: 32 bits; histogram: chunk length ~ sqrt(length)). */
export function resolveVdaf(p: VdafParams): Required<VdafParams> {
  const bits = p.bits ?? 32;
  const length = p.length ?? 4;
  const chunkLength = p.chunkLength ?? Math.max(1, Math.floor(Math.sqrt(length)));
  if (!["count", "sum", "histogram"].includes(p.vdaf)) throw bad("--vdaf must be count, sum or histogram");
  if (!Number.isInteger(bits) || bits < 1 || bits > 64) throw bad("--bits must be an integer from 1 to 64");
  if (!Number.isInteger(length) || length < 1 || length > 100_000) throw bad("--length must be an integer from 1 to 100000");
  if (!Number.isInteger(chunkLength) || chunkLength < 1 || chunkLength > length) throw bad("--chunk-length must be an integer from 1 to --length");
  return { vdaf: p.vdaf, bits, length, chunkLength };
}

/** Parses a measurement for the VDAF: count 0/1/true/false; sum 0..2^bits-1; histogram a bucket index. */
export function parseMeasurement(p: Required<VdafParams>, text: string): DapMeasurement {
  const t = text.trim().toLowerCase();
  if (p.vdaf === "count") {
    if (t === "1" || t === "true") return true;
    if (t === "0" || t === "false") return false;
    throw bad("--measurement for count must be 0, 1, true or false");
  }
  if (!/^\d{1,16}$/.test(t)) throw bad(`--measurement for ${p.vdaf} must be a non-negative integer`);
  const n = Number(t);
  if (p.vdaf === "sum" && (n >= 2 ** p.bits || !Number.isSafeInteger(n))) throw bad(`--measurement must be below 2^${p.bits}`);
  if (p.vdaf === "histogram" && n >= p.length) throw bad(`--measurement must be a bucket index below ${p.length}`);
  return n;
}

/** A @divviup/dap Task whose every request goes through the oblivious fetch. */
export function createDapTask(o: DapTaskOptions): DapUploader {
  const v = resolveVdaf(o);
  const common = { id: o.taskId, leader: o.leader, helper: o.helper, timePrecisionSeconds: o.timePrecisionSec };
  let task: { fetch: unknown } & DapUploader;
  try {
    if (v.vdaf === "count") task = new Task({ type: "count", ...common });
    else if (v.vdaf === "sum") task = new Task({ type: "sum", bits: v.bits, ...common }) as unknown as typeof task;
    else task = new Task({ type: "histogram", length: v.length, chunkLength: v.chunkLength, ...common });
  } catch (e) {
    throw new ProtocolError("CFG_ERR_INVALID", `the DAP task cannot be built: check --task, --leader and --helper`, { cause: e });
  }
  // Task.fetch is a setter (dap-09 notes §4): every HPKE config GET and report PUT goes through it.
  task.fetch = o.fetch;
  return task;
}

/** The upload route of a task at the leader, as @divviup/dap 0.9 builds it. */
export function uploadUrl(leader: string, taskId: string): URL {
  return new URL(`tasks/${taskId}/reports`, leader.endsWith("/") ? leader : leader + "/");
}

/** Why a report did not land: refused by someone (a definite answer), or failed (an error on the way). */
export type UploadOutcome = { ok: true } | { ok: false; refused: boolean; fatal: boolean; message: string; code: string };

/** Errors after which no further report can land (stop the run). */
const FATAL = new Set([
  "CFG_ERR_INVALID",
  "CLIENT_ERR_CREDENTIAL_REFUSED",
  "CLIENT_ERR_QUOTA_EXHAUSTED",
  "CLIENT_ERR_KEYS_INCONSISTENT",
  "CLIENT_ERR_KEY_CONFIG_REFUSED",
  "CLIENT_ERR_KEYS_UNAVAILABLE",
  "CLIENT_ERR_CHALLENGE",
]);

/** Classifies what sendMeasurement threw. */
export function classifyUploadError(e: unknown): UploadOutcome & { ok: false } {
  if (isProtocolError(e)) {
    const refused = e.code === "CLIENT_ERR_TOKEN_REFUSED";
    return { ok: false, refused, fatal: FATAL.has(e.code), message: e.message, code: e.code };
  }
  if (e instanceof DAPError) {
    return { ok: false, refused: e.status < 500, fatal: false, message: `the aggregator answered ${e.status} ${e.shortType}${e.detail ? `: ${e.detail}` : ""}`, code: `DAP:${e.shortType}` };
  }
  const message = e instanceof Error ? e.message : String(e);
  // @divviup/dap's own plain Errors (e.g. "report upload failed" for a non-problem non-2xx).
  return { ok: false, refused: false, fatal: false, message, code: "ERROR" };
}

export async function uploadOne(task: DapUploader, m: DapMeasurement): Promise<UploadOutcome> {
  try {
    await task.sendMeasurement(m);
    return { ok: true };
  } catch (e) {
    return classifyUploadError(e);
  }
}
