// Properties of the OHTTP codecs and encapsulation (RFC 9458): round trips, every truncation,
// random bytes (a decoder returns or throws ProtocolError, nothing else), subarray inputs.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ByteWriter, concatBytes } from "../../core/bytes.js";
import { ProtocolError } from "../../core/errors.js";
import {
  AEAD,
  KDF,
  KEM,
  KEM_INFO,
  decapsulateRequest,
  decodeKeyConfig,
  decodeKeyConfigs,
  encapsulateRequest,
  encodeKeyConfig,
  encodeKeyConfigs,
  generateGatewayKey,
  type GatewayKey,
  type KeyConfig,
  type KemId,
} from "../../core/ohttp/index.js";

const numRuns = Number(process.env.VEIL_FUZZ_RUNS ?? 200);
const params = (seed: number): fc.Parameters<unknown> => ({ seed, numRuns });
/** For properties that loop over every prefix. */
const paramsHeavy = (seed: number): fc.Parameters<unknown> => ({ seed, numRuns: Math.max(20, Math.ceil(numRuns / 4)) });

// --- arbitraries ----------------------------------------------------------------------------

const u16 = fc.integer({ min: 0, max: 0xffff });
const symmetric = fc.array(fc.record({ kdfId: u16, aeadId: u16 }), { minLength: 1, maxLength: 6 });
/** Content does not matter to the codec: tile a short random seed (1216-byte arrays are slow to generate). */
const publicKey = (kemId: KemId): fc.Arbitrary<Uint8Array> =>
  fc.uint8Array({ minLength: 16, maxLength: 16 }).map((seed) => {
    const pk = new Uint8Array(KEM_INFO[kemId].Npk);
    for (let i = 0; i < pk.length; i++) pk[i] = seed[i % 16]! ^ (i & 0xff);
    if (kemId === KEM.P256) pk[0] = 0x04;
    return pk;
  });
const keyConfig: fc.Arbitrary<KeyConfig> = fc
  .constantFrom<KemId>(KEM.X25519, KEM.P256, KEM.XWING)
  .chain((kemId) => fc.record({ keyId: fc.integer({ min: 0, max: 255 }), kemId: fc.constant(kemId), publicKey: publicKey(kemId), symmetric }));
/** A length-prefixed config of a KEM Veil does not know (skipped by decodeKeyConfigs). */
const unknownEntry = fc
  .tuple(fc.integer({ min: 0, max: 0xffff }).filter((k) => !(k in KEM_INFO)), fc.uint8Array({ maxLength: 80 }))
  .map(([kem, rest]) => {
    const body = new ByteWriter().u8(0).u16(kem).bytes(rest).finish();
    return new ByteWriter().u16(body.length).bytes(body).finish();
  });

/** Runs `f`; it must return or throw a ProtocolError. */
async function returnsOrProtocolError(f: () => unknown): Promise<void> {
  try {
    await f();
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
  }
}

function inSubarray(b: Uint8Array, before: number, after: number): Uint8Array {
  const big = new Uint8Array(before + b.length + after).fill(0xee);
  big.set(b, before);
  return big.subarray(before, before + b.length);
}

// --- key configurations ---------------------------------------------------------------------

describe("key config properties", () => {
  it("round-trips one config, also from a subarray", () => {
    fc.assert(
      fc.property(keyConfig, fc.nat(16), fc.nat(16), (c, before, after) => {
        const b = encodeKeyConfig(c);
        expect(decodeKeyConfig(b)).toEqual(c);
        expect(decodeKeyConfig(inSubarray(b, before, after))).toEqual(c);
      }),
      params(9458_01),
    );
  });

  it("round-trips application/ohttp-keys and skips unknown KEMs wherever they are", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(keyConfig, fc.option(unknownEntry, { nil: undefined })), { minLength: 1, maxLength: 4 }), (entries) => {
        const configs = entries.map(([c]) => c);
        const parts = entries.flatMap(([c, u]) => (u === undefined ? [encodeKeyConfigs([c])] : [u, encodeKeyConfigs([c])]));
        expect(decodeKeyConfigs(encodeKeyConfigs(configs))).toEqual(configs);
        expect(decodeKeyConfigs(inSubarray(concatBytes(...parts), 3, 3))).toEqual(configs);
      }),
      params(9458_02),
    );
  });

  it("rejects every truncation of a config", () => {
    fc.assert(
      fc.property(keyConfig, (c) => {
        const b = encodeKeyConfig(c);
        for (let n = 0; n < b.length; n++) {
          expect(() => decodeKeyConfig(b.subarray(0, n))).toThrow(ProtocolError);
        }
      }),
      paramsHeavy(9458_03),
    );
  });

  it("rejects every truncation of a list that does not fall on a config boundary", () => {
    fc.assert(
      fc.property(fc.array(keyConfig, { minLength: 1, maxLength: 3 }), (cs) => {
        const b = encodeKeyConfigs(cs);
        const boundaries = new Set<number>();
        let at = 0;
        for (const c of cs) boundaries.add((at += 2 + encodeKeyConfig(c).length));
        for (let n = 0; n < b.length; n++) {
          if (boundaries.has(n)) expect(decodeKeyConfigs(b.subarray(0, n)).length).toBeGreaterThan(0);
          else expect(() => decodeKeyConfigs(b.subarray(0, n))).toThrow(ProtocolError);
        }
      }),
      paramsHeavy(9458_04),
    );
  });

  it("decodes random bytes to a config or a ProtocolError", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), fc.boolean(), async (b, known) => {
        if (known && b.length >= 3) b.set([0x00, 0x20], 1); // X25519, so parsing goes deeper
        await returnsOrProtocolError(() => decodeKeyConfig(b));
        await returnsOrProtocolError(() => decodeKeyConfigs(b));
      }),
      params(9458_05),
    );
  });
});

// --- encapsulation ----------------------------------------------------------------------------

const SUITES = [
  { kdfId: KDF.SHA256, aeadId: AEAD.AES128GCM },
  { kdfId: KDF.SHA384, aeadId: AEAD.AES256GCM },
  { kdfId: KDF.SHA512, aeadId: AEAD.CHACHA20POLY1305 },
];

describe("encapsulation properties", () => {
  let keyP: Promise<GatewayKey> | undefined;
  const key = (): Promise<GatewayKey> => (keyP ??= generateGatewayKey(5, KEM.X25519, SUITES).then((r) => r.key));

  it("round-trips requests and responses for every offered suite, also from subarrays", async () => {
    const k = await key();
    const keys = new Map([[5, k]]);
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 600 }), fc.uint8Array({ maxLength: 600 }), fc.constantFrom(...SUITES), fc.nat(8), async (req, res, suite, pad) => {
        const { encapsulated, response } = await encapsulateRequest(k.config, req, suite);
        const d = await decapsulateRequest(keys, inSubarray(encapsulated, pad, pad));
        expect(d.request).toEqual(req);
        expect(d.keyId).toBe(5);
        const encResponse = await d.response.encapsulateResponse(inSubarray(res, pad, 1));
        expect(await response.decapsulateResponse(inSubarray(encResponse, 1, pad))).toEqual(res);
      }),
      params(9458_10),
    );
  });

  it("rejects every truncation of an encapsulated request with a ProtocolError", async () => {
    const k = await key();
    const keys = new Map([[5, k]]);
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 24 }), fc.constantFrom(...SUITES), async (req, suite) => {
        const { encapsulated } = await encapsulateRequest(k.config, req, suite);
        for (let n = 0; n < encapsulated.length; n++) {
          const e = await decapsulateRequest(keys, encapsulated.subarray(0, n)).catch((err: unknown) => err);
          expect(e).toBeInstanceOf(ProtocolError);
          expect(["OHTTP_ERR_TRUNCATED", "OHTTP_ERR_DECRYPT"]).toContain((e as ProtocolError).code);
        }
      }),
      { seed: 9458_11, numRuns: Math.max(5, Math.ceil(numRuns / 20)) },
    );
  });

  it("decapsulates random bytes to a ProtocolError", async () => {
    const k = await key();
    const keys = new Map([[5, k]]);
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 120 }), fc.constantFrom(...SUITES), fc.boolean(), async (b, suite, plausible) => {
        // Half the inputs get a valid header so the bytes reach HPKE.
        const input = plausible ? concatBytes(new ByteWriter().u8(5).u16(KEM.X25519).u16(suite.kdfId).u16(suite.aeadId).finish(), b) : b;
        await returnsOrProtocolError(() => decapsulateRequest(keys, input));
      }),
      params(9458_12),
    );
  });

  it("decapsulates a random or cut response to a ProtocolError", async () => {
    const k = await key();
    const keys = new Map([[5, k]]);
    const { encapsulated } = await encapsulateRequest(k.config, new Uint8Array(3));
    const real = await (await decapsulateRequest(keys, encapsulated)).response.encapsulateResponse(new Uint8Array(10));
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 80 }), fc.nat(real.length - 1).map((n) => real.subarray(0, n))), async (b) => {
        const { response } = await encapsulateRequest(k.config, new Uint8Array(3));
        const e = await response.decapsulateResponse(b).catch((err: unknown) => err);
        expect(e).toBeInstanceOf(ProtocolError);
        expect(["OHTTP_ERR_TRUNCATED", "OHTTP_ERR_DECRYPT"]).toContain((e as ProtocolError).code);
      }),
      params(9458_13),
    );
  });
});
