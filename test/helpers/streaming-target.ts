// A real HTTP target for streamed (chunked OHTTP) requests, shared by the gateway's and the
// relay's chunked tests. It records the size of every request whose body ended and counts those
// that broke off, so a test can tell a complete request from a cut one. Routes: `/early` answers
// at once with "early:" and then echoes the body as it comes; `/echo` echoes it; anything else
// reads the body whole and answers "ok". A test adds its own routes with `extra` (return true when
// it answered).

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface StreamingTarget {
  url: string;
  /** Sizes of the requests whose body ended normally (assign [] to start over). */
  complete: number[];
  /** Requests that broke off before their end. */
  aborted: number;
  /** Resolves when the next request's head arrives. */
  nextArrival(): Promise<void>;
  /** Resolves when the next request ends or breaks off. */
  nextSettled(): Promise<void>;
  close(): Promise<void>;
}

/** Listens on an ephemeral loopback port; resolves with the server's http:// URL. */
export function listenLocal(s: Server): Promise<string> {
  return new Promise((resolve) => s.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(s.address() as AddressInfo).port}`)));
}

export async function startStreamingTarget(extra?: (req: IncomingMessage, res: ServerResponse) => boolean): Promise<StreamingTarget> {
  const arrivals: Array<() => void> = [];
  const settles: Array<() => void> = [];
  const wake = (fs: Array<() => void>): void => {
    for (const f of fs.splice(0)) f();
  };
  const track = (req: IncomingMessage): void => {
    wake(arrivals);
    let n = 0;
    let ended = false;
    req.on("data", (c: Buffer) => (n += c.length));
    req.on("end", () => {
      ended = true;
      t.complete.push(n);
      wake(settles);
    });
    req.on("close", () => {
      if (ended) return;
      t.aborted++;
      wake(settles);
    });
  };
  const server: Server = createServer((req, res) => {
    track(req);
    if (req.url === "/early" || req.url === "/echo") {
      res.writeHead(200, { "content-type": "application/octet-stream" });
      if (req.url === "/early") res.write("early:");
      req.pipe(res);
      return;
    }
    if (extra?.(req, res) === true) return;
    req.resume();
    req.on("end", () => res.end("ok"));
  });
  const t: StreamingTarget = {
    url: await listenLocal(server),
    complete: [],
    aborted: 0,
    nextArrival: () => new Promise((r) => arrivals.push(r)),
    nextSettled: () => new Promise((r) => settles.push(r)),
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
  return t;
}
