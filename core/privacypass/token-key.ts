// Token keys and their ids (RFC 9578 §5.5 type 1, §6.5 type 2).
//
// token_key_id = SHA-256(token-key), where token-key is, for type 1, the issuer's public key as
// SerializeElement (a compressed P-384 point, 49 bytes) and, for type 2, a SubjectPublicKeyInfo
// that uses the RSASSA-PSS OID with parameters (RFC 9578 §6.5, RFC 4055 §3.1):
//
//   SubjectPublicKeyInfo ::= SEQUENCE {
//     algorithm  SEQUENCE { id-RSASSA-PSS,
//                           RSASSA-PSS-params { [0] sha384, [1] mgf1SHA384, [2] saltLength 48 } },
//     subjectPublicKey  BIT STRING (RSAPublicKey) }
//
// WebCrypto and most libraries only speak rsaEncryption SPKIs, so we convert in both directions.
// The algorithm identifier bytes are fixed; they equal what privacypass-ts, pat-go and the Rust
// implementation emit (checked against every vector in test/vectors/privacypass).

import { sha256 } from "@noble/hashes/sha2.js";
import { ByteReader, concatBytes, equalBytes, fromHex } from "../bytes.js";
import { ProtocolError } from "../errors.js";

/** SHA-256 of the token key: the full token key id (Nid = 32). */
export function tokenKeyId(tokenKey: Uint8Array): Uint8Array {
  return sha256(tokenKey);
}

/** AlgorithmIdentifier { id-RSASSA-PSS (1.2.840.113549.1.1.10), sha384 / MGF1-sha384 / 48 }. */
export const RSASSA_PSS_SHA384_ALGORITHM: Uint8Array = fromHex(
  "303d06092a864886f70d01010a3030a00d300b0609608648016503040202a11a301806092a864886f70d010108" +
    "300b0609608648016503040202a203020130",
);
/** AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }. */
export const RSA_ENCRYPTION_ALGORITHM: Uint8Array = fromHex("300d06092a864886f70d0101010500");

function derLength(n: number): Uint8Array {
  if (n < 0x80) return Uint8Array.of(n);
  if (n < 0x100) return Uint8Array.of(0x81, n);
  if (n < 0x10000) return Uint8Array.of(0x82, n >> 8, n & 0xff);
  throw new ProtocolError("PP_ERR_FORMAT", "DER length too large");
}

/** Reads one DER TLV (tag, definite minimal length); returns its tag, value and the whole TLV. */
function readTlv(r: ByteReader): { tag: number; value: Uint8Array } {
  const tag = r.u8("DER tag");
  const first = r.u8("DER length");
  let len: number;
  if (first < 0x80) len = first;
  else if (first === 0x81) {
    len = r.u8("DER length");
    if (len < 0x80) throw new ProtocolError("PP_ERR_FORMAT", "DER length not minimal");
  } else if (first === 0x82) {
    len = r.u16("DER length");
    if (len < 0x100) throw new ProtocolError("PP_ERR_FORMAT", "DER length not minimal");
  } else throw new ProtocolError("PP_ERR_FORMAT", "unsupported DER length");
  return { tag, value: r.bytes(len, "DER value") };
}

/** Splits an SPKI into its AlgorithmIdentifier TLV and subjectPublicKey BIT STRING TLV. */
function splitSpki(spki: Uint8Array): { algorithm: Uint8Array; bitString: Uint8Array } {
  const outer = new ByteReader(spki, "PP_ERR_TRUNCATED", "PP_ERR_FORMAT");
  const seq = readTlv(outer);
  outer.end("SubjectPublicKeyInfo");
  if (seq.tag !== 0x30) throw new ProtocolError("PP_ERR_FORMAT", "SPKI is not a SEQUENCE");
  const inner = new ByteReader(seq.value, "PP_ERR_TRUNCATED", "PP_ERR_FORMAT");
  const algStart = inner.offset;
  const alg = readTlv(inner);
  const algorithm = seq.value.subarray(algStart, inner.offset);
  const bitStart = inner.offset;
  const bits = readTlv(inner);
  const bitString = seq.value.subarray(bitStart, inner.offset);
  inner.end("SubjectPublicKeyInfo");
  if (alg.tag !== 0x30 || bits.tag !== 0x03 || bits.value[0] !== 0) {
    throw new ProtocolError("PP_ERR_FORMAT", "SPKI fields malformed");
  }
  return { algorithm, bitString };
}

function buildSpki(algorithm: Uint8Array, bitString: Uint8Array): Uint8Array {
  const body = concatBytes(algorithm, bitString);
  return concatBytes(Uint8Array.of(0x30), derLength(body.length), body);
}

/** rsaEncryption SPKI (what node:crypto and WebCrypto export) -> RSASSA-PSS token-key. */
export function rsaPssSpkiFromRsaSpki(spki: Uint8Array): Uint8Array {
  const { algorithm, bitString } = splitSpki(spki);
  if (!equalBytes(algorithm, RSA_ENCRYPTION_ALGORITHM)) {
    throw new ProtocolError("PP_ERR_FORMAT", "SPKI is not rsaEncryption");
  }
  return buildSpki(RSASSA_PSS_SHA384_ALGORITHM, bitString);
}

/**
 * RSASSA-PSS token-key -> rsaEncryption SPKI (importable everywhere). Strict: the algorithm must
 * be id-RSASSA-PSS with exactly the SHA-384 / MGF1-SHA-384 / saltLength 48 parameters.
 */
export function rsaSpkiFromRsaPssSpki(spki: Uint8Array): Uint8Array {
  const { algorithm, bitString } = splitSpki(spki);
  if (!equalBytes(algorithm, RSASSA_PSS_SHA384_ALGORITHM)) {
    throw new ProtocolError("PP_ERR_FORMAT", "token key is not an RSASSA-PSS SHA-384 key");
  }
  return buildSpki(RSA_ENCRYPTION_ALGORITHM, bitString);
}
