// The gateway's OHTTP key file: several keys at once, each with a lifecycle (docs/architecture.md, "Keys").
//
//   pending  - in the file (so every replica has it), decrypts, not yet published on /ohttp-keys;
//   active   - published on /ohttp-keys and decrypts;
//   retired  - no longer published; still decrypts for a grace period after `retiredAt` (clients
//              cache key configs), then is refused as an unknown key.
//
// The file is JSON, mode 0600, written atomically (temp file + rename). It holds private keys, so
// it is refused when group or others can read it, and nothing here ever prints a private key:
// records hold them as `Secret`s, and error messages name fields, never values.
//
// Writers (`veil keys`) change the file by read-modify-write under an exclusive lock, `<file>.lock`
// (withFileLock, server/file-lock.ts): without it, two commands at once (an operator's rotation and a cron prune)
// would both read the old file and the last rename would silently drop the other's change. The
// gateway only reads the file (at start and on SIGHUP) and every write is an atomic rename, so a
// reader always sees a whole file, old or new, and takes no lock.
//
// {
//   "version": 1,
//   "keys": [ { "keyId": 1, "kem": "x25519", "kemId": 32,
//               "symmetric": [ { "kdfId": 1, "aeadId": 1 } ],
//               "state": "active", "createdAt": "2025-01-01T00:00:00.000Z",
//               "activatedAt": "2025-01-01T00:00:00.000Z",
//               "publicKey": "<hex>", "privateKey": "<hex>" } ]
// }

import { closeSync, fsyncSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { dirname, basename, join } from "node:path";
import { randomBytes } from "node:crypto";
import { ProtocolError } from "../core/errors.js";
import { Secret } from "../core/secret.js";
import { fromHex, toHex } from "../core/bytes.js";
import { KEM, isAeadId, isKdfId, isKemId } from "../core/ohttp/constants.js";
import type { SymmetricSuite } from "../core/ohttp/key-config.js";

export const KEY_FILE_VERSION = 1;
export const KEY_STATES = ["pending", "active", "retired"] as const;
export type KeyState = (typeof KEY_STATES)[number];

/** Command-line and file names of the KEMs (RFC 9180 §7.1 ids). */
export const KEM_NAMES = { x25519: KEM.X25519, p256: KEM.P256, "x-wing": KEM.XWING } as const;
export type KemName = keyof typeof KEM_NAMES;

export function kemName(kemId: number): KemName | undefined {
  for (const [name, id] of Object.entries(KEM_NAMES)) if (id === kemId) return name as KemName;
  return undefined;
}

export interface KeyRecord {
  keyId: number;
  kemId: number;
  symmetric: SymmetricSuite[];
  state: KeyState;
  createdAt: string;
  activatedAt?: string;
  retiredAt?: string;
  publicKey: Uint8Array;
  privateKey: Secret<Uint8Array>;
}

export interface KeyFileData {
  version: typeof KEY_FILE_VERSION;
  keys: KeyRecord[];
}

function fail(file: string, detail: string, cause?: unknown): never {
  throw new ProtocolError("CFG_ERR_KEY_FILE", `${file}: ${detail}`, cause === undefined ? {} : { cause });
}

/** Refuses a key file that is not a regular file or that group/others may read or write. */
export function checkKeyFileMode(file: string): void {
  let st;
  try {
    st = statSync(file);
  } catch (e) {
    fail(file, `cannot read key file (${(e as NodeJS.ErrnoException).code ?? "error"})`, e);
  }
  if (!st.isFile()) fail(file, "is not a regular file");
  if ((st.mode & 0o077) !== 0) {
    fail(file, `is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}); run: chmod 600 ${file}`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const HEX = /^(?:[0-9a-f]{2})+$/;
const RECORD_FIELDS = ["keyId", "kem", "kemId", "symmetric", "state", "createdAt", "activatedAt", "retiredAt", "publicKey", "privateKey"];

function parseTime(file: string, where: string, v: unknown, optional: boolean): string | undefined {
  if (v === undefined && optional) return undefined;
  if (typeof v !== "string" || Number.isNaN(Date.parse(v))) fail(file, `${where}: expected an ISO date`);
  return v;
}

function parseRecord(file: string, raw: unknown, i: number): KeyRecord {
  const where = `keys[${i}]`;
  if (!isObject(raw)) fail(file, `${where}: expected an object`);
  for (const k of Object.keys(raw)) if (!RECORD_FIELDS.includes(k)) fail(file, `${where}.${k}: unknown field`);
  const { keyId, kemId, symmetric, state, publicKey, privateKey } = raw;
  if (typeof keyId !== "number" || !Number.isInteger(keyId) || keyId < 0 || keyId > 255) fail(file, `${where}.keyId: expected 0..255`);
  if (typeof kemId !== "number" || !isKemId(kemId)) fail(file, `${where}.kemId: expected one of ${Object.values(KEM_NAMES).join(", ")}`);
  if (raw.kem !== undefined && raw.kem !== kemName(kemId)) fail(file, `${where}.kem: does not match kemId`);
  if (!Array.isArray(symmetric) || symmetric.length === 0) fail(file, `${where}.symmetric: expected a non-empty list`);
  const suites = symmetric.map((s: unknown, j) => {
    if (!isObject(s) || typeof s.kdfId !== "number" || typeof s.aeadId !== "number" || !isKdfId(s.kdfId) || !isAeadId(s.aeadId)) {
      fail(file, `${where}.symmetric[${j}]: expected { kdfId, aeadId } with supported ids`);
    }
    return { kdfId: s.kdfId, aeadId: s.aeadId };
  });
  if (typeof state !== "string" || !(KEY_STATES as readonly string[]).includes(state)) fail(file, `${where}.state: expected ${KEY_STATES.join(" | ")}`);
  if (typeof publicKey !== "string" || !HEX.test(publicKey)) fail(file, `${where}.publicKey: expected lowercase hex`);
  // Never echo the private key, not even a prefix of it.
  if (typeof privateKey !== "string" || !HEX.test(privateKey)) fail(file, `${where}.privateKey: expected lowercase hex`);
  const record: KeyRecord = {
    keyId,
    kemId,
    symmetric: suites,
    state: state as KeyState,
    createdAt: parseTime(file, `${where}.createdAt`, raw.createdAt, false)!,
    publicKey: fromHex(publicKey),
    privateKey: new Secret(fromHex(privateKey)),
  };
  const activatedAt = parseTime(file, `${where}.activatedAt`, raw.activatedAt, true);
  const retiredAt = parseTime(file, `${where}.retiredAt`, raw.retiredAt, state !== "retired");
  if (activatedAt !== undefined) record.activatedAt = activatedAt;
  if (retiredAt !== undefined) record.retiredAt = retiredAt;
  return record;
}

/** Parses key file text (already read); validates every field; key ids must be unique. */
export function parseKeyFile(file: string, text: string): KeyFileData {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    // JSON.parse's message quotes the input, which holds private keys: not passed on.
    fail(file, "is not valid JSON", e instanceof Error ? { name: e.name } : undefined);
  }
  if (!isObject(raw)) fail(file, "expected a JSON object");
  for (const k of Object.keys(raw)) if (k !== "version" && k !== "keys") fail(file, `${k}: unknown field`);
  if (raw.version !== KEY_FILE_VERSION) fail(file, `version: expected ${KEY_FILE_VERSION}`);
  if (!Array.isArray(raw.keys)) fail(file, "keys: expected a list");
  const keys = raw.keys.map((r: unknown, i) => parseRecord(file, r, i));
  const seen = new Set<number>();
  for (const k of keys) {
    if (seen.has(k.keyId)) fail(file, `key id ${k.keyId} appears twice`);
    seen.add(k.keyId);
  }
  return { version: KEY_FILE_VERSION, keys };
}

/** Reads and validates a key file; refuses it if its mode lets group or others in. */
export function readKeyFile(file: string): KeyFileData {
  checkKeyFileMode(file);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    fail(file, `cannot read key file (${(e as NodeJS.ErrnoException).code ?? "error"})`, e);
  }
  return parseKeyFile(file, text);
}

/** The file's JSON text, private keys included: only ever written to the key file itself. */
export function serializeKeyFile(data: KeyFileData): string {
  const keys = data.keys.map((k) => {
    const out: Record<string, unknown> = {
      keyId: k.keyId,
      kem: kemName(k.kemId),
      kemId: k.kemId,
      symmetric: k.symmetric.map((s) => ({ kdfId: s.kdfId, aeadId: s.aeadId })),
      state: k.state,
      createdAt: k.createdAt,
    };
    if (k.activatedAt !== undefined) out.activatedAt = k.activatedAt;
    if (k.retiredAt !== undefined) out.retiredAt = k.retiredAt;
    out.publicKey = toHex(k.publicKey);
    out.privateKey = toHex(k.privateKey.reveal());
    return out;
  });
  return JSON.stringify({ version: data.version, keys }, null, 2) + "\n";
}

/**
 * Writes the key file atomically with mode 0600: a temp file in the same directory (created 0600,
 * never wider), fsync, rename over the target. A reader (the gateway on SIGHUP) sees the old or the
 * new file, never half of one.
 */
export function writeKeyFile(file: string, data: KeyFileData): void {
  const tmp = join(dirname(file), `.${basename(file)}.${randomBytes(6).toString("hex")}.tmp`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, "wx", 0o600);
    writeSync(fd, serializeKeyFile(data));
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, file);
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // already gone
    }
    fail(file, `cannot write key file (${(e as NodeJS.ErrnoException).code ?? "error"})`, e);
  }
  try {
    const dir = openSync(dirname(file), "r");
    fsyncSync(dir);
    closeSync(dir);
  } catch {
    // Directory fsync is best effort (not supported everywhere).
  }
}


/** The lowest free key id after the highest one in use (wrapping), so fresh ids are not reused soon. */
export function nextKeyId(keys: readonly KeyRecord[]): number {
  const used = new Set(keys.map((k) => k.keyId));
  const start = keys.length === 0 ? 1 : (Math.max(...used) + 1) % 256;
  for (let i = 0; i < 256; i++) {
    const id = (start + i) % 256;
    if (!used.has(id)) return id;
  }
  throw new ProtocolError("CFG_ERR_KEY_FILE", "all 256 key ids are in use: remove retired keys first (veil keys prune)");
}

export interface AddKeyOptions {
  /** Time of the change (ISO strings are written to the file). */
  now: Date;
  /**
   * When the new key is active, active keys of the same KEM become retired (a rotation) unless
   * this is set. Several KEMs may be active at once (e.g. X25519 and X-Wing).
   */
  keepActive?: boolean;
}

/** Adds `record` (rotation when it is active): returns the new file contents and the retired ids. */
export function addKey(data: KeyFileData, record: KeyRecord, opts: AddKeyOptions): { data: KeyFileData; retired: number[] } {
  if (data.keys.some((k) => k.keyId === record.keyId)) {
    throw new ProtocolError("CFG_ERR_KEY_FILE", `key id ${record.keyId} is already in the file`);
  }
  const at = opts.now.toISOString();
  const retired: number[] = [];
  const keys = data.keys.map((k) => {
    if (record.state === "active" && opts.keepActive !== true && k.state === "active" && k.kemId === record.kemId) {
      retired.push(k.keyId);
      return { ...k, state: "retired" as const, retiredAt: at };
    }
    return k;
  });
  keys.push(record);
  return { data: { version: KEY_FILE_VERSION, keys }, retired };
}

/** Moves a key to `state` (pending -> active -> retired; a retired key cannot come back). */
export function setKeyState(data: KeyFileData, keyId: number, state: KeyState, now: Date): KeyFileData {
  const key = data.keys.find((k) => k.keyId === keyId);
  if (key === undefined) throw new ProtocolError("CFG_ERR_KEY_FILE", `no key with id ${keyId}`);
  const order = KEY_STATES.indexOf(state) - KEY_STATES.indexOf(key.state);
  if (order < 0) throw new ProtocolError("CFG_ERR_KEY_FILE", `key ${keyId} is ${key.state}: it cannot become ${state}`);
  if (order === 0) return data;
  const at = now.toISOString();
  const next: KeyRecord = { ...key, state };
  if (state === "active") next.activatedAt = at;
  if (state === "retired") next.retiredAt = at;
  return { version: KEY_FILE_VERSION, keys: data.keys.map((k) => (k.keyId === keyId ? next : k)) };
}

/** Removes retired keys whose grace period is over (deleting keys is what gives forward secrecy). */
export function pruneKeys(data: KeyFileData, graceSec: number, now: Date): { data: KeyFileData; removed: number[] } {
  const removed: number[] = [];
  const keys = data.keys.filter((k) => {
    const over = k.state === "retired" && k.retiredAt !== undefined && Date.parse(k.retiredAt) + graceSec * 1000 <= now.getTime();
    if (over) removed.push(k.keyId);
    return !over;
  });
  return { data: { version: KEY_FILE_VERSION, keys }, removed };
}

/** What `veil keys list` shows: never a private key. */
export interface KeySummary {
  keyId: number;
  kem: string;
  kemId: number;
  suites: string[];
  state: KeyState;
  createdAt: string;
  activatedAt?: string;
  retiredAt?: string;
  publicKey: string;
}

const KDF_NAMES: Record<number, string> = { 1: "hkdf-sha256", 2: "hkdf-sha384", 3: "hkdf-sha512" };
const AEAD_NAMES: Record<number, string> = { 1: "aes-128-gcm", 2: "aes-256-gcm", 3: "chacha20-poly1305" };

export function suiteName(s: SymmetricSuite): string {
  return `${KDF_NAMES[s.kdfId] ?? s.kdfId}/${AEAD_NAMES[s.aeadId] ?? s.aeadId}`;
}

export function summarizeKeys(data: KeyFileData): KeySummary[] {
  return data.keys.map((k) => {
    const s: KeySummary = {
      keyId: k.keyId,
      kem: kemName(k.kemId) ?? String(k.kemId),
      kemId: k.kemId,
      suites: k.symmetric.map(suiteName),
      state: k.state,
      createdAt: k.createdAt,
      publicKey: toHex(k.publicKey),
    };
    if (k.activatedAt !== undefined) s.activatedAt = k.activatedAt;
    if (k.retiredAt !== undefined) s.retiredAt = k.retiredAt;
    return s;
  });
}
