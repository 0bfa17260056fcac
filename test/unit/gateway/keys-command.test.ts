import { chmodSync, existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { toHex } from "../../../core/bytes.js";
import { encodeKeyConfig } from "../../../core/ohttp/index.js";
import {
  addKey,
  nextKeyId,
  parseKeyFile,
  pruneKeys,
  readKeyFile,
  serializeKeyFile,
  setKeyState,
  type KeyFileData,
} from "../../../gateway/key-file.js";
import { keysCommand } from "../../../gateway/keys-command.js";
import { lockFile, withFileLock } from "../../../server/file-lock.js";
import { makeKeyData } from "../../helpers/gateway-fixture.js";

const RFC9458 = JSON.parse(readFileSync(new URL("../../vectors/ohttp-rfc9458.json", import.meta.url), "utf8")) as {
  rfc9458_appendix_a: { gateway_key: { private_key: string }; key_config: string };
};

function tmp(): string {
  return mkdtempSync(join(tmpdir(), "veil-keys-"));
}

interface Run {
  out: string[];
  err: string[];
  code: number | undefined;
}

let clock = Date.parse("2025-01-01T00:00:00Z");
async function veilKeys(args: string[], stdin = ""): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const saved = process.exitCode;
  process.exitCode = undefined;
  const cmd = keysCommand({
    print: (l) => out.push(l),
    printError: (l) => err.push(l),
    now: () => new Date((clock += 1000)),
    readStdin: () => stdin,
  });
  cmd.exitOverride();
  for (const c of cmd.commands) c.exitOverride();
  await cmd.parseAsync(args, { from: "user" });
  const code = process.exitCode;
  process.exitCode = saved;
  return { out, err, code: code === undefined ? undefined : Number(code) };
}

afterEach(() => {
  process.exitCode = undefined;
});

describe("veil keys", () => {
  it("generate creates the file with mode 0600 and one active key", async () => {
    const file = join(tmp(), "sub", "keys.json");
    const r = await veilKeys(["generate", "--out", file]);
    expect(r.err).toEqual([]);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const data = readKeyFile(file);
    expect(data.keys.map((k) => [k.keyId, k.state, k.kemId])).toEqual([[1, "active", 0x20]]);
    expect(data.keys[0]!.activatedAt).toBeDefined();
  });

  it("generate on an existing file rotates: the new key is active, the old one of its KEM retired", async () => {
    const file = join(tmp(), "keys.json");
    await veilKeys(["generate", "--out", file]);
    await veilKeys(["generate", "--out", file, "--kem", "x-wing"]);
    const r = await veilKeys(["generate", "--out", file, "--key-id", "7"]);
    expect(r.out.join()).toContain("retired key(s) 1");
    const data = readKeyFile(file);
    expect(data.keys.map((k) => [k.keyId, k.state])).toEqual([
      [1, "retired"],
      [2, "active"],
      [7, "active"],
    ]);
    expect(data.keys[0]!.retiredAt).toBeDefined();
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it("generate --state pending adds a key that activate later publishes", async () => {
    const file = join(tmp(), "keys.json");
    await veilKeys(["generate", "--out", file]);
    await veilKeys(["generate", "--out", file, "--state", "pending"]);
    expect(readKeyFile(file).keys.map((k) => k.state)).toEqual(["active", "pending"]);
    await veilKeys(["activate", file, "--key-id", "2"]);
    expect(readKeyFile(file).keys.map((k) => k.state)).toEqual(["retired", "active"]);
    const back = await veilKeys(["activate", file, "--key-id", "1"]);
    expect(back.code).toBe(1);
    expect(back.err.join()).toContain("cannot become active");
  });

  it("generate supports p256 and x-wing, and refuses a key id already in use", async () => {
    const file = join(tmp(), "keys.json");
    await veilKeys(["generate", "--out", file, "--kem", "p256", "--key-id", "3"]);
    await veilKeys(["generate", "--out", file, "--kem", "x-wing", "--keep-active"]);
    const data = readKeyFile(file);
    expect(data.keys.map((k) => [k.keyId, k.kemId, k.publicKey.length])).toEqual([
      [3, 0x10, 65],
      [4, 0x647a, 1216],
    ]);
    const dup = await veilKeys(["generate", "--out", file, "--key-id", "3"]);
    expect(dup.code).toBe(1);
    expect(dup.err.join()).toContain("already in the file");
  });

  it("import takes raw private key bytes and derives the RFC 9458 Appendix A key config", async () => {
    const file = join(tmp(), "keys.json");
    const v = RFC9458.rfc9458_appendix_a;
    const r = await veilKeys(["import", "--out", file, "--key-id", "1", "--kem", "x25519", "--private-key", v.gateway_key.private_key, "--aead", "aes-128-gcm,chacha20-poly1305"]);
    expect(r.err).toEqual([]);
    const k = readKeyFile(file).keys[0]!;
    expect(toHex(encodeKeyConfig({ keyId: k.keyId, kemId: k.kemId, publicKey: k.publicKey, symmetric: k.symmetric }))).toBe(v.key_config);
    expect(toHex(k.privateKey.reveal())).toBe(v.gateway_key.private_key);
  });

  it("import reads the private key from stdin with --private-key -", async () => {
    const file = join(tmp(), "keys.json");
    const r = await veilKeys(["import", "--out", file, "--key-id", "5", "--kem", "x25519", "--private-key", "-"], RFC9458.rfc9458_appendix_a.gateway_key.private_key + "\n");
    expect(r.err).toEqual([]);
    expect(readKeyFile(file).keys[0]!.keyId).toBe(5);
  });

  it("import refuses bad hex without echoing it", async () => {
    const file = join(tmp(), "keys.json");
    const r = await veilKeys(["import", "--out", file, "--key-id", "1", "--kem", "x25519", "--private-key", "zz-secret-zz"]);
    expect(r.code).toBe(1);
    expect(r.err.join()).not.toContain("zz-secret-zz");
  });

  it("list shows ids, KEMs, suites and states, never private keys", async () => {
    const file = join(tmp(), "keys.json");
    await veilKeys(["generate", "--out", file]);
    await veilKeys(["generate", "--out", file]);
    const secrets = readKeyFile(file).keys.map((k) => toHex(k.privateKey.reveal()));
    const table = await veilKeys(["list", file]);
    const json = await veilKeys(["list", file, "--json"]);
    const text = table.out.join("\n") + json.out.join("\n");
    for (const s of secrets) expect(text).not.toContain(s);
    expect(text).not.toContain("privateKey");
    expect(table.out[1]).toMatch(/^1\tx25519\tretired\thkdf-sha256\/aes-128-gcm,hkdf-sha256\/chacha20-poly1305\t/);
    expect(table.out[2]).toMatch(/^2\tx25519\tactive\t/);
    const rows = JSON.parse(json.out.join("\n")) as { keyId: number; state: string }[];
    expect(rows.map((r) => [r.keyId, r.state])).toEqual([
      [1, "retired"],
      [2, "active"],
    ]);
  });

  it("refuses a key file readable by group or others", async () => {
    const file = join(tmp(), "keys.json");
    await veilKeys(["generate", "--out", file]);
    chmodSync(file, 0o640);
    const list = await veilKeys(["list", file]);
    expect(list.code).toBe(1);
    expect(list.err.join()).toContain("chmod 600");
    const gen = await veilKeys(["generate", "--out", file]);
    expect(gen.code).toBe(1);
    expect(() => readKeyFile(file)).toThrow(expect.objectContaining({ code: "CFG_ERR_KEY_FILE" }) as Error);
  });

  it("retire and prune remove keys only after the grace period", async () => {
    const file = join(tmp(), "keys.json");
    await veilKeys(["generate", "--out", file]);
    await veilKeys(["generate", "--out", file, "--keep-active"]);
    await veilKeys(["retire", file, "--key-id", "1"]);
    expect((await veilKeys(["prune", file, "--grace-sec", "3600"])).out).toEqual(["nothing to prune"]);
    expect((await veilKeys(["prune", file, "--grace-sec", "0"])).out).toEqual(["removed key(s) 1"]);
    expect(readKeyFile(file).keys.map((k) => k.keyId)).toEqual([2]);
  });

  it("releases the key file's lock after a command, whether it succeeded or failed", async () => {
    const file = join(tmp(), "keys.json");
    expect((await veilKeys(["generate", "--out", file, "--key-id", "3"])).code).toBeUndefined();
    expect(existsSync(`${file}.lock`)).toBe(false);
    const refused = await veilKeys(["generate", "--out", file, "--key-id", "3"]);
    expect(refused.code).toBe(1);
    expect(refused.err).toEqual(["veil keys: key id 3 is already in the file"]);
    expect(existsSync(`${file}.lock`)).toBe(false);
    expect((await veilKeys(["activate", file, "--key-id", "9"])).code).toBe(1);
    expect(existsSync(`${file}.lock`)).toBe(false);
  });
});

describe("key file lock", () => {
  it("is exclusive: a second taker waits for a live holder, then fails with CFG_ERR_KEY_FILE_LOCKED", () => {
    const file = join(tmp(), "keys.json");
    const release = lockFile(file);
    const holder = JSON.parse(readFileSync(`${file}.lock`, "utf8")) as { pid: number; startedAt: string };
    expect(holder.pid).toBe(process.pid);
    expect(statSync(`${file}.lock`).mode & 0o777).toBe(0o600);
    const waits: string[] = [];
    expect(() => lockFile(file, { waitMs: 30, onWait: (w) => waits.push(w) })).toThrow(
      expect.objectContaining({ code: "CFG_ERR_KEY_FILE_LOCKED", message: expect.stringContaining(`locked by pid ${process.pid}`) as string }) as Error,
    );
    expect(waits).toHaveLength(1);
    release();
    expect(existsSync(`${file}.lock`)).toBe(false);
    lockFile(file, { waitMs: 0 })();
  });

  it("withFileLock holds the lock while an async body runs and releases it when the body throws", async () => {
    const file = join(tmp(), "keys.json");
    await expect(
      withFileLock(file, async () => {
        await Promise.resolve();
        expect(existsSync(`${file}.lock`)).toBe(true);
        throw new Error("body failed");
      }),
    ).rejects.toThrow("body failed");
    expect(existsSync(`${file}.lock`)).toBe(false);
  });

  it("treats an unreadable (half-written) lock as held: it is never taken, only waited for", () => {
    const file = join(tmp(), "keys.json");
    writeFileSync(`${file}.lock`, "");
    expect(() => lockFile(file, { waitMs: 20 })).toThrow(
      expect.objectContaining({ code: "CFG_ERR_KEY_FILE_LOCKED", message: expect.stringContaining("locked by an unknown process") as string }) as Error,
    );
    expect(readFileSync(`${file}.lock`, "utf8")).toBe("");
  });
});

describe("key file", () => {
  it("round-trips through JSON, and its records never print private keys", async () => {
    const { data, secrets } = await makeKeyData([{ keyId: 1 }, { keyId: 2, state: "retired" }]);
    const text = serializeKeyFile(data);
    const back = parseKeyFile("f", text);
    expect(serializeKeyFile(back)).toBe(text);
    const printed = JSON.stringify(back) + inspect(back, { depth: 10 });
    for (const s of secrets) expect(printed).not.toContain(toHex(s));
    expect(printed).toContain("[redacted]");
  });

  it("rejects bad files naming the field, never the key material", async () => {
    const { data, secrets } = await makeKeyData([{ keyId: 1 }]);
    const good = JSON.parse(serializeKeyFile(data)) as { keys: Record<string, unknown>[] };
    const cases: [unknown, string][] = [
      [{ ...good, version: 2 }, "version"],
      [{ ...good, extra: 1 }, "extra: unknown field"],
      [{ version: 1, keys: [{ ...good.keys[0], keyId: 256 }] }, "keys[0].keyId"],
      [{ version: 1, keys: [{ ...good.keys[0], state: "dead" }] }, "keys[0].state"],
      [{ version: 1, keys: [{ ...good.keys[0], kemId: 99 }] }, "keys[0].kemId"],
      [{ version: 1, keys: [{ ...good.keys[0], privateKey: "XYZ" }] }, "keys[0].privateKey"],
      [{ version: 1, keys: [{ ...good.keys[0], state: "retired" }] }, "keys[0].retiredAt"],
      [{ version: 1, keys: [good.keys[0], good.keys[0]] }, "appears twice"],
    ];
    for (const [raw, hint] of cases) {
      let message = "";
      try {
        parseKeyFile("f", JSON.stringify(raw));
      } catch (e) {
        expect(e).toMatchObject({ code: "CFG_ERR_KEY_FILE" });
        message = (e as Error).message;
      }
      expect(message).toContain(hint);
      expect(message).not.toContain(toHex(secrets[0]!));
    }
    const broken = serializeKeyFile(data).slice(0, -20);
    expect(() => parseKeyFile("f", broken)).toThrow(/not valid JSON/);
    try {
      parseKeyFile("f", broken);
    } catch (e) {
      expect(inspect(e, { depth: 5 })).not.toContain(toHex(secrets[0]!).slice(0, 16));
    }
  });

  it("picks the next free key id after the highest, wrapping around", async () => {
    const ids = (list: number[]): KeyFileData["keys"] => list.map((keyId) => ({ keyId }) as KeyFileData["keys"][number]);
    expect(nextKeyId([])).toBe(1);
    expect(nextKeyId(ids([1, 2]))).toBe(3);
    expect(nextKeyId(ids([255]))).toBe(0);
    expect(nextKeyId(ids([0, 255]))).toBe(1);
    expect(() => nextKeyId(ids(Array.from({ length: 256 }, (_, i) => i)))).toThrow(/256 key ids/);
  });

  it("moves states forward only and records when", async () => {
    const { data } = await makeKeyData([{ keyId: 1, state: "pending" }]);
    const at = new Date("2025-02-02T00:00:00Z");
    const active = setKeyState(data, 1, "active", at);
    expect(active.keys[0]).toMatchObject({ state: "active", activatedAt: at.toISOString() });
    const retired = setKeyState(active, 1, "retired", at);
    expect(retired.keys[0]).toMatchObject({ state: "retired", retiredAt: at.toISOString() });
    expect(() => setKeyState(retired, 1, "active", at)).toThrow(/cannot become/);
    expect(() => setKeyState(retired, 9, "active", at)).toThrow(/no key with id 9/);
    const { data: pruned, removed } = pruneKeys(retired, 60, new Date(at.getTime() + 61_000));
    expect(removed).toEqual([1]);
    expect(pruned.keys).toEqual([]);
    const { data: two } = await makeKeyData([{ keyId: 1 }]);
    const extra = (await makeKeyData([{ keyId: 2 }])).data.keys[0]!;
    expect(addKey(two, extra, { now: at, keepActive: true }).retired).toEqual([]);
  });

  it("is refused when it is not a regular file or cannot be read", () => {
    const dir = tmp();
    expect(() => readKeyFile(dir)).toThrow(/not a regular file/);
    expect(() => readKeyFile(join(dir, "missing.json"))).toThrow(/ENOENT/);
    const file = join(dir, "k.json");
    writeFileSync(file, "{}", { mode: 0o600 });
    expect(() => readKeyFile(file)).toThrow(/version/);
  });
});
