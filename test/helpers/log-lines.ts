// Captures a logger's output as lines, for tests that check what servers log (and never log).
import { Writable } from "node:stream";

export function captureLines(): { stream: Writable; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString().split("\n").filter(Boolean));
      cb();
    },
  });
  return { stream, lines };
}
