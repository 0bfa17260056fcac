// POST /gateway: the Oblivious Gateway Resource (RFC 9458 §5).
//
// Before decapsulation, errors are plain `application/problem+json` (§5.2): 405/404 (other methods
// and paths), 415 (another media type), 413 (over maxRequestBytes, by Content-Length or while a
// chunked body is read: Fastify's bodyLimit), 400 with the `ohttp-key` problem type (§5.3) for an
// unknown key id or a suite the key does not offer, 400 for truncated or undecryptable messages.
// After decapsulation the answer is always a 200 `message/ohttp-res` (request-path.ts).

import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { ProtocolError } from "../../core/errors.js";
import { isMediaType } from "../../core/http-fields.js";
import { MEDIA_TYPES } from "../../core/ohttp/index.js";
import { acceptBinaryBody } from "../../server/lifecycle.js";
import { methodNotAllowed, sendProblem } from "../../server/problem-handler.js";
import { serveEncapsulatedRequest, type EncapsulatedRequestDeps } from "../request-path.js";

export interface GatewayRouteDeps extends EncapsulatedRequestDeps {
  maxRequestBytes: number;
}

export function registerGatewayRoute(app: FastifyInstance, deps: GatewayRouteDeps): void {
  acceptBinaryBody(app, MEDIA_TYPES.request);
  app.post(
    "/gateway",
    { bodyLimit: deps.maxRequestBytes },
    async (request: FastifyRequest, reply: FastifyReply) => {
      // Step 1: outer checks (Fastify already refused other media types with a body, and sizes).
      if (!isMediaType(request.headers["content-type"], MEDIA_TYPES.request)) {
        return sendProblem(reply, new ProtocolError("HTTP_ERR_MEDIA_TYPE", `Content-Type must be ${MEDIA_TYPES.request}`));
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
    },
  );
  methodNotAllowed(app, "/gateway", ["POST"]);
}
