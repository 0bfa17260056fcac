// Between the fetch API and Binary HTTP (RFC 9292): a fetch call becomes the inner request the
// gateway sees, and the gateway's decapsulated answer becomes a standard `Response`, byte for byte
// (status, fields, content), so that e.g. an inner `application/problem+json` outdatedConfig or an
// exact `application/dap-hpke-config-list` reaches @divviup/dap unchanged.

import type { BhttpRequest, BhttpResponse, Field } from "../core/bhttp/index.js";
import { ProtocolError, wrapError } from "../core/errors.js";

/** A fetch call, normalised: what goes into the Binary HTTP request. */
export interface OutgoingRequest {
  method: string;
  url: URL;
  /** Lowercase names, in order; hop-by-hop fields removed. */
  headers: Field[];
  body: Uint8Array;
  signal: AbortSignal | undefined;
}

/**
 * Fields that describe one connection, not the message (RFC 9110 §7.6.1), or that Binary HTTP
 * carries itself (`host` is the authority, `content-length` is implied by known-length framing).
 * An `expect` would only earn a sealed 417 (RFC 9458 §5.1).
 */
const NOT_FORWARDED = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "proxy-authenticate",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
  "content-length",
  "expect",
]);

/**
 * Normalises fetch's arguments with the platform's own `Request` (so bodies of every kind -
 * string, Buffer, ArrayBuffer, Blob, FormData, URLSearchParams - and header forms behave exactly as
 * they would with fetch, including the default Content-Type of a string body).
 */
export async function toOutgoingRequest(input: RequestInfo | URL, init: RequestInit | undefined): Promise<OutgoingRequest> {
  const { req, ...rest } = normalise(input, init);
  const body = req.body === null ? new Uint8Array(0) : new Uint8Array(await req.arrayBuffer());
  return { ...rest, body };
}

/** The same, with the body left as a stream (for chunked OHTTP): nothing is read yet. */
export function toStreamedRequest(input: RequestInfo | URL, init: RequestInit | undefined): Omit<OutgoingRequest, "body"> & { body: ReadableStream<Uint8Array> | null } {
  const { req, ...rest } = normalise(input, { ...init, duplex: "half" } as RequestInit);
  return { ...rest, body: req.body };
}

/** True when fetch's body argument is a stream (sent as chunked OHTTP). */
export function hasStreamBody(input: RequestInfo | URL, init: RequestInit | undefined): boolean {
  return init?.body instanceof ReadableStream;
}

function normalise(input: RequestInfo | URL, init: RequestInit | undefined): Omit<OutgoingRequest, "body"> & { req: Request } {
  let req: Request;
  try {
    req = new Request(input, init);
  } catch (e) {
    throw wrapError(e, "HTTP_ERR_BAD_REQUEST", "the request could not be built (check the URL, method and body)");
  }
  const url = new URL(req.url);
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new ProtocolError("HTTP_ERR_BAD_REQUEST", "only http and https URLs can be sent obliviously");
  }
  const headers: Field[] = [];
  req.headers.forEach((value, name) => {
    if (!NOT_FORWARDED.has(name)) headers.push([name, value]);
  });
  return { req, method: req.method, url, headers, signal: init?.signal ?? undefined };
}

/** The inner request (RFC 9292 known-length), with extra fields such as the token appended. */
export function toBhttpRequest(r: OutgoingRequest, extra: readonly Field[] = []): BhttpRequest {
  return {
    method: r.method,
    scheme: r.url.protocol.slice(0, -1),
    authority: r.url.host,
    path: r.url.pathname + r.url.search,
    headers: [...r.headers, ...extra],
    body: r.body,
    trailers: [],
  };
}

/** Statuses whose responses cannot have content (the Response constructor refuses one). */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

/** The gateway's (or target's) answer as a standard Response. Informational responses are dropped. */
export function toResponse(b: Pick<BhttpResponse, "status" | "headers"> & Omit<Partial<BhttpResponse>, "body"> & { body: Uint8Array | ReadableStream<Uint8Array> }): Response {
  if (b.status < 200 || b.status > 599) {
    throw new ProtocolError("CLIENT_ERR_BAD_RESPONSE", `the inner response has status ${b.status}`);
  }
  const headers = new Headers();
  try {
    for (const [name, value] of b.headers) headers.append(name, value);
  } catch (e) {
    throw wrapError(e, "CLIENT_ERR_BAD_RESPONSE", "the inner response has a field the fetch API cannot represent");
  }
  let body: BodyInit | null = null;
  if (b.body instanceof ReadableStream) {
    if (NULL_BODY.has(b.status)) void b.body.cancel().catch(() => {});
    else body = b.body;
  } else if (!NULL_BODY.has(b.status) && b.body.length > 0) {
    body = new Uint8Array(b.body);
  }
  return new Response(body, { status: b.status, headers });
}

/** First value of a field (names are lowercase in Binary HTTP). */
export function field(fields: readonly Field[], name: string): string | undefined {
  for (const [n, v] of fields) if (n === name) return v;
  return undefined;
}
