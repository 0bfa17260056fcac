// The relay sees client addresses; nothing it writes may contain one. A client connecting from
// 127.0.0.2 drives every kind of outcome (forwarded on both paths, every refusal, gateway failures,
// timeouts, key fetches, aborted requests), then the relay's log (at debug level), its /metrics and
// everything the gateway received are searched for that address.

import { connect } from "node:net";
import { Readable } from "node:stream";
import { Agent, request } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { echoBehaviour, startStandIn, type StandIn } from "../helpers/relay-gateway-stand-in.js";
import { startTestRelay, type TestRelay } from "../helpers/relay-harness.js";
import { until } from "../helpers/wait.js";

const CLIENT = "127.0.0.2";
const OHTTP_REQ = "message/ohttp-req";
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/**
 * Sends raw bytes from the client address; resolves with what came back once the connection is
 * closed: by the relay, or by this client when `giveUp` resolves (at the latest after 5 s).
 */
function rawFromClient(port: number, bytes: string, giveUp: Promise<unknown> = new Promise(() => {})): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ port, host: "127.0.0.1", localAddress: CLIENT });
    let out = "";
    const timer = setTimeout(() => s.destroy(), 5000);
    s.on("data", (c: Buffer) => (out += c.toString("latin1")));
    s.on("error", () => {});
    s.on("close", () => {
      clearTimeout(timer);
      resolve(out);
    });
    s.write(bytes);
    void giveUp.then(() => s.destroy());
  });
}

describe("relay privacy", () => {
  it("never writes a client address to its log or metrics, nor forwards one", async () => {
    const gw: StandIn = await startStandIn();
    cleanups.push(() => gw.close());
    const relay: TestRelay = await startTestRelay({
      routes: [{ path: "/gw", gateway: `${gw.url}/gateway`, keys: `${gw.url}/ohttp-keys` }],
      rateLimit: { perClientPerWindow: 12 },
      limits: { maxRequestBytes: 64, headersTimeoutMs: 300, requestTimeoutMs: 600 },
      timeouts: { headersMs: 300 },
    });
    cleanups.push(() => relay.stop());
    const client = new Agent({ localAddress: CLIENT });
    cleanups.push(() => client.close());
    const send = async (path: string, init: Parameters<typeof request>[1] = {}) => {
      const res = await request(`${relay.url}${path}`, { ...init, dispatcher: client });
      await res.body.dump();
      return res.statusCode;
    };
    const post = (body: unknown, type = OHTTP_REQ, path = "/gw") =>
      send(path, { method: "POST", body: body as string, headers: { "content-type": type, "x-forwarded-for": CLIENT, forwarded: `for=${CLIENT}` } });
    async function* chunks(n: number) {
      for (let i = 0; i < n; i++) yield Buffer.alloc(20, 1);
    }

    const statuses: number[] = [];
    statuses.push(await post("lean")); // 200 on the lean path
    statuses.push(await post(Readable.from(chunks(2)))); // 200 through node:http
    statuses.push(await post("x", "text/plain")); // 415
    statuses.push(await post(Buffer.alloc(65))); // 413 by Content-Length
    statuses.push(await post(Readable.from(chunks(5)))); // 413 while reading
    statuses.push(await post("")); // 400
    statuses.push(await post("x", OHTTP_REQ, "/nope")); // 404
    statuses.push(await send("/gw", { method: "GET" })); // 405
    statuses.push(await send("/gw/ohttp-keys")); // 200 keys
    statuses.push(await send("/healthz"));
    gw.behaviour = () => {}; // silence: 504
    statuses.push(await post("slow"));
    gw.behaviour = (_req, res) => res.socket?.destroy(); // 502
    statuses.push(await post("drop"));
    // The client gives up while the gateway works; the gateway answers after it has gone.
    const logged = (): number => relay.lines.filter((l) => l.includes('"msg":"request"')).length;
    const linesBefore = logged();
    const held = new Promise<() => void>((resolve) => (gw.behaviour = (req, res) => resolve(() => echoBehaviour(req, res))));
    await rawFromClient(relay.port, `POST /gw HTTP/1.1\r\nHost: r\r\nContent-Type: ${OHTTP_REQ}\r\nContent-Length: 4\r\n\r\ngone`, held);
    (await held)();
    await until(() => logged() > linesBefore, "the relay to log the abandoned request");
    // A head that never completes (408) and garbage (node:http's 400): the relay closes both.
    expect(await rawFromClient(relay.port, "POST /gw HTTP/1.1\r\nHost: r\r\n")).toMatch(/^HTTP\/1\.1 408/);
    expect(await rawFromClient(relay.port, "BLAH\r\n\r\n")).toMatch(/^HTTP\/1\.1 400/);
    gw.behaviour = echoBehaviour;
    for (let i = 0; i < 15; i++) statuses.push(await post("burst")); // ends in 429s
    expect(statuses).toEqual(expect.arrayContaining([200, 415, 413, 400, 404, 405, 504, 502, 429]));

    const metrics = await (await request(`${relay.url}/metrics`)).body.text();
    await relay.stop();
    const log = relay.lines.join("\n");
    expect(relay.lines.length).toBeGreaterThan(20);
    expect(log).toContain('"outcome":"HTTP_ERR_TIMEOUT"');
    expect(log).not.toContain(CLIENT);
    expect(log).not.toMatch(/remoteAddress|remotePort|"ip"|x-forwarded-for/i);
    expect(metrics).not.toContain(CLIENT);
    for (const r of gw.requests) {
      expect(r.rawHeaders.join("\n")).not.toContain(CLIENT);
      expect(r.body.toString("latin1")).not.toContain(CLIENT);
    }
  });
});
