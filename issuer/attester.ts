// The built-in attester (RFC 9576 §3.2, §3.5.2): a client proves it is attested with a bearer
// credential (RFC 6750 `Authorization: Bearer ...`), and each attested client gets at most
// `tokensPerWindow` tokens per window. That quota is what turns tokens into Sybil resistance.
// `attester.kind` says what the bearer credential is:
//
// - "credentials": one of a static list of secrets. Compared as SHA-256 digests with
//   timingSafeEqual against every configured one (no early exit), so response time does not
//   reveal how much of a guess was right. One quota per credential.
// - "jwt": a JWT of the service's identity provider (issuer/jwt.ts). One quota per value of the
//   configured claim (`sub` by default).
//
// The quota store (issuer/quota-store.ts) knows a client only by its quota key: an HMAC-SHA256,
// under the key of `attester.storeKeyFile`, of the credential or of the claim value, never the
// value itself (a JWT `sub` is often guessable: an unkeyed hash of it would not hide it). The
// memory store never leaves the process and uses a fixed label as key. A credential, a JWT or a
// claim value is never logged nor used as a metric label.

import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { ProtocolError, isProtocolError } from "../core/errors.js";
import { writeKeyFileAtomic } from "./key-store.js";
import type { AttesterConfig } from "./config.js";
import { JwtVerifier, type JwksDeps } from "./jwt.js";
import { QUOTA_STORE_DEFAULTS, openQuotaStore, type QuotaStore } from "./quota-store.js";

/** What a 401 carries (RFC 6750 §3) when no credential, or an unknown one, was presented. */
export const BEARER_CHALLENGE = "Bearer";

/**
 * A reservation of quota for `granted` tokens (1 to the number asked): kept once issued; what was
 * not issued (signing failed) is released, all of it or `count` tokens.
 */
export interface QuotaReservation {
  readonly granted: number;
  release(count?: number): void;
}

/**
 * What the token-request route needs: the Attester below, or (in `veil issuer --workers N`) one
 * that asks the primary process, which holds the quota of every worker (issuer/cluster.ts).
 */
export interface QuotaAttester {
  /** The quota key of the presented credential; ISSUER_ERR_UNAUTHORIZED (401) if it is refused. */
  authenticate(authorization: string | undefined): Promise<string>;
  /** Reserves up to `count` tokens (default 1) of the quota; see Attester.reserve. */
  reserve(quotaKey: string, count?: number): Promise<QuotaReservation>;
  /** Readiness (kind "jwt": the identity provider's JWK Set was fetched once). */
  ready?(): Promise<void>;
}

/**
 * The quota key of a token request's client (both issuance routes); a refusal is logged with its
 * reason, a fixed phrase: never the credential, the JWT nor a claim value.
 */
export async function authenticateRequest(
  attester: QuotaAttester,
  authorization: string | undefined,
  log: { info(o: object, msg: string): void },
): Promise<string> {
  try {
    return await attester.authenticate(authorization);
  } catch (e) {
    if (isProtocolError(e) && e.code === "ISSUER_ERR_UNAUTHORIZED") log.info({ reason: e.message }, "attester refused the credential");
    throw e;
  }
}

/** Smallest key file accepted (bytes). */
const MIN_STORE_KEY_BYTES = 32;
const MEMORY_STORE_KEY = Buffer.from("veil attester quota v2 (memory)", "utf8");

/**
 * The key of the quota keys: `attester.storeKeyFile` (for sqlite:PATH by default PATH.key),
 * created with 32 random bytes and mode 0600 when missing; a file others can read is refused.
 */
export function loadStoreKey(config: AttesterConfig): Buffer {
  const file = config.storeKeyFile ?? (config.store.startsWith("sqlite:") ? `${config.store.slice("sqlite:".length)}.key` : undefined);
  if (file === undefined) {
    if (config.store === "memory") return MEMORY_STORE_KEY;
    throw new ProtocolError("CFG_ERR_INVALID", "attester.storeKeyFile: is required for this store");
  }
  let bytes: Buffer;
  try {
    const st = statSync(file);
    if (!st.isFile() || (st.mode & 0o077) !== 0) {
      throw new ProtocolError("CFG_ERR_KEY_FILE", `attester.storeKeyFile ${file}: not a regular file of mode 0600; run: chmod 600 ${file}`);
    }
    bytes = readFileSync(file);
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new ProtocolError("CFG_ERR_KEY_FILE", `attester.storeKeyFile ${file}: unreadable`, { cause: e });
    }
    bytes = randomBytes(MIN_STORE_KEY_BYTES);
    writeKeyFileAtomic(file, bytes.toString("hex") + "\n");
    return bytes;
  }
  const text = bytes.toString("utf8").trim();
  const key = /^[0-9a-f]+$/i.test(text) && text.length % 2 === 0 ? Buffer.from(text, "hex") : bytes;
  if (key.length < MIN_STORE_KEY_BYTES) {
    throw new ProtocolError("CFG_ERR_KEY_FILE", `attester.storeKeyFile ${file}: needs at least ${MIN_STORE_KEY_BYTES} bytes`);
  }
  return key;
}

/**
 * A reservation of `granted` tokens whose release gives back at most what is still held:
 * `giveBack(count, stillHeld)` is called once per release that gives anything back.
 */
export function quotaReservation(granted: number, giveBack: (count: number, stillHeld: number) => void): QuotaReservation {
  let held = granted;
  return {
    granted,
    release: (n = held) => {
      const back = Math.min(held, Math.max(0, Math.floor(n)));
      if (back === 0) return;
      held -= back;
      giveBack(back, held);
    },
  };
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s, "utf8").digest();
}

/** Parses `Authorization: Bearer <b64token>` (RFC 6750 §2.1); undefined when absent or malformed. */
function bearerOf(authorization: string | undefined): string | undefined {
  const m = authorization === undefined ? null : /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(authorization);
  return m?.[1];
}

function unauthorized(detail: string): ProtocolError {
  return new ProtocolError("ISSUER_ERR_UNAUTHORIZED", detail, { headers: { "www-authenticate": BEARER_CHALLENGE } });
}

export interface AttesterDeps {
  /** Clock in milliseconds (quota windows, JWT exp/nbf). */
  now?: () => number;
  /** Overrides config.store (tests inject a failing one); null: authenticate only (a worker's). */
  store?: QuotaStore | null;
  /** The JWK Set fetch of kind "jwt" (tests inject one; the default fetches `jwks`). */
  jwks?: Omit<JwksDeps, "now">;
}

export class Attester implements QuotaAttester {
  readonly #kind: AttesterConfig["kind"];
  readonly #digests: Buffer[];
  readonly #credentialKeys: string[];
  readonly #jwt: JwtVerifier | undefined;
  readonly #storeKey: Buffer;
  readonly #tokensPerWindow: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  readonly #store: QuotaStore | null;
  #nextPurgeAtMs: number;

  constructor(config: AttesterConfig, deps: AttesterDeps = {}) {
    this.#kind = config.kind;
    this.#now = deps.now ?? Date.now;
    this.#storeKey = loadStoreKey(config);
    const credentials = config.credentials ?? [];
    this.#digests = credentials.map(digest);
    this.#credentialKeys = credentials.map((c) => this.#quotaKey("credential", c));
    this.#jwt =
      config.kind === "jwt"
        ? new JwtVerifier(
            {
              jwks: config.jwks!,
              issuer: config.issuer!,
              audience: config.audience!,
              algorithms: config.algorithms,
              quotaClaim: config.quotaClaim,
            },
            { ...deps.jwks, now: this.#now },
          )
        : undefined;
    this.#tokensPerWindow = config.tokensPerWindow;
    this.#windowMs = config.windowSec * 1000;
    this.#store = deps.store === undefined ? openQuotaStore(config.store, this.#storeKey) : deps.store;
    this.#nextPurgeAtMs = this.#now();
  }

  /** Closes the quota store. */
  async close(): Promise<void> {
    await this.#store?.close();
  }

  /** Readiness: the JWK Set was fetched once (kind "jwt"). */
  async ready(): Promise<void> {
    if (this.#jwt !== undefined) await this.#jwt.jwks.keys();
  }

  /** HMAC-SHA256(store key, kind || 0 || value) in hex: what the store knows a client by. */
  #quotaKey(kind: "credential" | "claim", value: string): string {
    return createHmac("sha256", this.#storeKey).update(`${kind}\0`, "utf8").update(value, "utf8").digest("hex");
  }

  /**
   * The quota key of the client presenting `Authorization: Bearer ...`; ISSUER_ERR_UNAUTHORIZED
   * (401 with `WWW-Authenticate: Bearer`, or `Bearer error="invalid_token"` for a refused JWT)
   * when it is missing, malformed, unknown or does not verify.
   */
  async authenticate(authorization: string | undefined): Promise<string> {
    const presented = bearerOf(authorization);
    if (presented === undefined) throw unauthorized(`send Authorization: Bearer <${this.#kind === "jwt" ? "JWT" : "credential"}>`);
    if (this.#jwt !== undefined) return this.#quotaKey("claim", await this.#jwt.verify(presented));
    const d = digest(presented);
    let found = -1;
    for (let i = 0; i < this.#digests.length; i++) {
      // No early exit: every configured credential is compared.
      if (timingSafeEqual(d, this.#digests[i]!) && found === -1) found = i;
    }
    if (found === -1) throw unauthorized("credential not recognised");
    return this.#credentialKeys[found]!;
  }

  /**
   * Takes up to `count` tokens of the quota named `quotaKey`: as many as are left (a batch may get
   * fewer than it asked), or throws ISSUER_ERR_QUOTA (429 with Retry-After: the seconds until the
   * window ends) when none is left. The window starts at the client's first token.
   * A store failure is ISSUER_ERR_STORE_UNAVAILABLE (503): no token without a counted quota.
   */
  async reserve(quotaKey: string, count = 1): Promise<QuotaReservation> {
    if (!Number.isSafeInteger(count) || count < 1) throw new ProtocolError("INTERNAL_ERR", "reserve: count must be a positive integer");
    const store = this.#store;
    if (store === null) throw new ProtocolError("INTERNAL_ERR", "this attester only authenticates");
    const now = this.#now();
    if (now >= this.#nextPurgeAtMs) {
      this.#nextPurgeAtMs = now + QUOTA_STORE_DEFAULTS.purgeIntervalMs;
      try {
        await store.purge(now, this.#windowMs);
      } catch {
        // A failed purge only leaves old rows behind; the take below reports the store.
      }
    }
    const taken = await store.take(quotaKey, now, this.#windowMs, this.#tokensPerWindow, count);
    if (taken.taken === 0) {
      const retryAfter = Math.max(1, Math.ceil((taken.windowStartMs + this.#windowMs - now) / 1000));
      throw new ProtocolError("ISSUER_ERR_QUOTA", `quota of ${this.#tokensPerWindow} tokens per window used`, {
        headers: { "retry-after": String(retryAfter) },
      });
    }
    return quotaReservation(taken.taken, (back) => {
      Promise.resolve()
        .then(() => store.giveBack(quotaKey, taken.windowStartMs, back))
        .catch(() => {
          // The tokens stay counted: fail closed.
        });
    });
  }
}
