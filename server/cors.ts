// Opt-in CORS (Fetch standard, "CORS protocol") for the few resources browser clients call across
// origins: the relay's POST <path> and GET <path>/ohttp-keys, the issuer's directory and
// /token-request, the gateway's GET /ohttp-keys. Config `cors: { origins: [...] }`: no origins (the
// default) means no CORS header at all; "*" allows every origin. An allowed Origin is echoed back
// (never "*", never an origin that is not allowed), with Vary: Origin. No credentials mode: the
// client library sends its credentials in headers it sets itself, never cookies.
//
// These are the server's own response headers: nothing of the client's request is forwarded.

import type { FastifyInstance } from "fastify";
import type { FieldSpec, FieldValue } from "./config.js";

/** A serialized origin: scheme://host[:port], no path, no trailing slash; or "*". */
const ORIGIN = /^(\*|https?:\/\/([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?)$/;

/** Preflight answers may be cached by browsers this long (Chromium caps it at 2 hours). */
export const CORS_MAX_AGE_SEC = 600;

/** The `cors` config field, the same in relay, issuer and gateway. */
export function corsSchema(what: string) {
  return {
    kind: "object",
    doc: `Cross-origin (CORS) access for browser clients to ${what}; no origins: no CORS headers.`,
    fields: {
      origins: {
        kind: "list",
        default: [],
        items: { kind: "string", pattern: ORIGIN, expect: '"*" or an origin such as "https://app.example"', doc: "An allowed origin." },
        doc: 'Origins allowed to call from a browser (exact scheme://host[:port]), or "*" for any.',
      },
    },
  } as const satisfies FieldSpec;
}

/** Allowed origins ("https://app.example", "http://127.0.0.1:8000") or "*"; [] = CORS off. */
export type CorsConfig = FieldValue<ReturnType<typeof corsSchema>>;

export interface CorsResource {
  /** The route path (exact, as registered with Fastify). */
  url: string;
  /** Methods allowed cross-origin (preflight Access-Control-Allow-Methods). */
  methods: readonly string[];
  /** Request headers allowed (lowercase). */
  headers: readonly string[];
  /** Response headers a page may read besides the CORS-safelisted ones. */
  expose?: readonly string[];
}

export class CorsPolicy {
  readonly #any: boolean;
  readonly #origins: ReadonlySet<string>;

  constructor(config: CorsConfig) {
    this.#any = config.origins.includes("*");
    this.#origins = new Set(config.origins.filter((o) => o !== "*").map((o) => o.toLowerCase()));
  }

  get enabled(): boolean {
    return this.#any || this.#origins.size > 0;
  }

  /** The Origin header value if it is one allowed origin (a repeated or absent header: undefined). */
  allowed(origin: string | string[] | undefined): string | undefined {
    if (typeof origin !== "string" || origin === "") return undefined;
    if (this.#any) return /^[\x21-\x7e]+$/.test(origin) ? origin : undefined;
    return this.#origins.has(origin) ? origin : undefined;
  }

  /** Headers added to an actual (non-preflight) answer for an allowed origin. */
  responseHeaders(origin: string, expose?: readonly string[]): Record<string, string> {
    const h: Record<string, string> = { "access-control-allow-origin": origin, vary: "origin" };
    if (expose !== undefined && expose.length > 0) h["access-control-expose-headers"] = expose.join(", ");
    return h;
  }
}

/** Adds `origin` to a Vary value (keeping what is there). */
function addVary(existing: unknown): string {
  const v = Array.isArray(existing) ? existing.join(", ") : typeof existing === "string" ? existing : "";
  if (v === "") return "origin";
  if (v.split(",").some((t) => t.trim().toLowerCase() === "origin" || t.trim() === "*")) return v;
  return `${v}, origin`;
}

/**
 * Answers preflights (OPTIONS with an allowed Origin: 204) and adds the CORS headers to every
 * answer of `resources` for an allowed Origin. Returns the policy (for answers written directly
 * on the socket), or undefined when no origin is configured (then nothing is installed).
 */
export function installCors(app: FastifyInstance, config: CorsConfig, resources: readonly CorsResource[]): CorsPolicy | undefined {
  const policy = new CorsPolicy(config);
  if (!policy.enabled) return undefined;
  const byUrl = new Map(resources.map((r) => [r.url, r]));
  app.addHook("onRequest", async (request, reply) => {
    if (request.method !== "OPTIONS") return;
    const url = request.routeOptions.url;
    const resource = url === undefined ? undefined : byUrl.get(url);
    if (resource === undefined) return;
    const origin = policy.allowed(request.headers.origin);
    // Not an allowed cross-origin preflight: the route's own answer (405) with no CORS header.
    if (origin === undefined) return;
    request.veilOutcome = "preflight";
    reply
      .code(204)
      .header("access-control-allow-origin", origin)
      .header("access-control-allow-methods", resource.methods.join(", "))
      .header("access-control-allow-headers", resource.headers.join(", "))
      .header("access-control-max-age", String(CORS_MAX_AGE_SEC))
      .header("vary", "origin, access-control-request-method, access-control-request-headers")
      .send();
    return reply;
  });
  app.addHook("onSend", async (request, reply, payload) => {
    if (request.method === "OPTIONS") return payload;
    const url = request.routeOptions.url;
    const resource = url === undefined ? undefined : byUrl.get(url);
    if (resource === undefined) return payload;
    // Vary: Origin on every answer of a covered resource, with or without an allowed Origin, so a
    // shared cache never serves a copy without CORS headers to a browser (or one with them to others).
    reply.header("vary", addVary(reply.getHeader("vary")));
    const origin = policy.allowed(request.headers.origin);
    if (origin === undefined) return payload;
    const h = policy.responseHeaders(origin, resource.expose);
    for (const [k, v] of Object.entries(h)) reply.header(k, k === "vary" ? addVary(reply.getHeader("vary")) : v);
    return payload;
  });
  return policy;
}
