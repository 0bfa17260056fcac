// The token gate: decides whether a Privacy Pass token (RFC 9576/9577/9578) is good for an inner
// request (docs/architecture.md, "Request path through the gateway", steps 4 and 6). It plugs into the request path at
// the seam of gateway/gate-contract.ts: admit() after the policy, settle() after forwarding.
//
// admit(), in order (each failure is a sealed 401 with a fresh challenge, RFC 9577 §2.2):
//   1. `hpke_config` fetches need no token.
//   2. `Authorization: PrivateToken token="..."` of the inner request      -> PP_ERR_TOKEN_MISSING / _MALFORMED
//   3. exact-length copy (privacypass-style parsers ignore byteOffset), token type  -> PP_ERR_TOKEN_TYPE
//   4. full token key id among the trusted issuers' directory keys, inside
//      [not-before, not-before + keyLifetimeSec)                            -> PP_ERR_TOKEN_KEY
//   5. challenge digest: SHA-256 of the TokenChallenge this gate issues for the target the client
//      addressed (token type, issuer name, redemption context, origin_info) -> PP_ERR_TOKEN_CHALLENGE
//   6. authenticator: RSASSA-PSS for type 2, VOPRF Evaluate for types 1, 5 -> PP_ERR_TOKEN_SIGNATURE
//      (ARC tokens, type 0xE5AC, take steps 4-6 in gateway/arc-verifier.ts: key from the issuer's
//      key file, challenge with credential_context, presentation proof; their spend key is
//      derived from the presentation tag and goes through step 7 like a nonce)
//   7. atomic nonce reservation bound to a digest of this request (method, target URL, body):
//        "new" / "retry" (the identical request again) pass; "spent"      -> PP_ERR_TOKEN_REPLAYED
//      store unreachable: sealed 503 PP_ERR_STORE_UNAVAILABLE (fail closed, never open);
//      after the store lost data (gateway/store-loss.ts), a token of a key published before the
//      loss: 401 PP_ERR_TOKEN_KEY naming a fresh key, or 503 PP_ERR_STORE_LOST while there is none;
//      no valid issuer key at all (issuer never reached, or its keys expired): 503 PP_ERR_ISSUER_UNAVAILABLE.
// settle(reached): release the reservation when nothing reached the aggregator (the token is as
// good as new), commit it otherwise (RFC 9458 §6.5: a broken connection is no proof that nothing
// was processed). The token itself never goes upstream (gateway/target.ts strips it).

import { createHash, createHmac, randomBytes } from "node:crypto";
import { Counter, type Registry } from "prom-client";
import { ProtocolError, isProtocolError, type ErrorCode } from "../core/errors.js";
import { equalBytes, exactCopy } from "../core/bytes.js";
import {
  ARC_TOKEN_TYPE,
  GREASE_TOKEN_TYPES,
  TOKEN_TYPE,
  decodeToken,
  encodeTokenChallenge,
  formatWwwAuthenticate,
  parseAuthorization,
  type Token,
  type TokenChallenge,
  type WwwAuthenticateChallenge,
} from "../core/privacypass/index.js";
import { verifyToken } from "../core/privacypass/verify-node.js";
import type { NonceStore } from "../core/privacypass/nonce-store.js";
import type { Gate, GateInput, GateTicket } from "./gate-contract.js";
import type { DirectoryKey, TokenKeyDirectory } from "./issuer-directory.js";
import type { ArcVerifier } from "./arc-verifier.js";
import type { SpendKey, StoreLossGuard } from "./store-loss.js";

export type OriginInfoMode = "authority" | "empty";
export type RedemptionContextMode = "empty" | "epoch";

export interface TokenGateOptions {
  /** "authority": origin_info names the target the client addressed (RFC 9577 §2.1); "empty": any target. */
  originInfo: OriginInfoMode;
  /** "empty" (default) or "epoch": a context derived from the time epoch; current and previous accepted. */
  redemptionContext: RedemptionContextMode;
  /** Epoch length for "epoch" contexts. */
  epochSec: number;
  /** Key of the PRF deriving epoch contexts (shared by all gateways); without it, an unkeyed hash. */
  epochSecret?: Uint8Array;
  /** Spent nonces are kept this much longer than their key or epoch (clocks of gateways differ). */
  clockSkewSec: number;
  /** Probability of adding a greased challenge (reserved token type, RFC 9577 §4.1) to a 401. */
  greaseProbability: number;
}

export const GATE_DEFAULTS: Readonly<TokenGateOptions> = Object.freeze({
  originInfo: "authority",
  redemptionContext: "empty",
  /** A day: clients fetch tokens in batches well ahead of use. */
  epochSec: 86_400,
  /** Five minutes, a generous bound on clock differences between gateways sharing a store. */
  clockSkewSec: 300,
  /** RFC 9577 §4.1 asks for a "non-trivial probability"; clients must ignore unknown types. */
  greaseProbability: 0.1,
});

export interface TokenGateDeps {
  directory: TokenKeyDirectory;
  store: NonceStore;
  now?: () => number;
  /** Random bytes (greasing decisions and greased values). */
  random?: (n: number) => Uint8Array;
  /** Prometheus registry for the gate's counters. */
  registry?: Registry;
  /** ARC issuers (token type 0xE5AC), when any is configured. */
  arc?: ArcVerifier;
  /** Refuses tokens of keys published before the store lost data (gateway/store-loss.ts). */
  lossGuard?: StoreLossGuard;
}

/** Why a token was refused: metric label values (low cardinality, nothing about the token). */
const REASONS: Partial<Record<ErrorCode, string>> = {
  PP_ERR_TOKEN_MISSING: "missing",
  PP_ERR_TOKEN_MALFORMED: "malformed",
  PP_ERR_TOKEN_TYPE: "type",
  PP_ERR_TOKEN_KEY: "key",
  PP_ERR_TOKEN_CHALLENGE: "challenge",
  PP_ERR_TOKEN_SIGNATURE: "signature",
  PP_ERR_TOKEN_REPLAYED: "replayed",
  PP_ERR_STORE_UNAVAILABLE: "store_unavailable",
  PP_ERR_ISSUER_UNAVAILABLE: "issuer_unavailable",
  PP_ERR_STORE_LOST: "store_lost",
};

const FREE_TICKET: GateTicket = Object.freeze({ settle: async () => {} });
const DIGEST_LABEL = new TextEncoder().encode("veil request digest v1");
const EPOCH_LABEL = new TextEncoder().encode("veil redemption context v1");

/** A challenge context the gate accepts: its redemption context and until when tokens for it hold. */
interface ContextWindow {
  context: Uint8Array;
  /** End of acceptance (epoch mode), or Infinity (empty context: the key's lifetime decides). */
  untilMs: number;
  /** max-age for the WWW-Authenticate challenge (epoch mode). */
  maxAgeSec?: number;
}

function u64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

/** The PRF of derived contexts: HMAC-SHA256(secret, data), or SHA-256(data) without a secret. */
export function contextPrf(secret: Uint8Array | undefined, data: Uint8Array): Uint8Array {
  const h = secret === undefined ? createHash("sha256").update(data) : createHmac("sha256", secret).update(data);
  return new Uint8Array(h.digest());
}

function writeU64(b: Buffer, n: number, offset: number): number {
  b.writeUInt32BE(Math.floor(n / 2 ** 32), offset);
  return b.writeUInt32BE(n >>> 0, offset + 4);
}

/**
 * SHA-256 over the request a token pays for: method, target URL (the origin the client addressed
 * plus path and query) and body, each length-prefixed so no two requests share an encoding.
 */
export function requestDigest(method: string, url: string, body: Uint8Array): Uint8Array {
  const m = Buffer.byteLength(method, "latin1");
  const u = Buffer.byteLength(url, "latin1");
  // label || u64 len(method) || method || u64 len(url) || url || u64 len(body), then the body.
  const head = Buffer.allocUnsafe(DIGEST_LABEL.length + 24 + m + u);
  head.set(DIGEST_LABEL);
  // u64 lengths as two u32 halves (no BigInt on the hot path; lengths are far below 2^32).
  let o = writeU64(head, m, DIGEST_LABEL.length);
  o += head.write(method, o, "latin1");
  o = writeU64(head, u, o);
  o += head.write(url, o, "latin1");
  writeU64(head, body.length, o);
  return new Uint8Array(createHash("sha256").update(head).update(body).digest());
}

/** The canonical credentials (what Veil's and privacypass-ts's clients send): parsed without the general parser. */
const CANONICAL_AUTHORIZATION = /^PrivateToken token="?([A-Za-z0-9_-]+={0,2})"?$/;

/**
 * The token bytes of `Authorization: PrivateToken token=...`. The canonical form is decoded with
 * node's base64url decoder after the same checks core/bytes.ts fromBase64Url makes; anything
 * else goes through the general RFC 9110 parser of core/privacypass (unknown parameters etc.).
 */
export function tokenFromAuthorization(value: string): Uint8Array | undefined {
  const m = CANONICAL_AUTHORIZATION.exec(value);
  if (m !== null && value.endsWith('"') === value.startsWith('PrivateToken token="')) {
    const b64 = m[1]!;
    if (b64.length % 4 === 1 || (b64.includes("=") && b64.length % 4 !== 0)) return undefined;
    return new Uint8Array(Buffer.from(b64, "base64url"));
  }
  return parseAuthorization(value);
}

export class TokenGate implements Gate {
  /** The options without the epoch secret, which lives only in a private field (never printed). */
  readonly options: Readonly<Omit<TokenGateOptions, "epochSecret">>;
  readonly #epochSecret: Uint8Array | undefined;
  readonly #dir: TokenKeyDirectory;
  readonly #store: NonceStore;
  readonly #loss: StoreLossGuard | undefined;
  readonly #now: () => number;
  readonly #random: (n: number) => Uint8Array;
  readonly #digests = new Map<string, Uint8Array>();
  readonly #epochContexts = new Map<number, Uint8Array>();
  readonly #redeemed: Counter<"type" | "outcome">;
  readonly #refused: Counter<"reason">;
  readonly #settled: Counter<"result">;
  readonly #acceptedTypes: ReadonlySet<number>;
  readonly #arc: ArcVerifier | undefined;

  constructor(options: Partial<TokenGateOptions>, deps: TokenGateDeps) {
    const { epochSecret, ...rest } = { ...GATE_DEFAULTS, ...options };
    this.options = Object.freeze(rest);
    this.#epochSecret = epochSecret;
    const o = this.options;
    if (!Number.isInteger(o.epochSec) || o.epochSec < 1) throw new ProtocolError("CFG_ERR_INVALID", "tokens.epochSec: expected a positive integer");
    if (!(o.greaseProbability >= 0 && o.greaseProbability <= 1)) throw new ProtocolError("CFG_ERR_INVALID", "tokens.greaseProbability: expected 0..1");
    this.#dir = deps.directory;
    this.#arc = deps.arc !== undefined && deps.arc.issuers.length > 0 ? deps.arc : undefined;
    const types: number[] = [TOKEN_TYPE.BLIND_RSA_2048, TOKEN_TYPE.VOPRF_P384, TOKEN_TYPE.VOPRF_RISTRETTO255];
    if (this.#arc !== undefined) types.push(ARC_TOKEN_TYPE);
    this.#acceptedTypes = new Set(types);
    this.#store = deps.store;
    this.#loss = deps.lossGuard;
    this.#now = deps.now ?? Date.now;
    this.#random = deps.random ?? ((n) => new Uint8Array(randomBytes(n)));
    const registers = deps.registry === undefined ? [] : [deps.registry];
    this.#redeemed = new Counter({
      name: "veil_gateway_tokens_redeemed_total",
      help: "Tokens accepted by the gate, by token type and outcome (new: first use; retry: the identical request again)",
      labelNames: ["type", "outcome"],
      registers,
    });
    this.#refused = new Counter({
      name: "veil_gateway_tokens_refused_total",
      help: "Requests the token gate refused, by reason",
      labelNames: ["reason"],
      registers,
    });
    this.#settled = new Counter({
      name: "veil_gateway_tokens_settled_total",
      help: "Token reservations after forwarding: committed (reached the target), released (did not), failed (store error)",
      labelNames: ["result"],
      registers,
    });
  }

  async ready(): Promise<void> {
    await this.#dir.ready();
    await this.#store.ping();
    this.#loss?.check();
  }

  async close(): Promise<void> {
    await this.#store.close();
  }

  async admit(input: GateInput): Promise<GateTicket> {
    if (input.route === "dap-hpke-config") return FREE_TICKET;
    const origin = this.options.originInfo === "authority" ? [input.target.entry.host] : [];
    try {
      return await this.#admit(input, origin);
    } catch (e) {
      // Anything unexpected is a 500, never an admitted request (fail closed).
      const err = isProtocolError(e) ? e : new ProtocolError("INTERNAL_ERR", undefined, { cause: e });
      this.#refused.inc({ reason: REASONS[err.code] ?? "internal" });
      if (err.status === 401) throw this.#withChallenge(err, origin, input.taskId);
      if (err.status === 503) {
        throw new ProtocolError(err.code, err.message, { cause: err.cause ?? err, headers: { "retry-after": err.headers["retry-after"] ?? "5" } });
      }
      throw err;
    }
  }

  async #admit(input: GateInput, origin: string[]): Promise<GateTicket> {
    const { request } = input;
    // 2. the credentials
    const values = request.headers.filter(([n]) => n === "authorization").map(([, v]) => v);
    const privateTokens = values.filter((v) => /^\s*privatetoken(\s|$)/i.test(v));
    if (privateTokens.length === 0) throw new ProtocolError("PP_ERR_TOKEN_MISSING");
    if (privateTokens.length > 1) throw new ProtocolError("PP_ERR_TOKEN_MALFORMED", "more than one PrivateToken credential");
    const raw = tokenFromAuthorization(privateTokens[0]!);
    if (raw === undefined) throw new ProtocolError("PP_ERR_TOKEN_MALFORMED", "Authorization: no usable PrivateToken token parameter");
    // 3. exact-length copy, token type, strict decoding
    const bytes = exactCopy(raw);
    if (bytes.length < 2) throw new ProtocolError("PP_ERR_TOKEN_MALFORMED", "token is truncated");
    const tokenType = (bytes[0]! << 8) | bytes[1]!;
    if (!this.#acceptedTypes.has(tokenType)) throw new ProtocolError("PP_ERR_TOKEN_TYPE", `token type ${tokenType} is not accepted`);
    if (tokenType === ARC_TOKEN_TYPE && this.#arc !== undefined) {
      const arc = this.#arc.verify(bytes, origin, input.taskId, this.#now());
      return this.#spend(arc.spendKey, arc.expiresAtMs, input, tokenType, arc.issuerKey);
    }
    let token: Token;
    try {
      token = decodeToken(bytes);
    } catch (e) {
      throw new ProtocolError("PP_ERR_TOKEN_MALFORMED", "token is malformed", { cause: e });
    }
    // 4. the issuer key, by full token key id, inside its window
    const key = await this.#dir.find(token.tokenType, token.tokenKeyId);
    if (key === undefined || key.verification === undefined) {
      if (!this.#dir.hasValidKeys()) throw new ProtocolError("PP_ERR_ISSUER_UNAVAILABLE");
      throw new ProtocolError("PP_ERR_TOKEN_KEY", "token names no trusted issuer key valid now");
    }
    // 5. the challenge digest
    const now = this.#now();
    let window: ContextWindow | undefined;
    for (const w of this.#contexts(now)) {
      if (equalBytes(this.#challengeDigest(key, w.context, origin), token.challengeDigest)) {
        window = w;
        break;
      }
    }
    if (window === undefined) throw new ProtocolError("PP_ERR_TOKEN_CHALLENGE", "token answers another challenge");
    // 6. the authenticator
    if (!verifyToken(token, key.verification)) throw new ProtocolError("PP_ERR_TOKEN_SIGNATURE");
    return this.#spend(token.nonce, Math.min(key.expiresAtMs, window.untilMs), input, token.tokenType, key);
  }

  /** 7. the nonce (or ARC spend key), reserved for this request until `untilMs` plus clock skew. */
  async #spend(nonce: Uint8Array, untilMs: number, input: GateInput, tokenType: number, issuerKey: SpendKey): Promise<GateTicket> {
    const { request } = input;
    const digest = requestDigest(request.method, input.target.innerOrigin + request.path, input.streamId ?? request.body);
    this.#refuseIfTainted(issuerKey);
    const outcome = await this.#store.reserve(nonce, digest, untilMs + this.options.clockSkewSec * 1000);
    if (outcome === "spent") throw new ProtocolError("PP_ERR_TOKEN_REPLAYED");
    if (this.#loss?.isTainted(issuerKey) === true) {
      // This very reserve noticed the loss: the entry it made is given back, the token refused.
      await this.#store.release(nonce, digest);
      this.#refuseIfTainted(issuerKey);
    }
    this.#redeemed.inc({ type: String(tokenType), outcome });
    return this.#ticket(nonce, digest);
  }

  /**
   * After a store loss: a token of a key published before it (gateway/store-loss.ts). A 401 that
   * names fresh keys, or (#withChallenge) a 503 PP_ERR_STORE_LOST while there is none.
   */
  #refuseIfTainted(key: SpendKey): void {
    const loss = this.#loss;
    if (loss === undefined || !loss.isTainted(key)) return;
    loss.refetch();
    throw new ProtocolError("PP_ERR_TOKEN_KEY", "token key was published before the token store lost its data: get a new token");
  }

  /** Whether a key may be named in a challenge: after a store loss, not one whose tokens are refused. */
  readonly #untainted = (key: SpendKey): boolean => this.#loss?.isTainted(key) !== true;

  /** Keys to name in challenges: the directories' (tainted ones left out after a store loss). */
  #challengeKeys(now: number): DirectoryKey[] {
    return this.#dir.challengeKeys(now).filter(this.#untainted);
  }

  #ticket(nonce: Uint8Array, digest: Uint8Array): GateTicket {
    let settled = false;
    return {
      settle: async (reached: boolean): Promise<void> => {
        if (settled) return;
        settled = true;
        try {
          if (reached) await this.#store.commit(nonce, digest);
          else await this.#store.release(nonce, digest);
          this.#settled.inc({ result: reached ? "committed" : "released" });
        } catch (e) {
          this.#settled.inc({ result: "failed" });
          throw e;
        }
      },
    };
  }

  /** The redemption contexts accepted now, the current one first (it is the one challenged). */
  #contexts(now: number): ContextWindow[] {
    if (this.options.redemptionContext === "empty") return [{ context: new Uint8Array(0), untilMs: Infinity }];
    const epochMs = this.options.epochSec * 1000;
    const e = Math.floor(now / epochMs);
    // A token for epoch E is good while the current epoch is E or E+1: until (E+2) * epoch.
    return [e, e - 1].map((epoch) => ({
      context: this.epochContext(epoch),
      untilMs: (epoch + 2) * epochMs,
      maxAgeSec: Math.max(0, Math.floor(((epoch + 2) * epochMs - now) / 1000)),
    }));
  }

  /** F(epoch): HMAC-SHA256(secret, label || epoch), or SHA-256(label || epoch) without a secret. */
  epochContext(epoch: number): Uint8Array {
    let c = this.#epochContexts.get(epoch);
    if (c === undefined) {
      c = contextPrf(this.#epochSecret, Buffer.concat([EPOCH_LABEL, u64(epoch)]));
      if (this.#epochContexts.size >= 16) this.#epochContexts.clear();
      this.#epochContexts.set(epoch, c);
    }
    return c;
  }

  #challenge(key: DirectoryKey, context: Uint8Array, origin: string[]): TokenChallenge {
    return { tokenType: key.tokenType, issuerName: key.issuerName, redemptionContext: context, originInfo: origin };
  }

  /** SHA-256(TokenChallenge), cached: a handful of (issuer, type, target, epoch) combinations. */
  #challengeDigest(key: DirectoryKey, context: Uint8Array, origin: string[]): Uint8Array {
    const id = `${key.tokenType}|${key.issuerName}|${Buffer.from(context).toString("hex")}|${origin.join(",")}`;
    let d = this.#digests.get(id);
    if (d === undefined) {
      if (this.#digests.size >= 4096) this.#digests.clear();
      d = new Uint8Array(createHash("sha256").update(encodeTokenChallenge(this.#challenge(key, context, origin))).digest());
      this.#digests.set(id, d);
    }
    return d;
  }

  /**
   * The WWW-Authenticate challenges for a target: ARC issuers first (their rate limit is what the
   * operator asked for), then per issuer and type its preferred key.
   */
  challenges(origin: string[], taskId?: string): WwwAuthenticateChallenge[] {
    const now = this.#now();
    const current = this.#contexts(now)[0]!;
    const out: WwwAuthenticateChallenge[] = this.#arc?.challenges(origin, taskId, now, this.#untainted) ?? [];
    const keys = this.#challengeKeys(now);
    // Type 2 first (publicly verifiable: the default), then type 1; issuers in configured order.
    keys.sort((a, b) => (b.tokenType === TOKEN_TYPE.BLIND_RSA_2048 ? 1 : 0) - (a.tokenType === TOKEN_TYPE.BLIND_RSA_2048 ? 1 : 0));
    for (const key of keys) {
      const c: WwwAuthenticateChallenge = {
        challenge: encodeTokenChallenge(this.#challenge(key, current.context, origin)),
        tokenKey: key.tokenKey,
      };
      if (current.maxAgeSec !== undefined) c.maxAge = current.maxAgeSec;
      out.push(c);
    }
    const first = keys[0];
    if (first !== undefined && this.#grease()) {
      // RFC 9577 §4.1: a reserved token type, last (never preferred), so clients keep ignoring
      // types they do not know. Its token-key is random bytes of a plausible size.
      const r = this.#random(3);
      const type = GREASE_TOKEN_TYPES[r[0]! % GREASE_TOKEN_TYPES.length]!;
      out.push({
        challenge: encodeTokenChallenge({ ...this.#challenge(first, current.context, origin), tokenType: type }),
        tokenKey: this.#random(32 + (r[1]! % 32)),
      });
    }
    return out;
  }

  #grease(): boolean {
    const p = this.options.greaseProbability;
    if (p <= 0) return false;
    const r = this.#random(4);
    return new DataView(r.buffer, r.byteOffset, 4).getUint32(0) / 2 ** 32 < p;
  }

  #withChallenge(err: ProtocolError, origin: string[], taskId: string | undefined): ProtocolError {
    const challenges = this.challenges(origin, taskId);
    if (challenges.length === 0) {
      // No key to name in a challenge: the client cannot do anything but wait (fail closed).
      if (this.#loss !== undefined && this.#loss.taintedKeys().length > 0) {
        return new ProtocolError("PP_ERR_STORE_LOST", "no issuer key published after the loss yet: retry later", { cause: err, headers: { "retry-after": "30" } });
      }
      return new ProtocolError("PP_ERR_ISSUER_UNAVAILABLE", undefined, { cause: err, headers: { "retry-after": "5" } });
    }
    return new ProtocolError(err.code, err.message, {
      cause: err.cause,
      headers: { "www-authenticate": formatWwwAuthenticate(challenges) },
    });
  }
}
