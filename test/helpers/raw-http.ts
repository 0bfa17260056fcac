// Raw HTTP/1.1 over TCP for adversarial tests: any bytes, sent in parts with pauses, and the
// status lines of whatever comes back.

import { connect, type Socket } from "node:net";

export interface RawPart {
  bytes: Buffer;
  /** Pause before this part is written. */
  delayMs?: number;
}

export interface RawResult {
  /** Status codes of every response status line received, in order. */
  statuses: number[];
  text: string;
  /** The server closed the connection (as opposed to our timeout). */
  closedByServer: boolean;
  /** Milliseconds from the first byte written until the connection ended. */
  elapsedMs: number;
}

const STATUS_LINE = /(?:^|\r\n\r\n|\r\n)HTTP\/1\.[01] (\d{3})/g;

export function statusesOf(text: string): number[] {
  return [...text.matchAll(STATUS_LINE)].map((m) => Number(m[1]));
}

/** True when `text` holds at least one response and every response in it is complete (Content-Length framing). */
export function responsesComplete(text: string): boolean {
  let at = 0;
  let count = 0;
  while (at < text.length) {
    const end = text.indexOf("\r\n\r\n", at);
    if (end < 0) return false;
    const head = text.slice(at, end);
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? "0");
    const length = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (length === null && !(status === 204 || status === 304 || (status >= 100 && status < 200))) return false;
    at = end + 4 + (length === null ? 0 : Number(length[1]));
    if (at > text.length) return false;
    if (status >= 200) count++;
  }
  return count > 0;
}

/**
 * Writes `parts` on one connection and collects the answer until the server closes or `timeoutMs`
 * passes (or `until` matches the text so far). The connection is half-closed right after the last
 * part unless `keepOpen`; with `endAfterMs`, it is half-closed only if no complete answer arrived
 * that long after the last part (node:http drops the answer to a request whose client half-closed
 * before it was ready, as HTTP/1.1 clients never do).
 */
export function rawExchange(
  port: number,
  parts: RawPart[] | Buffer | string,
  o: { timeoutMs?: number; keepOpen?: boolean; endAfterMs?: number; until?: (text: string) => boolean } = {},
): Promise<RawResult> {
  const list: RawPart[] = typeof parts === "string" ? [{ bytes: Buffer.from(parts, "latin1") }] : Buffer.isBuffer(parts) ? [{ bytes: parts }] : parts;
  const socket: Socket = connect(port, "127.0.0.1");
  const started = Date.now();
  let text = "";
  return new Promise((resolve) => {
    let finished = false;
    /** Called on every answer byte and at the end (while waiting for endAfterMs). */
    let onProgress: (() => void) | undefined;
    const finish = (closedByServer: boolean): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ statuses: statusesOf(text), text, closedByServer, elapsedMs: Date.now() - started });
      onProgress?.();
    };
    const timer = setTimeout(() => finish(false), o.timeoutMs ?? 3000);
    socket.on("data", (c: Buffer) => {
      text += c.toString("latin1");
      if (o.until?.(text) === true) finish(false);
      onProgress?.();
    });
    socket.on("end", () => finish(true));
    socket.on("close", () => finish(true));
    socket.on("error", () => finish(true));
    socket.once("connect", () => {
      void (async () => {
        for (const p of list) {
          if (p.delayMs !== undefined) await new Promise((r) => setTimeout(r, p.delayMs));
          if (finished || socket.destroyed) return;
          socket.write(p.bytes);
        }
        if (o.endAfterMs !== undefined) {
          const waitMs = o.endAfterMs;
          // Until the answers are complete, the exchange ends, or the client's patience runs out.
          await new Promise<void>((resolve) => {
            const patience = setTimeout(resolve, waitMs);
            onProgress = () => {
              if (!finished && !responsesComplete(text)) return;
              clearTimeout(patience);
              resolve();
            };
            onProgress();
          });
          onProgress = undefined;
          if (finished) return;
          if (responsesComplete(text)) return finish(false);
        }
        if (o.keepOpen !== true && !socket.destroyed) socket.end();
      })();
    });
  });
}

/** A request head and body as bytes. */
export function rawRequest(method: string, path: string, headers: [string, string][], body: Uint8Array = new Uint8Array()): Buffer {
  const head = [`${method} ${path} HTTP/1.1`, ...headers.map(([n, v]) => `${n}: ${v}`)].join("\r\n") + "\r\n\r\n";
  return Buffer.concat([Buffer.from(head, "latin1"), Buffer.from(body)]);
}
