// The token gate with an ARC issuer (token type 0xE5AC): challenges with credential_context and
// rate-limit, N presentations per presentation context, the (N+1)-th refused (repeated nonce:
// replayed tag; out-of-range nonce: the range proof fails), request-bound spending with retries
// and releases, epochs and tasks as contexts, and the gate following the issuer's key rotation.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isProtocolError, type ProtocolError } from "../../../core/errors.js";
import type { BhttpRequest } from "../../../core/bhttp/index.js";
import { decodeTokenChallenge, parseWwwAuthenticate, type WwwAuthenticateChallenge } from "../../../core/privacypass/index.js";
import { TokenGate, contextPrf } from "../../../gateway/gate.js";
import type { GateInput, GateTicket } from "../../../gateway/gate-contract.js";
import { ArcVerifier, readArcKeys, type ArcIssuer } from "../../../gateway/arc-verifier.js";
import { TokenKeyDirectory, type DirectoryFetcher } from "../../../gateway/issuer-directory.js";
import { MemoryNonceStore } from "../../../gateway/nonce-stores/index.js";
import { checkPolicy, compileTargets, resolveTarget } from "../../../gateway/policy.js";
import { ArcTestClient, makeArcKey, writeArcKeyFile, type ArcTestKey } from "../../helpers/arc.js";

const T0 = 1_700_000_000_000;
const EPOCH_SEC = 3600;
const LIMIT = 3;
const ISSUER = "issuer.example";
const TASK = "A".repeat(43);
const OTHER_TASK = "B".repeat(43);
const table = compileTargets({ "https://leader.example": "http://127.0.0.1:1" });

let dir: string;
let keyFile: string;
const key1 = makeArcKey();
const key2 = makeArcKey();
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "veil-arc-gate-"));
  keyFile = join(dir, "issuer-keys.json");
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function input(o: { task?: string; body?: number; authorization?: string } = {}): GateInput {
  const task = o.task ?? TASK;
  const request: BhttpRequest = {
    method: "PUT",
    scheme: "https",
    authority: "leader.example",
    path: `/tasks/${task}/reports`,
    headers: [["content-type", "application/dap-report"], ...(o.authorization === undefined ? [] : [["authorization", o.authorization] as [string, string]])],
    body: Uint8Array.of(o.body ?? 1),
    trailers: [],
  };
  const target = resolveTarget(table, request);
  return { request, target, route: checkPolicy("dap", "PUT", target), taskId: task };
}

interface Setup {
  gate: TokenGate;
  clock: { t: number };
}

async function setup(o: { redemptionContext?: ArcIssuer["redemptionContext"]; credentialContext?: ArcIssuer["credentialContext"]; keys?: ArcTestKey[] } = {}): Promise<Setup> {
  const clock = { t: T0 };
  writeArcKeyFile(keyFile, (o.keys ?? [key1]).map((key) => ({ key, notBeforeSec: T0 / 1000 - 60 })));
  let keys = readArcKeys(keyFile);
  const issuer: ArcIssuer = {
    name: ISSUER,
    rateLimit: LIMIT,
    keyLifetimeSec: 7 * 86_400,
    redemptionContext: o.redemptionContext ?? "task-epoch",
    credentialContext: o.credentialContext ?? "epoch",
    keys: () => keys,
  };
  const fetcher: DirectoryFetcher = async () => ({
    status: 200,
    headers: { get: () => null },
    body: new TextEncoder().encode(JSON.stringify({ "issuer-request-uri": "/token-request", "token-keys": [] })),
  });
  const directory = new TokenKeyDirectory([{ name: ISSUER, directory: "https://issuer.example/d", keyLifetimeSec: 7 * 86_400 }], { fetcher, now: () => clock.t });
  await directory.start();
  const arc = new ArcVerifier([issuer], { prf: (d) => contextPrf(undefined, d), epochSec: EPOCH_SEC });
  const gate = new TokenGate({ greaseProbability: 0, epochSec: EPOCH_SEC }, { directory, store: new MemoryNonceStore({ now: () => clock.t }), now: () => clock.t, arc });
  // Rotation: tests rewrite the file and call reload().
  reload = () => {
    keys = readArcKeys(keyFile);
  };
  return { gate, clock };
}
let reload = (): void => {};

async function refusal(p: Promise<GateTicket>): Promise<ProtocolError> {
  const e: unknown = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!isProtocolError(e)) throw new Error(`expected a ProtocolError, got ${String(e)}`);
  return e;
}

async function arcChallenge(gate: TokenGate, task = TASK): Promise<WwwAuthenticateChallenge> {
  const e = await refusal(gate.admit(input({ task })));
  expect(e.code).toBe("PP_ERR_TOKEN_MISSING");
  const challenges = parseWwwAuthenticate(e.headers["www-authenticate"]!);
  return challenges.find((c) => decodeTokenChallenge(c.challenge).tokenType === 0xe5ac)!;
}

describe("ARC at the gate", () => {
  it("challenges with the ARC TokenChallenge: credential_context, rate-limit, the ARC key, per task", async () => {
    const { gate } = await setup();
    const c = await arcChallenge(gate);
    expect(c.rateLimit).toBe(LIMIT);
    expect(c.tokenKey).toEqual(key1.tokenKey);
    expect(c.maxAge).toBeGreaterThan(0);
    const tc = decodeTokenChallenge(c.challenge);
    expect(tc).toMatchObject({ tokenType: 0xe5ac, issuerName: ISSUER, originInfo: ["leader.example"] });
    expect(tc.redemptionContext).toHaveLength(32);
    expect(tc.credentialContext).toHaveLength(32);
    const other = decodeTokenChallenge((await arcChallenge(gate, OTHER_TASK)).challenge);
    expect(other.redemptionContext).not.toEqual(tc.redemptionContext);
    expect(other.credentialContext).toEqual(tc.credentialContext);
  });

  it("accepts N presentations of one credential, then refuses a repeated nonce (replayed) and an out-of-range one", async () => {
    const { gate } = await setup();
    const client = new ArcTestClient(key1, (await arcChallenge(gate)).challenge, LIMIT);
    for (let i = 0; i < LIMIT; i++) await (await gate.admit(input({ body: i, authorization: client.next() }))).settle(true);
    expect(() => client.next()).toThrow(expect.objectContaining({ code: "PP_ERR_LIMIT_EXCEEDED" }));
    expect((await refusal(gate.admit(input({ body: 10, authorization: client.withNonce(0) })))).code).toBe("PP_ERR_TOKEN_REPLAYED");
    expect((await refusal(gate.admit(input({ body: 11, authorization: client.withNonce(LIMIT) })))).code).toBe("PP_ERR_TOKEN_SIGNATURE");
    const e = await refusal(gate.admit(input({ body: 12, authorization: client.withNonce(LIMIT - 1) })));
    expect(e.code).toBe("PP_ERR_TOKEN_REPLAYED");
    expect(e.status).toBe(401);
    expect(e.headers["www-authenticate"]).toMatch(/rate-limit=3/);
  });

  it("spends a presentation for one request: the identical request again passes, another is refused; a release frees it", async () => {
    const { gate } = await setup();
    const client = new ArcTestClient(key1, (await arcChallenge(gate)).challenge, LIMIT);
    const a = client.next();
    await (await gate.admit(input({ body: 1, authorization: a }))).settle(true);
    await (await gate.admit(input({ body: 1, authorization: a }))).settle(true);
    expect((await refusal(gate.admit(input({ body: 2, authorization: a })))).code).toBe("PP_ERR_TOKEN_REPLAYED");
    const b = client.next();
    await (await gate.admit(input({ body: 3, authorization: b }))).settle(false);
    await (await gate.admit(input({ body: 4, authorization: b }))).settle(true);
  });

  it("a presentation is good only for its task, and the next epoch (and credential context) starts again", async () => {
    const { gate, clock } = await setup();
    const client = new ArcTestClient(key1, (await arcChallenge(gate)).challenge, LIMIT);
    expect((await refusal(gate.admit(input({ task: OTHER_TASK, authorization: client.next() })))).code).toBe("PP_ERR_TOKEN_CHALLENGE");
    // Tokens of the previous epoch still pass in the next one; two epochs later they do not.
    const late = client.next();
    clock.t += EPOCH_SEC * 1000;
    await (await gate.admit(input({ body: 5, authorization: late }))).settle(true);
    const next = new ArcTestClient(key1, (await arcChallenge(gate)).challenge, LIMIT);
    for (let i = 0; i < LIMIT; i++) await (await gate.admit(input({ body: 20 + i, authorization: next.next() }))).settle(true);
    const stale = client.next();
    clock.t += EPOCH_SEC * 1000;
    expect((await refusal(gate.admit(input({ body: 9, authorization: stale })))).code).toBe("PP_ERR_TOKEN_CHALLENGE");
  });

  it("with empty contexts, the limit holds per issuer key, and a rotated key starts it again", async () => {
    const { gate } = await setup({ redemptionContext: "none", credentialContext: "none" });
    const c = await arcChallenge(gate);
    expect(decodeTokenChallenge(c.challenge).redemptionContext).toHaveLength(0);
    expect(decodeTokenChallenge(c.challenge).credentialContext).toHaveLength(0);
    const client = new ArcTestClient(key1, c.challenge, LIMIT);
    for (let i = 0; i < LIMIT; i++) await (await gate.admit(input({ body: i, authorization: client.next() }))).settle(true);
    writeArcKeyFile(keyFile, [
      { key: key1, notBeforeSec: T0 / 1000 - 60 },
      { key: key2, notBeforeSec: T0 / 1000 - 30 },
    ]);
    reload();
    const rotated = await arcChallenge(gate);
    expect(rotated.tokenKey).toEqual(key2.tokenKey);
    const fresh = new ArcTestClient(key2, rotated.challenge, LIMIT);
    await (await gate.admit(input({ body: 50, authorization: fresh.next() }))).settle(true);
    expect((await refusal(gate.admit(input({ body: 51, authorization: client.withNonce(1) })))).code).toBe("PP_ERR_TOKEN_REPLAYED");
  });

  it("refuses malformed tokens, unknown keys and tampered presentations", async () => {
    const { gate } = await setup();
    const c = (await arcChallenge(gate)).challenge;
    const stranger = new ArcTestClient(makeArcKey(), c, LIMIT);
    expect((await refusal(gate.admit(input({ authorization: stranger.next() })))).code).toBe("PP_ERR_TOKEN_KEY");
    const client = new ArcTestClient(key1, c, LIMIT);
    const good = client.next();
    const raw = Buffer.from(/token="([^"]+)"/.exec(good)![1]!, "base64url");
    const truncated = `PrivateToken token="${raw.subarray(0, raw.length - 1).toString("base64url")}"`;
    expect((await refusal(gate.admit(input({ authorization: truncated })))).code).toBe("PP_ERR_TOKEN_MALFORMED");
    const flipped = Buffer.from(raw);
    flipped[flipped.length - 1]! ^= 1;
    expect((await refusal(gate.admit(input({ authorization: `PrivateToken token="${flipped.toString("base64url")}"` })))).code).toBe("PP_ERR_TOKEN_SIGNATURE");
    const digest = Buffer.from(raw);
    digest[6]! ^= 1;
    expect((await refusal(gate.admit(input({ authorization: `PrivateToken token="${digest.toString("base64url")}"` })))).code).toBe("PP_ERR_TOKEN_CHALLENGE");
  });
});

describe("ARC issuer config (tokens.issuers)", () => {
  it("takes the ARC fields, requires rateLimit and keys, and refuses ARC fields on other issuers", async () => {
    const { parseGatewayConfig } = await import("../../../gateway/config.js");
    const base = { targets: { "https://leader.example": "http://127.0.0.1:1" } };
    const arc = { name: ISSUER, directory: "https://issuer.example/.well-known/private-token-issuer-directory", tokenType: "arc", rateLimit: 5, keys: keyFile };
    const c = parseGatewayConfig({ ...base, tokens: { issuers: [{ ...arc, redemptionContext: "epoch", credentialContext: "epoch" }] } });
    expect(c.tokens.issuers[0]).toMatchObject({ tokenType: "arc", rateLimit: 5, keys: keyFile, redemptionContext: "epoch", credentialContext: "epoch" });
    expect(() => parseGatewayConfig({ ...base, tokens: { issuers: [{ ...arc, rateLimit: undefined }] } })).toThrow(/rateLimit and keys/);
    expect(() => parseGatewayConfig({ ...base, tokens: { issuers: [{ ...arc, tokenType: undefined }] } })).toThrow(/only for "tokenType": "arc"/);
    expect(() => parseGatewayConfig({ ...base, tokens: { issuers: [{ ...arc, redemptionContext: "task" }] } })).toThrow(/redemptionContext/);
    expect(() => parseGatewayConfig({ ...base, tokens: { issuers: [{ ...arc, rateLimit: 1 }] } })).toThrow(/rateLimit/);
  });
});
