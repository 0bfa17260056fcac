// Counterexamples found by the fuzzing properties (test/prop/, `npm run fuzz`), kept as fixed
// regression tests: each was a real bug before its fix.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ProtocolError } from "../../core/errors.js";
import { parseIssuerConfig } from "../../issuer/config.js";
import { parseRelayConfig } from "../../relay/config.js";
import { readConfigFile } from "../../server/config.js";

function refusal(f: () => unknown): ProtocolError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ProtocolError);
    return e as ProtocolError;
  }
  throw new Error("accepted");
}

describe("configuration (test/prop/config.prop.test.ts)", () => {
  it("never quotes a secret that sits inside a value of the wrong type", () => {
    // seed 49394: a credential wrapped in a list was printed as `got ["cred-..."]`.
    const issuer = refusal(() =>
      parseIssuerConfig({ name: "issuer.example", attester: { credentials: [["cred-S3cretValue-9f1c"], "second"] } }),
    );
    expect(issuer.code).toBe("CFG_ERR_INVALID");
    expect(issuer.message).toContain("attester.credentials[0]");
    expect(issuer.message).not.toContain("S3cret");
    const relay = refusal(() =>
      parseRelayConfig({ routes: [{ path: "/r", gateway: "http://127.0.0.1:1/gateway", authHeader: { name: "authorization", value: ["Bearer S3cret"] } }] }),
    );
    expect(relay.message).toContain("routes[0].authHeader.value");
    expect(relay.message).not.toContain("S3cret");
    // A wrong-typed parent is described by its kind only: it may hold a secret further down.
    const parent = refusal(() => parseRelayConfig({ routes: [[{ path: "/r", gateway: "http://x", authHeader: { name: "a", value: "S3cret" } }]] }));
    expect(parent.message).toBe("routes[0]: expected an object, got a list");
  });

  it("refuses a gateway URL that matches the pattern but is no URL with CFG_ERR_INVALID, not a TypeError", () => {
    // `{"kind":"replace","value":"http://["}` on routes[0].gateway threw TypeError: Invalid URL.
    for (const route of [
      { path: "/r", gateway: "http://[" },
      { path: "/r", gateway: "http://127.0.0.1:1/gateway", keys: "http://[" },
    ]) {
      const e = refusal(() => parseRelayConfig({ routes: [route] }));
      expect(e.code).toBe("CFG_ERR_INVALID");
      expect(e.message).toMatch(/^routes\[0\]\.(gateway|keys): not a valid URL$/);
    }
  });

  it("does not quote the text of a config file that is not valid JSON", () => {
    // V8's JSON.parse message quoted `..."entials":[cred-S3cre"...` of a file with a missing quote.
    const dir = mkdtempSync(join(tmpdir(), "veil-regress-"));
    try {
      const file = join(dir, "issuer.json");
      writeFileSync(file, '{"name":"issuer.example","attester":{"credentials":[cred-S3cretValue-9f1c"]}}');
      const e = refusal(() => readConfigFile(file));
      expect(e.code).toBe("CFG_ERR_INVALID");
      expect(e.message).toContain(file);
      expect(e.message).not.toContain("S3cret");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
