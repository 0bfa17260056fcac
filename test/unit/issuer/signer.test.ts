// The issuer's signing: native RFC 9474 BlindSign (node:crypto, CRT) byte-identical to blindrsa-ts
// and to the RFC 9474 vectors, with its range and fault checks; VOPRF BlindEvaluate identical to
// voprf-ts with the same proof randomness.
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, webcrypto } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { RSABSSA } from "@cloudflare/blindrsa-ts";
import { DLEQProver, Oprf, deriveKeyPair as stockDeriveKeyPair } from "@cloudflare/voprf-ts";
import { CryptoNoble } from "@cloudflare/voprf-ts/crypto-noble";
import { fromHex, toHex } from "../../../core/bytes.js";
import { isProtocolError } from "../../../core/errors.js";
import { deriveKeyPair, hashToGroup, serializeElement } from "../../../core/privacypass/voprf.js";
import { P384_SHA384 } from "../../../core/privacypass/oprf-suite.js";
import { blindEvaluateBatch, randomScalar } from "../../../core/privacypass/voprf-batch.js";
import { blindSign, createBlindRsaSigner, createVoprfSigner } from "../../../issuer/signer.js";
import { PP_VECTOR_DIR, TYPE2_VECTORS } from "../../helpers/pp-vectors.js";

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (isProtocolError(e)) return e.code;
    throw e;
  }
  return "none";
}

const vectorKey = createPrivateKey(Buffer.from(TYPE2_VECTORS[0]!.skS).toString("utf8"));
const modulusOf = (k: ReturnType<typeof createPublicKey>): Uint8Array => new Uint8Array(Buffer.from(k.export({ format: "jwk" }).n!, "base64url"));

/** A random number below n, as kLen bytes. */
function randomBelow(n: Uint8Array): Uint8Array {
  for (;;) {
    const m = new Uint8Array(randomBytes(n.length));
    if (Buffer.compare(m, n) < 0) return m;
  }
}

describe("native BlindSign (RFC 9474 §4.3)", () => {
  it("is byte-identical to blindrsa-ts on random blinded messages", async () => {
    const suite = RSABSSA.SHA384.PSS.Deterministic();
    const pkcs8 = vectorKey.export({ format: "der", type: "pkcs8" });
    const stockKey = await webcrypto.subtle.importKey("pkcs8", pkcs8, { name: "RSA-PSS", hash: "SHA-384" }, true, ["sign"]);
    const signer = createBlindRsaSigner(vectorKey);
    const n = modulusOf(createPublicKey(vectorKey));
    for (let i = 0; i < 3; i++) {
      const m = randomBelow(n);
      const stock = await suite.blindSign(stockKey, m);
      expect(toHex(signer.sign(m))).toBe(toHex(stock));
    }
  });

  it("reproduces the four RFC 9474 Appendix A vectors (4096-bit key)", () => {
    const vectors = JSON.parse(readFileSync(`${PP_VECTOR_DIR}/rfc9474/rfc9474-appendix-a.json`, "utf8")) as Record<string, string>[];
    for (const v of vectors) {
      const big = (h: string): bigint => BigInt(`0x${h}`);
      const [p, q, d] = [big(v.p!), big(v.q!), big(v.d!)];
      const b64 = (x: bigint): string => Buffer.from(fromHex(x.toString(16).padStart(Math.ceil(x.toString(16).length / 2) * 2, "0"))).toString("base64url");
      const modPow = (b: bigint, e: bigint, m: bigint): bigint => {
        let r = 1n;
        b %= m;
        for (; e > 0n; e >>= 1n, b = (b * b) % m) if (e & 1n) r = (r * b) % m;
        return r;
      };
      const jwk = {
        kty: "RSA",
        n: b64(big(v.n!)),
        e: b64(big(v.e!)),
        d: b64(d),
        p: b64(p),
        q: b64(q),
        dp: b64(d % (p - 1n)),
        dq: b64(d % (q - 1n)),
        qi: b64(modPow(q, p - 2n, p)),
      };
      const priv = createPrivateKey({ key: jwk, format: "jwk" });
      const sig = blindSign(priv, createPublicKey(priv), fromHex(v.n!), fromHex(v.blinded_msg!));
      expect(toHex(sig), v.name).toBe(v.blind_sig);
    }
  });

  it("refuses a blinded message that is not less than n, or of the wrong length (422)", () => {
    const signer = createBlindRsaSigner(vectorKey);
    const n = modulusOf(createPublicKey(vectorKey));
    expect(codeOf(() => signer.sign(n))).toBe("ISSUER_ERR_REQUEST");
    expect(codeOf(() => signer.sign(new Uint8Array(256).fill(0xff)))).toBe("ISSUER_ERR_REQUEST");
    expect(codeOf(() => signer.sign(new Uint8Array(255)))).toBe("ISSUER_ERR_REQUEST");
    const below = new Uint8Array(n);
    below[255]! -= 1;
    expect(codeOf(() => signer.sign(below))).toBe("none");
  });

  it("never returns a signature that fails the RSAVP1 check (fault check)", () => {
    const other = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const m = new Uint8Array(256);
    m[200] = 1;
    // The private operation with one key, the check with another: the result is refused.
    expect(codeOf(() => blindSign(vectorKey, other.publicKey, modulusOf(other.publicKey), m))).toBe("INTERNAL_ERR");
  });

  it("accepts only RSA-2048 keys with e = 65537 for type 2", () => {
    const small = generateKeyPairSync("rsa", { modulusLength: 1024 });
    expect(codeOf(() => createBlindRsaSigner(small.privateKey))).toBe("CFG_ERR_KEY_FILE");
    expect(codeOf(() => createBlindRsaSigner(small.publicKey))).toBe("CFG_ERR_KEY_FILE");
  });
});

describe("VOPRF BlindEvaluate (RFC 9497 §3.3.2)", () => {
  const suite = Oprf.Suite.P384_SHA384;
  const group = Oprf.getGroup(suite, CryptoNoble);

  it("derives the same key pair as voprf-ts (DeriveKeyPair with info \"PrivacyPass\")", async () => {
    const seed = new Uint8Array(randomBytes(32));
    const info = new TextEncoder().encode("PrivacyPass");
    const stock = await stockDeriveKeyPair(Oprf.Mode.VOPRF, suite, seed, info, CryptoNoble);
    const ours = deriveKeyPair(seed);
    expect(toHex(ours.skS)).toBe(toHex(stock.privateKey));
    expect(toHex(ours.pkS)).toBe(toHex(stock.publicKey));
  });

  it.each([1, 3])("equals voprf-ts's evaluations and DLEQ batch proof for the same r (batch of %d)", async (n) => {
    const { skS, pkS } = deriveKeyPair(new Uint8Array(randomBytes(32)));
    const blinded = Array.from({ length: n }, () => serializeElement(hashToGroup(new Uint8Array(randomBytes(40)))));
    const r = randomScalar(P384_SHA384);
    const ours = blindEvaluateBatch(P384_SHA384, skS, pkS, blinded, { r });

    const prover = new DLEQProver({ group: group.id, hash: "SHA-384", dst: Oprf.getDST(Oprf.Mode.VOPRF, suite, "") }, CryptoNoble);
    const k = group.desScalar(skS);
    const pairs = blinded.map((b) => {
      const C = group.desElt(b);
      return [C, C.mul(k)] as [typeof C, typeof C];
    });
    const rScalar = group.desScalar(fromHex(r.toString(16).padStart(96, "0")));
    const proof = await prover.prove_batch(k, [group.generator(), group.desElt(pkS)], pairs, rScalar);
    expect(ours.evaluatedElements.map(toHex)).toEqual(pairs.map(([, D]) => toHex(D.serialize(true))));
    expect(toHex(ours.proof)).toBe(toHex(proof.serialize()));
  });

  it("answers 422 for a blinded element that is not a P-384 point", () => {
    const signer = createVoprfSigner(deriveKeyPair(new Uint8Array(32)).skS);
    const bad = new Uint8Array(49).fill(0xff);
    bad[0] = 0x02; // x >= p is no field element
    expect(codeOf(() => signer.evaluateBatch([bad]))).toBe("ISSUER_ERR_REQUEST");
    let x = 1;
    for (; ; x++) {
      const b = new Uint8Array(49);
      b[0] = 0x02;
      b[48] = x;
      if (codeOf(() => signer.evaluateBatch([b])) === "ISSUER_ERR_REQUEST") break; // x^3 - 3x + b is no square
    }
    expect(x).toBeLessThan(50);
    bad[0] = 0x04;
    expect(codeOf(() => signer.evaluateBatch([bad]))).toBe("ISSUER_ERR_REQUEST");
    expect(codeOf(() => createVoprfSigner(new Uint8Array(48)))).toBe("CFG_ERR_KEY_FILE");
  });
});
