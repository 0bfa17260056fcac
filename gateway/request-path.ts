// The gateway's request path for one `message/ohttp-req` body (docs/architecture.md, "Request
// path (gateway)", steps 2-7), shared by the Fastify route (routes/gateway.ts) and the lean path
// (routes/lean-gateway.ts), which do step 1 (method, media type, size). Decapsulation failures are
// answered plain (RFC 9458 §5.2); every answer after decapsulation goes back sealed, so the inner
// part never throws: errors become Binary HTTP problem responses (RFC 9457) with the `taskid`
// member on DAP paths.
//
//   decapsulateRequest -> decodeRequest -> Expect check -> resolveTarget -> checkPolicy -> prepareUpstreamRequest
//     -> gate.admit (TOKEN GATE SEAM, gateway/gate-contract.ts)
//     -> checkDapUpload (a DAP-18 upload's whole body: media type, Report framing, reports per
//        token; a refusal releases the token, since nothing reached the target)
//     -> targets.forward -> ticket.settle(reached) -> the target's answer -> encapsulateResponse

import { decodeRequest, encodeResponse, padToMultiple, type BhttpLimits, type BhttpRequest, type BhttpResponse } from "../core/bhttp/index.js";
import { ProtocolError } from "../core/errors.js";
import { decapsulateRequest, type Keyring } from "../core/ohttp/index.js";
import { renderProblem, toProtocolError } from "../server/problem-handler.js";
import { safeError, type Logger } from "../server/logging.js";
import type { PolicyName } from "./config.js";
import type { Gate, GateTicket } from "./gate-contract.js";
import { checkDapUpload, checkPolicy, dapTaskIdOf, resolveTarget, type ResolvedTarget, type RouteKind, type TargetTable } from "./policy.js";
import type { ReplayGuard } from "./replay.js";
import { prepareUpstreamRequest, type ForwardOutcome, type StreamOutcome, type UpstreamRequest } from "./target.js";

/** What the request path needs from the forwarding layer (gateway/target.ts `Targets`). */
export interface Forwarder {
  forward(req: UpstreamRequest): Promise<ForwardOutcome>;
  /** Streams a request body (chunked OHTTP to a targets-only target); without it such bodies are read whole. */
  forwardStream?(req: UpstreamRequest, body: AsyncIterable<Uint8Array>): Promise<StreamOutcome>;
}

export interface RequestPathDeps {
  policy: PolicyName;
  table: TargetTable;
  forwarder: Forwarder;
  gate: Gate;
  bhttpLimits: Partial<BhttpLimits>;
  /** Most reports one DAP-18 upload (paid for by one token) may carry: `tokens.maxReportsPerToken`. */
  maxReportsPerToken: number;
  log: Pick<Logger, "warn" | "error">;
  /** Called with the target's name and the result ("2xx".."5xx" or an error code). */
  onUpstream?: (target: string, result: string) => void;
  /** RFC 9458 §6.5 Date and enc checks (`replay.windowSec` > 0). */
  replay?: ReplayGuard;
  /** Inner responses are padded to a multiple of this many bytes (RFC 9292 §3.8); 0: none. */
  padToBytes: number;
}

export interface InnerResult {
  response: BhttpResponse;
  /** "forwarded" or the error code that was answered (for the log and metrics). */
  outcome: string;
}

/** A sealed problem document: what the gateway says inside the encapsulated response. */
export function problemResponse(e: unknown, taskId: string | undefined): BhttpResponse {
  const p = renderProblem(e, taskId);
  return { informational: [], status: p.status, headers: p.headers, body: p.body, trailers: [] };
}

export function failed(e: unknown, taskId: string | undefined, log: RequestPathDeps["log"]): InnerResult {
  const err = toProtocolError(e);
  if (err.code === "INTERNAL_ERR") log.error({ err: safeError(e) }, "unexpected error in the request path");
  return { response: problemResponse(err, taskId), outcome: err.code };
}

/** "2xx" for 204: the same string each time (a metric label, looked up per request). */
const STATUS_CLASSES = ["0xx", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "7xx", "8xx", "9xx"];
function statusClass(status: number): string {
  return STATUS_CLASSES[Math.floor(status / 100)] ?? `${Math.floor(status / 100)}xx`;
}

function hasExpectation(r: BhttpRequest): boolean {
  return r.headers.some(([n]) => n === "expect");
}

export async function settle(ticket: GateTicket, reached: boolean, log: RequestPathDeps["log"]): Promise<void> {
  try {
    await ticket.settle(reached);
  } catch (e) {
    // The answer still goes back (when reached, the target has maybe processed the request).
    log.warn({ err: safeError(e), reached }, "token settlement failed");
  }
}

/** Steps 2-7 for one decapsulated request; `enc` is its encapsulated key (the replay check's id). */
export async function handleInnerRequest(inner: Uint8Array | BhttpRequest, enc: Uint8Array, deps: RequestPathDeps): Promise<InnerResult> {
  let request: BhttpRequest;
  try {
    request = inner instanceof Uint8Array ? decodeRequest(inner, deps.bhttpLimits) : inner;
  } catch (e) {
    return failed(e, undefined, deps.log);
  }
  const taskId = dapTaskIdOf(request.path);
  let target: ResolvedTarget;
  let ticket: GateTicket;
  let upstream: UpstreamRequest;
  let route: RouteKind;
  try {
    // RFC 9458 §5.1: a 100-continue expectation MUST produce an error (and no other is supported).
    if (hasExpectation(request)) throw new ProtocolError("GATEWAY_ERR_EXPECT");
    await deps.replay?.check(request.headers, enc);
    target = resolveTarget(deps.table, request);
    route = checkPolicy(deps.policy, request.method, target);
    upstream = prepareUpstreamRequest(target, request);
    // ---- token gate seam: after policy, before forwarding ----
    ticket = await deps.gate.admit({ request, target, route, taskId });
  } catch (e) {
    return failed(e, taskId, deps.log);
  }
  try {
    checkDapUpload(deps.policy, route, target, request, deps.maxReportsPerToken);
  } catch (e) {
    // Refused before forwarding: the token is as good as new.
    await settle(ticket, false, deps.log);
    return failed(e, taskId, deps.log);
  }
  const outcome = await deps.forwarder.forward(upstream);
  // ---- token gate seam: release if nothing reached the target, commit otherwise ----
  await settle(ticket, outcome.reached, deps.log);
  if (!outcome.ok) {
    deps.onUpstream?.(target.entry.name, outcome.error.code);
    return failed(outcome.error, taskId, deps.log);
  }
  deps.onUpstream?.(target.entry.name, statusClass(outcome.response.status));
  return { response: outcome.response, outcome: "forwarded" };
}

export interface EncapsulatedRequestDeps {
  keys: Keyring;
  path: RequestPathDeps;
  /** Response nonces (RFC 9458 §4.4); default crypto.getRandomValues. */
  randomBytes?: (n: number) => Uint8Array;
  /** Counts decapsulations by key id (metrics: which keys are still in use). */
  onDecapsulated?: (keyId: number) => void;
}

/** What goes out for one encapsulated request: the sealed answer, or a plain problem (before decapsulation). */
export type OuterAnswer = { ok: true; sealed: Uint8Array; outcome: string } | { ok: false; error: unknown };

/** Steps 2-7 for one `message/ohttp-req` body; shared by the Fastify route and the lean path. */
export async function serveEncapsulatedRequest(body: Uint8Array, deps: EncapsulatedRequestDeps): Promise<OuterAnswer> {
  // Step 2: decapsulate with the key named by the key id.
  let decapsulated;
  try {
    decapsulated = await decapsulateRequest(deps.keys, body, deps.randomBytes === undefined ? {} : { randomBytes: deps.randomBytes });
  } catch (e) {
    return { ok: false, error: e };
  }
  deps.onDecapsulated?.(decapsulated.keyId);
  // Steps 2-7: everything after this point is answered sealed.
  const result = await handleInnerRequest(decapsulated.request, decapsulated.enc, deps.path);
  try {
    const inner = padToMultiple(encodeResponse(result.response), deps.path.padToBytes);
    return { ok: true, sealed: await decapsulated.response.encapsulateResponse(inner), outcome: result.outcome };
  } catch (e) {
    return { ok: false, error: e };
  }
}
