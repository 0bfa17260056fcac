import { chmodSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { toBase64Url, toHex } from "../../../core/bytes.js";
import { isProtocolError } from "../../../core/errors.js";
import { formatAuthorization, type TokenChallenge } from "../../../core/privacypass/index.js";
import { parseGatewayConfig, type TokensConfig } from "../../../gateway/config.js";
import { checkPolicy, compileTargets, resolveTarget } from "../../../gateway/policy.js";
import { createTokenGate, readVoprfKeys } from "../../../gateway/tokens.js";
import { createLogger } from "../../../server/logging.js";
import { startDirectoryServer, type DirectoryServer } from "../../helpers/token-gateway.js";
import { makeBlindRsaIssuerKey, makeToken, makeVoprfIssuerKey, type TestIssuerKey } from "../../helpers/tokens.js";

const dir = mkdtempSync(join(tmpdir(), "veil-tokens-"));
const log = createLogger("gateway", { level: "silent" });
const rsa = makeBlindRsaIssuerKey({ reuse: 0 });
const v1 = makeVoprfIssuerKey(new Uint8Array(32).fill(1));
const v2 = makeVoprfIssuerKey(new Uint8Array(32).fill(2));
const nb = Math.floor(Date.now() / 1000) - 60;
let directory: DirectoryServer;
beforeAll(async () => {
  directory = await startDirectoryServer([
    { key: rsa, notBeforeSec: nb },
    { key: v1, notBeforeSec: nb },
    { key: v2, notBeforeSec: nb },
  ]);
});
afterAll(async () => {
  await directory.close();
  rmSync(dir, { recursive: true, force: true });
});

/** An issuer key file as issuer/key-store.ts writes it. */
function writeIssuerKeyFile(file: string, keys: TestIssuerKey[], mode = 0o600): void {
  writeFileSync(
    file,
    JSON.stringify({
      version: 1,
      keys: keys.map((k) => ({ tokenType: k.tokenType, notBefore: nb, tokenKey: toBase64Url(k.tokenKey), privateKey: toHex(k.voprfPrivateKey!) })),
    }),
    { mode },
  );
  chmodSync(file, mode);
}

function tokensConfig(over: Record<string, unknown> = {}, issuer: Record<string, unknown> = {}): TokensConfig {
  return parseGatewayConfig({
    tokens: { required: true, store: "memory", greaseProbability: 0, issuers: [{ name: "issuer.example", directory: directory.url, keyLifetimeSec: 3600, ...issuer }], ...over },
  }).tokens;
}

const table = compileTargets({ "https://leader.example": "http://127.0.0.1:1" });
function upload(authorization: string, body = new Uint8Array([1])) {
  const request = {
    method: "PUT",
    scheme: "https",
    authority: "leader.example",
    path: `/tasks/${"A".repeat(43)}/reports`,
    headers: [["authorization", authorization]] as [string, string][],
    body,
    trailers: [],
  };
  const target = resolveTarget(table, request);
  return { request, target, route: checkPolicy("dap", "PUT", target), taskId: undefined };
}
const challenge = (tokenType: number, redemptionContext: Uint8Array = new Uint8Array(0)): TokenChallenge => ({
  tokenType,
  issuerName: "issuer.example",
  redemptionContext,
  originInfo: ["leader.example"],
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => "ok",
    (e: unknown) => (isProtocolError(e) ? e.code : String(e)),
  );
}

describe("createTokenGate", () => {
  it("builds a ready gate from the config that admits a token of the configured issuer", async () => {
    const gate = await createTokenGate(tokensConfig(), { log });
    await gate.ready();
    const t = await gate.admit(upload(formatAuthorization(makeToken({ key: rsa, challenge: challenge(2) }))));
    await t.settle(true);
    await gate.close();
  });

  it("verifies type 1 tokens with the issuer's key file, and follows its rotation", async () => {
    const file = join(dir, "issuer-keys.json");
    writeIssuerKeyFile(file, [v1]);
    const clock = { t: Date.now() };
    const gate = await createTokenGate(tokensConfig({}, { keyFile: file }), { log, now: () => clock.t });
    expect(await codeOf(gate.admit(upload(formatAuthorization(makeToken({ key: v1, challenge: challenge(1) })))))).toBe("ok");
    expect(await codeOf(gate.admit(upload(formatAuthorization(makeToken({ key: v2, challenge: challenge(1) })))))).toBe("PP_ERR_TOKEN_KEY");
    writeIssuerKeyFile(file, [v1, v2]);
    utimesSync(file, new Date(), new Date(Date.now() + 5000));
    clock.t += 1_000;
    expect(await codeOf(gate.admit(upload(formatAuthorization(makeToken({ key: v2, challenge: challenge(1) })))))).toBe("ok");
    await gate.close();
  });

  it("refuses an issuer key file that group or others can read, or that is malformed", async () => {
    const loose = join(dir, "loose.json");
    writeIssuerKeyFile(loose, [v1], 0o644);
    expect(() => readVoprfKeys(loose)).toThrow(expect.objectContaining({ code: "CFG_ERR_KEY_FILE" }));
    const bad = join(dir, "bad.json");
    writeFileSync(bad, '{"keys": [{"tokenType": 1, "privateKey": "zz"}]}', { mode: 0o600 });
    expect(() => readVoprfKeys(bad)).toThrow(expect.objectContaining({ code: "CFG_ERR_KEY_FILE" }));
    expect(await codeOf(createTokenGate(tokensConfig({}, { keyFile: join(dir, "missing.json") }), { log }))).toBe("CFG_ERR_KEY_FILE");
  });

  it("keys epoch contexts with the secret file, and refuses a short one", async () => {
    const secret = join(dir, "epoch-secret");
    writeFileSync(secret, new Uint8Array(32).fill(9), { mode: 0o600 });
    const keyed = await createTokenGate(tokensConfig({ redemptionContext: "epoch", epochSecretFile: secret }), { log });
    const unkeyed = await createTokenGate(tokensConfig({ redemptionContext: "epoch" }), { log });
    expect(keyed.epochContext(1)).not.toEqual(unkeyed.epochContext(1));
    const epoch = Math.floor(Date.now() / 1000 / keyed.options.epochSec);
    const ctx = keyed.epochContext(epoch);
    expect(await codeOf(keyed.admit(upload(formatAuthorization(makeToken({ key: rsa, challenge: challenge(2, ctx) })))))).toBe("ok");
    expect(await codeOf(unkeyed.admit(upload(formatAuthorization(makeToken({ key: rsa, challenge: challenge(2, ctx) })))))).toBe("PP_ERR_TOKEN_CHALLENGE");
    await keyed.close();
    await unkeyed.close();
    const short = join(dir, "short-secret");
    writeFileSync(short, "too short", { mode: 0o600 });
    expect(await codeOf(createTokenGate(tokensConfig({ redemptionContext: "epoch", epochSecretFile: short }), { log }))).toBe("CFG_ERR_KEY_FILE");
  });

  it("starts even when the issuer is unreachable, and is not ready until it is reached", async () => {
    const own = await startDirectoryServer([{ key: rsa, notBeforeSec: nb }]);
    const url = own.url;
    await own.down();
    const gate = await createTokenGate(tokensConfig({}, { directory: url }), { log });
    expect(await codeOf(gate.ready())).toBe("PP_ERR_ISSUER_UNAVAILABLE");
    expect(await codeOf(gate.admit(upload(formatAuthorization(makeToken({ key: rsa, challenge: challenge(2) })))))).toBe("PP_ERR_ISSUER_UNAVAILABLE");
    await own.close();
    await gate.close();
  });
});

describe("tokens options in the gateway config", () => {
  it("defaults to authority origin_info, empty contexts and greasing", () => {
    const t = parseGatewayConfig({ tokens: { required: false } }).tokens;
    expect(t).toMatchObject({ originInfo: "authority", redemptionContext: "empty", epochSec: 86_400, clockSkewSec: 300, greaseProbability: 0.1 });
  });

  it.each([
    [{ originInfo: "none" }],
    [{ redemptionContext: "random" }],
    [{ epochSec: 10 }],
    [{ greaseProbability: 2 }],
    [{ clockSkewSec: -1 }],
  ])("rejects %j", (over) => {
    expect(() => parseGatewayConfig({ tokens: { required: false, ...over } })).toThrow(expect.objectContaining({ code: "CFG_ERR_INVALID" }));
  });
});
