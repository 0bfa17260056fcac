// ARC test fixtures: an issuer key file with ARC keys, credentials issued straight from a private
// key (the issuer's HTTP route is tested on its own), and tokens for a gate's challenge.
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { toBase64Url, toHex } from "../../core/bytes.js";
import { formatAuthorization, decodeTokenChallenge, type TokenChallenge } from "../../core/privacypass/index.js";
import {
  createCredentialRequest,
  createCredentialResponse,
  encodeArcToken,
  encodeServerPrivateKey,
  encodeServerPublicKey,
  finalizeCredential,
  issuerKeyId,
  makePresentation,
  presentationContext,
  PresentationState,
  requestContext,
  setupServer,
  type Credential,
  type ServerPrivateKey,
  type ServerPublicKey,
} from "../../core/privacypass/arc/index.js";

export interface ArcTestKey {
  privateKey: ServerPrivateKey;
  publicKey: ServerPublicKey;
  tokenKey: Uint8Array;
  keyId: Uint8Array;
}

export function makeArcKey(): ArcTestKey {
  const { privateKey, publicKey } = setupServer();
  const tokenKey = encodeServerPublicKey(publicKey);
  return { privateKey, publicKey, tokenKey, keyId: issuerKeyId(tokenKey) };
}

/** Writes an issuer key file (issuer/key-store.ts format) with these ARC keys, mode 0600. */
export function writeArcKeyFile(file: string, keys: { key: ArcTestKey; notBeforeSec: number }[]): void {
  const doc = {
    version: 1,
    keys: keys.map(({ key, notBeforeSec }) => ({
      tokenType: 0xe5ac,
      notBefore: notBeforeSec,
      tokenKey: toBase64Url(key.tokenKey, true),
      privateKey: toHex(encodeServerPrivateKey(key.privateKey)),
    })),
  };
  writeFileSync(file, JSON.stringify(doc), { mode: 0o600 });
}

/** A credential for `challenge` under `key`, issued directly with the private key. */
export function issueCredential(key: ArcTestKey, challenge: TokenChallenge): Credential {
  const { clientSecrets, request } = createCredentialRequest(requestContext(challenge, key.keyId));
  return finalizeCredential(clientSecrets, key.publicKey, request, createCredentialResponse(key.privateKey, key.publicKey, request));
}

/** Client side of one ARC challenge: a credential and its presentation state, tokens on demand. */
export class ArcTestClient {
  readonly challenge: TokenChallenge;
  readonly challengeBytes: Uint8Array;
  readonly credential: Credential;
  readonly state: PresentationState;
  readonly #key: ArcTestKey;
  readonly #limit: number;

  constructor(key: ArcTestKey, challengeBytes: Uint8Array, limit: number) {
    this.#key = key;
    this.#limit = limit;
    this.challengeBytes = challengeBytes;
    this.challenge = decodeTokenChallenge(challengeBytes);
    this.credential = issueCredential(key, this.challenge);
    this.state = new PresentationState(this.credential, presentationContext(this.challenge, key.keyId), limit);
  }

  /** `Authorization` for the next presentation of the state. */
  next(): string {
    const { nonce, presentation } = this.state.present();
    return this.#authorization(nonce, presentation);
  }

  /** `Authorization` for a presentation with a chosen nonce (repeated or out of range). */
  withNonce(nonce: number): string {
    return this.#authorization(nonce, makePresentation(this.credential, presentationContext(this.challenge, this.#key.keyId), this.#limit, nonce));
  }

  #authorization(nonce: number, presentation: ReturnType<typeof makePresentation>): string {
    const challengeDigest = new Uint8Array(createHash("sha256").update(this.challengeBytes).digest());
    return formatAuthorization(encodeArcToken({ presentationNonce: Math.max(0, nonce) >>> 0, challengeDigest, issuerKeyId: this.#key.keyId, presentation }));
  }
}
