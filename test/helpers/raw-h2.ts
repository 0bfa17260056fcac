// A raw HTTP/2 client for tests that must send what node's client will not (a content-length that
// disagrees with the DATA, HEADERS and RST_STREAM in a tight loop, more streams than it should):
// frames are written by hand (RFC 9113 §4.1), header blocks as HPACK literals without indexing
// (RFC 7541 §6.2.2), and the server's frames are collected (header blocks are not decoded).

import { connect as tlsConnect, type TLSSocket } from "node:tls";

export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8 } as const;
export const FLAG = { END_STREAM: 1, ACK: 1, END_HEADERS: 4 } as const;

export interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

export function frame(type: number, flags: number, stream: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}

/** RFC 7541 §5.1 integer with an n-bit prefix. */
function hpackInt(n: number, prefixBits: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (n < max) return Buffer.from([n]);
  const out = [max];
  let rest = n - max;
  while (rest >= 128) {
    out.push((rest % 128) | 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

/** A header block of literal fields without indexing, new names, no Huffman coding. */
export function headerBlock(fields: readonly (readonly [string, string])[]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    const n = Buffer.from(name, "latin1");
    const v = Buffer.from(value, "latin1");
    parts.push(Buffer.from([0]), hpackInt(n.length, 7), n, hpackInt(v.length, 7), v);
  }
  return Buffer.concat(parts);
}

/** A request's HEADERS frame (END_HEADERS, and END_STREAM if `end`). */
export function requestHeaders(stream: number, method: string, path: string, extra: readonly (readonly [string, string])[] = [], end = false): Buffer {
  const fields: [string, string][] = [
    [":method", method],
    [":scheme", "https"],
    [":authority", "relay.test"],
    [":path", path],
    ...extra.map(([k, v]): [string, string] => [k, v]),
  ];
  return frame(FRAME.HEADERS, FLAG.END_HEADERS | (end ? FLAG.END_STREAM : 0), stream, headerBlock(fields));
}

export function rstStream(stream: number, code: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return frame(FRAME.RST_STREAM, 0, stream, p);
}

export interface RawH2 {
  socket: TLSSocket;
  frames: Frame[];
  send(bytes: Uint8Array): boolean;
  /** The first frame (already received or still to come) that matches. */
  wait(match: (f: Frame) => boolean): Promise<Frame>;
  closed: Promise<void>;
}

/** Connects with ALPN h2, sends the preface and empty SETTINGS, ACKs the server's SETTINGS. */
export async function connectRawH2(port: number, ca: Buffer): Promise<RawH2> {
  const socket = tlsConnect({ host: "127.0.0.1", port, ca, ALPNProtocols: ["h2"] });
  await new Promise<void>((resolve, reject) => {
    socket.once("secureConnect", resolve);
    socket.once("error", reject);
  });
  if (socket.alpnProtocol !== "h2") throw new Error(`ALPN gave ${String(socket.alpnProtocol)}`);
  const frames: Frame[] = [];
  const waiters: { match: (f: Frame) => boolean; resolve: (f: Frame) => void }[] = [];
  let buf = Buffer.alloc(0);
  socket.on("error", () => {});
  socket.on("data", (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.length < 9 + len) break;
      const f: Frame = { type: buf[3]!, flags: buf[4]!, stream: buf.readUInt32BE(5) & 0x7fffffff, payload: buf.subarray(9, 9 + len) };
      buf = buf.subarray(9 + len);
      frames.push(f);
      if (f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
      for (const w of [...waiters]) {
        if (w.match(f)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(f);
        }
      }
    }
  });
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  socket.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1"), frame(FRAME.SETTINGS, 0, 0)]));
  return {
    socket,
    frames,
    send: (bytes) => socket.write(bytes),
    wait: (match) =>
      new Promise((resolve) => {
        const f = frames.find(match);
        if (f !== undefined) resolve(f);
        else waiters.push({ match, resolve });
      }),
    closed,
  };
}

/** The error code of a RST_STREAM or GOAWAY frame. */
export function errorCode(f: Frame): number {
  return f.type === FRAME.GOAWAY ? f.payload.readUInt32BE(4) : f.payload.readUInt32BE(0);
}
