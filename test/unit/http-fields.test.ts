// The one Content-Type and Cache-Control reader every component uses (core/http-fields.ts).

import { describe, expect, it } from "vitest";
import { MAX_DELTA_SECONDS, isMediaType, maxAgeSec, mediaTypeOf } from "../../core/http-fields.js";

describe("media type of a Content-Type", () => {
  it("matches case-insensitively and ignores parameters and optional whitespace", () => {
    expect(isMediaType("message/ohttp-req", "message/ohttp-req")).toBe(true);
    expect(isMediaType("Message/OHTTP-Req ; x=1", "message/ohttp-req")).toBe(true);
    expect(isMediaType("\tmessage/ohttp-req\t;charset=x", "message/ohttp-req")).toBe(true);
    expect(isMediaType("message/ohttp-reqx", "message/ohttp-req")).toBe(false);
    expect(isMediaType("message/ohttp-req, text/plain", "message/ohttp-req")).toBe(false);
    expect(isMediaType(undefined, "message/ohttp-req")).toBe(false);
    expect(isMediaType(null, "message/ohttp-req")).toBe(false);
    expect(isMediaType("", "message/ohttp-req")).toBe(false);
  });

  it("gives the bare media type, or an empty string when there is none", () => {
    expect(mediaTypeOf("Application/Problem+JSON; charset=utf-8")).toBe("application/problem+json");
    expect(mediaTypeOf(null)).toBe("");
    expect(mediaTypeOf(undefined)).toBe("");
    expect(mediaTypeOf(" ; x=1")).toBe("");
  });
});

describe("max-age of a Cache-Control", () => {
  it("reads max-age as a token or a quoted string, in any case", () => {
    expect(maxAgeSec("max-age=60")).toBe(60);
    expect(maxAgeSec("public, max-age=3600")).toBe(3600);
    expect(maxAgeSec('public, Max-Age="30"')).toBe(30);
    expect(maxAgeSec("public , MAX-AGE = 5 , immutable")).toBe(5);
  });

  it("says nothing when there is no max-age, no-cache or no-store", () => {
    expect(maxAgeSec(undefined)).toBeUndefined();
    expect(maxAgeSec(null)).toBeUndefined();
    expect(maxAgeSec("")).toBeUndefined();
    expect(maxAgeSec("private")).toBeUndefined();
    // s-maxage is for shared caches' own use, and never read as max-age.
    expect(maxAgeSec("s-maxage=5")).toBeUndefined();
    expect(maxAgeSec("max-agex=5")).toBeUndefined();
  });

  it("makes no-store and no-cache win wherever they appear (the most restrictive directive)", () => {
    expect(maxAgeSec("no-store")).toBe(0);
    expect(maxAgeSec("no-cache, max-age=60")).toBe(0);
    expect(maxAgeSec("max-age=60, no-cache")).toBe(0);
    expect(maxAgeSec('max-age=60, no-cache="set-cookie"')).toBe(0);
    expect(maxAgeSec("max-age=60, No-Store")).toBe(0);
  });

  it("uses the first of several max-age directives", () => {
    expect(maxAgeSec("max-age=60, max-age=5")).toBe(60);
    expect(maxAgeSec("max-age=5, max-age=60")).toBe(5);
  });

  it("treats an invalid max-age as stale (0)", () => {
    for (const v of ["max-age=-1", "max-age=1.5", "max-age=", "max-age", 'max-age="1 0"', "max-age=0x10", "max-age=1e3"]) {
      expect(maxAgeSec(v), v).toBe(0);
    }
  });

  it("caps values beyond 2^31 at 2^31", () => {
    expect(maxAgeSec("max-age=2147483648")).toBe(MAX_DELTA_SECONDS);
    expect(maxAgeSec("max-age=99999999999999999999999")).toBe(MAX_DELTA_SECONDS);
    expect(maxAgeSec("max-age=2147483647")).toBe(2147483647);
  });

  it("does not end a directive at a comma inside a quoted string", () => {
    expect(maxAgeSec('private="a, max-age=5", max-age=60')).toBe(60);
    expect(maxAgeSec('community="x\\"y, no-store", max-age=7')).toBe(7);
  });
});
