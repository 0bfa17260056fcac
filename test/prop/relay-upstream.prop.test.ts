// Model-based properties of the relay's hand-written upstream client (relay/upstream.ts): its pool
// of keep-alive connections is driven over model sockets (the `connect` option) with fake timers
// (the sweeper interval and the clock), while a model gateway accepts or refuses connections,
// answers with random framing (Content-Length, chunked, close-delimited), keep-alive or close,
// interim 1xx answers, garbage, oversized answers, early closes and socket errors, all cut into
// random chunks, and time passes in random steps. After every step:
//
// - every request gets at most one callback, and an answer is exactly the one the gateway sent
//   for that request (no cross-talk between pooled connections); a complete, valid answer reaches
//   its callback at once (none lost);
// - errors are the right ones: a timeout never fires before its phase's deadline, and a request
//   still pending is never more than one sweeper tick past it; garbage or an oversized answer is
//   RELAY_ERR_UPSTREAM_INVALID; a broken connection is FAILED (request sent) or UNREACHABLE (not);
// - only Host, Content-Type and Content-Length are sent; a connection carries one request at a
//   time (no pipelining, so what a connection queues is bounded by one request, whatever write()
//   says of backpressure), and one with an unfinished, garbled or closing answer is never written
//   to again and is closed;
// - at most maxConnections connections; an idle connection is reused before a new one is opened,
//   and no request waits while a connection could take it;
// - memory is bounded: a connection still open has received at most maxHeaderBytes of an
//   incomplete head and maxResponseBytes of body;
// and at the end, once time passes, every request got exactly one callback, every connection is
// closed, and after close() no timer is left.

import { EventEmitter } from "node:events";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { ProtocolError } from "../../core/errors.js";
import { Upstream, type UpstreamAnswer, type UpstreamSocket } from "../../relay/upstream.js";
import { fuzzParams } from "../helpers/fuzz.js";

const OPTS = { connectMs: 1000, headersMs: 2000, bodyMs: 1500, keepAliveMs: 3000, maxConnections: 3, maxResponseBytes: 4096, maxHeaderBytes: 512 };
/** The sweeper's period for these options (relay/upstream.ts: the smallest timeout / 8, 5..250 ms). */
const TICK_MS = 125;
const KEEP_ALIVE_MARGIN_MS = 1000;
const REQUEST_HEAD = /^POST \/gw HTTP\/1\.1\r\nhost: gw\.test\r\ncontent-type: message\/ohttp-req\r\ncontent-length: (\d+)$/;

type Framing = "length" | "chunked" | "close";
type Garbage = "none" | "status" | "length" | "bighead" | "extra";

interface AnswerSpec {
  status: number;
  size: number;
  framing: Framing;
  connection: "keep-alive" | "close" | "none";
  keepAliveSec: number | undefined;
  interim: boolean;
  garbage: Garbage;
  chunkSize: number;
  cuts: number[];
}

/** An answer being delivered to the relay, and what the model expects of it. */
interface Delivery {
  id: number;
  bytes: Buffer;
  delivered: number;
  /** Where the final head ends (after its blank line), and the interim answer's length. */
  headEnd: number;
  interimLength: number;
  /** Where the answer ends (before any extra bytes). */
  end: number;
  /** Body bytes within the first i wire bytes. */
  bodyUpTo: Int32Array;
  valid: boolean;
  closeDelimited: boolean;
  /** The connection may carry another request afterwards (extra bytes aside: known only when they come). */
  reusable: boolean;
  /** The gateway's Keep-Alive timeout hint, less the relay's margin (ms), if it sent one. */
  keepAliveMs: number | undefined;
  status: number;
  body: Buffer;
}

interface Req {
  id: number;
  forwardedAt: number;
  body: Buffer;
  socket: GatewaySocket | undefined;
  writtenAt: number | undefined;
  /** Time of the last data event that left the answer's head complete (the body timer's start). */
  bodyDataAt: number | undefined;
  results: { at: number; err: ProtocolError | undefined; answer: UpstreamAnswer | undefined }[];
  answered: boolean;
}

/** A connection as the upstream client sees it; the test plays the gateway and the kernel. */
class GatewaySocket extends EventEmitter implements UpstreamSocket {
  state: "connecting" | "open" = "connecting";
  destroyed = false;
  closed = false;
  /** Written bytes not parsed into requests yet. */
  #written = Buffer.alloc(0);
  /** The request being answered (sent, no complete answer yet). */
  current: Req | undefined;
  delivery: Delivery | undefined;
  /** Out of step or closing: nothing may be written to it again, and it is closed. */
  tainted = false;
  /**
   * Got bytes after a complete answer while a new request was already on it: nothing may be
   * written to it again; the request fails (INVALID once the bytes prove not to be an answer
   * head, else its timeout: HTTP/1.1 cannot tell them from an early answer) and it is closed.
   */
  outOfStep = false;
  /** Got bytes that make an answer invalid (garbage, oversized). */
  garbled = false;
  /** The gateway closed or reset it. */
  broken = false;
  /** Idle (answer complete, reusable) until this time. */
  idleUntil: number | undefined;
  /** How long the relay keeps it idle: its own keep-alive, or the gateway's last hint. */
  keepAliveMs = OPTS.keepAliveMs;

  constructor(
    readonly world: World,
    readonly n: number,
  ) {
    super();
  }

  /** Backpressure as streamed requests see it (openStream; not driven here: forward() buffers). */
  readonly writableNeedDrain = false;
  paused = false;

  setNoDelay(): this {
    return this;
  }
  pause(): this {
    this.paused = true;
    return this;
  }
  resume(): this {
    this.paused = false;
    return this;
  }
  isPaused(): boolean {
    return this.paused;
  }
  cork(): void {}
  uncork(): void {}
  write(data: Buffer | string): boolean {
    if (this.destroyed) this.world.violations.push(`write to destroyed connection ${this.n}`);
    if (this.tainted || this.outOfStep) this.world.violations.push(`write to connection ${this.n} after an unfinished, garbled or closing answer`);
    this.#written = Buffer.concat([this.#written, typeof data === "string" ? Buffer.from(data, "latin1") : data]);
    this.#parseRequests();
    // A large request fills the kernel's buffer: backpressure, which the client may ignore since
    // it holds one request per connection at most (checked: no pipelining).
    return data.length < 16 * 1024;
  }
  destroy(): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    this.idleUntil = undefined;
    process.nextTick(() => {
      this.closed = true;
      this.emit("close");
    });
    return this;
  }

  #parseRequests(): void {
    for (;;) {
      const headEnd = this.#written.indexOf("\r\n\r\n");
      if (headEnd < 0) return;
      const m = REQUEST_HEAD.exec(this.#written.toString("latin1", 0, headEnd));
      if (m === null) {
        this.world.violations.push(`request head not as expected: ${JSON.stringify(this.#written.toString("latin1", 0, headEnd))}`);
        this.#written = Buffer.alloc(0);
        return;
      }
      const length = Number(m[1]);
      if (this.#written.length < headEnd + 4 + length) return;
      const body = this.#written.subarray(headEnd + 4, headEnd + 4 + length);
      this.#written = this.#written.subarray(headEnd + 4 + length);
      const id = Number(/^req-(\d+)-/.exec(body.toString("latin1"))?.[1]);
      const req = this.world.requests[id];
      if (req === undefined || !req.body.equals(body)) {
        this.world.violations.push(`request body not one that was forwarded`);
        continue;
      }
      if (this.current !== undefined) this.world.violations.push(`connection ${this.n} pipelined request ${id} behind ${this.current.id}`);
      if (req.writtenAt !== undefined) this.world.violations.push(`request ${id} sent twice`);
      if (req.results.length > 0) this.world.violations.push(`request ${id} sent after its callback`);
      req.writtenAt = Date.now();
      req.socket = this;
      this.current = req;
      this.delivery = undefined;
      this.idleUntil = undefined;
    }
  }
}

interface World {
  upstream: Upstream;
  requests: Req[];
  sockets: GatewaySocket[];
  violations: string[];
  closedAt: number | undefined;
}

function deadline(r: Req): number {
  if (r.writtenAt === undefined) return r.forwardedAt + OPTS.connectMs;
  if (r.bodyDataAt !== undefined) return r.bodyDataAt + OPTS.bodyMs;
  return r.writtenAt + OPTS.headersMs;
}

function onResult(w: World, r: Req, err: ProtocolError | undefined, answer: UpstreamAnswer | undefined): void {
  const now = Date.now();
  r.results.push({ at: now, err, answer });
  if (r.results.length > 1) w.violations.push(`request ${r.id} called back ${r.results.length} times`);
  if (answer !== undefined) {
    // Checked against the delivery once the data event returns (expectAnswers).
    return;
  }
  if (err === undefined) {
    w.violations.push(`request ${r.id}: neither answer nor error`);
    return;
  }
  if (r.socket !== undefined) r.socket.tainted = true;
  const s = r.socket;
  switch (err.code) {
    case "RELAY_ERR_UPSTREAM_TIMEOUT":
      if (now < deadline(r)) w.violations.push(`request ${r.id} timed out at ${now}, before its deadline ${deadline(r)}`);
      break;
    case "RELAY_ERR_UPSTREAM_INVALID":
      if (s === undefined || !s.garbled) w.violations.push(`request ${r.id}: INVALID without garbage`);
      break;
    case "RELAY_ERR_UPSTREAM_FAILED":
      if (s === undefined || !s.broken) w.violations.push(`request ${r.id}: FAILED on a connection the gateway did not break`);
      break;
    case "RELAY_ERR_UPSTREAM_UNREACHABLE":
      if (r.writtenAt !== undefined) w.violations.push(`request ${r.id}: UNREACHABLE after it was sent`);
      break;
    case "HTTP_ERR_UNAVAILABLE":
      if (w.closedAt === undefined) w.violations.push(`request ${r.id}: UNAVAILABLE before close()`);
      break;
    default:
      w.violations.push(`request ${r.id}: unexpected error ${err.code}`);
  }
}

function pending(w: World): Req[] {
  return w.requests.filter((r) => r.results.length === 0);
}

function live(w: World): GatewaySocket[] {
  return w.sockets.filter((s) => !s.closed);
}

function idle(w: World): GatewaySocket[] {
  const now = Date.now();
  return w.sockets.filter((s) => !s.destroyed && s.idleUntil !== undefined && now < s.idleUntil);
}

async function settle(): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve));
}

function checkInvariants(w: World): void {
  expect(w.violations).toEqual([]);
  const now = Date.now();
  for (const r of pending(w)) {
    expect(now, `request ${r.id} pending past its deadline`).toBeLessThan(deadline(r) + TICK_MS);
  }
  for (const s of w.sockets) {
    if (s.idleUntil !== undefined && !s.destroyed) expect(now, `idle connection ${s.n} kept past its keep-alive`).toBeLessThan(s.idleUntil + TICK_MS);
    if (s.tainted) expect(s.destroyed, `connection ${s.n} out of step but open`).toBe(true);
    // Memory: what an open connection holds of an incomplete answer.
    const d = s.delivery;
    if (d !== undefined && !s.destroyed && s.current !== undefined) {
      if (d.delivered < d.headEnd) expect(d.delivered - d.interimLength).toBeLessThanOrEqual(OPTS.maxHeaderBytes);
      expect(d.bodyUpTo[d.delivered]).toBeLessThanOrEqual(OPTS.maxResponseBytes);
    }
  }
  expect(live(w).length).toBeLessThanOrEqual(OPTS.maxConnections);
  expect(w.upstream.connections).toBe(live(w).length);
  // No request waits while a connection could take it.
  const waiting = pending(w).filter((r) => r.writtenAt === undefined).length;
  const connecting = live(w).filter((s) => s.state === "connecting").length;
  if (waiting > connecting && w.closedAt === undefined) {
    expect(idle(w).length, "a request waits while a connection is idle").toBe(0);
    expect(live(w).length, "a request waits while fewer than maxConnections are open").toBe(OPTS.maxConnections);
  }
}

function answerBody(id: number, size: number): Buffer {
  const body = Buffer.alloc(Math.max(size, 16), 0x2e);
  body.write(`res-${id}-`, "latin1");
  return body;
}

function buildDelivery(id: number, a: AnswerSpec): Delivery {
  const body = answerBody(id, a.size);
  const interim = a.interim ? "HTTP/1.1 100 Continue\r\n\r\n" : "";
  const lines = [a.garbage === "status" ? `HTTP/1.1 2O0 OK` : `HTTP/1.1 ${a.status} X`, "content-type: message/ohttp-res"];
  if (a.framing === "length") lines.push(a.garbage === "length" ? `content-length: ${body.length}x` : `content-length: ${body.length}`);
  if (a.framing === "chunked") lines.push("transfer-encoding: chunked");
  if (a.connection !== "none") lines.push(`connection: ${a.connection}`);
  if (a.keepAliveSec !== undefined) lines.push(`keep-alive: timeout=${a.keepAliveSec}`);
  if (a.garbage === "bighead") lines.push(`x-pad: ${"p".repeat(OPTS.maxHeaderBytes)}`);
  const head = Buffer.from(`${interim}${lines.join("\r\n")}\r\n\r\n`, "latin1");
  const parts: Buffer[] = [head];
  const dataRanges: [number, number][] = [];
  let at = head.length;
  if (a.framing === "chunked") {
    for (let o = 0; o < body.length; o += a.chunkSize) {
      const piece = body.subarray(o, o + a.chunkSize);
      const line = Buffer.from(`${piece.length.toString(16)}\r\n`, "latin1");
      parts.push(line, piece, Buffer.from("\r\n"));
      dataRanges.push([at + line.length, at + line.length + piece.length]);
      at += line.length + piece.length + 2;
    }
    parts.push(Buffer.from("0\r\n\r\n"));
  } else {
    parts.push(body);
    dataRanges.push([at, at + body.length]);
  }
  const answerEnd = Buffer.concat(parts).length;
  if (a.garbage === "extra" && a.framing !== "close") parts.push(Buffer.from("\r\nJUNK", "latin1"));
  const bytes = Buffer.concat(parts);
  const bodyUpTo = new Int32Array(bytes.length + 1);
  for (let i = 1; i <= bytes.length; i++) bodyUpTo[i] = bodyUpTo[i - 1]! + (dataRanges.some(([s, e]) => i - 1 >= s && i - 1 < e) ? 1 : 0);
  const invalidHead = a.garbage === "status" || (a.garbage === "length" && a.framing === "length") || a.garbage === "bighead";
  const closeDelimited = a.framing === "close";
  const keepAliveMs = a.keepAliveSec === undefined ? undefined : Math.max(0, Math.min(OPTS.keepAliveMs, a.keepAliveSec * 1000 - KEEP_ALIVE_MARGIN_MS));
  return {
    id,
    bytes,
    delivered: 0,
    headEnd: head.length,
    interimLength: interim.length,
    end: answerEnd,
    bodyUpTo,
    valid: !invalidHead && body.length <= OPTS.maxResponseBytes,
    closeDelimited,
    reusable: !closeDelimited && a.connection !== "close",
    keepAliveMs,
    status: a.status,
    body,
  };
}

/** Delivers the next `count` chunks (cut at `cuts`) of the connection's answer; checks what the relay made of them. */
function deliver(w: World, s: GatewaySocket, cuts: number[], count: number): void {
  const d = s.delivery!;
  const rest = d.bytes.length - d.delivered;
  const points = [...new Set(cuts.map((c) => d.delivered + 1 + (c % rest)))].sort((a, b) => a - b);
  const ends = [...points.filter((p) => p < d.bytes.length), d.bytes.length].slice(0, Math.max(1, count));
  const req = s.current!;
  for (const endAt of ends) {
    if (s.destroyed) return;
    const chunk = d.bytes.subarray(d.delivered, endAt);
    const before = d.delivered;
    d.delivered = endAt;
    const extra = endAt > d.end;
    if (!d.valid || extra) s.garbled = true;
    const completes = !d.closeDelimited && d.valid && before < d.end && endAt >= d.end;
    if (endAt >= d.headEnd && !completes) req.bodyDataAt = Date.now();
    // Complete: the relay may send a waiting request on this connection at once.
    if (completes) s.current = undefined;
    s.emit("data", Buffer.from(chunk));
    if (completes) expectAnswer(w, s, req, d, d.body);
    // Bytes after the end of an answer: the connection is out of step.
    if (extra && s.current === undefined) s.tainted = true;
    else if (extra) s.outOfStep = true;
    if (!completes && req.results[0]?.answer !== undefined && !req.answered) {
      w.violations.push(`request ${req.id} answered before its answer was complete`);
    }
  }
}

function expectAnswer(w: World, s: GatewaySocket, req: Req, d: Delivery, body: Buffer): void {
  const got = req.results[0];
  if (got?.answer === undefined) {
    w.violations.push(`request ${req.id}: complete answer not delivered (${got === undefined ? "no callback" : got.err?.code})`);
    return;
  }
  if (got.answer.status !== d.status || got.answer.contentType !== "message/ohttp-res" || !got.answer.body.equals(body)) {
    w.violations.push(`request ${req.id} got another answer: ${got.answer.body.toString("latin1", 0, 12)}`);
  }
  req.answered = true;
  if (d.keepAliveMs !== undefined) s.keepAliveMs = d.keepAliveMs;
  if (!d.reusable) s.tainted = true;
  // Parked idle unless a waiting request took it at once (then it carries that one).
  else if (s.keepAliveMs > 0 && s.current === undefined && !s.destroyed) s.idleUntil = Date.now() + s.keepAliveMs;
}

// --- commands ---

type Cmd = fc.AsyncCommand<World, World>;

class ForwardCommand implements Cmd {
  constructor(readonly sizes: number[]) {}
  check(): boolean {
    return true;
  }
  async run(w: World): Promise<void> {
    for (const size of this.sizes) {
      const id = w.requests.length;
      const body = Buffer.alloc(Math.max(size, 12), 0x71);
      body.write(`req-${id}-`, "latin1");
      const r: Req = { id, forwardedAt: Date.now(), body, socket: undefined, writtenAt: undefined, bodyDataAt: undefined, results: [], answered: false };
      w.requests.push(r);
      const wasIdle = idle(w).length > 0;
      const socketsBefore = w.sockets.length;
      w.upstream.forward(body, (err, answer) => onResult(w, r, err, answer));
      if (wasIdle) {
        // An idle connection is reused: no new connection, the request is sent at once.
        expect(w.sockets.length, "opened a connection while one was idle").toBe(socketsBefore);
        expect(r.writtenAt, "not sent on the idle connection").toBeDefined();
      }
    }
    await settle();
    checkInvariants(w);
  }
  toString(): string {
    return `forward(${this.sizes.join(",")})`;
  }
}

class ConnectCommand implements Cmd {
  constructor(
    readonly pick: number,
    readonly ok: boolean,
  ) {}
  check(w: Readonly<World>): boolean {
    return w.sockets.some((s) => s.state === "connecting" && !s.destroyed);
  }
  async run(w: World): Promise<void> {
    const candidates = w.sockets.filter((s) => s.state === "connecting" && !s.destroyed);
    const s = candidates[this.pick % candidates.length]!;
    if (this.ok) {
      s.state = "open";
      s.emit("connect");
    } else {
      s.broken = true;
      s.emit("error", Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }));
      s.destroy();
    }
    await settle();
    checkInvariants(w);
  }
  toString(): string {
    return `connect(${this.pick},${this.ok ? "ok" : "refused"})`;
  }
}

class AnswerCommand implements Cmd {
  constructor(
    readonly pick: number,
    readonly spec: AnswerSpec,
    readonly count: number,
  ) {}
  check(w: Readonly<World>): boolean {
    return w.sockets.some((s) => !s.destroyed && s.current !== undefined && s.delivery === undefined);
  }
  async run(w: World): Promise<void> {
    const candidates = w.sockets.filter((s) => !s.destroyed && s.current !== undefined && s.delivery === undefined);
    const s = candidates[this.pick % candidates.length]!;
    s.delivery = buildDelivery(s.current!.id, this.spec);
    deliver(w, s, this.spec.cuts, this.count);
    await settle();
    checkInvariants(w);
  }
  toString(): string {
    const a = this.spec;
    return `answer(${this.pick},${a.status},${a.size},${a.framing},${a.connection},ka=${a.keepAliveSec},${a.interim ? "100," : ""}${a.garbage},cs=${a.chunkSize},[${a.cuts.join(",")}],${this.count})`;
  }
}

class MoreCommand implements Cmd {
  constructor(
    readonly pick: number,
    readonly cuts: number[],
    readonly count: number,
  ) {}
  check(w: Readonly<World>): boolean {
    return w.sockets.some((s) => !s.destroyed && s.delivery !== undefined && s.delivery.delivered < s.delivery.bytes.length);
  }
  async run(w: World): Promise<void> {
    const candidates = w.sockets.filter((s) => !s.destroyed && s.delivery !== undefined && s.delivery.delivered < s.delivery.bytes.length);
    const s = candidates[this.pick % candidates.length]!;
    if (s.current === undefined) {
      // The answer is complete: what is left are extra bytes, delivered to the (maybe idle) connection.
      const d = s.delivery!;
      s.garbled = true;
      s.tainted = true;
      s.emit("data", d.bytes.subarray(d.delivered));
      d.delivered = d.bytes.length;
    } else {
      deliver(w, s, this.cuts, this.count);
    }
    await settle();
    checkInvariants(w);
  }
  toString(): string {
    return `more(${this.pick},[${this.cuts.join(",")}],${this.count})`;
  }
}

class BreakCommand implements Cmd {
  /** The gateway ends the connection (`end`) or it is reset (`error`). */
  constructor(
    readonly pick: number,
    readonly how: "end" | "error",
  ) {}
  check(w: Readonly<World>): boolean {
    return w.sockets.some((s) => !s.destroyed && s.state === "open");
  }
  async run(w: World): Promise<void> {
    const candidates = w.sockets.filter((s) => !s.destroyed && s.state === "open");
    const s = candidates[this.pick % candidates.length]!;
    const req = s.current;
    const d = s.delivery;
    // A close-delimited answer, fully delivered, is complete at the end.
    // A close-delimited answer is complete at the end, whatever part of its body came (HTTP/1.1
    // cannot tell a cut one: RFC 9112 §6.3, §8).
    const completes = this.how === "end" && req !== undefined && d !== undefined && d.closeDelimited && d.valid && d.delivered >= d.headEnd;
    s.broken = !completes;
    s.tainted = true;
    if (this.how === "end") s.emit("end");
    else {
      s.emit("error", Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }));
      s.destroy();
    }
    if (completes) {
      s.current = undefined;
      expectAnswer(w, s, req, d, d.body.subarray(0, d.bodyUpTo[d.delivered]));
    }
    expect(s.destroyed, "a connection the gateway ended is closed").toBe(true);
    await settle();
    checkInvariants(w);
  }
  toString(): string {
    return `break(${this.pick},${this.how})`;
  }
}

class StrayCommand implements Cmd {
  /** Bytes on an idle connection (an answer nobody asked for): it must be closed, never reused. */
  constructor(readonly pick: number) {}
  check(w: Readonly<World>): boolean {
    return idle(w).length > 0;
  }
  async run(w: World): Promise<void> {
    const candidates = idle(w);
    const s = candidates[this.pick % candidates.length]!;
    s.tainted = true;
    s.emit("data", Buffer.from("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", "latin1"));
    await settle();
    checkInvariants(w);
  }
  toString(): string {
    return `stray(${this.pick})`;
  }
}

class TickCommand implements Cmd {
  constructor(readonly ms: number) {}
  check(): boolean {
    return true;
  }
  async run(w: World): Promise<void> {
    vi.advanceTimersByTime(this.ms);
    await settle();
    checkInvariants(w);
  }
  toString(): string {
    return `tick(${this.ms})`;
  }
}

const answerSpec: fc.Arbitrary<AnswerSpec> = fc.record({
  status: fc.constantFrom(200, 200, 200, 500),
  size: fc.oneof(fc.nat(64), fc.integer({ min: 1000, max: 5000 })),
  framing: fc.constantFrom<Framing>("length", "length", "chunked", "close"),
  connection: fc.constantFrom("keep-alive" as const, "close" as const, "none" as const, "none" as const),
  keepAliveSec: fc.option(fc.integer({ min: 1, max: 5 }), { freq: 3 }),
  interim: fc.boolean(),
  garbage: fc.constantFrom<Garbage>("none", "none", "none", "none", "none", "status", "length", "bighead", "extra"),
  chunkSize: fc.integer({ min: 1, max: 3000 }),
  cuts: fc.array(fc.nat(6000), { maxLength: 6 }),
});

const forward = fc.array(fc.oneof(fc.nat(40), fc.nat(40), fc.integer({ min: 16_000, max: 20_000 })), { minLength: 1, maxLength: 3 }).map((s) => new ForwardCommand(s));
const connect = fc.tuple(fc.nat(), fc.nat(9)).map(([p, ok]) => new ConnectCommand(p, ok > 0));
const answer = fc.tuple(fc.nat(), answerSpec, fc.oneof(fc.constant(100), fc.nat(7))).map(([p, a, n]) => new AnswerCommand(p, a, n));
const more = fc.tuple(fc.nat(), fc.array(fc.nat(6000), { maxLength: 6 }), fc.nat(7)).map(([p, cuts, n]) => new MoreCommand(p, cuts, n));
const brk = fc.tuple(fc.nat(), fc.constantFrom("end" as const, "error" as const)).map(([p, how]) => new BreakCommand(p, how));
const stray = fc.nat().map((p) => new StrayCommand(p));
// Mostly short steps (the sweeper's tick is 125 ms), sometimes past every timeout.
const tick = fc.oneof({ arbitrary: fc.integer({ min: 1, max: 400 }), weight: 4 }, { arbitrary: fc.integer({ min: 900, max: 4000 }), weight: 1 }).map((ms) => new TickCommand(ms));
// Repeated entries weigh the choice: a command whose precondition fails is skipped.
const commands = [forward, connect, connect, answer, answer, answer, more, more, brk, stray, tick, tick];

function setup(): World {
  const w: World = {
    requests: [],
    sockets: [],
    violations: [],
    closedAt: undefined,
    upstream: new Upstream({
      gateway: new URL("http://gw.test/gw"),
      ...OPTS,
      now: () => Date.now(),
      connect: () => {
        const s = new GatewaySocket(w, w.sockets.length);
        w.sockets.push(s);
        return s;
      },
    }),
  };
  return w;
}

describe("the relay's upstream client (model-based)", () => {
  beforeEach(() => {
    // The sweeper interval and the clock; setImmediate and nextTick stay real (settle() uses them).
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "Date"], now: 1_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("answers every request exactly once with its own answer, reuses only clean connections, bounds memory, and leaves no timer", async () => {
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: 80, size: "+1" }), fc.constantFrom("answer", "silent", "close"), async (cmds, end) => {
        vi.clearAllTimers();
        const w = setup();
        expect(vi.getTimerCount()).toBe(1);
        await fc.asyncModelRun(() => ({ model: w, real: w }), cmds);
        if (end === "close") {
          // close() fails whatever is pending, closes every connection, and refuses new requests.
          w.closedAt = Date.now();
          w.upstream.close();
          await settle();
          expect(pending(w).map((r) => r.id)).toEqual([]);
          let late: ProtocolError | undefined;
          w.upstream.forward(Buffer.from("x"), (err) => (late = err));
          expect(late?.code).toBe("HTTP_ERR_UNAVAILABLE");
        } else {
          // The end: the gateway accepts every connection and answers every request (or stays
          // silent), and time passes in short steps until every timeout has fired and every idle
          // connection is closed.
          const until = Date.now() + 2 * (OPTS.connectMs + OPTS.headersMs + OPTS.bodyMs + OPTS.keepAliveMs);
          while ((pending(w).length > 0 || live(w).length > 0) && Date.now() < until) {
            if (end === "answer") {
              if (new ConnectCommand(0, true).check(w)) await new ConnectCommand(0, true).run(w);
              const ok: AnswerSpec = { status: 200, size: 20, framing: "length", connection: "none", keepAliveSec: undefined, interim: false, garbage: "none", chunkSize: 20, cuts: [] };
              if (new AnswerCommand(0, ok, 100).check(w)) await new AnswerCommand(0, ok, 100).run(w);
            }
            await new TickCommand(100).run(w);
          }
          expect(pending(w).map((r) => r.id)).toEqual([]);
          expect(live(w).length).toBe(0);
          w.upstream.close();
        }
        await settle();
        checkInvariants(w);
        for (const r of w.requests) expect(r.results.length, `request ${r.id}`).toBe(1);
        expect(w.sockets.every((s) => s.closed)).toBe(true);
        expect(w.upstream.connections).toBe(0);
        expect(vi.getTimerCount(), "a timer left after close()").toBe(0);
      }),
      fuzzParams(13),
    );
  }, 120_000);
});
