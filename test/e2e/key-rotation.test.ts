// Key rotation exactly as the README describes it (`veil keys generate --state pending`, `veil keys
// activate`, SIGHUP), twice, under continuous uploads through the relay by clients that compare the
// relay's copy of the keys (`relayKeys: true`): not one upload may fail. New clients keep arriving
// (each fetches the keys afresh, so each rotation is seen at once by the gateway's new clients while
// the relay's copy is still the old one), and long-lived clients keep uploading with the key they
// hold. Needs a built dist/ (the veil command).

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createObliviousFetch, createTokenSource, type TokenSource } from "../../client/index.js";
import { createDapTask, uploadUrl } from "../../client/dap.js";
import { readKeyFile } from "../../gateway/key-file.js";
import { HELPER, LEADER, STACK_CREDENTIAL, startVeilStack, type VeilStack } from "../helpers/veil-stack.js";
import { runVeil } from "../helpers/veil-process.js";
import { until } from "../helpers/wait.js";

let stack: VeilStack;
let tokens: TokenSource;

beforeAll(async () => {
  stack = await startVeilStack({ credentials: [STACK_CREDENTIAL] });
  tokens = createTokenSource({ issuer: stack.issuerUrl, credential: STACK_CREDENTIAL, batch: 20, refillJitterMs: 0 });
}, 60_000);
afterAll(async () => {
  tokens.close();
  await stack.stop();
});

/** The README's rotation: a pending key on the file, activated (the old one retires), SIGHUP. */
async function rotate(): Promise<number> {
  const generated = await runVeil(["keys", "generate", "--out", stack.keyFile, "--state", "pending"]);
  expect(generated.code, generated.stderr).toBe(0);
  const pending = readKeyFile(stack.keyFile).keys.find((k) => k.state === "pending")!;
  const activated = await runVeil(["keys", "activate", stack.keyFile, "--key-id", String(pending.keyId)]);
  expect(activated.code, activated.stderr).toBe(0);
  await stack.gateway.reloadKeys(); // what SIGHUP does
  return pending.keyId;
}

describe("key rotation under continuous uploads with relayKeys: true", () => {
  it("rotates twice and not one upload fails", async () => {
    const task = stack.tasks.count;
    const newClient = () => {
      const f = createObliviousFetch({ relay: stack.relayUrl, keys: stack.keysUrl, relayKeys: true, tokens, retryDelayMs: 10 });
      return { f, dap: createDapTask({ vdaf: "count", taskId: task.idBase64Url, leader: LEADER, helper: HELPER, timePrecisionSec: 3600, fetch: f }) };
    };
    const counts = { ok: 0, failed: 0, newClients: 0 };
    const failures: string[] = [];
    const keyIdsSeen = new Set<number>();
    let running = true;
    const upload = async (c: ReturnType<typeof newClient>): Promise<void> => {
      try {
        await c.dap.sendMeasurement(true);
        counts.ok++;
        keyIdsSeen.add((await c.f.keys()).config.keyId);
      } catch (e) {
        counts.failed++;
        failures.push(String((e as { code?: string }).code ?? e));
      }
    };
    // Two long-lived clients and one loop of new clients, uploading until both rotations are done.
    const longLived = [newClient(), newClient()];
    await longLived[0]!.f.prepare(uploadUrl(LEADER, task.idBase64Url));
    const loops = [
      ...longLived.map(async (c) => {
        while (running) await upload(c);
      }),
      (async () => {
        while (running) {
          counts.newClients++;
          await upload(newClient());
        }
      })(),
    ];
    const waitForUploads = async (n: number): Promise<void> => {
      const target = counts.ok + counts.failed + n;
      await until(() => counts.ok + counts.failed >= target, `${n} more uploads`, 60_000);
    };
    await waitForUploads(6);
    const first = await rotate();
    await waitForUploads(9);
    const second = await rotate();
    await waitForUploads(9);
    running = false;
    await Promise.all(loops);
    process.stdout.write(`key rotation: ${counts.ok} uploads landed, ${counts.failed} failed, ${counts.newClients} new clients, key ids used ${[...keyIdsSeen].join(",")}\n`);
    expect(failures).toEqual([]);
    expect(counts.ok).toBeGreaterThanOrEqual(24);
    // Both new keys were used: the rotations reached clients during the run.
    expect(keyIdsSeen).toContain(first);
    expect(keyIdsSeen).toContain(second);
  }, 240_000);
});
