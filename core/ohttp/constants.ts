// Algorithm identifiers and sizes for Oblivious HTTP (RFC 9458) over HPKE (RFC 9180).
//
// Only what Veil implements is listed. Sizes use the RFC 9180 names: Nsecret, Nenc, Npk, Nsk
// (§7.1), Nh (§7.2), Nk, Nn, Nt (§7.3).

/** HPKE KEM identifiers (RFC 9180 §7.1; X-Wing: draft-connolly-cfrg-xwing-kem, as in hpke-js). */
export const KEM = { P256: 0x0010, X25519: 0x0020, XWING: 0x647a } as const;
/** HPKE KDF identifiers (RFC 9180 §7.2). */
export const KDF = { SHA256: 0x0001, SHA384: 0x0002, SHA512: 0x0003 } as const;
/** HPKE AEAD identifiers (RFC 9180 §7.3). */
export const AEAD = { AES128GCM: 0x0001, AES256GCM: 0x0002, CHACHA20POLY1305: 0x0003 } as const;

export type KemId = (typeof KEM)[keyof typeof KEM];
export type KdfId = (typeof KDF)[keyof typeof KDF];
export type AeadId = (typeof AEAD)[keyof typeof AEAD];

/** RFC 9458 §9 and draft-ietf-ohai-chunked-ohttp-08 §8: media types. */
export const MEDIA_TYPES = {
  keys: "application/ohttp-keys",
  request: "message/ohttp-req",
  response: "message/ohttp-res",
  chunkedRequest: "message/ohttp-chunked-req",
  chunkedResponse: "message/ohttp-chunked-res",
} as const;

export interface KemInfo {
  readonly name: string;
  readonly Nsecret: number;
  readonly Nenc: number;
  readonly Npk: number;
  readonly Nsk: number;
}
export interface KdfInfo {
  readonly name: string;
  /** node:crypto / WebCrypto hash name */
  readonly hash: "sha256" | "sha384" | "sha512";
  readonly Nh: number;
}
export interface AeadInfo {
  readonly name: string;
  readonly Nk: number;
  readonly Nn: number;
  readonly Nt: number;
}

export const KEM_INFO: Readonly<Record<KemId, KemInfo>> = Object.freeze({
  [KEM.P256]: { name: "DHKEM(P-256, HKDF-SHA256)", Nsecret: 32, Nenc: 65, Npk: 65, Nsk: 32 },
  [KEM.X25519]: { name: "DHKEM(X25519, HKDF-SHA256)", Nsecret: 32, Nenc: 32, Npk: 32, Nsk: 32 },
  // X-Wing: pk = pk_M(1184) || pk_X(32); enc = ct_M(1088) || ct_X(32); sk = 32-byte seed.
  [KEM.XWING]: { name: "X-Wing", Nsecret: 32, Nenc: 1120, Npk: 1216, Nsk: 32 },
});
export const KDF_INFO: Readonly<Record<KdfId, KdfInfo>> = Object.freeze({
  [KDF.SHA256]: { name: "HKDF-SHA256", hash: "sha256", Nh: 32 },
  [KDF.SHA384]: { name: "HKDF-SHA384", hash: "sha384", Nh: 48 },
  [KDF.SHA512]: { name: "HKDF-SHA512", hash: "sha512", Nh: 64 },
});
export const AEAD_INFO: Readonly<Record<AeadId, AeadInfo>> = Object.freeze({
  [AEAD.AES128GCM]: { name: "AES-128-GCM", Nk: 16, Nn: 12, Nt: 16 },
  [AEAD.AES256GCM]: { name: "AES-256-GCM", Nk: 32, Nn: 12, Nt: 16 },
  [AEAD.CHACHA20POLY1305]: { name: "ChaCha20Poly1305", Nk: 32, Nn: 12, Nt: 16 },
});

export function isKemId(id: number): id is KemId {
  return Object.hasOwn(KEM_INFO, id);
}
export function isKdfId(id: number): id is KdfId {
  return Object.hasOwn(KDF_INFO, id);
}
export function isAeadId(id: number): id is AeadId {
  return Object.hasOwn(AEAD_INFO, id);
}

/** Every KEM/KDF/AEAD combination Veil implements (for tests and benchmarks). */
export const ALL_KEMS: readonly KemId[] = [KEM.X25519, KEM.P256, KEM.XWING];
export const ALL_KDFS: readonly KdfId[] = [KDF.SHA256, KDF.SHA384, KDF.SHA512];
export const ALL_AEADS: readonly AeadId[] = [AEAD.AES128GCM, AEAD.AES256GCM, AEAD.CHACHA20POLY1305];
