// `veil keys`: create, rotate, import and list the gateway's OHTTP keys (gateway/key-file.ts).
//
//   veil keys generate --out FILE [--key-id N] [--kem x25519|p256|x-wing] [--state active|pending]
//   veil keys import   --out FILE --key-id N --kem x25519 --private-key HEX|-
//   veil keys list     FILE [--json]
//   veil keys activate FILE --key-id N        (pending -> active; other active keys of its KEM retire)
//   veil keys retire   FILE --key-id N
//   veil keys prune    FILE [--grace-sec S]   (deletes retired keys whose grace period is over)
//
// Nothing here prints a private key. Every command that changes FILE holds its lock (FILE.lock) from
// the read to the atomic rename, so concurrent commands (a rotation and a cron prune) never lose
// each other's change; a second command waits a few seconds, then fails (CFG_ERR_KEY_FILE_LOCKED).

import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { ProtocolError, isProtocolError } from "../core/errors.js";
import { Secret } from "../core/secret.js";
import { fromHex } from "../core/bytes.js";
import { AEAD, KDF } from "../core/ohttp/constants.js";
import type { SymmetricSuite } from "../core/ohttp/key-config.js";
import { generateGatewayKey, importGatewayKey } from "../core/ohttp/index.js";
import {
  KEM_NAMES,
  KEY_FILE_VERSION,
  addKey,
  checkKeyFileMode,
  nextKeyId,
  pruneKeys,
  readKeyFile,
  setKeyState,
  summarizeKeys,
  writeKeyFile,
  type KemName,
  type KeyFileData,
  type KeyRecord,
  type KeyState,
} from "./key-file.js";
import { withFileLock } from "../server/file-lock.js";
import { DEFAULTS as GATEWAY_DEFAULTS } from "./config.js";

export interface KeysCommandDeps {
  /** Where normal output goes (default stdout). */
  print?: (line: string) => void;
  /** Where errors go (default stderr). */
  printError?: (line: string) => void;
  now?: () => Date;
  /** Reads the private key for `--private-key -` (default: stdin). */
  readStdin?: () => string;
}

const AEAD_NAMES: Record<string, number> = {
  "aes-128-gcm": AEAD.AES128GCM,
  "aes-256-gcm": AEAD.AES256GCM,
  "chacha20-poly1305": AEAD.CHACHA20POLY1305,
};
const KDF_NAMES: Record<string, number> = { "hkdf-sha256": KDF.SHA256, "hkdf-sha384": KDF.SHA384, "hkdf-sha512": KDF.SHA512 };

function parseKeyId(v: string): number {
  if (!/^\d{1,3}$/.test(v) || Number(v) > 255) throw new InvalidArgumentError("expected a key id 0..255");
  return Number(v);
}

function parseSeconds(v: string): number {
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError("expected a whole number of seconds");
  return Number(v);
}

function suitesFrom(kdf: string, aeads: string | undefined): SymmetricSuite[] | undefined {
  if (aeads === undefined && kdf === "hkdf-sha256") return undefined; // the library's default list
  const kdfId = KDF_NAMES[kdf];
  if (kdfId === undefined) throw new ProtocolError("CFG_ERR_INVALID", `--kdf: expected one of ${Object.keys(KDF_NAMES).join(", ")}`);
  const names = (aeads ?? "aes-128-gcm,chacha20-poly1305").split(",").map((s) => s.trim());
  return names.map((n) => {
    const aeadId = AEAD_NAMES[n];
    if (aeadId === undefined) throw new ProtocolError("CFG_ERR_INVALID", `--aead: expected a list of ${Object.keys(AEAD_NAMES).join(", ")}`);
    return { kdfId, aeadId };
  });
}

/** Reads FILE if it exists (checking its mode), or starts an empty one. */
function openOrCreate(file: string): KeyFileData {
  if (!existsSync(file)) return { version: KEY_FILE_VERSION, keys: [] };
  checkKeyFileMode(file);
  return readKeyFile(file);
}

function ensureDir(file: string): void {
  const dir = dirname(file);
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
}

export function keysCommand(deps: KeysCommandDeps = {}): Command {
  const print = deps.print ?? ((line: string) => process.stdout.write(line + "\n"));
  const printError = deps.printError ?? ((line: string) => process.stderr.write(line + "\n"));
  const now = deps.now ?? (() => new Date());
  const readStdin = deps.readStdin ?? (() => readFileSync(0, "utf8"));

  /** Commander actions: a ProtocolError becomes one line on stderr and exit code 1 (no stack). */
  const action =
    <A extends unknown[]>(fn: (...args: A) => Promise<void> | void) =>
    async (...args: A): Promise<void> => {
      try {
        await fn(...args);
      } catch (e) {
        if (!isProtocolError(e)) throw e;
        printError(`veil keys: ${e.message}`);
        process.exitCode = 1;
      }
    };

  /** Runs a read-modify-write of `file` under its lock; tells the operator when it has to wait. */
  const locked = <T>(file: string, fn: () => T | Promise<T>): Promise<T> =>
    withFileLock(file, fn, { onWait: (why) => printError(`veil keys: ${why}`) });

  const store = (file: string, data: KeyFileData, record: KeyRecord, keepActive: boolean): void => {
    const { data: next, retired } = addKey(data, record, { now: now(), keepActive });
    writeKeyFile(file, next);
    const kem = Object.entries(KEM_NAMES).find(([, id]) => id === record.kemId)?.[0];
    print(
      `key ${record.keyId} (${kem}, ${record.state}) written to ${file}` +
        (retired.length > 0 ? `; retired key(s) ${retired.join(", ")}` : ""),
    );
  };

  const newRecord = (keyId: number, kemId: number, symmetric: SymmetricSuite[], publicKey: Uint8Array, privateKey: Uint8Array, state: KeyState): KeyRecord => {
    const at = now().toISOString();
    const record: KeyRecord = { keyId, kemId, symmetric, state, createdAt: at, publicKey, privateKey: new Secret(privateKey) };
    if (state === "active") record.activatedAt = at;
    return record;
  };

  const kemOption = (): Option =>
    new Option("--kem <kem>", "key encapsulation mechanism").choices(Object.keys(KEM_NAMES)).default("x25519");
  const stateOption = (): Option =>
    new Option("--state <state>", "lifecycle state of the new key (pending: in the file, not yet published)")
      .choices(["active", "pending"])
      .default("active");
  const keepActiveHelp = "do not retire the active keys of the same KEM (by default an active new key replaces them)";

  const keys = new Command("keys").description("manage the gateway's Oblivious HTTP key file (mode 0600)");

  keys
    .command("generate")
    .description("create FILE with a new key, or add a new key to FILE (rotation)")
    .requiredOption("--out <file>", "key file to create or extend")
    .option("--key-id <n>", "key identifier 0..255 (default: the next free one)", parseKeyId)
    .addOption(kemOption())
    .addOption(stateOption())
    .option("--keep-active", keepActiveHelp)
    .option("--kdf <kdf>", `KDF: ${Object.keys(KDF_NAMES).join(", ")}`, "hkdf-sha256")
    .option("--aead <list>", `comma-separated AEADs: ${Object.keys(AEAD_NAMES).join(", ")}`)
    .action(
      action(async (o: { out: string; keyId?: number; kem: KemName; state: KeyState; keepActive?: boolean; kdf: string; aead?: string }) => {
        const suites = suitesFrom(o.kdf, o.aead);
        ensureDir(o.out);
        await locked(o.out, async () => {
          const data = openOrCreate(o.out);
          const keyId = o.keyId ?? nextKeyId(data.keys);
          const kemId = KEM_NAMES[o.kem];
          const { key, privateKey } = await generateGatewayKey(keyId, kemId, suites);
          store(o.out, data, newRecord(keyId, kemId, key.config.symmetric, key.config.publicKey, privateKey, o.state), o.keepActive === true);
        });
      }),
    );

  keys
    .command("import")
    .description("add a key given by its raw private key bytes (hex, or - to read them from stdin)")
    .requiredOption("--out <file>", "key file to create or extend")
    .requiredOption("--key-id <n>", "key identifier 0..255", parseKeyId)
    .addOption(kemOption())
    .requiredOption("--private-key <hex>", "raw private key as hex, or - for stdin (keeps it out of the process list)")
    .addOption(stateOption())
    .option("--keep-active", keepActiveHelp)
    .option("--kdf <kdf>", `KDF: ${Object.keys(KDF_NAMES).join(", ")}`, "hkdf-sha256")
    .option("--aead <list>", `comma-separated AEADs: ${Object.keys(AEAD_NAMES).join(", ")}`)
    .action(
      action(async (o: { out: string; keyId: number; kem: KemName; privateKey: string; state: KeyState; keepActive?: boolean; kdf: string; aead?: string }) => {
        const text = (o.privateKey === "-" ? readStdin() : o.privateKey).trim().toLowerCase();
        let privateKey: Uint8Array;
        try {
          privateKey = fromHex(text);
        } catch {
          throw new ProtocolError("CFG_ERR_INVALID", "--private-key: expected hex");
        }
        const kemId = KEM_NAMES[o.kem];
        let key;
        try {
          key = await importGatewayKey(o.keyId, kemId, privateKey, suitesFrom(o.kdf, o.aead));
        } catch (e) {
          // The library's message could quote key bytes: only our own text goes out.
          throw new ProtocolError("CFG_ERR_INVALID", `--private-key: not a valid ${o.kem} private key`, { cause: e });
        }
        ensureDir(o.out);
        await locked(o.out, () => {
          store(o.out, openOrCreate(o.out), newRecord(o.keyId, kemId, key.config.symmetric, key.config.publicKey, privateKey, o.state), o.keepActive === true);
        });
      }),
    );

  keys
    .command("list")
    .description("key ids, KEMs, suites and states (never private keys)")
    .argument("<file>", "key file")
    .option("--json", "print JSON")
    .action(
      action((file: string, o: { json?: boolean }) => {
        const rows = summarizeKeys(readKeyFile(file));
        if (o.json === true) {
          print(JSON.stringify(rows, null, 2));
          return;
        }
        print(["key-id", "kem", "state", "suites", "created", "activated", "retired"].join("\t"));
        for (const r of rows) {
          print([r.keyId, r.kem, r.state, r.suites.join(","), r.createdAt, r.activatedAt ?? "-", r.retiredAt ?? "-"].join("\t"));
        }
      }),
    );

  const transition = (name: string, state: KeyState, description: string): void => {
    keys
      .command(name)
      .description(description)
      .argument("<file>", "key file")
      .requiredOption("--key-id <n>", "key identifier", parseKeyId)
      .option("--keep-active", keepActiveHelp)
      .action(
        action((file: string, o: { keyId: number; keepActive?: boolean }) =>
          locked(file, () => {
            let data = readKeyFile(file);
            const at = now();
            const target = data.keys.find((k) => k.keyId === o.keyId);
            if (state === "active" && target !== undefined && target.state === "pending" && o.keepActive !== true) {
              for (const k of data.keys) {
                if (k.state === "active" && k.kemId === target.kemId) data = setKeyState(data, k.keyId, "retired", at);
              }
            }
            data = setKeyState(data, o.keyId, state, at);
            writeKeyFile(file, data);
            print(`key ${o.keyId} is ${state}`);
          }),
        ),
      );
  };
  transition("activate", "active", "publish a pending key (active keys of the same KEM retire unless --keep-active)");
  transition("retire", "retired", "stop publishing a key; it still decrypts during the grace period");

  keys
    .command("prune")
    .description("delete retired keys whose grace period is over (forward secrecy, RFC 9458 §6.6)")
    .argument("<file>", "key file")
    .option("--grace-sec <s>", "grace period of retired keys", parseSeconds, GATEWAY_DEFAULTS.retiredKeyGraceSec)
    .action(
      action((file: string, o: { graceSec: number }) =>
        locked(file, () => {
          const { data, removed } = pruneKeys(readKeyFile(file), o.graceSec, now());
          if (removed.length > 0) writeKeyFile(file, data);
          print(removed.length === 0 ? "nothing to prune" : `removed key(s) ${removed.join(", ")}`);
        }),
      ),
    );

  return keys;
}
