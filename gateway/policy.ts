// What the gateway lets through after decapsulation (the request path's step 3): the inner
// request's scheme + authority (+ optional path prefix) must name a configured target (an
// allow-list: RFC 9458 §6.3, never an open proxy), and under the `dap` policy only the upload and
// key-config routes of the DAP draft that target speaks pass:
//
//   target dap "09" (draft-ietf-ppm-dap-09: @divviup/dap 0.9, Firefox, Janus 0.7)
//     PUT  <prefix>tasks/{task-id}/reports      one Report (application/dap-report)
//     GET  <prefix>hpke_config[?task_id=...]
//   target dap "18" (draft-ietf-ppm-dap-18: Janus main)
//     POST <prefix>tasks/{task-id}/reports      an UploadRequest: Reports concatenated
//     GET  <prefix>hpke_config                  (no query: per-task configs left DAP in draft 12)
//
// A DAP-18 upload can carry many reports, so its body is checked whole before it is forwarded
// (checkDapUpload): media type, a strict walk over the Report framing (core/dap), and at most
// `tokens.maxReportsPerToken` reports. The task id of a DAP path is read here and nowhere else
// (dapTaskIdOf).

import { ProtocolError } from "../core/errors.js";
import type { Field } from "../core/bhttp/index.js";
import { DAP18_MEDIA_TYPES, countReports, isPpmDapMessage, type DapVersion } from "../core/dap/index.js";
import type { PolicyName, TargetConfig } from "./config.js";

/** One entry of the `targets` allow-list, compiled. */
export interface TargetEntry {
  /** The config key, e.g. "https://leader.example/dap/" (safe to log: it is configuration). */
  name: string;
  /** "https:" or "http:" */
  protocol: string;
  /** Lowercase host with a non-default port, as URL.host gives it. */
  host: string;
  /** Path prefix the inner path must start with; always ends with "/". */
  prefix: string;
  /** Upstream origin, e.g. "http://127.0.0.1:8083". */
  upstreamOrigin: string;
  /** Upstream base path; always ends with "/". */
  upstreamBasePath: string;
  /** The DAP draft the target speaks: "09" (a plain URL in the config) or "18". */
  dap: DapVersion;
}

export interface TargetTable {
  readonly entries: readonly TargetEntry[];
}

function withSlash(p: string): string {
  return p.endsWith("/") ? p : p + "/";
}

/**
 * Compiles `targets` (validated by config.ts): a URL string is a DAP-09 target, an object names its
 * draft. Longest prefixes first, so they win.
 */
export function compileTargets(targets: Readonly<Record<string, TargetConfig>>): TargetTable {
  const entries = Object.entries(targets).map(([name, target]): TargetEntry => {
    const inner = new URL(name);
    const up = new URL(typeof target === "string" ? target : target.upstream);
    return {
      name,
      protocol: inner.protocol,
      host: inner.host,
      prefix: withSlash(inner.pathname),
      upstreamOrigin: up.origin,
      upstreamBasePath: withSlash(up.pathname),
      dap: typeof target === "string" ? "09" : target.dap,
    };
  });
  entries.sort((a, b) => b.prefix.length - a.prefix.length);
  return { entries };
}

/** The target an inner request addressed, and where it goes upstream. */
export interface ResolvedTarget {
  entry: TargetEntry;
  /** The origin the client addressed, normalised (e.g. "https://leader.example"). */
  innerOrigin: string;
  /** The inner path after the prefix, without the query (e.g. "tasks/abc/reports"). */
  rest: string;
  /** The query without "?" ("" when none). */
  query: string;
  /** Path (with query) to request from the upstream. */
  upstreamPath: string;
}

/** RFC 3986 authority without userinfo: host (reg-name, IPv4, [IPv6]) and an optional port. */
const AUTHORITY = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_~%!$&'()*+,;=]+)(?::\d{1,5})?$/;

/** A lowercase DNS name without a port: URL parsing would return it unchanged. */
const PLAIN_HOST = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$/;

function forbidden(detail: string): ProtocolError {
  return new ProtocolError("GATEWAY_ERR_TARGET_FORBIDDEN", detail);
}

function findHeader(headers: readonly Field[], name: string): string | undefined {
  for (const [n, v] of headers) if (n === name) return v;
  return undefined;
}

/** True when a path segment is "." or ".." once percent-decoded (it could climb out of a prefix). */
function isDotSegment(segment: string): boolean {
  const s = segment.toLowerCase().replaceAll("%2e", ".");
  return s === "." || s === "..";
}

/**
 * Maps the inner request to a configured target, or throws GATEWAY_ERR_TARGET_FORBIDDEN.
 * RFC 9292 §3.5 lets `:authority` be empty when a Host header carries it.
 */
export function resolveTarget(
  table: TargetTable,
  req: { scheme: string; authority: string; path: string; headers: readonly Field[] },
): ResolvedTarget {
  const scheme = req.scheme.toLowerCase();
  if (scheme !== "https" && scheme !== "http") throw forbidden("scheme must be https or http");
  const authority = req.authority !== "" ? req.authority : (findHeader(req.headers, "host") ?? "");
  if (authority === "" || !AUTHORITY.test(authority)) throw forbidden("request names no valid authority");
  let host: string;
  if (PLAIN_HOST.test(authority)) {
    // The common case (a lowercase host name, no port) is already what URL.host would give.
    host = authority;
  } else {
    try {
      host = new URL(`${scheme}://${authority}/`).host;
    } catch {
      throw forbidden("request names no valid authority");
    }
  }
  if (!req.path.startsWith("/") || req.path.includes("#") || req.path.includes("\\")) {
    throw forbidden("path must be an absolute path without a fragment");
  }
  const q = req.path.indexOf("?");
  const pathname = q < 0 ? req.path : req.path.slice(0, q);
  const query = q < 0 ? "" : req.path.slice(q + 1);
  if (pathname.split("/").some(isDotSegment)) throw forbidden("path must not contain dot segments");
  const protocol = scheme + ":";
  for (const entry of table.entries) {
    if (entry.protocol !== protocol || entry.host !== host || !pathname.startsWith(entry.prefix)) continue;
    const rest = pathname.slice(entry.prefix.length);
    return {
      entry,
      innerOrigin: `${scheme}://${host}`,
      rest,
      query,
      upstreamPath: entry.upstreamBasePath + rest + (q < 0 ? "" : "?" + query),
    };
  }
  throw forbidden("target is not in the gateway's allow-list");
}

/** What kind of request passed the policy: the token gate treats uploads specially. */
export type RouteKind = "dap-upload" | "dap-hpke-config" | "other";

const B64URL_TASK_ID = "[A-Za-z0-9_-]{43}";
const UPLOAD = new RegExp(`^tasks/(${B64URL_TASK_ID})/reports$`);
const HPKE_CONFIG_QUERY = new RegExp(`^task_id=(${B64URL_TASK_ID})$`);
const ANY_UPLOAD = new RegExp(`(?:^|/)tasks/(${B64URL_TASK_ID})/reports$`);

/**
 * A DAP TaskID is 32 bytes, sent as unpadded base64url: exactly 43 characters of the alphabet
 * (43 x 6 = 258 bits: 32 bytes and 2 spare bits), which the patterns above already require.
 */
function isTaskId(s: string): boolean {
  return s.length === 43;
}

function policyError(detail: string): ProtocolError {
  return new ProtocolError("GATEWAY_ERR_POLICY", detail);
}

/** The upload method of each draft: DAP-18 moved uploads from PUT to POST (draft 16). */
const UPLOAD_METHOD: Readonly<Record<DapVersion, string>> = { "09": "PUT", "18": "POST" };

/** The DAP shape of a path after the target prefix, for the draft the target speaks, whatever the policy. */
function dapRouteOf(method: string, t: Pick<ResolvedTarget, "rest" | "query"> & { entry: Pick<TargetEntry, "dap"> }): RouteKind {
  const version = t.entry.dap;
  const upload = UPLOAD.exec(t.rest);
  if (upload !== null && method === UPLOAD_METHOD[version] && t.query === "" && isTaskId(upload[1]!)) return "dap-upload";
  if (t.rest === "hpke_config" && method === "GET") {
    if (t.query === "") return "dap-hpke-config";
    const m = HPKE_CONFIG_QUERY.exec(t.query);
    if (version === "09" && m !== null && isTaskId(m[1]!)) return "dap-hpke-config";
  }
  return "other";
}

/**
 * `dap` (the default): only the upload and HPKE config routes of the target's draft (see the top of
 * this file); the other draft's forms are refused with a message that names the draft.
 * `targets-only`: any method and path on an allow-listed target.
 */
export function checkPolicy(policy: PolicyName, method: string, t: ResolvedTarget): RouteKind {
  const kind = dapRouteOf(method, t);
  if (policy === "targets-only" || kind !== "other") return kind;
  const version = t.entry.dap;
  if (UPLOAD.test(t.rest) && (method === "PUT" || method === "POST")) {
    throw policyError(
      version === "18"
        ? `this target speaks DAP-18: reports are uploaded with POST ${DAP18_MEDIA_TYPES.uploadRequest}, not with DAP-09's PUT`
        : "this target speaks DAP-09: reports are uploaded one per PUT; DAP-18's multi-report POST is refused",
    );
  }
  if (t.rest === "hpke_config" && method === "GET" && version === "18") {
    throw policyError("this target speaks DAP-18: hpke_config takes no query (DAP-09's ?task_id= is refused)");
  }
  if (UPLOAD.test(t.rest) || t.rest === "hpke_config") throw policyError(`${method} is not allowed on this DAP resource`);
  throw policyError(`only DAP-${version} report uploads and HPKE config requests are allowed`);
}

/**
 * The whole-body check of a DAP-18 upload, after the policy and the token gate and before anything
 * is forwarded: the `application/ppm-dap;message=upload-req` media type, a body that is a whole
 * number of well-formed Reports (DAP_ERR_TRUNCATED / DAP_ERR_FORMAT), and at most `maxReports` of
 * them (GATEWAY_ERR_TOO_MANY_REPORTS), since one token pays for one upload. Pure: it takes the
 * whole body (a chunked OHTTP path must have read it all). Returns the number of reports. It runs
 * after the gate so that a tokenless request (e.g. a client learning the challenge with an empty
 * body) gets the 401 challenge; the request path releases the token when this refuses.
 */
export function checkDapUploadBody(contentType: string | undefined, body: Uint8Array, maxReports: number): number {
  if (!isPpmDapMessage(contentType, "upload-req")) {
    throw new ProtocolError("HTTP_ERR_MEDIA_TYPE", `a DAP-18 upload is ${DAP18_MEDIA_TYPES.uploadRequest}`);
  }
  const n = countReports(body);
  if (n > maxReports) {
    throw new ProtocolError("GATEWAY_ERR_TOO_MANY_REPORTS", `the upload carries ${n} reports; one token pays for at most ${maxReports}`);
  }
  return n;
}

/** checkDapUploadBody for the requests it concerns: DAP-18 uploads under the `dap` policy. */
export function checkDapUpload(
  policy: PolicyName,
  route: RouteKind,
  t: Pick<ResolvedTarget, "entry">,
  request: { headers: readonly Field[]; body: Uint8Array },
  maxReports: number,
): void {
  if (policy !== "dap" || route !== "dap-upload" || t.entry.dap !== "18") return;
  const types = request.headers.filter(([n]) => n === "content-type");
  // Two Content-Type fields name no media type (RFC 9110 §8.3: a request has one).
  checkDapUploadBody(types.length === 1 ? types[0]![1] : undefined, request.body, maxReports);
}

/**
 * The DAP task id an inner path names, for both drafts: the one place it is read (the `taskid`
 * member of problem documents, which @divviup/dap requires on any problem it receives: without it
 * its DAPError constructor throws a TypeError; and anything else keyed by the task). Only a value
 * that decodes to 32 bytes is returned, so the client's TaskId constructor cannot fail on it.
 */
export function dapTaskIdOf(path: string): string | undefined {
  const q = path.indexOf("?");
  const pathname = q < 0 ? path : path.slice(0, q);
  const upload = ANY_UPLOAD.exec(pathname);
  if (upload !== null) return isTaskId(upload[1]!) ? upload[1] : undefined;
  if (q >= 0 && /(?:^|\/)hpke_config$/.test(pathname)) {
    const m = HPKE_CONFIG_QUERY.exec(path.slice(q + 1));
    if (m !== null && isTaskId(m[1]!)) return m[1];
  }
  return undefined;
}
