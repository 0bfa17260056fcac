// GET /ohttp-keys: the active key configurations as `application/ohttp-keys` (RFC 9458 §3.2: each
// config with a 2-byte length prefix). The same bytes for everyone (key consistency, RFC 9458 §7),
// cacheable for `keysMaxAgeSec`, with an entity tag so clients and the relay can revalidate cheaply.

import type { FastifyInstance } from "fastify";
import { MEDIA_TYPES } from "../../core/ohttp/index.js";
import { ProtocolError } from "../../core/errors.js";
import { methodNotAllowed, sendProblem } from "../../server/problem-handler.js";
import type { KeyStore } from "../key-store.js";

/**
 * Serves the keys on GET `url`. On RFC 9540's `/.well-known/ohttp-gateway` (which is the gateway
 * resource itself, POST there is a request) a GET is answered with the keys only when the client
 * accepts `application/ohttp-keys` (RFC 9540 §4); otherwise 406.
 */
export function registerOhttpKeysRoute(app: FastifyInstance, keys: Pick<KeyStore, "published">, maxAgeSec: number, url = "/ohttp-keys"): void {
  const negotiate = url !== "/ohttp-keys";
  app.get(url, async (request, reply) => {
    if (negotiate && !acceptsKeys(request.headers.accept)) {
      return sendProblem(reply, new ProtocolError("HTTP_ERR_NOT_ACCEPTABLE", `GET here answers ${MEDIA_TYPES.keys} only`));
    }
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
  methodNotAllowed(app, url, negotiate ? ["GET", "POST"] : ["GET"]);
}

/** True when an Accept header admits application/ohttp-keys (absent: anything goes). */
function acceptsKeys(accept: string | undefined): boolean {
  if (accept === undefined) return true;
  return accept.split(",").some((range) => {
    const [type = "", ...params] = range.split(";").map((s) => s.trim().toLowerCase());
    if (params.some((p) => /^q=0(\.0{0,3})?$/.test(p))) return false;
    return type === MEDIA_TYPES.keys || type === "application/*" || type === "*/*";
  });
}
