// The issuer's key file and rotation schedule (RFC 9578 §4): 0600 creation, refusal of unsafe
// permissions and of broken files, successors published a period ahead, expiry, persistence.
import { chmodSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isProtocolError } from "../../../core/errors.js";
import { IssuerKeyStore } from "../../../issuer/key-store.js";
import { TestClock, rsaKeyPool, tempDir } from "../../helpers/issuer.js";

const L = 600; // keyLifetimeSec: successors every 300 s

async function codeOfAsync(f: () => Promise<unknown>): Promise<string> {
  try {
    await f();
  } catch (e) {
    if (isProtocolError(e)) return e.code;
    throw e;
  }
  return "none";
}

let tmp: ReturnType<typeof tempDir>;
beforeEach(() => {
  tmp = tempDir();
});
afterEach(() => tmp.remove());

function open(clock: TestClock, tokenTypes = [2, 1], file = join(tmp.dir, "keys", "issuer-keys.json")): Promise<IssuerKeyStore> {
  return IssuerKeyStore.open({ file, tokenTypes, keyLifetimeSec: L, now: clock.now, generateRsaKey: rsaKeyPool() });
}

describe("IssuerKeyStore", () => {
  it("creates the key file with mode 0600 (and its directory 0700) on first start", async () => {
    const clock = new TestClock();
    const store = await open(clock);
    expect(statSync(store.file).mode & 0o777).toBe(0o600);
    expect(statSync(join(tmp.dir, "keys")).mode & 0o777).toBe(0o700);
    const data = JSON.parse(readFileSync(store.file, "utf8")) as { version: number; keys: { tokenType: number; notBefore: number }[] };
    expect(data.version).toBe(1);
    expect(data.keys.map((k) => [k.tokenType, k.notBefore - clock.sec])).toEqual([
      [1, 0],
      [1, L / 2],
      [2, 0],
      [2, L / 2],
    ]);
  });

  it("refuses a key file that group or others can read, and names the fix", async () => {
    const clock = new TestClock();
    const store = await open(clock);
    chmodSync(store.file, 0o640);
    const err = await open(clock).catch((e: unknown) => e);
    expect(isProtocolError(err) && err.code).toBe("CFG_ERR_KEY_FILE");
    expect((err as Error).message).toContain("chmod 600");
    chmodSync(store.file, 0o604);
    expect(await codeOfAsync(() => open(clock))).toBe("CFG_ERR_KEY_FILE");
  });

  it("refuses broken files without echoing their contents", async () => {
    const file = join(tmp.dir, "k.json");
    const cases = [
      "not json secret-material",
      JSON.stringify({ version: 2, keys: [] }),
      JSON.stringify({ version: 1, keys: [{ tokenType: 3, notBefore: 1, privateKey: "00" }] }),
      JSON.stringify({ version: 1, keys: [{ tokenType: 1, notBefore: 1, privateKey: "zz-secret" }] }),
      JSON.stringify({ version: 1, keys: [{ tokenType: 2, notBefore: 1, privateKey: "AAAA" }] }),
      JSON.stringify({ version: 1, keys: [{ tokenType: 1, notBefore: -1, privateKey: "00".repeat(48) }] }),
    ];
    for (const text of cases) {
      writeFileSync(file, text, { mode: 0o600 });
      const err = await open(new TestClock(), [2, 1], file).catch((e: unknown) => e);
      expect(isProtocolError(err) && err.code).toBe("CFG_ERR_KEY_FILE");
      expect((err as Error).message).not.toContain("secret");
    }
  });

  it("refuses a file whose published token key does not match its private key", async () => {
    const clock = new TestClock();
    const store = await open(clock);
    const data = JSON.parse(readFileSync(store.file, "utf8")) as { keys: { tokenKey: string }[] };
    [data.keys[0]!.tokenKey, data.keys[1]!.tokenKey] = [data.keys[1]!.tokenKey, data.keys[0]!.tokenKey];
    writeFileSync(store.file, JSON.stringify(data), { mode: 0o600 });
    expect(await codeOfAsync(() => open(clock))).toBe("CFG_ERR_KEY_FILE");
  });

  it("rotates: the successor is published a period ahead, keys expire a lifetime after not-before", async () => {
    const clock = new TestClock();
    const t0 = clock.sec;
    const store = await open(clock, [2]);
    const nbs = (): number[] => store.published().map((k) => k.notBefore - t0);
    expect(nbs()).toEqual([300, 0]);
    expect(store.secondsUntilChange()).toBe(300);

    clock.advance(299);
    await store.refresh();
    expect(nbs()).toEqual([300, 0]);
    expect(store.secondsUntilChange()).toBe(1);

    clock.advance(1); // t = 300: key 1 becomes valid, key 2 is published ahead
    await store.refresh();
    expect(nbs()).toEqual([600, 300, 0]);

    clock.advance(300); // t = 600: key 0 expires
    await store.refresh();
    expect(nbs()).toEqual([900, 600, 300]);
    expect(store.secondsUntilChange()).toBe(300);

    // Persisted: a restart sees the same keys.
    const again = await open(clock, [2]);
    expect(again.published().map((k) => k.tokenKeyId)).toEqual(store.published().map((k) => k.tokenKeyId));
  });

  it("avoids truncated key id collisions among keys of one type", async () => {
    const clock = new TestClock();
    const store = await open(clock, [2]);
    for (let i = 0; i < 6; i++) {
      clock.advance(L / 2);
      await store.refresh();
      const ids = store.published().map((k) => k.tokenKeyId[31]);
      expect(new Set(ids).size).toBe(ids.length);
    }
  });

  it("after downtime longer than a lifetime, starts over with a key valid now", async () => {
    const clock = new TestClock();
    const store = await open(clock, [1]);
    clock.advance(10 * L);
    const again = await open(clock, [1]);
    expect(again.published().map((k) => k.notBefore - clock.sec)).toEqual([L / 2, 0]);
    expect(store.file).toBe(again.file);
  });

  it("after shorter downtime, keeps the valid key and publishes a successor before it expires", async () => {
    const clock = new TestClock();
    const t0 = clock.sec;
    await open(clock, [1]); // keys at nb 0 and 300
    clock.advance(700); // key 0 expired, key 1 valid until 900, its successor's slot (600) missed
    const again = await open(clock, [1]);
    // The successor comes a period from now, but no later than key 1's expiry: no gap.
    expect(again.published().map((k) => k.notBefore - t0)).toEqual([900, 300]);
  });

  it("finds keys by type and truncated id, only while they are published", async () => {
    const clock = new TestClock();
    const store = await open(clock);
    const k = store.published().find((x) => x.notBefore <= clock.sec)!;
    expect(store.find(k.tokenType, k.tokenKeyId[31]!)).toBe(k);
    expect(store.find(k.tokenType === 1 ? 2 : 1, k.tokenKeyId[31]!)?.tokenKeyId).not.toEqual(k.tokenKeyId);
    clock.advance(L + 1);
    await store.refresh();
    expect(store.find(k.tokenType, k.tokenKeyId[31]!)?.tokenKeyId).not.toEqual(k.tokenKeyId);
  });

  it("rotate --now: a key valid from the next whole second replaces every other, nothing is valid in between, the schedule resumes from it", async () => {
    for (const intoSecondMs of [0, 1, 999]) {
      const clock = new TestClock();
      const store = await open(clock, [2, 1]);
      const old = store.published().map((k) => k.tokenKeyId);
      clock.ms += 123_000 + intoSecondMs;
      const t = clock.sec;
      const fresh = await store.rotateNow();
      // Strictly after the moment of the rotation, even one that falls on a whole second.
      expect(fresh.map((k) => k.notBefore)).toEqual([t + 1, t + 1]);
      expect(fresh.every((k) => k.notBefore * 1000 > clock.ms)).toBe(true);
      // Published at once (ahead of its not-before, like a successor), alone: no key valid now is added.
      expect(store.published().map((k) => [k.tokenType, k.notBefore])).toEqual([[2, t + 1], [1, t + 1]]);
      expect(store.published().some((k) => old.some((id) => id.every((b, i) => b === k.tokenKeyId[i])))).toBe(false);
      expect(store.secondsUntilChange()).toBe(1);
      await store.refresh();
      expect(store.published().length).toBe(2);
      // The file says the same (what the running issuer and the gateways read).
      const file = JSON.parse(readFileSync(store.file, "utf8")) as { keys: { notBefore: number }[] };
      expect(file.keys.map((k) => k.notBefore)).toEqual([t + 1, t + 1]);
      // From its not-before on, the schedule resumes: its successor a period ahead.
      clock.ms = (t + 1) * 1000;
      await store.refresh();
      expect(store.published().map((k) => [k.tokenType, k.notBefore - t])).toEqual([[2, 1 + L / 2], [2, 1], [1, 1 + L / 2], [1, 1]]);
    }
  });

  it("a scheduled step due right after `rotate --now` in another process takes the rotation instead of writing the old keys back", async () => {
    const clock = new TestClock();
    const t0 = clock.sec;
    const running = await open(clock, [2]);
    clock.ms = (t0 + 299) * 1000 + 500;
    await running.refresh(); // looks for external changes (at most once a second): none
    const cli = await open(clock, [2]);
    const fresh = await cli.rotateNow();
    clock.ms = (t0 + 300) * 1000; // the successor's not-before: a step is due, within the second
    await running.refresh();
    const ids = (keys: { tokenKeyId: Uint8Array }[]): string[] => keys.map((k) => Buffer.from(k.tokenKeyId).toString("hex"));
    const file = JSON.parse(readFileSync(running.file, "utf8")) as { keys: { tokenKey: string }[] };
    expect(file.keys.length).toBe(1);
    expect(ids(running.published())).toEqual(ids(fresh));
    // The rotated key (valid from t0 + 300) gets its successor on schedule, a period ahead.
    expect(fresh[0]!.notBefore - t0).toBe(300);
    clock.ms = (t0 + 301) * 1000;
    await running.refresh();
    expect(running.published().map((k) => k.notBefore - t0)).toEqual([300 + L / 2, 300]);
  });

  it("never prints private keys", async () => {
    const store = await open(new TestClock());
    const k = store.published()[0]!;
    expect(JSON.stringify(k.privateKey)).toBe('"[redacted]"');
    expect(String(k.privateKey)).toBe("[redacted]");
  });
});
