// The upstream pool over real loopback sockets: answers split across reads (Content-Length and
// chunked), delimited by the end of the connection, and answers of several connections read in
// turn must each come back whole and unmixed.

import { createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import type { ProtocolError } from "../../../core/errors.js";
import { Upstream, type UpstreamAnswer } from "../../../relay/upstream.js";

let server: Server | undefined;
let upstream: Upstream | undefined;
afterEach(async () => {
  upstream?.close();
  await new Promise<void>((resolve) => (server === undefined ? resolve() : server.close(() => resolve())));
  server = undefined;
  upstream = undefined;
});

/** A gateway that answers each request with `answer(body)`, written in the pieces it returns. */
async function gateway(answer: (body: string) => { pieces: string[]; end?: boolean }): Promise<Upstream> {
  server = createServer((socket: Socket) => {
    let buf = "";
    socket.on("data", (d: Buffer) => {
      buf += d.toString("latin1");
      for (;;) {
        const head = buf.indexOf("\r\n\r\n");
        if (head < 0) return;
        const length = Number(/content-length: (\d+)/i.exec(buf.slice(0, head))![1]);
        if (buf.length < head + 4 + length) return;
        const body = buf.slice(head + 4, head + 4 + length);
        buf = buf.slice(head + 4 + length);
        const a = answer(body);
        // Each piece a separate write, a tick apart: separate reads on the relay's side.
        let i = 0;
        const next = (): void => {
          if (i < a.pieces.length) {
            socket.write(a.pieces[i++]!, () => setImmediate(next));
          } else if (a.end === true) {
            socket.end();
          }
        };
        next();
      }
    });
  });
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  upstream = new Upstream({
    gateway: new URL(`http://127.0.0.1:${port}/gateway`),
    connectMs: 5000,
    headersMs: 5000,
    bodyMs: 5000,
    keepAliveMs: 4000,
    maxConnections: 8,
    maxResponseBytes: 1 << 20,
    maxHeaderBytes: 16 * 1024,
  });
  return upstream;
}

function forward(u: Upstream, body: string): Promise<UpstreamAnswer> {
  return new Promise((resolve, reject) => {
    u.forward(Buffer.from(body), (err: ProtocolError | undefined, a: UpstreamAnswer | undefined) => (err === undefined ? resolve(a!) : reject(err)));
  });
}

describe("Upstream over real sockets", () => {
  it("reads answers split across reads, with Content-Length and chunked, on concurrent connections", async () => {
    const u = await gateway((body) => {
      const payload = `res:${body}`;
      if (body.startsWith("c")) {
        const half = payload.length >> 1;
        return {
          pieces: [
            "HTTP/1.1 200 OK\r\nContent-Type: message/ohttp-res\r\nTransfer-",
            `Encoding: chunked\r\n\r\n${half.toString(16)}\r\n${payload.slice(0, half)}`,
            `\r\n${(payload.length - half).toString(16)}\r\n${payload.slice(half)}\r\n0\r\n\r\n`,
          ],
        };
      }
      const all = `HTTP/1.1 200 OK\r\nContent-Type: message/ohttp-res\r\nContent-Length: ${payload.length}\r\n\r\n${payload}`;
      return { pieces: [all.slice(0, 30), all.slice(30, 60), all.slice(60)] };
    });
    const bodies = Array.from({ length: 16 }, (_, i) => `${i % 2 === 0 ? "c" : "l"}${i}-${"x".repeat(100 + i * 50)}`);
    for (let round = 0; round < 2; round++) {
      const answers = await Promise.all(bodies.map((b) => forward(u, b)));
      expect(answers.map((a) => a.body.toString("latin1"))).toEqual(bodies.map((b) => `res:${b}`));
      expect(answers.every((a) => a.status === 200 && a.contentType === "message/ohttp-res")).toBe(true);
    }
  });

  it("reads an answer delimited by the end of the connection", async () => {
    const u = await gateway((body) => ({ pieces: ["HTTP/1.1 201 Created\r\nContent-Type: a/b\r\n\r\n", `until close: ${body}`], end: true }));
    const a = await forward(u, "one");
    expect(a.status).toBe(201);
    expect(a.body.toString()).toBe("until close: one");
    // The next request gets a new connection.
    expect((await forward(u, "two")).body.toString()).toBe("until close: two");
  });
});
