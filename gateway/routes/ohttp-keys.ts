// GET /ohttp-keys: the active key configurations as `application/ohttp-keys` (RFC 9458 §3.2: each
// config with a 2-byte length prefix). The same bytes for everyone (key consistency, RFC 9458 §7),
// cacheable for `keysMaxAgeSec`, with an entity tag so clients and the relay can revalidate cheaply.

import type { FastifyInstance } from "fastify";
import { MEDIA_TYPES } from "../../core/ohttp/index.js";
import { methodNotAllowed } from "../../server/problem-handler.js";
import type { KeyStore } from "../key-store.js";

export function registerOhttpKeysRoute(app: FastifyInstance, keys: Pick<KeyStore, "published">, maxAgeSec: number): void {
  app.get("/ohttp-keys", async (request, reply) => {
    const { body, etag } = keys.published();
    reply
      .header("cache-control", `public, max-age=${maxAgeSec}`)
      .header("etag", etag)
      .header("vary", "accept-encoding");
    const match = request.headers["if-none-match"];
    if (match !== undefined && match.split(",").some((t) => t.trim() === etag || t.trim() === "*")) {
      request.veilOutcome = "not_modified";
      return reply.code(304).send();
    }
    return reply.header("content-type", MEDIA_TYPES.keys).send(Buffer.from(body.buffer, body.byteOffset, body.byteLength));
  });
  methodNotAllowed(app, "/ohttp-keys", ["GET"]);
}
