// The client's chunked OHTTP exchange (draft-ietf-ohai-chunked-ohttp-08): a request body given as
// a ReadableStream is sealed chunk by chunk as the caller produces it, and the Response's body
// streams as the gateway's chunks arrive. Nothing is held whole on either side.
//
//   ReadableStream -> Binary HTTP (indeterminate length) -> sealed chunks -> POST <relay>
//     message/ohttp-chunked-req, Incremental: ?1 -> 200 message/ohttp-chunked-res -> opened chunks
//     -> Binary HTTP head (the Response) and content (its body)
//
// The body is consumed as it is sent, so a streamed request is never resent; a stream that ends
// without the gateway's final chunk errors the Response body (draft §7.1: never complete).

import { BhttpResponseStreamDecoder, BhttpStreamEncoder, type BhttpResponseHead, type Field } from "../core/bhttp/index.js";
import { ProtocolError, wrapError } from "../core/errors.js";
import { isMediaType } from "../core/http-fields.js";
import { MEDIA_TYPES, encapsulateChunkedRequest, type ChunkedResponseDecapsulator, type KeyConfig } from "../core/ohttp/index.js";
import type { OutgoingRequest } from "./messages.js";
import type { FetchLike } from "./options.js";

export interface StreamedRequest extends Omit<OutgoingRequest, "body"> {
  body: ReadableStream<Uint8Array> | null;
}

export interface ChunkedExchangeOptions {
  relay: URL;
  config: KeyConfig;
  fetch: FetchLike;
  /** Fields added to the inner request (the token, Date). */
  extra: readonly Field[];
  padToBytes: number;
  signal: AbortSignal | undefined;
}

/** What came back: the opened head and a body stream, or the relay's unsealed answer. */
export type ChunkedOutcome = { ok: true; head: BhttpResponseHead; body: ReadableStream<Uint8Array> } | { ok: false; res: Response };

/** Sends one streamed request; resolves as soon as the inner response's head has opened. */
export async function chunkedExchange(req: StreamedRequest, o: ChunkedExchangeOptions): Promise<ChunkedOutcome> {
  const sealed = await encapsulateChunkedRequest(o.config);
  const encoder = new BhttpStreamEncoder();
  const head = encoder.requestHead({
    method: req.method,
    scheme: req.url.protocol.slice(0, -1),
    authority: req.url.host,
    path: req.url.pathname + req.url.search,
    headers: [...req.headers, ...o.extra],
  });
  const source = req.body?.getReader();
  let started = false;
  // Pull-driven: a chunk is read from the caller only when fetch wants more (backpressure).
  const outgoing = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        if (!started) {
          started = true;
          controller.enqueue(sealed.header);
          controller.enqueue(await sealed.writer.seal(head));
          return;
        }
        const next = source === undefined ? { done: true as const } : await source.read();
        if (next.done === true) {
          controller.enqueue(await sealed.writer.sealFinal(encoder.end([], o.padToBytes)));
          controller.close();
          return;
        }
        const piece = await sealed.writer.seal(encoder.content(next.value));
        if (piece.length > 0) controller.enqueue(piece);
      } catch (e) {
        controller.error(e);
      }
    },
    async cancel(reason) {
      await source?.cancel(reason);
    },
  });
  const res = await o.fetch(o.relay.href, {
    method: "POST",
    headers: { "content-type": MEDIA_TYPES.chunkedRequest, accept: MEDIA_TYPES.chunkedResponse, incremental: "?1" },
    body: outgoing,
    // Node's fetch needs this for a stream body; browsers that stream uploads ignore or need it too.
    duplex: "half",
    redirect: "error",
    credentials: "omit",
    ...(o.signal === undefined ? {} : { signal: o.signal }),
  } as RequestInit);
  if (res.status !== 200 || !isMediaType(res.headers.get("content-type"), MEDIA_TYPES.chunkedResponse) || res.body === null) {
    return { ok: false, res };
  }
  return openResponse(res.body, sealed.response);
}

/** Opens the gateway's chunks until the inner head is in; the rest streams into the body. */
async function openResponse(body: ReadableStream<Uint8Array>, ohttp: ChunkedResponseDecapsulator): Promise<ChunkedOutcome> {
  const reader = body.getReader();
  const bhttp = new BhttpResponseStreamDecoder({ maxMessageBytes: 1024 * 1024 });
  let head: BhttpResponseHead | undefined;
  const pending: Uint8Array[] = [];
  let ended = false;
  const bad = (e: unknown) => new ProtocolError("CLIENT_ERR_BAD_RESPONSE", "the gateway's chunked answer could not be opened or decoded", { cause: e });

  /** Reads one piece from the relay and opens what it completes. */
  const step = async (): Promise<void> => {
    let r: ReadableStreamReadResult<Uint8Array>;
    try {
      r = await reader.read();
    } catch (e) {
      throw wrapError(e, "CLIENT_ERR_BAD_RESPONSE", "the relay's answer broke off");
    }
    try {
      const events = [];
      if (r.done) {
        events.push(bhttp.push(await ohttp.end()), bhttp.end());
        ended = true;
      } else {
        for (const pt of await ohttp.push(r.value)) events.push(bhttp.push(pt));
      }
      for (const e of events) {
        if (e.head !== undefined) head = e.head;
        pending.push(...e.body);
      }
    } catch (e) {
      throw bad(e);
    }
  };

  try {
    while (head === undefined) {
      if (ended) throw bad(new Error("no response head"));
      await step();
    }
  } catch (e) {
    await reader.cancel().catch(() => {});
    throw e;
  }
  const content = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        while (pending.length === 0 && !ended) await step();
        if (pending.length > 0) controller.enqueue(pending.shift());
        else controller.close();
      } catch (e) {
        controller.error(e);
      }
    },
    async cancel(reason) {
      await reader.cancel(reason);
    },
  });
  return { ok: true, head, body: content };
}
