// ARC for the client (draft-ietf-privacypass-arc-protocol-01, token type 0xE5AC): one credential
// per (issuer, credential context), many presentations made without contacting the issuer.
//
// Credentials are kept per request_context (issuer name, origin_info, credential_context, issuer
// key id): a challenge with another credential_context (e.g. the next epoch) or another issuer key
// needs a new credential. Each credential keeps one presentation state per presentation_context
// (issuer name, origin_info, redemption_context, key id). A state is created once and only ever
// advanced: it is never copied, recreated or rewound, since a repeated nonce repeats the tag (the
// gate refuses it) and links the two presentations. When a state has made `rate-limit`
// presentations, the credential is replaced by a new one (which costs one unit of the attester's
// quota), never by a second state for the same context. Browser-safe (pure JS).

import { sha256 } from "@noble/hashes/sha2.js";
import { ProtocolError, wrapError } from "../core/errors.js";
import { toHex } from "../core/bytes.js";
import type { TokenChallenge } from "../core/privacypass/index.js";
import {
  ARC_MEDIA_TYPES,
  createCredentialRequest,
  decodeArcCredentialResponse,
  decodeServerPublicKey,
  encodeArcCredentialRequest,
  encodeArcToken,
  finalizeCredential,
  issuerKeyId,
  presentationContext,
  PresentationState,
  requestContext,
  type Credential,
  type Presentation,
} from "../core/privacypass/arc/index.js";

/** Sends an issuance request to the issuer and returns its 200 body (errors mapped by the caller). */
export type IssuerPost = (body: Uint8Array, contentType: string, accept: string) => Promise<Uint8Array>;

/** What the token source knows of one learned ARC challenge. */
export interface ArcChallenge {
  challenge: Uint8Array;
  decoded: TokenChallenge;
  /** The issuer's ARC public key (the challenge's token-key). */
  tokenKey: Uint8Array;
  /** The challenge's rate-limit: the presentation limit. */
  rateLimit: number;
}

/**
 * Obtains one credential for the challenge from the issuer (CreateCredentialRequest, the issuer's
 * answer, FinalizeCredential): CLIENT_ERR_CHALLENGE for a token-key that is no ARC key,
 * CLIENT_ERR_ISSUER_FAILED for an answer that does not verify.
 */
export async function issueArcCredential(c: ArcChallenge, post: IssuerPost): Promise<Credential> {
  let publicKey;
  try {
    publicKey = decodeServerPublicKey(c.tokenKey);
  } catch (e) {
    throw new ProtocolError("CLIENT_ERR_CHALLENGE", "the gateway's ARC token-key is not an ARC(P-256) public key", { cause: e });
  }
  const keyId = issuerKeyId(c.tokenKey);
  const { clientSecrets, request } = createCredentialRequest(requestContext(c.decoded, keyId));
  const body = encodeArcCredentialRequest({ truncatedIssuerKeyId: keyId[keyId.length - 1]!, request });
  const answer = await post(body, ARC_MEDIA_TYPES.credentialRequest, ARC_MEDIA_TYPES.credentialResponse);
  try {
    return finalizeCredential(clientSecrets, publicKey, request, decodeArcCredentialResponse(answer));
  } catch (e) {
    throw new ProtocolError("CLIENT_ERR_ISSUER_FAILED", "the issuer's credential response does not verify", { cause: e });
  }
}

/** The ARC token (the Authorization's token) carrying `presentation`, made with `nonce`, for the challenge. */
export function encodeArcTokenFor(c: ArcChallenge, nonce: number, presentation: Presentation): Uint8Array {
  return encodeArcToken({ presentationNonce: nonce, challengeDigest: sha256(c.challenge), issuerKeyId: issuerKeyId(c.tokenKey), presentation });
}

interface CredentialSlot {
  /** The credential, or its issuance in flight (one per slot at a time). */
  credential: Promise<Credential>;
  /** One state per presentation context, for this credential only. */
  states: Map<string, PresentationState>;
}

export class ArcCredentials {
  readonly #post: IssuerPost;
  readonly #slots = new Map<string, CredentialSlot>();
  #issued = 0;

  constructor(post: IssuerPost) {
    this.#post = post;
  }

  /** Credentials obtained from the issuer. */
  get issued(): number {
    return this.#issued;
  }

  async #issue(c: ArcChallenge): Promise<Credential> {
    const credential = await issueArcCredential(c, this.#post);
    this.#issued++;
    return credential;
  }

  #slot(c: ArcChallenge, replace: CredentialSlot | undefined): CredentialSlot {
    const keyId = issuerKeyId(c.tokenKey);
    const id = toHex(requestContext(c.decoded, keyId));
    const existing = this.#slots.get(id);
    if (existing !== undefined && existing !== replace) return existing;
    const slot: CredentialSlot = { credential: this.#issue(c), states: new Map() };
    this.#slots.set(id, slot);
    // A failed issuance must not stick: the next call tries again, and a credential it was to
    // replace stays in use for the presentation contexts where it has presentations left.
    slot.credential.catch(() => {
      if (this.#slots.get(id) !== slot) return;
      if (replace === undefined) this.#slots.delete(id);
      else this.#slots.set(id, replace);
    });
    return slot;
  }

  /** Makes sure a credential for the challenge is held (start-up; awaits the issuer). */
  async prepare(c: ArcChallenge): Promise<void> {
    await this.#slot(c, undefined).credential;
  }

  /** The ARC token for the next presentation in the challenge's presentation context. */
  async token(c: ArcChallenge): Promise<Uint8Array> {
    const keyId = issuerKeyId(c.tokenKey);
    const contextBytes = presentationContext(c.decoded, keyId);
    const context = toHex(contextBytes);
    let slot = this.#slot(c, undefined);
    for (let attempt = 0; attempt < 2; attempt++) {
      let credential: Credential;
      try {
        credential = await slot.credential;
      } catch (e) {
        throw wrapError(e, "CLIENT_ERR_ISSUER_FAILED", "no ARC credential could be obtained");
      }
      let state = slot.states.get(context);
      if (state === undefined) {
        state = new PresentationState(credential, contextBytes, c.rateLimit);
        slot.states.set(context, state);
      }
      if (state.remaining > 0) {
        const { nonce, presentation } = state.present();
        return encodeArcTokenFor(c, nonce, presentation);
      }
      // This credential's limit is reached here: a new credential, never a reused state.
      slot = this.#slot(c, slot);
    }
    throw new ProtocolError("CLIENT_ERR_ISSUER_FAILED", "no ARC presentation could be made");
  }
}
