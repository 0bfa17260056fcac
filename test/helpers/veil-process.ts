// Runs `node bin/veil.js ...` (needs a built dist/: `npm run build`) and waits for its output.
// Every process started here is killed by `stopAll()` (call it in afterAll/afterEach).

import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

export const VEIL_BIN = fileURLToPath(new URL("../../bin/veil.js", import.meta.url));

export interface VeilProcess {
  child: ChildProcess;
  pid: number;
  /** Everything written so far to stdout and stderr. */
  stdout(): string;
  stderr(): string;
  /** Resolves when stdout (or stderr) contains `text`; rejects if the process exits first or after `timeoutMs`. */
  waitFor(text: string | RegExp, timeoutMs?: number): Promise<void>;
  /** Resolves with the exit code (or the signal name) once the process has exited. */
  exited: Promise<number | string>;
  /** Sends `signal` and waits for the exit; SIGKILL after `killAfterMs`. */
  stop(signal?: NodeJS.Signals, killAfterMs?: number): Promise<number | string>;
}

const running = new Set<VeilProcess>();

export function startVeil(args: string[], env: Record<string, string> = {}): VeilProcess {
  const child = spawn(process.execPath, [VEIL_BIN, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  const waiters = new Set<() => void>();
  child.stdout.on("data", (d: Buffer) => {
    out += d.toString();
    for (const w of waiters) w();
  });
  child.stderr.on("data", (d: Buffer) => {
    err += d.toString();
    for (const w of waiters) w();
  });
  const exited = new Promise<number | string>((resolve) => {
    child.once("exit", (code, signal) => {
      resolve(code ?? signal ?? "unknown");
      for (const w of waiters) w();
    });
  });
  const p: VeilProcess = {
    child,
    pid: child.pid!,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitFor(text, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const hit = typeof text === "string" ? out.includes(text) || err.includes(text) : text.test(out) || text.test(err);
          if (hit) {
            cleanup();
            resolve();
          } else if (child.exitCode !== null || child.signalCode !== null) {
            cleanup();
            reject(new Error(`veil ${args[0]} exited (${child.exitCode ?? child.signalCode}) before printing ${String(text)}:\n${out}\n${err}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`veil ${args[0]} did not print ${String(text)} in ${timeoutMs} ms:\n${out}\n${err}`));
        }, timeoutMs);
        const cleanup = (): void => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    async stop(signal = "SIGTERM", killAfterMs = 15_000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill(signal);
        const timer = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
        const r = await exited;
        clearTimeout(timer);
        running.delete(p);
        return r;
      }
      running.delete(p);
      return exited;
    },
  };
  running.add(p);
  return p;
}

/** Runs a command to completion: its exit code and output. */
export async function runVeil(args: string[], env: Record<string, string> = {}): Promise<{ code: number | string; stdout: string; stderr: string }> {
  const p = startVeil(args, env);
  const code = await p.exited;
  running.delete(p);
  return { code, stdout: p.stdout(), stderr: p.stderr() };
}

/** SIGKILLs every process started here that is still running (and its workers' group). */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((p) => p.stop("SIGKILL", 0)));
}

/** The last JSON log line of `text` that has `msg`, parsed. */
export function logLine(text: string, msg: string): Record<string, unknown> | undefined {
  const lines = text.split("\n").filter((l) => l.startsWith("{"));
  for (const l of lines.reverse()) {
    try {
      const o = JSON.parse(l) as Record<string, unknown>;
      if (o.msg === msg) return o;
    } catch {
      // not JSON
    }
  }
  return undefined;
}
