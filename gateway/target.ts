// Talks to the targets (the DAP aggregators): the only file that does. One undici Pool
// per target origin with keep-alive, every timeout explicit (undici's defaults are 300 s), a cap on
// the answer's size. Strips hop-by-hop fields and the Privacy Pass token; adds nothing that could
// identify the client (undici's `request` adds only Host and Content-Length).
//
// Failures are classified for the token gate (docs/architecture.md, "Token spend semantics"): `reached: false` only when no
// byte of the request can have reached the target (connection refused, DNS, connect timeout, TLS
// handshake refused); anything later is "maybe reached" (RFC 9458 §6.5: a broken connection is no
// proof that nothing was processed).

import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import { Readable } from "node:stream";
import { Pool } from "undici";
import { ProtocolError, type ErrorCode } from "../core/errors.js";
import type { BhttpRequest, BhttpResponse, Field } from "../core/bhttp/index.js";
import type { UpstreamConfig } from "./config.js";
import type { ResolvedTarget, TargetTable } from "./policy.js";

/** RFC 9110 §7.6.1 hop-by-hop fields, plus ones the gateway sets itself or must never pass on. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);
/** Request fields the gateway replaces or refuses (Host comes from the upstream URL; Content-Length from the body). */
const REQUEST_DROP = new Set(["host", "content-length", "expect", "http2-settings"]);

/** `Authorization: PrivateToken token=...` (RFC 9577 §2.2): the token never goes upstream. */
function isPrivateToken(value: string): boolean {
  return /^\s*privatetoken(\s|$)/i.test(value);
}

/** Names listed in Connection are hop-by-hop too (RFC 9110 §7.6.1). */
function connectionNominated(fields: readonly Field[]): Set<string> {
  const out = new Set<string>();
  for (const [n, v] of fields) {
    if (n !== "connection") continue;
    for (const t of v.split(",")) {
      const name = t.trim().toLowerCase();
      if (name !== "") out.add(name);
    }
  }
  return out;
}

export interface UpstreamRequest {
  origin: string;
  method: string;
  path: string;
  headers: Record<string, string | string[]>;
  body: Uint8Array | undefined;
}

/** Builds the upstream request: done before the gate, so a malformed request spends no token. */
export function prepareUpstreamRequest(t: ResolvedTarget, inner: BhttpRequest): UpstreamRequest {
  const nominated = connectionNominated(inner.headers);
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of inner.headers) {
    if (HOP_BY_HOP.has(name) || REQUEST_DROP.has(name) || nominated.has(name)) continue;
    if (name === "authorization" && isPrivateToken(value)) continue;
    const prev = headers[name];
    if (prev === undefined) headers[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else headers[name] = [prev, value];
  }
  const bodyless = inner.method === "GET" || inner.method === "HEAD";
  if (bodyless && inner.body.length > 0) {
    throw new ProtocolError("HTTP_ERR_BAD_REQUEST", `${inner.method} request with content is not forwarded`);
  }
  // Trailers of the inner request are not forwarded: no target the gateway serves uses them.
  return {
    origin: t.entry.upstreamOrigin,
    method: inner.method,
    path: t.upstreamPath,
    headers,
    body: bodyless ? undefined : inner.body,
  };
}

/**
 * A streamed answer: the head now, the body as the target sends it (it throws if the answer breaks
 * off, passes upstream.maxResponseBytes or the total deadline), and its trailers once the body has
 * ended.
 */
export type StreamOutcome =
  | { ok: true; reached: true; status: number; headers: Field[]; body: AsyncIterable<Uint8Array>; trailers: () => Field[] }
  | { ok: false; reached: boolean; error: ProtocolError };

export type ForwardOutcome =
  | { ok: true; reached: true; response: BhttpResponse }
  | { ok: false; reached: boolean; error: ProtocolError };

/** Error codes (on the error or its causes) that prove no request byte left the gateway. */
const NOT_REACHED = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EAI_NONAME",
  "EAI_FAIL",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EADDRNOTAVAIL",
  "UND_ERR_CONNECT_TIMEOUT",
  // TLS verification fails during the handshake, before the request is written.
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
]);
const TIMEOUTS = new Set(["UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT"]);

function errorCodes(e: unknown): string[] {
  const codes: string[] = [];
  for (let cur: unknown = e, depth = 0; cur !== null && typeof cur === "object" && depth < 5; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === "string") codes.push(code);
    // AggregateError (happy-eyeballs connect attempts) keeps the per-address errors in `errors`.
    const errors = (cur as { errors?: unknown }).errors;
    if (Array.isArray(errors)) for (const inner of errors) codes.push(...errorCodes(inner));
    cur = (cur as { cause?: unknown }).cause;
  }
  return codes;
}

/** Classifies a forwarding failure: which sealed status, and whether the target may have seen it. */
export function classifyFailure(e: unknown, timedOut: boolean): { code: ErrorCode; reached: boolean } {
  if (e instanceof ProtocolError) return { code: e.code, reached: true };
  const codes = errorCodes(e);
  if (codes.includes("UND_ERR_CONNECT_TIMEOUT")) return { code: "GATEWAY_ERR_UPSTREAM_TIMEOUT", reached: false };
  if (codes.length > 0 && codes.every((c) => NOT_REACHED.has(c))) return { code: "GATEWAY_ERR_UPSTREAM_UNREACHABLE", reached: false };
  if (timedOut || codes.some((c) => TIMEOUTS.has(c))) return { code: "GATEWAY_ERR_UPSTREAM_TIMEOUT", reached: true };
  if (codes.includes("UND_ERR_RES_EXCEEDED_MAX_SIZE")) return { code: "GATEWAY_ERR_UPSTREAM_TOO_LARGE", reached: true };
  return { code: "GATEWAY_ERR_UPSTREAM_FAILED", reached: true };
}

function responseFields(headers: Record<string, string | string[] | undefined>): Field[] {
  const connection = headers.connection;
  // Names listed in Connection (RFC 9110 §7.6.1); usually "keep-alive" or none.
  const nominated = connection === undefined ? undefined : connectionNominated([["connection", Array.isArray(connection) ? connection.join(",") : connection]]);
  const out: Field[] = [];
  // undici gives lowercase names.
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP.has(name) || nominated?.has(name) === true) continue;
    if (typeof value === "string") out.push([name, value]);
    else for (const v of value) out.push([name, v]);
  }
  return out;
}

/** The gateway's connection pools to its targets. */
export class Targets {
  readonly #pools = new Map<string, Pool>();
  /** The same without maxResponseBytes: streamed answers are never held whole (chunked OHTTP). */
  readonly #streamPools = new Map<string, Pool>();
  readonly #config: UpstreamConfig;

  constructor(table: TargetTable, config: UpstreamConfig) {
    this.#config = config;
    const ca = config.ca === undefined ? undefined : readFileSync(config.ca);
    for (const e of table.entries) {
      if (this.#pools.has(e.upstreamOrigin)) continue;
      const options = {
          connections: config.connectionsPerTarget,
          pipelining: 1,
          connectTimeout: config.connectTimeoutMs,
          headersTimeout: config.headersTimeoutMs,
          bodyTimeout: config.bodyTimeoutMs,
          keepAliveTimeout: config.keepAliveTimeoutMs,
          keepAliveMaxTimeout: config.keepAliveTimeoutMs,
          maxResponseSize: config.maxResponseBytes,
          connect: {
            timeout: config.connectTimeoutMs,
            rejectUnauthorized: true,
            ...(ca === undefined ? {} : { ca }),
          },
        };
      this.#pools.set(e.upstreamOrigin, new Pool(e.upstreamOrigin, options));
      this.#streamPools.set(e.upstreamOrigin, new Pool(e.upstreamOrigin, { ...options, maxResponseSize: -1 }));
    }
  }

  /** Sends the request; never throws (failures come back classified). */
  async forward(req: UpstreamRequest): Promise<ForwardOutcome> {
    const pool = this.#pools.get(req.origin);
    if (pool === undefined) {
      return { ok: false, reached: false, error: new ProtocolError("INTERNAL_ERR", "no pool for target") };
    }
    const deadline = this.#deadline();
    const { abort, timer } = deadline;
    try {
      const res = await pool.request({
        method: req.method,
        path: req.path,
        headers: req.headers,
        body: req.body === undefined ? null : Buffer.from(req.body.buffer, req.body.byteOffset, req.body.byteLength),
        signal: abort,
      });
      this.#refuseDeclaredTooLarge(res);
      // The Pool's maxResponseSize cuts off a longer (e.g. chunked) body with
      // UND_ERR_RES_EXCEEDED_MAX_SIZE, classified as GATEWAY_ERR_UPSTREAM_TOO_LARGE.
      const body = new Uint8Array(await res.body.arrayBuffer());
      return {
        ok: true,
        reached: true,
        response: {
          informational: [],
          status: res.statusCode,
          headers: responseFields(res.headers),
          body,
          trailers: [],
        },
      };
    } catch (e) {
      const { code, reached } = classifyFailure(e, deadline.timedOut);
      return { ok: false, reached, error: e instanceof ProtocolError ? e : new ProtocolError(code, undefined, { cause: e }) };
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The deadline of a whole exchange (totalTimeoutMs). An EventEmitter is a valid undici `signal`
   * and costs far less per request than an AbortController (measured in bench/gateway.ts).
   */
  #deadline(): { abort: EventEmitter; timer: NodeJS.Timeout; timedOut: boolean } {
    const d = { abort: new EventEmitter(), timedOut: false };
    const timer = setTimeout(() => {
      d.timedOut = true;
      d.abort.emit("abort");
    }, this.#config.totalTimeoutMs);
    return Object.assign(d, { timer });
  }

  /** An answer that declares a length over maxResponseBytes is refused before its body is read. */
  #refuseDeclaredTooLarge(res: { headers: Record<string, string | string[] | undefined>; body: { destroy(): unknown } }): void {
    const max = this.#config.maxResponseBytes;
    const declared = Number(res.headers["content-length"]);
    if (Number.isFinite(declared) && declared > max) {
      res.body.destroy();
      throw new ProtocolError("GATEWAY_ERR_UPSTREAM_TOO_LARGE", `target answer exceeds ${max} bytes`);
    }
  }

  /**
   * Streams `body` to the target as it comes (chunked transfer coding, no Content-Length, so a
   * body that fails midway never reaches the target as a complete request) and resolves with the
   * answer's head as soon as the target sends it, possibly before the request body is finished.
   * The same limits as `forward`, applied as the bytes pass: totalTimeoutMs over the whole exchange
   * (request and answer), bodyTimeoutMs between the answer's chunks, maxResponseBytes on the
   * answer's body (a declared larger length is refused before anything is passed on; a longer
   * stream fails when it passes the cap), plus whatever `body` enforces between the request's.
   */
  async forwardStream(req: UpstreamRequest, body: AsyncIterable<Uint8Array>): Promise<StreamOutcome> {
    const pool = this.#streamPools.get(req.origin);
    if (pool === undefined) {
      return { ok: false, reached: false, error: new ProtocolError("INTERNAL_ERR", "no pool for target") };
    }
    const deadline = this.#deadline();
    const timer = deadline.timer;
    const max = this.#config.maxResponseBytes;
    try {
      const res = await pool.request({ method: req.method, path: req.path, headers: req.headers, body: Readable.from(body, { objectMode: false }), signal: deadline.abort });
      this.#refuseDeclaredTooLarge(res);
      async function* capped(): AsyncGenerator<Uint8Array> {
        let n = 0;
        try {
          for await (const piece of res.body as AsyncIterable<Buffer>) {
            n += piece.length;
            if (n > max) throw new ProtocolError("GATEWAY_ERR_UPSTREAM_TOO_LARGE", `target answer exceeds ${max} bytes`);
            yield piece;
          }
        } catch (e) {
          const { code } = classifyFailure(e, deadline.timedOut);
          throw e instanceof ProtocolError ? e : new ProtocolError(code, undefined, { cause: e });
        } finally {
          clearTimeout(timer);
          res.body.destroy();
        }
      }
      return {
        ok: true,
        reached: true,
        status: res.statusCode,
        headers: responseFields(res.headers),
        body: capped(),
        trailers: () => responseFields(res.trailers),
      };
    } catch (e) {
      clearTimeout(timer);
      const { code, reached } = classifyFailure(e, deadline.timedOut);
      return { ok: false, reached, error: e instanceof ProtocolError ? e : new ProtocolError(code, undefined, { cause: e }) };
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.#pools.values(), ...this.#streamPools.values()].map((p) => p.close()));
  }
}
