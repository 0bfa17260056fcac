// Properties of the decoders of documents and key material that come from files or from other
// parties: the issuer directory (RFC 9578 §4) as the gate reads it, the gateway's and the
// issuer's key files, type 2 token keys (RSASSA-PSS SPKI), VOPRF elements and scalars, and
// base64url. Random and mutated inputs either decode or throw a ProtocolError; a key file's error
// message never contains a private key.

import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromBase64Url, toBase64Url, toHex } from "../../core/bytes.js";
import { KEM } from "../../core/ohttp/index.js";
import { rsaSpkiFromRsaPssSpki } from "../../core/privacypass/token-key.js";
import { importBlindRsaTokenKey } from "../../core/privacypass/verify-node.js";
import { deserializeElement, deserializeScalar } from "../../core/privacypass/voprf.js";
import { DIRECTORY_DEFAULTS, TokenKeyDirectory, freshnessSec, parseDirectory, type DirectoryResponse } from "../../gateway/issuer-directory.js";
import { parseKeyFile, serializeKeyFile } from "../../gateway/key-file.js";
import { IssuerKeyStore } from "../../issuer/key-store.js";
import { makeKeyData } from "../helpers/gateway-fixture.js";
import { fuzzParams, returnsOrProtocolError } from "../helpers/fuzz.js";
import { TestClock, rsaKeyPool } from "../helpers/issuer.js";
import { directoryDocument, makeBlindRsaIssuerKey, makeVoprfIssuerKey } from "../helpers/tokens.js";

const rsaKey = makeBlindRsaIssuerKey({ reuse: 0 });
const voprfKey = makeVoprfIssuerKey(new Uint8Array(32).fill(7));

/** A JSON text with one random edit: a cut, a deleted, replaced or inserted run of characters. */
function textMutation(base: string): fc.Arbitrary<string> {
  const junk = fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom('"', "{", "}", "[", "]", ",", ":", "null", "-1", "1e999", '"x"', "\\u0000", "true"));
  return fc.tuple(fc.nat(), fc.nat({ max: 8 }), junk, fc.constantFrom("cut", "edit")).map(([at, del, ins, kind]) => {
    const i = at % (base.length + 1);
    return kind === "cut" ? base.slice(0, i) : base.slice(0, i) + ins + base.slice(i + del);
  });
}

const dir = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "veil-docfuzz-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// --- issuer directory -------------------------------------------------------------------------

describe("issuer directory (RFC 9578 §4) as the gate reads it", () => {
  const valid = new TextDecoder().decode(directoryDocument([{ key: rsaKey, notBeforeSec: 1_700_000_000 }, { key: voprfKey }]));

  it("parses the valid document to its keys", () => {
    const keys = parseDirectory(new TextEncoder().encode(valid));
    expect(keys.map((k) => [k.tokenType, toHex(k.tokenKey), k.notBeforeSec])).toEqual([
      [2, toHex(rsaKey.tokenKey), 1_700_000_000],
      [1, toHex(voprfKey.tokenKey), undefined],
    ]);
  });

  it("returns keys or throws PP_ERR_ISSUER_UNAVAILABLE for random bytes and mutated documents", () => {
    const input = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      fc.string({ maxLength: 300 }).map((s) => new TextEncoder().encode(s)),
      textMutation(valid).map((s) => new TextEncoder().encode(s)),
      fc.jsonValue({ maxDepth: 3 }).map((v) => new TextEncoder().encode(JSON.stringify({ "token-keys": [v] }))),
    );
    fc.assert(
      fc.property(input, (b) => {
        const out = returnsOrProtocolError(() => parseDirectory(b), ["PP_ERR_ISSUER_UNAVAILABLE"]);
        if (Array.isArray(out)) for (const k of out) expect(k.tokenKey.length).toBeGreaterThan(0);
      }),
      fuzzParams(0xd1e1),
    );
  });

  it("keeps only importable keys of a hostile directory, and never throws from a refresh", async () => {
    const now = 1_700_000_100_000;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(textMutation(valid), fc.string({ maxLength: 200 })),
        fc.constantFrom(200, 304, 404, 500),
        fc.dictionary(fc.constantFrom("cache-control", "age", "etag"), fc.string({ maxLength: 20 }), { maxKeys: 3 }),
        async (text, status, h) => {
          const response: DirectoryResponse = { status, headers: { get: (n) => h[n] ?? null }, body: new TextEncoder().encode(text) };
          const d = new TokenKeyDirectory([{ name: "issuer.example", directory: "http://issuer.invalid/d", keyLifetimeSec: 3600 }], {
            now: () => now,
            fetcher: async () => response,
          });
          await d.start();
          await d.ready().catch((e: unknown) => returnsOrProtocolError(() => { throw e; }));
          for (const i of d.issuers) for (const k of i.validKeys(now)) expect([1, 2]).toContain(k.tokenType);
          expect(typeof d.hasValidKeys(now)).toBe("boolean");
        },
      ),
      fuzzParams(0xd1e2),
    );
  });

  it("computes a bounded freshness from any Cache-Control and Age", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), fc.option(fc.string({ maxLength: 12 }), { nil: undefined }), (cc, age) => {
        const s = freshnessSec({ get: (n) => (n === "cache-control" ? cc : n === "age" ? (age ?? null) : null) }, DIRECTORY_DEFAULTS);
        expect(Number.isFinite(s)).toBe(true);
        expect(s).toBeGreaterThanOrEqual(DIRECTORY_DEFAULTS.minMaxAgeSec);
        expect(s).toBeLessThanOrEqual(DIRECTORY_DEFAULTS.maxMaxAgeSec);
      }),
      fuzzParams(0xd1e3),
    );
  });
});

// --- token keys, VOPRF elements, base64url ------------------------------------------------------

describe("token key and VOPRF decoders", () => {
  it("imports a type 2 token key or throws a ProtocolError, for random and mutated SPKIs", () => {
    const mutated = fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 }), fc.nat({ max: 3 })).map(([at, x, cut]) => {
      const b = new Uint8Array(rsaKey.tokenKey);
      b[at % b.length]! ^= x;
      return cut === 0 ? b.subarray(0, at % b.length) : b;
    });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 400 }), mutated), (b) => {
        returnsOrProtocolError(() => rsaSpkiFromRsaPssSpki(b), ["PP_ERR_TRUNCATED", "PP_ERR_FORMAT"]);
        returnsOrProtocolError(() => importBlindRsaTokenKey(b), ["PP_ERR_TRUNCATED", "PP_ERR_FORMAT"]);
      }),
      fuzzParams(0xd1e4),
    );
  });

  it("deserializes a P-384 element or scalar, or throws PP_ERR_FORMAT", () => {
    const plausible = fc.tuple(fc.constantFrom(2, 3), fc.uint8Array({ minLength: 48, maxLength: 48 })).map(([p, x]) => Uint8Array.of(p, ...x));
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 60 }), plausible, fc.uint8Array({ minLength: 48, maxLength: 48 })), (b) => {
        returnsOrProtocolError(() => deserializeElement(b), ["PP_ERR_FORMAT"]);
        returnsOrProtocolError(() => deserializeScalar(b), ["PP_ERR_FORMAT"]);
      }),
      fuzzParams(0xd1e5),
    );
  });

  // Non-canonical encodings (non-zero trailing bits: "0B" reads as "0A") are accepted, as RFC 4648
  // §3.5 allows; a token's bytes, not its text, are what the gate binds (its nonce), so this gives
  // no second spend.
  it("decodes base64url to bytes that round-trip, or to undefined", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 40 }), fc.uint8Array({ maxLength: 40 }).map((b) => toBase64Url(b))), (s) => {
        const b = fromBase64Url(s);
        if (b !== undefined) expect(toHex(fromBase64Url(toBase64Url(b, false))!)).toBe(toHex(b));
      }),
      fuzzParams(0xd1e6),
    );
  });
});

// --- key files -----------------------------------------------------------------------------------

describe("the gateway's key file", () => {
  let valid = "";
  let secrets: string[] = [];
  beforeAll(async () => {
    const made = await makeKeyData([{ keyId: 1 }, { keyId: 2, kemId: KEM.P256, state: "retired" }, { keyId: 3, state: "pending" }]);
    valid = serializeKeyFile(made.data);
    secrets = made.secrets.map((s) => toHex(s));
  });

  it("parses to key records or throws CFG_ERR_KEY_FILE, never quoting a private key", () => {
    fc.assert(
      fc.property(fc.oneof(textMutation(valid), fc.string({ maxLength: 200 })), (text) => {
        const out = returnsOrProtocolError(() => parseKeyFile("/keys.json", text), ["CFG_ERR_KEY_FILE"]);
        if (out instanceof Error) for (const s of secrets) expect(out.message).not.toContain(s.slice(0, 16));
      }),
      fuzzParams(0xd1e7),
    );
  });
});

describe("the issuer's key file", () => {
  const file = join(dir, "issuer-keys.json");
  const clock = new TestClock();
  let valid = "";
  let secrets: string[] = [];
  const open = (): Promise<IssuerKeyStore> =>
    IssuerKeyStore.open({ file, tokenTypes: [2, 1], keyLifetimeSec: 3600, now: clock.now, generateRsaKey: rsaKeyPool(), randomSeed: () => new Uint8Array(32).fill(9) });
  beforeAll(async () => {
    await open();
    valid = readFileSync(file, "utf8");
    secrets = (JSON.parse(valid) as { keys: { privateKey: string }[] }).keys.map((k) => k.privateKey);
  });

  it("opens or throws a ProtocolError, never quoting a private key", async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(textMutation(valid), fc.string({ maxLength: 100 })), async (text) => {
        writeFileSync(file, text, { mode: 0o600 });
        chmodSync(file, 0o600);
        try {
          await open();
        } catch (e) {
          const err = returnsOrProtocolError(() => {
            throw e;
          }, ["CFG_ERR_KEY_FILE", "CFG_ERR_INVALID"]);
          for (const s of secrets) expect((err as Error).message).not.toContain(s.slice(0, 16));
        }
      }),
      fuzzParams(0xd1e8),
    );
  });
});
