// A fault-injecting HTTP proxy to put in front of an aggregator (the DAP leader double) for the
// fault tests (test/integration/faults*.test.ts) and the faults benchmark (bench/faults.ts).
//
// Per request it passes the request through, or fails in one of the ways an aggregator fails:
//   error-before  answers 503 without forwarding        error-after  forwards, then answers 500
//   reset-before  cuts the connection without forwarding reset-after  forwards, then cuts the answer mid-body
//   stall-before  never answers, never forwards           stall-after  forwards, never answers
// and, for a while, refuses connections altogether (`refuse(ms)`: the listener is closed and every
// open connection cut, then it listens again on the same port). Which fault a request gets comes
// from `mode` or, per request, from `choose()`.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { Pool } from "undici";
import { readBody } from "../demo/dap-double.js";

export type FaultMode = "pass" | "error-before" | "error-after" | "reset-before" | "reset-after" | "stall-before" | "stall-after";
export const FAULT_MODES: readonly FaultMode[] = ["pass", "error-before", "error-after", "reset-before", "reset-after", "stall-before", "stall-after"];

export interface FaultProxyOptions {
  /** Base URL of the aggregator, e.g. http://127.0.0.1:8083/ */
  target: string;
  host?: string;
  port?: number;
  /** Picks the fault of each request (default: `mode`). */
  choose?: (req: IncomingMessage) => FaultMode;
}

export interface FaultProxy {
  readonly url: string;
  readonly port: number;
  /** The fault of every request when no `choose` was given. */
  mode: FaultMode;
  /** Requests by the fault they got, and how many reached the target. */
  readonly counts: Record<FaultMode | "forwarded" | "refusals", number>;
  /** Closes the listener and cuts every connection for `ms`, then listens again on the same port. */
  refuse(ms: number): Promise<void>;
  /** True while connections are refused. */
  readonly refusing: boolean;
  close(): Promise<void>;
}

const HOP = new Set(["connection", "keep-alive", "transfer-encoding", "host", "content-length", "upgrade", "te", "trailer", "proxy-connection"]);

export async function startFaultProxy(o: FaultProxyOptions): Promise<FaultProxy> {
  const target = new URL(o.target);
  const upstream = new Pool(target.origin, { connections: 64, pipelining: 1, headersTimeout: 60_000, bodyTimeout: 60_000, keepAliveTimeout: 4_000 });
  const sockets = new Set<Socket>();
  const counts: FaultProxy["counts"] = {
    pass: 0,
    "error-before": 0,
    "error-after": 0,
    "reset-before": 0,
    "reset-after": 0,
    "stall-before": 0,
    "stall-after": 0,
    forwarded: 0,
    refusals: 0,
  };
  let server: Server | undefined;
  let port = o.port ?? 0;
  let refusing = false;
  let closed = false;

  const forward = async (req: IncomingMessage, body: Buffer): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> => {
    const headers: Record<string, string> = {};
    for (const [n, v] of Object.entries(req.headers)) if (!HOP.has(n) && typeof v === "string") headers[n] = v;
    const basePath = target.pathname.replace(/\/$/, "");
    const res = await upstream.request({
      method: req.method as "GET",
      path: basePath + (req.url ?? "/"),
      headers,
      body: req.method === "GET" || req.method === "HEAD" ? null : body,
    });
    counts.forwarded++;
    const out: Record<string, string> = {};
    for (const [n, v] of Object.entries(res.headers)) if (!HOP.has(n) && typeof v === "string") out[n] = v;
    return { status: res.statusCode, headers: out, body: Buffer.from(await res.body.arrayBuffer()) };
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const body = Buffer.from(await readBody(req, 16 * 1024 * 1024));
    const mode = o.choose?.(req) ?? proxy.mode;
    counts[mode]++;
    switch (mode) {
      case "pass": {
        const a = await forward(req, body);
        res.writeHead(a.status, { ...a.headers, "content-length": String(a.body.length) });
        res.end(a.body);
        return;
      }
      case "error-before":
        res.writeHead(503, { "content-type": "text/plain", "content-length": "11" });
        res.end("unavailable");
        return;
      case "error-after": {
        await forward(req, body);
        res.writeHead(500, { "content-type": "text/plain", "content-length": "6" });
        res.end("failed");
        return;
      }
      case "reset-before":
        req.socket.destroy();
        return;
      case "reset-after": {
        const a = await forward(req, body);
        // Headers and a part of the promised body, then the connection breaks.
        res.writeHead(a.status, { ...a.headers, "content-length": String(a.body.length + 100) });
        res.write(a.body);
        res.write("x");
        setTimeout(() => req.socket.destroy(), 5);
        return;
      }
      case "stall-before":
        return; // never answers; cut when the proxy closes or refuses
      case "stall-after":
        await forward(req, body);
        return;
    }
  };

  const listen = async (): Promise<void> => {
    const s = createServer((req, res) => {
      handle(req, res).catch(() => {
        // The target failed (or the client went away): cut the connection, as a broken aggregator would.
        req.socket.destroy();
      });
    });
    s.keepAliveTimeout = 5_000;
    s.on("connection", (socket: Socket) => {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      s.once("error", reject);
      s.listen(port, o.host ?? "127.0.0.1", () => resolve());
    });
    port = (s.address() as AddressInfo).port;
    server = s;
  };

  const stop = async (): Promise<void> => {
    const s = server;
    server = undefined;
    if (s === undefined) return;
    const done = new Promise((r) => s.close(r));
    for (const sock of sockets) sock.destroy();
    await done;
  };

  await listen();
  const proxy: FaultProxy = {
    get url() {
      return `http://${o.host ?? "127.0.0.1"}:${port}/`;
    },
    get port() {
      return port;
    },
    mode: "pass",
    counts,
    get refusing() {
      return refusing;
    },
    async refuse(ms: number) {
      if (refusing || closed) return;
      refusing = true;
      counts.refusals++;
      await stop();
      await new Promise((r) => setTimeout(r, ms));
      // The port may be taken meanwhile by another process (unlikely on loopback): retry briefly.
      for (let i = 0; !closed; i++) {
        try {
          await listen();
          break;
        } catch (e) {
          if (i >= 50) throw e;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      refusing = false;
    },
    async close() {
      closed = true;
      await stop();
      await upstream.close();
    },
  };
  return proxy;
}
