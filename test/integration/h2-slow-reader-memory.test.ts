// Memory a never-reading HTTP/2 client can make the relay hold (needs a built dist/).
//
// The relay runs as its own process (`veil relay` with listen.tls, so ALPN h2) in front of a gateway
// stand-in that answers every upload with 16 KiB at once. Two clients that never take their answers:
// - one that opens streams as fast as the relay allows and gives no flow-control window (SETTINGS
//   initial window 0, node's http2 client: it respects the stream cap and retries refused streams);
// - one that writes complete requests back to back on a raw connection and never reads the socket.
// Either way the relay must hold a few MB at most (answers unsent count against
// http2.maxBufferedBytes, streams beyond it are refused, untaken answers are reset after
// requestTimeoutMs, a stalled socket is cut), and serve others meanwhile. As in
// slow-reader-memory.test.ts, the relay runs with a garbage collection forced every 200 ms so that RSS
// follows the memory held; the growth is printed for the record.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { connect as h2connect, type ClientHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FRAME, connectRawH2, frame, requestHeaders } from "../helpers/raw-h2.js";
import { createServerTestCa, type TestCa } from "../helpers/test-ca.js";
import { killAllVeilChildren, spawnVeil, type VeilChild } from "../helpers/veil-child.js";

/** Growth of the relay's RSS (MB) one never-reading connection may cause (as for HTTP/1.1). */
const BOUND_MB = 32;
/** Uploads the flooding clients try (each answered with ANSWER_BYTES if the relay took them all: 1.6 GB). */
const ATTEMPTS = 100_000;
const ANSWER_BYTES = 16 * 1024;
const LIMITS = { headersTimeoutMs: 1000, requestTimeoutMs: 2000, keepAliveTimeoutMs: 1000 };

const dir = mkdtempSync(join(tmpdir(), "veil-h2-slow-reader-"));
const gcEvery = join(dir, "gc.mjs");
writeFileSync(gcEvery, "setInterval(() => globalThis.gc(), 200).unref();\n");
let ca: TestCa;
let stand: Server;
let relay: VeilChild;
const measured: string[] = [];

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m![1]) / 1024;
}

beforeAll(async () => {
  ca = createServerTestCa("veil-h2-slow-reader-ca-");
  const answer = Buffer.alloc(ANSWER_BYTES, 0x61);
  stand = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "message/ohttp-res", "content-length": answer.length });
      res.end(answer);
    });
  });
  await new Promise<void>((resolve) => stand.listen(0, "127.0.0.1", resolve));
  relay = await spawnVeil(
    "relay",
    join(dir, "relay.json"),
    {
      listen: { host: "127.0.0.1", port: 0, tls: { cert: ca.file("relay.pem"), key: ca.file("relay.key") } },
      routes: [{ path: "/gw", gateway: `http://127.0.0.1:${(stand.address() as AddressInfo).port}/gateway` }],
      rateLimit: { perClientPerWindow: 0 },
      limits: LIMITS,
    },
    [],
    ["--expose-gc", "--import", gcEvery],
  );
}, 60_000);

afterAll(async () => {
  await killAllVeilChildren();
  stand?.close();
  ca?.close();
  rmSync(dir, { recursive: true, force: true });
  process.stdout.write(`never-reading h2 client, relay RSS growth:\n${measured.join("\n")}\n`);
});

function session(window?: number): ClientHttp2Session {
  const s = h2connect(relay.url, { ca: ca.pem("ca.pem"), ...(window === undefined ? {} : { settings: { initialWindowSize: window } }) });
  s.on("error", () => {});
  return s;
}

/** Uploads read to the end on one connection (the heap reaches its working size); the largest RSS seen. */
async function warmUp(pid: number): Promise<number> {
  const s = session();
  let peak = rssMb(pid);
  for (let round = 0; round < 20; round++) {
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        const st = s.request({ ":method": "POST", ":path": "/gw", "content-type": "message/ohttp-req" });
        st.end("warm-up");
        st.resume();
        await new Promise((resolve) => st.once("close", resolve));
      }),
    );
    peak = Math.max(peak, rssMb(pid));
  }
  s.destroy();
  return peak;
}

/** Asks for /healthz on a fresh connection: the relay still serves others. */
async function healthy(): Promise<number> {
  const s = session();
  const st = s.request({ ":path": "/healthz" });
  st.end();
  st.resume();
  const status = await new Promise<number>((resolve, reject) => {
    st.once("response", (h) => resolve(Number(h[":status"])));
    st.once("error", reject);
  });
  s.destroy();
  return status;
}

describe("an h2 client that never takes its answers", () => {
  it("gives no flow-control window: the relay holds a few MB at most", async () => {
    const pid = relay.child.pid!;
    const baseline = await warmUp(pid);
    let peak = baseline;
    const s = session(0);
    let answered = 0;
    let refused = 0;
    let settled = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMb(pid))), 50);
    // Streams beyond the cap wait in the client (node's http2 client keeps to SETTINGS); refused
    // ones end at once, answered ones when the relay resets the answer it could not send.
    await new Promise<void>((resolve) => {
      for (let i = 0; i < ATTEMPTS / 10; i++) {
        const st = s.request({ ":method": "POST", ":path": "/gw", "content-type": "message/ohttp-req" });
        st.on("response", () => answered++);
        st.on("error", () => {});
        st.on("close", () => {
          if (st.rstCode === 7) refused++;
          if (++settled === ATTEMPTS / 10 || s.destroyed) resolve();
        });
        st.end("upload");
      }
      s.once("close", () => resolve());
    });
    clearInterval(sampler);
    peak = Math.max(peak, rssMb(pid));
    s.destroy();
    const growth = peak - baseline;
    measured.push(`  window 0, ${ATTEMPTS / 10} uploads tried: ${growth.toFixed(1)} MB (${answered} answered and never taken, ${refused} refused)`);
    expect(growth).toBeLessThan(BOUND_MB);
    // The relay took only what fits its limits: the rest was refused (REFUSED_STREAM) or never
    // started because the relay closed the connection first; which of the two depends on timing.
    expect(answered).toBeLessThan(ATTEMPTS / 10);
    expect(await healthy()).toBe(200);
  }, 180_000);

  it("never reads its socket: the relay holds a few MB at most and cuts the connection", async () => {
    const pid = relay.child.pid!;
    const baseline = await warmUp(pid);
    let peak = baseline;
    const raw = await connectRawH2(relay.port, ca.pem("ca.pem"));
    await raw.wait((f) => f.type === FRAME.SETTINGS);
    raw.socket.pause();
    let id = 1;
    let written = 0;
    let stalled = false;
    const type: [string, string] = ["content-type", "message/ohttp-req"];
    // Complete uploads back to back, until the relay stops reading (the writes stall) or cuts us off.
    while (id < 2 * ATTEMPTS && !raw.socket.destroyed) {
      const batch: Buffer[] = [];
      for (let i = 0; i < 20; i++, id += 2) batch.push(requestHeaders(id, "POST", "/gw", [type]), frame(FRAME.DATA, 1, id, Buffer.from("upload")));
      const block = Buffer.concat(batch);
      written += block.length;
      peak = Math.max(peak, rssMb(pid));
      if (!raw.send(block)) {
        const drained = await Promise.race([
          new Promise<boolean>((resolve) => raw.socket.once("drain", () => resolve(true))),
          raw.closed.then(() => false),
          new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 1500)),
        ]);
        if (!drained) {
          stalled = true;
          break;
        }
      }
    }
    peak = Math.max(peak, rssMb(pid));
    // Stalled or closed: the relay's timeouts cut a connection whose answers stay unsent.
    const cut = await Promise.race([raw.closed.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 60_000))]);
    raw.socket.destroy();
    const growth = peak - baseline;
    measured.push(`  unread socket: ${growth.toFixed(1)} MB (client wrote ${(written / 1024 / 1024).toFixed(1)} MB, ${stalled ? "then stalled" : "then was cut"})`);
    expect(growth).toBeLessThan(BOUND_MB);
    expect(cut).toBe(true);
    expect(await healthy()).toBe(200);
  }, 180_000);
});
