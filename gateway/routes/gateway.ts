// POST /gateway: the Oblivious Gateway Resource (RFC 9458 §5).
//
// Before decapsulation, errors are plain `application/problem+json` (§5.2): 405/404 (other methods
// and paths), 415 (another media type), 413 (over maxRequestBytes, by Content-Length or while a
// chunked body is read: Fastify's bodyLimit), 400 with the `ohttp-key` problem type (§5.3) for an
// unknown key id or a suite the key does not offer, 400 for truncated or undecryptable messages.
// After decapsulation the answer is always a 200 `message/ohttp-res` (request-path.ts).

import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { encodeResponse } from "../../core/bhttp/index.js";
import { ProtocolError } from "../../core/errors.js";
import { MEDIA_TYPES, decapsulateRequest, type Keyring } from "../../core/ohttp/index.js";
import { acceptBinaryBody } from "../../server/lifecycle.js";
import { methodNotAllowed, sendProblem } from "../../server/problem-handler.js";
import { handleInnerRequest, type RequestPathDeps } from "../request-path.js";

export interface GatewayRouteDeps {
  keys: Keyring;
  path: RequestPathDeps;
  maxRequestBytes: number;
  /** Response nonces (RFC 9458 §4.4); default crypto.getRandomValues. */
  randomBytes?: (n: number) => Uint8Array;
  /** Counts decapsulations by key id (metrics: which keys are still in use). */
  onDecapsulated?: (keyId: number) => void;
}

/** The media type without parameters, lowercased. */
export function mediaType(header: string | undefined): string {
  return (header ?? "").split(";")[0]!.trim().toLowerCase();
}

/** What goes out for one encapsulated request: the sealed answer, or a plain problem (before decapsulation). */
export type OuterAnswer = { ok: true; sealed: Uint8Array; outcome: string } | { ok: false; error: unknown };

/** Steps 2-7 for one `message/ohttp-req` body; shared by the Fastify route and the lean path. */
export async function serveEncapsulatedRequest(body: Uint8Array, deps: GatewayRouteDeps): Promise<OuterAnswer> {
  // Step 2: decapsulate with the key named by the key id.
  let decapsulated;
  try {
    decapsulated = await decapsulateRequest(deps.keys, body, deps.randomBytes === undefined ? {} : { randomBytes: deps.randomBytes });
  } catch (e) {
    return { ok: false, error: e };
  }
  deps.onDecapsulated?.(decapsulated.keyId);
  // Steps 2-7: everything after this point is answered sealed.
  const result = await handleInnerRequest(decapsulated.request, deps.path);
  try {
    return { ok: true, sealed: await decapsulated.response.encapsulateResponse(encodeResponse(result.response)), outcome: result.outcome };
  } catch (e) {
    return { ok: false, error: e };
  }
}

export function registerGatewayRoute(app: FastifyInstance, deps: GatewayRouteDeps): void {
  acceptBinaryBody(app, MEDIA_TYPES.request);
  app.post(
    "/gateway",
    { bodyLimit: deps.maxRequestBytes },
    async (request: FastifyRequest, reply: FastifyReply) => {
      // Step 1: outer checks (Fastify already refused other media types with a body, and sizes).
      if (mediaType(request.headers["content-type"]) !== MEDIA_TYPES.request) {
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
