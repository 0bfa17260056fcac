// The PrivateToken HTTP authentication scheme (RFC 9577 §2.1-2.2) on top of RFC 9110 §11 syntax.
//
//   WWW-Authenticate: PrivateToken challenge="<b64url>", token-key="<b64url>", max-age="10"
//   Authorization:    PrivateToken token="<b64url>"
//
// Values are base64url WITH padding (RFC 9577 §2.1), so they contain "=" and are sent as quoted
// strings. Parsing follows RFC 9110's grammar but is lenient where RFC 9577 §2.2 asks for it or
// deployed peers need it: unquoted values may contain "=" (privacypass-ts's "non-compliant" form),
// unknown parameters are ignored, scheme and parameter names are case-insensitive, padding is
// optional. It never throws: a malformed challenge is skipped, and the scan is linear in the input.

import { fromBase64Url, toBase64Url } from "../bytes.js";

export const AUTH_SCHEME = "PrivateToken";

export interface WwwAuthenticateChallenge {
  /** The TokenChallenge bytes (decode them with decodeTokenChallenge). */
  challenge: Uint8Array;
  /** The issuer's token key (for type 2, the RSASSA-PSS SPKI). */
  tokenKey: Uint8Array;
  /** Seconds the challenge stays acceptable (RFC 9577 §2.1), if the origin said. */
  maxAge?: number;
  /** ARC's presentation limit: the `rate-limit` attribute, a JSON number (arc-protocol §5). */
  rateLimit?: number;
}

/** One parsed challenge or credentials: scheme and lower-cased parameter names. */
interface AuthItem {
  scheme: string;
  params: Map<string, string>;
  /** Set when the item had junk, a token68, duplicates or an unterminated quoted string. */
  bad: boolean;
}

// RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_"
//                          / "`" / "|" / "~" / DIGIT / ALPHA
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TCHAR[c.charCodeAt(0)] = 1;
}

function isTchar(code: number): boolean {
  return code < 128 && TCHAR[code] === 1;
}

function isWs(code: number): boolean {
  return code === 0x20 || code === 0x09;
}

/** Splits a WWW-Authenticate or Authorization value into challenges / credentials. */
function parseAuthItems(h: string): AuthItem[] {
  const items: AuthItem[] = [];
  const n = h.length;
  let i = 0;

  const skipWs = (): void => {
    while (i < n && isWs(h.charCodeAt(i))) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < n && isTchar(h.charCodeAt(i))) i++;
    return h.slice(start, i);
  };
  // Moves to the next top-level comma (or the end); used to recover from junk.
  const skipToComma = (): void => {
    while (i < n && h.charCodeAt(i) !== 0x2c) i++;
  };
  // After "=": a quoted-string, or (leniently) everything up to a comma or whitespace.
  const readValue = (item: AuthItem): string => {
    if (h.charCodeAt(i) === 0x22) {
      i++;
      let out = "";
      let start = i;
      while (i < n) {
        const c = h.charCodeAt(i);
        if (c === 0x22) {
          out += h.slice(start, i);
          i++;
          return out;
        }
        if (c === 0x5c) {
          // quoted-pair: "\" followed by the character itself
          out += h.slice(start, i);
          i++;
          if (i >= n) break;
          out += h[i];
          i++;
          start = i;
          continue;
        }
        i++;
      }
      item.bad = true; // unterminated quoted-string
      return out + h.slice(start, i);
    }
    const start = i;
    while (i < n) {
      const c = h.charCodeAt(i);
      if (c === 0x2c || isWs(c)) break;
      i++;
    }
    return h.slice(start, i);
  };
  const addParam = (item: AuthItem, name: string, value: string): void => {
    const key = name.toLowerCase();
    if (item.params.has(key)) item.bad = true;
    else item.params.set(key, value);
  };

  while (i < n) {
    // Empty list elements and whitespace between challenges are allowed (RFC 9110 §5.6.1).
    while (i < n && (isWs(h.charCodeAt(i)) || h.charCodeAt(i) === 0x2c)) i++;
    if (i >= n) break;
    const scheme = readToken();
    if (scheme === "") {
      // Junk where a scheme should be: skip this list element (always advances).
      i++;
      skipToComma();
      continue;
    }
    const item: AuthItem = { scheme, params: new Map(), bad: false };
    items.push(item);
    skipWs();
    let first = true;
    for (;;) {
      if (i >= n) break;
      if (h.charCodeAt(i) === 0x2c) {
        // Either the next parameter of this challenge or the next challenge.
        while (i < n && (isWs(h.charCodeAt(i)) || h.charCodeAt(i) === 0x2c)) i++;
        const save = i;
        const name = readToken();
        skipWs();
        if (name !== "" && h.charCodeAt(i) === 0x3d) {
          i++;
          skipWs();
          addParam(item, name, readValue(item));
          skipWs();
          continue;
        }
        i = save; // a new challenge starts here (or junk, handled by the outer loop)
        break;
      }
      if (!first) {
        // Something other than a comma after a parameter value.
        item.bad = true;
        skipToComma();
        continue;
      }
      first = false;
      const name = readToken();
      skipWs();
      if (name !== "" && h.charCodeAt(i) === 0x3d) {
        i++;
        skipWs();
        addParam(item, name, readValue(item));
        skipWs();
        continue;
      }
      // A token68 or junk: Veil's scheme never uses token68.
      item.bad = true;
      if (i < n && h.charCodeAt(i) !== 0x2c) i++;
      skipToComma();
    }
  }
  return items;
}

function decodeParam(v: string | undefined): Uint8Array | undefined {
  if (v === undefined || v === "") return undefined;
  return fromBase64Url(v);
}

const MAX_AGE = /^[0-9]{1,10}$/;

/** Every well-formed PrivateToken challenge in a WWW-Authenticate value, in order. */
export function parseWwwAuthenticate(h: string): WwwAuthenticateChallenge[] {
  const out: WwwAuthenticateChallenge[] = [];
  for (const item of parseAuthItems(h)) {
    if (item.bad || item.scheme.toLowerCase() !== "privatetoken") continue;
    const challenge = decodeParam(item.params.get("challenge"));
    const tokenKey = decodeParam(item.params.get("token-key"));
    if (challenge === undefined || tokenKey === undefined) continue;
    const parsed: WwwAuthenticateChallenge = { challenge, tokenKey };
    const maxAge = item.params.get("max-age");
    // An unparsable max-age is ignored (RFC 9577 §2.1 makes the attribute optional).
    if (maxAge !== undefined && MAX_AGE.test(maxAge)) parsed.maxAge = Number(maxAge);
    const rateLimit = item.params.get("rate-limit");
    if (rateLimit !== undefined && MAX_AGE.test(rateLimit)) parsed.rateLimit = Number(rateLimit);
    out.push(parsed);
  }
  return out;
}

function quoted(b: Uint8Array): string {
  // base64url never contains '"' or '\', so no quoted-pair escaping is needed.
  return `"${toBase64Url(b, true)}"`;
}

/** `PrivateToken challenge="...", token-key="...", max-age="..."`, challenges joined by ", ". */
export function formatWwwAuthenticate(
  challenges: readonly { challenge: Uint8Array; tokenKey: Uint8Array; maxAge?: number | undefined; rateLimit?: number | undefined }[],
): string {
  return challenges
    .map((c) => {
      let s = `${AUTH_SCHEME} challenge=${quoted(c.challenge)}, token-key=${quoted(c.tokenKey)}`;
      if (c.maxAge !== undefined) {
        if (!Number.isSafeInteger(c.maxAge) || c.maxAge < 0) throw new RangeError("max-age must be a non-negative integer");
        s += `, max-age="${c.maxAge}"`;
      }
      if (c.rateLimit !== undefined) {
        if (!Number.isSafeInteger(c.rateLimit) || c.rateLimit < 1) throw new RangeError("rate-limit must be a positive integer");
        // A JSON number, so unquoted (arc-protocol §5).
        s += `, rate-limit=${c.rateLimit}`;
      }
      return s;
    })
    .join(", ");
}

/** `PrivateToken token="..."` (RFC 9577 §2.2). */
export function formatAuthorization(token: Uint8Array): string {
  return `${AUTH_SCHEME} token=${quoted(token)}`;
}

/**
 * The token bytes of the first well-formed `PrivateToken` credentials with a `token` parameter,
 * or undefined (missing header, other scheme, malformed value). Unknown parameters are ignored.
 */
export function parseAuthorization(h: string | undefined): Uint8Array | undefined {
  if (h === undefined) return undefined;
  for (const item of parseAuthItems(h)) {
    if (item.bad || item.scheme.toLowerCase() !== "privatetoken") continue;
    const token = decodeParam(item.params.get("token"));
    if (token !== undefined) return token;
  }
  return undefined;
}
