// Shared settings of the fast-check properties: fixed seeds, and the number of runs from
// VEIL_FUZZ_RUNS (200 in `npm test`, 100,000 in `npm run fuzz`).

import type fc from "fast-check";
import { expect } from "vitest";
import { ProtocolError } from "../../core/errors.js";

export const numRuns = Number(process.env.VEIL_FUZZ_RUNS ?? 200);

/** A fixed seed and the configured number of runs. */
export function fuzzParams(seed: number, runs = numRuns): fc.Parameters<unknown> {
  return { seed, numRuns: runs };
}

/** Runs `f`; anything thrown must be a ProtocolError whose code is one of `codes` (any if empty). */
export function returnsOrProtocolError<T>(f: () => T, codes: readonly string[] = []): T | ProtocolError {
  try {
    return f();
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw new Error(`threw something other than a ProtocolError: ${String(e)}`, { cause: e });
    if (codes.length > 0) expect(codes).toContain(e.code);
    return e;
  }
}

/** True when `v` and everything reachable from it is frozen. */
export function isDeepFrozen(v: unknown): boolean {
  if (typeof v !== "object" || v === null) return true;
  if (!Object.isFrozen(v)) return false;
  return Object.values(v).every(isDeepFrozen);
}

/** Splits `b` at the given points (taken modulo its length + 1): how a stream might deliver it. */
export function resplit(b: Uint8Array, at: readonly number[]): Uint8Array[] {
  const points = [...new Set(at.map((a) => a % (b.length + 1)))].sort((x, y) => x - y);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of [...points, b.length]) {
    out.push(b.subarray(prev, p));
    prev = p;
  }
  return out;
}
