// GET /.well-known/private-token-issuer-directory (RFC 9578 §4):
//
//   { "issuer-request-uri": "/token-request",
//     "token-keys": [ { "token-type": 2, "token-key": "<base64url, padded>", "not-before": 1764230400 } ] }
//
// Keys are listed in order of preference: configured token types in order, and within a type the
// newest not-before first (a successor not yet valid comes first; clients skip it until its
// not-before, RFC 9578 §4). Cache-Control max-age is sized to the rotation schedule: never longer
// than the time until the directory next changes (a key activates or expires), nor than
// `directoryMaxAgeSec`. An entity tag lets caches revalidate.

import { createHash } from "node:crypto";
import type { FastifyInstance } from "fastify";
import { toBase64Url } from "../../core/bytes.js";
import { ISSUER_DIRECTORY_PATH, MEDIA_TYPES } from "../../core/privacypass/issuance.js";
import { methodNotAllowed } from "../../server/problem-handler.js";
import type { IssuerKeyStore } from "../key-store.js";

export interface DirectoryRouteOptions {
  keys: IssuerKeyStore;
  issuerRequestUri: string;
  maxAgeSec: number;
}

export function directoryBody(keys: IssuerKeyStore, issuerRequestUri: string): string {
  return JSON.stringify({
    "issuer-request-uri": issuerRequestUri,
    "token-keys": keys.published().map((k) => ({
      "token-type": k.tokenType,
      "token-key": toBase64Url(k.tokenKey, true),
      "not-before": k.notBefore,
    })),
  });
}

export function registerDirectoryRoute(app: FastifyInstance, options: DirectoryRouteOptions): void {
  const { keys } = options;
  app.get(ISSUER_DIRECTORY_PATH, async (request, reply) => {
    await keys.refresh();
    const body = directoryBody(keys, options.issuerRequestUri);
    const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`;
    const maxAge = Math.max(1, Math.min(options.maxAgeSec, keys.secondsUntilChange()));
    reply.header("cache-control", `public, max-age=${maxAge}`).header("etag", etag).header("vary", "accept-encoding");
    const match = request.headers["if-none-match"];
    if (match !== undefined && match.split(",").some((t) => t.trim() === etag || t.trim() === "*")) {
      request.veilOutcome = "not_modified";
      return reply.code(304).send();
    }
    return reply.header("content-type", MEDIA_TYPES.issuerDirectory).send(body);
  });
  methodNotAllowed(app, ISSUER_DIRECTORY_PATH, ["GET"]);
}
