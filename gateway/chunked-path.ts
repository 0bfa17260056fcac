// The gateway's path for one `message/ohttp-chunked-req` (draft-ietf-ohai-chunked-ohttp-08): the
// request is decapsulated chunk by chunk as it arrives, and the answer goes back as a
// `message/ohttp-chunked-res`, sealed chunk by chunk.
//
// - Errors before the inner request's head could be read (key problems, bad or truncated
//   encapsulation, too large, too slow) are answered plain, as for `message/ohttp-req` (RFC 9458
//   §5.2); everything after goes back sealed.
// - A targets-only target gets the inner body streamed as it arrives (chunked transfer coding): a
//   request cut before its final chunk (draft §7.1) makes the upstream body fail, so the target
//   never sees it complete. The target's answer streams back as it comes, within the upstream
//   limits (maxResponseBytes, totalTimeoutMs, bodyTimeoutMs): past one of them the outer answer is
//   cut before its final chunk. The answer's trailers are passed on in the inner answer's trailer
//   section; the inner request's trailers are not forwarded (as for `message/ohttp-req`).
// - Everything else (the `dap` policy, DAP routes, GET/HEAD, a forwarder that cannot stream) is
//   read whole first, within limits.maxRequestBytes, and then takes the same path as a
//   `message/ohttp-req` (request-path.ts): the policy and the token gate see every byte first.
// - Tokens on a streamed request are bound to its encapsulation (GateInput.streamId) and settled
//   as soon as the target answers or the forwarding fails: released only if nothing reached it,
//   committed otherwise, also for a stream that broke off halfway.

import {
  BhttpRequestStreamDecoder,
  BhttpStreamEncoder,
  encodeResponse,
  padToMultiple,
  type BhttpRequest,
  type BhttpRequestHead,
  type BhttpResponse,
} from "../core/bhttp/index.js";
import { concatBytes } from "../core/bytes.js";
import { ProtocolError } from "../core/errors.js";
import { ChunkedRequestDecapsulator, type ChunkWriter, type Keyring } from "../core/ohttp/index.js";
import type { ChunkedConfig } from "./config.js";
import { failed, handleInnerRequest, settle, type RequestPathDeps } from "./request-path.js";
import { checkPolicy, dapTaskIdOf, resolveTarget, type ResolvedTarget } from "./policy.js";
import { prepareUpstreamRequest } from "./target.js";

export interface ChunkedPathDeps {
  keys: Keyring;
  path: RequestPathDeps;
  chunked: ChunkedConfig;
  /** The cap on what is read whole (limits.maxRequestBytes). */
  maxWholeBytes: number;
  randomBytes?: (n: number) => Uint8Array;
  onDecapsulated?: (keyId: number) => void;
}

/** A plain problem (nothing sent yet), or a 200 whose sealed body streams. */
export type ChunkedAnswer =
  | { ok: false; error: unknown }
  | { ok: true; body: AsyncIterable<Uint8Array>; outcome: Promise<string> };

const STREAM_ID_LABEL = new TextEncoder().encode("veil streamed body v1:");

/** Reads the outer body with a byte cap and a deadline between pieces. */
class OuterBody {
  readonly #it: AsyncIterator<Uint8Array>;
  readonly #maxBytes: number;
  readonly #timeoutMs: number;
  #bytes = 0;

  constructor(body: AsyncIterable<Uint8Array>, maxBytes: number, timeoutMs: number) {
    this.#it = body[Symbol.asyncIterator]();
    this.#maxBytes = maxBytes;
    this.#timeoutMs = timeoutMs;
  }

  /** The next piece, or undefined at the end. */
  async next(): Promise<Uint8Array | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ProtocolError("HTTP_ERR_TIMEOUT", "no request bytes within chunked.chunkTimeoutMs")), this.#timeoutMs);
    });
    try {
      const r = await Promise.race([this.#it.next(), timeout]);
      if (r.done === true) return undefined;
      this.#bytes += r.value.length;
      if (this.#bytes > this.#maxBytes) throw new ProtocolError("HTTP_ERR_TOO_LARGE", `chunked request exceeds ${this.#maxBytes} bytes`);
      return r.value;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops reading (the request was refused or is done with). */
  async stop(): Promise<void> {
    await this.#it.return?.();
  }
}

/**
 * The inner message as it is opened: OHTTP chunks -> Binary HTTP. `errorsAreSealed` tells whether
 * a failure so far may still be answered plain (before the head) or must be sealed.
 */
class InnerReader {
  readonly outer: OuterBody;
  readonly ohttp: ChunkedRequestDecapsulator;
  readonly bhttp: BhttpRequestStreamDecoder;
  head: BhttpRequestHead | undefined;
  /** Content pieces opened but not yet handed on. */
  pending: Uint8Array[] = [];
  trailersDone = false;

  constructor(outer: OuterBody, deps: ChunkedPathDeps) {
    this.outer = outer;
    this.ohttp = new ChunkedRequestDecapsulator(deps.keys, {
      maxChunkBytes: deps.chunked.maxChunkBytes,
      ...(deps.randomBytes === undefined ? {} : { randomBytes: deps.randomBytes }),
    });
    this.bhttp = new BhttpRequestStreamDecoder(deps.path.bhttpLimits);
  }

  /** Reads on until the head is in, more content is pending, or the message is complete. */
  async step(): Promise<void> {
    const piece = await this.outer.next();
    if (piece === undefined) {
      const last = await this.ohttp.end();
      this.#take(this.bhttp.push(last));
      this.#take(this.bhttp.end());
      this.trailersDone = true;
      return;
    }
    for (const pt of await this.ohttp.push(piece)) this.#take(this.bhttp.push(pt));
  }

  #take(e: { head?: BhttpRequestHead; body: Uint8Array[] }): void {
    if (e.head !== undefined) this.head = e.head;
    this.pending.push(...e.body);
  }

  /** The content that follows, piece by piece, until the final chunk has opened (draft §7.1). */
  async *content(): AsyncGenerator<Uint8Array> {
    for (;;) {
      while (this.pending.length > 0) yield this.pending.shift()!;
      if (this.trailersDone) return;
      await this.step();
    }
  }

  /** The whole remaining content, at most `max` bytes with what came before. */
  async readWhole(max: number): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    let n = 0;
    for await (const p of this.content()) {
      n += p.length;
      if (n > max) throw new ProtocolError("BHTTP_ERR_TOO_LARGE", `inner request content exceeds ${max} bytes`);
      parts.push(p);
    }
    return concatBytes(...parts);
  }
}

/** Serves one chunked request whose outer body is `body`. */
export async function serveChunkedRequest(body: AsyncIterable<Uint8Array>, deps: ChunkedPathDeps): Promise<ChunkedAnswer> {
  const outer = new OuterBody(body, deps.chunked.maxRequestBytes, deps.chunked.chunkTimeoutMs);
  const inner = new InnerReader(outer, deps);
  // Up to the head of the inner request: failures are answered plain.
  try {
    while (inner.head === undefined) {
      if (inner.trailersDone) throw new ProtocolError("BHTTP_ERR_TRUNCATED", "inner request ended before its head");
      await inner.step();
    }
  } catch (e) {
    await outer.stop().catch(() => {});
    // Binary HTTP errors come after decapsulation: sealed, once the context exists.
    if (!(e instanceof ProtocolError && e.code.startsWith("BHTTP_ERR_") && inner.ohttp.started)) return { ok: false, error: e };
    return sealedAnswer(inner, deps, async () => failed(e, undefined, deps.path.log));
  }
  const enc = inner.ohttp.enc!;
  deps.onDecapsulated?.(inner.ohttp.keyId!);
  const head = inner.head;
  const stream = streamTargetOf(head, deps);
  if (stream === undefined) {
    // Read whole, then exactly the `message/ohttp-req` path.
    return sealedAnswer(inner, deps, async () => {
      let request: BhttpRequest;
      try {
        const content = await inner.readWhole(deps.maxWholeBytes);
        request = { ...head, body: content, trailers: [] };
      } catch (e) {
        return failed(e, dapTaskIdOf(head.path), deps.path.log);
      }
      return handleInnerRequest(request, enc, deps.path);
    });
  }
  return streamedAnswer(inner, head, stream, enc, deps);
}

/** The target when this request streams to it: targets-only, not a DAP route, a method with content. */
function streamTargetOf(head: BhttpRequestHead, deps: ChunkedPathDeps): ResolvedTarget | undefined {
  const p = deps.path;
  if (p.policy !== "targets-only" || p.forwarder.forwardStream === undefined) return undefined;
  if (head.method === "GET" || head.method === "HEAD") return undefined;
  try {
    const target = resolveTarget(p.table, head);
    // Under targets-only the policy only classifies: DAP routes (uploads above all) are read whole.
    return checkPolicy(p.policy, head.method, target) === "other" ? target : undefined;
  } catch {
    return undefined; // refused on the whole-message path, with its sealed error
  }
}

/** A 200 whose body is the nonce, then the response sealed in chunks as `respond` produces it. */
async function sealedAnswer(
  inner: InnerReader,
  deps: ChunkedPathDeps,
  answer: () => Promise<{ response: BhttpResponse; outcome: string }>,
): Promise<ChunkedAnswer> {
  const { nonce, writer } = await inner.ohttp.respond();
  let resolveOutcome!: (o: string) => void;
  const outcome = new Promise<string>((r) => (resolveOutcome = r));
  async function* body(): AsyncGenerator<Uint8Array> {
    yield nonce;
    const result = await answer();
    await inner.outer.stop().catch(() => {});
    resolveOutcome(result.outcome);
    yield* sealWhole(writer, padToMultiple(encodeResponse(result.response), deps.path.padToBytes));
  }
  return { ok: true, body: body(), outcome };
}

async function* sealWhole(writer: ChunkWriter, message: Uint8Array): AsyncGenerator<Uint8Array> {
  yield await writer.seal(message);
  yield await writer.sealFinal();
}

/** The targets-only streaming exchange. */
async function streamedAnswer(
  inner: InnerReader,
  head: BhttpRequestHead,
  target: ResolvedTarget,
  enc: Uint8Array,
  deps: ChunkedPathDeps,
): Promise<ChunkedAnswer> {
  const p = deps.path;
  const fail = (e: unknown) => sealedAnswer(inner, deps, async () => failed(e, undefined, p.log));
  let upstream;
  let ticket;
  try {
    if (head.headers.some(([n]) => n === "expect")) throw new ProtocolError("GATEWAY_ERR_EXPECT");
    await p.replay?.check(head.headers, enc);
    const route = checkPolicy(p.policy, head.method, target);
    const request: BhttpRequest = { ...head, body: new Uint8Array(0), trailers: [] };
    upstream = prepareUpstreamRequest(target, request);
    ticket = await p.gate.admit({ request, target, route, taskId: undefined, streamId: concatBytes(STREAM_ID_LABEL, enc) });
  } catch (e) {
    return fail(e);
  }
  const outcome = await p.forwarder.forwardStream!(upstream, inner.content());
  await settle(ticket, outcome.reached, p.log);
  if (!outcome.ok) {
    p.onUpstream?.(target.entry.name, outcome.error.code);
    return fail(outcome.error);
  }
  p.onUpstream?.(target.entry.name, `${Math.floor(outcome.status / 100)}xx`);
  const { nonce, writer } = await inner.ohttp.respond();
  const answer = outcome;
  async function* body(): AsyncGenerator<Uint8Array> {
    yield nonce;
    const e = new BhttpStreamEncoder();
    yield await writer.seal(e.responseHead({ status: answer.status, headers: answer.headers }));
    // A failure here (the answer broke off, passed upstream.maxResponseBytes or the total
    // deadline) ends the generator with an error: the outer answer is cut without its final
    // chunk, so the client never takes it for complete (draft §7.1).
    for await (const piece of answer.body) yield await writer.seal(e.content(piece));
    // The target's trailers go into the inner answer's trailer section (hop-by-hop ones dropped).
    yield await writer.sealFinal(e.end(answer.trailers(), p.padToBytes));
  }
  return { ok: true, body: body(), outcome: Promise.resolve("forwarded") };
}
