// HPKE backend selection: node:crypto on Node, stock hpke-js when chosen, and a browser bundle of
// core/ohttp that does not contain node:crypto.

import { build } from "esbuild";
import { afterEach, describe, expect, it } from "vitest";
import { fromHex } from "../../core/bytes.js";
import { KEM, decapsulateRequest, hpkeBackend, importGatewayKey, setHpkeBackend, stockHpkeBackend } from "../../core/ohttp/index.js";
import { nodeHpkeBackend } from "../../core/ohttp/fast-node.js";
import { A, A_PRIVATE_KEY, A_SYMMETRIC } from "../helpers/ohttp.js";

afterEach(() => setHpkeBackend(undefined));

describe("HPKE backend selection", () => {
  it("picks the node:crypto primitives on Node", async () => {
    expect(await hpkeBackend()).toBe(nodeHpkeBackend);
  });

  it("uses the backend chosen with setHpkeBackend, and keys keep the backend that made them", async () => {
    const fast = await importGatewayKey(1, KEM.X25519, A_PRIVATE_KEY, A_SYMMETRIC);
    setHpkeBackend(stockHpkeBackend);
    expect(await hpkeBackend()).toBe(stockHpkeBackend);
    const stock = await importGatewayKey(1, KEM.X25519, A_PRIVATE_KEY, A_SYMMETRIC);
    for (const key of [fast, stock]) {
      const { request } = await decapsulateRequest(new Map([[1, key]]), fromHex(A.encapsulated_request));
      expect(request).toEqual(fromHex(A.request));
    }
  });
});

describe("browser bundle", () => {
  it("bundles core/ohttp for the browser without node:crypto", async () => {
    const out = await build({
      entryPoints: [new URL("../../core/ohttp/index.ts", import.meta.url).pathname],
      bundle: true,
      platform: "browser",
      format: "esm",
      write: false,
      logLevel: "silent",
    });
    expect(out.errors).toEqual([]);
    const code = out.outputFiles[0]!.text;
    expect(code).not.toMatch(/node:crypto|NodeHkdf|NodeDhkem|diffieHellman/);
    expect(code).toContain("./fast-node.js"); // left as a runtime import, taken only on Node
  }, 60_000);
});
