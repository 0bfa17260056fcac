import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import type { BhttpRequest } from "../../../core/bhttp/index.js";
import { ProtocolError } from "../../../core/errors.js";
import { parseGatewayConfig } from "../../../gateway/config.js";
import { compileTargets, resolveTarget } from "../../../gateway/policy.js";
import { Targets, classifyFailure, prepareUpstreamRequest } from "../../../gateway/target.js";

const servers: Server[] = [];
async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const s = createServer(handler);
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}
afterAll(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

function inner(path: string, headers: [string, string][] = [], method = "GET", body = new Uint8Array(0)): BhttpRequest {
  return { method, scheme: "https", authority: "t.example", path, headers, body, trailers: [] };
}

async function targetsFor(upstream: string, upstreamConfig: Record<string, number> = {}) {
  const config = parseGatewayConfig({ targets: { "https://t.example": upstream }, tokens: { required: false }, upstream: upstreamConfig });
  const table = compileTargets(config.targets);
  return { targets: new Targets(table, config.upstream), table };
}

describe("gateway forwarding (undici)", () => {
  it("forwards method, path, headers and body, and returns the answer without hop-by-hop fields", async () => {
    let seen: { method?: string; url?: string; headers?: Record<string, unknown>; body?: string } = {};
    const url = await serve((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        seen = { method: req.method!, url: req.url!, headers: req.headers, body };
        res.writeHead(201, { "content-type": "text/plain", "x-kept": "1", connection: "keep-alive, x-drop", "x-drop": "1", "keep-alive": "timeout=5" });
        res.end("made");
      });
    });
    const { targets, table } = await targetsFor(url);
    const r = inner("/a/b?c=d", [["content-type", "text/plain"], ["authorization", "PrivateToken token=abc"], ["upgrade", "h2c"], ["x-client", "v"]], "PUT", new TextEncoder().encode("hello"));
    const out = await targets.forward(prepareUpstreamRequest(resolveTarget(table, r), r));
    expect(out.ok).toBe(true);
    if (!out.ok) return;
    expect(out.response.status).toBe(201);
    expect(new TextDecoder().decode(out.response.body)).toBe("made");
    const names = out.response.headers.map(([n]) => n);
    expect(names).toContain("x-kept");
    expect(names).not.toContain("x-drop");
    expect(names).not.toContain("keep-alive");
    expect(names).not.toContain("connection");
    expect(seen).toMatchObject({ method: "PUT", url: "/a/b?c=d", body: "hello" });
    expect(Object.keys(seen.headers!).sort()).toEqual(["connection", "content-length", "content-type", "host", "x-client"]);
    await targets.close();
  });

  it("refuses content on GET before anything is sent", () => {
    const table = compileTargets({ "https://t.example": "http://127.0.0.1:1" });
    const r = inner("/x", [], "GET", new Uint8Array([1]));
    expect(() => prepareUpstreamRequest(resolveTarget(table, r), r)).toThrow(expect.objectContaining({ code: "HTTP_ERR_BAD_REQUEST" }) as Error);
  });

  it("reports a refused connection as not reached (502)", async () => {
    const closed = await serve(() => {});
    const s = servers.pop()!;
    await new Promise((r) => s.close(r));
    const { targets, table } = await targetsFor(closed);
    const out = await targets.forward(prepareUpstreamRequest(resolveTarget(table, inner("/x")), inner("/x")));
    expect(out).toMatchObject({ ok: false, reached: false, error: { code: "GATEWAY_ERR_UPSTREAM_UNREACHABLE", status: 502 } });
    await targets.close();
  });

  it("reports a headers timeout as maybe reached (504)", async () => {
    const url = await serve(() => {});
    const { targets, table } = await targetsFor(url, { headersTimeoutMs: 100 });
    const out = await targets.forward(prepareUpstreamRequest(resolveTarget(table, inner("/x")), inner("/x")));
    expect(out).toMatchObject({ ok: false, reached: true, error: { code: "GATEWAY_ERR_UPSTREAM_TIMEOUT", status: 504 } });
    await targets.close();
  });

  it("enforces the total deadline on a body that trickles in", async () => {
    const url = await serve((_req, res) => {
      res.writeHead(200);
      const timer = setInterval(() => res.write("x"), 20);
      res.on("close", () => clearInterval(timer));
    });
    const { targets, table } = await targetsFor(url, { totalTimeoutMs: 300, bodyTimeoutMs: 10_000 });
    const out = await targets.forward(prepareUpstreamRequest(resolveTarget(table, inner("/x")), inner("/x")));
    expect(out).toMatchObject({ ok: false, reached: true, error: { code: "GATEWAY_ERR_UPSTREAM_TIMEOUT" } });
    await targets.close();
  });

  it("cuts off an answer over maxResponseBytes, declared or chunked (502, reached)", async () => {
    const declared = await serve((_req, res) => {
      res.writeHead(200, { "content-length": "2000" });
      res.end(Buffer.alloc(2000));
    });
    const chunked = await serve((_req, res) => {
      res.writeHead(200);
      for (let i = 0; i < 10; i++) res.write(Buffer.alloc(300));
      res.end();
    });
    for (const url of [declared, chunked]) {
      const { targets, table } = await targetsFor(url, { maxResponseBytes: 1000 });
      const out = await targets.forward(prepareUpstreamRequest(resolveTarget(table, inner("/x")), inner("/x")));
      expect(out).toMatchObject({ ok: false, reached: true, error: { code: "GATEWAY_ERR_UPSTREAM_TOO_LARGE" } });
      await targets.close();
    }
  });

  it("reports a connection the target drops mid-answer as maybe reached", async () => {
    const url = await serve((req) => req.socket.destroy());
    const { targets, table } = await targetsFor(url);
    const out = await targets.forward(prepareUpstreamRequest(resolveTarget(table, inner("/x")), inner("/x")));
    expect(out).toMatchObject({ ok: false, reached: true, error: { code: "GATEWAY_ERR_UPSTREAM_FAILED" } });
    await targets.close();
  });

  it("classifies failures by their codes, causes and aggregated errors", () => {
    const err = (code: string) => Object.assign(new Error("x"), { code });
    expect(classifyFailure(err("ECONNREFUSED"), false)).toEqual({ code: "GATEWAY_ERR_UPSTREAM_UNREACHABLE", reached: false });
    expect(classifyFailure(err("ENOTFOUND"), false)).toEqual({ code: "GATEWAY_ERR_UPSTREAM_UNREACHABLE", reached: false });
    expect(classifyFailure(err("UND_ERR_CONNECT_TIMEOUT"), false)).toEqual({ code: "GATEWAY_ERR_UPSTREAM_TIMEOUT", reached: false });
    expect(classifyFailure(Object.assign(new AggregateError([err("ECONNREFUSED"), err("EHOSTUNREACH")]), { code: "ECONNREFUSED" }), false).reached).toBe(false);
    expect(classifyFailure(new Error("wrapped", { cause: err("ECONNREFUSED") }), false).reached).toBe(false);
    expect(classifyFailure(err("ECONNRESET"), false)).toEqual({ code: "GATEWAY_ERR_UPSTREAM_FAILED", reached: true });
    expect(classifyFailure(err("UND_ERR_SOCKET"), false).reached).toBe(true);
    expect(classifyFailure(new Error("no code"), false)).toEqual({ code: "GATEWAY_ERR_UPSTREAM_FAILED", reached: true });
    expect(classifyFailure(err("UND_ERR_ABORTED"), true)).toEqual({ code: "GATEWAY_ERR_UPSTREAM_TIMEOUT", reached: true });
    expect(classifyFailure(err("UND_ERR_HEADERS_TIMEOUT"), false)).toEqual({ code: "GATEWAY_ERR_UPSTREAM_TIMEOUT", reached: true });
    expect(classifyFailure(new ProtocolError("GATEWAY_ERR_UPSTREAM_TOO_LARGE"), false)).toEqual({ code: "GATEWAY_ERR_UPSTREAM_TOO_LARGE", reached: true });
  });
});
