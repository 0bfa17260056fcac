// Decoding limits for Binary HTTP (RFC 9292).
//
// RFC 9292 puts no limit on field counts or sizes (§3.1: up to 2^62-1 bytes per section), so a
// decoder that trusted the length prefixes could be made to allocate without bound. Every limit
// below is checked before the bytes it guards are copied or turned into strings; a message over a
// limit throws BHTTP_ERR_TOO_LARGE.

export interface BhttpLimits {
  /** Field lines in the whole message: informational, header and trailer sections together. */
  maxFields: number;
  /** Bytes of one field line (name + value), and of each request control data value. */
  maxFieldBytes: number;
  /** Bytes of the whole encoded message, padding included. */
  maxMessageBytes: number;
  /** Informational (1xx) responses before the final response. */
  maxInformational: number;
}

export const DEFAULT_BHTTP_LIMITS: Readonly<BhttpLimits> = Object.freeze({
  // HTTP servers commonly cap header counts at about 100; 256 leaves room for trailers and 1xx.
  maxFields: 256,
  // Matches Node's default total header size (16 KiB); one field line never needs more.
  maxFieldBytes: 16 * 1024,
  // DAP uploads and answers are a few KiB; 1 MiB leaves a wide margin. Raise it per call if needed.
  maxMessageBytes: 1024 * 1024,
  // The RFC 9292 §5.2 example has two (102, 103); a real server rarely sends more than one.
  maxInformational: 16,
});

const LIMIT_KEYS = Object.keys(DEFAULT_BHTTP_LIMITS) as (keyof BhttpLimits)[];

/**
 * The last result per overrides object, with the values it was made from: a server passes the
 * same object on every call, so its limits are built once. A mutated object is rebuilt.
 */
const resolved = new WeakMap<object, { from: Partial<BhttpLimits>; keys: string; limits: Readonly<BhttpLimits> }>();

/** Defaults overlaid with `overrides`; each value must be a non-negative safe integer. */
export function resolveLimits(overrides: Partial<BhttpLimits> = {}): Readonly<BhttpLimits> {
  const keys = Object.keys(overrides).join();
  const hit = resolved.get(overrides);
  if (hit !== undefined && hit.keys === keys && sameLimits(hit.from, overrides)) return hit.limits;
  const limits = buildLimits(overrides);
  resolved.set(overrides, { from: { ...overrides }, keys, limits });
  return limits;
}

function sameLimits(a: Partial<BhttpLimits>, b: Partial<BhttpLimits>): boolean {
  for (const k of LIMIT_KEYS) if (a[k] !== b[k]) return false;
  return true;
}

function buildLimits(overrides: Partial<BhttpLimits>): Readonly<BhttpLimits> {
  if (Object.keys(overrides).length === 0) return DEFAULT_BHTTP_LIMITS;
  const out: BhttpLimits = { ...DEFAULT_BHTTP_LIMITS };
  for (const key of Object.keys(overrides) as (keyof BhttpLimits)[]) {
    if (!Object.hasOwn(DEFAULT_BHTTP_LIMITS, key)) {
      throw new TypeError(`unknown Binary HTTP limit "${String(key)}"`);
    }
    const v = overrides[key];
    if (v === undefined) continue;
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new RangeError(`Binary HTTP limit ${key} must be a non-negative integer, got ${String(v)}`);
    }
    out[key] = v;
  }
  return Object.freeze(out);
}
