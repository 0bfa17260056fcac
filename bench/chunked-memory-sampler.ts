// Loaded with `--import` (and --expose-gc) into each process of bench/chunked-memory.ts and of the
// chunked memory test. Forces a garbage collection every 50 ms, so that RSS follows the memory
// held rather than garbage V8 has not collected yet: a streaming process allocates a few times the
// bytes that pass (socket reads, AEAD output, framing), all of it garbage at once, so what piles
// up between two collections grows with the throughput, not with the body (at 200 ms the client
// grew by up to 24 MiB at 29 MB/s; a faster machine would have grown more). With
// VEIL_MEMORY_LOG_DIR set, it also appends process.memoryUsage() every 20 ms, one JSON line per
// sample, to <dir>/<pid>.jsonl.

import { appendFileSync } from "node:fs";
import { join } from "node:path";

/** One line of the log. */
export interface MemorySample {
  /** Date.now() */
  t: number;
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("chunked-memory-sampler needs node --expose-gc");
setInterval(gc, 50).unref();

const dir = process.env.VEIL_MEMORY_LOG_DIR;
if (dir !== undefined && dir !== "") {
  const file = join(dir, `${process.pid}.jsonl`);
  setInterval(() => {
    const m = process.memoryUsage();
    const s: MemorySample = { t: Date.now(), rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers };
    appendFileSync(file, `${JSON.stringify(s)}\n`);
  }, 20).unref();
}
