// The Redis nonce store notices that it lost data, and the gate then accepts no token that could
// have been spent before (gateway/store-loss.ts): a real redis-server restarted on an empty data
// folder, a real issuer serving its directory over loopback HTTP, `veil issuer rotate --now` as a
// child process (needs a built dist/), and the start-up check of Redis's persistence settings.
import { createPrivateKey } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { equalBytes, fromBase64Url, toBase64Url } from "../../core/bytes.js";
import { isProtocolError } from "../../core/errors.js";
import type { BhttpRequest } from "../../core/bhttp/index.js";
import { formatAuthorization, tokenKeyId, type TokenChallenge, type WwwAuthenticateChallenge } from "../../core/privacypass/index.js";
import { readArcKeys } from "../../gateway/arc-verifier.js";
import { IssuerKeyStore } from "../../issuer/key-store.js";
import { ArcTestClient } from "../helpers/arc.js";
import { parseGatewayConfig } from "../../gateway/config.js";
import type { GateInput } from "../../gateway/gate-contract.js";
import type { TokenGate } from "../../gateway/gate.js";
import { checkPolicy, compileTargets, resolveTarget } from "../../gateway/policy.js";
import { createTokenGate } from "../../gateway/tokens.js";
import { rotateIssuerKeysNow, startIssuer, type StartedIssuer } from "../../issuer/main.js";
import { createLogger } from "../../server/logging.js";
import { captureLines, issuerConfig, rsaKeyPool } from "../helpers/issuer.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import { makeToken, type TestIssuerKey } from "../helpers/tokens.js";
import { VEIL_BIN } from "../helpers/veil-process.js";
import { execFile } from "node:child_process";
import { until } from "../helpers/wait.js";

const TASK = "A".repeat(43);
const ARC = 0xe5ac;
const ARC_LIMIT = 4;
const table = compileTargets({ "https://leader.example": "http://127.0.0.1:1" });
const CHALLENGE: TokenChallenge = { tokenType: 2, issuerName: "issuer.example", redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] };

const dir = mkdtempSync(join(tmpdir(), "veil-loss-"));
let redis: TestRedis;
let issuer: StartedIssuer;
let issuerConfigFile: string;
let keysFile: string;

function input(authorization: string, body = new Uint8Array([1, 2, 3])): GateInput {
  const request: BhttpRequest = {
    method: "PUT",
    scheme: "https",
    authority: "leader.example",
    path: `/tasks/${TASK}/reports`,
    headers: [["authorization", authorization]],
    body,
    trailers: [],
  };
  const target = resolveTarget(table, request);
  return { request, target, route: checkPolicy("dap", request.method, target), taskId: TASK };
}

/**
 * The issuer's current type 2 key, read from its key file (tokens signed with it are what the
 * issuer would issue): the newest valid at `atMs`, by default now or within the next second (the
 * key of a `rotate --now`, valid from the next whole second; scheduled successors are half an
 * hour ahead).
 */
function currentKey(atMs = Date.now() + 1000): TestIssuerKey {
  const doc = JSON.parse(readFileSync(keysFile, "utf8")) as { keys: { tokenType: number; notBefore: number; tokenKey: string; privateKey: string }[] };
  const at = atMs / 1000;
  const k = doc.keys.filter((x) => x.tokenType === 2 && x.notBefore <= at).sort((a, b) => b.notBefore - a.notBefore)[0]!;
  const tokenKey = fromBase64Url(k.tokenKey)!;
  return { tokenType: 2, tokenKey, tokenKeyId: tokenKeyId(tokenKey), rsaPrivateKey: createPrivateKey({ key: Buffer.from(k.privateKey, "base64"), format: "der", type: "pkcs8" }) };
}

/** What `veil issuer rotate --now --config` reads from the issuer's configuration. */
const rotationConfig = (): { keys: string; tokenTypes: number[]; keyLifetimeSec: number } => ({ keys: keysFile, tokenTypes: [2, ARC], keyLifetimeSec: 3600 });

const token = (key: TestIssuerKey): string => formatAuthorization(makeToken({ key, challenge: CHALLENGE }));

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    if (isProtocolError(e)) return e.code;
    throw e;
  }
}

interface Gateway {
  gate: TokenGate;
  lines: string[];
  registry: Registry;
  clock: { offsetMs: number };
}

/** A gate on `store` trusting the issuer; with `arcKeys`, also an ARC issuer whose keys are in that key file. */
async function gateway(store: string, durability: "verify" | "trust" = "verify", arcKeys?: string): Promise<Gateway> {
  const directory = `${issuer.url}/.well-known/private-token-issuer-directory`;
  const arc = arcKeys === undefined ? [] : [{ name: "arc.example", directory, tokenType: "arc", rateLimit: ARC_LIMIT, keys: arcKeys, keyLifetimeSec: 3600 }];
  const config = parseGatewayConfig({
    keys: join(dir, "unused-keys.json"),
    targets: { "https://leader.example": "http://127.0.0.1:1" },
    tokens: {
      required: true,
      issuers: [{ name: "issuer.example", directory, keyLifetimeSec: 3600 }, ...arc],
      store,
      storeDurability: durability,
      greaseProbability: 0,
    },
  });
  const { stream, lines } = captureLines();
  const registry = new Registry();
  // The clock moves forward past the directory refetch rate limit (10 s) without waiting.
  const clock = { offsetMs: 0 };
  const gate = await createTokenGate(config.tokens, { log: createLogger("gateway", { destination: stream }), registry, now: () => Date.now() + clock.offsetMs });
  return { gate, lines, registry, clock };
}

/** `veil issuer rotate --now`; resolves once the running issuer serves the new key (it rereads the file within a second). */
async function rotateNow(): Promise<string> {
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, [VEIL_BIN, "issuer", "rotate", "--now", "--config", issuerConfigFile], (err, out, stderr) =>
      err === null ? resolve(out) : reject(new Error(`${err.message}\n${stderr}`)),
    );
  });
  await issuerServes(currentKey());
  return stdout;
}

/** Waits until the running issuer's directory lists `key` (it rereads its key file at most once a second). */
async function issuerServes(key: TestIssuerKey): Promise<void> {
  const b64 = toBase64Url(key.tokenKey);
  await until(async () => {
    const doc = (await (await fetch(`${issuer.url}/.well-known/private-token-issuer-directory`, { cache: "no-store" })).json()) as { "token-keys": { "token-key": string }[] };
    return doc["token-keys"].some((k) => k["token-key"] === b64);
  }, "the issuer serving the rotated key");
}

beforeAll(async () => {
  redis = await startRedis();
  keysFile = join(dir, "issuer-keys.json");
  const config = issuerConfig(dir, { keyLifetimeSec: 3600, tokenTypes: [2, ARC] });
  issuerConfigFile = join(dir, "issuer.json");
  writeFileSync(issuerConfigFile, JSON.stringify({ name: "issuer.example", keys: keysFile, tokenTypes: [2, ARC], keyLifetimeSec: 3600, attester: { credentials: ["c"] } }));
  issuer = await startIssuer(config, { handleSignals: false, generateRsaKey: rsaKeyPool(), log: createLogger("issuer", { destination: captureLines().stream }) });
});

afterAll(async () => {
  await issuer?.stop();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("a Redis nonce store that loses its data", () => {
  it("refuses a token spent before Redis restarted on an empty data folder, says so, and accepts tokens of a key from `veil issuer rotate --now`", async () => {
    const g = await gateway(redis.url);
    try {
      const before = currentKey();
      const spent = token(before);
      const unspent = token(before);
      await (await g.gate.admit(input(spent))).settle(true);
      expect(await codeOf(g.gate.admit(input(spent, new Uint8Array([9]))))).toBe("PP_ERR_TOKEN_REPLAYED");
      await g.gate.ready();

      await redis.stop();
      await redis.restart({ emptyDataDir: true });
      // The store forgot the spend; the gate does not: the first request after the loss notices it.
      await expect.poll(async () => codeOf(g.gate.admit(input(spent, new Uint8Array([9])))), { timeout: 10_000, interval: 200 }).toBe("PP_ERR_STORE_LOST");
      const lossNoticedBy = Date.now();
      // A token of the same key never spent is refused too (the store cannot tell), and nothing is left reserved.
      expect(await codeOf(g.gate.admit(input(unspent)))).toBe("PP_ERR_STORE_LOST");
      expect(await redis.command("DBSIZE")).toBe(":1"); // only the renewed marker
      // Log, metric and /readyz say what happened and what to do.
      const log = g.lines.find((l) => l.includes("NONCE STORE LOST SPENT TOKENS"));
      expect(log).toMatch(/"level":50/);
      expect(log).toContain("veil issuer rotate --now");
      const metrics = await g.registry.metrics();
      expect(metrics).toMatch(/veil_gateway_nonce_store_losses_total\{reason="marker_missing"\} 1/);
      expect(metrics).toMatch(/veil_gateway_nonce_store_tainted_keys \d/);
      await expect(g.gate.ready()).rejects.toThrow(/lost spent tokens.*veil issuer rotate --now/);

      // A second gateway started after the loss learns it from the marker and refuses the old key too.
      const late = await gateway(redis.url);
      try {
        expect(await codeOf(late.gate.admit(input(unspent)))).toBe("PP_ERR_STORE_LOST");
      } finally {
        await late.gate.close();
      }

      // The operator's way out: an emergency rotation; gateways refetch (bypassing caches) and
      // accept the new key. An automated responder can rotate within the very millisecond the loss
      // was noticed (the rotation's clock is set to it): the new key's not-before is the next whole
      // second, so it is not taken for a key that may have been valid before the loss. The
      // responder acts once the gateway's refetch after the loss is in (its log line).
      await until(() => g.lines.some((l) => l.includes("directories refetched after the loss")), "the refetch after the loss");
      const lostAtMs = Date.parse((JSON.parse(log!) as { lostAt: string }).lostAt);
      expect(lostAtMs).toBeLessThanOrEqual(lossNoticedBy);
      const rotated = await rotateIssuerKeysNow(rotationConfig(), { now: () => lostAtMs, generateRsaKey: rsaKeyPool() });
      expect(rotated.map((k) => k.notBefore)).toEqual([Math.floor(lostAtMs / 1000) + 1, Math.floor(lostAtMs / 1000) + 1]);
      const after = currentKey(rotated[0]!.notBefore * 1000);
      expect(after.tokenKeyId).not.toEqual(before.tokenKeyId);
      await issuerServes(after);
      const fresh = token(after);
      // The issuer picks the rewritten key file up within a second; each try passes the refetch rate limit.
      await expect
        .poll(async () => {
          g.clock.offsetMs += 11_000;
          return codeOf(g.gate.admit(input(fresh)).then((t) => t.settle(true)));
        }, { timeout: 10_000, interval: 300 })
        .toBe("ok");
      expect(await codeOf(g.gate.admit(input(fresh, new Uint8Array([7]))))).toBe("PP_ERR_TOKEN_REPLAYED");
      // The old key left the directory: its tokens are refused for that reason, and the gate is ready again.
      expect(await codeOf(g.gate.admit(input(spent, new Uint8Array([9]))))).toBe("PP_ERR_TOKEN_KEY");
      await g.gate.ready();
    } finally {
      await g.gate.close();
    }
  }, 60_000);

  it("notices FLUSHALL while running", async () => {
    expect(await rotateNow()).toMatch(/token type 2: new key .* valid from .*\ntoken type 58796: new key/);
    const g = await gateway(redis.url);
    try {
      g.clock.offsetMs += 11_000;
      const key = currentKey();
      const spent = token(key);
      await (await g.gate.admit(input(spent))).settle(true);
      await redis.command("FLUSHALL");
      expect(await codeOf(g.gate.admit(input(spent, new Uint8Array([5]))))).toBe("PP_ERR_STORE_LOST");
      expect(g.lines.some((l) => l.includes("NONCE STORE LOST SPENT TOKENS"))).toBe(true);
    } finally {
      await g.gate.close();
    }
  }, 60_000);
});

describe("ARC (token type 0xE5AC) after a nonce store loss", () => {
  it("refuses presentations under every ARC key held at the loss (valid, and published ahead once valid), names none of them in challenges, and accepts the rotated key's", async () => {
    const store = await startRedis();
    // The ARC keys of an issuer key file (the gateway reads the file, ARC being privately verifiable).
    const arcKeys = join(dir, "arc-keys.json");
    await IssuerKeyStore.open({ file: arcKeys, tokenTypes: [ARC], keyLifetimeSec: 3600 });
    const g = await gateway(store.url, "verify", arcKeys);
    try {
      const arcChallenge = (): WwwAuthenticateChallenge | undefined => g.gate.challenges(["leader.example"], TASK).find((c) => c.rateLimit !== undefined);
      const [current, successor] = readArcKeys(arcKeys).sort((a, b) => a.notBeforeSec - b.notBeforeSec);
      const c = arcChallenge()!;
      expect(c.tokenKey).toEqual(current!.tokenKey);
      const client = new ArcTestClient(current!, c.challenge, ARC_LIMIT);
      const spent = client.next();
      await (await g.gate.admit(input(spent))).settle(true);
      expect(await codeOf(g.gate.admit(input(spent, new Uint8Array([9]))))).toBe("PP_ERR_TOKEN_REPLAYED");

      await store.command("FLUSHALL");
      // The store forgot the spend; the gate refuses it for its key (and every other key held: 503,
      // no fresh key to name), and names no tainted ARC key in its challenges.
      expect(await codeOf(g.gate.admit(input(spent, new Uint8Array([9]))))).toBe("PP_ERR_STORE_LOST");
      expect(await codeOf(g.gate.admit(input(client.next())))).toBe("PP_ERR_STORE_LOST");
      expect(arcChallenge()).toBeUndefined();
      expect(g.lines.some((l) => l.includes("NONCE STORE LOST SPENT TOKENS"))).toBe(true);

      // The successor in the key file, published ahead: a gateway whose clock runs ahead may have
      // accepted its presentations before the loss, so it is refused once valid here too.
      g.clock.offsetMs += 1_800_000;
      expect(successor!.notBeforeSec * 1000).toBeLessThanOrEqual(Date.now() + g.clock.offsetMs);
      expect(await codeOf(g.gate.admit(input(new ArcTestClient(successor!, c.challenge, ARC_LIMIT).next())))).toBe("PP_ERR_STORE_LOST");
      expect(arcChallenge()).toBeUndefined();
      expect(await g.registry.metrics()).toMatch(/veil_gateway_nonce_store_tainted_keys [1-9]/);

      // `veil issuer rotate --now` on the key file: its ARC key is named and accepted from its not-before on.
      const [rotated] = await rotateIssuerKeysNow({ keys: arcKeys, tokenTypes: [ARC], keyLifetimeSec: 3600 }, { now: () => Date.now() + g.clock.offsetMs });
      g.clock.offsetMs += 2_000; // past its not-before and the key file's re-read interval
      const fresh = readArcKeys(arcKeys).find((k) => equalBytes(k.keyId, rotated!.tokenKeyId))!;
      const named = arcChallenge();
      expect(named?.tokenKey).toEqual(fresh.tokenKey);
      const next = new ArcTestClient(fresh, named!.challenge, ARC_LIMIT);
      const accepted = next.next();
      await (await g.gate.admit(input(accepted))).settle(true);
      expect(await codeOf(g.gate.admit(input(accepted, new Uint8Array([9]))))).toBe("PP_ERR_TOKEN_REPLAYED");
      // The old keys left the key file: their presentations are refused for that.
      expect(await codeOf(g.gate.admit(input(client.next())))).toBe("PP_ERR_TOKEN_KEY");
    } finally {
      await g.gate.close();
      await store.stop();
    }
  }, 60_000);
});

describe("Redis persistence settings at start-up (tokens.storeDurability)", () => {
  it('refuses a volatile Redis (--appendonly no --save "") with a clear message, and accepts it with "trust"', async () => {
    const volatile = await startRedis({ volatile: true });
    try {
      await expect(gateway(volatile.url)).rejects.toThrow(/appendonly is no.*storeDurability to "trust"/);
      const trusted = await gateway(volatile.url, "trust");
      try {
        // The key of the last `rotate --now` may be valid only from the coming second.
        trusted.clock.offsetMs += 1_000;
        await (await trusted.gate.admit(input(token(currentKey())))).settle(true);
      } finally {
        await trusted.gate.close();
      }
    } finally {
      await volatile.stop();
    }
  });

  it("refuses an evicting maxmemory-policy, and a Redis that blocks CONFIG GET", async () => {
    await redis.command("CONFIG SET maxmemory-policy allkeys-lru");
    try {
      await expect(gateway(redis.url)).rejects.toThrow(/maxmemory-policy is allkeys-lru/);
    } finally {
      await redis.command("CONFIG SET maxmemory-policy noeviction");
    }
    await redis.command("ACL SETUSER default on nopass ~* &* +@all -config");
    try {
      await expect(gateway(redis.url)).rejects.toThrow(/refused CONFIG GET/);
    } finally {
      await redis.command("ACL SETUSER default on nopass ~* &* +@all");
    }
  });
});
