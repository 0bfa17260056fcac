// GET <route path>/ohttp-keys: the relay's cached copy of the gateway's key configurations, the same
// bytes for every client (relay/key-cache.ts), with the remaining freshness as max-age and a strong
// ETag so clients can revalidate cheaply; a client's no-cache refetches an old copy first (key
// rotation, relay/key-cache.ts). Subject to the same per-client rate limit as forwarding.

import type { FastifyInstance } from "fastify";
import { methodNotAllowed, sendProblem } from "../../server/problem-handler.js";
import type { Forwarder } from "../forward.js";
import { KEYS_MEDIA_TYPE, type KeyCache } from "../key-cache.js";

function matches(ifNoneMatch: string | undefined, etag: string): boolean {
  if (ifNoneMatch === undefined) return false;
  return ifNoneMatch.split(",").some((t) => {
    const tag = t.trim();
    return tag === "*" || tag === etag || tag === `W/${etag}`;
  });
}

/**
 * Does the request ask for a fresh copy? RFC 9111 §5.2.1: `no-cache` or `max-age=0` (what fetch()
 * sends for cache: "reload" and "no-cache"), or the HTTP/1.0 `Pragma: no-cache`.
 */
function asksRevalidation(cacheControl: string | undefined, pragma: string | undefined): boolean {
  const directives = `${cacheControl ?? ""},${pragma ?? ""}`.toLowerCase().split(",").map((d) => d.trim().replace(/\s+/g, ""));
  return directives.includes("no-cache") || directives.includes("max-age=0");
}

export function registerKeysRoute(app: FastifyInstance, path: string, keys: KeyCache, deps: { forwarder: Forwarder }): void {
  const url = `${path}/ohttp-keys`;
  app.get(url, async (request, reply) => {
    const limited = await deps.forwarder.checkRate(request.socket.remoteAddress ?? "unknown");
    if (limited !== undefined) return sendProblem(reply, limited);
    const snapshot = await keys.get(asksRevalidation(request.headers["cache-control"], request.headers.pragma));
    reply
      .header("content-type", KEYS_MEDIA_TYPE)
      .header("cache-control", `public, max-age=${snapshot.maxAgeSec}`)
      .header("etag", snapshot.etag);
    if (matches(request.headers["if-none-match"], snapshot.etag)) return reply.code(304).send();
    return reply.send(snapshot.body);
  });
  methodNotAllowed(app, url, ["GET"]);
}
