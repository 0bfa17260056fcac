// Shared fixtures for the OHTTP tests: the RFC 9458 Appendix A vector and both HPKE backends.

import { readFileSync } from "node:fs";
import { expect } from "vitest";
import { fromHex } from "../../core/bytes.js";
import { ProtocolError, type ErrorCode } from "../../core/errors.js";
import { nodeHpkeBackend } from "../../core/ohttp/fast-node.js";
import { ALL_AEADS, ALL_KDFS, ALL_KEMS, AEAD_INFO, KDF_INFO, KEM_INFO } from "../../core/ohttp/constants.js";
import { stockHpkeBackend, type AeadId, type HpkeBackend, type KdfId, type KemId } from "../../core/ohttp/index.js";

export const BACKENDS: readonly HpkeBackend[] = [nodeHpkeBackend, stockHpkeBackend];

/**
 * `b`, counting the synchronous HPKE senders it sets up (chunked requests sealed on that path) and
 * the synchronous response chunk AEADs it makes (chunked responses sealed or opened on that path).
 */
export function countingSync(b: HpkeBackend): { backend: HpkeBackend; syncSenders: () => number; syncAeads: () => number } {
  const n = { senders: 0, aeads: 0 };
  const counted = <T>(made: T | undefined, what: keyof typeof n): T | undefined => {
    if (made !== undefined) n[what]++;
    return made;
  };
  const backend: HpkeBackend = {
    ...b,
    setupSenderSync: (...args) => counted(b.setupSenderSync?.(...args), "senders"),
    responseChunkAead: (...args) => counted(b.responseChunkAead?.(...args), "aeads"),
  };
  return { backend, syncSenders: () => n.senders, syncAeads: () => n.aeads };
}

/** Every KEM / KDF / AEAD combination Veil implements: [name, kem, kdf, aead]. */
export const COMBOS: [string, KemId, KdfId, AeadId][] = [];
for (const kem of ALL_KEMS)
  for (const kdf of ALL_KDFS)
    for (const aead of ALL_AEADS) COMBOS.push([`${KEM_INFO[kem].name} / ${KDF_INFO[kdf].name} / ${AEAD_INFO[aead].name}`, kem, kdf, aead]);

interface Rfc9458Vector {
  rfc9458_appendix_a: {
    gateway_key: { key_id: number; kem_id: number; private_key: string; public_key: string; symmetric_algorithms: { kdf_id: number; aead_id: number }[] };
    key_config: string;
    request: string;
    client_ephemeral_private_key: string;
    client_ephemeral_public_key: string;
    hpke_info: string;
    encapsulated_request: string;
    response: string;
    response_secret: string;
    response_salt: string;
    response_prk: string;
    response_aead_key: string;
    response_aead_nonce: string;
    encapsulated_response: string;
  };
  derived: {
    ohttp_keys: string;
    request_header: string;
    response_nonce: string;
    hpke: Record<"dh" | "shared_secret" | "key_schedule_context" | "secret" | "key" | "base_nonce" | "exporter_secret", string>;
  };
}

export const RFC9458 = JSON.parse(readFileSync(new URL("../vectors/ohttp-rfc9458.json", import.meta.url), "utf8")) as Rfc9458Vector;
export const A = RFC9458.rfc9458_appendix_a;
export const A_SYMMETRIC = A.gateway_key.symmetric_algorithms.map((s) => ({ kdfId: s.kdf_id, aeadId: s.aead_id }));
export const A_PRIVATE_KEY = fromHex(A.gateway_key.private_key);

/** Asserts that `p` rejects with a ProtocolError of `code`. */
export async function rejectsWith(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, `expected ${code}`).toBeInstanceOf(ProtocolError);
  expect((e as ProtocolError).code).toBe(code);
}

/** Asserts that `f` throws a ProtocolError of `code`. */
export function throwsWith(f: () => unknown, code: ErrorCode): void {
  let e: unknown;
  try {
    f();
  } catch (err) {
    e = err;
  }
  expect(e, `expected ${code}`).toBeInstanceOf(ProtocolError);
  expect((e as ProtocolError).code).toBe(code);
}

/** `bytes` copied into the middle of a larger buffer (tests byteOffset handling). */
export function inSubarray(bytes: Uint8Array): Uint8Array {
  const big = new Uint8Array(bytes.length + 11).fill(0xa5);
  big.set(bytes, 5);
  return big.subarray(5, 5 + bytes.length);
}
