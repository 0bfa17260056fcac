// ARC redemption at the gate (draft-ietf-privacypass-arc-protocol-01 §7, token type 0xE5AC):
// the challenges the gate sends for ARC issuers, and the verification of an ARC token down to
// the key under which the gate spends it.
//
// ARC is privately verifiable: the gate holds the issuer's ARC private keys, read from the
// issuer's key file (or a copy of it) named by `tokens.issuers[].keys`, never fetched over the
// network; the file is re-read when it changes, so the gate follows the issuer's rotation.
//
// Contexts (each a 32-byte PRF output, keyed by tokens.epochSecretFile when there is one):
//   redemption_context  "task-epoch": F("arc task-epoch" || epoch || task id)   (a limit per DAP task and epoch)
//                       "epoch":      F("arc epoch" || epoch)                   (a limit per epoch)
//                       "none":       empty                                     (a limit per issuer key)
//   credential_context  "epoch":      F("arc credential" || epoch)  (a new credential every epoch)
//                       "none":       empty
// Tokens for the current and the previous epoch are accepted (clients learn challenges ahead).
// The presentation context also holds the issuer key id: when the issuer key rotates, the limit
// starts again under the new key.
//
// The spend key of a token is SHA-256(label || presentation_context || tag): the tag repeats
// exactly when a credential presents the same nonce twice in one presentation context, so the
// nonce store refuses the (limit+1)-th presentation, and a presentation with a nonce outside
// [0, limit) fails its range proof.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { concatBytes, equalBytes, fromHex, toHex } from "../core/bytes.js";
import { ProtocolError } from "../core/errors.js";
import { ARC_TOKEN_TYPE, encodeTokenChallenge, type TokenChallenge, type WwwAuthenticateChallenge } from "../core/privacypass/index.js";
import {
  decodeArcToken,
  decodeServerPrivateKey,
  encodeServerPublicKey,
  issuerKeyId,
  presentationContext,
  presentationContexts,
  publicKeyFromPrivate,
  requestContext,
  serializeElement,
  verifyPresentation,
  type PresentationContexts,
  type ServerPrivateKey,
  type ServerPublicKey,
} from "../core/privacypass/arc/index.js";
import type { SpendKey } from "./store-loss.js";

export type ArcRedemptionContextMode = "task-epoch" | "epoch" | "none";
export type ArcCredentialContextMode = "epoch" | "none";

export interface ArcIssuer {
  /** TokenChallenge.issuer_name. */
  name: string;
  /** The presentation limit (`rate-limit`). */
  rateLimit: number;
  /** How long after its not-before an ARC key is accepted (shared with the issuer). */
  keyLifetimeSec: number;
  redemptionContext: ArcRedemptionContextMode;
  credentialContext: ArcCredentialContextMode;
  /** The issuer's current ARC keys (from its key file). */
  keys(): readonly ArcKey[];
}

export interface ArcKey {
  readonly keyId: Uint8Array;
  readonly notBeforeSec: number;
  readonly tokenKey: Uint8Array;
  readonly privateKey: ServerPrivateKey;
  readonly publicKey: ServerPublicKey;
}

/**
 * The ARC keys of an issuer key file (issuer/key-store.ts format: records with tokenType 58796,
 * notBefore and privateKey = hex of x0 || x1 || x2 || x0Blinding). Throws CFG_ERR_KEY_FILE.
 */
export function parseArcKeys(file: string, text: string): ArcKey[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ProtocolError("CFG_ERR_KEY_FILE", `issuer key file ${file}: not JSON`, { cause: e });
  }
  const records = (doc as { keys?: unknown }).keys;
  if (!Array.isArray(records)) throw new ProtocolError("CFG_ERR_KEY_FILE", `issuer key file ${file}: no keys list`);
  const out: ArcKey[] = [];
  for (const r of records as { tokenType?: unknown; notBefore?: unknown; privateKey?: unknown }[]) {
    if (r.tokenType !== ARC_TOKEN_TYPE) continue;
    if (typeof r.privateKey !== "string" || typeof r.notBefore !== "number" || !Number.isSafeInteger(r.notBefore)) {
      throw new ProtocolError("CFG_ERR_KEY_FILE", `issuer key file ${file}: ARC key without privateKey or notBefore`);
    }
    try {
      const privateKey = decodeServerPrivateKey(fromHex(r.privateKey));
      const publicKey = publicKeyFromPrivate(privateKey);
      const tokenKey = encodeServerPublicKey(publicKey);
      out.push({ keyId: issuerKeyId(tokenKey), notBeforeSec: r.notBefore, tokenKey, privateKey, publicKey });
    } catch (e) {
      throw new ProtocolError("CFG_ERR_KEY_FILE", `issuer key file ${file}: unusable ARC private key`, { cause: e });
    }
  }
  return out;
}

export function readArcKeys(file: string): ArcKey[] {
  return parseArcKeys(file, readFileSync(file, "utf8"));
}

/** A context the gate accepts now: its bytes, until when tokens for it hold, and max-age. */
export interface ContextWindow {
  context: Uint8Array;
  untilMs: number;
  maxAgeSec?: number;
}

export interface ArcVerifierDeps {
  /** PRF for contexts: F(data) -> 32 bytes (keyed with the epoch secret when there is one). */
  prf(data: Uint8Array): Uint8Array;
  epochSec: number;
}

export interface ArcAdmission {
  /** The double-spend key. */
  spendKey: Uint8Array;
  /** When the spend record may be forgotten (the key's or the redemption context's end). */
  expiresAtMs: number;
  /** The issuer key it was presented under (the rule after a store loss, gateway/store-loss.ts). */
  issuerKey: SpendKey;
}

/** The key presentations under an ARC key are spent under (the rule of gateway/store-loss.ts). */
function spendKeyOf(key: ArcKey): SpendKey {
  return { tokenKeyId: key.keyId, notBeforeMs: key.notBeforeSec * 1000 };
}

const te = new TextEncoder();
const SPEND_LABEL = te.encode("veil arc spend v1");
const LABELS = {
  "task-epoch": te.encode("veil arc task-epoch context v1"),
  epoch: te.encode("veil arc epoch context v1"),
  credential: te.encode("veil arc credential context v1"),
};
/** Offset of issuer_key_id in an ARC token: token_type (2) + presentation_nonce (4) + challenge_digest (32). */
const KEY_ID_OFFSET = 38;

function u64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

function sha256(...parts: Uint8Array[]): Uint8Array {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}

export class ArcVerifier {
  readonly issuers: readonly ArcIssuer[];
  readonly #deps: ArcVerifierDeps;
  readonly #contexts = new Map<string, PresentationContexts>();
  readonly #prfCache = new Map<string, Uint8Array>();

  constructor(issuers: readonly ArcIssuer[], deps: ArcVerifierDeps) {
    this.issuers = issuers;
    this.#deps = deps;
  }

  #prf(label: Uint8Array, epoch: number, extra: Uint8Array = new Uint8Array(0)): Uint8Array {
    const id = `${toHex(label)}|${epoch}|${toHex(extra)}`;
    let c = this.#prfCache.get(id);
    if (c === undefined) {
      if (this.#prfCache.size >= 4096) this.#prfCache.clear();
      c = this.#deps.prf(concatBytes(label, u64(epoch), extra));
      this.#prfCache.set(id, c);
    }
    return c;
  }

  #epochWindows(now: number, make: (epoch: number) => Uint8Array): ContextWindow[] {
    const epochMs = this.#deps.epochSec * 1000;
    const e = Math.floor(now / epochMs);
    return [e, e - 1].map((epoch) => ({
      context: make(epoch),
      untilMs: (epoch + 2) * epochMs,
      maxAgeSec: Math.max(0, Math.floor(((epoch + 2) * epochMs - now) / 1000)),
    }));
  }

  /** Redemption contexts accepted now for `issuer` and `taskId`, the current one first. */
  redemptionContexts(issuer: ArcIssuer, taskId: string | undefined, now: number): ContextWindow[] {
    switch (issuer.redemptionContext) {
      case "none":
        return [{ context: new Uint8Array(0), untilMs: Infinity }];
      case "epoch":
        return this.#epochWindows(now, (e) => this.#prf(LABELS.epoch, e));
      case "task-epoch":
        return this.#epochWindows(now, (e) => this.#prf(LABELS["task-epoch"], e, te.encode(taskId ?? "")));
    }
  }

  credentialContexts(issuer: ArcIssuer, now: number): ContextWindow[] {
    if (issuer.credentialContext === "none") return [{ context: new Uint8Array(0), untilMs: Infinity }];
    return this.#epochWindows(now, (e) => this.#prf(LABELS.credential, e));
  }

  /** Keys of `issuer` accepted at `now`, newest not-before first. */
  #validKeys(issuer: ArcIssuer, now: number): ArcKey[] {
    const nowSec = now / 1000;
    return issuer
      .keys()
      .filter((k) => k.notBeforeSec <= nowSec && nowSec < k.notBeforeSec + issuer.keyLifetimeSec)
      .sort((a, b) => b.notBeforeSec - a.notBeforeSec);
  }

  /** Every ARC key held, valid or not yet, as the key its presentations are spent under. */
  heldKeys(): SpendKey[] {
    return this.issuers.flatMap((i) => i.keys().map(spendKeyOf));
  }

  /** ARC keys accepted at `now`, as spend keys. */
  validSpendKeys(now: number): SpendKey[] {
    return this.issuers.flatMap((i) => this.#validKeys(i, now).map(spendKeyOf));
  }

  hasValidKeys(now: number): boolean {
    return this.issuers.some((i) => this.#validKeys(i, now).length > 0);
  }

  #challenge(issuer: ArcIssuer, redemption: Uint8Array, origin: string[], credential: Uint8Array): TokenChallenge {
    return { tokenType: ARC_TOKEN_TYPE, issuerName: issuer.name, redemptionContext: redemption, originInfo: origin, credentialContext: credential };
  }

  /**
   * One challenge per ARC issuer with a usable key: its newest valid key that `usable` accepts
   * (after a nonce store loss, the gate leaves out keys whose presentations it refuses), the
   * current contexts.
   */
  challenges(origin: string[], taskId: string | undefined, now: number, usable: (key: SpendKey) => boolean = () => true): WwwAuthenticateChallenge[] {
    const out: WwwAuthenticateChallenge[] = [];
    for (const issuer of this.issuers) {
      const key = this.#validKeys(issuer, now).find((k) => usable(spendKeyOf(k)));
      if (key === undefined) continue;
      const r = this.redemptionContexts(issuer, taskId, now)[0]!;
      const c = this.credentialContexts(issuer, now)[0]!;
      const challenge: WwwAuthenticateChallenge = {
        challenge: encodeTokenChallenge(this.#challenge(issuer, r.context, origin, c.context)),
        tokenKey: key.tokenKey,
        rateLimit: issuer.rateLimit,
      };
      const maxAges = [r.maxAgeSec, c.maxAgeSec].filter((x): x is number => x !== undefined);
      if (maxAges.length > 0) challenge.maxAge = Math.min(...maxAges);
      out.push(challenge);
    }
    return out;
  }

  #presentationContexts(challenge: TokenChallenge, keyId: Uint8Array): { contexts: PresentationContexts; presentation: Uint8Array } {
    const presentation = presentationContext(challenge, keyId);
    const request = requestContext(challenge, keyId);
    const id = `${toHex(request)}|${toHex(presentation)}`;
    let contexts = this.#contexts.get(id);
    if (contexts === undefined) {
      if (this.#contexts.size >= 1024) this.#contexts.clear();
      contexts = presentationContexts(request, presentation);
      this.#contexts.set(id, contexts);
    }
    return { contexts, presentation };
  }

  /**
   * Verifies an ARC token for a request to `origin` (and DAP task `taskId`): the issuer key by
   * its full id, the challenge digest, the presentation with its proofs. Throws PP_ERR_TOKEN_KEY,
   * _MALFORMED, _CHALLENGE or _SIGNATURE.
   */
  verify(bytes: Uint8Array, origin: string[], taskId: string | undefined, now: number): ArcAdmission {
    if (bytes.length < KEY_ID_OFFSET + 32) throw new ProtocolError("PP_ERR_TOKEN_MALFORMED", "ARC token is truncated");
    const keyId = bytes.subarray(KEY_ID_OFFSET, KEY_ID_OFFSET + 32);
    let issuer: ArcIssuer | undefined;
    let key: ArcKey | undefined;
    for (const i of this.issuers) {
      key = this.#validKeys(i, now).find((k) => equalBytes(k.keyId, keyId));
      if (key !== undefined) {
        issuer = i;
        break;
      }
    }
    if (issuer === undefined || key === undefined) throw new ProtocolError("PP_ERR_TOKEN_KEY", "token names no ARC issuer key valid now");
    let token;
    try {
      token = decodeArcToken(bytes, issuer.rateLimit);
    } catch (e) {
      throw new ProtocolError("PP_ERR_TOKEN_MALFORMED", "ARC token is malformed", { cause: e });
    }
    for (const r of this.redemptionContexts(issuer, taskId, now)) {
      for (const c of this.credentialContexts(issuer, now)) {
        const challenge = this.#challenge(issuer, r.context, origin, c.context);
        if (!equalBytes(sha256(encodeTokenChallenge(challenge)), token.challengeDigest)) continue;
        const { contexts, presentation } = this.#presentationContexts(challenge, key.keyId);
        if (!verifyPresentation(key.privateKey, key.publicKey, contexts, token.presentation, issuer.rateLimit)) {
          throw new ProtocolError("PP_ERR_TOKEN_SIGNATURE", "ARC presentation does not verify");
        }
        return {
          spendKey: sha256(SPEND_LABEL, presentation, serializeElement(token.presentation.tag)),
          expiresAtMs: Math.min((key.notBeforeSec + issuer.keyLifetimeSec) * 1000, r.untilMs, c.untilMs),
          issuerKey: spendKeyOf(key),
        };
      }
    }
    throw new ProtocolError("PP_ERR_TOKEN_CHALLENGE", "token answers another challenge");
  }
}
