// Where the client gets the gateway's key configurations (RFC 9458 §3.2 `application/ohttp-keys`).
//
// RFC 9458 §6.1: the keys must be authenticated as the gateway's, so they come from the gateway's
// own `/ohttp-keys` over HTTPS, or are pinned by the application. The relay's copy (served the same
// to every client) is only a consistency check (§7, docs/architecture.md "Keys"): if it differs from ours, the
// gateway may be tagging this client with a key of its own, and nothing is sent.
//
// Loaded once, cached for the gateway's `Cache-Control: max-age` (clamped), refreshed on demand
// when the gateway refuses a key (the §5.3 `ohttp-key` problem or a 422, see oblivious-fetch.ts).

import { equalBytes } from "../core/bytes.js";
import { ProtocolError, wrapError } from "../core/errors.js";
import { isMediaType, maxAgeSec } from "../core/http-fields.js";
import { MEDIA_TYPES, decodeKeyConfigs, isAeadId, isKdfId, isKemId, type KeyConfig } from "../core/ohttp/index.js";
import type { FetchLike } from "./options.js";

/** Defaults of the key source (each used only when the caller says nothing). */
export const KEY_SOURCE_DEFAULTS = Object.freeze({
  /** Cache lifetime when the gateway sends no max-age (its own default is one hour). */
  maxAgeSec: 3600,
  /** Never refetch more often than this, whatever max-age says (a max-age of 0 would refetch per request). */
  minAgeSec: 60,
  /** Refetch at least daily, so a rotation is noticed even if the gateway asks for longer caching. */
  maxAgeCapSec: 86_400,
  /** After a failed background refetch, keep the last good keys this long before trying again. */
  retryAfterFailureSec: 60,
  /** Largest application/ohttp-keys body accepted (a handful of configs is a few hundred bytes). */
  maxKeysBytes: 64 * 1024,
});

export interface LoadedKeys {
  /** The application/ohttp-keys bytes, exactly as the gateway (or the pin) gave them. */
  readonly bytes: Uint8Array;
  /** The config requests are encapsulated to: the first one with a suite this client supports. */
  readonly config: KeyConfig;
  readonly configs: readonly KeyConfig[];
  /** ms since the epoch after which the keys are refetched (Infinity for pinned keys). */
  readonly expiresAtMs: number;
}

export interface KeySourceOptions {
  /** The gateway's /ohttp-keys URL, or pinned application/ohttp-keys bytes. */
  keys: URL | Uint8Array;
  /** The relay's copy (GET <relay route>/ohttp-keys) to compare with, if any. */
  relayKeys: URL | undefined;
  fetch: FetchLike;
  now: () => number;
  timeoutMs: number;
}

function chooseConfig(configs: readonly KeyConfig[]): KeyConfig | undefined {
  return configs.find((c) => isKemId(c.kemId) && c.symmetric.some((s) => isKdfId(s.kdfId) && isAeadId(s.aeadId)));
}

function parseKeys(bytes: Uint8Array, what: string): { configs: KeyConfig[]; config: KeyConfig } {
  let configs: KeyConfig[];
  try {
    configs = decodeKeyConfigs(bytes);
  } catch (e) {
    // A new error, not wrapError: that would pass core's OHTTP_ERR_* code through (found by fuzzing).
    throw new ProtocolError("CLIENT_ERR_KEYS_UNAVAILABLE", `${what} is not a valid application/ohttp-keys value`, { cause: e });
  }
  const config = chooseConfig(configs);
  if (config === undefined) throw new ProtocolError("CLIENT_ERR_KEYS_UNAVAILABLE", `${what} offers no key this client supports`);
  return { configs, config };
}

export class KeySource {
  readonly #opts: KeySourceOptions;
  readonly #pinned: LoadedKeys | undefined;
  #current: LoadedKeys | undefined;
  #loading: Promise<LoadedKeys> | undefined;

  constructor(opts: KeySourceOptions) {
    this.#opts = opts;
    if (opts.keys instanceof Uint8Array) {
      // Pinned: checked now, so a bad pin fails at construction rather than at the first request.
      const bytes = new Uint8Array(opts.keys);
      const { configs, config } = parseKeys(bytes, "the pinned key configuration");
      this.#pinned = { bytes, configs, config, expiresAtMs: Infinity };
    }
  }

  /** True when the keys are pinned (a refused key cannot be refreshed). */
  get pinned(): boolean {
    return this.#pinned !== undefined;
  }

  /** The keys to use now: cached, or (re)loaded when missing or expired. */
  async current(): Promise<LoadedKeys> {
    const cur = this.#current;
    if (cur !== undefined && this.#opts.now() < cur.expiresAtMs) return cur;
    if (cur === undefined) return this.#load("default");
    // Expired: refetch, but keep using the last good keys if that fails (they were checked).
    try {
      return await this.#load("no-cache");
    } catch {
      const kept = { ...cur, expiresAtMs: this.#opts.now() + KEY_SOURCE_DEFAULTS.retryAfterFailureSec * 1000 };
      this.#current = kept;
      return kept;
    }
  }

  /**
   * The gateway refused `stale`: refetch (bypassing HTTP caches) unless another request already
   * did. Pinned keys cannot be refreshed: CLIENT_ERR_KEY_CONFIG_REFUSED.
   */
  async refresh(stale: LoadedKeys): Promise<LoadedKeys> {
    if (this.#pinned !== undefined) {
      throw new ProtocolError("CLIENT_ERR_KEY_CONFIG_REFUSED", "the gateway refused the pinned key configuration");
    }
    // Another request may have refreshed already: then use its keys.
    const cur = this.#current;
    if (cur !== undefined && !equalBytes(cur.bytes, stale.bytes)) return cur;
    return this.#load("no-cache");
  }

  #load(cache: RequestCache): Promise<LoadedKeys> {
    this.#loading ??= this.#fetchAndCheck(cache).then(
      (k) => {
        this.#current = k;
        this.#loading = undefined;
        return k;
      },
      (e: unknown) => {
        this.#loading = undefined;
        throw e;
      },
    );
    return this.#loading;
  }

  /**
   * Loads the keys and checks them against the relay's copy. Right after a key rotation one of the
   * two may still be the old list (the relay's copy, or an HTTP cache on the way): on a difference
   * both are fetched once more with no-cache, which also makes the relay revalidate its copy
   * (relay/key-cache.ts); a difference that remains is an error. The comparison stays whole bytes,
   * so the relay's one copy still holds every client to the same keys.
   */
  async #fetchAndCheck(cache: RequestCache): Promise<LoadedKeys> {
    try {
      return await this.#fetchAndCompare(cache);
    } catch (e) {
      if (!(e instanceof ProtocolError && e.code === "CLIENT_ERR_KEYS_INCONSISTENT")) throw e;
      return this.#fetchAndCompare("no-cache");
    }
  }

  async #fetchAndCompare(cache: RequestCache): Promise<LoadedKeys> {
    let loaded: LoadedKeys;
    if (this.#pinned !== undefined) {
      loaded = this.#pinned;
    } else {
      const { bytes, maxAge } = await this.#get(this.#opts.keys as URL, "the gateway", cache);
      const { configs, config } = parseKeys(bytes, "the gateway's key configuration");
      const d = KEY_SOURCE_DEFAULTS;
      const ageSec = Math.min(d.maxAgeCapSec, Math.max(d.minAgeSec, maxAge ?? d.maxAgeSec));
      loaded = { bytes, configs, config, expiresAtMs: this.#opts.now() + ageSec * 1000 };
    }
    if (this.#opts.relayKeys !== undefined) {
      const relayCopy = await this.#get(this.#opts.relayKeys, "the relay", cache);
      // The same bytes for everyone (RFC 9458 §7): a copy that differs means this client may be
      // seeing a key nobody else sees.
      if (!equalBytes(relayCopy.bytes, loaded.bytes)) {
        throw new ProtocolError(
          "CLIENT_ERR_KEYS_INCONSISTENT",
          "the relay's copy of the gateway's key configurations differs from the gateway's, also when both were fetched again",
        );
      }
    }
    return loaded;
  }

  async #get(url: URL, who: string, cache: RequestCache): Promise<{ bytes: Uint8Array; maxAge: number | undefined }> {
    let res: Response;
    try {
      res = await this.#opts.fetch(url.href, {
        method: "GET",
        headers: { accept: MEDIA_TYPES.keys },
        cache,
        redirect: "error",
        credentials: "omit",
        signal: AbortSignal.timeout(this.#opts.timeoutMs),
      });
    } catch (e) {
      const code = who === "the relay" ? "CLIENT_ERR_RELAY_UNREACHABLE" : "CLIENT_ERR_KEYS_UNAVAILABLE";
      throw wrapError(e, code, `key configurations could not be fetched from ${who}`);
    }
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => {});
      throw new ProtocolError("CLIENT_ERR_KEYS_UNAVAILABLE", `${who} answered ${res.status} for its key configurations`);
    }
    if (!isMediaType(res.headers.get("content-type"), MEDIA_TYPES.keys)) {
      await res.body?.cancel().catch(() => {});
      throw new ProtocolError("CLIENT_ERR_KEYS_UNAVAILABLE", `${who} served key configurations that are not ${MEDIA_TYPES.keys}`);
    }
    const bytes = await readCapped(res, KEY_SOURCE_DEFAULTS.maxKeysBytes, "CLIENT_ERR_KEYS_UNAVAILABLE");
    return { bytes, maxAge: maxAgeSec(res.headers.get("cache-control")) };
  }
}

/** Reads a response body, refusing more than `max` bytes (by Content-Length and while reading). */
export async function readCapped(res: Response, max: number, code: "CLIENT_ERR_KEYS_UNAVAILABLE" | "CLIENT_ERR_BAD_RESPONSE" | "CLIENT_ERR_ISSUER_FAILED"): Promise<Uint8Array> {
  const declared = Number(res.headers.get("content-length") ?? "0");
  if (declared > max) {
    await res.body?.cancel().catch(() => {});
    throw new ProtocolError(code, `answer of ${declared} bytes exceeds the ${max}-byte limit`);
  }
  if (res.body === null) return new Uint8Array(0);
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > max) {
        await reader.cancel().catch(() => {});
        throw new ProtocolError(code, `answer exceeds the ${max}-byte limit`);
      }
      parts.push(value);
    }
  } catch (e) {
    throw wrapError(e, code, "answer could not be read");
  }
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
