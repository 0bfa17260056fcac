// Properties of what the client library decodes from servers it does not control: the issuer's
// directory and token responses, the gateway's challenges (WWW-Authenticate), and whatever a relay
// sends back (any status, media type, random or mutated sealed bodies). With fake servers behind the
// library's `fetch` option: every call resolves, or rejects with a ProtocolError whose code is a
// CLIENT_ERR_* code; never a TypeError, RangeError or a library's own error.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { createObliviousFetch, createTokenSource, type FetchLike } from "../../client/index.js";
import { decodeRequest, encodeResponse } from "../../core/bhttp/index.js";
import { ProtocolError } from "../../core/errors.js";
import { decapsulateRequest, encodeKeyConfigs, generateGatewayKey } from "../../core/ohttp/index.js";
import { encodeTokenChallenge, formatWwwAuthenticate } from "../../core/privacypass/index.js";
import { fuzzParams, numRuns } from "../helpers/fuzz.js";
import { directoryDocument, makeBlindRsaIssuerKey } from "../helpers/tokens.js";

/**
 * Runs of the properties below in `npm run fuzz`: at most 20,000. Two long runs hung after some
 * 20,000-90,000 cases with the worker's main thread blocked in a futex (no CPU, timers dead, deaf
 * to SIGTERM): a native-level deadlock, not a JavaScript promise that never settles (the per-run
 * timeout never fired). The decoders these properties reach each get 100,000 cases in the core
 * properties (bhttp, ohttp, privacypass).
 */
const clientRuns = Math.min(numRuns, 20_000);

const ISSUER = "https://issuer.example";
const UPLOAD = new URL("https://leader.example/tasks/AAAA/reports");
const key = makeBlindRsaIssuerKey({ reuse: 0 });
const validDirectory = new TextDecoder().decode(directoryDocument([{ key, notBeforeSec: 1 }], `${ISSUER}/token-request`));
const validChallenge = formatWwwAuthenticate([
  {
    challenge: encodeTokenChallenge({ tokenType: 2, issuerName: "issuer.example", redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] }),
    tokenKey: key.tokenKey,
  },
]);

async function clientOutcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw new Error(`rejected with something other than a ProtocolError: ${String(e)}`, { cause: e });
    expect(e.code).toMatch(/^CLIENT_ERR_/);
    return e.code;
  }
}

function textMutation(base: string): fc.Arbitrary<string> {
  const junk = fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom('"', "{", "}", "[", "]", ",", ":", "null", "1e999", '"x"', "http://[", "https://evil.example"));
  return fc.tuple(fc.nat(), fc.nat({ max: 8 }), junk).map(([at, del, ins]) => {
    const i = at % (base.length + 1);
    return base.slice(0, i) + ins + base.slice(i + del);
  });
}

describe("token source against a hostile issuer and gateway", () => {
  it("learns a challenge or refuses it with a CLIENT_ERR, for any directory and any WWW-Authenticate", async () => {
    const header = fc.oneof(
      { weight: 3, arbitrary: fc.constant(validChallenge) },
      { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
      { weight: 2, arbitrary: textMutation(validChallenge) },
    );
    const directory = fc.oneof(
      { weight: 2, arbitrary: fc.constant(validDirectory) },
      { weight: 3, arbitrary: textMutation(validDirectory) },
      { weight: 1, arbitrary: fc.string({ maxLength: 100 }) },
    );
    await fc.assert(
      fc.asyncProperty(header, directory, fc.constantFrom(200, 200, 404, 500), async (h, dir, status) => {
        const fetch: FetchLike = async () => new Response(dir, { status, headers: { "content-type": "application/private-token-issuer-directory" } });
        const tokens = createTokenSource({ issuer: ISSUER, credential: "c", fetch, refillJitterMs: 0 });
        await clientOutcome(tokens.learn(UPLOAD, h));
        tokens.close();
      }),
      // A run that hangs fails with its input instead of stalling the suite.
      { ...fuzzParams(0xc11e01, clientRuns), timeout: 10_000 },
    );
  });

  it("gets a token or fails with CLIENT_ERR_ISSUER_FAILED for any token response", async () => {
    const answer = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      fc.uint8Array({ minLength: 256, maxLength: 256 }),
      fc.constant(new Uint8Array(256).fill(0)),
      fc.constant(new Uint8Array(256).fill(0xff)),
    );
    await fc.assert(
      fc.asyncProperty(answer, fc.constantFrom(200, 200, 200, 401, 422, 429, 500), fc.constantFrom("application/private-token-response", "text/plain"), async (body, status, type) => {
        const fetch: FetchLike = async (url) =>
          String(url).endsWith("/token-request")
            ? new Response(new Uint8Array(body), { status, headers: { "content-type": type } })
            : new Response(validDirectory, { headers: { "content-type": "application/private-token-issuer-directory" } });
        const tokens = createTokenSource({ issuer: ISSUER, credential: "c", fetch, batch: 1, refillJitterMs: 0 });
        await tokens.learn(UPLOAD, validChallenge);
        const outcome = await clientOutcome(tokens.take(UPLOAD));
        // Random bytes are never a valid blind signature.
        if (status === 200 && type === "application/private-token-response") expect(outcome).toBe("CLIENT_ERR_ISSUER_FAILED");
        tokens.close();
      }),
      // Each run blinds a token request with the stock blind RSA client (about 200 ms on this
      // machine): a hundredth of the runs (1,000 in `npm run fuzz`). decodeTokenResponse itself gets
      // 100,000 in test/prop/privacypass.prop.test.ts.
      { ...fuzzParams(0xc11e02, Math.max(10, Math.ceil(numRuns / 100))), timeout: 10_000 },
    );
  });
});

describe("key configurations from a hostile gateway", () => {
  it("loads keys or fails with a CLIENT_ERR for any /ohttp-keys answer", async () => {
    const { key: gatewayKey } = await generateGatewayKey(1);
    const valid = encodeKeyConfigs([gatewayKey.config]);
    const body = fc.oneof(
      fc.uint8Array({ maxLength: 120 }),
      fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })).map(([at, x]) => {
        const b = new Uint8Array(valid);
        b[at % b.length]! ^= x;
        return b;
      }),
      fc.nat().map((n) => valid.subarray(0, n % valid.length)),
    );
    await fc.assert(
      fc.asyncProperty(body, fc.constantFrom(200, 200, 404, 500), async (b, status) => {
        const fetch: FetchLike = async () => new Response(new Uint8Array(b), { status, headers: { "content-type": "application/ohttp-keys" } });
        const f = createObliviousFetch({ relay: "https://relay.example/gw", keys: "https://gateway.example/ohttp-keys", fetch, retries: 0 });
        await clientOutcome(f.keys());
      }),
      { ...fuzzParams(0xc11e04, clientRuns), timeout: 10_000 },
    );
  });
});

describe("oblivious fetch against a hostile relay", () => {
  it("resolves or rejects with a CLIENT_ERR for any status, media type and body, random or a mutated sealed answer", async () => {
    const { key: gatewayKey } = await generateGatewayKey(1);
    const keyring = new Map([[1, gatewayKey]]);
    const kind = fc.record({
      status: fc.constantFrom(200, 200, 200, 400, 401, 422, 429, 502, 503, 504),
      type: fc.constantFrom("message/ohttp-res", "message/ohttp-res", "application/problem+json", "text/html", ""),
      body: fc.oneof(
        fc.record({ sealed: fc.constant(true), flip: fc.option(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { nil: undefined }), cut: fc.option(fc.nat(), { nil: undefined }), innerStatus: fc.constantFrom(200, 201, 401, 500) }),
        fc.record({ sealed: fc.constant(false), bytes: fc.uint8Array({ maxLength: 200 }) }),
        fc.record({ sealed: fc.constant(false), bytes: fc.constant(new TextEncoder().encode('{"type":"https://iana.org/assignments/http-problem-types#ohttp-key","title":"x"}')) }),
      ),
    });
    await fc.assert(
      fc.asyncProperty(kind, async (k) => {
        const fetch: FetchLike = async (_url, init) => {
          let body: Uint8Array;
          if (k.body.sealed) {
            const { request, response } = await decapsulateRequest(keyring, new Uint8Array(await new Response(init.body as BodyInit).arrayBuffer()));
            decodeRequest(request);
            const sealed = await response.encapsulateResponse(encodeResponse({ informational: [], status: k.body.innerStatus, headers: [["content-type", "text/plain"]], body: new Uint8Array(3), trailers: [] }));
            body = new Uint8Array(sealed);
            if (k.body.flip !== undefined) body[k.body.flip[0] % body.length]! ^= k.body.flip[1];
            if (k.body.cut !== undefined) body = body.subarray(0, k.body.cut % body.length);
          } else {
            body = k.body.bytes;
          }
          return new Response(new Uint8Array(body), { status: k.status, headers: k.type === "" ? {} : { "content-type": k.type } });
        };
        const f = createObliviousFetch({ relay: "https://relay.example/gw", keys: encodeKeyConfigs([gatewayKey.config]), fetch, retries: 1, retryDelayMs: 0 });
        const outcome = await clientOutcome(f(new URL("https://leader.example/hpke_config"), { method: "GET" }).then((r) => r.arrayBuffer()));
        if (k.body.sealed && k.body.flip === undefined && k.body.cut === undefined && k.status === 200 && k.type === "message/ohttp-res") expect(outcome).toBe("ok");
      }),
      { ...fuzzParams(0xc11e03, clientRuns), timeout: 10_000 },
    );
  });
});
