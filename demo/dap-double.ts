// What the DAP-09 and the DAP-18 aggregator doubles share: HPKE keys and their config lists (the
// same HpkeConfig struct in both drafts), HPKE SealBase/OpenBase through stock hpke-js, body reading
// with a cap, the rejection type, and a small node:http(s) server. The doubles are small servers of
// their own on purpose: they must not share the gateway's plumbing, so a bug there cannot hide a bug
// here.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { AeadId, CipherSuite, KdfId, KemId } from "hpke-js";
import { ByteReader, ByteWriter, fromBase64Url } from "../core/bytes.js";
import type { DapHpkeCiphertext } from "../core/dap/index.js";

/** dap-09 §3.2 and dap-18 §3.6: problem types live in this URN namespace. */
export const DAP_ERROR_URN = "urn:ietf:params:ppm:dap:error:";

/** dap-09 §4.1 and dap-18 §4.1 `enum { collector(0), client(1), leader(2), helper(3) } Role`. */
export const DAP_ROLE = { client: 1, leader: 2, helper: 3 } as const;
export type DapRole = "leader" | "helper";

export const TEXT = new TextEncoder();

/** `"dap-NN input share" || 0x01 || server_role` (dap-09 §4.4.2, dap-18 §4.4.2.1). */
export function inputShareInfoFor(draft: "09" | "18", role: DapRole): Uint8Array {
  const label = TEXT.encode(`dap-${draft} input share`);
  const info = new Uint8Array(label.length + 2);
  info.set(label);
  info[label.length] = DAP_ROLE.client;
  info[label.length + 1] = DAP_ROLE[role];
  return info;
}

/*
 * dap-09 §4.4.1, dap-18 §4.4.1:
 *   struct {
 *     HpkeConfigId id;            // uint8
 *     HpkeKemId kem_id;           // uint16
 *     HpkeKdfId kdf_id;           // uint16
 *     HpkeAeadId aead_id;         // uint16
 *     HpkePublicKey public_key;   // opaque HpkePublicKey<1..2^16-1>
 *   } HpkeConfig;
 *   HpkeConfig HpkeConfigList<1..2^16-1>;      (dap-18: <10..2^16-1>, i.e. at least one config)
 */
export interface DapHpkeConfig {
  id: number;
  kemId: number;
  kdfId: number;
  aeadId: number;
  publicKey: Uint8Array;
}

/** An HPKE key of one aggregator: the public config and the private key. */
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
function suiteFor(c: Pick<DapHpkeConfig, "kemId" | "kdfId" | "aeadId">): CipherSuite {
  const name = `${c.kemId}/${c.kdfId}/${c.aeadId}`;
  let s = suites.get(name);
  if (s === undefined) {
    s = new CipherSuite({ kem: c.kemId as KemId, kdf: c.kdfId as KdfId, aead: c.aeadId as AeadId });
    suites.set(name, s);
  }
  return s;
}

/**
 * A new HPKE key for a DAP aggregator. The default suite is the one both drafts make mandatory
 * (dap-09 §6, dap-18 §7): DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-128-GCM.
 */
export async function createDapHpkeKey(
  id: number,
  suite: { kemId?: number; kdfId?: number; aeadId?: number } = {},
): Promise<DapHpkeKey> {
  const kemId = suite.kemId ?? KemId.DhkemX25519HkdfSha256;
  const kdfId = suite.kdfId ?? KdfId.HkdfSha256;
  const aeadId = suite.aeadId ?? AeadId.Aes128Gcm;
  const s = suiteFor({ kemId, kdfId, aeadId });
  const pair = await s.kem.generateKeyPair();
  const publicKey = new Uint8Array(await s.kem.serializePublicKey(pair.publicKey));
  return { config: { id, kemId, kdfId, aeadId, publicKey }, privateKey: pair.privateKey };
}

/** RFC 9180 §6.1 OpenBase with the key's suite; throws (hpke-js's error) when it fails. */
export async function openBase(key: DapHpkeKey, info: Uint8Array, enc: Uint8Array, payload: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
  const pt = await suiteFor(key.config).open({ recipientKey: key.privateKey, enc: enc.slice(), info }, payload.slice(), aad);
  return new Uint8Array(pt);
}

/** RFC 9180 §6.1 SealBase to an aggregator's config (what a DAP client does). */
export async function sealBase(config: DapHpkeConfig, info: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Promise<{ enc: Uint8Array; payload: Uint8Array }> {
  const s = suiteFor(config);
  const recipientPublicKey = await s.kem.deserializePublicKey(config.publicKey.slice().buffer);
  const sealed = await s.seal({ recipientPublicKey, info }, plaintext.slice(), aad);
  return { enc: new Uint8Array(sealed.enc), payload: new Uint8Array(sealed.ct) };
}

/*
 * dap-09 §4.1, dap-18 §4.1 (the same struct in both):
 *   struct { HpkeConfigId config_id; opaque enc<1..2^16-1>; opaque payload<1..2^32-1>; } HpkeCiphertext;
 */
export function decodeHpkeCiphertext(r: ByteReader, who: string): DapHpkeCiphertext {
  const configId = r.u8(`${who} config_id`);
  const enc = r.bytes(r.u16(`${who} enc length`), `${who} enc`);
  const payload = r.bytes(r.u32(`${who} payload length`), `${who} payload`);
  if (enc.length === 0) throw new Reject(400, "invalidMessage", `${who} enc is empty`);
  if (payload.length === 0) throw new Reject(400, "invalidMessage", `${who} payload is empty`);
  return { configId, enc, payload };
}

/** A refusal: a problem document of `problemType` (a DAP type, or a URI), or a bare status. */
export class Reject extends Error {
  constructor(
    readonly status: number,
    readonly problemType: string | undefined,
    detail: string,
    readonly taskId?: string,
  ) {
    super(detail);
  }
}

export function readBody(req: IncomingMessage, max: number): Promise<Uint8Array> {
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

export function send(res: ServerResponse, status: number, headers: Record<string, string>, body?: Uint8Array): void {
  res.writeHead(status, { ...headers, "content-length": String(body?.length ?? 0) });
  res.end(body);
}

/** What a double saw on the wire, for tests that check what a proxy forwarded. */
export interface ReceivedRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  bodyBytes: number;
}

export interface ListeningDouble {
  /** Base URL, e.g. `http://127.0.0.1:40123/`. */
  url: string;
  port: number;
  close(): Promise<void>;
}

/**
 * Listens with `handle` (errors it throws are answered 500) and records each request's method,
 * path, headers and declared body size into `received` (at most `maxRecorded` entries).
 */
export async function listenDouble(
  opts: { host?: string | undefined; port?: number | undefined; tls?: { cert: string | Buffer; key: string | Buffer } | undefined },
  received: ReceivedRequest[],
  maxRecorded: number,
  handle: (req: IncomingMessage, res: ServerResponse) => Promise<void>,
): Promise<ListeningDouble> {
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    if (received.length < maxRecorded) {
      received.push({ method: req.method ?? "", path: req.url ?? "", headers: { ...req.headers }, bodyBytes: Number(req.headers["content-length"] ?? 0) });
    }
    handle(req, res).catch(() => {
      if (!res.headersSent) send(res, 500, { "content-type": "text/plain" }, TEXT.encode("internal error"));
    });
  };
  const server: Server =
    opts.tls === undefined ? createServer(onRequest) : createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }, onRequest);
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
    url: `${opts.tls === undefined ? "http" : "https"}://${host}:${addr.port}/`,
    port: addr.port,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * Answers a Reject: a bare text status when it names no problem type (what Janus 0.7 answers to a
 * bad media type or task id), else an RFC 9457 problem document with the DAP `taskid` member.
 * A type with a ":" is a URI of its own (e.g. "about:blank"); others are DAP error types.
 */
export function sendReject(res: ServerResponse, r: Reject, titles: Readonly<Record<string, string>>, rejections: Map<string, number>): void {
  const kind = r.problemType ?? "badRequest";
  rejections.set(kind, (rejections.get(kind) ?? 0) + 1);
  if (r.problemType === undefined) {
    send(res, r.status, { "content-type": "text/plain" }, TEXT.encode(r.message));
    return;
  }
  const problem: Record<string, string | number> = {
    type: r.problemType.includes(":") ? r.problemType : DAP_ERROR_URN + r.problemType,
    title: titles[r.problemType] ?? r.problemType,
    status: r.status,
    detail: r.message,
  };
  if (r.taskId !== undefined) problem.taskid = r.taskId;
  send(res, r.status, { "content-type": "application/problem+json" }, TEXT.encode(JSON.stringify(problem)));
}

export interface DapRoutes {
  /** PUT (dap-09) or POST (dap-18). */
  uploadMethod: "PUT" | "POST";
  hpkeConfig(url: URL, res: ServerResponse): void;
  upload(taskIdText: string, req: IncomingMessage, res: ServerResponse): Promise<void>;
  titles: Readonly<Record<string, string>>;
  rejections: Map<string, number>;
}

/**
 * The two resources of a DAP aggregator's upload interface (both drafts): `GET {base}/hpke_config`
 * and `{uploadMethod} {base}/tasks/{task-id}/reports`; 405 for other methods, 404 elsewhere, and a
 * Reject thrown by a handler answered by sendReject.
 */
export async function routeDapRequest(req: IncomingMessage, res: ServerResponse, routes: DapRoutes): Promise<void> {
  const url = new URL(req.url ?? "/", "http://double.invalid");
  const upload = /^\/tasks\/([^/]*)\/reports$/.exec(url.pathname);
  const method = url.pathname === "/hpke_config" ? "GET" : upload !== null ? routes.uploadMethod : undefined;
  try {
    if (method === undefined || req.method !== method) {
      req.resume();
      if (method === undefined) send(res, 404, { "content-type": "text/plain" }, TEXT.encode("not found"));
      else send(res, 405, { allow: method });
    } else if (upload === null) {
      req.resume();
      routes.hpkeConfig(url, res);
    } else {
      await routes.upload(upload[1] ?? "", req, res);
    }
  } catch (e) {
    if (!(e instanceof Reject)) throw e;
    sendReject(res, e, routes.titles, routes.rejections);
  }
}

/** The client side of encodeHpkeConfigList: strict, nothing left over. */
export function decodeHpkeConfigList(b: Uint8Array): DapHpkeConfig[] {
  const outer = new ByteReader(b, "DAP_ERR_TRUNCATED", "DAP_ERR_FORMAT");
  const r = new ByteReader(outer.bytes(outer.u16("HpkeConfigList length"), "HpkeConfigList"), "DAP_ERR_FORMAT", "DAP_ERR_FORMAT");
  outer.end("HpkeConfigList");
  const configs: DapHpkeConfig[] = [];
  while (!r.done) {
    configs.push({ id: r.u8("id"), kemId: r.u16("kem_id"), kdfId: r.u16("kdf_id"), aeadId: r.u16("aead_id"), publicKey: r.bytes(r.u16("public_key length"), "public_key").slice() });
  }
  return configs;
}

/** Options both doubles take. */
export interface DapDoubleOptions {
  role: DapRole;
  host?: string;
  /** 0 (the default) picks a free port. */
  port?: number;
  /** Clock in ms (injected for tests). */
  now?: () => number;
  /** Leeway for reports from the future before they are refused as too early (default 300 s). */
  tolerableClockSkewSec?: number;
  /** What a replayed report id gets: silently accepted again ("accept", as Janus) or refused. */
  duplicates?: "accept" | "reject";
  /** Largest request body accepted (default 1 MiB); larger gets 413. */
  maxBodyBytes?: number;
  /** Expected leader share length (e.g. 48 for Prio3Count); a report whose share differs is refused. */
  leaderShareLength?: number;
  /** Keeps at most this many `received` entries (default 10,000). */
  maxRecorded?: number;
  /** Serve HTTPS with this certificate chain and key (PEM). */
  tls?: { cert: string | Buffer; key: string | Buffer };
}

/** What both doubles offer a test, once listening. */
export interface DapDouble<R> {
  readonly role: DapRole;
  /** Base URL, e.g. `http://127.0.0.1:40123/`. */
  readonly url: string;
  readonly port: number;
  /** Accepted reports by task id (base64url). */
  readonly reports: Map<string, R[]>;
  /** Refusals by kind (DAP problem type, ReportError name, or "badRequest" for bare 400s). */
  readonly rejections: Map<string, number>;
  readonly received: ReceivedRequest[];
  readonly counts: { hpkeConfig: number; uploads: number; accepted: number };
  acceptedCount(): number;
  close(): Promise<void>;
}

/** A task id in a path: 43 base64url characters (32 bytes). */
export const TASK_ID = /^[A-Za-z0-9_-]{43}$/;

/**
 * The checks before an upload's body means anything (both drafts, in Janus's order): the media
 * type, a task id that decodes to 32 bytes (both answered 400 with `problemType`: a bare status
 * in dap-09, `about:blank` in dap-18), then the body, read up to `maxBodyBytes`.
 */
export async function readUpload(
  req: IncomingMessage,
  taskIdText: string,
  o: { mediaTypeOk: boolean; mediaType: string; problemType: string | undefined; maxBodyBytes: number },
): Promise<Uint8Array> {
  if (!o.mediaTypeOk) {
    req.resume();
    throw new Reject(400, o.problemType, `Content-Type must be ${o.mediaType}`);
  }
  const taskIdBytes = TASK_ID.test(taskIdText) ? fromBase64Url(taskIdText) : undefined;
  if (taskIdBytes?.length !== 32) {
    req.resume();
    throw new Reject(400, o.problemType, "invalid TaskId");
  }
  return readBody(req, o.maxBodyBytes);
}

/**
 * True the first time a report id is seen for a task (then remembered): replays are ignored or
 * refused by the caller, never counted again.
 */
export function firstSeen(seen: Set<string>, taskId: string, reportId: string): boolean {
  const key = `${taskId}/${reportId}`;
  if (seen.has(key)) return false;
  seen.add(key);
  return true;
}

/** Appends an accepted report to its task's list. */
export function storeReport<R>(reports: Map<string, R[]>, taskId: string, report: R): void {
  let list = reports.get(taskId);
  if (list === undefined) reports.set(taskId, (list = []));
  list.push(report);
}

/**
 * Stronger than a leader: opens the helper's share too (role 0x03, same AAD) when the double holds
 * the helper key of its config id; undefined without one. Throws when it does not open.
 */
export async function openHelperShare(
  helperKeys: readonly DapHpkeKey[],
  ct: DapHpkeCiphertext,
  info: Uint8Array,
  aad: Uint8Array,
  payloadOf: (plaintext: Uint8Array) => Uint8Array,
): Promise<Uint8Array | undefined> {
  const key = helperKeys.find((k) => k.config.id === ct.configId);
  if (key === undefined) return undefined;
  return payloadOf(await openBase(key, info, ct.enc, ct.payload, aad));
}
