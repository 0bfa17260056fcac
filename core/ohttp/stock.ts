// The stock hpke-js primitives (WebCrypto and pure JavaScript). Used in browsers, for X-Wing
// everywhere, and as the independent implementation that tests and benchmarks compare against.

import {
  Aes128Gcm,
  Aes256Gcm,
  CipherSuite,
  DhkemP256HkdfSha256,
  HkdfSha256,
  HkdfSha384,
  HkdfSha512,
  type AeadInterface,
  type KdfInterface,
  type KemInterface,
} from "@hpke/core";
import { Chacha20Poly1305 } from "@hpke/chacha20poly1305";
import { DhkemX25519HkdfSha256, X25519, HkdfSha256 as X25519Hkdf } from "@hpke/dhkem-x25519";
import { XWing } from "@hpke/hybridkem-x-wing";
import { p256 } from "@noble/curves/p256";
import { AEAD, KDF, KEM, type AeadId, type KdfId, type KemId } from "./constants.js";
import type { HpkeBackend, KemKeyPair } from "./backend.js";

export function stockKem(kemId: KemId): KemInterface {
  switch (kemId) {
    case KEM.X25519:
      return new DhkemX25519HkdfSha256();
    case KEM.P256:
      return new DhkemP256HkdfSha256();
    case KEM.XWING:
      return new XWing();
  }
}

export function stockKdf(kdfId: KdfId): KdfInterface {
  switch (kdfId) {
    case KDF.SHA256:
      return new HkdfSha256();
    case KDF.SHA384:
      return new HkdfSha384();
    case KDF.SHA512:
      return new HkdfSha512();
  }
}

export function stockAead(aeadId: AeadId): AeadInterface {
  switch (aeadId) {
    case AEAD.AES128GCM:
      return new Aes128Gcm();
    case AEAD.AES256GCM:
      return new Aes256Gcm();
    case AEAD.CHACHA20POLY1305:
      return new Chacha20Poly1305();
  }
}

const bytes = (b: ArrayBuffer): Uint8Array => new Uint8Array(b);

/** Serialized public key of a serialized private key (RFC 9180 has no such function). */
async function publicFromPrivate(kemId: KemId, sk: Uint8Array): Promise<{ pair: CryptoKeyPair; publicKey: Uint8Array }> {
  const kem = stockKems.get(kemId)!;
  if (sk.length !== kem.privateKeySize) throw new RangeError("private key has the wrong length");
  if (kemId === KEM.XWING) {
    const pair = await (kem as XWing).generateKeyPairDerand(new Uint8Array(sk));
    return { pair, publicKey: bytes(await kem.serializePublicKey(pair.publicKey)) };
  }
  const privateKey = await kem.deserializePrivateKey(new Uint8Array(sk));
  let pk: Uint8Array;
  if (kemId === KEM.X25519) {
    const prim = new X25519(new X25519Hkdf());
    pk = bytes(await prim.serializePublicKey(await prim.derivePublicKey(privateKey)));
  } else {
    pk = p256.getPublicKey(sk, false);
  }
  return { pair: { privateKey, publicKey: await kem.deserializePublicKey(pk) }, publicKey: pk };
}

const stockKems = new Map<KemId, KemInterface>([KEM.X25519, KEM.P256, KEM.XWING].map((id) => [id, stockKem(id)]));
const stockSuites = new Map<number, CipherSuite>();

export const stockHpkeBackend: HpkeBackend = Object.freeze({
  name: "stock hpke-js",
  suite(kemId: KemId, kdfId: KdfId, aeadId: AeadId): CipherSuite {
    const id = kemId * 0x100000000 + kdfId * 0x10000 + aeadId;
    let s = stockSuites.get(id);
    if (s === undefined) {
      s = new CipherSuite({ kem: stockKems.get(kemId)!, kdf: stockKdf(kdfId), aead: stockAead(aeadId) });
      stockSuites.set(id, s);
    }
    return s;
  },
  importPublicKey(kemId: KemId, publicKey: Uint8Array): Promise<CryptoKey> {
    return stockKems.get(kemId)!.deserializePublicKey(new Uint8Array(publicKey));
  },
  importPrivateKey(kemId: KemId, privateKey: Uint8Array): Promise<KemKeyPair> {
    return publicFromPrivate(kemId, privateKey);
  },
  async generateKeyPair(kemId: KemId): Promise<{ privateKey: Uint8Array; publicKey: Uint8Array }> {
    const kem = stockKems.get(kemId)!;
    const pair = await kem.generateKeyPair();
    return {
      privateKey: bytes(await kem.serializePrivateKey(pair.privateKey)),
      publicKey: bytes(await kem.serializePublicKey(pair.publicKey)),
    };
  },
});
