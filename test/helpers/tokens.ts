// Privacy Pass tokens for tests, made without the issuance round trip: a type 2 token is an
// RSASSA-PSS (SHA-384, MGF1-SHA-384, salt 48) signature over AuthenticatorInput by the issuer key,
// which is exactly what a finalized blind signature is (RFC 9578 §6.4); a type 1 or 5 token is
// Evaluate(skI, AuthenticatorInput) (§5.4). Also: issuer keys and directory documents.

import { constants, createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from "node:crypto";
import { toBase64Url } from "../../core/bytes.js";
import {
  TOKEN_TYPE,
  encodeAuthenticatorInput,
  encodeToken,
  encodeTokenChallenge,
  formatAuthorization,
  rsaPssSpkiFromRsaSpki,
  tokenKeyId,
  type TokenChallenge,
} from "../../core/privacypass/index.js";
import { deriveKeyPair, evaluate } from "../../core/privacypass/voprf.js";
import { RISTRETTO255_SHA512 } from "../../core/privacypass/oprf-suite.js";
import { deriveKeyPair as deriveOprfKeyPair, evaluate as evaluateOprf } from "../../core/privacypass/voprf-batch.js";

export interface TestIssuerKey {
  tokenType: number;
  /** As published in the directory. */
  tokenKey: Uint8Array;
  tokenKeyId: Uint8Array;
  /** Type 2: the RSA private key. */
  rsaPrivateKey?: KeyObject;
  /** Types 1 and 5: SerializeScalar(skI). */
  voprfPrivateKey?: Uint8Array;
}

let cachedRsa: TestIssuerKey[] = [];

/** A fresh (or, with `reuse`, a per-process cached) RSA-2048 issuer key for type 2. */
export function makeBlindRsaIssuerKey(opts: { reuse?: number } = {}): TestIssuerKey {
  if (opts.reuse !== undefined && cachedRsa[opts.reuse] !== undefined) return cachedRsa[opts.reuse]!;
  const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const spki = new Uint8Array(publicKey.export({ format: "der", type: "spki" }));
  const tokenKey = rsaPssSpkiFromRsaSpki(spki);
  const key: TestIssuerKey = { tokenType: TOKEN_TYPE.BLIND_RSA_2048, tokenKey, tokenKeyId: tokenKeyId(tokenKey), rsaPrivateKey: privateKey };
  if (opts.reuse !== undefined) {
    cachedRsa = [...cachedRsa];
    cachedRsa[opts.reuse] = key;
  }
  return key;
}

/** A type 1 (VOPRF P-384) issuer key derived from a seed (RFC 9578 §5.5). */
export function makeVoprfIssuerKey(seed: Uint8Array = new Uint8Array(randomBytes(32))): TestIssuerKey {
  const { skS, pkS } = deriveKeyPair(seed);
  return { tokenType: TOKEN_TYPE.VOPRF_P384, tokenKey: pkS, tokenKeyId: tokenKeyId(pkS), voprfPrivateKey: skS };
}

/** A type 5 (VOPRF ristretto255) issuer key derived from a seed. */
export function makeVoprfRistrettoIssuerKey(seed: Uint8Array = new Uint8Array(randomBytes(32))): TestIssuerKey {
  const { skS, pkS } = deriveOprfKeyPair(RISTRETTO255_SHA512, seed);
  return { tokenType: TOKEN_TYPE.VOPRF_RISTRETTO255, tokenKey: pkS, tokenKeyId: tokenKeyId(pkS), voprfPrivateKey: skS };
}

export function challengeDigest(c: TokenChallenge): Uint8Array {
  return new Uint8Array(createHash("sha256").update(encodeTokenChallenge(c)).digest());
}

export interface MakeTokenOptions {
  key: TestIssuerKey;
  challenge: TokenChallenge;
  nonce?: Uint8Array;
  /** Flip a bit of the authenticator (a bad signature). */
  corrupt?: boolean;
  /** Override fields of the token (e.g. another type or key id). */
  tokenType?: number;
  tokenKeyId?: Uint8Array;
}

/** An encoded Token for `challenge`, signed (type 2) or evaluated (type 1) with the issuer key. */
export function makeToken(o: MakeTokenOptions): Uint8Array {
  const fields = {
    tokenType: o.tokenType ?? o.key.tokenType,
    nonce: o.nonce ?? new Uint8Array(randomBytes(32)),
    challengeDigest: challengeDigest(o.challenge),
    tokenKeyId: o.tokenKeyId ?? o.key.tokenKeyId,
  };
  const input = encodeAuthenticatorInput(fields);
  let authenticator: Uint8Array;
  if (o.key.tokenType === TOKEN_TYPE.BLIND_RSA_2048) {
    authenticator = new Uint8Array(
      sign("sha384", input, { key: o.key.rsaPrivateKey!, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 }),
    );
  } else if (o.key.tokenType === TOKEN_TYPE.VOPRF_RISTRETTO255) {
    authenticator = evaluateOprf(RISTRETTO255_SHA512, o.key.voprfPrivateKey!, input);
  } else {
    authenticator = evaluate(o.key.voprfPrivateKey!, input);
  }
  if (o.corrupt === true) authenticator[authenticator.length - 1]! ^= 1;
  return encodeToken({ ...fields, authenticator });
}

/** `PrivateToken token="..."` for `makeToken(o)`. */
export function makeAuthorization(o: MakeTokenOptions): string {
  return formatAuthorization(makeToken(o));
}

/** RFC 9578 §4 directory document. */
export function directoryDocument(
  keys: readonly { key: TestIssuerKey; notBeforeSec?: number }[],
  issuerRequestUri = "https://issuer.example/token-request",
): Uint8Array {
  return new TextEncoder().encode(
    JSON.stringify({
      "issuer-request-uri": issuerRequestUri,
      "token-keys": keys.map(({ key, notBeforeSec }) => ({
        "token-type": key.tokenType,
        "token-key": toBase64Url(key.tokenKey),
        ...(notBeforeSec === undefined ? {} : { "not-before": notBeforeSec }),
      })),
    }),
  );
}
