// The token keys of the issuers the gate trusts, learned from each issuer's directory
// (RFC 9578 §4: GET /.well-known/private-token-issuer-directory, `application/private-token-issuer-directory`):
//
//   { "issuer-request-uri": "https://issuer.example/token-request",
//     "token-keys": [ { "token-type": 2, "token-key": "<b64url SPKI>", "not-before": 1686913811 } ] }
//
// - HTTP caching (RFC 9111, as RFC 9578 §4 asks, server/cached-document.ts): fresh for
//   Cache-Control max-age (minus Age), then revalidated with If-None-Match (ETag); a 304 extends
//   the freshness of the keys we hold.
// - The directory has no expiry field, so a key's lifetime is configuration shared with the
//   issuer (`keyLifetimeSec`): a key is accepted only from its not-before until not-before +
//   keyLifetimeSec. Keys without not-before count from the moment this gate first saw them.
// - If the issuer is unreachable, the last good keys stay in use, but never past their lifetime.
// - RFC 9578 §4 "refetch and revalidate when use of the configuration fails": a token naming a
//   key we do not know triggers a refetch (at most once per `minRefetchMs`, so random key ids
//   cannot make the gate hammer the issuer).
// - No timers: refreshes are started by lookups and by readiness checks (which orchestrators poll).

import { ProtocolError } from "../core/errors.js";
import { fromBase64Url, toHex } from "../core/bytes.js";
import { TOKEN_TYPE, tokenKeyId } from "../core/privacypass/index.js";
import { importBlindRsaTokenKey, type VerificationKey } from "../core/privacypass/verify-node.js";
import { CACHE_DEFAULTS, CachedDocument, DocumentStatusError } from "../server/cached-document.js";
import { DocumentTooLargeError, fetchBounded, freshnessSec, type DocumentFetcher, type FetchedDocument } from "../server/http-fetch.js";
import { isAmortizedTokenType as isPrivatelyVerifiable } from "../core/privacypass/batch.js";

/** What the gate needs from an HTTP response (server/http-fetch.ts). */
export type DirectoryResponse = FetchedDocument;
export type DirectoryFetcher = DocumentFetcher;

export const DIRECTORY_DEFAULTS = Object.freeze({
  ...CACHE_DEFAULTS,
  /** Largest directory accepted: a few keys are a few KiB. */
  maxDirectoryBytes: 64 * 1024,
});

export interface IssuerSource {
  /** Issuer name (TokenChallenge.issuer_name). */
  name: string;
  /** Directory URL. */
  directory: string;
  keyLifetimeSec: number;
}

/** A token key of a trusted issuer, with its acceptance window. */
export interface DirectoryKey {
  issuerName: string;
  tokenType: number;
  /** As published (type 2: RSASSA-PSS SPKI; type 1: SerializeElement(pkI)). */
  tokenKey: Uint8Array;
  tokenKeyId: Uint8Array;
  /** Accepted from notBeforeMs (inclusive) until expiresAtMs (exclusive). */
  notBeforeMs: number;
  expiresAtMs: number;
  /** Ready-to-use verification key; undefined for a type 1 key whose private key the gate lacks. */
  verification: VerificationKey | undefined;
}

export interface IssuerDirectoryDeps {
  fetcher?: DirectoryFetcher;
  now?: () => number;
  /**
   * Type 1 verification keys (issuer private keys), matched to directory keys by token key id: a
   * list, or a function asked again whenever a type 1 key has none yet (e.g. re-reading the
   * issuer's key file after a rotation).
   */
  voprfKeys?: readonly VerificationKey[] | (() => readonly VerificationKey[]);
  /** Called with a safe description when a fetch fails or a key is skipped (for the log). */
  onEvent?: (event: { issuer: string; what: string; detail: string }) => void;
  options?: Partial<typeof DIRECTORY_DEFAULTS>;
}

/** The bounded fetch of server/http-fetch.ts, its size refusal as PP_ERR_ISSUER_UNAVAILABLE. */
export const defaultFetcher: DirectoryFetcher = async (url, init) => {
  try {
    return await fetchBounded(url, init);
  } catch (e) {
    if (e instanceof DocumentTooLargeError) throw new ProtocolError("PP_ERR_ISSUER_UNAVAILABLE", "issuer directory too large");
    throw e;
  }
};

export { freshnessSec };

interface ParsedKey {
  tokenType: number;
  tokenKey: Uint8Array;
  notBeforeSec: number | undefined;
}

/** Validates the directory document; unknown members and unknown token types are ignored. */
export function parseDirectory(body: Uint8Array): ParsedKey[] {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch (e) {
    throw new ProtocolError("PP_ERR_ISSUER_UNAVAILABLE", "issuer directory is not JSON", { cause: e });
  }
  if (typeof doc !== "object" || doc === null || !Array.isArray((doc as Record<string, unknown>)["token-keys"])) {
    throw new ProtocolError("PP_ERR_ISSUER_UNAVAILABLE", "issuer directory has no token-keys list");
  }
  const out: ParsedKey[] = [];
  for (const k of (doc as { "token-keys": unknown[] })["token-keys"]) {
    if (typeof k !== "object" || k === null) continue;
    const e = k as Record<string, unknown>;
    const tokenType = e["token-type"];
    const key = e["token-key"];
    const nb = e["not-before"];
    if (typeof tokenType !== "number" || typeof key !== "string") continue;
    if (nb !== undefined && (typeof nb !== "number" || !Number.isFinite(nb) || nb < 0)) continue;
    const tokenKey = fromBase64Url(key);
    if (tokenKey === undefined || tokenKey.length === 0) continue;
    out.push({ tokenType, tokenKey, notBeforeSec: nb });
  }
  return out;
}

/** Hex of a key id (node's native encoder: this is on every upload's path). */
function hexOf(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

/** One trusted issuer's directory, cached. */
export class IssuerDirectory {
  readonly source: IssuerSource;
  readonly #now: () => number;
  readonly #o: typeof DIRECTORY_DEFAULTS;
  readonly #voprfKeys: () => readonly VerificationKey[];
  readonly #onEvent: NonNullable<IssuerDirectoryDeps["onEvent"]>;
  /** The keys, and the same keys by hex token key id (the hot path: one lookup per upload). */
  readonly #doc: CachedDocument<{ keys: DirectoryKey[]; byId: Map<string, DirectoryKey> }>;
  /** First time each key id (hex) was seen, for keys without not-before. */
  readonly #firstSeenMs = new Map<string, number>();

  constructor(source: IssuerSource, deps: IssuerDirectoryDeps = {}) {
    this.source = source;
    this.#now = deps.now ?? Date.now;
    this.#o = { ...DIRECTORY_DEFAULTS, ...deps.options };
    const v = deps.voprfKeys ?? [];
    this.#voprfKeys = typeof v === "function" ? v : () => v;
    this.#onEvent = deps.onEvent ?? (() => {});
    this.#doc = new CachedDocument(
      {
        url: source.directory,
        accept: "application/private-token-issuer-directory, application/json",
        label: "issuer directory",
        defaultMaxAgeSec: this.#o.defaultMaxAgeSec,
        minMaxAgeSec: this.#o.minMaxAgeSec,
        maxMaxAgeSec: this.#o.maxMaxAgeSec,
        fetchTimeoutMs: this.#o.fetchTimeoutMs,
        maxBytes: this.#o.maxDirectoryBytes,
        minRefetchMs: this.#o.minRefetchMs,
        maxRetryDelayMs: this.#o.maxRetryDelayMs,
        bypassCacheOnRefetch: true,
      },
      {
        fetcher: deps.fetcher ?? defaultFetcher,
        now: this.#now,
        parse: (body, now) => {
          const keys = this.#importKeys(parseDirectory(body), now);
          return { keys, byId: new Map(keys.map((k) => [hexOf(k.tokenKeyId), k])) };
        },
        onFailure: (e) => {
          const detail = e instanceof ProtocolError || e instanceof DocumentStatusError ? e.message : e instanceof Error ? e.name : "error";
          this.#onEvent({ issuer: this.source.name, what: "directory fetch failed", detail });
        },
      },
    );
  }

  /** True once a directory was fetched (readiness). */
  get fetched(): boolean {
    return this.#doc.fetched;
  }

  /** Every key held, valid or not (for tests and diagnostics). */
  get allKeys(): readonly DirectoryKey[] {
    return this.#doc.value?.keys ?? [];
  }

  /** Keys accepted at `nowMs`, in directory order (the issuer's preference). */
  validKeys(nowMs = this.#now()): DirectoryKey[] {
    const out = this.allKeys.filter((k) => k.notBeforeMs <= nowMs && nowMs < k.expiresAtMs);
    for (const k of out) if (k.verification === undefined && isPrivatelyVerifiable(k.tokenType)) k.verification = this.#voprfKey(k.tokenKeyId);
    return out;
  }

  /** The key with this full token key id (hex), if it is accepted at `nowMs`. */
  keyById(hexId: string, nowMs = this.#now()): DirectoryKey | undefined {
    const k = this.#doc.value?.byId.get(hexId);
    if (k === undefined || k.notBeforeMs > nowMs || nowMs >= k.expiresAtMs) return undefined;
    if (k.verification === undefined && isPrivatelyVerifiable(k.tokenType)) k.verification = this.#voprfKey(k.tokenKeyId);
    return k;
  }

  #voprfKey(id: Uint8Array): VerificationKey | undefined {
    const hex = toHex(id);
    return this.#voprfKeys().find((v) => toHex(v.tokenKeyId) === hex);
  }

  /** Starts a refresh if the cached directory is stale (not awaited by lookups). */
  refreshIfStale(): Promise<void> | undefined {
    return this.#doc.refreshIfStale();
  }

  /** A refetch because a token named a key we do not know; rate-limited. */
  refetchForUnknownKey(): Promise<void> | undefined {
    return this.#doc.refetchForUnknownKey();
  }

  /**
   * Fetches (or revalidates) now; single-flight; never throws (failures keep the last keys).
   * `bypassCache`: asks caches on the way for a fresh copy (Cache-Control: no-cache).
   */
  refresh(options: { bypassCache?: boolean } = {}): Promise<void> {
    return this.#doc.refresh(options);
  }

  #importKeys(parsed: ParsedKey[], now: number): DirectoryKey[] {
    const out: DirectoryKey[] = [];
    const seen = new Set<string>();
    for (const p of parsed) {
      const id = tokenKeyId(p.tokenKey);
      const hex = toHex(id);
      if (seen.has(hex)) continue;
      let verification: VerificationKey | undefined;
      if (p.tokenType === TOKEN_TYPE.BLIND_RSA_2048) {
        try {
          verification = importBlindRsaTokenKey(p.tokenKey);
        } catch (e) {
          this.#onEvent({ issuer: this.source.name, what: "token key skipped", detail: e instanceof ProtocolError ? e.message : "unusable key" });
          continue;
        }
      } else if (isPrivatelyVerifiable(p.tokenType)) {
        verification = this.#voprfKey(id);
      } else {
        continue; // a token type the gate does not verify
      }
      seen.add(hex);
      let notBeforeMs: number;
      if (p.notBeforeSec !== undefined) notBeforeMs = p.notBeforeSec * 1000;
      else {
        notBeforeMs = this.#firstSeenMs.get(hex) ?? now;
        this.#firstSeenMs.set(hex, notBeforeMs);
      }
      out.push({
        issuerName: this.source.name,
        tokenType: p.tokenType,
        tokenKey: p.tokenKey,
        tokenKeyId: id,
        notBeforeMs,
        expiresAtMs: notBeforeMs + this.source.keyLifetimeSec * 1000,
        verification,
      });
    }
    return out;
  }
}

/** All trusted issuers' directories: key lookup by full token key id, challenges, readiness. */
export class TokenKeyDirectory {
  readonly issuers: readonly IssuerDirectory[];
  readonly #now: () => number;

  constructor(sources: readonly IssuerSource[], deps: IssuerDirectoryDeps = {}) {
    this.issuers = sources.map((s) => new IssuerDirectory(s, deps));
    this.#now = deps.now ?? Date.now;
  }

  /** Fetches every directory now (start-up); resolves when all attempts finished. */
  async start(): Promise<void> {
    await Promise.all(this.issuers.map((d) => d.refresh()));
  }

  /** Throws PP_ERR_ISSUER_UNAVAILABLE until every directory was fetched once. */
  async ready(): Promise<void> {
    const missing = this.issuers.filter((d) => !d.fetched);
    if (missing.length > 0) {
      await Promise.all(missing.map((d) => d.refreshIfStale() ?? Promise.resolve()));
      if (this.issuers.some((d) => !d.fetched)) {
        throw new ProtocolError("PP_ERR_ISSUER_UNAVAILABLE", "an issuer directory was never fetched");
      }
    }
    for (const d of this.issuers) void d.refreshIfStale();
  }

  /** True when some issuer has at least one key valid now. */
  hasValidKeys(nowMs = this.#now()): boolean {
    for (const d of this.issuers) {
      void d.refreshIfStale();
      if (d.validKeys(nowMs).length > 0) return true;
    }
    return false;
  }

  /**
   * The key a token names (full token key id, RFC 9576 §3.1), if it belongs to a trusted issuer
   * and is inside its window now. An unknown id triggers one (rate-limited) refetch first.
   */
  async find(tokenType: number, keyId: Uint8Array): Promise<DirectoryKey | undefined> {
    const hit = this.#lookup(tokenType, keyId);
    if (hit !== undefined) return hit;
    const refetches = this.issuers.map((d) => d.refetchForUnknownKey()).filter((p) => p !== undefined);
    if (refetches.length === 0) return undefined;
    await Promise.all(refetches);
    return this.#lookup(tokenType, keyId);
  }

  #lookup(tokenType: number, keyId: Uint8Array): DirectoryKey | undefined {
    const now = this.#now();
    const hex = hexOf(keyId);
    for (const d of this.issuers) {
      void d.refreshIfStale();
      const k = d.keyById(hex, now);
      if (k !== undefined && k.tokenType === tokenType) return k;
    }
    return undefined;
  }

  /**
   * For WWW-Authenticate: per issuer and token type, the key clients should use now (RFC 9578
   * §4: the first in directory order whose not-before has passed), only types the gate verifies.
   */
  challengeKeys(nowMs = this.#now()): DirectoryKey[] {
    const out: DirectoryKey[] = [];
    for (const d of this.issuers) {
      const types = new Set<number>();
      for (const k of d.validKeys(nowMs)) {
        if (k.verification === undefined || types.has(k.tokenType)) continue;
        types.add(k.tokenType);
        out.push(k);
      }
    }
    return out;
  }
}
