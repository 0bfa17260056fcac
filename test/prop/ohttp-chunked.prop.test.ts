// Properties of chunked OHTTP (draft-ietf-ohai-chunked-ohttp-08): round trips however the bytes are
// split, every truncation (a message cut before its final chunk is never complete), random bytes
// (push/end resolve or reject with a ProtocolError, nothing else), reordered and re-framed chunks,
// empty non-final chunks, and the chunk size limits.

import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { concatBytes } from "../../core/bytes.js";
import { ProtocolError } from "../../core/errors.js";
import {
  CHUNK_BYTES,
  ChunkedRequestDecapsulator,
  KEM,
  encapsulateChunkedRequest,
  generateGatewayKey,
  type GatewayKey,
} from "../../core/ohttp/index.js";
import { setupSender } from "../../core/ohttp/encapsulation.js";
import { fuzzParams, numRuns, resplit } from "../helpers/fuzz.js";
import { rejectsWith } from "../helpers/ohttp.js";

let key: GatewayKey;
let keys: Map<number, GatewayKey>;
beforeAll(async () => {
  ({ key } = await generateGatewayKey(7, KEM.X25519));
  keys = new Map([[7, key]]);
});

const heavy = (seed: number) => fuzzParams(seed, Math.max(10, Math.ceil(numRuns / 10)));

/** Plaintext pieces the sender hands over (some empty: the writer must skip them). */
const pieces = fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 6 });
/** Cut points to re-split the wire bytes at. */
const cuts = fc.array(fc.nat(4000), { maxLength: 8 });


/** A whole chunked request: the wire bytes, the offset where each chunk starts, the plaintext. */
async function sealRequest(parts: Uint8Array[], final: Uint8Array, chunkBytes = 64) {
  const req = await encapsulateChunkedRequest(key.config, { chunkBytes });
  const wire: Uint8Array[] = [req.header];
  for (const p of parts) wire.push(await req.writer.seal(p));
  wire.push(await req.writer.sealFinal(final));
  return { req, bytes: concatBytes(...wire), plaintext: concatBytes(...parts, final) };
}

/** Feeds `chunks` then ends; the plaintext, or the ProtocolError it failed with. */
async function openRequest(chunks: Uint8Array[], d = new ChunkedRequestDecapsulator(keys)): Promise<Uint8Array | ProtocolError> {
  try {
    const out: Uint8Array[] = [];
    for (const c of chunks) out.push(...(await d.push(c)));
    out.push(await d.end());
    return concatBytes(...out);
  } catch (e) {
    if (e instanceof ProtocolError) return e;
    throw e;
  }
}

/** The offsets where each framed chunk starts, and the end (read back from the framing). */
function boundaries(bytes: Uint8Array, headerBytes: number): number[] {
  const out = [0, 7, headerBytes];
  let o = headerBytes;
  while (o < bytes.length) {
    const first = bytes[o]!;
    const size = 1 << (first >> 6);
    let len = first & 0x3f;
    for (let i = 1; i < size; i++) len = len * 256 + bytes[o + i]!;
    if (len === 0) {
      out.push(o + size);
      break;
    }
    o += size + len;
    out.push(o);
  }
  return out;
}

describe("chunked request properties", () => {
  it("round-trips whatever the chunking and however the wire bytes are split", async () => {
    await fc.assert(
      fc.asyncProperty(pieces, fc.uint8Array({ maxLength: 100 }), cuts, async (parts, final, at) => {
        const { bytes, plaintext } = await sealRequest(parts, final);
        const got = await openRequest(resplit(bytes, at));
        expect(got).toEqual(plaintext);
      }),
      fuzzParams(2026_08_01),
    );
  });

  it("never completes a message cut short, at a chunk boundary or anywhere else", async () => {
    await fc.assert(
      fc.asyncProperty(pieces, fc.uint8Array({ maxLength: 40 }), async (parts, final) => {
        const { bytes, req } = await sealRequest(parts, final, 16);
        const cutsAt = new Set([...boundaries(bytes, req.header.length).filter((b) => b < bytes.length), ...Array.from({ length: bytes.length }, (_, i) => i)]);
        for (const cut of cutsAt) {
          const got = await openRequest([bytes.subarray(0, cut)]);
          expect(got, `cut at ${cut} of ${bytes.length}`).toBeInstanceOf(ProtocolError);
          expect(["OHTTP_ERR_TRUNCATED", "OHTTP_ERR_DECRYPT"]).toContain((got as ProtocolError).code);
        }
      }),
      heavy(2026_08_02),
    );
  });

  it("a cut at every chunk boundary before the final chunk is reported as truncated", async () => {
    const { bytes, req } = await sealRequest([new Uint8Array(100).fill(1)], new Uint8Array(0), 10);
    const b = boundaries(bytes, req.header.length);
    // Every boundary but the last two (the final chunk's indicator and the end) ends between chunks.
    for (const cut of b.slice(0, -1)) {
      const got = await openRequest([bytes.subarray(0, cut)]);
      expect((got as ProtocolError).code, `cut at ${cut}`).toBe("OHTTP_ERR_TRUNCATED");
    }
    expect(await openRequest([bytes])).toEqual(new Uint8Array(100).fill(1));
  });

  it("random bytes resolve or reject with a ProtocolError, whole or split", async () => {
    const header = (await encapsulateChunkedRequest(key.config)).header;
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.uint8Array({ maxLength: 400 }), cuts, async (withHeader, tail, at) => {
        const bytes = withHeader ? concatBytes(header, tail) : tail;
        const got = await openRequest(resplit(bytes, at));
        // Random bytes after a real header cannot authenticate.
        if (withHeader) expect(got).toBeInstanceOf(ProtocolError);
      }),
      fuzzParams(2026_08_03),
    );
  });

  it("refuses chunks out of order, a non-final chunk re-framed as final, and a final chunk re-framed as non-final", async () => {
    const { bytes, req } = await sealRequest([new Uint8Array(30).fill(2)], new Uint8Array(5).fill(3), 10);
    const b = boundaries(bytes, req.header.length);
    const chunk = (i: number) => bytes.subarray(b[2 + i], b[3 + i]);
    const hdr = bytes.subarray(0, b[2]);
    const swapped = concatBytes(hdr, chunk(1), chunk(0), ...[2, 3].map(chunk), bytes.subarray(b.at(-1)! - 1));
    await rejectsWith(openRequest([swapped]).then(unwrap), "OHTTP_ERR_DECRYPT");
    // The last non-final chunk's body after a 0 prefix: right position, wrong AAD.
    const last = chunk(2);
    const asFinal = concatBytes(hdr, chunk(0), chunk(1), new Uint8Array([0]), last.subarray(1));
    await rejectsWith(openRequest([asFinal]).then(unwrap), "OHTTP_ERR_DECRYPT");
    // The final chunk given a length prefix, then an empty final chunk: AAD "final" where "" is expected.
    const finalBody = bytes.subarray(b.at(-1));
    const asNonFinal = concatBytes(hdr, ...[0, 1, 2].map(chunk), new Uint8Array([finalBody.length]), finalBody, new Uint8Array([0]));
    await rejectsWith(openRequest([asNonFinal]).then(unwrap), "OHTTP_ERR_DECRYPT");
  });

  it("treats an empty non-final chunk as a decryption error", async () => {
    const s = await setupSender(key.config, {}, new TextEncoder().encode("message/bhttp chunked request"));
    const empty = new Uint8Array(await s.ctx.seal(new Uint8Array(0), new Uint8Array(0)));
    expect(empty.length).toBe(16);
    const final = new Uint8Array(await s.ctx.seal(new Uint8Array(0), new TextEncoder().encode("final")));
    const bytes = concatBytes(s.hdr, s.enc, new Uint8Array([empty.length]), empty, new Uint8Array([0]), final);
    await rejectsWith(openRequest([bytes]).then(unwrap), "OHTTP_ERR_DECRYPT");
  });

  it("accepts chunks of 16384 bytes and larger up to maxChunkBytes, refuses larger ones before buffering them", async () => {
    const big = new Uint8Array(4 * CHUNK_BYTES).fill(9);
    for (const chunkBytes of [CHUNK_BYTES, 4 * CHUNK_BYTES]) {
      const { bytes, plaintext } = await sealRequest([big], big, chunkBytes);
      expect(await openRequest([bytes])).toEqual(plaintext);
    }
    const { bytes } = await sealRequest([big], new Uint8Array(0), 4 * CHUNK_BYTES);
    // A receiver that only takes what §3 requires.
    const strict = () => new ChunkedRequestDecapsulator(keys, { maxChunkBytes: CHUNK_BYTES });
    const hdrLen = 7 + 32;
    // The length prefix alone is enough to refuse.
    await rejectsWith(openRequest([bytes.subarray(0, hdrLen + 4)], strict()).then(unwrap), "OHTTP_ERR_CHUNK_TOO_LARGE");
    const { bytes: bigFinal } = await sealRequest([], big, 4 * CHUNK_BYTES);
    await rejectsWith(openRequest([bigFinal], strict()).then(unwrap), "OHTTP_ERR_CHUNK_TOO_LARGE");
    expect(() => new ChunkedRequestDecapsulator(keys, { maxChunkBytes: CHUNK_BYTES - 1 })).toThrow(RangeError);
  });

  it("answers key problems as soon as the 7-byte header is in", async () => {
    const { bytes } = await sealRequest([], new Uint8Array(0));
    const wrongKey = bytes.slice(0, 7);
    wrongKey[0] = 8;
    await rejectsWith(new ChunkedRequestDecapsulator(keys).push(wrongKey), "OHTTP_ERR_KEY_UNKNOWN");
    const wrongSuite = bytes.slice(0, 7);
    wrongSuite[6] = 2;
    await rejectsWith(new ChunkedRequestDecapsulator(keys).push(wrongSuite), "OHTTP_ERR_SUITE_UNSUPPORTED");
  });
});

describe("chunked response properties", () => {
  async function exchange(parts: Uint8Array[], final: Uint8Array) {
    const { bytes, req } = await sealRequest([], new Uint8Array(0));
    const d = new ChunkedRequestDecapsulator(keys);
    await d.push(bytes);
    await d.end();
    const { nonce, writer } = await d.respond();
    const wire: Uint8Array[] = [nonce];
    for (const p of parts) wire.push(await writer.seal(p));
    wire.push(await writer.sealFinal(final));
    await expect(d.respond()).rejects.toThrow(ProtocolError);
    return { client: req.response, bytes: concatBytes(...wire), plaintext: concatBytes(...parts, final) };
  }

  async function openResponse(client: Awaited<ReturnType<typeof exchange>>["client"], chunks: Uint8Array[]): Promise<Uint8Array | ProtocolError> {
    try {
      const out: Uint8Array[] = [];
      for (const c of chunks) out.push(...(await client.push(c)));
      out.push(await client.end());
      return concatBytes(...out);
    } catch (e) {
      if (e instanceof ProtocolError) return e;
      throw e;
    }
  }

  it("round-trips however the response bytes are split", async () => {
    await fc.assert(
      fc.asyncProperty(pieces, fc.uint8Array({ maxLength: 100 }), cuts, async (parts, final, at) => {
        const { client, bytes, plaintext } = await exchange(parts, final);
        expect(await openResponse(client, resplit(bytes, at))).toEqual(plaintext);
      }),
      fuzzParams(2026_08_04),
    );
  });

  it("never completes a response cut short", async () => {
    await fc.assert(
      fc.asyncProperty(pieces, async (parts) => {
        const { bytes } = await exchange(parts, new Uint8Array(0));
        for (let cut = 0; cut < bytes.length; cut++) {
          const { client, bytes: again } = await exchange(parts, new Uint8Array(0));
          const got = await openResponse(client, [again.subarray(0, cut)]);
          expect(got, `cut at ${cut}`).toBeInstanceOf(ProtocolError);
        }
      }),
      heavy(2026_08_05),
    );
  });

  it("random bytes after the nonce reject with a ProtocolError", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), cuts, async (tail, at) => {
        const { client, bytes } = await exchange([], new Uint8Array(0));
        const got = await openResponse(client, resplit(concatBytes(bytes.subarray(0, 16), tail), at));
        expect(got).toBeInstanceOf(ProtocolError);
      }),
      fuzzParams(2026_08_06),
    );
  });
});

function unwrap(v: Uint8Array | ProtocolError): Uint8Array {
  if (v instanceof ProtocolError) throw v;
  return v;
}
