// Counterexamples found by the fuzzing properties (test/prop/, `npm run fuzz`), kept as fixed
// regression tests: each was a real bug before its fix.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ProtocolError } from "../../core/errors.js";
import { parseIssuerConfig } from "../../issuer/config.js";
import { parseRelayConfig } from "../../relay/config.js";
import { readConfigFile } from "../../server/config.js";
import { createObliviousFetch, createTokenSource, type FetchLike } from "../../client/index.js";
import { encodeTokenChallenge, formatWwwAuthenticate } from "../../core/privacypass/index.js";
import { directoryDocument, makeBlindRsaIssuerKey } from "../helpers/tokens.js";

function refusal(f: () => unknown): ProtocolError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ProtocolError);
    return e as ProtocolError;
  }
  throw new Error("accepted");
}

describe("configuration (test/prop/config.prop.test.ts)", () => {
  it("never quotes a secret that sits inside a value of the wrong type", () => {
    // seed 49394: a credential wrapped in a list was printed as `got ["cred-..."]`.
    const issuer = refusal(() =>
      parseIssuerConfig({ name: "issuer.example", attester: { credentials: [["cred-S3cretValue-9f1c"], "second"] } }),
    );
    expect(issuer.code).toBe("CFG_ERR_INVALID");
    expect(issuer.message).toContain("attester.credentials[0]");
    expect(issuer.message).not.toContain("S3cret");
    const relay = refusal(() =>
      parseRelayConfig({ routes: [{ path: "/r", gateway: "http://127.0.0.1:1/gateway", authHeader: { name: "authorization", value: ["Bearer S3cret"] } }] }),
    );
    expect(relay.message).toContain("routes[0].authHeader.value");
    expect(relay.message).not.toContain("S3cret");
    // A wrong-typed parent is described by its kind only: it may hold a secret further down.
    const parent = refusal(() => parseRelayConfig({ routes: [[{ path: "/r", gateway: "http://x", authHeader: { name: "a", value: "S3cret" } }]] }));
    expect(parent.message).toBe("routes[0]: expected an object, got a list");
  });

  it("refuses a gateway URL that matches the pattern but is no URL with CFG_ERR_INVALID, not a TypeError", () => {
    // `{"kind":"replace","value":"http://["}` on routes[0].gateway threw TypeError: Invalid URL.
    for (const route of [
      { path: "/r", gateway: "http://[" },
      { path: "/r", gateway: "http://127.0.0.1:1/gateway", keys: "http://[" },
    ]) {
      const e = refusal(() => parseRelayConfig({ routes: [route] }));
      expect(e.code).toBe("CFG_ERR_INVALID");
      expect(e.message).toMatch(/^routes\[0\]\.(gateway|keys): not a valid URL$/);
    }
  });

  it("does not quote the text of a config file that is not valid JSON", () => {
    // V8's JSON.parse message quoted `..."entials":[cred-S3cre"...` of a file with a missing quote.
    const dir = mkdtempSync(join(tmpdir(), "veil-regress-"));
    try {
      const file = join(dir, "issuer.json");
      writeFileSync(file, '{"name":"issuer.example","attester":{"credentials":[cred-S3cretValue-9f1c"]}}');
      const e = refusal(() => readConfigFile(file));
      expect(e.code).toBe("CFG_ERR_INVALID");
      expect(e.message).toContain(file);
      expect(e.message).not.toContain("S3cret");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("client library (test/prop/client.prop.test.ts)", () => {
  const rejection = async (p: Promise<unknown>): Promise<ProtocolError> => {
    const e = await p.then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(ProtocolError);
    return e as ProtocolError;
  };

  it("reports an undecodable /ohttp-keys answer as CLIENT_ERR_KEYS_UNAVAILABLE, not core's OHTTP_ERR_KEY_CONFIG", async () => {
    // Counterexample: an empty 200 application/ohttp-keys body.
    const fetch: FetchLike = async () => new Response(new Uint8Array(0), { headers: { "content-type": "application/ohttp-keys" } });
    const f = createObliviousFetch({ relay: "https://relay.example/gw", keys: "https://gateway.example/ohttp-keys", fetch, retries: 0 });
    expect((await rejection(f.keys())).code).toBe("CLIENT_ERR_KEYS_UNAVAILABLE");
  });

  it("reports an undecodable token response as CLIENT_ERR_ISSUER_FAILED, not core's PP_ERR_TRUNCATED", async () => {
    // Counterexample: an empty 200 application/private-token-response body.
    const key = makeBlindRsaIssuerKey({ reuse: 0 });
    const directory = directoryDocument([{ key, notBeforeSec: 1 }], "https://issuer.example/token-request");
    const fetch: FetchLike = async (url) =>
      String(url).endsWith("/token-request")
        ? new Response(new Uint8Array(0), { headers: { "content-type": "application/private-token-response" } })
        : new Response(new Uint8Array(directory), { headers: { "content-type": "application/private-token-issuer-directory" } });
    const tokens = createTokenSource({ issuer: "https://issuer.example", credential: "c", fetch, batch: 1, refillJitterMs: 0 });
    const upload = new URL("https://leader.example/tasks/AAAA/reports");
    const challenge = encodeTokenChallenge({ tokenType: 2, issuerName: "issuer.example", redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] });
    await tokens.learn(upload, formatWwwAuthenticate([{ challenge, tokenKey: key.tokenKey }]));
    expect((await rejection(tokens.take(upload))).code).toBe("CLIENT_ERR_ISSUER_FAILED");
    tokens.close();
  });
});
