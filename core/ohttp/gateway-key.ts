// Gateway key material: a Key Config plus the private key, imported once into the backend's native
// representation (a node:crypto KeyObject on Node) and never printable.

import { ProtocolError, wrapError } from "../errors.js";
import { REDACTED } from "../secret.js";
import { AEAD, KDF, KEM, isAeadId, isKdfId, isKemId, type KemId } from "./constants.js";
import { checkPublicKey, type KeyConfig, type SymmetricSuite } from "./key-config.js";
import { hpkeBackend, type HpkeBackend } from "./backend.js";

/** A gateway key: its public Key Config and opaque private material. */
export interface GatewayKey {
  readonly config: KeyConfig;
}

/** What `decapsulateRequest` looks keys up in (a `Map<number, GatewayKey>` will do). */
export interface Keyring {
  get(keyId: number): GatewayKey | undefined;
}

export interface KeyOptions {
  /** The HPKE backend that holds the private key (default: the selected one, see backend.ts). */
  backend?: HpkeBackend;
}

/** The default symmetric algorithms of a new key (those of RFC 9458 Appendix A). */
export const DEFAULT_SYMMETRIC: readonly SymmetricSuite[] = Object.freeze([
  Object.freeze({ kdfId: KDF.SHA256, aeadId: AEAD.AES128GCM }),
  Object.freeze({ kdfId: KDF.SHA256, aeadId: AEAD.CHACHA20POLY1305 }),
]);

/** @internal what decapsulation needs; reachable only through `gatewayKeyMaterial`. */
export interface GatewayKeyMaterial {
  readonly backend: HpkeBackend;
  readonly recipientKey: CryptoKeyPair;
}

const INSPECT = Symbol.for("nodejs.util.inspect.custom");

class GatewayKeyImpl implements GatewayKey {
  readonly config: KeyConfig;
  readonly #material: GatewayKeyMaterial;

  constructor(config: KeyConfig, material: GatewayKeyMaterial) {
    this.config = config;
    this.#material = material;
  }

  static material(k: GatewayKey): GatewayKeyMaterial | undefined {
    return k instanceof GatewayKeyImpl ? k.#material : undefined;
  }

  toJSON(): { keyId: number; kemId: number; privateKey: string } {
    return { keyId: this.config.keyId, kemId: this.config.kemId, privateKey: REDACTED };
  }

  toString(): string {
    return `GatewayKey(${this.config.keyId}, ${REDACTED})`;
  }

  [INSPECT](): string {
    return this.toString();
  }
}

/** @internal */
export function gatewayKeyMaterial(k: GatewayKey): GatewayKeyMaterial {
  const m = GatewayKeyImpl.material(k);
  if (m === undefined) throw new ProtocolError("INTERNAL_ERR", "not a key from importGatewayKey/generateGatewayKey");
  return m;
}

function checkSymmetric(symmetric: readonly SymmetricSuite[]): SymmetricSuite[] {
  if (symmetric.length === 0 || symmetric.length > 16383) {
    throw new ProtocolError("OHTTP_ERR_KEY_CONFIG", "needs 1..16383 symmetric algorithm pairs");
  }
  return symmetric.map((s) => {
    if (!isKdfId(s.kdfId) || !isAeadId(s.aeadId)) {
      throw new ProtocolError("OHTTP_ERR_KEY_CONFIG", `unsupported symmetric algorithms (${s.kdfId}, ${s.aeadId})`);
    }
    return Object.freeze({ kdfId: s.kdfId, aeadId: s.aeadId });
  });
}

function checkKeyId(keyId: number): void {
  if (!Number.isInteger(keyId) || keyId < 0 || keyId > 0xff) {
    throw new ProtocolError("OHTTP_ERR_KEY_CONFIG", "key id must be 0..255");
  }
}

function checkKem(kemId: number): KemId {
  if (!isKemId(kemId)) throw new ProtocolError("OHTTP_ERR_KEY_CONFIG", `unsupported KEM 0x${kemId.toString(16)}`);
  return kemId;
}

/**
 * Imports a gateway key from its serialized private key (RFC 9180 SerializePrivateKey: 32 bytes
 * for X25519, P-256 and X-Wing). The public key is derived from it.
 */
export async function importGatewayKey(
  keyId: number,
  kemId: number,
  privateKey: Uint8Array,
  symmetric: readonly SymmetricSuite[] = DEFAULT_SYMMETRIC,
  opts: KeyOptions = {},
): Promise<GatewayKey> {
  checkKeyId(keyId);
  const kem = checkKem(kemId);
  const sym = checkSymmetric(symmetric);
  const backend = opts.backend ?? (await hpkeBackend());
  let imported;
  try {
    imported = await backend.importPrivateKey(kem, privateKey);
  } catch (e) {
    throw wrapError(e, "OHTTP_ERR_KEY_CONFIG", "invalid private key");
  }
  checkPublicKey(kem, imported.publicKey);
  const config: KeyConfig = Object.freeze({ keyId, kemId: kem, publicKey: imported.publicKey, symmetric: Object.freeze(sym) as SymmetricSuite[] });
  return new GatewayKeyImpl(config, { backend, recipientKey: imported.pair });
}

/** Generates a key. The caller stores `privateKey` (a secret: wrap it, never log it). */
export async function generateGatewayKey(
  keyId: number,
  kemId: number = KEM.X25519,
  symmetric: readonly SymmetricSuite[] = DEFAULT_SYMMETRIC,
  opts: KeyOptions = {},
): Promise<{ key: GatewayKey; privateKey: Uint8Array }> {
  checkKeyId(keyId);
  const kem = checkKem(kemId);
  checkSymmetric(symmetric);
  const backend = opts.backend ?? (await hpkeBackend());
  const { privateKey } = await backend.generateKeyPair(kem);
  return { key: await importGatewayKey(keyId, kem, privateKey, symmetric, { backend }), privateKey };
}

/** The public Key Config of a gateway key (what goes on /ohttp-keys). */
export function exportPublic(key: GatewayKey): KeyConfig {
  return key.config;
}
