// A small, fully scriptable stand-in for relay + gateway + token gate + issuer, in one node:http
// server, for the client library's unit tests. It uses the real core/ codecs and crypto (OHTTP,
// Binary HTTP, Privacy Pass) and the real issuer signer, but every answer can be scripted, so the
// tests can produce what real servers rarely do (unsealed 429/502, undecryptable answers, key
// rotation mid-flight, a gateway that drops a token's retry). End-to-end tests use the real servers.

import { createHash, generateKeyPairSync } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { decodeRequest, encodeResponse, type BhttpRequest, type BhttpResponse } from "../../core/bhttp/index.js";
import { equalBytes, toBase64Url, toHex } from "../../core/bytes.js";
import { OHTTP_KEY_PROBLEM, isProtocolError } from "../../core/errors.js";
import { decapsulateRequest, encodeKeyConfigs, generateGatewayKey, type GatewayKey } from "../../core/ohttp/index.js";
import {
  TOKEN_TYPE,
  decodeToken,
  decodeTokenRequest,
  encodeTokenChallenge,
  formatWwwAuthenticate,
  parseAuthorization,
  type TokenChallenge,
} from "../../core/privacypass/index.js";
import { importBlindRsaTokenKey, verifyToken } from "../../core/privacypass/verify-node.js";
import { createBlindRsaSigner, signTokenRequest, type BlindRsaSigner } from "../../issuer/signer.js";
import { readBody } from "../../demo/dap-double.js";

export interface InnerRecord {
  request: BhttpRequest;
  /** The token's nonce (hex), when the request carried a good token. */
  nonce: string | undefined;
  /** "none" | "accepted" | "retry" | "refused" */
  token: string;
}

export type UnsealedAnswer = { status: number; headers?: Record<string, string>; body?: string };

export interface StandIn {
  url: string;
  /** The relay resource (POST) */
  relayUrl: string;
  /** The gateway's key configurations (GET) */
  keysUrl: string;
  /** The relay's copy (GET) */
  relayKeysUrl: string;
  issuerUrl: string;
  /** The key configs the gateway serves. */
  keysBytes: Uint8Array;
  /** What the relay serves as its copy (undefined: the same bytes as the gateway). */
  relayKeysBytes: Uint8Array | undefined;
  /** Gateway keys that decrypt (by key id). */
  keyring: Map<number, GatewayKey>;
  /** The target: answers inner requests that passed the gate. */
  handler: (req: BhttpRequest) => BhttpResponse | Promise<BhttpResponse>;
  /** Unsealed answers the relay gives before anything else, one per POST, in order. */
  unsealed: UnsealedAnswer[];
  /** Sealed answers given instead of the target's (after the gate), one per request, in order. */
  sealed: BhttpResponse[];
  /** Delay (ms) before the relay answers a POST. */
  relayDelayMs: number;
  /** Token gate on for PUT/POST (the default) */
  tokensRequired: boolean;
  /** The gate refuses every token (as if its issuer keys were gone). */
  refuseTokens: boolean;
  /** origin_info of the challenge: the request's authority (default), a fixed list, or empty. */
  originInfo: "authority" | string[];
  /** Credentials the issuer accepts, and its per-credential quota. */
  credentials: Set<string>;
  quota: number;
  issued: Map<string, number>;
  /** Everything the relay / gateway / issuer saw. */
  inner: InnerRecord[];
  relayPosts: { headers: IncomingMessage["headers"]; bytes: number }[];
  keysFetches: number;
  relayKeysFetches: number;
  directoryFetches: number;
  tokenRequests: { authorization: string | undefined }[];
  /** Batched token requests answered 415 (this stand-in issues single tokens only). */
  batchRefusals: number;
  signer: BlindRsaSigner;
  issuerName: string;
  challengeFor(authority: string): Uint8Array;
  /** Replaces the gateway key (rotation): the old key id stops decrypting. */
  rotateKey(keyId: number): Promise<void>;
  close(): Promise<void>;
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "application/problem+json", ...headers });
  res.end(JSON.stringify(body));
}

let cachedSigner: BlindRsaSigner | undefined;

export function problem(status: number, title: string, headers: [string, string][] = []): BhttpResponse {
  return {
    informational: [],
    status,
    headers: [["content-type", "application/problem+json"], ...headers],
    body: new TextEncoder().encode(JSON.stringify({ type: `urn:test:${status}`, title, status })),
    trailers: [],
  };
}

export function ok(status = 200, body: Uint8Array | string = "", headers: [string, string][] = []): BhttpResponse {
  return {
    informational: [],
    status,
    headers,
    body: typeof body === "string" ? new TextEncoder().encode(body) : body,
    trailers: [],
  };
}

export async function startStandIn(): Promise<StandIn> {
  const { key } = await generateGatewayKey(1);
  // RSA-2048 generation takes a while: one issuer key per test process.
  cachedSigner ??= createBlindRsaSigner(generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey);
  const signer = cachedSigner;
  const verifyKey = importBlindRsaTokenKey(signer.tokenKey);
  const nonces = new Map<string, string>();

  const s = {
    keysBytes: encodeKeyConfigs([key.config]),
    relayKeysBytes: undefined,
    keyring: new Map([[1, key]]),
    handler: () => ok(201),
    unsealed: [],
    sealed: [],
    relayDelayMs: 0,
    tokensRequired: true,
    refuseTokens: false,
    originInfo: "authority",
    credentials: new Set(["good-credential"]),
    quota: 1000,
    issued: new Map(),
    inner: [],
    relayPosts: [],
    keysFetches: 0,
    relayKeysFetches: 0,
    directoryFetches: 0,
    tokenRequests: [],
    batchRefusals: 0,
    signer,
    issuerName: "issuer.test",
    challengeFor(authority: string): Uint8Array {
      const c: TokenChallenge = {
        tokenType: TOKEN_TYPE.BLIND_RSA_2048,
        issuerName: s.issuerName,
        redemptionContext: new Uint8Array(0),
        originInfo: s.originInfo === "authority" ? [authority] : s.originInfo,
      };
      return encodeTokenChallenge(c);
    },
    async rotateKey(keyId: number) {
      const { key: k } = await generateGatewayKey(keyId);
      s.keyring = new Map([[keyId, k]]);
      s.keysBytes = encodeKeyConfigs([k.config]);
    },
  } as Omit<StandIn, "url" | "relayUrl" | "keysUrl" | "relayKeysUrl" | "issuerUrl" | "close">;

  /** The stand-in token gate: RFC 9577 checks plus a nonce bound to method + URL + body. */
  function gate(req: BhttpRequest): { answer?: BhttpResponse; record: InnerRecord } {
    const record: InnerRecord = { request: req, nonce: undefined, token: "none" };
    if (!s.tokensRequired || req.method === "GET") return { record };
    const challenge = s.challengeFor(req.authority);
    const refuse = (why: string): { answer: BhttpResponse; record: InnerRecord } => ({
      answer: problem(401, why, [["www-authenticate", formatWwwAuthenticate([{ challenge, tokenKey: signer.tokenKey }])]]),
      record,
    });
    const auth = req.headers.find(([n]) => n === "authorization")?.[1];
    if (auth === undefined) return refuse("token missing");
    const bytes = parseAuthorization(auth);
    if (bytes === undefined) return refuse("token malformed");
    record.token = "refused";
    if (s.refuseTokens) return refuse("token key not trusted");
    let token;
    try {
      token = decodeToken(bytes);
    } catch {
      return refuse("token malformed");
    }
    const digest = new Uint8Array(createHash("sha256").update(challenge).digest());
    if (!equalBytes(token.challengeDigest, digest)) return refuse("token for another challenge");
    if (!verifyToken(token, verifyKey)) return refuse("bad signature");
    const nonce = toHex(token.nonce);
    const reqDigest = createHash("sha256")
      .update(`${req.method} ${req.scheme}://${req.authority}${req.path}\n`)
      .update(req.body)
      .digest("hex");
    const prior = nonces.get(nonce);
    if (prior !== undefined && prior !== reqDigest) return refuse("token already spent");
    record.token = prior === undefined ? "accepted" : "retry";
    record.nonce = nonce;
    nonces.set(nonce, reqDigest);
    return { record };
  }

  async function onRelay(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req, 256 * 1024 * 1024);
    s.relayPosts.push({ headers: req.headers, bytes: body.length });
    if (s.relayDelayMs > 0) await new Promise((r) => setTimeout(r, s.relayDelayMs));
    const scripted = s.unsealed.shift();
    if (scripted !== undefined) {
      res.writeHead(scripted.status, scripted.headers ?? {});
      res.end(scripted.body ?? "");
      return;
    }
    if (req.headers["content-type"] !== "message/ohttp-req") return json(res, 415, { title: "media type" });
    let d;
    try {
      d = await decapsulateRequest(s.keyring, body);
    } catch (e) {
      if (isProtocolError(e) && (e.code === "OHTTP_ERR_KEY_UNKNOWN" || e.code === "OHTTP_ERR_SUITE_UNSUPPORTED")) {
        return json(res, 400, { type: OHTTP_KEY_PROBLEM, title: "Unknown key identifier" });
      }
      return json(res, 400, { title: "cannot decrypt" });
    }
    const inner = decodeRequest(d.request);
    const { answer, record } = gate(inner);
    s.inner.push(record);
    const response = answer ?? s.sealed.shift() ?? (await s.handler(inner));
    const sealed = await d.response.encapsulateResponse(encodeResponse(response));
    res.writeHead(200, { "content-type": "message/ohttp-res" });
    res.end(sealed);
  }

  async function onIssuer(path: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (path === "/.well-known/private-token-issuer-directory") {
      s.directoryFetches++;
      res.writeHead(200, { "content-type": "application/private-token-issuer-directory" });
      res.end(
        JSON.stringify({
          "issuer-request-uri": "/token-request",
          "token-keys": [{ "token-type": 2, "token-key": toBase64Url(signer.tokenKey), "not-before": 1 }],
        }),
      );
      return;
    }
    if (path === "/token-request" && req.method === "POST") {
      const body = await readBody(req, 256 * 1024 * 1024);
      // An issuer without batched issuance: the client falls back to single requests on 415.
      if (req.headers["content-type"] !== "application/private-token-request") {
        s.batchRefusals++;
        return json(res, 415, { title: "media type" });
      }
      const authorization = req.headers.authorization;
      s.tokenRequests.push({ authorization });
      const cred = /^Bearer (.+)$/.exec(authorization ?? "")?.[1];
      if (cred === undefined || !s.credentials.has(cred)) {
        return json(res, 401, { title: "credential" }, { "www-authenticate": "Bearer" });
      }
      const n = s.issued.get(cred) ?? 0;
      if (n >= s.quota) return json(res, 429, { title: "quota" }, { "retry-after": "3600" });
      s.issued.set(cred, n + 1);
      const response = signTokenRequest(signer, decodeTokenRequest(body));
      res.writeHead(200, { "content-type": "application/private-token-response" });
      res.end(response);
      return;
    }
    json(res, 404, { title: "not found" });
  }

  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const done = (p: Promise<void>): void => {
      p.catch((e: unknown) => {
        if (!res.headersSent) json(res, 500, { title: String(e) });
        else res.destroy();
      });
    };
    if (path === "/ohttp-keys") {
      s.keysFetches++;
      res.writeHead(200, { "content-type": "application/ohttp-keys", "cache-control": "max-age=3600" });
      res.end(s.keysBytes);
    } else if (path === "/relay/ohttp-keys") {
      s.relayKeysFetches++;
      res.writeHead(200, { "content-type": "application/ohttp-keys" });
      res.end(s.relayKeysBytes ?? s.keysBytes);
    } else if (path === "/relay" && req.method === "POST") {
      done(onRelay(req, res));
    } else if (path === "/token-request" || path.startsWith("/.well-known/")) {
      done(onIssuer(path, req, res));
    } else {
      json(res, 404, { title: "not found" });
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  return Object.assign(s as StandIn, {
    url,
    relayUrl: `${url}/relay`,
    keysUrl: `${url}/ohttp-keys`,
    relayKeysUrl: `${url}/relay/ohttp-keys`,
    issuerUrl: url,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  });
}
