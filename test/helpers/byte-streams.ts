// Request bodies as streams for the chunked OHTTP tests, and reading a stream whole.

import { concatBytes } from "../../core/bytes.js";

/** A stream of `n` bytes (byte i is i mod 256) in pieces of `piece`. */
export function bytesStream(n: number, piece = 64 * 1024): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream({
    pull(c) {
      if (sent >= n) return c.close();
      const k = Math.min(piece, n - sent);
      const b = new Uint8Array(k);
      for (let i = 0; i < k; i++) b[i] = (sent + i) & 0xff;
      sent += k;
      c.enqueue(b);
    },
  });
}

/** Everything a stream yields, concatenated (empty for null). */
export async function readAll(s: ReadableStream<Uint8Array> | null): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  if (s === null) return new Uint8Array(0);
  const reader = s.getReader();
  for (let r = await reader.read(); !r.done; r = await reader.read()) parts.push(r.value);
  return concatBytes(...parts);
}
