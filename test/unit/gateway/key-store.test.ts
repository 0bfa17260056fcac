import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { decodeKeyConfigs, encapsulateRequest, decapsulateRequest } from "../../../core/ohttp/index.js";
import { Secret } from "../../../core/secret.js";
import { writeKeyFile, type KeyFileData } from "../../../gateway/key-file.js";
import { KeyStore } from "../../../gateway/key-store.js";
import { makeKeyData } from "../../helpers/gateway-fixture.js";

const HOUR = 3_600_000;

describe("gateway key store", () => {
  it("publishes only active keys, lowest id first, and decrypts with pending and active ones", async () => {
    const { data, configs } = await makeKeyData([{ keyId: 5 }, { keyId: 2 }, { keyId: 9, state: "pending" }]);
    const store = await KeyStore.fromData(data, { retiredGraceSec: 3600 });
    expect(decodeKeyConfigs(store.published().body).map((c) => c.keyId)).toEqual([2, 5]);
    expect(store.published().etag).toMatch(/^"[A-Za-z0-9_-]{22}"$/);
    for (const id of [5, 2, 9]) {
      const { encapsulated } = await encapsulateRequest(configs.get(id)!, new Uint8Array([1, 2, 3]));
      expect((await decapsulateRequest(store, encapsulated)).keyId).toBe(id);
    }
  });

  it("lets a retired key decrypt during the grace period only", async () => {
    let now = Date.parse("2025-01-01T00:00:00Z");
    const { data, configs } = await makeKeyData([{ keyId: 1 }, { keyId: 2, state: "retired", retiredAt: new Date(now).toISOString() }]);
    const store = await KeyStore.fromData(data, { retiredGraceSec: 3600, now: () => now });
    expect(store.get(2)).toBeDefined();
    now += HOUR - 1;
    const { encapsulated } = await encapsulateRequest(configs.get(2)!, new Uint8Array([1]));
    expect((await decapsulateRequest(store, encapsulated)).keyId).toBe(2);
    now += 1;
    expect(store.get(2)).toBeUndefined();
    await expect(decapsulateRequest(store, encapsulated)).rejects.toMatchObject({ code: "OHTTP_ERR_KEY_UNKNOWN" });
    expect(store.states()).toEqual([
      { keyId: 1, kemId: 0x20, state: "active", usable: true },
      { keyId: 2, kemId: 0x20, state: "retired", usable: false },
    ]);
  });

  it("refuses a key set without an active key, or whose public key does not match", async () => {
    const { data } = await makeKeyData([{ keyId: 1, state: "pending" }]);
    await expect(KeyStore.fromData(data, { retiredGraceSec: 1 })).rejects.toMatchObject({ code: "CFG_ERR_KEY_FILE" });
    const { data: a } = await makeKeyData([{ keyId: 1 }]);
    const { data: b } = await makeKeyData([{ keyId: 1 }]);
    const mixed: KeyFileData = { version: 1, keys: [{ ...a.keys[0]!, privateKey: new Secret(b.keys[0]!.privateKey.reveal()) }] };
    await expect(KeyStore.fromData(mixed, { retiredGraceSec: 1 })).rejects.toThrow(/does not match/);
  });

  it("reloads the file atomically and keeps the old keys when the new file is bad", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "veil-ks-")), "keys.json");
    const first = await makeKeyData([{ keyId: 1 }]);
    writeKeyFile(file, first.data);
    const store = await KeyStore.fromFile(file, { retiredGraceSec: 60 });
    // A request decapsulated before the reload still answers with its own context afterwards.
    const { encapsulated, response: client } = await encapsulateRequest(first.configs.get(1)!, new Uint8Array([7]));
    const inFlight = await decapsulateRequest(store, encapsulated);
    const second = await makeKeyData([{ keyId: 3 }]);
    writeKeyFile(file, second.data);
    await store.reload();
    expect(decodeKeyConfigs(store.published().body).map((c) => c.keyId)).toEqual([3]);
    expect(store.get(1)).toBeUndefined();
    expect(await client.decapsulateResponse(await inFlight.response.encapsulateResponse(new Uint8Array([8])))).toEqual(new Uint8Array([8]));
    writeKeyFile(file, (await makeKeyData([{ keyId: 4, state: "pending" }])).data);
    await expect(store.reload()).rejects.toMatchObject({ code: "CFG_ERR_KEY_FILE" });
    expect(decodeKeyConfigs(store.published().body).map((c) => c.keyId)).toEqual([3]);
  });
});
