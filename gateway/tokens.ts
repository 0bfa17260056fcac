// Builds the token gate from `tokens` of the gateway config: the trusted issuers' directories,
// the double-spend store named by `tokens.store`, type 1, type 5 and ARC keys from the issuer's key
// file (when the same operator runs both) and the epoch secret. gateway/main.ts calls createTokenGate at start-up.

import { readFileSync, statSync } from "node:fs";
import type { Registry } from "prom-client";
import { ProtocolError } from "../core/errors.js";
import { fromHex, toHex } from "../core/bytes.js";
import { TOKEN_TYPE } from "../core/privacypass/index.js";
import { importVoprfPrivateKey, importVoprfRistrettoPrivateKey, type VerificationKey } from "../core/privacypass/verify-node.js";
import type { Logger } from "../server/logging.js";
import type { TokensConfig } from "./config.js";
import { TokenGate, contextPrf } from "./gate.js";
import { ArcVerifier, readArcKeys, type ArcIssuer, type ArcKey } from "./arc-verifier.js";
import { TokenKeyDirectory, type DirectoryFetcher, type IssuerSource } from "./issuer-directory.js";
import { RedisNonceStore, describeNonceStore, openNonceStore } from "./nonce-stores/index.js";
import { StoreLossGuard } from "./store-loss.js";

/** A key file is re-read at most this often (and only when its modification time changed). */
const KEY_FILE_RECHECK_MS = 1_000;

function refuseLooseMode(file: string, what: string): void {
  const st = statSync(file);
  if (!st.isFile()) throw new ProtocolError("CFG_ERR_KEY_FILE", `${what} ${file}: not a regular file`);
  if ((st.mode & 0o077) !== 0) {
    throw new ProtocolError("CFG_ERR_KEY_FILE", `${what} ${file}: accessible by group or others; run: chmod 600 ${file}`);
  }
}

/**
 * The type 1 and type 5 (VOPRF) private keys of an issuer key file (issuer/key-store.ts format:
 * `{ "version": 1, "keys": [ { "tokenType": 1, "privateKey": "<hex scalar>", ... } ] }`).
 * Throws CFG_ERR_KEY_FILE for an unreadable, malformed or loosely protected file.
 */
export function readVoprfKeys(file: string): VerificationKey[] {
  let doc: unknown;
  try {
    refuseLooseMode(file, "issuer key file");
    doc = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    throw new ProtocolError("CFG_ERR_KEY_FILE", `issuer key file ${file}: unreadable or not JSON`, { cause: e });
  }
  const keys = (doc as { keys?: unknown }).keys;
  if (!Array.isArray(keys)) throw new ProtocolError("CFG_ERR_KEY_FILE", `issuer key file ${file}: no keys list`);
  const out: VerificationKey[] = [];
  for (const k of keys as unknown[]) {
    const e = k as { tokenType?: unknown; privateKey?: unknown };
    if (e.tokenType !== TOKEN_TYPE.VOPRF_P384 && e.tokenType !== TOKEN_TYPE.VOPRF_RISTRETTO255) continue;
    if (typeof e.privateKey !== "string") throw new ProtocolError("CFG_ERR_KEY_FILE", `issuer key file ${file}: type ${e.tokenType} key without privateKey`);
    try {
      const skS = fromHex(e.privateKey);
      out.push(e.tokenType === TOKEN_TYPE.VOPRF_P384 ? importVoprfPrivateKey(skS) : importVoprfRistrettoPrivateKey(skS));
    } catch (err) {
      throw new ProtocolError("CFG_ERR_KEY_FILE", `issuer key file ${file}: unusable type ${e.tokenType} private key`, { cause: err });
    }
  }
  return out;
}

/** Re-reads the file when it changed (the issuer rotates keys); keeps the last good keys on errors. */
function followKeyFile<K>(file: string, read: (file: string) => K[], log: Pick<Logger, "warn">, now: () => number): () => readonly K[] {
  let keys = read(file);
  let mtimeMs = statSync(file).mtimeMs;
  let checkedAt = now();
  return () => {
    if (now() - checkedAt < KEY_FILE_RECHECK_MS) return keys;
    checkedAt = now();
    try {
      const m = statSync(file).mtimeMs;
      if (m !== mtimeMs) {
        keys = read(file);
        mtimeMs = m;
      }
    } catch (e) {
      log.warn({ file, code: e instanceof ProtocolError ? e.code : "error" }, "issuer key file re-read failed: keeping its last keys");
    }
    return keys;
  };
}

/** The ARC keys of an issuer key file that only its owner can read (CFG_ERR_KEY_FILE otherwise). */
function readProtectedArcKeys(file: string): ArcKey[] {
  try {
    refuseLooseMode(file, "ARC issuer key file");
    return readArcKeys(file);
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    throw new ProtocolError("CFG_ERR_KEY_FILE", `ARC issuer key file ${file}: unreadable`, { cause: e });
  }
}

function readEpochSecret(file: string): Uint8Array {
  let bytes: Uint8Array;
  try {
    refuseLooseMode(file, "tokens.epochSecretFile");
    bytes = new Uint8Array(readFileSync(file));
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    throw new ProtocolError("CFG_ERR_KEY_FILE", `tokens.epochSecretFile ${file}: unreadable`, { cause: e });
  }
  if (bytes.length < 32) throw new ProtocolError("CFG_ERR_KEY_FILE", `tokens.epochSecretFile ${file}: needs at least 32 bytes`);
  return bytes;
}

export interface CreateTokenGateDeps {
  log: Pick<Logger, "warn" | "info" | "error">;
  registry?: Registry;
  now?: () => number;
  fetcher?: DirectoryFetcher;
}

/** The gate for `tokens` (fetches the issuer directories once; an unreachable issuer is not fatal). */
export async function createTokenGate(tokens: TokensConfig, deps: CreateTokenGateDeps): Promise<TokenGate> {
  const now = deps.now ?? Date.now;
  const providers = tokens.issuers.filter((i) => i.keyFile !== undefined).map((i) => followKeyFile(i.keyFile!, readVoprfKeys, deps.log, now));
  const voprfKeys = (): VerificationKey[] => {
    const seen = new Set<string>();
    const out: VerificationKey[] = [];
    for (const p of providers) {
      for (const k of p()) {
        const id = toHex(k.tokenKeyId);
        if (!seen.has(id)) {
          seen.add(id);
          out.push(k);
        }
      }
    }
    return out;
  };
  const sources: IssuerSource[] = tokens.issuers.map((i) => ({ name: i.name, directory: i.directory, keyLifetimeSec: i.keyLifetimeSec }));
  const directory = new TokenKeyDirectory(sources, {
    now,
    voprfKeys,
    onEvent: (e) => deps.log.warn({ issuer: e.issuer, detail: e.detail }, e.what),
    ...(deps.fetcher === undefined ? {} : { fetcher: deps.fetcher }),
  });
  const epochSecret = tokens.epochSecretFile === undefined ? undefined : readEpochSecret(tokens.epochSecretFile);
  const arc = new ArcVerifier(
    tokens.issuers
      .filter((i) => i.tokenType === "arc")
      .map((i): ArcIssuer => {
        const keys = followKeyFile(i.keys!, readProtectedArcKeys, deps.log, now);
        return {
          name: i.name,
          rateLimit: i.rateLimit!,
          keyLifetimeSec: i.keyLifetimeSec,
          redemptionContext: i.redemptionContext ?? "task-epoch",
          credentialContext: i.credentialContext ?? "none",
          keys,
        };
      }),
    { prf: (data) => contextPrf(epochSecret, data), epochSec: tokens.epochSec },
  );
  const lossGuard = new StoreLossGuard({ directory, arc, log: deps.log, now, ...(deps.registry === undefined ? {} : { registry: deps.registry }) });
  const store = openNonceStore(tokens.store, { now, durability: tokens.storeDurability, onLoss: (loss) => lossGuard.noteLoss(loss) });
  try {
    // Redis: refuse settings that would let it forget spent tokens, and read its loss marker.
    if (store instanceof RedisNonceStore) await store.start();
  } catch (e) {
    await store.close();
    throw e;
  }
  const gate = new TokenGate(
    {
      originInfo: tokens.originInfo,
      redemptionContext: tokens.redemptionContext,
      epochSec: tokens.epochSec,
      clockSkewSec: tokens.clockSkewSec,
      greaseProbability: tokens.greaseProbability,
      ...(epochSecret === undefined ? {} : { epochSecret }),
    },
    { directory, store, now, arc, lossGuard, ...(deps.registry === undefined ? {} : { registry: deps.registry }) },
  );
  await directory.start();
  deps.log.info(
    {
      store: describeNonceStore(tokens.store),
      issuers: directory.issuers.map((d) => ({ name: d.source.name, fetched: d.fetched, keys: d.validKeys().length })),
    },
    "token gate ready",
  );
  return gate;
}
