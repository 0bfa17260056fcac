// `npm start` (`veil start`) and `veil demo` as a newcomer runs them (needs a built dist/): the
// whole system from an empty data directory, real DAP reports through it, a restart that reuses
// the data, and a stop on SIGTERM.

import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runVeil, startVeil, stopAll, type VeilProcess } from "../helpers/veil-process.js";
import { issuerCounts } from "../helpers/issuer.js";

const dir = mkdtempSync(join(tmpdir(), "veil-start-"));
const data = join(dir, "data");
const PORTS = ["--relay-port", "0", "--gateway-port", "0", "--issuer-port", "0", "--leader-port", "0", "--helper-port", "0"];

afterAll(async () => {
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
});

async function start(): Promise<VeilProcess> {
  const p = startVeil(["start", "--data", data, ...PORTS]);
  await p.waitFor("Send reports:");
  return p;
}

function mode(file: string): number {
  return statSync(join(data, file)).mode & 0o777;
}

describe("veil start and veil demo", () => {
  let first: VeilProcess;
  let taskId: string;

  it("starts the five servers on a fresh data directory and prints what runs where and the command that sends reports", async () => {
    first = await start();
    const out = first.stdout();
    for (const name of ["relay", "gateway", "issuer", "leader", "helper", "task"]) expect(out).toMatch(new RegExp(`^  ${name} +\\S+`, "m"));
    expect(out).toContain(`node bin/veil.js demo --reports 100 --data ${data}`);
    expect(out).toContain("created gateway-keys.json, demo-credential, demo-task.json");
    const state = JSON.parse(readFileSync(join(data, "demo.json"), "utf8")) as Record<string, string>;
    taskId = state.taskId!;
    // Secrets are mode 0600; the directory 0700.
    for (const f of ["gateway-keys.json", "issuer-keys.json", "demo-task.json", "demo-credential", "issuer.json"]) expect(mode(f)).toBe(0o600);
    expect(statSync(data).mode & 0o777).toBe(0o700);
    // The demo issuer keeps its quota counts in the data directory (they survive a restart).
    expect((JSON.parse(readFileSync(join(data, "issuer.json"), "utf8")) as { attester: { store: string } }).attester.store).toBe(`sqlite:${join(data, "attester.db")}`);
    expect(statSync(join(data, "attester.db")).isFile()).toBe(true);
    // The credential is never printed.
    expect(out).not.toContain(readFileSync(join(data, "demo-credential"), "utf8").trim());
  }, 90_000);

  it("uploads real DAP reports that the leader decrypts, verifies and counts; exit status 0", async () => {
    const r = await runVeil(["demo", "--reports", "4", "--data", data, "--measurement", "1", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(summary).toMatchObject({ reports: 4, landed: 4, refused: 0, failed: 0, tokensIssued: 4 });
    await first.waitFor("leader: 4 reports decrypted, 4 verified: count = 4", 10_000);
    // The 4 tokens came in one batched request to the issuer.
    const issuer = (JSON.parse(readFileSync(join(data, "demo.json"), "utf8")) as { issuer: string }).issuer;
    expect(await issuerCounts(issuer)).toEqual({ tokenRequests: 1, tokensIssued: 4 });
  }, 90_000);

  it("with --token-type arc, uploads reports with one ARC credential for all of them", async () => {
    expect(first.stdout()).toContain("--token-type arc");
    const r = await runVeil(["demo", "--reports", "3", "--data", data, "--measurement", "1", "--json", "--token-type", "arc"]);
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(summary).toMatchObject({ reports: 3, landed: 3, refused: 0, failed: 0, tokensIssued: 1 });
    await first.waitFor("leader: 7 reports decrypted, 7 verified: count = 7", 10_000);
  }, 90_000);

  it("stops on SIGTERM with exit status 0", async () => {
    expect(await first.stop("SIGTERM")).toBe(0);
    expect(first.stdout()).toContain("stopped");
  }, 30_000);

  it("reuses the data directory after a restart: same task, same keys, reports still land", async () => {
    const keysBefore = readFileSync(join(data, "gateway-keys.json"), "utf8");
    const second = await start();
    expect(second.stdout()).not.toContain("created");
    expect((JSON.parse(readFileSync(join(data, "demo.json"), "utf8")) as Record<string, string>).taskId).toBe(taskId);
    expect(readFileSync(join(data, "gateway-keys.json"), "utf8")).toBe(keysBefore);
    const r = await runVeil(["demo", "--reports", "2", "--data", data, "--measurement", "0", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    await second.waitFor("leader: 2 reports decrypted, 2 verified: count = 0", 10_000);
    expect(await second.stop("SIGINT")).toBe(0);
  }, 90_000);

  it("veil demo exits 1 with a hint when the system is not running", async () => {
    const r = await runVeil(["demo", "--reports", "1", "--data", data]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("npm start");
  }, 60_000);
});

describe("veil start --workers 2", () => {
  it("runs the gateway and the relay in worker processes; reports land and everything stops on SIGTERM", async () => {
    const data2 = join(dir, "data-workers");
    const p = startVeil(["start", "--data", data2, "--workers", "2", ...PORTS]);
    await p.waitFor("Send reports:");
    expect(p.stdout()).toContain("gateway and relay in 2 worker processes each");
    const r = await runVeil(["demo", "--reports", "3", "--data", data2, "--measurement", "1", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ landed: 3 });
    expect(await p.stop("SIGTERM")).toBe(0);
    expect(p.stdout()).toContain("leader: 3 reports decrypted, 3 verified: count = 3");
  }, 120_000);
});
