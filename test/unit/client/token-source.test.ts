// createTokenSource's batched issuance against the real issuer (issuer/app.ts with its attester,
// listening on loopback): one request for a whole batch; the fallback to single requests when
// the issuer answers the batch media type with 415 or 404 (a small real HTTP front that refuses
// the batch media types and passes everything else to the real issuer); and a 206 whose absent
// entries (the quota allowed fewer) yield only the issued tokens, the client asking again later.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createTokenSource, type TokenSource } from "../../../client/index.js";
import { decodeToken, encodeTokenChallenge, formatWwwAuthenticate, MEDIA_TYPES, TOKEN_TYPE } from "../../../core/privacypass/index.js";
import { importBlindRsaTokenKey, verifyToken } from "../../../core/privacypass/verify-node.js";
import { CREDENTIAL, makeIssuer, tempDir, type IssuerFixture } from "../../helpers/issuer.js";
import { readBody } from "../../../demo/dap-double.js";

const UPLOAD = new URL("https://leader.example/tasks/abc/reports");

let tmp: ReturnType<typeof tempDir>;
let issuer: IssuerFixture;
let issuerUrl: string;
/** Content-Type of every POST /token-request the real issuer received, in order. */
let received: string[];
let front: Server | undefined;
const sources: TokenSource[] = [];

async function startIssuer(tokensPerWindow: number): Promise<void> {
  issuer = await makeIssuer(tmp.dir, { attester: { credentials: [CREDENTIAL], tokensPerWindow, windowSec: 3600 } });
  received = [];
  issuer.app.server.on("request", (req: IncomingMessage) => {
    if (req.method === "POST") received.push(String(req.headers["content-type"]));
  });
  await issuer.app.listen({ host: "127.0.0.1", port: 0 });
  issuerUrl = `http://127.0.0.1:${(issuer.app.server.address() as AddressInfo).port}`;
}

/** An issuer of before batched issuance: the batch media types get `status`, the rest reaches the real issuer. */
async function startFront(status: 404 | 415): Promise<string> {
  const batchTypes = new Set<string>([MEDIA_TYPES.genericBatchRequest, MEDIA_TYPES.amortizedBatchRequest]);
  front = createServer((req, res) => {
    void (async () => {
      const body = await readBody(req, 1024 * 1024);
      if (batchTypes.has(String(req.headers["content-type"]))) {
        res.writeHead(status, { "content-type": "application/problem+json" }).end(JSON.stringify({ title: "unsupported", status }));
        return;
      }
      const headers: Record<string, string> = {};
      for (const name of ["content-type", "authorization", "accept"]) {
        const v = req.headers[name];
        if (typeof v === "string") headers[name] = v;
      }
      const answer = await fetch(issuerUrl + req.url, { method: req.method ?? "GET", headers, ...(body.length > 0 ? { body: new Uint8Array(body) } : {}) });
      const out = Buffer.from(await answer.arrayBuffer());
      res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/octet-stream" }).end(out);
    })().catch(() => res.destroy());
  });
  await new Promise<void>((r) => front!.listen(0, "127.0.0.1", r));
  return `http://127.0.0.1:${(front.address() as AddressInfo).port}`;
}

/** A token source for `url` that has learned the gateway's type 2 challenge for UPLOAD. */
async function source(url: string, batch: number): Promise<TokenSource> {
  const t = createTokenSource({ issuer: url, credential: CREDENTIAL, batch, lowWater: 0, refillJitterMs: 0 });
  sources.push(t);
  const key = currentKey();
  const challenge = encodeTokenChallenge({ tokenType: TOKEN_TYPE.BLIND_RSA_2048, issuerName: "issuer.example", redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] });
  await t.learn(UPLOAD, formatWwwAuthenticate([{ challenge, tokenKey: key }]));
  return t;
}

function currentKey(): Uint8Array {
  const k = issuer.keys.published().find((key) => key.tokenType === TOKEN_TYPE.BLIND_RSA_2048 && key.notBefore <= issuer.keys.nowSec());
  return k!.tokenKey;
}

/** Takes `n` tokens and checks each one's signature with the issuer's key; the distinct nonces. */
async function takeVerified(t: TokenSource, n: number): Promise<Set<string>> {
  const key = importBlindRsaTokenKey(currentKey());
  const nonces = new Set<string>();
  for (let i = 0; i < n; i++) {
    const token = decodeToken((await t.take(UPLOAD))!);
    expect(verifyToken(token, key)).toBe(true);
    nonces.add(Buffer.from(token.nonce).toString("hex"));
  }
  return nonces;
}

beforeEach(() => {
  tmp = tempDir();
  front = undefined;
});
afterEach(async () => {
  for (const t of sources.splice(0)) t.close();
  if (front !== undefined) await new Promise((r) => front!.close(r));
  await issuer.app.close();
  tmp.remove();
});

describe("token source: batched issuance against the real issuer", () => {
  it("fetches a batch of 8 type 2 tokens in one generic batch request", async () => {
    await startIssuer(100);
    const t = await source(issuerUrl, 8);
    await t.fill(UPLOAD);
    expect(received).toEqual([MEDIA_TYPES.genericBatchRequest]);
    expect(t.stats()).toMatchObject({ stock: 8, issued: 8, failures: 0 });
    expect((await takeVerified(t, 8)).size).toBe(8);
    expect(received.length).toBe(1);
  });

  it.each([415, 404] as const)("falls back to single requests when the issuer answers the batch with %i, and stays with them", async (status) => {
    await startIssuer(100);
    const t = await source(await startFront(status), 4);
    await t.fill(UPLOAD);
    // The batch never reached the issuer (the front refused it); four single requests did.
    expect(received).toEqual(Array<string>(4).fill(MEDIA_TYPES.tokenRequest));
    expect(t.stats()).toMatchObject({ stock: 4, issued: 4, failures: 0 });
    expect((await takeVerified(t, 4)).size).toBe(4);
    // The next batch goes straight to single requests: no second batched attempt.
    await takeVerified(t, 1);
    expect(received).toEqual(Array<string>(8).fill(MEDIA_TYPES.tokenRequest));
  });

  it("keeps only the issued tokens of a 206 (quota of 5 for a batch of 8) and asks again once they are used", async () => {
    await startIssuer(5);
    const t = await source(issuerUrl, 8);
    await t.fill(UPLOAD);
    // One request; the issuer left 3 entries absent: no retry within the same batch.
    expect(received).toEqual([MEDIA_TYPES.genericBatchRequest]);
    expect(t.stats()).toMatchObject({ stock: 5, issued: 5, failures: 0 });
    expect((await takeVerified(t, 5)).size).toBe(5);
    expect(received.length).toBe(1);
    // The quota is used: the next take asks again and gets the issuer's 429.
    await expect(t.take(UPLOAD)).rejects.toMatchObject({ code: "CLIENT_ERR_QUOTA_EXHAUSTED" });
    expect(received).toEqual([MEDIA_TYPES.genericBatchRequest, MEDIA_TYPES.genericBatchRequest]);
    // A new window: the client's next take gets a new batch.
    issuer.clock.advance(3600);
    expect((await takeVerified(t, 1)).size).toBe(1);
    expect(received).toEqual([MEDIA_TYPES.genericBatchRequest, MEDIA_TYPES.genericBatchRequest, MEDIA_TYPES.genericBatchRequest]);
    expect(t.stats().stock).toBe(4);
  });
});
