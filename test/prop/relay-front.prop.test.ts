// Model-based properties of the relay's lean HTTP/1.1 front (relay/front.ts), driven through a model
// socket with an injected clock: random request kinds, random chunking of what the client sends
// and of what it reads, pipelining, gateway answers in any timing, the client's half-close, handoff
// to node:http, and every timeout. After every step:
//
// - answers arrive in request order, exactly one per request answered, none lost or duplicated,
//   each the right one (the gateway echoes the request's id);
// - the front never holds more than MAX_UNSENT_BYTES of unsent answers plus one answer, and it
//   reads no further while over that bound (memory per connection is bounded);
// - the connection is never cut while an answer is unsent, except by a timeout;
// - a request gets 408 once min(headers, request) timeout after its first byte with the head
//   incomplete, or request timeout after its first byte with the body incomplete (the two
//   timeouts never add up);
// and at the end, once the client reads everything and time passes, every timer has fired: the
// connection is closed and the front holds nothing.

import { EventEmitter } from "node:events";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ProtocolError } from "../../core/errors.js";
import { Forwarder, type RelayRoute } from "../../relay/forward.js";
import { Front, MAX_UNSENT_BYTES, type FrontSocket } from "../../relay/front.js";
import type { Upstream, UpstreamCallback } from "../../relay/upstream.js";
import { DrainState, RequestRecorder } from "../../server/lean-answers.js";
import { createLogger } from "../../server/logging.js";
import { createMetrics } from "../../server/metrics.js";
import { fuzzParams } from "../helpers/fuzz.js";

const LIMITS = { maxRequestBytes: 4096, maxHeaderBytes: 1024, headersTimeoutMs: 1000, requestTimeoutMs: 3000, keepAliveTimeoutMs: 2000 };
const LINGER_MS = 2000;
const HWM = 16 * 1024;

/** A connection as the front sees it; the test plays the client and the kernel. */
class ModelSocket extends EventEmitter implements FrontSocket {
  readonly remoteAddress = "192.0.2.1";
  destroyed = false;
  /** Answer bytes written by the front and not read by the client yet. */
  unsent: Buffer[] = [];
  writableLength = 0;
  /** Bytes the client has read. */
  received = "";
  /** Client bytes not yet delivered (paused, or after an unshift). */
  inbound: Buffer[] = [];
  paused = false;
  serverEnded = false;
  clientEnded = false;
  endDelivered = false;
  needDrain = false;
  /** Bytes given to the front in "data" events. */
  delivered = 0;
  /** Set by a destroy() while answers were unsent. */
  droppedUnsent = 0;
  handedOff = false;

  setNoDelay(): this {
    return this;
  }
  write(data: Buffer): boolean {
    if (this.destroyed || this.serverEnded) throw new Error("write after end");
    this.unsent.push(Buffer.from(data));
    this.writableLength += data.length;
    const ok = this.writableLength < HWM;
    if (!ok) this.needDrain = true;
    return ok;
  }
  end(): this {
    this.serverEnded = true;
    this.#maybeClose();
    return this;
  }
  destroy(): this {
    if (this.destroyed) return this;
    this.droppedUnsent += this.writableLength;
    this.destroyed = true;
    this.emit("close");
    return this;
  }
  destroySoon(): void {
    this.end();
  }
  pause(): this {
    this.paused = true;
    return this;
  }
  resume(): this {
    this.paused = false;
    this.#deliver();
    return this;
  }
  isPaused(): boolean {
    return this.paused;
  }
  unshift(chunk: Buffer): void {
    this.inbound.unshift(chunk);
  }

  // --- the client's side ---

  send(chunks: Buffer[]): void {
    if (this.clientEnded || this.destroyed) return;
    this.inbound.push(...chunks);
    this.#deliver();
  }
  clientEnd(): void {
    if (this.clientEnded || this.destroyed) return;
    this.clientEnded = true;
    this.#deliver();
  }
  read(n: number): void {
    let left = n;
    while (left > 0 && this.unsent.length > 0) {
      const b = this.unsent[0]!;
      const take = Math.min(left, b.length);
      this.received += b.toString("latin1", 0, take);
      if (take === b.length) this.unsent.shift();
      else this.unsent[0] = b.subarray(take);
      this.writableLength -= take;
      left -= take;
    }
    if (this.writableLength === 0) {
      if (this.needDrain && !this.destroyed) {
        this.needDrain = false;
        this.emit("drain");
      }
      this.#maybeClose();
    }
  }

  #deliver(): void {
    while (!this.paused && !this.destroyed && !this.handedOff && this.inbound.length > 0) {
      const c = this.inbound.shift()!;
      this.delivered += c.length;
      this.emit("data", c);
    }
    if (!this.paused && !this.destroyed && !this.handedOff && this.inbound.length === 0 && this.clientEnded && !this.endDelivered) {
      this.endDelivered = true;
      this.emit("end");
    }
    this.#maybeClose();
  }
  #maybeClose(): void {
    // Both sides ended and every answer flushed: the socket closes (autoDestroy).
    if (!this.destroyed && this.serverEnded && this.writableLength === 0 && (this.endDelivered || this.clientEnded)) {
      this.destroyed = true;
      this.emit("close");
    }
  }
}

type Kind = "ok" | "media" | "empty" | "large" | "close" | "other";

interface Sent {
  id: number;
  kind: Kind;
  bytes: number;
}

interface Model {
  sent: Sent[];
  /** Ids of requests whose answers the client has parsed, in order. */
  answers: { id: number | undefined; status: number; close: boolean }[];
  parsedAt: number;
  /** A timeout cut the connection with answers the client had not read. */
  cut: boolean;
  /** The requests with the gateway, not answered yet (shared with Real). */
  gateway: { body: Buffer; cb: UpstreamCallback }[];
}

interface Real {
  socket: ModelSocket;
  front: Front<ModelSocket>;
  clock: { t: number };
  gateway: { body: Buffer; cb: UpstreamCallback }[];
  answerBytes: number;
}

function requestBytes(id: number, kind: Kind): Buffer {
  const body = kind === "empty" ? "" : kind === "large" ? "" : `req-${id}`;
  const type = kind === "media" ? "text/plain" : "message/ohttp-req";
  const length = kind === "large" ? LIMITS.maxRequestBytes + 1 : body.length;
  const target = kind === "other" ? "/elsewhere" : "/gw";
  const close = kind === "close" ? "Connection: close\r\n" : "";
  return Buffer.from(`POST ${target} HTTP/1.1\r\nHost: r\r\nContent-Type: ${type}\r\n${close}Content-Length: ${length}\r\n\r\n${body}`, "latin1");
}

/** Parses the answers the client has read so far into the model. */
function parseAnswers(m: Model, s: ModelSocket): void {
  const text = s.received;
  for (;;) {
    const at = m.parsedAt;
    const end = text.indexOf("\r\n\r\n", at);
    if (end < 0) return;
    const head = text.slice(at, end);
    const length = Number(/\r\ncontent-length: (\d+)/.exec(head)?.[1] ?? "NaN");
    if (text.length < end + 4 + length) return;
    const body = text.slice(end + 4, end + 4 + length);
    const status = Number(head.slice(9, 12));
    const id = /^res-(\d+)-/.exec(body)?.[1];
    m.answers.push({ id: id === undefined ? undefined : Number(id), status, close: head.includes("\r\nconnection: close") });
    m.parsedAt = end + 4 + length;
  }
}

/** What each kind of request is answered with (undefined: handed to node:http, no answer here). */
function expectedStatus(kind: Kind): number | undefined {
  switch (kind) {
    case "ok":
    case "close":
      return 200;
    case "media":
      return 415;
    case "empty":
      return 400;
    case "large":
      return 413;
    case "other":
      return undefined;
  }
}

function checkInvariants(m: Model, r: Real): void {
  parseAnswers(m, r.socket);
  // In order, one per request, each the right one.
  expect(m.answers.length).toBeLessThanOrEqual(m.sent.length);
  m.answers.forEach((a, i) => {
    const req = m.sent[i]!;
    if (a.status === 408 || a.status === 502) return; // timeouts and gateway failures: any request
    expect(a.status, `answer ${i}`).toBe(expectedStatus(req.kind));
    if (a.status === 200) expect(a.id, `answer ${i}`).toBe(req.id);
  });
  // Nothing after an answer that closed the connection.
  const closing = m.answers.findIndex((a) => a.close);
  if (closing >= 0) expect(m.answers.length).toBe(closing + 1);
  // Bounded: at most MAX_UNSENT_BYTES plus one answer unsent.
  expect(r.socket.writableLength).toBeLessThanOrEqual(MAX_UNSENT_BYTES + r.answerBytes + 512);
  // Over the bound, the front reads nothing more until the client reads.
  const s = r.socket;
  if (s.writableLength > MAX_UNSENT_BYTES && !s.destroyed && !s.serverEnded && !s.handedOff) expect(s.paused, "paused while answers are unsent").toBe(true);
  // No answer dropped, except by a timeout (checked in the Tick command).
  expect(r.socket.droppedUnsent).toBe(0);
}

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

class SendCommand implements fc.AsyncCommand<Model, Real> {
  /** Pipelines one request per kind, all cut at `cuts` (offsets into the whole). */
  constructor(
    readonly kinds: Kind[],
    readonly cuts: number[],
  ) {}
  check(): boolean {
    return true;
  }
  async run(m: Model, r: Real): Promise<void> {
    const parts: Buffer[] = [];
    for (const kind of this.kinds) {
      const id = m.sent.length;
      const one = requestBytes(id, kind);
      parts.push(one);
      // A request sent after the server ended the connection is the client's to retry elsewhere.
      if (!r.socket.clientEnded && !r.socket.destroyed && !r.socket.handedOff && !r.socket.serverEnded) m.sent.push({ id, kind, bytes: one.length });
    }
    const bytes = Buffer.concat(parts);
    const points = [...new Set(this.cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
    const chunks: Buffer[] = [];
    let at = 0;
    for (const p of [...points, bytes.length]) {
      if (p > at) chunks.push(bytes.subarray(at, p));
      at = Math.max(at, p);
    }
    r.socket.send(chunks);
    await settle();
    checkInvariants(m, r);
  }
  toString(): string {
    return `send(${this.kinds.join(",")})`;
  }
}

class GatewayCommand implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly fail: boolean,
    readonly size: number,
  ) {}
  check(m: Readonly<Model>): boolean {
    return m.gateway.length > 0;
  }
  async run(m: Model, r: Real): Promise<void> {
    const p = r.gateway.shift()!;
    if (this.fail) {
      p.cb(new ProtocolError("RELAY_ERR_UPSTREAM_FAILED"), undefined);
    } else {
      const id = /^req-(\d+)$/.exec(p.body.toString("latin1"))![1]!;
      const body = Buffer.alloc(Math.max(this.size, 16), 0x2e);
      body.write(`res-${id}-`, "latin1");
      r.answerBytes = Math.max(r.answerBytes, body.length);
      p.cb(undefined, { status: 200, contentType: "message/ohttp-res", body });
    }
    await settle();
    checkInvariants(m, r);
  }
  toString(): string {
    return `gateway(${this.fail ? "fail" : this.size})`;
  }
}

class ReadCommand implements fc.AsyncCommand<Model, Real> {
  constructor(readonly n: number) {}
  check(): boolean {
    return true;
  }
  async run(m: Model, r: Real): Promise<void> {
    r.socket.read(this.n);
    await settle();
    checkInvariants(m, r);
  }
  toString(): string {
    return `read(${this.n})`;
  }
}

class EndCommand implements fc.AsyncCommand<Model, Real> {
  check(): boolean {
    return true;
  }
  async run(m: Model, r: Real): Promise<void> {
    r.socket.clientEnd();
    await settle();
    checkInvariants(m, r);
  }
  toString(): string {
    return "clientEnd";
  }
}

class TickCommand implements fc.AsyncCommand<Model, Real> {
  constructor(readonly ms: number) {}
  check(): boolean {
    return true;
  }
  async run(m: Model, r: Real): Promise<void> {
    const unsentBefore = r.socket.writableLength;
    r.clock.t += this.ms;
    r.front.sweep();
    await settle();
    // A timeout may cut a connection with answers unsent (the client did not read them in time):
    // those bytes are the client's loss, not an answer dropped while it was reading.
    if (r.socket.droppedUnsent > 0) {
      expect(r.socket.droppedUnsent).toBe(unsentBefore);
      expect(this.ms).toBeGreaterThanOrEqual(Math.min(LIMITS.requestTimeoutMs, LINGER_MS));
      r.socket.droppedUnsent = 0;
      m.cut = true;
    }
    checkInvariants(m, r);
  }
  toString(): string {
    return `tick(${this.ms})`;
  }
}

const kinds = fc.constantFrom<Kind>("ok", "ok", "ok", "media", "empty", "large", "close", "other");
const commands = [
  fc.tuple(fc.array(kinds, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(1000), { maxLength: 6 })).map(([k, cuts]) => new SendCommand(k, cuts)),
  fc.tuple(fc.boolean(), fc.oneof(fc.nat(64), fc.integer({ min: 20_000, max: 90_000 }))).map(([fail, size]) => new GatewayCommand(fail && size % 5 === 0, size)),
  fc.oneof(fc.nat(300), fc.integer({ min: 1000, max: 200_000 })).map((n) => new ReadCommand(n)),
  fc.constant(new EndCommand()),
  fc.oneof(fc.integer({ min: 1, max: 500 }), fc.integer({ min: 900, max: 4000 })).map((ms) => new TickCommand(ms)),
];

function setup(): { model: Model; real: Real } {
  const clock = { t: 1_000_000 };
  const gateway: Real["gateway"] = [];
  const upstream = { forward: (body: Buffer, cb: UpstreamCallback) => gateway.push({ body: Buffer.from(body), cb }) } as unknown as Upstream;
  const route: RelayRoute = { path: "/gw", upstream, keys: undefined };
  const log = createLogger("relay", { level: "silent" });
  const socket = new ModelSocket();
  const drain = new DrainState();
  const front = new Front<ModelSocket>({
    routes: new Map([["/gw", route]]),
    forwarder: new Forwarder({ drain, limiter: undefined, maxConcurrent: 1000, ipv6PrefixBits: 64 }),
    recorder: new RequestRecorder(log, createMetrics("relay", { defaultMetrics: false })),
    drain,
    limits: LIMITS,
    handoff: (s) => {
      s.handedOff = true;
    },
    now: () => clock.t,
  });
  front.stop();
  front.accept(socket);
  return { model: { sent: [], answers: [], parsedAt: 0, cut: false, gateway }, real: { socket, front, clock, gateway, answerBytes: 0 } };
}

describe("the relay's lean front (model-based)", () => {
  it("answers in order, once each, within bounded memory, and every timer fires", async () => {
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: 60 }), async (cmds) => {
        const { model, real } = setup();
        await fc.asyncModelRun(() => ({ model, real }), cmds);
        // The end: the gateway answers what it has, the client reads everything, time passes.
        for (let round = 0; round < 20 && !real.socket.destroyed && !real.socket.handedOff; round++) {
          while (real.gateway.length > 0) await new GatewayCommand(false, 8).run(model, real);
          await new ReadCommand(1 << 30).run(model, real);
          await new TickCommand(LIMITS.requestTimeoutMs + LINGER_MS).run(model, real);
        }
        expect(real.socket.destroyed || real.socket.handedOff).toBe(true);
        expect(real.front.connections).toBe(0);
        // Every request before the first closing answer, a handoff or the client's end got its answer.
        parseAnswers(model, real.socket);
        const closing = model.answers.findIndex((a) => a.close);
        const answered = closing >= 0 ? closing + 1 : model.answers.length;
        const handoff = model.sent.findIndex((s) => s.kind === "other");
        if (closing < 0 && handoff < 0 && !real.socket.clientEnded && !model.cut) expect(answered).toBe(model.sent.length);
      }),
      fuzzParams(11),
    );
  }, 120_000);

  it("sends 408 at min(headers, request) timeout after the first byte, or request timeout with the body incomplete", async () => {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.integer({ min: 0, max: 900 }), fc.integer({ min: 1, max: 1000 }), async (headComplete, headAfterMs, step) => {
        const { real } = setup();
        const bytes = requestBytes(0, "ok");
        const headEnd = bytes.indexOf("\r\n\r\n") + 4;
        const started = real.clock.t;
        real.socket.send([bytes.subarray(0, 5)]);
        real.clock.t += headAfterMs;
        if (headComplete) real.socket.send([bytes.subarray(5, headEnd)]);
        const deadline = started + (headComplete ? LIMITS.requestTimeoutMs : Math.min(LIMITS.headersTimeoutMs, LIMITS.requestTimeoutMs));
        let answeredAt: number | undefined;
        while (answeredAt === undefined && real.clock.t < started + 10_000) {
          real.clock.t += step;
          real.front.sweep();
          await settle();
          real.socket.read(1 << 20);
          if (real.socket.received.startsWith("HTTP/1.1 408")) answeredAt = real.clock.t;
        }
        expect(answeredAt).toBeDefined();
        expect(answeredAt!).toBeGreaterThanOrEqual(deadline);
        expect(answeredAt!).toBeLessThan(deadline + step);
      }),
      fuzzParams(12),
    );
  });
});
