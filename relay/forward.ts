// What the relay does with an encapsulated request once its body has been read, whichever HTTP
// front received it (the lean path in relay/front.ts or the Fastify route in relay/routes/):
// refuse it while the server is closing, over the concurrency cap or over the client's rate limit,
// else forward it to the route's gateway. (Both fronts record the request and render problems
// with server/lean-answers.ts and server/problem-handler.ts.)

import { ProtocolError } from "../core/errors.js";
import type { DrainState } from "../server/lean-answers.js";
import type { KeyCache } from "./key-cache.js";
import { clientKey, type RateLimiter } from "./rate-limit.js";
import type { Upstream, UpstreamAnswer } from "./upstream.js";

export interface RelayRoute {
  /** The configured path (also the route label in logs and metrics). */
  path: string;
  upstream: Upstream;
  keys: KeyCache | undefined;
}

export type ForwardCallback = (err: ProtocolError | undefined, answer: UpstreamAnswer | undefined) => void;

export interface ForwarderOptions {
  /** The server's drain state: once closing, new requests get 503. */
  drain: DrainState;
  limiter: RateLimiter | undefined;
  maxConcurrent: number;
  ipv6PrefixBits: number;
}

export class Forwarder {
  readonly #o: ForwarderOptions;
  /** Requests between their checks and the gateway's answer (both fronts). */
  inFlight = 0;

  constructor(opts: ForwarderOptions) {
    this.#o = opts;
  }

  /**
   * Counts a request of the client at `address` against its rate limit: undefined when allowed,
   * else the 429 error (with Retry-After). The address goes to the limiter and nowhere else.
   */
  checkRate(address: string): ProtocolError | undefined | Promise<ProtocolError | undefined> {
    const limiter = this.#o.limiter;
    if (limiter === undefined) return undefined;
    const r = limiter.hit(clientKey(address, this.#o.ipv6PrefixBits));
    if (r === undefined) return undefined;
    if (typeof r === "number") return rateLimited(r);
    return r.then((s) => (s === undefined ? undefined : rateLimited(s)));
  }

  /** Checks, then forwards `body` to the route's gateway; `cb` is called exactly once. */
  forward(route: RelayRoute, address: string, body: Buffer, cb: ForwardCallback): void {
    if (this.#o.drain.closing) {
      cb(new ProtocolError("HTTP_ERR_UNAVAILABLE", undefined, { headers: { connection: "close" } }), undefined);
      return;
    }
    if (this.inFlight >= this.#o.maxConcurrent) {
      cb(new ProtocolError("HTTP_ERR_OVERLOADED", undefined, { headers: { "retry-after": "1" } }), undefined);
      return;
    }
    this.inFlight++;
    const done: ForwardCallback = (err, answer) => {
      this.inFlight--;
      cb(err, answer);
    };
    const rate = this.checkRate(address);
    if (rate === undefined) {
      route.upstream.forward(body, done);
    } else if (rate instanceof ProtocolError) {
      done(rate, undefined);
    } else {
      rate.then(
        (err) => (err === undefined ? route.upstream.forward(body, done) : done(err, undefined)),
        (e: unknown) => done(new ProtocolError("INTERNAL_ERR", undefined, { cause: e }), undefined),
      );
    }
  }
}

function rateLimited(retryAfterSec: number): ProtocolError {
  return new ProtocolError("HTTP_ERR_RATE_LIMITED", `try again in ${retryAfterSec} s`, { headers: { "retry-after": String(retryAfterSec) } });
}
