// POST <route path> through Fastify: the requests the lean front (relay/front.ts) hands over because
// they are not canonical (chunked bodies, Expect: 100-continue, HTTP/1.0, a query string...), and
// every request when `fastPath` is off or under inject(). The same checks and forwarding
// (relay/forward.ts); Fastify itself enforces the body limit (413 by Content-Length and while
// reading a chunked body) and the media type (415). Chunked OHTTP requests
// (`message/ohttp-chunked-req`) always come here and stream through (Forwarder.forwardStream).

import type { FastifyInstance } from "fastify";
import { ProtocolError } from "../../core/errors.js";
import { isMediaType } from "../../core/http-fields.js";
import { MEDIA_TYPES } from "../../core/ohttp/index.js";
import type { CorsPolicy } from "../../server/cors.js";
import { writeAnswer, type DrainState } from "../../server/lean-answers.js";
import { methodNotAllowed, sendProblem } from "../../server/problem-handler.js";
import type { Forwarder, RelayRoute } from "../forward.js";
import type { UpstreamAnswer } from "../upstream.js";

export function registerForwardRoute(app: FastifyInstance, route: RelayRoute, deps: { forwarder: Forwarder; drain: DrainState; cors?: CorsPolicy }): void {
  app.post(route.path, async (request, reply) => {
    const contentType = request.headers["content-type"];
    if (isMediaType(contentType, MEDIA_TYPES.chunkedRequest)) {
      // The exchange writes the answer itself; the log line comes from the onResponse hook.
      reply.hijack();
      const origin = deps.cors?.allowed(request.headers.origin);
      if (origin !== undefined) {
        for (const [k, v] of Object.entries(deps.cors!.responseHeaders(origin, ["retry-after"]))) reply.raw.setHeader(k, v);
      }
      const address = request.socket.remoteAddress ?? "unknown";
      deps.forwarder.forwardStream(route, address, request.raw, reply.raw, (outcome) => (request.veilOutcome = outcome));
      return reply;
    }
    if (!isMediaType(contentType, MEDIA_TYPES.request)) {
      return sendProblem(reply, new ProtocolError("HTTP_ERR_MEDIA_TYPE", `use ${MEDIA_TYPES.request} or ${MEDIA_TYPES.chunkedRequest}`));
    }
    const body = request.body;
    // RFC 9458 §5: a relay MAY reject obviously invalid requests, such as an empty one.
    if (!Buffer.isBuffer(body) || body.length === 0) return sendProblem(reply, new ProtocolError("HTTP_ERR_BAD_REQUEST", "the request is empty"));
    const address = request.socket.remoteAddress ?? "unknown";
    const result = await new Promise<{ err: ProtocolError | undefined; answer: UpstreamAnswer | undefined }>((resolve) => {
      deps.forwarder.forward(route, address, body, (err, answer) => resolve({ err, answer }));
    });
    // (A 503 while closing carries Connection: close from the catalogue error.)
    if (result.err !== undefined) return sendProblem(reply, result.err);
    // Only the status, Content-Type and Content-Length of the gateway's answer: written directly
    // (server/lean-answers.ts, with Connection: close while stopping, as Fastify's onSend hook
    // would add), because Fastify would add a Content-Type of its own to an answer that has none.
    const answer = result.answer!;
    // The log line and metrics come from the shared onResponse hook (it runs for hijacked replies).
    request.veilOutcome = "forwarded";
    reply.hijack();
    const headers: Record<string, string> = {};
    if (answer.contentType !== undefined) headers["content-type"] = answer.contentType;
    // An allowed browser origin (relay/app.ts; the lean front hands such requests to Fastify).
    const origin = deps.cors?.allowed(request.headers.origin);
    if (origin !== undefined) Object.assign(headers, deps.cors!.responseHeaders(origin, ["retry-after"]));
    writeAnswer(reply.raw, deps.drain, answer.status, headers, answer.body);
    return reply;
  });
  methodNotAllowed(app, route.path, ["POST"]);
}
