// The client side of batched issuance (draft-ietf-privacypass-batched-tokens): build one request
// for `count` tokens of a challenge, then turn the issuer's answer into Tokens.
//
// - Types 0x0001 and 0x0005: the amortized batch (one VOPRF proof for all, ./voprf-batch.ts).
// - Type 0x0002: the generic batch of `count` type 2 TokenRequests (./client.ts does each); the
//   issuer may leave entries absent (refused or failed), which yield no token.

import { exactCopy } from "../bytes.js";
import { ProtocolError } from "../errors.js";
import {
  decodeAmortizedBatchTokenResponse,
  decodeGenericBatchTokenResponse,
  encodeAmortizedBatchTokenRequest,
  encodeGenericBatchTokenRequest,
  isAmortizedTokenType,
} from "./batch.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { defaultRandomBytes } from "./blind-rsa.js";
import { createTokenRequest, type PendingTokenRequest, type TokenRequestDeps } from "./client.js";
import { decodeTokenChallenge } from "./challenge.js";
import { MEDIA_TYPES, truncateTokenKeyId } from "./issuance.js";
import { withOprfSuite, type OprfPoint, type OprfSuite } from "./oprf-suite.js";
import { encodeAuthenticatorInput, encodeToken, NONCE_LENGTH } from "./token.js";
import { tokenKeyId as computeTokenKeyId } from "./token-key.js";
import { TOKEN_TYPE } from "./token-type.js";
import { blind, finalizeBatch, randomScalar, type BlindedInput } from "./voprf-batch.js";

export interface PendingBatchTokenRequest {
  readonly tokenType: number;
  /** Tokens asked for. */
  readonly count: number;
  /** Content-Type of the request, and the media type of a good answer. */
  readonly requestMediaType: string;
  readonly responseMediaType: string;
  readonly request: Uint8Array;
  /**
   * The tokens of the issuer's answer: all `count` of an amortized batch, or those the issuer
   * issued of a generic batch (absent entries give none). Throws PP_ERR_TRUNCATED/PP_ERR_FORMAT
   * for a malformed answer and PP_ERR_TOKEN_SIGNATURE when a proof or signature does not verify.
   */
  finalize(response: Uint8Array): Promise<Uint8Array[]>;
}

interface VoprfRequests {
  inputs: Uint8Array[];
  blinded: BlindedInput[];
  fields: { tokenType: number; nonce: Uint8Array; challengeDigest: Uint8Array; tokenKeyId: Uint8Array }[];
}

function blindVoprf<P extends OprfPoint<P>>(suite: OprfSuite<P>, challenge: Uint8Array, tokenKey: Uint8Array, count: number, deps: TokenRequestDeps): VoprfRequests {
  suite.deserializeElement(tokenKey); // a usable key, or PP_ERR_FORMAT
  const randomBytes = deps.randomBytes ?? defaultRandomBytes;
  const challengeDigest = sha256(challenge);
  const tokenKeyId = computeTokenKeyId(tokenKey);
  const out: VoprfRequests = { inputs: [], blinded: [], fields: [] };
  for (let i = 0; i < count; i++) {
    const nonce = randomBytes(NONCE_LENGTH).slice();
    if (nonce.length !== NONCE_LENGTH) throw new ProtocolError("INTERNAL_ERR", "random source returned the wrong length");
    const f = { tokenType: suite.tokenType, nonce, challengeDigest, tokenKeyId };
    const input = encodeAuthenticatorInput(f);
    out.fields.push(f);
    out.inputs.push(input);
    out.blinded.push(blind(suite, input, randomScalar(suite, randomBytes)));
  }
  return out;
}

function voprfTokens<P extends OprfPoint<P>>(suite: OprfSuite<P>, tokenKey: Uint8Array, r: VoprfRequests, evaluated: Uint8Array[], proof: Uint8Array): Uint8Array[] {
  const outputs = finalizeBatch(suite, tokenKey, r.inputs, r.blinded, evaluated, proof);
  return outputs.map((authenticator, i) => encodeToken({ ...r.fields[i]!, authenticator }));
}

/** Single use: a second finalize after success is an internal error. */
function once<T>(f: (response: Uint8Array) => T): (response: Uint8Array) => T {
  let used = false;
  return (response) => {
    if (used) throw new ProtocolError("INTERNAL_ERR", "token request already finalized");
    const out = f(response);
    used = true;
    return out;
  };
}

/**
 * Starts a batch of `count` tokens for `challenge` (encoded TokenChallenge) with the issuer's
 * `tokenKey`: an amortized batch for types 1 and 5, a generic batch for type 2.
 */
export async function createBatchTokenRequest(
  challenge: Uint8Array,
  tokenKey: Uint8Array,
  count: number,
  deps: TokenRequestDeps = {},
): Promise<PendingBatchTokenRequest> {
  if (!Number.isSafeInteger(count) || count < 1) throw new ProtocolError("INTERNAL_ERR", "a batch needs at least one token");
  const tokenType = decodeTokenChallenge(challenge).tokenType;
  if (isAmortizedTokenType(tokenType)) {
    const made = withOprfSuite(tokenType, (suite) => {
      const r = blindVoprf(suite, exactCopy(challenge), exactCopy(tokenKey), count, deps);
      const request = encodeAmortizedBatchTokenRequest({
        tokenType,
        truncatedTokenKeyId: truncateTokenKeyId(r.fields[0]!.tokenKeyId),
        blindedMsgs: r.blinded.map((b) => b.blindedElement),
      });
      const finalize = once((response: Uint8Array) => {
        const res = decodeAmortizedBatchTokenResponse(tokenType, response);
        return voprfTokens(suite, tokenKey, r, res.evaluatedMsgs, res.evaluatedProof);
      });
      return {
        tokenType,
        count,
        requestMediaType: MEDIA_TYPES.amortizedBatchRequest,
        responseMediaType: MEDIA_TYPES.amortizedBatchResponse,
        request,
        finalize: (response: Uint8Array) => Promise.resolve().then(() => finalize(response)),
      };
    });
    return made!;
  }
  if (tokenType !== TOKEN_TYPE.BLIND_RSA_2048) throw new ProtocolError("PP_ERR_FORMAT", "unsupported token type");
  const pending: PendingTokenRequest[] = [];
  for (let i = 0; i < count; i++) pending.push(await createTokenRequest(challenge, tokenKey, deps));
  const request = encodeGenericBatchTokenRequest(pending.map((p) => p.request));
  let used = false;
  return {
    tokenType,
    count,
    requestMediaType: MEDIA_TYPES.genericBatchRequest,
    responseMediaType: MEDIA_TYPES.genericBatchResponse,
    request,
    async finalize(response) {
      if (used) throw new ProtocolError("INTERNAL_ERR", "token request already finalized");
      const entries = decodeGenericBatchTokenResponse(response);
      if (entries.length !== count) throw new ProtocolError("PP_ERR_FORMAT", `expected ${count} token responses, got ${entries.length}`);
      const tokens: Uint8Array[] = [];
      for (const [i, e] of entries.entries()) {
        if (e === undefined) continue;
        if (e.tokenType !== tokenType) throw new ProtocolError("PP_ERR_FORMAT", `token response ${i} is of another type`);
        tokens.push(await pending[i]!.finalize(e.tokenResponse));
      }
      used = true;
      return tokens;
    },
  };
}
