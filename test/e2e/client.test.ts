// End to end: the client library as @divviup/dap's Task.fetch -> the relay -> the gateway (DAP
// policy, Privacy Pass tokens required) -> the DAP-09 leader and helper doubles, which decrypt
// every report. The issuer and its attester hand out the tokens.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createObliviousFetch, createTokenSource, type ObliviousFetch, type TokenSource } from "../../client/index.js";
import { createDapTask, uploadUrl, type DapMeasurement, type VdafName } from "../../client/dap.js";
import { createDapHpkeKey } from "../../demo/dap-aggregator.js";
import { ProtocolError } from "../../core/errors.js";
import { writeKeyFile } from "../../gateway/key-file.js";
import { makeKeyData } from "../helpers/gateway-fixture.js";
import { HELPER, LEADER, STACK_CREDENTIAL, startVeilStack, type VeilStack } from "../helpers/veil-stack.js";

let stack: VeilStack;
const sources: TokenSource[] = [];

beforeAll(async () => {
  stack = await startVeilStack({ credentials: [STACK_CREDENTIAL] });
}, 60_000);
afterAll(async () => {
  for (const t of sources) t.close();
  await stack.stop();
});

function client(credential = STACK_CREDENTIAL, batch = 4): { f: ObliviousFetch; tokens: TokenSource } {
  const tokens = createTokenSource({ issuer: stack.issuerUrl, credential, batch, refillJitterMs: 0 });
  sources.push(tokens);
  const f = createObliviousFetch({ relay: stack.relayUrl, keys: stack.keysUrl, relayKeys: true, tokens, retryDelayMs: 10 });
  return { f, tokens };
}

const CASES: { vdaf: VdafName; measurements: DapMeasurement[]; params: { bits?: number; length?: number; chunkLength?: number } }[] = [
  { vdaf: "count", measurements: [true, false, true], params: {} },
  { vdaf: "sum", measurements: [0, 17, 255], params: { bits: 8 } },
  { vdaf: "histogram", measurements: [0, 3, 1], params: { length: 4, chunkLength: 2 } },
];

describe("end to end: client -> relay -> gateway (tokens required) -> DAP-09 leader/helper doubles", () => {
  for (const c of CASES) {
    it(`uploads Prio3${c.vdaf[0]!.toUpperCase()}${c.vdaf.slice(1)} reports that the leader decrypts, one token each`, async () => {
      const { f, tokens } = client();
      const task = stack.tasks[c.vdaf];
      const dap = createDapTask({ vdaf: c.vdaf, ...c.params, taskId: task.idBase64Url, leader: LEADER, helper: HELPER, timePrecisionSec: 3600, fetch: f });
      await f.prepare(uploadUrl(LEADER, task.idBase64Url));
      expect(tokens.stats().stock).toBe(4);
      const before = stack.leader.reports.get(task.idBase64Url)?.length ?? 0;
      for (const m of c.measurements) await dap.sendMeasurement(m);
      const stored = stack.leader.reports.get(task.idBase64Url) ?? [];
      expect(stored.length - before).toBe(c.measurements.length);
      for (const r of stored) {
        expect(r.leaderShare.length).toBeGreaterThan(0);
        expect(r.helperShare).toBeDefined();
      }
      // One token per report and no 401 fallback: the challenge was learned ahead of time.
      expect(f.stats().challengeRetries).toBe(0);
      expect(tokens.stats().issued - tokens.stats().stock).toBe(c.measurements.length);
    });
  }

  it("fetches both aggregators' HPKE configs through the gateway and never forwards a token", async () => {
    expect(stack.helper.counts.hpkeConfig).toBeGreaterThanOrEqual(1);
    expect(stack.leader.counts.hpkeConfig).toBeGreaterThanOrEqual(1);
    for (const r of [...stack.leader.received, ...stack.helper.received]) {
      expect(r.headers["authorization"]).toBeUndefined();
    }
  });

  it("without prepare(), the first upload learns the challenge from the gateway's 401 and retries once", async () => {
    const { f } = client();
    const task = stack.tasks.count;
    const dap = createDapTask({ vdaf: "count", taskId: task.idBase64Url, leader: LEADER, helper: HELPER, timePrecisionSec: 3600, fetch: f });
    const before = stack.leader.acceptedCount();
    await dap.sendMeasurement(true);
    expect(stack.leader.acceptedCount()).toBe(before + 1);
    expect(f.stats().challengeRetries).toBe(1);
  });

  it("after a key rotation at the leader, the outdatedConfig problem reaches @divviup/dap and its retry lands with a new token", async () => {
    const { f, tokens } = client();
    const task = stack.tasks.count;
    const dap = createDapTask({ vdaf: "count", taskId: task.idBase64Url, leader: LEADER, helper: HELPER, timePrecisionSec: 3600, fetch: f });
    await f.prepare(uploadUrl(LEADER, task.idBase64Url));
    await dap.sendMeasurement(true); // caches the leader's current HPKE config
    stack.leader.rotateKey(task.idBase64Url, await createDapHpkeKey(42));
    stack.leader.dropOldKeys(task.idBase64Url);
    const rejections = stack.leader.rejections.get("outdatedConfig") ?? 0;
    const before = stack.leader.acceptedCount();
    await dap.sendMeasurement(false);
    expect(stack.leader.rejections.get("outdatedConfig")).toBe(rejections + 1);
    expect(stack.leader.acceptedCount()).toBe(before + 1);
    expect(tokens.stats().issued - tokens.stats().stock).toBe(3);
  });

  it("checks the relay's copy of the key configurations against the gateway's", async () => {
    const { f } = client();
    const keys = await f.keys();
    const relayCopy = new Uint8Array(await (await fetch(`${stack.relayUrl}/ohttp-keys`)).arrayBuffer());
    expect(relayCopy).toEqual(keys.bytes);
  });

  it("reports a credential the attester does not know as CLIENT_ERR_CREDENTIAL_REFUSED", async () => {
    const { f } = client("not-a-known-credential");
    const e = await f.prepare(uploadUrl(LEADER, stack.tasks.count.idBase64Url)).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ProtocolError);
    expect((e as ProtocolError).code).toBe("CLIENT_ERR_CREDENTIAL_REFUSED");
  });

  it("keeps the credential and the tokens out of every server log line", () => {
    const all = stack.lines.join("\n");
    expect(all.length).toBeGreaterThan(0);
    expect(all).not.toContain(STACK_CREDENTIAL);
    expect(all).not.toContain("PrivateToken token=");
  });

  it("(last: it leaves the relay's cached keys stale) after the gateway drops its key, refetches the key configuration once (ohttp-key problem through the relay) and lands", async () => {
    const tokens = createTokenSource({ issuer: stack.issuerUrl, credential: STACK_CREDENTIAL, batch: 2, refillJitterMs: 0 });
    sources.push(tokens);
    // No relay check here: the relay caches the old keys for their max-age after a rotation.
    const f = createObliviousFetch({ relay: stack.relayUrl, keys: stack.keysUrl, tokens });
    const task = stack.tasks.count;
    const dap = createDapTask({ vdaf: "count", taskId: task.idBase64Url, leader: LEADER, helper: HELPER, timePrecisionSec: 3600, fetch: f });
    await f.prepare(uploadUrl(LEADER, task.idBase64Url));
    expect((await f.keys()).config.keyId).toBe(1);
    writeKeyFile(stack.keyFile, (await makeKeyData([{ keyId: 2 }])).data);
    await stack.gateway.reloadKeys();
    const before = stack.leader.acceptedCount();
    await dap.sendMeasurement(true);
    expect(stack.leader.acceptedCount()).toBe(before + 1);
    // The two concurrent HPKE-config GETs are both refused; the keys are refetched for them once.
    expect(f.stats().keyRefreshes).toBeGreaterThanOrEqual(1);
    expect((await f.keys()).config.keyId).toBe(2);
  });
});

describe("end to end: the attester's quota", () => {
  let small: VeilStack;
  beforeAll(async () => {
    small = await startVeilStack({ tokensPerWindow: 2 });
  }, 60_000);
  afterAll(async () => small.stop());

  it("reports an exhausted quota as CLIENT_ERR_QUOTA_EXHAUSTED with the issuer's Retry-After", async () => {
    const tokens = createTokenSource({ issuer: small.issuerUrl, credential: STACK_CREDENTIAL, batch: 2, lowWater: 0, refillJitterMs: 0 });
    sources.push(tokens);
    const f = createObliviousFetch({ relay: small.relayUrl, keys: small.keysUrl, tokens });
    const task = small.tasks.count;
    const dap = createDapTask({ vdaf: "count", taskId: task.idBase64Url, leader: LEADER, helper: HELPER, timePrecisionSec: 3600, fetch: f });
    await f.prepare(uploadUrl(LEADER, task.idBase64Url));
    await dap.sendMeasurement(true);
    await dap.sendMeasurement(true);
    const e = await dap.sendMeasurement(true).catch((x: unknown) => x);
    expect((e as ProtocolError).code).toBe("CLIENT_ERR_QUOTA_EXHAUSTED");
    expect(Number((e as ProtocolError).headers["retry-after"])).toBeGreaterThan(0);
    expect(small.leader.acceptedCount()).toBe(2);
  });
});
