// TokenChallenge (RFC 9577 §2.1).
//
//   struct {
//       uint16_t token_type;
//       opaque issuer_name<1..2^16-1>;
//       opaque redemption_context<0..32>;
//       opaque origin_info<0..2^16-1>;
//   } TokenChallenge;
//
// `redemption_context` is either 0 or 32 bytes (§2.1.1). `origin_info` is empty or a
// comma-separated list of origin names (§2.1). Names are UTF-8 (in practice ASCII host names).
//
// ARC (token type 0xE5AC, draft-ietf-privacypass-arc-protocol-01 §5) appends one field:
//
//       opaque credential_context<0..32>;      /* 0 or 32 bytes, one length octet */

import { ByteReader, ByteWriter } from "../bytes.js";
import { ProtocolError } from "../errors.js";
import { ARC_TOKEN_TYPE } from "./token-type.js";

export interface TokenChallenge {
  tokenType: number;
  issuerName: string;
  /** Empty or exactly 32 bytes. */
  redemptionContext: Uint8Array;
  /** Empty (tokens good for any origin) or the origin names. */
  originInfo: string[];
  /** ARC only (and always there for ARC): empty or exactly 32 bytes. */
  credentialContext?: Uint8Array;
}

const MAX_U16 = 0xffff;
const utf8 = new TextEncoder();
// fatal: invalid UTF-8 is a format error; ignoreBOM: keep a leading U+FEFF so bytes round-trip.
const utf8Strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function decodeUtf8(b: Uint8Array, what: string): string {
  try {
    return utf8Strict.decode(b);
  } catch (e) {
    throw new ProtocolError("PP_ERR_FORMAT", `${what}: not UTF-8`, { cause: e });
  }
}

function checkOrigins(origins: readonly string[]): void {
  for (const o of origins) {
    if (o.length === 0 || o.includes(",")) {
      throw new ProtocolError("PP_ERR_FORMAT", "origin_info: empty name or name containing ','");
    }
  }
}

export function encodeTokenChallenge(c: TokenChallenge): Uint8Array {
  if (!Number.isInteger(c.tokenType) || c.tokenType < 0 || c.tokenType > MAX_U16) {
    throw new ProtocolError("PP_ERR_FORMAT", "token_type out of range");
  }
  const issuer = utf8.encode(c.issuerName);
  if (issuer.length < 1 || issuer.length > MAX_U16) {
    throw new ProtocolError("PP_ERR_FORMAT", "issuer_name must be 1..65535 bytes");
  }
  if (c.redemptionContext.length !== 0 && c.redemptionContext.length !== 32) {
    throw new ProtocolError("PP_ERR_FORMAT", "redemption_context must be 0 or 32 bytes");
  }
  checkOrigins(c.originInfo);
  const origin = utf8.encode(c.originInfo.join(","));
  if (origin.length > MAX_U16) throw new ProtocolError("PP_ERR_FORMAT", "origin_info too long");
  const isArc = c.tokenType === ARC_TOKEN_TYPE;
  const credential = c.credentialContext ?? new Uint8Array(0);
  if (!isArc && c.credentialContext !== undefined) {
    throw new ProtocolError("PP_ERR_FORMAT", "credential_context exists only in ARC challenges");
  }
  if (credential.length !== 0 && credential.length !== 32) {
    throw new ProtocolError("PP_ERR_FORMAT", "credential_context must be 0 or 32 bytes");
  }
  const w = new ByteWriter(7 + issuer.length + c.redemptionContext.length + origin.length + (isArc ? 1 + credential.length : 0));
  w.u16(c.tokenType).u16(issuer.length).bytes(issuer);
  w.u8(c.redemptionContext.length).bytes(c.redemptionContext);
  w.u16(origin.length).bytes(origin);
  if (isArc) w.u8(credential.length).bytes(credential);
  return w.finish();
}

/** Strict: rejects trailing bytes, an empty issuer name, a context of other than 0/32 bytes. */
export function decodeTokenChallenge(b: Uint8Array): TokenChallenge {
  const r = new ByteReader(b, "PP_ERR_TRUNCATED", "PP_ERR_FORMAT");
  const tokenType = r.u16("token_type");
  const issuerLen = r.u16("issuer_name length");
  if (issuerLen === 0) throw new ProtocolError("PP_ERR_FORMAT", "issuer_name is empty");
  const issuerName = decodeUtf8(r.bytes(issuerLen, "issuer_name"), "issuer_name");
  const ctxLen = r.u8("redemption_context length");
  if (ctxLen !== 0 && ctxLen !== 32) {
    throw new ProtocolError("PP_ERR_FORMAT", "redemption_context must be 0 or 32 bytes");
  }
  const redemptionContext = r.bytes(ctxLen, "redemption_context").slice();
  const originLen = r.u16("origin_info length");
  const originText = decodeUtf8(r.bytes(originLen, "origin_info"), "origin_info");
  let credentialContext: Uint8Array | undefined;
  if (tokenType === ARC_TOKEN_TYPE) {
    const credLen = r.u8("credential_context length");
    if (credLen !== 0 && credLen !== 32) throw new ProtocolError("PP_ERR_FORMAT", "credential_context must be 0 or 32 bytes");
    credentialContext = r.bytes(credLen, "credential_context").slice();
  }
  r.end("TokenChallenge");
  const originInfo = originText === "" ? [] : originText.split(",");
  checkOrigins(originInfo);
  const c: TokenChallenge = { tokenType, issuerName, redemptionContext, originInfo };
  if (credentialContext !== undefined) c.credentialContext = credentialContext;
  return c;
}
