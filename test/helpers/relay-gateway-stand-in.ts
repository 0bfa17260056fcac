// A gateway stand-in for relay tests: records exactly what arrives (raw header lines, body) and
// answers as told (status, headers, delays, chunked answers, silence), and serves key
// configurations at /ohttp-keys. Plain HTTP or HTTPS (optionally requiring a client certificate).

import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";

export interface RecordedRequest {
  method: string;
  url: string;
  /** Raw header lines as received: [name, value, name, value, ...]. */
  rawHeaders: string[];
  body: Buffer;
  /** Subject CN of the client certificate, when TLS with client certificates is used. */
  clientCertSubject?: string;
}

export type Behaviour = (req: RecordedRequest, res: ServerResponse) => void;

export interface StandIn {
  url: string;
  port: number;
  requests: RecordedRequest[];
  keyFetches: number;
  /** How the next POST is answered (default: 200 message/ohttp-res echoing "res:" + body). */
  behaviour: Behaviour;
  /** The key configurations served at /ohttp-keys and their Cache-Control. */
  keys: { body: Buffer; cacheControl?: string; status?: number; contentType?: string };
  /** Connections seen (to check keep-alive reuse). */
  connections: number;
  close(): Promise<void>;
}

export const echoBehaviour: Behaviour = (req, res) => {
  const body = Buffer.concat([Buffer.from("res:"), req.body]);
  res.writeHead(200, { "content-type": "message/ohttp-res", "content-length": body.length, "x-gateway-secret": "leak" });
  res.end(body);
};

/** A plausible key configuration list: one X25519 config with one suite, 2-byte length prefixed. */
export function fakeKeyConfigs(keyId = 1, fill = 7): Buffer {
  const config = Buffer.concat([Buffer.from([keyId, 0x00, 0x20]), Buffer.alloc(32, fill), Buffer.from([0x00, 0x04, 0x00, 0x01, 0x00, 0x01])]);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(config.length);
  return Buffer.concat([len, config]);
}

export async function startStandIn(opts: { tls?: { cert: Buffer; key: Buffer; ca?: Buffer } } = {}): Promise<StandIn> {
  const sockets = new Set<Socket>();
  const state: StandIn = {
    url: "",
    port: 0,
    requests: [],
    keyFetches: 0,
    behaviour: echoBehaviour,
    keys: { body: fakeKeyConfigs(), cacheControl: "max-age=60" },
    connections: 0,
    close: async () => {},
  };
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.method === "GET" && req.url === "/ohttp-keys") {
        state.keyFetches++;
        const k = state.keys;
        const headers: Record<string, string | number> = { "content-type": k.contentType ?? "application/ohttp-keys", "content-length": k.body.length };
        if (k.cacheControl !== undefined) headers["cache-control"] = k.cacheControl;
        res.writeHead(k.status ?? 200, headers);
        res.end(k.body);
        return;
      }
      const tlsSocket = req.socket as Socket & { getPeerCertificate?: () => { subject?: { CN?: string } } };
      const cn = tlsSocket.getPeerCertificate?.()?.subject?.CN;
      const rec: RecordedRequest = { method: req.method ?? "", url: req.url ?? "", rawHeaders: [...req.rawHeaders], body: Buffer.concat(chunks) };
      if (cn !== undefined) rec.clientCertSubject = cn;
      state.requests.push(rec);
      state.behaviour(rec, res);
    });
  };
  const server: Server =
    opts.tls === undefined
      ? createHttpServer({ keepAliveTimeout: 10_000 }, handler)
      : (createHttpsServer(
          {
            cert: opts.tls.cert,
            key: opts.tls.key,
            keepAliveTimeout: 10_000,
            ...(opts.tls.ca === undefined ? {} : { ca: opts.tls.ca, requestCert: true, rejectUnauthorized: true }),
          },
          handler,
        ));
  server.on(opts.tls === undefined ? "connection" : "secureConnection", (s: Socket) => {
    state.connections++;
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  state.port = port;
  state.url = `${opts.tls === undefined ? "http" : "https"}://127.0.0.1:${port}`;
  state.close = async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return state;
}
