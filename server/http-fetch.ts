// Fetching small JSON documents that servers cache by their HTTP caching headers (RFC 9111): the
// gateway's copy of each issuer directory and the issuer's copy of the identity provider's JWK Set,
// both kept by server/cached-document.ts. One bounded reader with an overall deadline, and one
// freshness rule.

import { maxAgeSec } from "../core/http-fields.js";

/** What a cache needs from an HTTP response (the global fetch's Response satisfies it). */
export interface FetchedDocument {
  status: number;
  headers: { get(name: string): string | null };
  body: Uint8Array;
}

export type DocumentFetcher = (url: string, init: { headers: Record<string, string>; timeoutMs: number; maxBytes: number }) => Promise<FetchedDocument>;

/** How long a cached document stays fresh. */
export interface FreshnessBounds {
  /** Freshness when the response sends no max-age (RFC 9111 heuristic freshness, kept short). */
  defaultMaxAgeSec: number;
  /** Never refetch a fresh document more often than this, whatever max-age says (no-cache too). */
  minMaxAgeSec: number;
  /** Never trust a document longer than this without revalidating it. */
  maxMaxAgeSec: number;
}

/** Thrown by fetchBounded for a body over `maxBytes` (the caller wraps it in its own error code). */
export class DocumentTooLargeError extends Error {
  readonly code = "DOCUMENT_TOO_LARGE";
  constructor() {
    super("document too large");
  }
}

/** Reads a body up to `maxBytes` (then fails), redirects refused, with an overall deadline. */
export const fetchBounded: DocumentFetcher = async (url, init) => {
  const signal = AbortSignal.timeout(init.timeoutMs);
  const res = await fetch(url, { headers: init.headers, signal, redirect: "error" });
  const length = Number(res.headers.get("content-length") ?? "0");
  if (length > init.maxBytes) {
    await res.body?.cancel();
    throw new DocumentTooLargeError();
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  if (res.body !== null) {
    const reader = res.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > init.maxBytes) {
        await reader.cancel();
        throw new DocumentTooLargeError();
      }
      chunks.push(value);
    }
  }
  const body = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    body.set(c, o);
    o += c.length;
  }
  return { status: res.status, headers: res.headers, body };
};

/** RFC 9111 §4.2.1: max-age (no-cache / no-store: revalidate every time), minus Age, within bounds. */
export function freshnessSec(headers: FetchedDocument["headers"], o: FreshnessBounds): number {
  const maxAge = maxAgeSec(headers.get("cache-control"));
  const age = Number(headers.get("age") ?? "0");
  const fresh = (maxAge ?? o.defaultMaxAgeSec) - (Number.isFinite(age) && age > 0 ? age : 0);
  return Math.min(o.maxMaxAgeSec, Math.max(o.minMaxAgeSec, fresh));
}

/** True for a URL whose host is a loopback address (where plain http is acceptable). */
export function isLoopbackUrl(url: URL): boolean {
  const h = url.hostname.replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}
