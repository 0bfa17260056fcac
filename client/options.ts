// Option checks shared by the client's factories: URLs that must be HTTPS (RFC 9458 §6: both hops
// of Oblivious HTTP, and the key source of §6.1) unless they point at the loopback interface, and
// the small numeric options. Errors name the option (CFG_ERR_INVALID).

import { ProtocolError } from "../core/errors.js";

/** The `fetch` the client calls (the global one by default; tests and Node callers may inject). */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export function invalid(option: string, detail: string): ProtocolError {
  return new ProtocolError("CFG_ERR_INVALID", `${option}: ${detail}`);
}

/** 127.0.0.0/8, ::1 and localhost: plain http is acceptable there (tests, a local relay). */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/^\[|\]$/g, "");
  return h === "localhost" || h.endsWith(".localhost") || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * Parses `value` as an absolute URL that is https, or http on loopback. RFC 9458 §6 requires HTTPS
 * between client and relay, and §6.1 requires key configurations authenticated as the gateway's.
 */
export function secureUrl(option: string, value: string | URL): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalid(option, "must be an absolute URL");
  }
  if (url.protocol === "https:") return url;
  if (url.protocol === "http:" && isLoopbackHost(url.hostname)) return url;
  throw invalid(option, "must be an https URL (http is accepted only for loopback addresses)");
}

export function positiveInt(option: string, value: number | undefined, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1 || value > max) throw invalid(option, `must be an integer from 1 to ${max}`);
  return value;
}

export function nonNegativeInt(option: string, value: number | undefined, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 0 || value > max) throw invalid(option, `must be an integer from 0 to ${max}`);
  return value;
}

/** A fetch bound to the global object (calling an unbound `fetch` throws in browsers). */
export function defaultFetch(): FetchLike {
  const f = (globalThis as { fetch?: typeof fetch }).fetch;
  if (typeof f !== "function") throw invalid("fetch", "no global fetch: pass one");
  return (input, init) => f.call(globalThis, input, init);
}

/** Sleeps `ms` (a timer that never keeps a Node process alive on its own). */
export function sleep(ms: number): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms) as unknown as { unref?: () => void };
    t.unref?.();
  });
}

