// HTTP field values every component reads, parsed in one place: the media type of a Content-Type
// (RFC 9110 §8.3.1) and the freshness a Cache-Control field gives (RFC 9111 §5.2).

/** Strips optional whitespace (RFC 9110 §5.6.3: spaces and horizontal tabs, nothing else). */
export function trimOws(v: string): string {
  let a = 0;
  let b = v.length;
  while (a < b && (v.charCodeAt(a) === 0x20 || v.charCodeAt(a) === 0x09)) a++;
  while (b > a && (v.charCodeAt(b - 1) === 0x20 || v.charCodeAt(b - 1) === 0x09)) b--;
  return a === 0 && b === v.length ? v : v.slice(a, b);
}

/**
 * The media type of a Content-Type value, lowercased and without parameters (RFC 9110 §8.3.1:
 * type and subtype are case-insensitive); "" when there is none.
 */
export function mediaTypeOf(value: string | null | undefined): string {
  if (value === undefined || value === null) return "";
  const semi = value.indexOf(";");
  return trimOws(semi < 0 ? value : value.slice(0, semi)).toLowerCase();
}

/** Is `value` (a Content-Type) the media type `expected` (lowercase), whatever its parameters? */
export function isMediaType(value: string | null | undefined, expected: string): boolean {
  return mediaTypeOf(value) === expected;
}

/** RFC 9111 §1.2.2: a delta-seconds value beyond what a cache represents counts as 2^31. */
export const MAX_DELTA_SECONDS = 2 ** 31;

/**
 * How long a response may be reused according to its Cache-Control field, in seconds, or undefined
 * when the field says nothing about it (the caller then applies its own default). The rules, from
 * RFC 9111:
 * - directive names are case-insensitive; arguments are a token or a quoted-string (§5.2), and a
 *   comma inside a quoted-string does not end the directive;
 * - `no-store` or `no-cache` (with or without field names) make the answer 0 wherever they appear:
 *   with conflicting directives the most restrictive one wins (§4.2.1);
 * - of several `max-age` directives the first counts (§4.2.1);
 * - a `max-age` whose argument is not digits only ("-1", "1.5", none) is invalid freshness
 *   information and makes the response stale: 0 (§4.2.1);
 * - larger values than 2^31 count as 2^31 (§1.2.2).
 * `s-maxage` and the request directives are not read: callers use this for responses they cache
 * for themselves.
 */
export function maxAgeSec(value: string | null | undefined): number | undefined {
  if (value === undefined || value === null) return undefined;
  let maxAge: number | undefined;
  let noCache = false;
  for (const [name, arg] of cacheDirectives(value)) {
    if (name === "no-store" || name === "no-cache") noCache = true;
    else if (name === "max-age" && maxAge === undefined) maxAge = arg !== undefined && /^\d+$/.test(arg) ? Math.min(Number(arg), MAX_DELTA_SECONDS) : 0;
  }
  return noCache ? 0 : maxAge;
}

/** The directives of a Cache-Control value: lowercased name and unquoted argument (if any). */
function cacheDirectives(value: string): [string, string | undefined][] {
  const out: [string, string | undefined][] = [];
  let i = 0;
  const n = value.length;
  while (i < n) {
    let end = i;
    while (end < n && value[end] !== "," && value[end] !== "=") end++;
    const name = trimOws(value.slice(i, end)).toLowerCase();
    let arg: string | undefined;
    i = end;
    if (value[i] === "=") {
      i++;
      while (i < n && (value[i] === " " || value[i] === "\t")) i++;
      if (value[i] === '"') {
        // quoted-string (RFC 9110 §5.6.4): backslash escapes the next character.
        arg = "";
        i++;
        while (i < n && value[i] !== '"') {
          if (value[i] === "\\" && i + 1 < n) i++;
          arg += value[i];
          i++;
        }
        i++;
        while (i < n && value[i] !== ",") i++;
      } else {
        let stop = i;
        while (stop < n && value[stop] !== ",") stop++;
        arg = trimOws(value.slice(i, stop));
        i = stop;
      }
    }
    if (name !== "") out.push([name, arg]);
    i++; // the comma
  }
  return out;
}
