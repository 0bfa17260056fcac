// The relay's configuration: the JSON file of `veil relay --config FILE` (this shape is a
// contract: listen {host, port, tls}, routes [{path, gateway, keys}], plus rate limits, limits and
// timeouts), overridable with VEIL_RELAY_<PATH> environment variables (e.g. VEIL_RELAY_LISTEN_PORT=9000,
// VEIL_RELAY_ROUTES='[...]' as JSON). Validated once, then frozen. The only relay file that reads
// process.env.

import { ProtocolError } from "../core/errors.js";
import { httpLimitsSchema, listenSchema, loadConfig, parseConfig, type ConfigOf, type FieldSpec, type Schema } from "../server/config.js";
import { corsSchema } from "../server/cors.js";

/** Every default of the relay, in one place. */
export const DEFAULTS = Object.freeze({
  /** Port of `veil relay` (the gateway defaults to 8081, the issuer to 8082). */
  port: 8080,
  /** Largest encapsulated request: DAP-09 reports are a few hundred bytes to a few KiB (the gateway
   *  takes 64 KiB); the relay buffers whole requests, so this bounds memory per request. */
  maxRequestBytes: 64 * 1024,
  /** Largest gateway answer passed back: an encapsulated DAP upload answer is tiny. */
  maxResponseBytes: 256 * 1024,
  /** Largest key configuration list accepted from a gateway (a few configs of ~1.2 KiB for X-Wing). */
  maxKeysBytes: 64 * 1024,
  /** Pooled keep-alive connections per gateway; requests beyond wait for a free one. */
  upstreamConnections: 128,
  /** Requests per client address per window; 0 turns the limit off. */
  perClientPerWindow: 600,
  /** Rate-limit window: a client's address is forgotten when its window ends. */
  windowMs: 60_000,
  /** Connect timeout to a gateway (TCP + TLS); a refused connection fails at once. */
  connectMs: 5_000,
  /** Time from sending the request until the gateway's answer headers (it decapsulates, checks the
   *  token and waits for the aggregator: seconds, not minutes; undici's default is 300 s). */
  headersMs: 15_000,
  /** Longest pause between two chunks of the gateway's answer body. */
  bodyMs: 15_000,
  /** Idle pooled connections to a gateway are closed after this long: below the 5 s keep-alive
   *  timeout of Node servers, so the relay closes first and rarely writes into a closing socket. */
  keepAliveMs: 4_000,
  /** Deadline of one key configuration fetch. */
  keysFetchMs: 5_000,
  /** 1 GiB: a chunked request streams through (never held whole), so this cap is about abuse, not
   *  memory; the same as the gateway's chunked.maxRequestBytes. */
  chunkedMaxRequestBytes: 1024 * 1024 * 1024,
  /** 1 GiB: a chunked answer streams through too. */
  chunkedMaxResponseBytes: 1024 * 1024 * 1024,
  /** Longest time a chunked exchange may make no progress in either direction (no request bytes
   *  from the client or taken by the gateway, no answer bytes from the gateway or taken by the client). */
  chunkedIdleTimeoutMs: 15_000,
  /** Freshness of fetched keys when the gateway sends no Cache-Control max-age. */
  keysDefaultMaxAgeSec: 300,
  /** Refetch keys at most this often, whatever max-age says. */
  keysMinMaxAgeSec: 10,
  /** Refetch keys at least this often, whatever max-age says. */
  keysMaxMaxAgeSec: 86_400,
  /** A stale copy is served this long past its expiry while the gateway cannot be reached. */
  keysStaleIfErrorSec: 3_600,
  /** After a failed key fetch, the stale copy is served without trying again for this long. */
  keysRetrySec: 5,
  /** A client that asks for revalidation (Cache-Control: no-cache or max-age=0) makes the relay
   *  refetch a copy older than this: right after a key rotation, clients never see a stale copy
   *  for longer, and the gateway sees at most one fetch per route this often. */
  keysRevalidateMinSec: 1,
  /** HTTP/2 streams a connection may have in progress (SETTINGS_MAX_CONCURRENT_STREAMS; nginx's
   *  default is 128): enough to multiplex a phone's uploads, few enough to bound a connection. */
  h2MaxConcurrentStreams: 100,
  /** Request bytes being read plus answer bytes not yet sent, per HTTP/2 connection: a dozen
   *  maximal requests, hundreds of typical DAP uploads. */
  h2MaxBufferedBytes: 1024 * 1024,
  /** Streams an HTTP/2 client may cancel per 10 s before its connection is closed (rapid reset):
   *  far above what a browser cancels, far below nghttp2's own limit of 1000. */
  h2MaxClientResets: 200,
});

/** A path segment list: no query, fragment, dot segments, double or trailing slashes. */
const ROUTE_PATH = /^(\/[A-Za-z0-9._~!$&'()*+,;=:@-]+)+$/;
const HTTP_URL = /^https?:\/\/[^/?#@\s]+(\/[^#\s]*)?$/;
/** An HTTP field name (RFC 9110 §5.1 token). */
const FIELD_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A field value a client library will send as is: visible ASCII and spaces, no CR/LF. */
const FIELD_VALUE = /^[\x20-\x7e]*$/;
const STORE = /^(memory|rediss?:\/\/.+)$/;
/** Paths the shared server plumbing answers itself. */
const RESERVED_PATHS = ["/healthz", "/readyz", "/metrics"];
/** Headers the relay writes itself: the operator's auth header cannot replace one of them. */
const RESERVED_HEADERS = ["host", "content-type", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "upgrade", "expect", "trailer"];

function limitsSchema() {
  const base = httpLimitsSchema({ maxRequestBytes: DEFAULTS.maxRequestBytes });
  return {
    ...base,
    fields: {
      ...base.fields,
      maxResponseBytes: { kind: "int", default: DEFAULTS.maxResponseBytes, min: 1, doc: "Largest gateway answer passed back (502 above it)." },
      maxKeysBytes: { kind: "int", default: DEFAULTS.maxKeysBytes, min: 2, doc: "Largest key configuration list accepted from a gateway." },
      upstreamConnections: { kind: "int", default: DEFAULTS.upstreamConnections, min: 1, doc: "Pooled keep-alive connections per gateway." },
    },
  } as const satisfies FieldSpec;
}

export const RELAY_SCHEMA = {
  listen: listenSchema(DEFAULTS.port),
  routes: {
    kind: "list",
    minItems: 1,
    doc: "Relay resources, one per gateway (RFC 9458 §8.2: only explicitly configured gateways).",
    items: {
      kind: "object",
      doc: "A relay resource.",
      fields: {
        path: { kind: "string", pattern: ROUTE_PATH, expect: 'a path such as "/leader-gateway"', doc: "POST here forwards to the gateway; GET <path>/ohttp-keys serves its keys." },
        gateway: { kind: "string", pattern: HTTP_URL, expect: "an http(s) URL", doc: "Gateway URL the encapsulated requests are POSTed to." },
        keys: { kind: "string", optional: true, pattern: HTTP_URL, expect: "an http(s) URL", doc: "URL of the gateway's key configurations." },
        ca: { kind: "string", optional: true, doc: "PEM file of the CA(s) trusted for an https gateway." },
        clientCert: { kind: "string", optional: true, doc: "PEM client certificate for mTLS to the gateway." },
        clientKey: { kind: "string", optional: true, doc: "PEM private key of clientCert." },
        authHeader: {
          kind: "object",
          optional: true,
          doc: "The operator's own header authenticating the relay to the gateway.",
          fields: {
            name: { kind: "string", pattern: FIELD_NAME, expect: "an HTTP header name", doc: "Header name, e.g. authorization." },
            value: { kind: "string", pattern: FIELD_VALUE, expect: "a header value (visible ASCII)", secret: true, doc: "Header value (a shared secret)." },
          },
        },
      },
    },
  },
  rateLimit: {
    kind: "object",
    doc: "Per-client rate limit, keyed by client address (which lives only in the current window).",
    fields: {
      perClientPerWindow: { kind: "int", default: DEFAULTS.perClientPerWindow, min: 0, doc: "Requests per client per window (0: no limit)." },
      windowMs: { kind: "int", default: DEFAULTS.windowMs, min: 100, doc: "Window length." },
      store: { kind: "string", default: "memory", pattern: STORE, expect: '"memory" or a redis:// URL', doc: "Counter store: in memory or Redis (shared by replicas)." },
      keySecret: {
        kind: "string",
        optional: true,
        secret: true,
        doc: "Redis only: secret of the keyed hash of addresses, the same on every replica (default: random per process).",
      },
      redisPrefix: { kind: "string", default: "veil:relay:rl:", doc: "Redis only: key prefix." },
      ipv6PrefixBits: { kind: "int", default: 64, min: 1, max: 128, doc: "IPv6 clients are counted per prefix of this length." },
    },
  },
  limits: limitsSchema(),
  timeouts: {
    kind: "object",
    doc: "Timeouts towards the gateways (never a library default).",
    fields: {
      connectMs: { kind: "int", default: DEFAULTS.connectMs, min: 1, doc: "TCP and TLS connect timeout (504 after it)." },
      headersMs: { kind: "int", default: DEFAULTS.headersMs, min: 1, doc: "Time until the gateway's answer headers (504 after it)." },
      bodyMs: { kind: "int", default: DEFAULTS.bodyMs, min: 1, doc: "Longest pause in the gateway's answer body (504 after it)." },
      keepAliveMs: { kind: "int", default: DEFAULTS.keepAliveMs, min: 1, doc: "Idle pooled gateway connections close after this." },
      keysFetchMs: { kind: "int", default: DEFAULTS.keysFetchMs, min: 1, doc: "Deadline of one key configuration fetch." },
    },
  },
  chunked: {
    kind: "object",
    doc: "Chunked OHTTP (message/ohttp-chunked-req and -res, draft-ietf-ohai-chunked-ohttp-08): passed through as streams, never held whole.",
    fields: {
      maxRequestBytes: {
        kind: "int",
        default: DEFAULTS.chunkedMaxRequestBytes,
        min: 1,
        doc: "Most bytes of one chunked request, counted as they stream (413, or the connection cut once the answer has begun).",
      },
      maxResponseBytes: {
        kind: "int",
        default: DEFAULTS.chunkedMaxResponseBytes,
        min: 1,
        doc: "Most bytes of one chunked answer, counted as they stream (above it the client's connection is cut: never a truncated answer that looks complete).",
      },
      idleTimeoutMs: {
        kind: "int",
        default: DEFAULTS.chunkedIdleTimeoutMs,
        min: 1,
        doc: "Longest time a chunked exchange makes no progress in either direction (408 or 504 before the answer began, else the connection is cut).",
      },
    },
  },
  keyCache: {
    kind: "object",
    doc: "The cached copy of each gateway's key configurations.",
    fields: {
      defaultMaxAgeSec: { kind: "int", default: DEFAULTS.keysDefaultMaxAgeSec, min: 1, doc: "Freshness when the gateway sends no max-age." },
      minMaxAgeSec: { kind: "int", default: DEFAULTS.keysMinMaxAgeSec, min: 0, doc: "Shortest freshness honoured." },
      maxMaxAgeSec: { kind: "int", default: DEFAULTS.keysMaxMaxAgeSec, min: 1, doc: "Longest freshness honoured." },
      staleIfErrorSec: { kind: "int", default: DEFAULTS.keysStaleIfErrorSec, min: 0, doc: "How long past expiry a stale copy is served while the gateway is down." },
      retrySec: { kind: "int", default: DEFAULTS.keysRetrySec, min: 0, doc: "Pause after a failed fetch before the next attempt." },
      revalidateMinSec: {
        kind: "int",
        default: DEFAULTS.keysRevalidateMinSec,
        min: 0,
        doc: "A client's Cache-Control: no-cache (or max-age=0) refetches a copy at least this old (key rotation without client errors).",
      },
    },
  },
  http2: {
    kind: "object",
    doc: "HTTP/2 on the TLS listener (listen.tls): ALPN offers h2 and http/1.1 on the same port.",
    fields: {
      enabled: { kind: "boolean", default: true, doc: "Offer h2 by ALPN (false: HTTP/1.1 only)." },
      maxConcurrentStreams: {
        kind: "int",
        default: DEFAULTS.h2MaxConcurrentStreams,
        min: 1,
        max: 1000,
        doc: "SETTINGS_MAX_CONCURRENT_STREAMS, and the requests one connection may have in progress, reset ones included: more are refused with REFUSED_STREAM.",
      },
      maxBufferedBytes: {
        kind: "int",
        default: DEFAULTS.h2MaxBufferedBytes,
        min: 65_536,
        doc: "Request bytes being read plus answer bytes unsent, per connection: a stream that would exceed it is refused with REFUSED_STREAM.",
      },
      maxClientResets: {
        kind: "int",
        default: DEFAULTS.h2MaxClientResets,
        min: 1,
        doc: "Streams a client may cancel per 10 s; more close the connection with GOAWAY(ENHANCE_YOUR_CALM) (rapid reset).",
      },
    },
  },
  fastPath: { kind: "boolean", default: true, doc: "Serve canonical HTTP/1.1 POSTs on the lean forwarding path (false: node:http + Fastify only)." },
  cors: corsSchema("POST <path> and GET <path>/ohttp-keys"),
  logLevel: { kind: "string", default: "info", oneOf: ["fatal", "error", "warn", "info", "debug", "trace", "silent"], doc: "Log level." },
} as const satisfies Schema;

/** The relay's configuration, as RELAY_SCHEMA defines it (server/config.ts says how to add a field). */
export type RelayConfig = ConfigOf<typeof RELAY_SCHEMA>;
export type RouteConfig = RelayConfig["routes"][number];
export type RateLimitConfig = RelayConfig["rateLimit"];
export type RelayLimits = RelayConfig["limits"];
export type RelayTimeouts = RelayConfig["timeouts"];
export type KeyCacheConfig = RelayConfig["keyCache"];
export type RelayChunkedConfig = RelayConfig["chunked"];

function invalid(message: string): never {
  throw new ProtocolError("CFG_ERR_INVALID", message);
}

/** The pattern lets through strings such as "http://[" that are no URL (found by fuzzing). */
function parseUrl(value: string, at: string): URL {
  try {
    return new URL(value);
  } catch {
    return invalid(`${at}: not a valid URL`);
  }
}

/** Checks what the schema cannot: cross-field rules. */
function checkRelayConfig(c: RelayConfig): RelayConfig {
  const seen = new Set<string>();
  c.routes.forEach((r, i) => {
    const at = `routes[${i}]`;
    if (seen.has(r.path)) invalid(`${at}.path: ${JSON.stringify(r.path)} is configured twice`);
    if (RESERVED_PATHS.includes(r.path)) invalid(`${at}.path: ${r.path} is reserved`);
    if (r.path.endsWith("/ohttp-keys")) invalid(`${at}.path: must not end in /ohttp-keys (the keys live at <path>/ohttp-keys)`);
    seen.add(r.path);
    const gateway = parseUrl(r.gateway, `${at}.gateway`);
    const tls = r.ca !== undefined || r.clientCert !== undefined || r.clientKey !== undefined;
    if (tls && gateway.protocol !== "https:") invalid(`${at}: ca, clientCert and clientKey need an https:// gateway`);
    if ((r.clientCert === undefined) !== (r.clientKey === undefined)) invalid(`${at}: clientCert and clientKey go together`);
    if (gateway.username !== "" || gateway.password !== "") invalid(`${at}.gateway: no credentials in the URL (use authHeader)`);
    if (r.keys !== undefined) parseUrl(r.keys, `${at}.keys`);
    if (r.authHeader !== undefined && RESERVED_HEADERS.includes(r.authHeader.name.toLowerCase())) {
      invalid(`${at}.authHeader.name: ${r.authHeader.name} is written by the relay itself`);
    }
  });
  if (c.keyCache.minMaxAgeSec > c.keyCache.maxMaxAgeSec) invalid("keyCache.minMaxAgeSec: must not exceed keyCache.maxMaxAgeSec");
  return c;
}

const ENV_PREFIX = "VEIL_RELAY_";

/** Validates a parsed JSON config (environment overrides only if `env` is given), e.g. in tests. */
export function parseRelayConfig(raw: unknown, env?: Readonly<Record<string, string | undefined>>): RelayConfig {
  return checkRelayConfig(parseConfig(RELAY_SCHEMA, raw, env === undefined ? {} : { env, envPrefix: ENV_PREFIX }));
}

/** `veil relay --config FILE`: the file plus VEIL_RELAY_* environment overrides. */
export function loadRelayConfig(file: string | undefined): RelayConfig {
  return checkRelayConfig(loadConfig(RELAY_SCHEMA, file, { env: process.env, envPrefix: ENV_PREFIX }));
}
