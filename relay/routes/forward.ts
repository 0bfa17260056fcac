// POST <route path> through Fastify: the requests the lean front (relay/front.ts) hands over because
// they are not canonical (chunked bodies, Expect: 100-continue, HTTP/1.0, a query string...), and
// every request when `fastPath` is off or under inject(). The same checks and forwarding
// (relay/forward.ts); Fastify itself enforces the body limit (413 by Content-Length and while
// reading a chunked body) and the media type (415).

import type { FastifyInstance } from "fastify";
import { ProtocolError } from "../../core/errors.js";
import type { CorsPolicy } from "../../server/cors.js";
import { methodNotAllowed, sendProblem } from "../../server/problem-handler.js";
import { REQUEST_MEDIA_TYPE, type Forwarder, type RelayRoute } from "../forward.js";
import { isMediaType } from "../http1.js";
import type { UpstreamAnswer } from "../upstream.js";

export function registerForwardRoute(app: FastifyInstance, route: RelayRoute, deps: { forwarder: Forwarder; cors?: CorsPolicy }): void {
  app.post(route.path, async (request, reply) => {
    if (!isMediaType(request.headers["content-type"], REQUEST_MEDIA_TYPE)) {
      return sendProblem(reply, new ProtocolError("HTTP_ERR_MEDIA_TYPE", `use ${REQUEST_MEDIA_TYPE}`));
    }
    const body = request.body;
    // RFC 9458 §5: a relay MAY reject obviously invalid requests, such as an empty one.
    if (!Buffer.isBuffer(body) || body.length === 0) return sendProblem(reply, new ProtocolError("HTTP_ERR_BAD_REQUEST", "the request is empty"));
    const address = request.socket.remoteAddress ?? "unknown";
    const result = await new Promise<{ err: ProtocolError | undefined; answer: UpstreamAnswer | undefined }>((resolve) => {
      deps.forwarder.forward(route, address, body, (err, answer) => resolve({ err, answer }));
    });
    if (result.err !== undefined) {
      if (result.err.code === "HTTP_ERR_UNAVAILABLE") reply.header("connection", "close");
      return sendProblem(reply, result.err);
    }
    // Only the status, Content-Type and Content-Length of the gateway's answer: written directly,
    // because Fastify would add a Content-Type of its own to an answer that has none.
    const answer = result.answer!;
    // The log line and metrics come from the shared onResponse hook (it runs for hijacked replies).
    request.veilOutcome = "forwarded";
    reply.hijack();
    const headers: Record<string, string | number> = { "content-length": answer.body.length };
    if (answer.contentType !== undefined) headers["content-type"] = answer.contentType;
    // An allowed browser origin (relay/app.ts; the lean front hands such requests to Fastify).
    const origin = deps.cors?.allowed(request.headers.origin);
    if (origin !== undefined) Object.assign(headers, deps.cors!.responseHeaders(origin, ["retry-after"]));
    reply.raw.writeHead(answer.status, headers);
    reply.raw.end(answer.body);
    return reply;
  });
  methodNotAllowed(app, route.path, ["POST"]);
}
