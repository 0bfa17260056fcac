// The issuer's token keys: loading, first-start creation, rotation and persistence.
//
// Rotation (docs/architecture.md "Keys", RFC 9578 §4): each key lives `keyLifetimeSec` (L) from its
// not-before. Keys of one type follow each other every R = L/2: when key i becomes valid, its
// successor i+1 is generated and published with not-before = nb(i) + R, so origins and clients
// see it a whole period before anyone uses it; key i stays valid until nb(i) + L = nb(i+2), so a
// token issued at the last moment a key is preferred is still good for R. At any time the
// directory holds, per type: the successor (not yet valid), the preferred key, the previous key
// (still valid). A key leaves the directory (and the file) when its lifetime ends.
//
// The file is JSON, mode 0600, written atomically (temp file + rename); a file that group or
// others can access is refused. Private keys are held as Secrets and never logged.
//
// {
//   "version": 1,
//   "keys": [ { "tokenType": 2, "notBefore": 1764230400, "tokenKey": "<base64url SPKI>",
//               "privateKey": "<base64 PKCS#8 DER>" },
//             { "tokenType": 1, "notBefore": 1764230400, "tokenKey": "<base64url element>",
//               "privateKey": "<hex scalar>" },      (type 5 as type 1: a ristretto255 scalar)
//             { "tokenType": 58796, "notBefore": 1764230400, "tokenKey": "<base64url X0||X1||X2>",
//               "privateKey": "<hex x0||x1||x2||x0Blinding>" } ]
// }
//
// ARC keys (type 58796 = 0xE5AC) rotate on the same schedule as the others. The gateway reads
// their private keys from this file (or a copy): ARC is privately verifiable.

import { generateKeyPair as generateKeyPairCb, createPrivateKey, randomBytes, type KeyObject } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { equalBytes, fromBase64Url, fromHex, toBase64Url, toHex } from "../core/bytes.js";
import { ProtocolError } from "../core/errors.js";
import { Secret } from "../core/secret.js";
import { ARC_TOKEN_TYPE, TOKEN_TYPE, type TokenType } from "../core/privacypass/token-type.js";
import { deriveKeyPair } from "../core/privacypass/voprf-batch.js";
import { withOprfSuite } from "../core/privacypass/oprf-suite.js";
import { encodeServerPrivateKey, setupServer } from "../core/privacypass/arc/index.js";
import { lockFile } from "../server/file-lock.js";
import { createArcSigner, type ArcSigner } from "./arc-signer.js";
import { createBlindRsaSigner, createVoprfSigner, type Signer } from "./signer.js";

/** The token types the issuer keeps keys for: 1, 2, 5 and ARC (0xE5AC). */
export type IssuerTokenType = TokenType | typeof ARC_TOKEN_TYPE;
const ISSUER_TOKEN_TYPES: readonly number[] = [TOKEN_TYPE.VOPRF_P384, TOKEN_TYPE.BLIND_RSA_2048, TOKEN_TYPE.VOPRF_RISTRETTO255, ARC_TOKEN_TYPE];

function isIssuerTokenType(t: unknown): t is IssuerTokenType {
  return typeof t === "number" && ISSUER_TOKEN_TYPES.includes(t);
}

export const ISSUER_KEY_FILE_VERSION = 1;

export interface IssuerKey {
  readonly tokenType: IssuerTokenType;
  /** UNIX seconds from which the key may be used. */
  readonly notBefore: number;
  /** UNIX seconds at which the key expires: notBefore + keyLifetimeSec. */
  readonly expiresAt: number;
  readonly tokenKey: Uint8Array;
  readonly tokenKeyId: Uint8Array;
  readonly signer: Signer | ArcSigner;
  /** The private key as stored in the file (PKCS#8 DER for type 2, the scalar(s) for types 1 and ARC). */
  readonly privateKey: Secret<Uint8Array>;
}

export interface IssuerKeyStoreOptions {
  file: string;
  tokenTypes: readonly number[];
  keyLifetimeSec: number;
  /** Clock in milliseconds (injected in tests). */
  now?: () => number;
  /** RSA-2048 key generation (injected in tests to reuse pre-generated keys). */
  generateRsaKey?: () => Promise<KeyObject>;
  /** 32-byte seeds for type 1 and 5 DeriveKeyPair. */
  randomSeed?: () => Uint8Array;
  /**
   * Another process creates and rotates the file (the primary of `veil issuer --workers N`): this
   * store never generates or writes keys, it re-reads the file when it changed (checked at most
   * once a second), so every worker publishes the same directory.
   */
  follower?: boolean;
}

/** A follower checks the key file for changes at most this often. */
const FOLLOWER_RECHECK_MS = 1_000;

function fail(file: string, detail: string, cause?: unknown): never {
  throw new ProtocolError("CFG_ERR_KEY_FILE", `${file}: ${detail}`, cause === undefined ? {} : { cause });
}

/** Refuses a key file that is not a regular file or that group/others may access. */
export function checkKeyFileMode(file: string): void {
  const st = statSync(file);
  if (!st.isFile()) fail(file, "is not a regular file");
  if ((st.mode & 0o077) !== 0) {
    fail(file, `is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}); run: chmod 600 ${file}`);
  }
}

export function generateRsa2048(): Promise<KeyObject> {
  return new Promise((resolve, reject) => {
    generateKeyPairCb("rsa", { modulusLength: 2048, publicExponent: 65537 }, (err, _publicKey, privateKey) => {
      if (err) reject(err);
      else resolve(privateKey);
    });
  });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function makeKey(tokenType: IssuerTokenType, notBefore: number, lifetimeSec: number, privateKey: Uint8Array): IssuerKey {
  const signer =
    tokenType === TOKEN_TYPE.BLIND_RSA_2048
      ? createBlindRsaSigner(createPrivateKey({ key: Buffer.from(privateKey), format: "der", type: "pkcs8" }))
      : tokenType === ARC_TOKEN_TYPE
        ? createArcSigner(privateKey)
        : createVoprfSigner(privateKey, tokenType);
  return {
    tokenType,
    notBefore,
    expiresAt: notBefore + lifetimeSec,
    tokenKey: signer.tokenKey,
    tokenKeyId: signer.tokenKeyId,
    signer,
    privateKey: new Secret(privateKey),
  };
}

function parseRecord(file: string, r: unknown, i: number, lifetimeSec: number): IssuerKey {
  const at = `keys[${i}]`;
  if (!isObject(r)) fail(file, `${at}: expected an object`);
  const { tokenType, notBefore, tokenKey, privateKey } = r;
  if (!isIssuerTokenType(tokenType)) fail(file, `${at}.tokenType: expected 1, 2, 5 or ${ARC_TOKEN_TYPE}`);
  if (typeof notBefore !== "number" || !Number.isSafeInteger(notBefore) || notBefore < 0) fail(file, `${at}.notBefore: expected UNIX seconds`);
  if (typeof privateKey !== "string") fail(file, `${at}.privateKey: expected a string`);
  const raw = tokenType === TOKEN_TYPE.BLIND_RSA_2048 ? decodeBase64(privateKey) : decodeHexOrUndefined(privateKey);
  if (raw === undefined) fail(file, `${at}.privateKey: not ${tokenType === 2 ? "base64" : "hex"}`);
  let key: IssuerKey;
  try {
    key = makeKey(tokenType, notBefore, lifetimeSec, raw);
  } catch (e) {
    fail(file, `${at}.privateKey: not a usable type ${tokenType} key`, e);
  }
  if (tokenKey !== undefined) {
    const published = typeof tokenKey === "string" ? fromBase64Url(tokenKey) : undefined;
    if (published === undefined || !equalBytes(published, key.tokenKey)) fail(file, `${at}.tokenKey: does not match the private key`);
  }
  return key;
}

function decodeBase64(s: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) return undefined;
  return new Uint8Array(Buffer.from(s, "base64"));
}

function decodeHexOrUndefined(s: string): Uint8Array | undefined {
  try {
    return fromHex(s);
  } catch {
    return undefined;
  }
}

function serialize(keys: readonly IssuerKey[]): string {
  return (
    JSON.stringify(
      {
        version: ISSUER_KEY_FILE_VERSION,
        keys: keys.map((k) => ({
          tokenType: k.tokenType,
          notBefore: k.notBefore,
          tokenKey: toBase64Url(k.tokenKey, true),
          privateKey:
            k.tokenType === TOKEN_TYPE.BLIND_RSA_2048 ? Buffer.from(k.privateKey.reveal()).toString("base64") : toHex(k.privateKey.reveal()),
        })),
      },
      null,
      2,
    ) + "\n"
  );
}

/** Writes `text` to `file` atomically with mode 0600 (temp file in the same directory, fsync, rename). */
export function writeKeyFileAtomic(file: string, text: string): void {
  const dir = dirname(file);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.${basename(file)}.${randomBytes(6).toString("hex")}.tmp`);
  const fd = openSync(tmp, "wx", 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    unlinkSync(tmp);
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, file);
}

export class IssuerKeyStore {
  readonly file: string;
  readonly #tokenTypes: readonly IssuerTokenType[];
  readonly #lifetimeSec: number;
  readonly #rotationSec: number;
  readonly #now: () => number;
  readonly #generateRsa: () => Promise<KeyObject>;
  readonly #randomSeed: () => Uint8Array;
  #keys: IssuerKey[] = [];
  #nextChangeSec = 0;
  #refreshing: Promise<void> | undefined;
  readonly #follower: boolean;
  #fileMtimeMs = -1;
  #checkedAtMs = 0;

  private constructor(options: IssuerKeyStoreOptions) {
    this.file = options.file;
    this.#tokenTypes = options.tokenTypes.map((t) => {
      if (!isIssuerTokenType(t)) throw new ProtocolError("CFG_ERR_INVALID", `tokenTypes: ${t} is not 1, 2, 5 or ${ARC_TOKEN_TYPE}`);
      return t;
    });
    this.#lifetimeSec = options.keyLifetimeSec;
    this.#rotationSec = Math.max(1, Math.floor(options.keyLifetimeSec / 2));
    this.#now = options.now ?? Date.now;
    this.#generateRsa = options.generateRsaKey ?? generateRsa2048;
    this.#randomSeed = options.randomSeed ?? (() => new Uint8Array(randomBytes(32)));
    this.#follower = options.follower === true;
  }

  /** Follower: re-reads the file if its modification time changed (keeps the old keys on errors). */
  #follow(force: boolean): void {
    const nowMs = this.#now();
    if (!force && nowMs - this.#checkedAtMs < FOLLOWER_RECHECK_MS) return;
    this.#checkedAtMs = nowMs;
    try {
      const mtimeMs = statSync(this.file).mtimeMs;
      if (force || mtimeMs !== this.#fileMtimeMs) {
        checkKeyFileMode(this.file);
        this.#keys = this.#parse(readFileSync(this.file, "utf8"));
        this.#fileMtimeMs = mtimeMs;
      }
    } catch (e) {
      if (force) throw e;
      // A half-written file is impossible (atomic rename); anything else: keep the last good keys.
    }
    this.#nextChangeSec = this.#computeNextChange(this.nowSec());
  }

  /**
   * Loads the key file (refusing one that group/others can access), or creates it (mode 0600)
   * when it does not exist; then generates whatever keys the schedule needs now.
   */
  static async open(options: IssuerKeyStoreOptions): Promise<IssuerKeyStore> {
    const store = new IssuerKeyStore(options);
    if (store.#follower) {
      try {
        store.#follow(true);
      } catch (e) {
        if (e instanceof ProtocolError) throw e;
        fail(options.file, `cannot read key file (${(e as NodeJS.ErrnoException).code ?? "error"})`, e);
      }
      return store;
    }
    let text: string | undefined;
    try {
      checkKeyFileMode(options.file);
      text = readFileSync(options.file, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") {
        if (e instanceof ProtocolError) throw e;
        fail(options.file, `cannot read key file (${(e as NodeJS.ErrnoException).code ?? "error"})`, e);
      }
    }
    if (text !== undefined) {
      store.#keys = store.#parse(text);
      store.#fileMtimeMs = statSync(options.file).mtimeMs;
    }
    await store.refresh({ persist: text === undefined });
    return store;
  }

  #parse(text: string): IssuerKey[] {
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (e) {
      fail(this.file, "is not valid JSON", e);
    }
    if (!isObject(data) || data.version !== ISSUER_KEY_FILE_VERSION || !Array.isArray(data.keys)) {
      fail(this.file, `expected {"version": ${ISSUER_KEY_FILE_VERSION}, "keys": [...]}`);
    }
    return data.keys.map((r, i) => parseRecord(this.file, r, i, this.#lifetimeSec));
  }

  nowSec(): number {
    return Math.floor(this.#now() / 1000);
  }

  /** Rotation step: a no-op (no await) unless a key is due to expire, activate or be created. */
  refresh(options: { persist?: boolean } = {}): Promise<void> {
    if (this.#follower) {
      this.#follow(false);
      return Promise.resolve();
    }
    if (this.#refreshing === undefined) this.#adoptExternalChange();
    if (options.persist !== true && this.nowSec() < this.#nextChangeSec) return Promise.resolve();
    this.#refreshing ??= this.#rotate(options.persist === true).finally(() => {
      this.#refreshing = undefined;
    });
    return this.#refreshing;
  }

  async #rotate(forcePersist: boolean): Promise<void> {
    const now = this.nowSec();
    let changed = forcePersist;
    const live = this.#keys.filter((k) => k.expiresAt > now);
    if (live.length !== this.#keys.length) changed = true;
    const keys = live;
    for (const type of this.#tokenTypes) {
      const ofType = (): IssuerKey[] => keys.filter((k) => k.tokenType === type);
      // A key valid now, or the one `rotateNow` published for the next whole second, covers now.
      if (!ofType().some((k) => k.notBefore <= now + 1)) {
        keys.push(await this.#generate(type, now, keys));
        changed = true;
      }
      const newest = ofType().reduce((a, b) => (b.notBefore > a.notBefore ? b : a));
      if (newest.notBefore <= now) {
        // The successor, published a period ahead. After downtime the grid has slipped: publish it
        // a period from now, but never later than the newest key's expiry (no gap).
        let nb = newest.notBefore + this.#rotationSec;
        if (nb <= now) nb = Math.min(now + this.#rotationSec, newest.expiresAt);
        keys.push(await this.#generate(type, nb, keys));
        changed = true;
      }
    }
    keys.sort((a, b) => a.tokenType - b.tokenType || a.notBefore - b.notBefore);
    if (changed && !this.#write(keys, "unless-rewritten")) return;
    this.#keys = keys;
    this.#nextChangeSec = this.#computeNextChange(now);
  }

  /**
   * Writes `keys` holding the key file's lock (`<file>.lock`, as `veil keys` does for the
   * gateway's). "unless-rewritten": a scheduled step computed from the keys this store last read
   * or wrote; if another process (`veil issuer rotate --now`) rewrote the file since, its keys are
   * taken instead and nothing is written (the step runs again on them when due). Without this, a
   * step due within the second after a rotation (external changes are looked for at most once a
   * second) would put the old keys back. "always": the rotation itself. Returns whether it wrote.
   */
  #write(keys: readonly IssuerKey[], mode: "always" | "unless-rewritten"): boolean {
    mkdirSync(dirname(this.file), { recursive: true, mode: 0o700 });
    const release = lockFile(this.file);
    try {
      if (mode === "unless-rewritten" && this.#fileMtimeMs >= 0 && this.#rewrittenSinceSeen()) {
        checkKeyFileMode(this.file);
        const text = readFileSync(this.file, "utf8");
        this.#fileMtimeMs = statSync(this.file).mtimeMs;
        this.#keys = this.#parse(text);
        this.#nextChangeSec = this.#computeNextChange(this.nowSec());
        return false;
      }
      writeKeyFileAtomic(this.file, serialize(keys));
      this.#fileMtimeMs = statSync(this.file).mtimeMs;
      return true;
    } finally {
      release();
    }
  }

  #rewrittenSinceSeen(): boolean {
    try {
      return statSync(this.file).mtimeMs !== this.#fileMtimeMs;
    } catch {
      return false; // gone: written afresh
    }
  }

  /**
   * Another process rewrote the file (`veil issuer rotate --now`): take its keys. Checked at most
   * once a second; a file that cannot be read keeps the keys held (and is rewritten at the next
   * rotation).
   */
  #adoptExternalChange(): boolean {
    const nowMs = this.#now();
    if (nowMs - this.#checkedAtMs < FOLLOWER_RECHECK_MS) return false;
    this.#checkedAtMs = nowMs;
    try {
      const mtimeMs = statSync(this.file).mtimeMs;
      if (this.#fileMtimeMs < 0 || mtimeMs === this.#fileMtimeMs) {
        this.#fileMtimeMs = mtimeMs;
        return false;
      }
      checkKeyFileMode(this.file);
      this.#keys = this.#parse(readFileSync(this.file, "utf8"));
      this.#fileMtimeMs = mtimeMs;
      this.#nextChangeSec = this.#computeNextChange(this.nowSec());
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Emergency rotation (`veil issuer rotate --now`): for each token type, a new key replaces every
   * other key of the file, so the directory offers only it (and, once the schedule runs, its
   * successor). Tokens of the old keys stop being accepted as soon as gateways see the new
   * directory. Returns the new keys.
   *
   * The new key's not-before is the next whole second after now (not-before is whole seconds),
   * never the current second: a gateway whose nonce store lost data refuses every key whose
   * not-before is at or before the moment it noticed the loss (gateway/store-loss.ts), and that
   * moment may lie in the very second of the rotation (an automated responder is that quick). A
   * not-before strictly after the rotation means no token of the new key can be valid at or before
   * any moment up to the rotation, so such a gateway accepts it. The key is published at once,
   * ahead of its not-before like every successor; gateways and clients use it from that second on.
   */
  async rotateNow(): Promise<IssuerKey[]> {
    if (this.#follower) throw new ProtocolError("CFG_ERR_INVALID", "a follower key store cannot rotate");
    await this.#refreshing;
    const notBefore = Math.floor(this.#now() / 1000) + 1;
    const fresh: IssuerKey[] = [];
    for (const type of this.#tokenTypes) fresh.push(await this.#generate(type, notBefore, this.#keys));
    this.#write(fresh, "always");
    this.#keys = fresh;
    // Its successor is due at its not-before (the running issuer publishes it then).
    this.#nextChangeSec = this.#computeNextChange(this.nowSec());
    return fresh;
  }

  async #generate(tokenType: IssuerTokenType, notBefore: number, existing: readonly IssuerKey[]): Promise<IssuerKey> {
    // RFC 9578 §5.5/§6.5: avoid truncated key id collisions among the keys in rotation.
    const taken = new Set(existing.filter((k) => k.tokenType === tokenType).map((k) => k.tokenKeyId[31]));
    for (let attempt = 0; ; attempt++) {
      let privateKey: Uint8Array;
      if (tokenType === TOKEN_TYPE.BLIND_RSA_2048) {
        const key = await this.#generateRsa();
        privateKey = new Uint8Array(key.export({ format: "der", type: "pkcs8" }));
      } else if (tokenType === ARC_TOKEN_TYPE) {
        // arc-crypto §4.1 SetupServer().
        privateKey = encodeServerPrivateKey(setupServer().privateKey);
      } else {
        // RFC 9578 §5.5: DeriveKeyPair(seed, "PrivacyPass") with a random seed.
        const seed = this.#randomSeed();
        privateKey = withOprfSuite(tokenType, (suite) => deriveKeyPair(suite, seed).skS)!;
      }
      const key = makeKey(tokenType, notBefore, this.#lifetimeSec, privateKey);
      if (!taken.has(key.tokenKeyId[31]) || attempt >= 16) return key;
    }
  }

  #computeNextChange(now: number): number {
    // Keys taken from the file (another process rotated) may lack a successor: a step is due now.
    for (const type of this.#tokenTypes) {
      const ofType = this.#keys.filter((k) => k.tokenType === type);
      if (ofType.length === 0 || ofType.every((k) => k.notBefore <= now)) return now;
    }
    let next = Infinity;
    for (const k of this.#keys) {
      if (k.notBefore > now) next = Math.min(next, k.notBefore);
      next = Math.min(next, k.expiresAt);
    }
    return next;
  }

  /** Seconds until the directory next changes (a key activates or expires). */
  secondsUntilChange(): number {
    return Math.max(0, this.#nextChangeSec - this.nowSec());
  }

  /** The directory's keys: configured types in order, each newest not-before first. */
  published(): IssuerKey[] {
    const now = this.nowSec();
    const out: IssuerKey[] = [];
    for (const type of this.#tokenTypes) {
      out.push(
        ...this.#keys.filter((k) => k.tokenType === type && k.expiresAt > now).sort((a, b) => b.notBefore - a.notBefore),
      );
    }
    return out;
  }

  /** The published key a TokenRequest names (type and truncated key id), newest first. */
  find(tokenType: number, truncatedTokenKeyId: number): IssuerKey | undefined {
    return this.published().find((k) => k.tokenType === tokenType && k.tokenKeyId[31] === truncatedTokenKeyId);
  }

  issues(tokenType: number): boolean {
    return (this.#tokenTypes as readonly number[]).includes(tokenType);
  }
}
