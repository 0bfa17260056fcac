// `node dist/bench/relay-h2-floor.js PORT CERT KEY UPSTREAM_URL`: the floor of a relay built on
// node:http2, for bench/relay-h2.ts. A node:http2 TLS server with the relay's h2 settings
// (http2ServerOptions, allowHTTP1) that reads each POST's body and forwards it with the relay's own
// upstream client (relay/upstream.ts, keep-alive HTTP/1.1), answering the upstream's status, type
// and body; streams end as the relay's do (relay/h2.ts destroyQuietly). Nothing else: no route
// table, media-type check, limits, rate limit, log line or metrics. Its throughput against nginx's
// is what the relay could reach over node:http2 with its own front code at zero.

import { readFileSync } from "node:fs";
import { createSecureServer, type ServerHttp2Stream } from "node:http2";
import { upstreamLimits } from "../relay/app.js";
import { parseRelayConfig } from "../relay/config.js";
import { destroyQuietly, http2ServerOptions } from "../relay/h2.js";
import { Upstream } from "../relay/upstream.js";

const [port, cert, key, upstreamUrl] = process.argv.slice(2);
// The relay's defaults, as `veil relay` would use them for this one route.
const config = parseRelayConfig({ listen: { host: "127.0.0.1", port: 0 }, routes: [{ path: "/leader-gateway", gateway: upstreamUrl }] });
const upstream = new Upstream({ gateway: new URL(upstreamUrl!), ...upstreamLimits(config) });
const server = createSecureServer({ ...http2ServerOptions(config.http2, config.limits.maxHeaderBytes), cert: readFileSync(cert!), key: readFileSync(key!), allowHTTP1: true });
server.on("stream", (stream: ServerHttp2Stream) => {
  destroyQuietly(stream);
  const chunks: Buffer[] = [];
  stream.on("data", (c: Buffer) => chunks.push(c));
  stream.on("error", () => {});
  stream.on("end", () => {
    upstream.forward(Buffer.concat(chunks), (err, a) => {
      if (stream.closed) return;
      if (err !== undefined || a === undefined) {
        stream.respond({ ":status": 502 }, { endStream: true });
        return;
      }
      const headers: Record<string, string | number> = { ":status": a.status, "content-length": a.body.length };
      if (a.contentType !== undefined) headers["content-type"] = a.contentType;
      stream.respond(headers);
      stream.end(a.body);
    });
  });
});
server.listen(Number(port), "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));
