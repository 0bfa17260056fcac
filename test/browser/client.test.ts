// The client library in a real browser: an esbuild bundle of client/ (the browser entry, no
// node: imports, WebCrypto and stock hpke-js), loaded by a page on 127.0.0.1 that builds a DAP-09
// report with @divviup/dap's own browser bundle and uploads it through the relay and the gateway
// (tokens required) to the leader double, driven by playwright-core in Debian's chromium.
//
// The page talks to the relay, the issuer and the gateway's keys directly, cross-origin: the page
// is served from its own port, and the servers allow that origin with `cors.origins` (server/cors.ts).
// A page on an origin they do not allow cannot upload.

import { createHash, createPublicKey } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { chromium, type BrowserContext } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildBrowserBundle, type BrowserBundle } from "../../client/build-browser.js";
import { startTestRelay, type TestRelay } from "../helpers/relay-harness.js";
import { createServerTestCa, type TestCa } from "../helpers/test-ca.js";
import { HELPER, LEADER, STACK_CREDENTIAL, startVeilStack, type VeilStack } from "../helpers/veil-stack.js";

const CHROMIUM = "/usr/bin/chromium";
const HAVE_CHROMIUM = existsSync(CHROMIUM);
const DAP_BROWSER_BUNDLE = fileURLToPath(new URL("../../node_modules/@divviup/dap/dist/browser.js", import.meta.url));

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>veil browser client</title>
<script src="/dap.js"></script>
<script type="module">
  import { createObliviousFetch, createTokenSource, cryptoBackendName } from "/veil-client.js";
  window.veilUpload = async (cfg) => {
    const tokens = createTokenSource({ issuer: cfg.issuer, credential: cfg.credential, batch: cfg.reports, refillJitterMs: 0 });
    const f = createObliviousFetch({ relay: cfg.relay, keys: cfg.keys, relayKeys: true, tokens });
    const task = new globalThis.divviup.dap.Task({ type: "count", id: cfg.taskId, leader: cfg.leader, helper: cfg.helper, timePrecisionSeconds: 3600 });
    task.fetch = f;
    try {
      await f.prepare(cfg.leader + "/tasks/" + cfg.taskId + "/reports");
      const times = [];
      for (let i = 0; i < cfg.reports; i++) {
        const t0 = performance.now();
        await task.sendMeasurement(i % 2 === 0);
        times.push(performance.now() - t0);
      }
      return { ok: true, times, stats: f.stats(), tokens: tokens.stats(), backend: await cryptoBackendName() };
    } catch (e) {
      return { ok: false, code: e && e.code, message: String(e && e.message) };
    } finally {
      tokens.close();
    }
  };
  window.veilReady = true;
</script>`;

let stack: VeilStack;
/** The servers the page calls directly (cross-origin). */
const servers = () => ({ relay: stack.relayUrl, keys: stack.keysUrl, issuer: stack.issuerUrl });
let dir: string;
let bundle: BrowserBundle;
let server: Server;
let otherServer: Server;
let pageUrl: string;
/** The same page on an origin the servers do not allow. */
let otherPageUrl: string;
let context: BrowserContext;
/** A relay serving HTTPS (ALPN h2 and http/1.1) in front of the stack's gateway. */
let tlsRelay: TestRelay;
let ca: TestCa;

/** base64 SHA-256 of a certificate's SubjectPublicKeyInfo (Chromium's --ignore-certificate-errors-spki-list). */
function spkiHash(certFile: string): string {
  const der = createPublicKey(readFileSync(certFile)).export({ type: "spki", format: "der" });
  return createHash("sha256").update(der).digest("base64");
}

describe.skipIf(!HAVE_CHROMIUM)("browser: the bundled client uploads a DAP report through relay and gateway", () => {
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "veil-browser-"));
    bundle = await buildBrowserBundle({ outfile: join(dir, "veil-client.js") });
    const files: Record<string, { type: string; body: Buffer | string }> = {
      "/": { type: "text/html; charset=utf-8", body: PAGE },
      "/veil-client.js": { type: "text/javascript", body: readFileSync(bundle.outfile) },
      "/veil-client.js.map": { type: "application/json", body: readFileSync(bundle.outfile + ".map") },
      "/dap.js": { type: "text/javascript", body: readFileSync(DAP_BROWSER_BUNDLE) },
    };
    const serve = (req: IncomingMessage, res: ServerResponse): void => {
      const path = new URL(req.url ?? "/", "http://x").pathname;
      const file = files[path];
      if (file !== undefined && req.method === "GET") {
        res.writeHead(200, { "content-type": file.type, "cache-control": "no-store" });
        res.end(file.body);
        return;
      }
      res.writeHead(404).end();
    };
    server = createServer(serve);
    otherServer = createServer(serve);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    await new Promise<void>((r) => otherServer.listen(0, "127.0.0.1", r));
    pageUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    otherPageUrl = `http://127.0.0.1:${(otherServer.address() as AddressInfo).port}/`;
    // Only the page's origin (another port than every server: a different origin).
    stack = await startVeilStack({ corsOrigins: [new URL(pageUrl).origin] });
    ca = createServerTestCa("veil-browser-ca-");
    tlsRelay = await startTestRelay({
      listen: { host: "127.0.0.1", port: 0, tls: { cert: ca.file("relay.pem"), key: ca.file("relay.key") } },
      routes: [{ path: "/leader-gateway", gateway: `${stack.gateway.url}/gateway`, keys: stack.keysUrl }],
      cors: { origins: [new URL(pageUrl).origin] },
    });
    context = await chromium.launchPersistentContext(join(dir, "profile"), {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        // Trusts exactly the TLS relay's key (a throwaway certificate), nothing else.
        `--ignore-certificate-errors-spki-list=${spkiHash(ca.file("relay.pem"))}`,
      ],
    });
  }, 120_000);

  afterAll(async () => {
    await context?.close();
    await new Promise<void>((r) => (server === undefined ? r() : server.close(() => r())));
    await new Promise<void>((r) => (otherServer === undefined ? r() : otherServer.close(() => r())));
    await tlsRelay?.stop();
    await stack?.stop();
    ca?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Opens `url` in a new page, waits for its client, runs veilUpload(cfg) there and closes the page; page errors go to `errors`. */
  async function uploadFromPage(url: string, cfg: Record<string, unknown>, errors?: string[]): Promise<unknown> {
    const page = await context.newPage();
    try {
      if (errors !== undefined) page.on("pageerror", (e) => errors.push(e.message));
      await page.goto(url);
      await page.waitForFunction(() => (window as unknown as { veilReady?: boolean }).veilReady === true);
      return await page.evaluate((c) => (window as unknown as { veilUpload(c: unknown): Promise<unknown> }).veilUpload(c), cfg);
    } finally {
      await page.close();
    }
  }

  it("keeps node-only code out of the bundle", () => {
    const code = readFileSync(bundle.outfile, "utf8");
    expect(bundle.inputs.some((i) => /fast-node|verify-node|node:/.test(i))).toBe(false);
    expect(code).not.toMatch(/from\s*["']node:|require\(["']node:/);
    expect(bundle.inputs).toContain("client/browser.ts");
  });

  it("uploads Prio3Count reports from the page; the leader decrypts them", async () => {
    const task = stack.tasks.count.idBase64Url;
    const before = stack.leader.reports.get(task)?.length ?? 0;
    const errors: string[] = [];
    const result = (await uploadFromPage(pageUrl, { ...servers(), credential: STACK_CREDENTIAL, taskId: task, leader: LEADER, helper: HELPER, reports: 3 }, errors)) as { ok: boolean; times?: number[]; backend?: string; message?: string; stats?: { challengeRetries: number } };
    expect(errors).toEqual([]);
    expect(result.message).toBeUndefined();
    expect(result.ok).toBe(true);
    expect(result.backend).toBe("stock hpke-js");
    expect(result.stats?.challengeRetries).toBe(0);
    const stored = stack.leader.reports.get(task) ?? [];
    expect(stored.length - before).toBe(3);
    for (const r of stored.slice(before)) expect(r.helperShare).toBeDefined();
    // For the record (not asserted: no test asserts wall-clock time).
    console.log(`browser upload latency (ms): ${result.times?.map((t) => t.toFixed(1)).join(", ")}; bundle ${bundle.bytes} bytes`);
  });

  it("uploads over HTTP/2 to a relay serving HTTPS", async () => {
    const task = stack.tasks.count.idBase64Url;
    const before = stack.leader.reports.get(task)?.length ?? 0;
    const result = (await uploadFromPage(pageUrl, { ...servers(), relay: `${tlsRelay.url}/leader-gateway`, credential: STACK_CREDENTIAL, taskId: task, leader: LEADER, helper: HELPER, reports: 1 })) as { ok: boolean; message?: string };
    expect(result.message).toBeUndefined();
    expect(result.ok).toBe(true);
    expect((stack.leader.reports.get(task)?.length ?? 0) - before).toBe(1);
    // The relay served the upload (and its copy of the keys) on an h2 connection.
    const metrics = (await tlsRelay.app.inject({ url: "/metrics" })).body;
    expect(metrics).toMatch(/veil_relay_http2_sessions_total\{component="relay"\} [1-9]/);
    // Every request the relay forwarded (key config, challenge, upload) came over h2.
    const overH2 = Number(/veil_relay_http2_streams_total\{outcome="forwarded",component="relay"\} (\d+)/.exec(metrics)?.[1]);
    const forwarded = Number(/veil_http_requests_total\{route="\/leader-gateway",outcome="forwarded",status="200",component="relay"\} (\d+)/.exec(metrics)?.[1]);
    expect(overH2).toBeGreaterThan(0);
    expect(overH2).toBe(forwarded);
    expect(metrics).toMatch(/veil_http_requests_total\{route="\/leader-gateway\/ohttp-keys",outcome="ok",status="200",component="relay"\} 1\n/);
  });

  it("reports a refused credential in the page as CLIENT_ERR_CREDENTIAL_REFUSED", async () => {
    const result = (await uploadFromPage(pageUrl, { ...servers(), credential: "wrong-credential", taskId: stack.tasks.count.idBase64Url, leader: LEADER, helper: HELPER, reports: 1 })) as { ok: boolean; code?: string };
    expect(result).toMatchObject({ ok: false, code: "CLIENT_ERR_CREDENTIAL_REFUSED" });
  });

  it("cannot upload from a page on an origin the servers do not allow (no CORS headers for it)", async () => {
    const task = stack.tasks.count.idBase64Url;
    const before = stack.leader.reports.get(task)?.length ?? 0;
    const result = (await uploadFromPage(otherPageUrl, { ...servers(), credential: STACK_CREDENTIAL, taskId: task, leader: LEADER, helper: HELPER, reports: 1 })) as { ok: boolean; code?: string; message?: string };
    expect(result.ok).toBe(false);
    expect(stack.leader.reports.get(task)?.length ?? 0).toBe(before);
  });
});

if (!HAVE_CHROMIUM) {
  describe("browser", () => {
    it.skip(`skipped: ${CHROMIUM} is not installed (.ci/run installs Debian's chromium)`, () => {});
  });
}
