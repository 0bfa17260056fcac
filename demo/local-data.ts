// What `npm start` keeps under ./data (created on first start, reused after):
//
//   gateway-keys.json   OHTTP key file of the gateway (`veil keys` format, mode 0600)
//   issuer-keys.json    token keys of the issuer (created and rotated by the issuer, mode 0600)
//   gateway-nonces.db   spent tokens (SQLite: survives restarts, shared by worker processes)
//   attester.db         the issuer's token counts per credential and window (SQLite, no credentials)
//   demo-task.json      the demo DAP task: id, VDAF, and the seeds of the leader's and helper's
//                       HPKE keys (mode 0600: they decrypt the reports)
//   demo-credential     the demo client's attester credential (mode 0600)
//   relay.json, gateway.json, issuer.json
//                       the configurations the servers run with: `veil gateway --config
//                       data/gateway.json` runs the same gateway on its own (issuer.json holds the
//                       credential: mode 0600)
//   demo.json           where everything runs, written on each start; `veil demo` reads it
//
// Nothing here is printed: keys and the credential stay in their files.

import { randomBytes } from "node:crypto";
import { chmodSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { AeadId, CipherSuite, KdfId, KemId } from "hpke-js";
import { fromBase64Url, fromHex, toBase64Url, toHex } from "../core/bytes.js";
import { ProtocolError } from "../core/errors.js";
import { KEM, generateGatewayKey } from "../core/ohttp/index.js";
import { Secret } from "../core/secret.js";
import { KEY_FILE_VERSION, writeKeyFile } from "../gateway/key-file.js";
import type { DapHpkeKey, DapTask } from "./dap-aggregator.js";
import type { DemoVdaf } from "./prio3-aggregate.js";

export const DATA_FILES = Object.freeze({
  gatewayKeys: "gateway-keys.json",
  issuerKeys: "issuer-keys.json",
  nonces: "gateway-nonces.db",
  attesterDb: "attester.db",
  task: "demo-task.json",
  credential: "demo-credential",
  relayConfig: "relay.json",
  gatewayConfig: "gateway.json",
  issuerConfig: "issuer.json",
  state: "demo.json",
});

function fail(file: string, detail: string, cause?: unknown): never {
  throw new ProtocolError("CFG_ERR_KEY_FILE", `${file}: ${detail}`, cause === undefined ? {} : { cause });
}

/** Writes `text` atomically (temp file + rename) with `mode`, never wider in between. */
export function writeFileAtomic(file: string, text: string, mode: number): void {
  const tmp = join(dirname(file), `.${basename(file)}.${randomBytes(6).toString("hex")}.tmp`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, "wx", mode);
    writeSync(fd, text);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    chmodSync(tmp, mode);
    renameSync(tmp, file);
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // already gone
    }
    fail(file, `cannot write (${(e as NodeJS.ErrnoException).code ?? "error"})`, e);
  }
}

/** Reads a secret file, refusing one that group or others can access. */
export function readSecretFile(file: string): string {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch (e) {
    fail(file, `cannot read (${(e as NodeJS.ErrnoException).code ?? "error"})`, e);
  }
  if ((mode & 0o077) !== 0) fail(file, `is accessible by group or others (mode ${(mode & 0o777).toString(8)}); run: chmod 600 ${file}`);
  return readFileSync(file, "utf8");
}

/** Creates the data directory (mode 0700) if needed; returns its absolute path. */
export function ensureDataDir(dir: string): string {
  const abs = resolve(dir);
  if (!existsSync(abs)) mkdirSync(abs, { recursive: true, mode: 0o700 });
  if (!statSync(abs).isDirectory()) fail(abs, "is not a directory");
  return abs;
}

/** The gateway's key file: one active X25519 key on first start. */
export async function ensureGatewayKeys(dir: string): Promise<{ file: string; created: boolean }> {
  const file = join(dir, DATA_FILES.gatewayKeys);
  if (existsSync(file)) return { file, created: false };
  const { key, privateKey } = await generateGatewayKey(1, KEM.X25519);
  const at = new Date().toISOString();
  writeKeyFile(file, {
    version: KEY_FILE_VERSION,
    keys: [
      {
        keyId: 1,
        kemId: key.config.kemId,
        symmetric: key.config.symmetric.map((s) => ({ ...s })),
        state: "active",
        createdAt: at,
        activatedAt: at,
        publicKey: key.config.publicKey,
        privateKey: new Secret(privateKey),
      },
    ],
  });
  return { file, created: true };
}

/** The demo client's credential (a random bearer token), created on first start. */
export function ensureCredential(dir: string): { file: string; credential: Secret<string>; created: boolean } {
  const file = join(dir, DATA_FILES.credential);
  if (existsSync(file)) return { file, credential: new Secret(readSecretFile(file).trim()), created: false };
  const credential = toBase64Url(new Uint8Array(randomBytes(32)), false);
  writeFileAtomic(file, credential + "\n", 0o600);
  return { file, credential: new Secret(credential), created: true };
}

/*
 * demo-task.json (mode 0600):
 *   { "version": 1, "taskId": "<base64url, 32 bytes>", "vdaf": { "vdaf": "count" },
 *     "timePrecisionSec": 300,
 *     "leader": { "configId": 1, "seed": "<hex>" }, "helper": { "configId": 2, "seed": "<hex>" } }
 * The HPKE keys are derived from the seeds (RFC 9180 DeriveKeyPair), DAP-09's mandatory suite.
 */
export interface DemoTaskFile {
  version: 1;
  taskId: string;
  vdaf: DemoVdaf;
  timePrecisionSec: number;
  leader: { configId: number; seed: string };
  helper: { configId: number; seed: string };
}

export interface DemoTask {
  task: DapTask;
  vdaf: DemoVdaf;
  timePrecisionSec: number;
}

const DEMO_VDAF: DemoVdaf = { vdaf: "count" };
/** The demo task's defaults: Prio3Count ("did this happen? yes/no"), 5-minute time precision. */
export const DEMO_TASK_DEFAULTS = Object.freeze({ vdaf: DEMO_VDAF, timePrecisionSec: 300 });

async function deriveDapKey(configId: number, seedHex: string): Promise<DapHpkeKey> {
  const suite = new CipherSuite({ kem: KemId.DhkemX25519HkdfSha256, kdf: KdfId.HkdfSha256, aead: AeadId.Aes128Gcm });
  const pair = await suite.kem.deriveKeyPair(fromHex(seedHex));
  const publicKey = new Uint8Array(await suite.kem.serializePublicKey(pair.publicKey));
  return {
    config: { id: configId, kemId: KemId.DhkemX25519HkdfSha256, kdfId: KdfId.HkdfSha256, aeadId: AeadId.Aes128Gcm, publicKey },
    privateKey: pair.privateKey,
  };
}

function parseTaskFile(file: string, text: string): DemoTaskFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    fail(file, "is not valid JSON", e instanceof Error ? { name: e.name } : undefined);
  }
  const t = raw as Partial<DemoTaskFile> | null;
  const seedOk = (k: unknown): boolean =>
    typeof k === "object" && k !== null && typeof (k as { seed?: unknown }).seed === "string" && /^[0-9a-f]{64}$/.test((k as { seed: string }).seed) &&
    Number.isInteger((k as { configId?: unknown }).configId);
  if (t === null || typeof t !== "object" || t.version !== 1 || typeof t.taskId !== "string" || !/^[A-Za-z0-9_-]{43}$/.test(t.taskId)) {
    fail(file, 'expected {"version": 1, "taskId": "<base64url>", ...}; delete it to start over');
  }
  if (!seedOk(t.leader) || !seedOk(t.helper) || typeof t.vdaf !== "object" || t.vdaf === null || !Number.isInteger(t.timePrecisionSec)) {
    fail(file, "leader, helper, vdaf or timePrecisionSec is malformed; delete it to start over");
  }
  return t as DemoTaskFile;
}

/** The demo DAP task: created on first start, the same task (and aggregator keys) after. */
export async function ensureDemoTask(dir: string): Promise<DemoTask & { created: boolean }> {
  const file = join(dir, DATA_FILES.task);
  let created = false;
  let t: DemoTaskFile;
  if (existsSync(file)) {
    t = parseTaskFile(file, readSecretFile(file));
  } else {
    t = {
      version: 1,
      taskId: toBase64Url(new Uint8Array(randomBytes(32)), false),
      vdaf: DEMO_TASK_DEFAULTS.vdaf,
      timePrecisionSec: DEMO_TASK_DEFAULTS.timePrecisionSec,
      leader: { configId: 1, seed: toHex(new Uint8Array(randomBytes(32))) },
      helper: { configId: 2, seed: toHex(new Uint8Array(randomBytes(32))) },
    };
    writeFileAtomic(file, JSON.stringify(t, null, 2) + "\n", 0o600);
    created = true;
  }
  const id = fromBase64Url(t.taskId);
  if (id?.length !== 32) fail(file, "taskId is not 32 bytes of base64url; delete the file to start over");
  const task: DapTask = {
    id,
    idBase64Url: t.taskId,
    leaderKeys: [await deriveDapKey(t.leader.configId, t.leader.seed)],
    helperKeys: [await deriveDapKey(t.helper.configId, t.helper.seed)],
  };
  return { task, vdaf: t.vdaf, timePrecisionSec: t.timePrecisionSec, created };
}

/** demo.json: where the running system is, for `veil demo` (no secrets: the credential is a file name). */
export interface DemoState {
  version: 1;
  /** Process id of `veil start` (so `veil demo` can tell a stale file). */
  pid: number;
  startedAt: string;
  /** POST encapsulated requests here (the relay resource for the gateway). */
  relay: string;
  /** The gateway's own key configurations. */
  keys: string;
  /** The relay's copy of them (clients compare the two). */
  relayKeys: string;
  issuer: string;
  gateway: string;
  /** The inner origins the client addresses (the gateway maps them to the aggregators). */
  leader: string;
  helper: string;
  taskId: string;
  vdaf: DemoVdaf;
  timePrecisionSec: number;
  credentialFile: string;
  /** CA certificate to trust, when the servers serve HTTPS. */
  ca?: string;
}

export function writeDemoState(dir: string, state: DemoState): string {
  const file = join(dir, DATA_FILES.state);
  writeFileAtomic(file, JSON.stringify(state, null, 2) + "\n", 0o644);
  return file;
}

export function readDemoState(dir: string): DemoState {
  const file = join(resolve(dir), DATA_FILES.state);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new ProtocolError("CFG_ERR_INVALID", `${file} not found: start the system first (npm start)`, { cause: e });
  }
  let s: Partial<DemoState>;
  try {
    s = JSON.parse(text) as Partial<DemoState>;
  } catch (e) {
    throw new ProtocolError("CFG_ERR_INVALID", `${file} is not valid JSON: restart the system (npm start)`, { cause: e });
  }
  for (const k of ["relay", "keys", "relayKeys", "issuer", "leader", "helper", "taskId", "credentialFile"] as const) {
    if (typeof s[k] !== "string") throw new ProtocolError("CFG_ERR_INVALID", `${file}: ${k} is missing: restart the system (npm start)`);
  }
  return s as DemoState;
}
