// The gateway's configuration: the JSON file of `veil gateway --config FILE` (its shape is a
// contract: listen, keys, targets, policy, tokens), plus explicit limits and timeouts, overridable
// with VEIL_GATEWAY_<PATH> environment variables (e.g. VEIL_GATEWAY_LISTEN_PORT=9000). Validated
// once, then frozen. This is the only gateway file that reads process.env.

import { DAP_VERSIONS } from "../core/dap/index.js";
import { ProtocolError } from "../core/errors.js";
import { httpLimitsSchema, listenSchema, loadConfig, parseConfig, type ConfigOf, type Schema } from "../server/config.js";
import { corsSchema } from "../server/cors.js";

/** Every default of the gateway, in one place. */
export const DEFAULTS = Object.freeze({
  /** Port of `veil gateway` (the relay defaults to 8080, the issuer to 8082). */
  port: 8081,
  /** Largest encapsulated request: a DAP-09 report is a few hundred bytes to a few KiB (histograms
   *  with many buckets grow linearly); 64 KiB leaves room without inviting memory abuse. */
  maxRequestBytes: 64 * 1024,
  /** Where `veil keys generate` puts keys by default in the docs. */
  keys: "data/gateway-keys.json",
  /** `Cache-Control: max-age` of /ohttp-keys: clients refresh key configs hourly. */
  keysMaxAgeSec: 3600,
  /** A retired key still decrypts this long: at least twice keysMaxAgeSec (a client may have fetched
   *  the config just before it was retired, and its cache may be refreshed late), here one day. */
  retiredKeyGraceSec: 86_400,
  /** Upstream TCP(+TLS) connect timeout: an aggregator on the same network answers in milliseconds. */
  connectTimeoutMs: 5_000,
  /** Time until the target's response headers arrive (undici's default is 300 s: far too long). */
  headersTimeoutMs: 15_000,
  /** Longest pause between two chunks of the target's response body. */
  bodyTimeoutMs: 15_000,
  /** Deadline for the whole upstream exchange, whatever the per-phase timeouts allow. */
  totalTimeoutMs: 30_000,
  /** Largest target answer sealed back: DAP upload answers are empty or a small problem document,
   *  HPKE config lists a few hundred bytes. */
  maxResponseBytes: 256 * 1024,
  /** Keep-alive connections per target (undici Pool). */
  connectionsPerTarget: 32,
  /** Idle keep-alive connections to a target are closed after this long. */
  upstreamKeepAliveMs: 30_000,
  /** Decoding limits for inner Binary HTTP requests. */
  maxInnerFields: 64,
  maxInnerFieldBytes: 8 * 1024,
  /** Privacy Pass: token keys are trusted for a week after not-before (must match the issuer). */
  keyLifetimeSec: 604_800,
  /** The embedded nonce store (design: SQLite survives restarts and is shared by workers). */
  tokenStore: "sqlite:data/gateway-nonces.db",
  /** Epoch of "epoch" redemption contexts: a day (clients fetch tokens in batches ahead of use). */
  epochSec: 86_400,
  /** Spent nonces outlive their key or epoch by this much: clocks of gateways sharing a store differ. */
  clockSkewSec: 300,
  /** 1 GiB: a chunked request streams, so the cap is about abuse, not memory. */
  maxChunkedRequestBytes: 1024 * 1024 * 1024,
  /** Four times the 16384 bytes every receiver must accept (draft-ietf-ohai-chunked-ohttp-08 §3). */
  maxChunkBytes: 4 * 16384,
  /** A client that stops sending for this long loses its request. */
  chunkTimeoutMs: 30_000,
  /** RFC 9577 §4.1: greased challenges with a "non-trivial probability". */
  greaseProbability: 0.1,
  /** A token pays for one report: a DAP-09 upload is one report, and a DAP-18 upload of many
   *  reports would let one attested client weigh as many (Sybil resistance is per token). */
  maxReportsPerToken: 1,
});

/** `https://leader.example` or `https://leader.example/dap/`: scheme, host, optional port and path. */
const TARGET_KEY = /^https?:\/\/[^/?#@\s]+(\/[^?#\s]*)?$/;
const UPSTREAM_URL = /^https?:\/\/[^/?#@\s]+(\/[^?#\s]*)?$/;
const STORE = /^(memory|sqlite:.+|rediss?:\/\/.+)$/;

export const GATEWAY_SCHEMA = {
  listen: listenSchema(DEFAULTS.port),
  limits: httpLimitsSchema({ maxRequestBytes: DEFAULTS.maxRequestBytes }),
  keys: { kind: "string", default: DEFAULTS.keys, doc: "Key file written by `veil keys generate` (mode 0600; re-read on SIGHUP)." },
  keysMaxAgeSec: { kind: "int", default: DEFAULTS.keysMaxAgeSec, min: 0, doc: "Cache-Control max-age of GET /ohttp-keys." },
  retiredKeyGraceSec: {
    kind: "int",
    default: DEFAULTS.retiredKeyGraceSec,
    min: 0,
    doc: "How long a retired key still decrypts (at least twice keysMaxAgeSec).",
  },
  targets: {
    kind: "map",
    default: {},
    keyPattern: TARGET_KEY,
    expect: "an inner origin such as https://leader.example or https://leader.example/dap/",
    values: {
      kind: "either",
      doc: "Upstream base URL (a DAP-09 target), or an object naming the DAP draft the target speaks.",
      string: { kind: "string", pattern: UPSTREAM_URL, expect: "an http(s) base URL", doc: "Upstream base URL." },
      object: {
        kind: "object",
        doc: "A target with its DAP draft.",
        fields: {
          upstream: { kind: "string", pattern: UPSTREAM_URL, expect: "an http(s) base URL", doc: "Upstream base URL." },
          dap: {
            kind: "string",
            default: "09",
            oneOf: DAP_VERSIONS,
            doc: 'DAP draft of the target: "09" (PUT tasks/{id}/reports, one report) or "18" (POST of concatenated reports, at most tokens.maxReportsPerToken).',
          },
        },
      },
    },
    doc: 'Allow-list: inner origin (optionally with a path prefix) -> upstream base URL (DAP-09), or { "upstream": URL, "dap": "09" | "18" }.',
  },
  policy: {
    kind: "string",
    default: "dap",
    oneOf: ["dap", "targets-only"],
    doc: "dap: only the upload and hpke_config requests of each target's DAP draft; targets-only: anything on a listed target.",
  },
  tokens: {
    kind: "object",
    doc: "Privacy Pass tokens (RFC 9576/9577/9578).",
    fields: {
      required: { kind: "boolean", default: true, doc: "Uploads need a token (fail closed: the default)." },
      issuers: {
        kind: "list",
        default: [],
        doc: "Trusted issuers.",
        items: {
          kind: "object",
          doc: "A trusted issuer.",
          fields: {
            name: { kind: "string", pattern: /^[^\s/]+$/, expect: "an issuer name (host name)", doc: "Issuer name used in challenges." },
            directory: {
              kind: "string",
              pattern: /^https?:\/\/\S+$/,
              expect: "an http(s) URL",
              doc: "URL of the issuer directory (/.well-known/private-token-issuer-directory).",
            },
            keyLifetimeSec: {
              kind: "int",
              default: DEFAULTS.keyLifetimeSec,
              min: 60,
              doc: "How long after its not-before a token key is trusted (shared with the issuer).",
            },
            keyFile: {
              kind: "string",
              optional: true,
              doc: "The issuer's key file, when the same operator runs issuer and gateway: its type 1 and type 5 (VOPRF) private keys let the gate verify type 1 and type 5 tokens.",
            },
            tokenType: {
              kind: "string",
              optional: true,
              oneOf: ["arc"],
              doc: "arc: an ARC issuer (token type 0xE5AC, rate-limited credentials); needs rateLimit and keys.",
            },
            rateLimit: {
              kind: "int",
              optional: true,
              min: 2,
              max: 0xffffffff,
              doc: "ARC: presentations (uploads) one credential allows per presentation context (the challenge's rate-limit).",
            },
            keys: {
              kind: "string",
              optional: true,
              doc: "ARC: the issuer's key file, or a copy, with its ARC private keys (mode 0600; re-read when it changes, so the gate follows rotation).",
            },
            redemptionContext: {
              kind: "string",
              optional: true,
              oneOf: ["task-epoch", "epoch", "none"],
              doc: "ARC (default task-epoch): the limit counts per DAP task and epoch, per epoch, or per issuer key.",
            },
            credentialContext: {
              kind: "string",
              optional: true,
              oneOf: ["epoch", "none"],
              doc: "ARC (default none): epoch binds credentials to the epoch (clients fetch one per epoch); none binds them to the issuer key.",
            },
          },
        },
      },
      store: {
        kind: "string",
        default: DEFAULTS.tokenStore,
        pattern: STORE,
        expect: "memory, sqlite:PATH or redis://HOST:PORT",
        doc: "Spent-token (nonce) store.",
      },
      storeDurability: {
        kind: "string",
        default: "verify",
        oneOf: ["verify", "trust"],
        doc: "Redis store: verify refuses to start unless Redis keeps spent tokens (maxmemory-policy noeviction, appendonly yes, read with CONFIG GET); trust skips that check.",
      },
      originInfo: {
        kind: "string",
        default: "authority",
        oneOf: ["authority", "empty"],
        doc: "origin_info of challenges: authority names the target the client addressed (RFC 9577 §2.1); empty makes tokens good for every target.",
      },
      redemptionContext: {
        kind: "string",
        default: "empty",
        oneOf: ["empty", "epoch"],
        doc: "Redemption context of challenges: empty, or derived from the time epoch (tokens of the current and previous epoch accepted).",
      },
      epochSec: { kind: "int", default: DEFAULTS.epochSec, min: 60, doc: "Epoch length for epoch redemption contexts." },
      epochSecretFile: {
        kind: "string",
        optional: true,
        doc: "File with a secret (32+ bytes, mode 0600) keying epoch contexts, the same on every gateway; without it contexts are an unkeyed hash of the epoch.",
      },
      clockSkewSec: {
        kind: "int",
        default: DEFAULTS.clockSkewSec,
        min: 0,
        doc: "Spent nonces are kept this long past their key's lifetime or epoch (clock differences between gateways).",
      },
      greaseProbability: {
        kind: "number",
        default: DEFAULTS.greaseProbability,
        min: 0,
        max: 1,
        doc: "Probability that a 401 also carries a challenge of a reserved token type (RFC 9577 §4.1 greasing).",
      },
      maxReportsPerToken: {
        kind: "int",
        default: DEFAULTS.maxReportsPerToken,
        min: 1,
        doc: "Most reports one DAP-18 upload may carry (one token pays for one upload; more get 413 GATEWAY_ERR_TOO_MANY_REPORTS).",
      },
    },
  },
  upstream: {
    kind: "object",
    doc: "Forwarding to the targets (undici).",
    fields: {
      connectTimeoutMs: { kind: "int", default: DEFAULTS.connectTimeoutMs, min: 1, doc: "TCP/TLS connect timeout." },
      headersTimeoutMs: { kind: "int", default: DEFAULTS.headersTimeoutMs, min: 1, doc: "Time until the target's response headers." },
      bodyTimeoutMs: { kind: "int", default: DEFAULTS.bodyTimeoutMs, min: 1, doc: "Longest gap between response body chunks." },
      totalTimeoutMs: { kind: "int", default: DEFAULTS.totalTimeoutMs, min: 1, doc: "Deadline of the whole upstream exchange." },
      maxResponseBytes: { kind: "int", default: DEFAULTS.maxResponseBytes, min: 1, doc: "Largest target answer (502 above it)." },
      connectionsPerTarget: { kind: "int", default: DEFAULTS.connectionsPerTarget, min: 1, doc: "Pooled keep-alive connections per target." },
      keepAliveTimeoutMs: { kind: "int", default: DEFAULTS.upstreamKeepAliveMs, min: 1, doc: "Idle time before a pooled connection closes." },
      ca: { kind: "string", optional: true, doc: "PEM file of extra CAs for https targets." },
    },
  },
  inner: {
    kind: "object",
    doc: "Decoding limits of the inner Binary HTTP request.",
    fields: {
      maxFields: { kind: "int", default: DEFAULTS.maxInnerFields, min: 1, doc: "Most header plus trailer fields." },
      maxFieldBytes: { kind: "int", default: DEFAULTS.maxInnerFieldBytes, min: 64, doc: "Largest single field (name plus value)." },
      padToBytes: {
        kind: "int",
        default: 0,
        min: 0,
        doc: "Pad every inner response with zero bytes to a multiple of this many bytes (RFC 9292 §3.8), so its length says less; 0: no padding.",
      },
    },
  },
  chunked: {
    kind: "object",
    doc: "Chunked OHTTP (message/ohttp-chunked-req, draft-ietf-ohai-chunked-ohttp-08): streamed chunk by chunk.",
    fields: {
      maxRequestBytes: {
        kind: "int",
        default: DEFAULTS.maxChunkedRequestBytes,
        min: 1,
        doc: "Most bytes of one chunked request, counted as they arrive (413 above it); DAP uploads are still held whole and capped by limits.maxRequestBytes.",
      },
      maxChunkBytes: {
        kind: "int",
        default: DEFAULTS.maxChunkBytes,
        min: 16384,
        doc: "Largest chunk accepted (plaintext bytes; the draft requires at least 16384).",
      },
      chunkTimeoutMs: { kind: "int", default: DEFAULTS.chunkTimeoutMs, min: 1, doc: "Longest wait for the next bytes of a chunked request." },
    },
  },
  replay: {
    kind: "object",
    doc: "RFC 9458 §6.5 replay protection by Date: inner requests must carry a Date within the window, and each encapsulation is accepted once.",
    fields: {
      windowSec: {
        kind: "int",
        default: 0,
        min: 0,
        doc: "Accepted distance between the inner Date and the gateway's clock, each way (0: off; at least 2, the Date's granularity). The encapsulations seen are kept in tokens.store.",
      },
    },
  },
  cors: corsSchema("GET /ohttp-keys"),
  logLevel: { kind: "string", default: "info", oneOf: ["fatal", "error", "warn", "info", "debug", "trace", "silent"], doc: "Log level." },
} as const satisfies Schema;

/** The gateway's configuration, as GATEWAY_SCHEMA defines it (server/config.ts says how to add a field). */
export type GatewayConfig = ConfigOf<typeof GATEWAY_SCHEMA>;
export type PolicyName = GatewayConfig["policy"];
export type TokensConfig = GatewayConfig["tokens"];
export type TokenIssuerConfig = TokensConfig["issuers"][number];
export type UpstreamConfig = GatewayConfig["upstream"];
/**
 * One entry of `targets`: the upstream base URL (a DAP-09 target), or `{ upstream, dap }` naming
 * the DAP draft the target speaks ("09" or "18").
 */
export type TargetConfig = GatewayConfig["targets"][string];
/** Chunked OHTTP requests (draft-ietf-ohai-chunked-ohttp-08): streamed, never held whole. */
export type ChunkedConfig = GatewayConfig["chunked"];

/** Checks what the schema cannot: cross-field rules. */
function checkGatewayConfig(c: GatewayConfig): GatewayConfig {
  if (c.tokens.required && c.tokens.issuers.length === 0) {
    throw new ProtocolError("CFG_ERR_INVALID", "tokens.issuers: at least one issuer is needed when tokens.required is true");
  }
  if (c.replay.windowSec === 1) {
    throw new ProtocolError("CFG_ERR_INVALID", "replay.windowSec: expected 0 (off) or at least 2 (Date has a granularity of one second)");
  }
  if (c.retiredKeyGraceSec < 2 * c.keysMaxAgeSec) {
    throw new ProtocolError(
      "CFG_ERR_INVALID",
      `retiredKeyGraceSec: expected at least twice keysMaxAgeSec (${2 * c.keysMaxAgeSec}), or clients holding a cached key config fail`,
    );
  }
  c.tokens.issuers.forEach((i, n) => {
    const arcOnly = (["rateLimit", "keys", "redemptionContext", "credentialContext"] as const).filter((f) => i[f] !== undefined);
    if (i.tokenType === "arc" && (i.rateLimit === undefined || i.keys === undefined)) {
      throw new ProtocolError("CFG_ERR_INVALID", `tokens.issuers[${n}]: an ARC issuer needs rateLimit and keys`);
    }
    if (i.tokenType !== "arc" && arcOnly.length > 0) {
      throw new ProtocolError("CFG_ERR_INVALID", `tokens.issuers[${n}].${arcOnly[0]}: only for "tokenType": "arc"`);
    }
  });
  for (const [key, target] of Object.entries(c.targets)) {
    try {
      new URL(key);
      new URL(typeof target === "string" ? target : target.upstream);
    } catch {
      throw new ProtocolError("CFG_ERR_INVALID", `targets.${JSON.stringify(key)}: not a valid URL`);
    }
  }
  return c;
}

/** Validates a parsed JSON config (no environment), e.g. in tests. */
export function parseGatewayConfig(raw: unknown, env?: Readonly<Record<string, string | undefined>>): GatewayConfig {
  return checkGatewayConfig(
    parseConfig(GATEWAY_SCHEMA, raw, env === undefined ? {} : { env, envPrefix: "VEIL_GATEWAY_" }),
  );
}

/** `veil gateway --config FILE`: the file plus VEIL_GATEWAY_* environment overrides. */
export function loadGatewayConfig(file: string | undefined): GatewayConfig {
  return checkGatewayConfig(loadConfig(GATEWAY_SCHEMA, file, { env: process.env, envPrefix: "VEIL_GATEWAY_" }));
}
