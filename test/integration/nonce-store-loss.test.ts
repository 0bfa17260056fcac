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
import { fromBase64Url, toBase64Url } from "../../core/bytes.js";
import { isProtocolError } from "../../core/errors.js";
import type { BhttpRequest } from "../../core/bhttp/index.js";
import { formatAuthorization, tokenKeyId, type TokenChallenge } from "../../core/privacypass/index.js";
import { parseGatewayConfig } from "../../gateway/config.js";
import type { GateInput } from "../../gateway/gate-contract.js";
import type { TokenGate } from "../../gateway/gate.js";
import { checkPolicy, compileTargets, resolveTarget } from "../../gateway/policy.js";
import { createTokenGate } from "../../gateway/tokens.js";
import { startIssuer, type StartedIssuer } from "../../issuer/main.js";
import { createLogger } from "../../server/logging.js";
import { captureLines, issuerConfig, rsaKeyPool } from "../helpers/issuer.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import { makeToken, type TestIssuerKey } from "../helpers/tokens.js";
import { VEIL_BIN } from "../helpers/veil-process.js";
import { execFile } from "node:child_process";
import { until } from "../helpers/wait.js";

const TASK = "A".repeat(43);
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

/** The issuer's current type 2 key, read from its key file (tokens signed with it are what the issuer would issue). */
function currentKey(): TestIssuerKey {
  const doc = JSON.parse(readFileSync(keysFile, "utf8")) as { keys: { tokenType: number; notBefore: number; tokenKey: string; privateKey: string }[] };
  const now = Date.now() / 1000;
  const k = doc.keys.filter((x) => x.tokenType === 2 && x.notBefore <= now).sort((a, b) => b.notBefore - a.notBefore)[0]!;
  const tokenKey = fromBase64Url(k.tokenKey)!;
  return { tokenType: 2, tokenKey, tokenKeyId: tokenKeyId(tokenKey), rsaPrivateKey: createPrivateKey({ key: Buffer.from(k.privateKey, "base64"), format: "der", type: "pkcs8" }) };
}

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

async function gateway(store: string, durability: "verify" | "trust" = "verify"): Promise<Gateway> {
  const config = parseGatewayConfig({
    keys: join(dir, "unused-keys.json"),
    targets: { "https://leader.example": "http://127.0.0.1:1" },
    tokens: {
      required: true,
      issuers: [{ name: "issuer.example", directory: `${issuer.url}/.well-known/private-token-issuer-directory`, keyLifetimeSec: 3600 }],
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
  const key = toBase64Url(currentKey().tokenKey);
  await until(async () => {
    const doc = (await (await fetch(`${issuer.url}/.well-known/private-token-issuer-directory`, { cache: "no-store" })).json()) as { "token-keys": { "token-key": string }[] };
    return doc["token-keys"].some((k) => k["token-key"] === key);
  }, "the issuer serving the rotated key");
  return stdout;
}

beforeAll(async () => {
  redis = await startRedis();
  keysFile = join(dir, "issuer-keys.json");
  const config = issuerConfig(dir, { keyLifetimeSec: 3600 });
  issuerConfigFile = join(dir, "issuer.json");
  writeFileSync(issuerConfigFile, JSON.stringify({ name: "issuer.example", keys: keysFile, keyLifetimeSec: 3600, attester: { credentials: ["c"] } }));
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

      // The operator's way out: an emergency rotation; gateways refetch (bypassing caches) and accept the new key.
      // Not-before is in whole seconds: a key whose not-before second is the loss's own may have
      // been valid before the loss, so the gate refuses it (an operator is never that quick; a
      // test can be). The rotation happens in a later second than the loss.
      await until(() => Date.now() >= (Math.floor(lossNoticedBy / 1000) + 1) * 1000, "a second after the loss");
      expect(await rotateNow()).toMatch(/token type 2: new key/);
      const after = currentKey();
      expect(after.tokenKeyId).not.toEqual(before.tokenKeyId);
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
    await rotateNow();
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

describe("Redis persistence settings at start-up (tokens.storeDurability)", () => {
  it('refuses a volatile Redis (--appendonly no --save "") with a clear message, and accepts it with "trust"', async () => {
    const volatile = await startRedis({ volatile: true });
    try {
      await expect(gateway(volatile.url)).rejects.toThrow(/appendonly is no.*storeDurability to "trust"/);
      const trusted = await gateway(volatile.url, "trust");
      try {
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
