// POST /gateway (and POST /.well-known/ohttp-gateway, RFC 9540 §4): the Oblivious Gateway Resource
// (RFC 9458 §5), for `message/ohttp-req` and for `message/ohttp-chunked-req`
// (draft-ietf-ohai-chunked-ohttp-08; gateway/chunked-path.ts).
//
// Before decapsulation, errors are plain `application/problem+json` (§5.2): 405/404 (other methods
// and paths), 415 (another media type), 413 (over maxRequestBytes, by Content-Length or while a
// chunked body is read: Fastify's bodyLimit; for chunked OHTTP over chunked.maxRequestBytes, counted
// as it streams), 400 with the `ohttp-key` problem type (§5.3) for an unknown key id or a suite the
// key does not offer, 400 for truncated or undecryptable messages. After decapsulation the answer
// is always a 200 `message/ohttp-res` (request-path.ts), or a 200 `message/ohttp-chunked-res` with
// `Incremental: ?1` (the draft's §3 signal that intermediaries should not buffer it).

import { Readable } from "node:stream";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { ProtocolError } from "../../core/errors.js";
import { isMediaType } from "../../core/http-fields.js";
import { MEDIA_TYPES } from "../../core/ohttp/index.js";
import { acceptBinaryBody } from "../../server/lifecycle.js";
import { methodNotAllowed, sendProblem } from "../../server/problem-handler.js";
import { serveChunkedRequest, type ChunkedPathDeps } from "../chunked-path.js";
import { serveEncapsulatedRequest, type EncapsulatedRequestDeps } from "../request-path.js";

export interface GatewayRouteDeps extends EncapsulatedRequestDeps {
  maxRequestBytes: number;
  chunked: ChunkedPathDeps;
}

/** RFC 9540 §4: the gateway resource at the target's well-known URI. */
export const WELL_KNOWN_GATEWAY = "/.well-known/ohttp-gateway";

export function registerGatewayRoute(app: FastifyInstance, deps: GatewayRouteDeps): void {
  acceptBinaryBody(app, MEDIA_TYPES.request);
  // Chunked requests are never buffered: the handler reads the raw stream.
  app.addContentTypeParser(MEDIA_TYPES.chunkedRequest, (_request, payload, done) => done(null, payload));
  const handler = async (request: FastifyRequest, reply: FastifyReply) => {
    const contentType = request.headers["content-type"];
    if (isMediaType(contentType, MEDIA_TYPES.chunkedRequest)) return serveChunked(request, reply, deps.chunked);
    // Step 1: outer checks (Fastify already refused other media types with a body, and sizes).
    if (!isMediaType(contentType, MEDIA_TYPES.request)) {
      return sendProblem(reply, new ProtocolError("HTTP_ERR_MEDIA_TYPE", `Content-Type must be ${MEDIA_TYPES.request} or ${MEDIA_TYPES.chunkedRequest}`));
    }
    const raw = request.body;
    const body = Buffer.isBuffer(raw) ? new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength) : new Uint8Array(0);
    const answer = await serveEncapsulatedRequest(body, deps);
    if (!answer.ok) return sendProblem(reply, answer.error);
    request.veilOutcome = answer.outcome;
    const sealed = answer.sealed;
    // RFC 9458 §5: the outer response carries only what it needs: 200, content type, content.
    return reply
      .code(200)
      .header("content-type", MEDIA_TYPES.response)
      .send(Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength));
  };
  app.post("/gateway", { bodyLimit: deps.maxRequestBytes }, handler);
  app.post(WELL_KNOWN_GATEWAY, { bodyLimit: deps.maxRequestBytes }, handler);
  methodNotAllowed(app, "/gateway", ["POST"]);
}

async function serveChunked(request: FastifyRequest, reply: FastifyReply, deps: ChunkedPathDeps): Promise<FastifyReply> {
  const body = request.body as Readable;
  const answer = await serveChunkedRequest(body, deps);
  if (!answer.ok) {
    // The rest of the body is not read: the connection closes after the problem.
    body.resume();
    return sendProblem(reply, answer.error);
  }
  void answer.outcome.then((o) => (request.veilOutcome = o));
  return reply
    .code(200)
    .header("content-type", MEDIA_TYPES.chunkedResponse)
    .header("incremental", "?1")
    .send(Readable.from(answer.body, { objectMode: false }));
}
