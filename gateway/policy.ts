// What the gateway lets through after decapsulation (design.md "Request path (gateway)", step 3):
// the inner request's scheme + authority (+ optional path prefix) must name a configured target
// (an allow-list: RFC 9458 §6.3, never an open proxy), and under the `dap` policy only DAP-09's
// upload and key-config routes pass.

import { ProtocolError } from "../core/errors.js";
import type { Field } from "../core/bhttp/index.js";
import type { PolicyName } from "./config.js";

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
}

export interface TargetTable {
  readonly entries: readonly TargetEntry[];
}

function withSlash(p: string): string {
  return p.endsWith("/") ? p : p + "/";
}

/** Compiles `targets` (validated by config.ts). Longest prefixes first, so they win. */
export function compileTargets(targets: Readonly<Record<string, string>>): TargetTable {
  const entries = Object.entries(targets).map(([name, upstream]): TargetEntry => {
    const inner = new URL(name);
    const up = new URL(upstream);
    return {
      name,
      protocol: inner.protocol,
      host: inner.host,
      prefix: withSlash(inner.pathname),
      upstreamOrigin: up.origin,
      upstreamBasePath: withSlash(up.pathname),
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

/** The DAP shape of a path after the target prefix, whatever the policy. */
export function dapRouteOf(method: string, t: Pick<ResolvedTarget, "rest" | "query">): RouteKind {
  const upload = UPLOAD.exec(t.rest);
  if (upload !== null && method === "PUT" && t.query === "" && isTaskId(upload[1]!)) return "dap-upload";
  if (t.rest === "hpke_config" && method === "GET") {
    const m = HPKE_CONFIG_QUERY.exec(t.query);
    if (t.query === "" || (m !== null && isTaskId(m[1]!))) return "dap-hpke-config";
  }
  return "other";
}

/**
 * `dap` (the default): only DAP-09 `PUT <prefix>tasks/{id}/reports` (one report per request, what
 * @divviup/dap 0.9 sends) and `GET <prefix>hpke_config` with or without `?task_id=`. Later drafts'
 * `POST` uploads carry many reports, so one token would stand for many: refused.
 * `targets-only`: any method and path on an allow-listed target.
 */
export function checkPolicy(policy: PolicyName, method: string, t: ResolvedTarget): RouteKind {
  const kind = dapRouteOf(method, t);
  if (policy === "targets-only" || kind !== "other") return kind;
  if (UPLOAD.test(t.rest) && method === "POST") {
    throw policyError("multi-report POST uploads are refused: one token must stand for one report (use DAP-09 PUT)");
  }
  if (UPLOAD.test(t.rest) || t.rest === "hpke_config") throw policyError(`${method} is not allowed on this DAP resource`);
  throw policyError("only DAP-09 report uploads and HPKE config requests are allowed");
}

/**
 * The DAP task id an inner path names (for the `taskid` member of problem documents, which
 * @divviup/dap requires on any problem it receives: dap-09 notes §4, gotcha 3). Only a value that
 * decodes to 32 bytes is returned, so the client's TaskId constructor cannot fail on it.
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
