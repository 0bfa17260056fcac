import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { toBhttpRequest, toOutgoingRequest, toResponse } from "../../../client/messages.js";
import { isLoopbackHost, secureUrl } from "../../../client/options.js";
import { createObliviousFetch, createTokenSource } from "../../../client/index.js";
import { ProtocolError } from "../../../core/errors.js";
import { startStandIn, type StandIn } from "../../helpers/client-stand-in.js";

describe("client messages", () => {
  it("drops hop-by-hop and framing fields but keeps the rest, lowercased", async () => {
    const r = await toOutgoingRequest("https://a.example/p?q=1", {
      method: "PUT",
      headers: { Connection: "keep-alive", "Keep-Alive": "5", TE: "trailers", Upgrade: "h2c", Expect: "100-continue", "Content-Type": "x/y", "X-A": "1" },
      body: new Uint8Array([1]),
    });
    expect(r.headers).toEqual([
      ["content-type", "x/y"],
      ["x-a", "1"],
    ]);
    const b = toBhttpRequest(r, [["authorization", "PrivateToken token=\"x\""]]);
    expect(b).toMatchObject({ method: "PUT", scheme: "https", authority: "a.example", path: "/p?q=1" });
    expect(b.headers.at(-1)).toEqual(["authorization", 'PrivateToken token="x"']);
  });

  it("refuses URLs that are not http(s) and requests fetch itself would refuse", async () => {
    await expect(toOutgoingRequest("ftp://a.example/", undefined)).rejects.toMatchObject({ code: "HTTP_ERR_BAD_REQUEST" });
    await expect(toOutgoingRequest("not a url", undefined)).rejects.toMatchObject({ code: "HTTP_ERR_BAD_REQUEST" });
    await expect(toOutgoingRequest("https://a.example/", { method: "GET", body: "x" })).rejects.toMatchObject({ code: "HTTP_ERR_BAD_REQUEST" });
  });

  it("turns an inner answer into a Response: no body for 204/304, an error for a 1xx final status", async () => {
    const none = toResponse({ informational: [{ status: 103, headers: [] }], status: 304, headers: [["etag", '"x"']], body: new Uint8Array(0), trailers: [] });
    expect(none.status).toBe(304);
    expect(none.body).toBeNull();
    expect(none.headers.get("etag")).toBe('"x"');
    expect(() => toResponse({ informational: [], status: 101, headers: [], body: new Uint8Array(0), trailers: [] })).toThrow(ProtocolError);
    const multi = toResponse({ informational: [], status: 200, headers: [["vary", "a"], ["vary", "b"]], body: new Uint8Array([7]), trailers: [] });
    expect(multi.headers.get("vary")).toBe("a, b");
    expect(new Uint8Array(await multi.arrayBuffer())).toEqual(new Uint8Array([7]));
  });
});

describe("client options", () => {
  it("treats only loopback names and addresses as loopback", () => {
    for (const h of ["127.0.0.1", "127.9.8.7", "localhost", "a.localhost", "[::1]", "::1"]) expect(isLoopbackHost(h)).toBe(true);
    for (const h of ["128.0.0.1", "localhost.example", "10.0.0.1", "[::2]", "127.0.0.1.example"]) expect(isLoopbackHost(h)).toBe(false);
    expect(secureUrl("relay", "http://[::1]:8080/r").port).toBe("8080");
    expect(() => secureUrl("relay", "http://10.0.0.1/r")).toThrow(/relay: must be an https URL/);
  });

  it("checks the token source's options and names the one that is wrong", () => {
    expect(() => createTokenSource({ issuer: "http://issuer.example", credential: "c" })).toThrow(/issuer: must be an https URL/);
    expect(() => createTokenSource({ issuer: "https://issuer.example", credential: "a b" })).toThrow(/credential/);
    expect(() => createTokenSource({ issuer: "https://issuer.example", credential: "c", batch: 0 })).toThrow(/batch/);
    expect(() => createTokenSource({ issuer: "https://issuer.example", credential: "c", batch: 3, lowWater: 3 })).toThrow(/lowWater/);
  });

  it("never shows the credential when the token source is printed", () => {
    const t = createTokenSource({ issuer: "https://issuer.example", credential: "very-secret-credential" });
    expect(JSON.stringify(t)).not.toContain("very-secret");
    expect(String(Object.values(t))).not.toContain("very-secret");
  });
});

describe("client key cache", () => {
  let s: StandIn;
  beforeEach(async () => {
    s = await startStandIn();
    s.tokensRequired = false;
  });
  afterEach(async () => s.close());

  it("refetches the key configurations once their max-age has passed, and keeps the last good ones if that fails", async () => {
    let now = 1_000_000;
    const f = createObliviousFetch({ relay: s.relayUrl, keys: s.keysUrl, now: () => now, retryDelayMs: 0 });
    await f("https://t.example/a");
    now += 3599_000;
    await f("https://t.example/b");
    expect(s.keysFetches).toBe(1);
    now += 2_000;
    await f("https://t.example/c");
    expect(s.keysFetches).toBe(2);
    // The gateway's key endpoint breaks: the cached keys still work.
    s.keysBytes = new Uint8Array([0, 1, 0]);
    now += 3601_000;
    expect((await f("https://t.example/d")).status).toBe(201);
    expect(s.keysFetches).toBe(3);
  });
});
