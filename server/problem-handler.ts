// The problem+json error handler shared by the servers (RFC 9457). Status, headers and text come
// only from Veil's catalogue: never from a thrown library error (Fastify's default handler would
// send its message and take its status), so nothing internal reaches a client.

import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { ProtocolError, wrapError, type ErrorCode } from "../core/errors.js";
import { PROBLEM_MEDIA_TYPE, encodeProblem, toProblem } from "../core/problem.js";
import { safeError } from "./logging.js";

/** Fastify's own errors (body parsing, limits) mapped onto the catalogue. */
const FASTIFY_CODES: Readonly<Record<string, ErrorCode>> = {
  FST_ERR_CTP_BODY_TOO_LARGE: "HTTP_ERR_TOO_LARGE",
  FST_ERR_CTP_INVALID_MEDIA_TYPE: "HTTP_ERR_MEDIA_TYPE",
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: "HTTP_ERR_BAD_REQUEST",
  FST_ERR_CTP_EMPTY_JSON_BODY: "HTTP_ERR_BAD_REQUEST",
  FST_ERR_CTP_INVALID_JSON_BODY: "HTTP_ERR_BAD_REQUEST",
  FST_ERR_BAD_URL: "HTTP_ERR_BAD_REQUEST",
  FST_ERR_ASYNC_CONSTRAINT: "HTTP_ERR_BAD_REQUEST",
  ERR_HTTP_REQUEST_TIMEOUT: "HTTP_ERR_TIMEOUT",
  ECONNRESET: "HTTP_ERR_BAD_REQUEST",
  ERR_STREAM_PREMATURE_CLOSE: "HTTP_ERR_BAD_REQUEST",
};

export function toProtocolError(e: unknown): ProtocolError {
  if (e instanceof ProtocolError) return e;
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === "string" && Object.hasOwn(FASTIFY_CODES, code)) return wrapError(e, FASTIFY_CODES[code]);
  const status = (e as { statusCode?: unknown } | null)?.statusCode;
  if (typeof status === "number" && status >= 400 && status < 500) return wrapError(e, "HTTP_ERR_BAD_REQUEST");
  return wrapError(e, "INTERNAL_ERR");
}

/** A problem document ready to send: status, header fields (names lowercased) and body. */
export interface RenderedProblem {
  /** The catalogue error it renders (its code is the request's outcome word). */
  err: ProtocolError;
  status: number;
  headers: [string, string][];
  body: Uint8Array;
}

/**
 * The one rendering of an error as an RFC 9457 problem document, whichever way it leaves: through
 * Fastify (sendProblem), written raw by a lean path (server/lean-answers.ts), or sealed inside an
 * encapsulated response (gateway/request-path.ts). Never cached; `taskId` adds DAP's member.
 */
export function renderProblem(e: unknown, taskId?: string): RenderedProblem {
  const err = toProtocolError(e);
  const headers: [string, string][] = [
    ["content-type", PROBLEM_MEDIA_TYPE],
    ["cache-control", "no-store"],
  ];
  for (const [name, value] of Object.entries(err.headers)) headers.push([name.toLowerCase(), value]);
  return { err, status: err.status, headers, body: encodeProblem(toProblem(err, { taskId })) };
}

/** Sends `e` as a plain problem document (the status and headers from the catalogue). */
export function sendProblem(reply: FastifyReply, e: unknown, taskId?: string): FastifyReply {
  const p = renderProblem(e, taskId);
  reply.request.veilOutcome = p.err.code;
  reply.code(p.status);
  for (const [name, value] of p.headers) reply.header(name, value);
  return reply.send(Buffer.from(p.body.buffer, p.body.byteOffset, p.body.byteLength));
}

/**
 * Problem documents for every error on `app`, and for unknown paths unless `notFound` is false (a
 * plugin inside someone else's app leaves their 404s alone).
 */
export function installProblemHandler(app: FastifyInstance, options: { notFound?: boolean } = {}): void {
  app.setErrorHandler((e: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const err = toProtocolError(e);
    if (err.code === "INTERNAL_ERR") request.log.error({ err: safeError(e) }, "unexpected error");
    return sendProblem(reply, err);
  });
  if (options.notFound === false) return;
  app.setNotFoundHandler((_request, reply) => sendProblem(reply, new ProtocolError("HTTP_ERR_NOT_FOUND")));
}

/** Registers 405 answers (with Allow) for the other methods on a known path. */
export function methodNotAllowed(app: FastifyInstance, url: string, allowed: readonly string[]): void {
  const all = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] as const;
  const others = all.filter((m) => !allowed.includes(m) && !(m === "HEAD" && allowed.includes("GET")));
  app.route({
    method: others,
    url,
    handler: (_request, reply) =>
      sendProblem(reply, new ProtocolError("HTTP_ERR_METHOD", `use ${allowed.join(" or ")}`, { headers: { allow: allowed.join(", ") } })),
  });
}
