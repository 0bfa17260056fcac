import { spawnSync } from "node:child_process";
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { BufferedLines, LOG_BUFFER_BYTES, LOG_FLUSH_MS, createLogger } from "../../../server/logging.js";

const dir = mkdtempSync(join(tmpdir(), "veil-logging-"));
let fileNo = 0;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A file to log into, and its content so far. */
function logFile(): { fd: number; read(): string; close(): void } {
  const path = join(dir, `log-${fileNo++}`);
  const fd = openSync(path, "w");
  return { fd, read: () => readFileSync(path, "utf8"), close: () => closeSync(fd) };
}

describe("BufferedLines (the servers' log destination)", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("holds lines back, then writes them together within LOG_FLUSH_MS", () => {
    const f = logFile();
    const lines = new BufferedLines(f.fd);
    lines.write("one\n");
    lines.write("two\n");
    expect(f.read()).toBe("");
    vi.advanceTimersByTime(LOG_FLUSH_MS - 1);
    expect(f.read()).toBe("");
    vi.advanceTimersByTime(1);
    expect(f.read()).toBe("one\ntwo\n");
    // The next line starts a new wait.
    lines.write("three\n");
    expect(f.read()).toBe("one\ntwo\n");
    vi.advanceTimersByTime(LOG_FLUSH_MS);
    expect(f.read()).toBe("one\ntwo\nthree\n");
    f.close();
  });

  it("writes at once when LOG_BUFFER_BYTES are pending", () => {
    const f = logFile();
    const lines = new BufferedLines(f.fd);
    const line = `${"x".repeat(99)}\n`;
    const n = Math.ceil(LOG_BUFFER_BYTES / line.length);
    for (let i = 0; i < n - 1; i++) lines.write(line);
    expect(f.read()).toBe("");
    lines.write(line);
    expect(f.read()).toBe(line.repeat(n));
    f.close();
  });

  it("flush() writes what is pending now, through a pino logger too", () => {
    const f = logFile();
    const log = createLogger("gateway", { destination: new BufferedLines(f.fd) });
    log.info({ route: "/gateway" }, "request");
    expect(f.read()).toBe("");
    const done = vi.fn();
    log.flush(done);
    expect(done).toHaveBeenCalledOnce();
    expect(JSON.parse(f.read())).toMatchObject({ component: "gateway", route: "/gateway", msg: "request" });
    f.close();
  });
});

describe("buffered log lines when the process ends", () => {
  // The built module (dist/), as the servers run it.
  const built = join(process.cwd(), "dist", "server", "logging.js");
  const run = (end: string): { stdout: string; status: number | null } => {
    const script = `import { createLogger } from ${JSON.stringify(built)};
      const log = createLogger("relay");
      for (let i = 0; i < 5; i++) log.info({ i }, "request");
      ${end}`;
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    return { stdout: r.stdout, status: r.status };
  };
  const lines = (stdout: string): number[] =>
    stdout
      .split("\n")
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { i: number }).i);

  it("are written on process.exit()", () => {
    const r = run("process.exit(3);");
    expect(r.status).toBe(3);
    expect(lines(r.stdout)).toEqual([0, 1, 2, 3, 4]);
  });

  it("are written when an uncaught exception ends the process", () => {
    const r = run('throw new Error("boom");');
    expect(r.status).toBe(1);
    expect(lines(r.stdout)).toEqual([0, 1, 2, 3, 4]);
  });

  it("are written when the event loop ends", () => {
    const r = run("");
    expect(r.status).toBe(0);
    expect(lines(r.stdout)).toEqual([0, 1, 2, 3, 4]);
  });
});
