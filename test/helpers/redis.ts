// A real Redis for tests: Debian's `redis-server` on a free loopback port. By default it keeps its
// data as the gateway's nonce store requires (appendonly yes, noeviction) in a temporary folder;
// `{ volatile: true }` starts one without persistence (`--appendonly no --save ""`).
// Every test that starts one stops it (afterAll).

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestRedis {
  port: number;
  url: string;
  /** Stops the server (SIGTERM, then SIGKILL); the port stays reserved for restart(). */
  stop(): Promise<void>;
  /** Starts it again on the same port, with the data it persisted, or on an empty data folder. */
  restart(options?: { emptyDataDir?: boolean }): Promise<void>;
  /** Sends one inline command and returns the raw reply (e.g. "PTTL key"). */
  command(line: string): Promise<string>;
}

/** A port that was free a moment ago (listen on 0, read it back, close). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function rawCommand(port: number, line: string, timeoutMs = 1000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: "127.0.0.1", port });
    let out = "";
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error("redis command timed out"));
    }, timeoutMs);
    sock.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on("data", (d: Buffer) => {
      out += d.toString("latin1");
      if (out.endsWith("\r\n")) {
        clearTimeout(timer);
        sock.end();
        resolve(out.trimEnd());
      }
    });
    sock.write(line + "\r\n");
  });
}

async function waitUntilUp(port: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`);
    try {
      if ((await rawCommand(port, "PING", 500)) === "+PONG") return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error("redis-server did not start");
    await new Promise((r) => setTimeout(r, 25));
  }
}

export async function startRedis(options: { volatile?: boolean } = {}): Promise<TestRedis> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  let dataDir = mkdtempSync(join(tmpdir(), "veil-redis-"));
  const persistence = options.volatile === true ? ["--appendonly", "no"] : ["--appendonly", "yes", "--appendfsync", "everysec"];
  const start = async (): Promise<void> => {
    child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--dir", dataDir, "--save", "", ...persistence], {
      stdio: "ignore",
    });
    await waitUntilUp(port, child);
  };
  const stop = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (c === undefined || c.exitCode !== null) return;
    const exited = new Promise<void>((r) => c.once("exit", () => r()));
    c.kill("SIGTERM");
    const timer = setTimeout(() => c.kill("SIGKILL"), 3000);
    await exited;
    clearTimeout(timer);
  };
  await start();
  // The data folder goes with the test process (a test may restart the server after stop()).
  process.once("exit", () => rmSync(dataDir, { recursive: true, force: true }));
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      await stop();
    },
    async restart(o = {}) {
      if (o.emptyDataDir === true) {
        rmSync(dataDir, { recursive: true, force: true });
        dataDir = mkdtempSync(join(tmpdir(), "veil-redis-"));
      }
      await start();
    },
    command: (line) => rawCommand(port, line),
  };
}
