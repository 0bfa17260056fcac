// `veil gateway --workers N` (needs a built dist/): workers share the port and the key file,
// /metrics sums every worker, and a worker stopped under load (SIGTERM to its pid alone) finishes
// what it has and is replaced, with not one failed request; SIGTERM to the primary stops them all.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { KeyConfig } from "../../core/ohttp/index.js";
import { createDapTask, startDapAggregator, type DapAggregator, type DapTask } from "../../demo/dap-aggregator.js";
import { writeKeyFile } from "../../gateway/key-file.js";
import { makeKeyData } from "../helpers/gateway-fixture.js";
import { startStandIn } from "../helpers/relay-gateway-stand-in.js";
import { fetchKeyConfig, sealRequest } from "../helpers/oblivious-fetch.js";
import { makeDapReports, uploadPath } from "../helpers/token-gateway.js";
import { logLine, startVeil, stopAll, type VeilProcess } from "../helpers/veil-process.js";
import { until } from "../helpers/wait.js";

const dir = mkdtempSync(join(tmpdir(), "veil-workers-"));
let task: DapTask;
let leader: DapAggregator;
let helper: DapAggregator;
let reports: Uint8Array[];
let configFile: string;

beforeAll(async () => {
  task = await createDapTask();
  leader = await startDapAggregator({ role: "leader", tasks: [task] });
  helper = await startDapAggregator({ role: "helper", tasks: [task] });
  reports = await makeDapReports(task, leader.url, helper.url, 8);
  const keys = join(dir, "keys.json");
  writeKeyFile(keys, (await makeKeyData([{ keyId: 1 }])).data);
  configFile = join(dir, "gateway.json");
  writeFileSync(
    configFile,
    JSON.stringify({
      listen: { host: "127.0.0.1", port: 0 },
      limits: { shutdownGraceMs: 5000 },
      keys,
      targets: { "https://leader.example": leader.url },
      tokens: { required: false },
    }),
  );
}, 60_000);

afterAll(async () => {
  await stopAll();
  await leader?.close();
  await helper?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function startGroup(server = "gateway", config = configFile): Promise<{ p: VeilProcess; url: string; pids: number[] }> {
  const p = startVeil([server, "--config", config, "--workers", "2"]);
  await p.waitFor('"msg":"all workers ready"');
  // Worker and primary write to one pipe: a worker's line may come after the primary's.
  await p.waitFor(`"msg":"${server} listening"`);
  const url = logLine(p.stdout(), `${server} listening`)!.url as string;
  const pids = logLine(p.stdout(), "all workers ready")!.pids as number[];
  return { p, url, pids };
}

function metricValue(text: string, line: RegExp): number {
  const m = text.split("\n").find((l) => line.test(l));
  return m === undefined ? NaN : Number(m.slice(m.lastIndexOf(" ") + 1));
}

describe("veil gateway --workers 2", () => {
  it("answers /metrics with the sum over the workers (and key gauges once, not once per worker)", async () => {
    const { p, url, pids } = await startGroup();
    try {
      expect(pids).toHaveLength(2);
      // A new connection per request, so the kernel spreads them over both workers.
      for (let i = 0; i < 30; i++) {
        const r = await request(`${url}/ohttp-keys`, { reset: true });
        expect(r.statusCode).toBe(200);
        await r.body.dump();
      }
      const text = await (await request(`${url}/metrics`)).body.text();
      expect(metricValue(text, /^veil_http_requests_total\{route="\/ohttp-keys",outcome="ok",status="200"/)).toBe(30);
      expect(metricValue(text, /^veil_gateway_keys\{key_id="1"/)).toBe(1);
    } finally {
      expect(await p.stop("SIGTERM")).toBe(0);
    }
  }, 90_000);

  it("loses not one request when a worker is stopped under load, and replaces it", async () => {
    const { p, url, pids } = await startGroup();
    const keyConfig: KeyConfig = await fetchKeyConfig(url);
    const agent = new Agent({ connections: 16, keepAliveTimeout: 4000 });
    let ok = 0;
    const failures: string[] = [];
    let running = true;
    const loop = async (n: number): Promise<void> => {
      for (let i = n; running; i += 8) {
        const sealed = await sealRequest(keyConfig, {
          method: "PUT",
          path: uploadPath(task),
          headers: [["content-type", "application/dap-report"]],
          body: reports[i % reports.length]!,
        });
        try {
          const res = await request(`${url}/gateway`, {
            method: "POST",
            headers: { "content-type": "message/ohttp-req" },
            body: sealed.body,
            dispatcher: agent,
          });
          const body = new Uint8Array(await res.body.arrayBuffer());
          if (res.statusCode !== 200) failures.push(`outer ${res.statusCode}`);
          else {
            const inner = await sealed.open(body);
            if (inner.status === 201) ok++;
            else failures.push(`inner ${inner.status}`);
          }
        } catch (e) {
          failures.push((e as Error).message);
        }
      }
    };
    try {
      const loops = Array.from({ length: 8 }, (_, i) => loop(i));
      const waitOk = async (n: number): Promise<void> => {
        const target = ok + n;
        await until(() => ok >= target || failures.length > 0, `${n} more uploads`, 60_000);
      };
      await waitOk(100);
      process.kill(pids[0]!, "SIGTERM");
      await p.waitFor('"msg":"worker exited: starting a replacement"', 30_000);
      await p.waitFor(/"msg":"worker started"[^\n]*\n[\s\S]*"msg":"worker started"[^\n]*\n[\s\S]*"msg":"worker started"/, 30_000);
      await waitOk(100);
      running = false;
      await Promise.all(loops);
      expect(failures).toEqual([]);
      expect(ok).toBeGreaterThanOrEqual(200);
      const exit = logLine(p.stdout(), "worker exited: starting a replacement")!;
      expect(exit.pid).toBe(pids[0]);
      expect(exit.code).toBe(0);
    } finally {
      running = false;
      await agent.close();
      expect(await p.stop("SIGTERM")).toBe(0);
    }
  }, 120_000);

  it("the relay too: not one failed request when a worker is stopped under load", async () => {
    const gateway = await startStandIn();
    const relayConfig = join(dir, "relay.json");
    writeFileSync(
      relayConfig,
      JSON.stringify({
        listen: { host: "127.0.0.1", port: 0 },
        limits: { shutdownGraceMs: 5000 },
        routes: [{ path: "/gw", gateway: `${gateway.url}/gateway` }],
        rateLimit: { perClientPerWindow: 0 },
      }),
    );
    const { p, url, pids } = await startGroup("relay", relayConfig);
    const agent = new Agent({ connections: 16, keepAliveTimeout: 4000 });
    let ok = 0;
    const failures: string[] = [];
    let running = true;
    const loop = async (): Promise<void> => {
      while (running) {
        try {
          const res = await request(`${url}/gw`, { method: "POST", headers: { "content-type": "message/ohttp-req" }, body: "sealed", dispatcher: agent });
          const text = await res.body.text();
          if (res.statusCode === 200 && text === "res:sealed") ok++;
          else failures.push(`${res.statusCode} ${text.slice(0, 80)}`);
        } catch (e) {
          failures.push((e as Error).message);
        }
      }
    };
    try {
      const loops = Array.from({ length: 8 }, () => loop());
      const waitOk = async (n: number): Promise<void> => {
        const target = ok + n;
        await until(() => ok >= target || failures.length > 0, `${n} more uploads`, 60_000);
      };
      await waitOk(200);
      process.kill(pids[0]!, "SIGTERM");
      await p.waitFor('"msg":"worker exited: starting a replacement"', 30_000);
      await waitOk(200);
      running = false;
      await Promise.all(loops);
      expect(failures).toEqual([]);
      expect(logLine(p.stdout(), "worker exited: starting a replacement")!.code).toBe(0);
    } finally {
      running = false;
      await agent.close();
      expect(await p.stop("SIGTERM")).toBe(0);
      await gateway.close();
    }
  }, 120_000);
});
