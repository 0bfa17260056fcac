// A small oblivious fetch for tests (the full client library is client/): Binary HTTP encode +
// OHTTP encapsulate, POST straight to a gateway, then decapsulate and decode the answer into a
// fetch Response. Good enough to stand in for `fetch` in @divviup/dap's Task.

import { decodeResponse, encodeRequest, type BhttpRequest, type BhttpResponse, type Field } from "../../core/bhttp/index.js";
import { decodeKeyConfigs, encapsulateRequest, type KeyConfig } from "../../core/ohttp/index.js";

export type Fetch = (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>;

/** Seals one inner request to `config`; `open` decapsulates and decodes the gateway's answer. */
export async function sealRequest(
  config: KeyConfig,
  req: Partial<BhttpRequest> & { path: string },
): Promise<{ body: Uint8Array<ArrayBuffer>; open(sealed: Uint8Array): Promise<BhttpResponse> }> {
  const inner = encodeRequest({
    method: req.method ?? "GET",
    scheme: req.scheme ?? "https",
    authority: req.authority ?? "leader.example",
    path: req.path,
    headers: req.headers ?? [],
    body: req.body ?? new Uint8Array(0),
    trailers: req.trailers ?? [],
  });
  const { encapsulated, response } = await encapsulateRequest(config, inner);
  return {
    body: new Uint8Array(encapsulated),
    open: async (sealed) => decodeResponse(await response.decapsulateResponse(sealed)),
  };
}

/** GET {gateway}/ohttp-keys and returns the first config. */
export async function fetchKeyConfig(gatewayUrl: string): Promise<KeyConfig> {
  const res = await fetch(new URL("/ohttp-keys", gatewayUrl));
  if (res.status !== 200) throw new Error(`ohttp-keys: ${res.status}`);
  const configs = decodeKeyConfigs(new Uint8Array(await res.arrayBuffer()));
  if (configs[0] === undefined) throw new Error("no key config");
  return configs[0];
}

function headerFields(h: HeadersInit | undefined): Field[] {
  const out: Field[] = [];
  new Headers(h).forEach((value, name) => out.push([name.toLowerCase(), value]));
  return out;
}

async function bodyBytes(body: BodyInit | null | undefined): Promise<Uint8Array> {
  if (body === undefined || body === null) return new Uint8Array(0);
  return new Uint8Array(await new Response(body).arrayBuffer());
}

export interface ObliviousFetchOptions {
  gatewayUrl: string;
  keyConfig: KeyConfig;
  /** Extra inner headers (e.g. a Privacy Pass Authorization) per request. */
  extraHeaders?: (url: URL, method: string) => Field[];
  /** Records each call (method + URL), for assertions. */
  calls?: string[];
}

export function obliviousFetch(opts: ObliviousFetchOptions): Fetch {
  return async (input, init) => {
    const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
    const method = (init?.method ?? "GET").toUpperCase();
    opts.calls?.push(`${method} ${url.href}`);
    const headers = [...headerFields(init?.headers), ...(opts.extraHeaders?.(url, method) ?? [])];
    const sealed = await sealRequest(opts.keyConfig, {
      method,
      scheme: url.protocol.slice(0, -1),
      authority: url.host,
      path: url.pathname + url.search,
      headers,
      body: await bodyBytes(init?.body),
    });
    const res = await fetch(new URL("/gateway", opts.gatewayUrl), {
      method: "POST",
      headers: { "content-type": "message/ohttp-req", accept: "message/ohttp-res" },
      body: sealed.body,
    });
    if (res.status !== 200 || res.headers.get("content-type") !== "message/ohttp-res") {
      // Errors before decapsulation: passed on as a non-problem response (dap-09 notes §4).
      await res.arrayBuffer();
      return new Response(`gateway refused the request (${res.status})`, { status: res.status === 200 ? 502 : res.status });
    }
    const inner = await sealed.open(new Uint8Array(await res.arrayBuffer()));
    const h = new Headers();
    for (const [n, v] of inner.headers) h.append(n, v);
    const nullBody = inner.status === 204 || inner.status === 304 || method === "HEAD";
    return new Response(nullBody ? null : new Uint8Array(inner.body), { status: inner.status, headers: h });
  };
}
