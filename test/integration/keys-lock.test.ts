// `veil keys` commands running at once on one key file, as real processes (`node bin/veil.js keys`,
// needs `npm run build`): each read-modify-write holds `<file>.lock`, so no command's key is lost;
// a live holder makes a command wait and then fail clearly; a dead holder's lock is taken over.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { readKeyFile } from "../../gateway/key-file.js";
import { FILE_LOCK_WAIT_MS } from "../../server/file-lock.js";
import { until } from "../helpers/wait.js";

const VEIL = new URL("../../bin/veil.js", import.meta.url).pathname;
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

interface Running {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  done: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

function veilKeys(args: string[]): Running {
  const child = spawn(process.execPath, [VEIL, "keys", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
  child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
  return { child, stdout: () => stdout, stderr: () => stderr, done };
}

/** The pid of a process that has exited (so `process.kill(pid, 0)` throws ESRCH). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
  await new Promise((resolve) => child.once("exit", resolve));
  const pid = child.pid!;
  expect(() => process.kill(pid, 0)).toThrow(expect.objectContaining({ code: "ESRCH" }) as Error);
  return pid;
}

function writeLock(path: string, pid: number): void {
  writeFileSync(path, JSON.stringify({ pid, startedAt: new Date().toISOString() }), { mode: 0o600 });
}

const KEY_LINE = /^key (\d+) \(x25519, active\) written to /;

describe("veil keys on one key file from several processes", () => {
  it("two processes generating at once, many rounds: every key either one reported is in the final file", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "veil-keys-lock-")), "keys.json");
    const rounds = 12;
    const worker = async (): Promise<number[]> => {
      const ids: number[] = [];
      for (let i = 0; i < rounds; i++) {
        const r = await veilKeys(["generate", "--out", file, "--keep-active"]).done;
        expect(r.code, r.stderr).toBe(0);
        const m = KEY_LINE.exec(r.stdout);
        expect(m, r.stdout).not.toBeNull();
        ids.push(Number(m![1]));
      }
      return ids;
    };
    const [a, b] = await Promise.all([worker(), worker()]);
    const reported = [...a, ...b].sort((x, y) => x - y);
    expect(new Set(reported).size).toBe(2 * rounds);
    const inFile = readKeyFile(file)
      .keys.map((k) => k.keyId)
      .sort((x, y) => x - y);
    expect(inFile).toEqual(reported);
    expect(existsSync(`${file}.lock`)).toBe(false);
  }, 120_000);

  it("a lock held by a live process makes a command wait, then fail with one clear line and exit code 1", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "veil-keys-lock-")), "keys.json");
    expect((await veilKeys(["generate", "--out", file]).done).code).toBe(0);
    const before = readFileSync(file, "utf8");
    writeLock(`${file}.lock`, process.pid); // this test process: alive
    const { startedAt } = JSON.parse(readFileSync(`${file}.lock`, "utf8")) as { startedAt: string };
    const r = await veilKeys(["prune", file, "--grace-sec", "0"]).done;
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    const lines = r.stderr.trim().split("\n");
    expect(lines).toEqual([
      expect.stringMatching(new RegExp(`^veil keys: ${file}: locked by pid ${process.pid} \\(since .+\\); waiting up to 5 s$`)),
      `veil keys: ${file}: locked by pid ${process.pid} (since ${startedAt}); gave up after ${FILE_LOCK_WAIT_MS / 1000} s (if no veil command is changing this file, remove ${file}.lock)`,
    ]);
    expect(readFileSync(file, "utf8")).toBe(before);
    expect(existsSync(`${file}.lock`)).toBe(true); // a live holder's lock is never taken
  }, 60_000);

  it("a command waiting for a live holder goes on once the lock is released within the wait", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "veil-keys-lock-")), "keys.json");
    expect((await veilKeys(["generate", "--out", file]).done).code).toBe(0);
    writeLock(`${file}.lock`, process.pid);
    const run = veilKeys(["generate", "--out", file]);
    await until(() => run.stderr().includes("waiting up to"), "the command to wait for the lock");
    expect(readKeyFile(file).keys.map((k) => k.keyId)).toEqual([1]); // nothing written while waiting
    unlinkSync(`${file}.lock`);
    const r = await run.done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^key 2 \(x25519, active\) written to .*; retired key\(s\) 1$/m);
    expect(readKeyFile(file).keys.map((k) => [k.keyId, k.state])).toEqual([
      [1, "retired"],
      [2, "active"],
    ]);
    expect(existsSync(`${file}.lock`)).toBe(false);
  }, 60_000);

  it("a lock left by a process that died is taken over without waiting (also a stale break file)", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "veil-keys-lock-")), "keys.json");
    writeLock(`${file}.lock`, await deadPid());
    const r1 = await veilKeys(["generate", "--out", file]).done;
    expect(r1.code, r1.stderr).toBe(0);
    expect(r1.stderr).toBe("");
    expect(existsSync(`${file}.lock`)).toBe(false);

    // A taker-over that died while holding the short-lived break file does not block either.
    const dead = await deadPid();
    writeLock(`${file}.lock`, dead);
    writeLock(`${file}.lock.break`, dead);
    const r2 = await veilKeys(["generate", "--out", file]).done;
    expect(r2.code, r2.stderr).toBe(0);
    expect(readKeyFile(file).keys.map((k) => k.keyId)).toEqual([1, 2]);
    expect(existsSync(`${file}.lock`)).toBe(false);
    expect(existsSync(`${file}.lock.break`)).toBe(false);
  }, 60_000);
});
