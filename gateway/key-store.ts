// The gateway's live keys: loaded from the key file (gateway/key-file.ts), imported once as native
// key objects, swapped atomically on reload (SIGHUP). A request that already looked its key up
// keeps it, so a reload never drops a request in flight.
//
// - pending and active keys decrypt; only active keys are published on /ohttp-keys;
// - a retired key decrypts until retiredAt + retiredGraceSec, then counts as unknown.

import { createHash } from "node:crypto";
import { ProtocolError } from "../core/errors.js";
import { equalBytes } from "../core/bytes.js";
import { encodeKeyConfigs, importGatewayKey, type GatewayKey, type Keyring } from "../core/ohttp/index.js";
import { readKeyFile, type KeyFileData, type KeyState } from "./key-file.js";

export interface KeyStoreOptions {
  /** How long a retired key still decrypts. */
  retiredGraceSec: number;
  /** Clock in ms (injected in tests). */
  now?: () => number;
}

interface LiveKey {
  key: GatewayKey;
  state: KeyState;
  /** For retired keys: the last instant (ms) it decrypts. */
  usableUntilMs: number;
}

interface Snapshot {
  keys: Map<number, LiveKey>;
  /** application/ohttp-keys body of the active keys (RFC 9458 §3.2). */
  published: Uint8Array;
  etag: string;
}

export interface KeyStateRow {
  keyId: number;
  kemId: number;
  state: KeyState;
  /** False for a retired key past its grace period. */
  usable: boolean;
}

async function buildSnapshot(data: KeyFileData, file: string, graceSec: number): Promise<Snapshot> {
  const keys = new Map<number, LiveKey>();
  for (const r of data.keys) {
    let key: GatewayKey;
    try {
      key = await importGatewayKey(r.keyId, r.kemId, r.privateKey.reveal(), r.symmetric);
    } catch (e) {
      throw new ProtocolError("CFG_ERR_KEY_FILE", `${file}: key ${r.keyId} cannot be imported`, { cause: e });
    }
    if (!equalBytes(key.config.publicKey, r.publicKey)) {
      throw new ProtocolError("CFG_ERR_KEY_FILE", `${file}: key ${r.keyId}: public key does not match the private key`);
    }
    const usableUntilMs = r.state === "retired" ? Date.parse(r.retiredAt ?? "") + graceSec * 1000 : Infinity;
    keys.set(r.keyId, { key, state: r.state, usableUntilMs });
  }
  const active = [...keys.values()].filter((k) => k.state === "active").map((k) => k.key.config);
  if (active.length === 0) {
    throw new ProtocolError("CFG_ERR_KEY_FILE", `${file}: has no active key (veil keys generate, or veil keys activate)`);
  }
  // Lowest key id first: every replica serves the same bytes (key consistency, RFC 9458 §7).
  active.sort((a, b) => a.keyId - b.keyId);
  const published = encodeKeyConfigs(active);
  const etag = `"${createHash("sha256").update(published).digest("base64url").slice(0, 22)}"`;
  return { keys, published, etag };
}

export class KeyStore implements Keyring {
  #snapshot: Snapshot;
  readonly #file: string | undefined;
  readonly #graceSec: number;
  readonly #now: () => number;

  private constructor(snapshot: Snapshot, file: string | undefined, options: KeyStoreOptions) {
    this.#snapshot = snapshot;
    this.#file = file;
    this.#graceSec = options.retiredGraceSec;
    this.#now = options.now ?? Date.now;
  }

  /** Loads the key file (refused when group/others can read it, or when no key is active). */
  static async fromFile(file: string, options: KeyStoreOptions): Promise<KeyStore> {
    return new KeyStore(await buildSnapshot(readKeyFile(file), file, options.retiredGraceSec), file, options);
  }

  /** From key records already in memory (tests, or a secret store). */
  static async fromData(data: KeyFileData, options: KeyStoreOptions): Promise<KeyStore> {
    return new KeyStore(await buildSnapshot(data, "(keys)", options.retiredGraceSec), undefined, options);
  }

  /** Re-reads the key file; on any error the current keys stay in use and the error is thrown. */
  async reload(): Promise<void> {
    if (this.#file === undefined) return;
    this.#snapshot = await buildSnapshot(readKeyFile(this.#file), this.#file, this.#graceSec);
  }

  /** Replaces the keys with `data` (tests; or a store fed from elsewhere). */
  async replace(data: KeyFileData): Promise<void> {
    this.#snapshot = await buildSnapshot(data, "(keys)", this.#graceSec);
  }

  /** Keyring: the key that may decrypt a request with this key id, if any. */
  get(keyId: number): GatewayKey | undefined {
    const live = this.#snapshot.keys.get(keyId);
    if (live === undefined || this.#now() >= live.usableUntilMs) return undefined;
    return live.key;
  }

  /** The `application/ohttp-keys` body (active keys only) and its entity tag. */
  published(): { body: Uint8Array; etag: string } {
    return { body: this.#snapshot.published, etag: this.#snapshot.etag };
  }

  states(): KeyStateRow[] {
    const now = this.#now();
    return [...this.#snapshot.keys.values()].map((k) => ({
      keyId: k.key.config.keyId,
      kemId: k.key.config.kemId,
      state: k.state,
      usable: now < k.usableUntilMs,
    }));
  }
}
