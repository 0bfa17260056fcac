// Helpers for tests of the token gate through a real gateway: an issuer directory server, DAP
// reports made by @divviup/dap for the leader double, sealed uploads, and `veil gateway` child
// processes (these need a built dist/: `npm run build`).

import { spawn, type ChildProcess } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Task } from "@divviup/dap";
import type { BhttpResponse, Field } from "../../core/bhttp/index.js";
import type { KeyConfig } from "../../core/ohttp/index.js";
import type { DapTask } from "../../demo/dap-aggregator.js";
import { sealRequest } from "./oblivious-fetch.js";
import { directoryDocument, type TestIssuerKey } from "./tokens.js";

export const LEADER_ORIGIN = "https://leader.example";
export const HELPER_ORIGIN = "https://helper.example";

export interface DirectoryServer {
  url: string;
  /** Requests served so far. */
  hits: number;
  /** Stops answering (connections refused) until up() is called. */
  down(): Promise<void>;
  up(): Promise<void>;
  close(): Promise<void>;
}

/** Serves an RFC 9578 §4 directory with the given keys (and an ETag, max-age=`maxAgeSec`). */
export async function startDirectoryServer(keys: { key: TestIssuerKey; notBeforeSec?: number }[], maxAgeSec = 60): Promise<DirectoryServer> {
  const body = directoryDocument(keys);
  let port = 0;
  let server: Server | undefined;
  const state = { hits: 0 };
  const listen = async (): Promise<void> => {
    const s = createServer((req, res) => {
      state.hits++;
      if (req.headers["if-none-match"] === '"d1"') {
        res.writeHead(304, { etag: '"d1"', "cache-control": `max-age=${maxAgeSec}` });
        res.end();
        return;
      }
      res.writeHead(200, { "content-type": "application/private-token-issuer-directory", etag: '"d1"', "cache-control": `max-age=${maxAgeSec}` });
      res.end(body);
    });
    await new Promise<void>((r) => s.listen(port, "127.0.0.1", () => r()));
    port = (s.address() as AddressInfo).port;
    server = s;
  };
  const stop = async (): Promise<void> => {
    const s = server;
    server = undefined;
    if (s === undefined) return;
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  };
  await listen();
  return {
    get url() {
      return `http://127.0.0.1:${port}/.well-known/private-token-issuer-directory`;
    },
    get hits() {
      return state.hits;
    },
    down: stop,
    up: listen,
    close: stop,
  };
}

/**
 * `n` distinct encoded DAP-09 Prio3Count reports for `task`, made by @divviup/dap (its hpke_config
 * fetches go straight to the doubles).
 */
export async function makeDapReports(task: DapTask, leaderUrl: string, helperUrl: string, n: number): Promise<Uint8Array[]> {
  const t = new Task({ type: "count", id: task.idBase64Url, leader: LEADER_ORIGIN, helper: HELPER_ORIGIN, timePrecisionSeconds: 3600 });
  t.fetch = async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
    const base = url.host === "leader.example" ? leaderUrl : helperUrl;
    return fetch(new URL(url.pathname.slice(1) + url.search, base), init);
  };
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) out.push(new Uint8Array((await t.generateReport(i % 2 === 0)).encode()));
  return out;
}

export function uploadPath(task: DapTask): string {
  return `/tasks/${task.idBase64Url}/reports`;
}

/** One sealed upload straight to the gateway; returns the decapsulated inner answer. */
export async function sealedUpload(
  gatewayUrl: string,
  keyConfig: KeyConfig,
  o: { path: string; body: Uint8Array; authorization?: string; method?: string; authority?: string },
): Promise<BhttpResponse> {
  const headers: Field[] = [["content-type", "application/dap-report"]];
  if (o.authorization !== undefined) headers.push(["authorization", o.authorization]);
  const sealed = await sealRequest(keyConfig, {
    method: o.method ?? "PUT",
    authority: o.authority ?? "leader.example",
    path: o.path,
    headers,
    body: o.body,
  });
  const res = await fetch(new URL("/gateway", gatewayUrl), {
    method: "POST",
    headers: { "content-type": "message/ohttp-req" },
    body: sealed.body,
  });
  if (res.status !== 200) throw new Error(`gateway answered ${res.status} before decapsulation`);
  return sealed.open(new Uint8Array(await res.arrayBuffer()));
}

export function header(r: BhttpResponse, name: string): string | undefined {
  return r.headers.find(([n]) => n === name)?.[1];
}

/** The problem document's fields of a sealed error answer. */
export function problem(r: BhttpResponse): Record<string, unknown> {
  return JSON.parse(new TextDecoder().decode(r.body)) as Record<string, unknown>;
}

export interface GatewayProcess {
  url: string;
  child: ChildProcess;
  /** Everything the process wrote to stdout and stderr. */
  output: string[];
  /** Sends `signal` and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Spawns `node bin/veil.js gateway --config FILE` and waits for its "gateway listening" line. */
export async function spawnGateway(configFile: string, env: Record<string, string> = {}): Promise<GatewayProcess> {
  const child = spawn(process.execPath, ["bin/veil.js", "gateway", "--config", configFile], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const output: string[] = [];
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not start: ${output.join("")}`)), 20_000);
    const onData = (d: Buffer): void => {
      output.push(d.toString());
      const m = /"url":"(http:\/\/[^"]+)"[^\n]*"gateway listening"|"gateway listening"[^\n]*"url":"(http:\/\/[^"]+)"/.exec(output.join(""));
      if (m !== null) {
        clearTimeout(timer);
        resolve(m[1] ?? m[2]!);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", (d: Buffer) => output.push(d.toString()));
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited with ${code}: ${output.join("")}`));
    });
  });
  return {
    url,
    child,
    output,
    kill: async (signal = "SIGTERM") => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill(signal);
      await exited;
    },
  };
}
