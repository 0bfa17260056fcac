// Request bodies as streams for the chunked OHTTP tests, and reading a stream whole.

import { expect } from "vitest";
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

/**
 * Proves an answer can start before its request ends: sends "first" to the streaming target's
 * `/early` and holds "-last" back until the answer's first bytes ("early:") have arrived, then
 * checks the whole echo.
 */
export async function expectAnswerBeforeRequestEnds(fetchFn: (url: string, init: RequestInit) => Promise<Response>): Promise<void> {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let step = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(c) {
      step++;
      if (step === 1) return c.enqueue(new TextEncoder().encode("first"));
      await gate; // the rest waits until the answer has started
      c.enqueue(new TextEncoder().encode("-last"));
      c.close();
    },
  });
  const res = await fetchFn("https://t.example/early", { method: "POST", body, duplex: "half" } as RequestInit);
  const reader = res.body!.getReader();
  const first = await reader.read();
  expect(new TextDecoder().decode(first.value)).toMatch(/^early:/);
  expect(step).toBeLessThanOrEqual(2); // the last piece was not sent yet
  release();
  let text = new TextDecoder().decode(first.value);
  for (let r = await reader.read(); !r.done; r = await reader.read()) text += new TextDecoder().decode(r.value);
  expect(text).toBe("early:first-last");
}
