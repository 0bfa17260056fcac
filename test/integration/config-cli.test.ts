// Every server's `--config FILE` with VEIL_<SERVER>_* environment overrides, `--print-config`
// with secrets redacted, and start-up errors that name the field (needs a built dist/).

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runVeil, stopAll } from "../helpers/veil-process.js";

const dir = mkdtempSync(join(tmpdir(), "veil-config-"));
afterAll(async () => {
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
});

function file(name: string, config: unknown): string {
  const f = join(dir, name);
  writeFileSync(f, JSON.stringify(config));
  return f;
}

describe("--config, VEIL_* overrides and --print-config", () => {
  it("relay: prints the effective configuration with the environment override and the auth header value redacted", async () => {
    const f = file("relay.json", {
      routes: [{ path: "/gw", gateway: "https://gateway.example/gateway", authHeader: { name: "x-relay-auth", value: "s3cret-relay-value" } }],
    });
    const r = await runVeil(["relay", "--config", f, "--print-config"], { VEIL_RELAY_LISTEN_PORT: "9443", VEIL_RELAY_RATE_LIMIT_KEY_SECRET: "another-s3cret" });
    expect(r.code, r.stderr).toBe(0);
    const printed = JSON.parse(r.stdout) as { listen: { port: number }; routes: { authHeader: { value: string } }[]; rateLimit: { keySecret: string } };
    expect(printed.listen.port).toBe(9443);
    expect(printed.routes[0]!.authHeader.value).toBe("[redacted]");
    expect(printed.rateLimit.keySecret).toBe("[redacted]");
    expect(r.stdout).not.toContain("s3cret");
  }, 30_000);

  it("issuer: credentials given in the environment are redacted", async () => {
    const f = file("issuer.json", { name: "issuer.example", keys: join(dir, "issuer-keys.json") });
    const r = await runVeil(["issuer", "--config", f, "--print-config"], { VEIL_ISSUER_ATTESTER_CREDENTIALS: '["cred-AAAA","cred-BBBB"]' });
    expect(r.code, r.stderr).toBe(0);
    const printed = JSON.parse(r.stdout) as { attester: { credentials: string[]; tokensPerWindow: number } };
    expect(printed.attester.credentials).toEqual(["[redacted]", "[redacted]"]);
    expect(printed.attester.tokensPerWindow).toBe(100);
    expect(r.stdout).not.toContain("cred-");
  }, 30_000);

  it("gateway: an unknown field is an error with a hint, a bad value names the field and what was expected", async () => {
    const typo = await runVeil(["gateway", "--config", file("gw-typo.json", { listn: { port: 1 }, tokens: { required: false } })]);
    expect(typo.code).toBe(1);
    expect(typo.stderr).toContain('listn: unknown field (did you mean "listen"?)');
    const bad = await runVeil(["gateway", "--config", file("gw-bad.json", { tokens: { required: false } })], { VEIL_GATEWAY_LISTEN_PORT: "http" });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("VEIL_GATEWAY_LISTEN_PORT: expected an integer 0..65535");
  }, 30_000);

  it("gateway: --print-config shows each target as given, the object form with its DAP draft, and maxReportsPerToken", async () => {
    const f = file("gw-targets.json", {
      tokens: { required: false, maxReportsPerToken: 3 },
      targets: { "https://leader09.example": "http://127.0.0.1:8083/", "https://leader18.example": { upstream: "http://10.0.0.5:8080/", dap: "18" } },
    });
    const r = await runVeil(["gateway", "--config", f, "--print-config"]);
    expect(r.code, r.stderr).toBe(0);
    const printed = JSON.parse(r.stdout) as { targets: Record<string, unknown>; tokens: { maxReportsPerToken: number } };
    expect(printed.targets).toEqual({ "https://leader09.example": "http://127.0.0.1:8083/", "https://leader18.example": { upstream: "http://10.0.0.5:8080/", dap: "18" } });
    expect(printed.tokens.maxReportsPerToken).toBe(3);
  }, 30_000);
});
