// `veil client upload` and `veil client fetch` (the command-line contract), run as child processes
// against the whole stack in this process. Needs a built dist/ (`npm test` builds first).

import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HELPER, LEADER, STACK_CREDENTIAL, startVeilStack, type VeilStack } from "../helpers/veil-stack.js";
import { issuerCounts } from "../helpers/issuer.js";

const VEIL = fileURLToPath(new URL("../../bin/veil.js", import.meta.url));
const BUILT = existsSync(fileURLToPath(new URL("../../dist/client/main.js", import.meta.url)));

let stack: VeilStack;

beforeAll(async () => {
  stack = await startVeilStack();
}, 60_000);
afterAll(async () => stack?.stop());

function veil(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [VEIL, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === "number" ? err.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

function uploadArgs(extra: string[], credential = STACK_CREDENTIAL): string[] {
  return [
    "client",
    "upload",
    "--relay",
    stack.relayUrl,
    "--keys",
    stack.keysUrl,
    "--issuer",
    stack.issuerUrl,
    "--credential",
    credential,
    "--leader",
    LEADER,
    "--helper",
    HELPER,
    ...extra,
  ];
}

describe.skipIf(!BUILT)("veil client (command line)", () => {
  it("uploads N Prio3Count reports through the relay and exits 0 with a summary", async () => {
    const task = stack.tasks.count.idBase64Url;
    const before = stack.leader.reports.get(task)?.length ?? 0;
    const issuerBefore = await issuerCounts(stack.issuerUrl);
    const r = await veil(uploadArgs(["--task", task, "--vdaf", "count", "--measurement", "1", "--reports", "5"]));
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^5\/5 reports landed, 0 refused, 0 failed in [\d.]+ s \([\d.]+ ms per report\), 5 tokens issued\n$/);
    expect((stack.leader.reports.get(task)?.length ?? 0) - before).toBe(5);
    // The 5 tokens came in one batched request to the issuer.
    const counts = await issuerCounts(stack.issuerUrl);
    expect({ tokenRequests: counts.tokenRequests - issuerBefore.tokenRequests, tokensIssued: counts.tokensIssued - issuerBefore.tokensIssued }).toEqual({ tokenRequests: 1, tokensIssued: 5 });
  });

  it("uploads Prio3Sum and Prio3Histogram reports (--json summary)", async () => {
    const sum = await veil(uploadArgs(["--task", stack.tasks.sum.idBase64Url, "--vdaf", "sum", "--bits", "8", "--measurement", "200", "--json"]));
    expect(sum.code).toBe(0);
    expect(JSON.parse(sum.stdout)).toMatchObject({ reports: 1, landed: 1, refused: 0, failed: 0 });
    const hist = await veil(
      uploadArgs(["--task", stack.tasks.histogram.idBase64Url, "--vdaf", "histogram", "--length", "4", "--chunk-length", "2", "--measurement", "3", "--reports", "2", "--json"]),
    );
    expect(hist.code).toBe(0);
    expect(JSON.parse(hist.stdout)).toMatchObject({ reports: 2, landed: 2 });
  });

  it("exits 1 with a clear message when the issuer refuses the credential", async () => {
    const r = await veil(uploadArgs(["--task", stack.tasks.count.idBase64Url, "--vdaf", "count", "--measurement", "1"], "unknown-credential"));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/veil client upload: the issuer refused the credential \(401\) \[CLIENT_ERR_CREDENTIAL_REFUSED\]/);
    expect(r.stderr).not.toContain("unknown-credential");
  });

  it("exits non-zero on a measurement the VDAF cannot take", async () => {
    const r = await veil(uploadArgs(["--task", stack.tasks.count.idBase64Url, "--vdaf", "count", "--measurement", "7"]));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--measurement for count must be 0, 1, true or false/);
  });

  it("fetch sends any request obliviously: the leader's HPKE config list, byte for byte", async () => {
    const task = stack.tasks.count.idBase64Url;
    const r = await veil(["client", "fetch", `${LEADER}/hpke_config?task_id=${task}`, "--relay", stack.relayUrl, "--keys", stack.keysUrl, "--include"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^HTTP 200\n/);
    expect(r.stdout).toContain("content-type: application/dap-hpke-config-list\n");
  });

  it("fetch exits 1 when the gateway refuses the target", async () => {
    const r = await veil(["client", "fetch", "https://elsewhere.example/", "--relay", stack.relayUrl, "--keys", stack.keysUrl]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/the target answered 403/);
  });
});
