// The two RFC 9497 ciphersuites Privacy Pass uses for privately verifiable tokens, behind one
// interface so that the batched VOPRF (./voprf-batch.ts) is written once:
//
//   token type 0x0001: P384-SHA384          (RFC 9578 §5)         Ne = 49, Ns = 48, Nh = 48
//   token type 0x0005: ristretto255-SHA512  (draft-ietf-privacypass-batched-tokens, IANA entry;
//                                            RFC 9497 §4.1)        Ne = 32, Ns = 32, Nh = 64
//
// RFC 9497 §4.1, ristretto255-SHA512:
//   HashToGroup:  hash_to_ristretto255 (RFC 9380, expand_message_xmd SHA-512, 64 bytes, RFC 9496
//                 one-way map), DST = "HashToGroup-" || contextString
//   HashToScalar: expand_message_xmd(input, "HashToScalar-" || contextString, 64), read as a
//                 little-endian integer, reduced mod the group order
//   Elements: the 32-byte RFC 9496 encoding; scalars: 32 bytes little-endian.
// Pure @noble/curves: runs in browsers too.

import { ristretto255, ristretto255_hasher } from "@noble/curves/ed25519.js";
import { p384 } from "@noble/curves/nist.js";
import { bytesToNumberBE, bytesToNumberLE, numberToBytesLE } from "@noble/curves/utils.js";
import { sha384, sha512 } from "@noble/hashes/sha2.js";
import { concatBytes } from "../bytes.js";
import { ProtocolError } from "../errors.js";
import { TOKEN_TYPE } from "./token-type.js";
import * as p384Voprf from "./voprf.js";

/** What the VOPRF needs of a group element (both noble point classes have it). */
export interface OprfPoint<P> {
  add(other: P): P;
  multiply(scalar: bigint): P;
  /** Variable time, allows 0: for public scalars only. */
  multiplyUnsafe(scalar: bigint): P;
  is0(): boolean;
  equals(other: P): boolean;
  precompute(windowSize?: number, isLazy?: boolean): P;
}

export interface OprfSuite<P extends OprfPoint<P>> {
  /** RFC 9497 ciphersuite identifier. */
  readonly id: "P384-SHA384" | "ristretto255-SHA512";
  /** The Privacy Pass token type that uses this suite. */
  readonly tokenType: typeof TOKEN_TYPE.VOPRF_P384 | typeof TOKEN_TYPE.VOPRF_RISTRETTO255;
  readonly Ne: number;
  readonly Ns: number;
  readonly Nh: number;
  /** "OPRFV1-" || I2OSP(modeVOPRF, 1) || "-" || identifier */
  readonly contextString: Uint8Array;
  readonly order: bigint;
  readonly generator: P;
  readonly identity: P;
  hash(message: Uint8Array): Uint8Array;
  hashToGroup(input: Uint8Array): P;
  hashToScalar(input: Uint8Array, dst: Uint8Array): bigint;
  serializeElement(P: P): Uint8Array;
  /** RFC 9497 §2.1: throws PP_ERR_FORMAT for a bad encoding or the identity. */
  deserializeElement(bytes: Uint8Array): P;
  serializeScalar(s: bigint): Uint8Array;
  /** RFC 9497 §2.1: throws PP_ERR_FORMAT for a bad length or a value >= order. */
  deserializeScalar(bytes: Uint8Array): bigint;
  /** Sum of scalars[i] * points[i] with public scalars (not constant time: never a secret). */
  msm(points: P[], scalars: bigint[]): P;
}

const te = new TextEncoder();

function contextString(id: string): Uint8Array {
  return concatBytes(te.encode("OPRFV1-"), Uint8Array.of(0x01), te.encode(`-${id}`));
}

type P384Point = ReturnType<typeof p384.Point.fromHex>;

/** VOPRF(P-384, SHA-384): token type 0x0001. */
export const P384_SHA384: OprfSuite<P384Point> = Object.freeze({
  id: "P384-SHA384",
  tokenType: TOKEN_TYPE.VOPRF_P384,
  Ne: p384Voprf.Ne,
  Ns: p384Voprf.Ns,
  Nh: p384Voprf.Nh,
  contextString: p384Voprf.CONTEXT_STRING,
  order: p384.Point.Fn.ORDER,
  generator: p384.Point.BASE,
  identity: p384.Point.ZERO,
  hash: (m: Uint8Array) => sha384(m),
  hashToGroup: p384Voprf.hashToGroup,
  hashToScalar: (input: Uint8Array, dst: Uint8Array) => p384Voprf.hashToScalar(input, dst),
  serializeElement: p384Voprf.serializeElement,
  deserializeElement: p384Voprf.deserializeElement,
  serializeScalar: p384Voprf.serializeScalar,
  deserializeScalar: (b: Uint8Array) => {
    if (b.length !== p384Voprf.Ns) throw new ProtocolError("PP_ERR_FORMAT", `scalar must be ${p384Voprf.Ns} bytes`);
    const s = bytesToNumberBE(b);
    if (s >= p384.Point.Fn.ORDER) throw new ProtocolError("PP_ERR_FORMAT", "scalar out of range");
    return s;
  },
  msm: (points: P384Point[], scalars: bigint[]) => p384.Point.msm(points, scalars),
});

type RistrettoPoint = InstanceType<typeof ristretto255.Point>;
const RP = ristretto255.Point;
const RISTRETTO_ID = "ristretto255-SHA512";
const RISTRETTO_CONTEXT = contextString(RISTRETTO_ID);
const RISTRETTO_HASH_TO_GROUP_DST = concatBytes(te.encode("HashToGroup-"), RISTRETTO_CONTEXT);

/** VOPRF(ristretto255, SHA-512): token type 0x0005. */
export const RISTRETTO255_SHA512: OprfSuite<RistrettoPoint> = Object.freeze({
  id: RISTRETTO_ID,
  tokenType: TOKEN_TYPE.VOPRF_RISTRETTO255,
  Ne: 32,
  Ns: 32,
  Nh: 64,
  contextString: RISTRETTO_CONTEXT,
  order: RP.Fn.ORDER,
  generator: RP.BASE,
  identity: RP.ZERO,
  hash: (m: Uint8Array) => sha512(m),
  hashToGroup: (input: Uint8Array) => {
    const P = ristretto255_hasher.hashToCurve(input, { DST: RISTRETTO_HASH_TO_GROUP_DST }) as unknown as RistrettoPoint;
    if (P.is0()) throw new ProtocolError("PP_ERR_FORMAT", "input hashes to the identity");
    return P;
  },
  hashToScalar: (input: Uint8Array, dst: Uint8Array) => ristretto255_hasher.hashToScalar(input, { DST: dst }),
  serializeElement: (P: RistrettoPoint) => P.toBytes(),
  deserializeElement: (b: Uint8Array) => {
    if (b.length !== 32) throw new ProtocolError("PP_ERR_FORMAT", "element must be a 32-byte ristretto255 encoding");
    let P: RistrettoPoint;
    try {
      P = RP.fromBytes(b);
    } catch (e) {
      throw new ProtocolError("PP_ERR_FORMAT", "element is not a ristretto255 encoding", { cause: e });
    }
    if (P.is0()) throw new ProtocolError("PP_ERR_FORMAT", "element is the identity");
    return P;
  },
  serializeScalar: (s: bigint) => numberToBytesLE(s, 32),
  deserializeScalar: (b: Uint8Array) => {
    if (b.length !== 32) throw new ProtocolError("PP_ERR_FORMAT", "scalar must be 32 bytes");
    const s = bytesToNumberLE(b);
    if (s >= RP.Fn.ORDER) throw new ProtocolError("PP_ERR_FORMAT", "scalar out of range");
    return s;
  },
  msm: (points: RistrettoPoint[], scalars: bigint[]) => RP.msm(points, scalars),
});

/** Calls `f` with the suite of a privately verifiable token type (1 or 5), else undefined. */
export function withOprfSuite<R>(tokenType: number, f: <P extends OprfPoint<P>>(suite: OprfSuite<P>) => R): R | undefined {
  if (tokenType === TOKEN_TYPE.VOPRF_P384) return f(P384_SHA384);
  if (tokenType === TOKEN_TYPE.VOPRF_RISTRETTO255) return f(RISTRETTO255_SHA512);
  return undefined;
}
