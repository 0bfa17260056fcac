import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isProtocolError, type ProtocolError } from "../../../core/errors.js";
import type { BhttpRequest } from "../../../core/bhttp/index.js";
import { GREASE_TOKEN_TYPES, decodeTokenChallenge, formatAuthorization, parseWwwAuthenticate, type TokenChallenge } from "../../../core/privacypass/index.js";
import type { NonceStore } from "../../../core/privacypass/nonce-store.js";
import { importVoprfPrivateKey, importVoprfRistrettoPrivateKey } from "../../../core/privacypass/verify-node.js";
import { TokenGate, requestDigest, type TokenGateOptions } from "../../../gateway/gate.js";
import type { GateInput, GateTicket } from "../../../gateway/gate-contract.js";
import { TokenKeyDirectory, type DirectoryFetcher } from "../../../gateway/issuer-directory.js";
import { MemoryNonceStore, RedisNonceStore, SqliteNonceStore } from "../../../gateway/nonce-stores/index.js";
import { checkPolicy, compileTargets, resolveTarget } from "../../../gateway/policy.js";
import { startRedis, type TestRedis } from "../../helpers/redis.js";
import { directoryDocument, makeBlindRsaIssuerKey, makeToken, makeVoprfIssuerKey, makeVoprfRistrettoIssuerKey, type TestIssuerKey } from "../../helpers/tokens.js";

const T0 = 1_700_000_000_000;
const LIFETIME = 7 * 86_400;
const ISSUER = "issuer.example";
const TASK = "A".repeat(43);
const UPLOAD_URL = `https://leader.example/tasks/${TASK}/reports`;
const table = compileTargets({ "https://leader.example": "http://127.0.0.1:1", "https://helper.example": "http://127.0.0.1:2" });
const k1 = makeBlindRsaIssuerKey({ reuse: 0 });
const stranger = makeBlindRsaIssuerKey({ reuse: 1 });
const voprf = makeVoprfIssuerKey(new Uint8Array(32).fill(3));
const voprf5 = makeVoprfRistrettoIssuerKey(new Uint8Array(32).fill(5));

function input(url: string, o: { method?: string; body?: Uint8Array; authorization?: string | string[] } = {}): GateInput {
  const u = new URL(url);
  const auth = o.authorization === undefined ? [] : Array.isArray(o.authorization) ? o.authorization : [o.authorization];
  const request: BhttpRequest = {
    method: o.method ?? "PUT",
    scheme: u.protocol.slice(0, -1),
    authority: u.host,
    path: u.pathname + u.search,
    headers: [["content-type", "application/dap-report"], ...auth.map((a): [string, string] => ["authorization", a])],
    body: o.body ?? new Uint8Array([1, 2, 3]),
    trailers: [],
  };
  const target = resolveTarget(table, request);
  return { request, target, route: checkPolicy("dap", request.method, target), taskId: TASK };
}

function challenge(over: Partial<TokenChallenge> = {}): TokenChallenge {
  return { tokenType: 2, issuerName: ISSUER, redemptionContext: new Uint8Array(0), originInfo: ["leader.example"], ...over };
}

function auth(o: { key?: TestIssuerKey; challenge?: TokenChallenge; nonce?: Uint8Array; corrupt?: boolean; tokenType?: number } = {}): string {
  const key = o.key ?? k1;
  return formatAuthorization(
    makeToken({
      key,
      challenge: o.challenge ?? challenge({ tokenType: key.tokenType }),
      ...(o.nonce === undefined ? {} : { nonce: o.nonce }),
      ...(o.corrupt === undefined ? {} : { corrupt: o.corrupt }),
      ...(o.tokenType === undefined ? {} : { tokenType: o.tokenType }),
    }),
  );
}

/** A good type 2 token whose type field says otherwise (its length no longer fits). */
function retyped(tokenType: number): string {
  const t = makeToken({ key: k1, challenge: challenge() });
  t[0] = tokenType >> 8;
  t[1] = tokenType & 0xff;
  return formatAuthorization(t);
}

interface Setup {
  gate: TokenGate;
  clock: { t: number };
  store: NonceStore;
  registry: Registry;
}

async function setup(
  o: {
    options?: Partial<TokenGateOptions>;
    store?: NonceStore;
    keys?: { key: TestIssuerKey; notBeforeSec?: number }[];
    voprfKeys?: boolean;
    issuerDown?: boolean;
    random?: (n: number) => Uint8Array;
  } = {},
): Promise<Setup> {
  const clock = { t: T0 };
  const body = directoryDocument(o.keys ?? [{ key: k1, notBeforeSec: T0 / 1000 - 60 }]);
  const fetcher: DirectoryFetcher = async () => {
    if (o.issuerDown === true) throw new Error("ECONNREFUSED");
    return { status: 200, headers: { get: (n) => (n === "cache-control" ? "max-age=86400" : null) }, body };
  };
  const directory = new TokenKeyDirectory([{ name: ISSUER, directory: "https://issuer.example/d", keyLifetimeSec: LIFETIME }], {
    fetcher,
    now: () => clock.t,
    ...(o.voprfKeys === true
      ? { voprfKeys: [importVoprfPrivateKey(voprf.voprfPrivateKey!), importVoprfRistrettoPrivateKey(voprf5.voprfPrivateKey!)] }
      : {}),
  });
  await directory.start();
  const store = o.store ?? new MemoryNonceStore({ now: () => clock.t });
  const registry = new Registry();
  const gate = new TokenGate(
    { greaseProbability: 0, ...o.options },
    { directory, store, now: () => clock.t, registry, ...(o.random === undefined ? {} : { random: o.random }) },
  );
  return { gate, clock, store, registry };
}

async function refusal(p: Promise<GateTicket>): Promise<ProtocolError> {
  const e: unknown = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!isProtocolError(e)) throw new Error(`expected a ProtocolError, got ${String(e)}`);
  return e;
}

/** The refusal's code, after checking that a 401 carries a usable challenge for `origin`. */
async function refusedWith(p: Promise<GateTicket>, origin: string[] = ["leader.example"]): Promise<string> {
  const e = await refusal(p);
  if (e.status === 401) {
    const h = e.headers["www-authenticate"];
    expect(h).toBeDefined();
    expect(h).toMatch(/^PrivateToken challenge="[A-Za-z0-9_-]+={0,2}", token-key="[A-Za-z0-9_-]+={0,2}"/);
    const [first] = parseWwwAuthenticate(h!);
    const c = decodeTokenChallenge(first!.challenge);
    expect(c.issuerName).toBe(ISSUER);
    expect(c.originInfo).toEqual(origin);
    expect(first!.tokenKey).toEqual(k1.tokenKey);
  }
  return e.code;
}

async function metric(registry: Registry, name: string): Promise<Record<string, number>> {
  const m = await registry.getSingleMetric(name)!.get();
  return Object.fromEntries(m.values.map((v) => [Object.values(v.labels).join(","), v.value]));
}

describe("token gate: admission", () => {
  it("lets hpke_config fetches through without a token", async () => {
    const { gate } = await setup();
    const t = await gate.admit(input(`https://leader.example/hpke_config?task_id=${TASK}`, { method: "GET", body: new Uint8Array() }));
    await t.settle(true);
  });

  it("answers a tokenless upload with a sealed 401 naming the issuer, its key and the target", async () => {
    const { gate } = await setup();
    const e = await refusal(gate.admit(input(UPLOAD_URL)));
    expect(e.code).toBe("PP_ERR_TOKEN_MISSING");
    expect(e.status).toBe(401);
    const [c] = parseWwwAuthenticate(e.headers["www-authenticate"]!);
    expect(decodeTokenChallenge(c!.challenge)).toEqual(challenge());
    expect(c!.tokenKey).toEqual(k1.tokenKey);
    expect(await refusedWith(gate.admit(input(UPLOAD_URL.replace("leader", "helper"))), ["helper.example"])).toBe("PP_ERR_TOKEN_MISSING");
  });

  it("admits a good token once, and refuses it for any other report", async () => {
    const { gate } = await setup();
    const a = auth();
    const t = await gate.admit(input(UPLOAD_URL, { authorization: a, body: new Uint8Array([1]) }));
    await t.settle(true);
    expect(await refusedWith(gate.admit(input(UPLOAD_URL, { authorization: a, body: new Uint8Array([2]) })))).toBe("PP_ERR_TOKEN_REPLAYED");
  });

  it("admits the identical request again with its token, as a retry", async () => {
    const { gate, registry } = await setup();
    const a = auth();
    await (await gate.admit(input(UPLOAD_URL, { authorization: a }))).settle(true);
    await (await gate.admit(input(UPLOAD_URL, { authorization: a }))).settle(true);
    expect(await metric(registry, "veil_gateway_tokens_redeemed_total")).toEqual({ "2,new": 1, "2,retry": 1 });
  });

  it("binds the token to method, target and body: any change is another request", async () => {
    const { gate } = await setup();
    const a = auth();
    await (await gate.admit(input(UPLOAD_URL, { authorization: a }))).settle(true);
    const other = `https://leader.example/tasks/${"B".repeat(43)}/reports`;
    expect(await refusedWith(gate.admit(input(other, { authorization: a })))).toBe("PP_ERR_TOKEN_REPLAYED");
    expect(requestDigest("PUT", UPLOAD_URL, new Uint8Array([1]))).not.toEqual(requestDigest("POST", UPLOAD_URL, new Uint8Array([1])));
    expect(requestDigest("PUT", "ab", new Uint8Array([1]))).not.toEqual(requestDigest("PUT", "a", new Uint8Array([98, 1])));
  });

  it("digests the request as label, then method, URL and body each with a u64 length", () => {
    const u64 = (n: number): Buffer => {
      const b = Buffer.alloc(8);
      b.writeBigUInt64BE(BigInt(n));
      return b;
    };
    const url = "https://leader.example/tasks/x/reports";
    const body = new Uint8Array([1, 2, 3, 4]);
    const expected = createHash("sha256")
      .update(Buffer.concat([Buffer.from("veil request digest v1"), u64(3), Buffer.from("PUT"), u64(url.length), Buffer.from(url), u64(4), body]))
      .digest();
    expect(Buffer.from(requestDigest("PUT", url, body)).toString("hex")).toBe(expected.toString("hex"));
  });

  it("makes the token as good as new when nothing reached the aggregator", async () => {
    const { gate, registry } = await setup();
    const a = auth();
    await (await gate.admit(input(UPLOAD_URL, { authorization: a, body: new Uint8Array([1]) }))).settle(false);
    await (await gate.admit(input(UPLOAD_URL, { authorization: a, body: new Uint8Array([2]) }))).settle(true);
    expect(await metric(registry, "veil_gateway_tokens_settled_total")).toEqual({ released: 1, committed: 1 });
  });

  it("settles a ticket only once", async () => {
    const { gate } = await setup();
    const a = auth();
    const t = await gate.admit(input(UPLOAD_URL, { authorization: a }));
    await t.settle(true);
    await t.settle(false);
    expect(await refusedWith(gate.admit(input(UPLOAD_URL, { authorization: a, body: new Uint8Array([9]) })))).toBe("PP_ERR_TOKEN_REPLAYED");
  });
});

describe("token gate: every refusal is a sealed 401 with a fresh challenge", () => {
  const cases: [string, () => string | string[], string][] = [
    ["another auth scheme", () => "Bearer abc", "PP_ERR_TOKEN_MISSING"],
    ["a PrivateToken without a token", () => "PrivateToken realm=x", "PP_ERR_TOKEN_MALFORMED"],
    ["a token that is not base64url", () => 'PrivateToken token="%%%"', "PP_ERR_TOKEN_MALFORMED"],
    ["one byte", () => 'PrivateToken token="AA=="', "PP_ERR_TOKEN_MALFORMED"],
    ["a truncated token", () => auth().replace(/.{12}"$/, '"'), "PP_ERR_TOKEN_MALFORMED"],
    ["two PrivateToken credentials", () => [auth(), auth()], "PP_ERR_TOKEN_MALFORMED"],
    ["an unknown token type", () => auth({ tokenType: 0x02aa }), "PP_ERR_TOKEN_TYPE"],
    ["type 1 claimed for a type 2 token", () => retyped(1), "PP_ERR_TOKEN_MALFORMED"],
    ["an untrusted issuer key", () => auth({ key: stranger }), "PP_ERR_TOKEN_KEY"],
    ["another origin", () => auth({ challenge: challenge({ originInfo: ["helper.example"] }) }), "PP_ERR_TOKEN_CHALLENGE"],
    ["no origin (the gate asks for one)", () => auth({ challenge: challenge({ originInfo: [] }) }), "PP_ERR_TOKEN_CHALLENGE"],
    ["another issuer name", () => auth({ challenge: challenge({ issuerName: "evil.example" }) }), "PP_ERR_TOKEN_CHALLENGE"],
    ["a redemption context", () => auth({ challenge: challenge({ redemptionContext: new Uint8Array(32) }) }), "PP_ERR_TOKEN_CHALLENGE"],
    ["a bad signature", () => auth({ corrupt: true }), "PP_ERR_TOKEN_SIGNATURE"],
  ];
  it.each(cases)("refuses %s", async (_name, header, code) => {
    const { gate, registry } = await setup();
    expect(await refusedWith(gate.admit(input(UPLOAD_URL, { authorization: header() })))).toBe(code);
    const refused = await metric(registry, "veil_gateway_tokens_refused_total");
    expect(Object.values(refused)).toEqual([1]);
  });

  it("refuses a key before its not-before and after its lifetime", async () => {
    const later = makeBlindRsaIssuerKey({ reuse: 2 });
    const { gate, clock } = await setup({
      keys: [
        { key: k1, notBeforeSec: T0 / 1000 - 60 },
        { key: later, notBeforeSec: T0 / 1000 + 60 },
      ],
    });
    expect(await refusedWith(gate.admit(input(UPLOAD_URL, { authorization: auth({ key: later }) })))).toBe("PP_ERR_TOKEN_KEY");
    clock.t = T0 + 60_000;
    await (await gate.admit(input(UPLOAD_URL, { authorization: auth({ key: later }) }))).settle(true);
    clock.t = T0 - 60_000 + LIFETIME * 1000;
    expect((await refusal(gate.admit(input(UPLOAD_URL, { authorization: auth({ key: k1 }) })))).code).toBe("PP_ERR_TOKEN_KEY");
  });

  it("names the reason in the problem detail without echoing the token", async () => {
    const { gate } = await setup();
    const a = auth({ corrupt: true });
    const e = await refusal(gate.admit(input(UPLOAD_URL, { authorization: a })));
    expect(e.message).not.toContain(a.slice(20, 60));
    expect(JSON.stringify(e.headers)).not.toContain(a.slice(20, 60));
  });
});

describe("token gate: options", () => {
  it("with originInfo empty, accepts tokens without origin for every target and challenges without one", async () => {
    const { gate } = await setup({ options: { originInfo: "empty" } });
    const a = auth({ challenge: challenge({ originInfo: [] }) });
    await (await gate.admit(input(UPLOAD_URL.replace("leader", "helper"), { authorization: a }))).settle(true);
    expect(await refusedWith(gate.admit(input(UPLOAD_URL, { authorization: auth() })), [])).toBe("PP_ERR_TOKEN_CHALLENGE");
  });

  it("with epoch contexts, accepts the current and previous epoch only, and keeps nonces until the epoch window ends", async () => {
    const reserved: number[] = [];
    const mem = new MemoryNonceStore();
    const spy: NonceStore = {
      reserve: (n, d, exp) => {
        reserved.push(exp);
        return mem.reserve(n, d, exp);
      },
      commit: (n, d) => mem.commit(n, d),
      release: (n, d) => mem.release(n, d),
      ping: () => mem.ping(),
      close: () => mem.close(),
    };
    const epochSec = 3600;
    const { gate, clock } = await setup({ options: { redemptionContext: "epoch", epochSec, clockSkewSec: 10 }, store: spy });
    const e = Math.floor(T0 / (epochSec * 1000));
    const ctx = (epoch: number): TokenChallenge => challenge({ redemptionContext: gate.epochContext(epoch) });
    const refusedTokenless = await refusal(gate.admit(input(UPLOAD_URL)));
    const [c] = parseWwwAuthenticate(refusedTokenless.headers["www-authenticate"]!);
    expect(decodeTokenChallenge(c!.challenge).redemptionContext).toEqual(gate.epochContext(e));
    expect(c!.maxAge).toBe(Math.floor(((e + 2) * epochSec * 1000 - T0) / 1000));
    await (await gate.admit(input(UPLOAD_URL, { authorization: auth({ challenge: ctx(e) }) }))).settle(true);
    await (await gate.admit(input(UPLOAD_URL, { authorization: auth({ challenge: ctx(e - 1) }) }))).settle(true);
    expect(reserved).toEqual([(e + 2) * epochSec * 1000 + 10_000, (e + 1) * epochSec * 1000 + 10_000]);
    expect(await refusedWith(gate.admit(input(UPLOAD_URL, { authorization: auth({ challenge: ctx(e - 2) }) })))).toBe("PP_ERR_TOKEN_CHALLENGE");
    expect(await refusedWith(gate.admit(input(UPLOAD_URL, { authorization: auth({ challenge: ctx(e + 1) }) })))).toBe("PP_ERR_TOKEN_CHALLENGE");
    clock.t = (e + 1) * epochSec * 1000;
    await (await gate.admit(input(UPLOAD_URL, { authorization: auth({ challenge: ctx(e + 1) }) }))).settle(true);
  });

  it("derives epoch contexts with the secret when one is configured", async () => {
    const a = await setup({ options: { redemptionContext: "epoch", epochSecret: new Uint8Array(32).fill(1) } });
    const b = await setup({ options: { redemptionContext: "epoch", epochSecret: new Uint8Array(32).fill(2) } });
    const c = await setup({ options: { redemptionContext: "epoch" } });
    expect(a.gate.epochContext(5)).toHaveLength(32);
    expect(a.gate.epochContext(5)).not.toEqual(b.gate.epochContext(5));
    expect(a.gate.epochContext(5)).not.toEqual(c.gate.epochContext(5));
    expect(a.gate.epochContext(5)).not.toEqual(a.gate.epochContext(6));
  });

  it.each([
    [1, voprf],
    [5, voprf5],
  ])("verifies type %d tokens when it holds the issuer's private key", async (type, key) => {
    const keys = [
      { key: k1, notBeforeSec: T0 / 1000 - 60 },
      { key, notBeforeSec: T0 / 1000 - 60 },
    ];
    const withKey = await setup({ keys, voprfKeys: true });
    await (await withKey.gate.admit(input(UPLOAD_URL, { authorization: auth({ key }) }))).settle(true);
    expect((await refusal(withKey.gate.admit(input(UPLOAD_URL, { authorization: auth({ key, corrupt: true }) })))).code).toBe(
      "PP_ERR_TOKEN_SIGNATURE",
    );
    const e = await refusal(withKey.gate.admit(input(UPLOAD_URL)));
    expect(parseWwwAuthenticate(e.headers["www-authenticate"]!).map((c) => decodeTokenChallenge(c.challenge).tokenType)).toEqual([2, type]);
    const without = await setup({ keys });
    expect(await refusedWith(without.gate.admit(input(UPLOAD_URL, { authorization: auth({ key }) })))).toBe("PP_ERR_TOKEN_KEY");
  });

  it("greases challenges with a reserved token type, last, when the dice say so", async () => {
    const { gate } = await setup({ options: { greaseProbability: 0.5 }, random: (n) => new Uint8Array(n) });
    const e = await refusal(gate.admit(input(UPLOAD_URL)));
    const cs = parseWwwAuthenticate(e.headers["www-authenticate"]!);
    expect(cs).toHaveLength(2);
    expect(decodeTokenChallenge(cs[0]!.challenge).tokenType).toBe(2);
    expect(GREASE_TOKEN_TYPES).toContain(decodeTokenChallenge(cs[1]!.challenge).tokenType);
    const never = await setup({ options: { greaseProbability: 0.5 }, random: (n) => new Uint8Array(n).fill(0xff) });
    expect(parseWwwAuthenticate((await refusal(never.gate.admit(input(UPLOAD_URL)))).headers["www-authenticate"]!)).toHaveLength(1);
  });
});

describe("token gate: failing closed", () => {
  it("answers 503 when the store is unreachable, never admitting the token", async () => {
    const store = new MemoryNonceStore();
    await store.close();
    const { gate, registry } = await setup({ store });
    const e = await refusal(gate.admit(input(UPLOAD_URL, { authorization: auth() })));
    expect(e.code).toBe("PP_ERR_STORE_UNAVAILABLE");
    expect(e.status).toBe(503);
    expect(e.headers["retry-after"]).toBeDefined();
    await expect(gate.ready()).rejects.toThrow();
    expect(await metric(registry, "veil_gateway_tokens_refused_total")).toEqual({ store_unavailable: 1 });
  });

  it("answers 503 when no issuer key was ever fetched", async () => {
    const { gate } = await setup({ issuerDown: true });
    expect((await refusal(gate.admit(input(UPLOAD_URL, { authorization: auth() })))).code).toBe("PP_ERR_ISSUER_UNAVAILABLE");
    expect((await refusal(gate.admit(input(UPLOAD_URL)))).code).toBe("PP_ERR_ISSUER_UNAVAILABLE");
    await expect(gate.ready()).rejects.toThrow();
  });
});

describe("token gate: one token, 25 concurrent uploads of 25 reports", () => {
  const dir = mkdtempSync(join(tmpdir(), "veil-gate-"));
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const now = (): number => T0;
  const stores: [string, () => NonceStore][] = [
    ["memory", () => new MemoryNonceStore({ now })],
    ["sqlite", () => new SqliteNonceStore(join(dir, "race.db"), { now })],
    ["redis", () => new RedisNonceStore(redis.url, { now })],
  ];
  it.each(stores)("admits exactly one (%s)", async (_name, open) => {
    const store = open();
    const { gate } = await setup({ store });
    const a = auth();
    const results = await Promise.allSettled(
      Array.from({ length: 25 }, (_, i) => gate.admit(input(UPLOAD_URL, { authorization: a, body: new Uint8Array([i]) }))),
    );
    const admitted = results.filter((r) => r.status === "fulfilled");
    expect(admitted).toHaveLength(1);
    for (const r of results) if (r.status === "rejected") expect((r.reason as ProtocolError).code).toBe("PP_ERR_TOKEN_REPLAYED");
    await gate.close();
  });
});
