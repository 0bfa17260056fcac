// Child process of bench/chunked.ts and of the chunked memory test: one role per process, so that
// each one's RSS and CPU are its own. Talks to the parent over IPC.
//
//   target           a targets-only target: hashes each request body (SHA-256) and answers
//                    {"bytes", "sha256"} once it has ended; /early answers before reading anything.
//   proxy URL        the bare streaming peer of the relay and the gateway: a node:http server that
//                    pipes each request to URL + path and the answer back (no OHTTP, no checks).
//   client [SENDER]  runs uploads on request: {run: Upload} -> Result. SENDER "hpke-js" seals chunked
//                    requests with hpke-js's sender context instead of the synchronous node:crypto
//                    one (what a Node client did before it had one), for before/after comparisons.
//   seal [response]  measures sealing in this process (bench/chunked-seal.ts), sends {seal: rows}:
//                    the client's request chunks, or with "response" the gateway's response chunks
//                    and the client opening them.
//
// Every role but seal sends {ready, port} once listening (client: at once).

import { createHash, randomBytes } from "node:crypto";
import { createServer, request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { createObliviousFetch } from "../client/oblivious-fetch.js";
import { fromHex } from "../core/bytes.js";
import { setHpkeBackend } from "../core/ohttp/index.js";
import { nodeHpkeBackend } from "../core/ohttp/fast-node.js";
import { hpkeJsSender, measureSealing } from "./chunked-seal.js";

export interface Upload {
  /** The relay route (OHTTP) or the peer proxy (plain). */
  url: string;
  /** chunked: a ReadableStream body (message/ohttp-chunked-req); whole: one message/ohttp-req; plain: no OHTTP. */
  mode: "chunked" | "whole" | "plain";
  bytes: number;
  /** Key configs (application/ohttp-keys, hex) for the OHTTP modes. */
  keys?: string;
  /** The inner request's URL (OHTTP) or the path (plain). */
  target: string;
}

export interface Result {
  status: number;
  answer: string;
  sha256: string;
  ms: number;
  /** process.cpuUsage() of the upload (user + system), µs. */
  cpuUs: number;
  rssBaseMb: number;
  rssPeakMb: number;
}

const PIECE = 64 * 1024;

function send(msg: unknown): void {
  process.send?.(msg);
}

function target(): void {
  const server = createServer((req, res) => {
    const hash = createHash("sha256");
    let bytes = 0;
    if (req.url === "/early") {
      res.writeHead(200, { "content-type": "text/plain" });
      res.write("early");
    }
    req.on("data", (c: Buffer) => {
      bytes += c.length;
      hash.update(c);
    });
    req.on("end", () => res.end(req.url === "/early" ? "" : JSON.stringify({ bytes, sha256: hash.digest("hex") })));
  });
  server.listen(0, "127.0.0.1", () => send({ ready: true, port: (server.address() as AddressInfo).port }));
}

function proxy(upstream: string): void {
  const base = new URL(upstream);
  const server = createServer((req, res) => {
    const out = httpRequest(
      { host: base.hostname, port: base.port, method: req.method, path: req.url, headers: { "content-type": req.headers["content-type"] ?? "application/octet-stream", "transfer-encoding": "chunked" } },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, { "content-type": answer.headers["content-type"] ?? "application/octet-stream" });
        answer.pipe(res);
      },
    );
    out.on("error", () => res.destroy());
    req.pipe(out);
  });
  server.listen(0, "127.0.0.1", () => send({ ready: true, port: (server.address() as AddressInfo).port }));
}

function body(total: number, hash: ReturnType<typeof createHash>): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (sent >= total) return c.close();
      const b = randomBytes(Math.min(PIECE, total - sent));
      hash.update(b);
      sent += b.length;
      c.enqueue(new Uint8Array(b.buffer, b.byteOffset, b.length));
    },
  });
}

async function upload(u: Upload): Promise<Result> {
  const rssBaseMb = process.memoryUsage().rss / 2 ** 20;
  let rssPeakMb = rssBaseMb;
  const sample = setInterval(() => (rssPeakMb = Math.max(rssPeakMb, process.memoryUsage().rss / 2 ** 20)), 20);
  const hash = createHash("sha256");
  const started = performance.now();
  const cpu = process.cpuUsage();
  try {
    let res: Response;
    if (u.mode === "plain") {
      // redirect "error", as the OHTTP client sends: otherwise fetch tees a streamed body to resend
      // it after a redirect, and the unread copy holds every byte sent (a 256 MiB upload grew this
      // process by 248 MiB of ArrayBuffers; with "error", 5 MiB against a reader at 10 MB/s).
      res = await fetch(`${u.url}${u.target}`, { method: "POST", headers: { "content-type": "application/octet-stream" }, body: body(u.bytes, hash), duplex: "half", redirect: "error" } as RequestInit);
    } else {
      const fetchIt = createObliviousFetch({ relay: u.url, keys: fromHex(u.keys!), retries: 0 });
      if (u.mode === "chunked") {
        res = await fetchIt(u.target, { method: "POST", body: body(u.bytes, hash), duplex: "half" } as RequestInit);
      } else {
        const whole = randomBytes(u.bytes);
        hash.update(whole);
        res = await fetchIt(u.target, { method: "POST", body: whole });
      }
    }
    const answer = await res.text();
    const used = process.cpuUsage(cpu);
    rssPeakMb = Math.max(rssPeakMb, process.memoryUsage().rss / 2 ** 20);
    return { status: res.status, answer, sha256: hash.digest("hex"), ms: performance.now() - started, cpuUs: used.user + used.system, rssBaseMb, rssPeakMb };
  } finally {
    clearInterval(sample);
  }
}

function client(sender: string | undefined): void {
  if (sender === "hpke-js") setHpkeBackend(hpkeJsSender(nodeHpkeBackend));
  else if (sender !== undefined) throw new Error(`unknown sender ${sender}`);
  process.on("message", (m: { run?: Upload }) => {
    if (m.run === undefined) return;
    upload(m.run).then(
      (r) => send({ result: r }),
      (e: unknown) => send({ error: `${String(e)} ${String((e as { cause?: unknown }).cause)}` }),
    );
  });
  send({ ready: true, port: 0 });
}

const [role, arg] = process.argv.slice(2);
process.on("disconnect", () => process.exit(0));
if (role === "target") target();
else if (role === "proxy") proxy(arg!);
else if (role === "client") client(arg);
else if (role === "seal") {
  measureSealing(arg === "response" ? "response" : "request").then(
    (rows) => send({ seal: rows }),
    (e: unknown) => send({ error: String(e) }),
  );
}
else throw new Error(`unknown role ${role}`);
