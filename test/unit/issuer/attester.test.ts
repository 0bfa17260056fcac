// The attester's quota stores (config attester.store): memory, and sqlite:PATH that survives
// restarts and is shared atomically by several processes on one file; store errors fail closed.
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import Database from "better-sqlite3";
import { buildSync } from "esbuild";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isProtocolError } from "../../../core/errors.js";
import { Attester } from "../../../issuer/attester.js";
import { parseIssuerConfig, type AttesterConfig } from "../../../issuer/config.js";
import { QUOTA_STORE_DEFAULTS, SqliteQuotaStore, type QuotaStore } from "../../../issuer/quota-store.js";

const CRED = "client-credential-1";
const OTHER = "client-credential-2";

function attesterConfig(store: string, tokensPerWindow = 3, windowSec = 100): AttesterConfig {
  return parseIssuerConfig({ name: "issuer.example", attester: { credentials: [CRED, OTHER], tokensPerWindow, windowSec, store } }).attester;
}

function codeOf(f: () => unknown): string {
  try {
    f();
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
afterEach(() => {
  for (const a of open) a.close();
  rmSync(dir, { recursive: true, force: true });
});

function attester(store: string, now: () => number, tokensPerWindow = 3, windowSec = 100): Attester {
  const a = new Attester(attesterConfig(store, tokensPerWindow, windowSec), now);
  open.push(a);
  return a;
}

describe.each(["memory", "sqlite"])("attester quota in %s", (kind) => {
  const store = (): string => (kind === "memory" ? "memory" : `sqlite:${join(dir, "attester.db")}`);

  it("gives each credential tokensPerWindow tokens per window, a released token back, and a fresh window after it ends", () => {
    let ms = 1_000_000;
    const a = attester(store(), () => ms);
    const c = a.authenticate(`Bearer ${CRED}`);
    for (let i = 0; i < 3; i++) a.reserve(c);
    ms += 40_000;
    try {
      a.reserve(c);
      expect.unreachable();
    } catch (e) {
      expect(isProtocolError(e) && e.code).toBe("ISSUER_ERR_QUOTA");
      expect(isProtocolError(e) && e.headers["retry-after"]).toBe("60");
    }
    expect(codeOf(() => a.reserve(a.authenticate(`Bearer ${OTHER}`)))).toBe("ok");
    ms += 59_999;
    expect(codeOf(() => a.reserve(c))).toBe("ISSUER_ERR_QUOTA");
    ms += 1; // the window (from the first token) has ended
    const r = a.reserve(c);
    a.reserve(c);
    a.reserve(c);
    expect(codeOf(() => a.reserve(c))).toBe("ISSUER_ERR_QUOTA");
    r.release();
    r.release(); // only once
    expect(codeOf(() => a.reserve(c))).toBe("ok");
    expect(codeOf(() => a.reserve(c))).toBe("ISSUER_ERR_QUOTA");
  });

  it("counts every token of a batch: grants what is left, 429 only when nothing is, and gives back a partial release", () => {
    let ms = 2_000_000;
    const a = attester(store(), () => ms, 10);
    const c = a.authenticate(`Bearer ${CRED}`);
    expect(a.reserve(c, 4).granted).toBe(4);
    const partial = a.reserve(c, 8);
    expect(partial.granted).toBe(6);
    expect(codeOf(() => a.reserve(c, 3))).toBe("ISSUER_ERR_QUOTA");
    partial.release(2); // two tokens of the batch were not issued
    partial.release(5); // only what is still held (4) can go back
    partial.release();
    expect(a.reserve(c, 20).granted).toBe(6);
    expect(codeOf(() => a.reserve(c))).toBe("ISSUER_ERR_QUOTA");
    expect(a.reserve(a.authenticate(`Bearer ${OTHER}`), 3).granted).toBe(3);
    ms += 100_000;
    expect(a.reserve(c, 25).granted).toBe(10);
    expect(codeOf(() => a.reserve(c, 0))).toBe("INTERNAL_ERR");
  });

  it("does not give back a token of a window that has ended", () => {
    let ms = 1_000_000;
    const a = attester(store(), () => ms);
    const old = a.reserve(0);
    ms += 100_000;
    for (let i = 0; i < 3; i++) a.reserve(0);
    old.release();
    expect(codeOf(() => a.reserve(0))).toBe("ISSUER_ERR_QUOTA");
  });
});

describe("attester quota in sqlite:PATH", () => {
  it("survives a restart: a new Attester on the same file sees the window's count", () => {
    const file = join(dir, "sub", "attester.db");
    let ms = 1_000_000;
    const first = attester(`sqlite:${file}`, () => ms);
    first.reserve(0);
    first.reserve(0);
    first.close();
    ms += 10_000;
    const second = attester(`sqlite:${file}`, () => ms);
    second.reserve(0);
    expect(codeOf(() => second.reserve(0))).toBe("ISSUER_ERR_QUOTA");
    expect(codeOf(() => second.reserve(1))).toBe("ok");
    // The file holds digests, never a credential.
    second.close();
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

  it("keeps counting when the credentials are reordered in the config (rows are keyed by digest, not index)", () => {
    const file = join(dir, "attester.db");
    const a = new Attester(parseIssuerConfig({ name: "i", attester: { credentials: [CRED, OTHER], tokensPerWindow: 1, store: `sqlite:${file}` } }).attester, () => 5_000);
    open.push(a);
    a.reserve(a.authenticate(`Bearer ${CRED}`));
    const b = new Attester(parseIssuerConfig({ name: "i", attester: { credentials: [OTHER, CRED], tokensPerWindow: 1, store: `sqlite:${file}` } }).attester, () => 5_000);
    open.push(b);
    expect(codeOf(() => b.reserve(b.authenticate(`Bearer ${CRED}`)))).toBe("ISSUER_ERR_QUOTA");
  });

  it("purges the rows of ended windows", () => {
    const file = join(dir, "attester.db");
    let ms = 1_000_000;
    const a = attester(`sqlite:${file}`, () => ms);
    a.reserve(0);
    ms += 50_000;
    a.reserve(1);
    const rows = (): number => {
      const db = new Database(file, { readonly: true, timeout: 5000 });
      try {
        return (db.prepare("SELECT count(*) AS n FROM veil_attester_quota").get() as { n: number }).n;
      } finally {
        db.close();
      }
    };
    expect(rows()).toBe(2);
    ms += 50_000 + QUOTA_STORE_DEFAULTS.purgeIntervalMs; // both windows ended, a purge is due
    a.reserve(1);
    expect(rows()).toBe(1);
  });

  it("fails closed: a store that cannot be opened or errors answers ISSUER_ERR_STORE_UNAVAILABLE, never a token", () => {
    mkdirSync(join(dir, "a-directory"));
    const broken = attester(`sqlite:${join(dir, "a-directory")}`, () => 1000);
    expect(codeOf(() => broken.reserve(0))).toBe("ISSUER_ERR_STORE_UNAVAILABLE");
    // A release that cannot reach the store keeps the token counted (no throw).
    const failing: QuotaStore = {
      take: () => ({ taken: 1, windowStartMs: 1000 }),
      giveBack: () => {
        throw new Error("store down");
      },
      purge: () => undefined,
      close: () => undefined,
    };
    expect(() => new Attester(attesterConfig("memory"), () => 1000, failing).reserve(0).release()).not.toThrow();
    // Another process holds the write lock beyond busy_timeout: 503, then service again after.
    const file = join(dir, "attester.db");
    const store = new SqliteQuotaStore(file);
    const b = new Attester(attesterConfig("memory"), () => 1000, store);
    open.push(b);
    b.reserve(0);
    const db = new Database(file, { timeout: 5000 });
    db.exec("BEGIN EXCLUSIVE");
    const short = new Attester(attesterConfig("memory"), () => 1000, new SqliteQuotaStore(file, { busyTimeoutMs: 50 }));
    open.push(short);
    expect(codeOf(() => short.reserve(0))).toBe("ISSUER_ERR_STORE_UNAVAILABLE");
    db.exec("ROLLBACK");
    db.close();
    expect(codeOf(() => short.reserve(0))).toBe("ok");
  });

  it("never lets two processes on one file together exceed tokensPerWindow under concurrent requests", async () => {
    const file = join(dir, "attester.db");
    const root = resolve(import.meta.dirname, "../../..");
    const source = `
      import { Attester } from "./issuer/attester.ts";
      import { parseIssuerConfig } from "./issuer/config.ts";
      const [file, startAt] = process.argv.slice(2);
      const a = new Attester(parseIssuerConfig({ name: "i", attester: { credentials: ["c1"], tokensPerWindow: 150, windowSec: 3600, store: "sqlite:" + file } }).attester);
      while (Date.now() < Number(startAt)) {}
      let ok = 0, quota = 0, other = 0;
      for (let i = 0; i < 200; i++) {
        try { a.reserve(0); ok++; } catch (e) { if (e.code === "ISSUER_ERR_QUOTA") quota++; else other++; }
      }
      a.close();
      process.stdout.write(JSON.stringify({ ok, quota, other }));
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
