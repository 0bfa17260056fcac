// Captures a logger's output as lines, for tests that check what servers log (and never log).
import { Writable } from "node:stream";

export interface CapturedLines {
  stream: Writable;
  lines: string[];
  /** Resolves once the lines captured so far satisfy `done` (checked now and after every write). */
  until: (done: (lines: string[]) => boolean) => Promise<void>;
}

export function captureLines(): CapturedLines {
  const lines: string[] = [];
  const waiters = new Set<{ done: (lines: string[]) => boolean; resolve: () => void }>();
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString().split("\n").filter(Boolean));
      for (const w of waiters) {
        if (w.done(lines)) {
          waiters.delete(w);
          w.resolve();
        }
      }
      cb();
    },
  });
  const until = (done: (lines: string[]) => boolean): Promise<void> =>
    done(lines) ? Promise.resolve() : new Promise((resolve) => waiters.add({ done, resolve }));
  return { stream, lines, until };
}
