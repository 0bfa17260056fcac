// The attester's quota stores (config attester.store): memory, and sqlite:PATH that survives
// restarts and is shared atomically by several processes on one file; store errors fail closed.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import Database from "better-sqlite3";
import { buildSync } from "esbuild";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isProtocolError } from "../../../core/errors.js";
import { Attester, loadStoreKey } from "../../../issuer/attester.js";
import { parseIssuerConfig, type AttesterConfig } from "../../../issuer/config.js";
import { QUOTA_STORE_DEFAULTS, SqliteQuotaStore, type QuotaStore } from "../../../issuer/quota-store.js";

const CRED = "client-credential-1";
const OTHER = "client-credential-2";

function attesterConfig(store: string, tokensPerWindow = 3, windowSec = 100): AttesterConfig {
  return parseIssuerConfig({ name: "issuer.example", attester: { credentials: [CRED, OTHER], tokensPerWindow, windowSec, store } }).attester;
}

async function codeOf(f: () => unknown): Promise<string> {
  try {
    await f();
  } catch (e) {
    if (isProtocolError(e)) return e.code;
    throw e;
  }
  return "ok";
}

let dir: string;
let open: Attester[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "veil-attester-"));
  open = [];
});
afterEach(async () => {
  for (const a of open) await a.close();
  rmSync(dir, { recursive: true, force: true });
});

function attester(store: string, now: () => number, tokensPerWindow = 3, windowSec = 100): Attester {
  const a = new Attester(attesterConfig(store, tokensPerWindow, windowSec), { now });
  open.push(a);
  return a;
}

describe.each(["memory", "sqlite"])("attester quota in %s", (kind) => {
  const store = (): string => (kind === "memory" ? "memory" : `sqlite:${join(dir, "attester.db")}`);

  it("gives each credential tokensPerWindow tokens per window, a released token back, and a fresh window after it ends", async () => {
    let ms = 1_000_000;
    const a = attester(store(), () => ms);
    const c = await a.authenticate(`Bearer ${CRED}`);
    for (let i = 0; i < 3; i++) await a.reserve(c);
    ms += 40_000;
    try {
      await a.reserve(c);
      expect.unreachable();
    } catch (e) {
      expect(isProtocolError(e) && e.code).toBe("ISSUER_ERR_QUOTA");
      expect(isProtocolError(e) && e.headers["retry-after"]).toBe("60");
    }
    expect(await codeOf(async () => a.reserve(await a.authenticate(`Bearer ${OTHER}`)))).toBe("ok");
    ms += 59_999;
    expect(await codeOf(() => a.reserve(c))).toBe("ISSUER_ERR_QUOTA");
    ms += 1; // the window (from the first token) has ended
    const r = await a.reserve(c);
    await a.reserve(c);
    await a.reserve(c);
    expect(await codeOf(() => a.reserve(c))).toBe("ISSUER_ERR_QUOTA");
    r.release();
    r.release(); // only once
    await settled();
    expect(await codeOf(() => a.reserve(c))).toBe("ok");
    expect(await codeOf(() => a.reserve(c))).toBe("ISSUER_ERR_QUOTA");
  });

  it("counts every token of a batch: grants what is left, 429 only when nothing is, and gives back a partial release", async () => {
    let ms = 2_000_000;
    const a = attester(store(), () => ms, 10);
    const c = await a.authenticate(`Bearer ${CRED}`);
    expect((await a.reserve(c, 4)).granted).toBe(4);
    const partial = await a.reserve(c, 8);
    expect(partial.granted).toBe(6);
    expect(await codeOf(() => a.reserve(c, 3))).toBe("ISSUER_ERR_QUOTA");
    partial.release(2); // two tokens of the batch were not issued
    partial.release(5); // only what is still held (4) can go back
    partial.release();
    await settled();
    expect((await a.reserve(c, 20)).granted).toBe(6);
    expect(await codeOf(() => a.reserve(c))).toBe("ISSUER_ERR_QUOTA");
    expect((await a.reserve(await a.authenticate(`Bearer ${OTHER}`), 3)).granted).toBe(3);
    ms += 100_000;
    expect((await a.reserve(c, 25)).granted).toBe(10);
    expect(await codeOf(() => a.reserve(c, 0))).toBe("INTERNAL_ERR");
  });

  it("does not give back a token of a window that has ended", async () => {
    let ms = 1_000_000;
    const a = attester(store(), () => ms);
    const c = await a.authenticate(`Bearer ${CRED}`);
    const old = await a.reserve(c);
    ms += 100_000;
    for (let i = 0; i < 3; i++) await a.reserve(c);
    old.release();
    await settled();
    expect(await codeOf(() => a.reserve(c))).toBe("ISSUER_ERR_QUOTA");
  });

  it("grants a batch as many tokens as the quota has left, and gives back part of it", async () => {
    const a = attester(store(), () => 1_000_000, 5);
    const c = await a.authenticate(`Bearer ${CRED}`);
    expect((await a.reserve(c, 3)).granted).toBe(3);
    const r = await a.reserve(c, 4);
    expect(r.granted).toBe(2);
    expect(await codeOf(() => a.reserve(c, 2))).toBe("ISSUER_ERR_QUOTA");
    r.release(1);
    await settled();
    expect((await a.reserve(c, 9)).granted).toBe(1);
  });
});

/** Lets a release's give-back (run on the next turns) reach the store. */
async function settled(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
}

describe("quota keys", () => {
  it("are keyed hashes: the sqlite file holds neither the credential nor its plain digest, and the key file is created with mode 0600", async () => {
    const file = join(dir, "attester.db");
    const a = attester(`sqlite:${file}`, () => 1_000);
    await a.reserve(await a.authenticate(`Bearer ${CRED}`));
    await a.close();
    expect(statSync(`${file}.key`).mode & 0o777).toBe(0o600);
    const bytes = readFileSync(file);
    expect(bytes.includes(Buffer.from(CRED))).toBe(false);
    const plain = createHash("sha256").update(CRED).digest("hex");
    expect(bytes.includes(Buffer.from(plain))).toBe(false);
    // Another key file: other quota keys (a copy of the database alone does not name anyone).
    const b = new Attester({ ...attesterConfig(`sqlite:${file}`), storeKeyFile: join(dir, "other.key") }, { now: () => 1_000, store: null });
    expect(await b.authenticate(`Bearer ${CRED}`)).not.toBe(await attester(`sqlite:${file}`, () => 1_000).authenticate(`Bearer ${CRED}`));
  });

  it("refuses a key file that others can read, or one too short", () => {
    const key = join(dir, "loose.key");
    writeFileSync(key, "ab".repeat(32), { mode: 0o644 });
    chmodSync(key, 0o644);
    expect(() => new Attester({ ...attesterConfig("memory"), storeKeyFile: key }, { store: null })).toThrow(/mode 0600/);
    const short = join(dir, "short.key");
    writeFileSync(short, "abcd", { mode: 0o600 });
    expect(() => new Attester({ ...attesterConfig("memory"), storeKeyFile: short }, { store: null })).toThrow(/at least 32 bytes/);
  });
});

describe("attester quota in sqlite:PATH", () => {
  it("survives a restart: a new Attester on the same file sees the window's count", async () => {
    const file = join(dir, "sub", "attester.db");
    let ms = 1_000_000;
    const first = attester(`sqlite:${file}`, () => ms);
    const c = await first.authenticate(`Bearer ${CRED}`);
    await first.reserve(c);
    await first.reserve(c);
    await first.close();
    ms += 10_000;
    const second = attester(`sqlite:${file}`, () => ms);
    expect(await second.authenticate(`Bearer ${CRED}`)).toBe(c);
    await second.reserve(c);
    expect(await codeOf(() => second.reserve(c))).toBe("ISSUER_ERR_QUOTA");
    expect(await codeOf(async () => second.reserve(await second.authenticate(`Bearer ${OTHER}`)))).toBe("ok");
    // The file holds keyed hashes, never a credential.
    await second.close();
    for (const f of [file, `${file}-wal`]) {
      let bytes: Buffer;
      try {
        bytes = readFileSync(f);
      } catch {
        continue;
      }
      expect(bytes.includes(Buffer.from(CRED))).toBe(false);
    }
  });

  it("keeps counting when the credentials are reordered in the config (rows are keyed by hash, not index)", async () => {
    const file = join(dir, "attester.db");
    const a = new Attester(parseIssuerConfig({ name: "i", attester: { credentials: [CRED, OTHER], tokensPerWindow: 1, store: `sqlite:${file}` } }).attester, { now: () => 5_000 });
    open.push(a);
    await a.reserve(await a.authenticate(`Bearer ${CRED}`));
    const b = new Attester(parseIssuerConfig({ name: "i", attester: { credentials: [OTHER, CRED], tokensPerWindow: 1, store: `sqlite:${file}` } }).attester, { now: () => 5_000 });
    open.push(b);
    expect(await codeOf(async () => b.reserve(await b.authenticate(`Bearer ${CRED}`)))).toBe("ISSUER_ERR_QUOTA");
  });

  it("purges the rows of ended windows", async () => {
    const file = join(dir, "attester.db");
    let ms = 1_000_000;
    const a = attester(`sqlite:${file}`, () => ms);
    const [c0, c1] = [await a.authenticate(`Bearer ${CRED}`), await a.authenticate(`Bearer ${OTHER}`)];
    await a.reserve(c0);
    ms += 50_000;
    await a.reserve(c1);
    const rows = (): number => {
      const db = new Database(file, { readonly: true, timeout: 5000 });
      try {
        return (db.prepare("SELECT count(*) AS n FROM veil_attester_quota_v2").get() as { n: number }).n;
      } finally {
        db.close();
      }
    };
    expect(rows()).toBe(2);
    ms += 50_000 + QUOTA_STORE_DEFAULTS.purgeIntervalMs; // both windows ended, a purge is due
    await a.reserve(c1);
    expect(rows()).toBe(1);
  });

  it("fails closed: a store that cannot be opened or errors answers ISSUER_ERR_STORE_UNAVAILABLE, never a token", async () => {
    mkdirSync(join(dir, "a-directory"));
    const broken = new Attester({ ...attesterConfig(`sqlite:${join(dir, "a-directory")}`), storeKeyFile: join(dir, "k.key") }, { now: () => 1000 });
    open.push(broken);
    const c = await broken.authenticate(`Bearer ${CRED}`);
    expect(await codeOf(() => broken.reserve(c))).toBe("ISSUER_ERR_STORE_UNAVAILABLE");
    // A release that cannot reach the store keeps the token counted (no throw).
    const failing: QuotaStore = {
      take: () => ({ taken: 1, windowStartMs: 1000 }),
      giveBack: () => {
        throw new Error("store down");
      },
      purge: () => undefined,
      close: () => undefined,
    };
    const withFailing = new Attester(attesterConfig("memory"), { now: () => 1000, store: failing });
    const r = await withFailing.reserve(c);
    expect(() => r.release()).not.toThrow();
    await settled();
    // Another process holds the write lock beyond busy_timeout: 503, then service again after.
    const file = join(dir, "attester.db");
    const store = new SqliteQuotaStore(file);
    const b = new Attester(attesterConfig("memory"), { now: () => 1000, store });
    open.push(b);
    await b.reserve(c);
    const db = new Database(file, { timeout: 5000 });
    db.exec("BEGIN EXCLUSIVE");
    const short = new Attester(attesterConfig("memory"), { now: () => 1000, store: new SqliteQuotaStore(file, { busyTimeoutMs: 50 }) });
    open.push(short);
    expect(await codeOf(() => short.reserve(c))).toBe("ISSUER_ERR_STORE_UNAVAILABLE");
    db.exec("ROLLBACK");
    db.close();
    expect(await codeOf(() => short.reserve(c))).toBe("ok");
  });

  it("never lets two processes on one file together exceed tokensPerWindow under concurrent requests", async () => {
    const file = join(dir, "attester.db");
    const root = resolve(import.meta.dirname, "../../..");
    const source = `
      import { Attester } from "./issuer/attester.ts";
      import { parseIssuerConfig } from "./issuer/config.ts";
      const [file, startAt] = process.argv.slice(2);
      const a = new Attester(parseIssuerConfig({ name: "i", attester: { credentials: ["c1"], tokensPerWindow: 150, windowSec: 3600, store: "sqlite:" + file } }).attester);
      (async () => {
      const c = await a.authenticate("Bearer c1");
      while (Date.now() < Number(startAt)) {}
      let ok = 0, quota = 0, other = 0;
      for (let i = 0; i < 200; i++) {
        try { await a.reserve(c); ok++; } catch (e) { if (e.code === "ISSUER_ERR_QUOTA") quota++; else other++; }
      }
      await a.close();
      process.stdout.write(JSON.stringify({ ok, quota, other }));
      })();
    `;
    const out = buildSync({
      stdin: { contents: source, resolveDir: root, loader: "ts", sourcefile: "attester-child.ts" },
      bundle: true,
      platform: "node",
      format: "cjs",
      external: ["better-sqlite3"],
      write: false,
      logLevel: "silent",
    });
    const script = join(dir, "child.cjs");
    writeFileSync(script, out.outputFiles[0]!.text);
    new SqliteQuotaStore(file).close(); // schema in place before the race
    loadStoreKey(attesterConfig(`sqlite:${file}`)); // and the key file
    const startAt = Date.now() + 1500;
    const run = (): Promise<{ ok: number; quota: number; other: number }> =>
      new Promise((res, rej) => {
        const p = spawn(process.execPath, [script, file, String(startAt)], { env: { ...process.env, NODE_PATH: join(root, "node_modules") } });
        let stdout = "";
        let stderr = "";
        p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
        p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
        p.on("error", rej);
        p.on("close", (code) => (code === 0 ? res(JSON.parse(stdout) as { ok: number; quota: number; other: number }) : rej(new Error(stderr))));
      });
    const results = await Promise.all([run(), run()]);
    expect(results.reduce((n, r) => n + r.other, 0)).toBe(0);
    expect(results.reduce((n, r) => n + r.ok, 0)).toBe(150);
    expect(results.reduce((n, r) => n + r.quota, 0)).toBe(250);
  }, 30_000);
});
