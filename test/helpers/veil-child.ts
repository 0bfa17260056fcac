// `node bin/veil.js <component> --config FILE` as a child process (needs a built dist/: `npm run
// build`), its URL read from its "<component> listening" log line. Every test that spawns one kills
// it (killAllVeilChildren in afterAll).

import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";

export interface VeilChild {
  url: string;
  port: number;
  child: ChildProcess;
  /** Everything the process wrote to stdout and stderr. */
  output: string[];
  /** Resolves with the exit code and signal once the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Sends `signal` (unless it already exited) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running = new Set<VeilChild>();

/** Writes `config` as JSON to `file` and starts the component with it (`nodeArgs` go to node itself). */
export async function spawnVeil(component: "gateway" | "relay" | "issuer", file: string, config: unknown, args: string[] = [], nodeArgs: string[] = []): Promise<VeilChild> {
  writeFileSync(file, JSON.stringify(config));
  const child = spawn(process.execPath, [...nodeArgs, "bin/veil.js", component, "--config", file, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const output: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${component} did not start: ${output.join("")}`)), 20_000);
    const listening = new RegExp(`"url":"(https?://[^"]+)"[^\\n]*"${component} listening"|"${component} listening"[^\\n]*"url":"(https?://[^"]+)"`);
    let started = false;
    child.stdout.on("data", (d: Buffer) => {
      output.push(d.toString());
      if (started) return;
      const m = listening.exec(output.join(""));
      if (m !== null) {
        started = true;
        clearTimeout(timer);
        resolve(m[1] ?? m[2]!);
      }
    });
    child.stderr.on("data", (d: Buffer) => output.push(d.toString()));
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${component} exited with ${code ?? signal}: ${output.join("")}`));
    });
  });
  const p: VeilChild = {
    url,
    port: Number(new URL(url).port),
    child,
    output,
    exited,
    kill: async (signal = "SIGTERM") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const r = await exited;
      running.delete(p);
      return r;
    },
  };
  running.add(p);
  return p;
}

/** SIGKILLs every process spawned here that is still running (for afterAll). */
export async function killAllVeilChildren(): Promise<void> {
  await Promise.all([...running].map((p) => p.kill("SIGKILL")));
}
