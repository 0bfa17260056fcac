// The seam where the Privacy Pass token gate (gateway/gate.ts) plugs into the request path
// (docs/architecture.md, "Request path through the gateway", steps 4 and 6). gateway/request-path.ts calls, in order:
//
//   policy      -> checkPolicy()                         (403s are answered before the gate)
//   admission   -> ticket = await gate.admit(input)      (throws a ProtocolError: answered sealed,
//                                                         with its headers, e.g. WWW-Authenticate)
//   forwarding  -> outcome = await targets.forward(...)  (gateway/target.ts)
//   settlement  -> await ticket.settle(outcome.reached)  (false: release the nonce; true: commit)
//
// settle() is called exactly once per admitted request, whatever happened upstream (also when the
// answer was cut off or too large: those count as reached). If settle() throws, the target's
// answer still goes back to the client and the failure is logged: the upload was processed.

import type { BhttpRequest } from "../core/bhttp/index.js";
import type { ResolvedTarget, RouteKind } from "./policy.js";

/** Everything the gate may look at. The request still carries its Authorization header here. */
export interface GateInput {
  /** The decoded inner request (method, scheme, authority, path, headers, body). */
  request: BhttpRequest;
  /** The allow-listed target the client addressed (`innerOrigin` is what origin_info names). */
  target: ResolvedTarget;
  /** "dap-upload" needs a token; the gate decides for the other kinds. */
  route: RouteKind;
  /** The DAP task id of the path, when there is one. */
  taskId: string | undefined;
  /**
   * Set when the body streams to the target (chunked OHTTP) and so is not known yet: what the
   * token is bound to in its place. Unique per request, so a streamed request is never a retry.
   */
  streamId?: Uint8Array;
}

export interface GateTicket {
  /** After forwarding: `reached === false` means nothing reached the target (release). */
  settle(reached: boolean): Promise<void>;
}

export interface Gate {
  /** Admits the request or throws a ProtocolError (PP_ERR_*: 401 with a challenge, 503 store down). */
  admit(input: GateInput): Promise<GateTicket>;
  /** For /readyz: throws when the gate cannot work (issuer keys unknown, store unreachable). */
  ready?(): Promise<void>;
  close?(): Promise<void>;
}

const NOTHING_TO_SETTLE: GateTicket = { settle: async () => {} };

/** `tokens.required: false`: every request that passed the policy is admitted. */
export const OPEN_GATE: Gate = Object.freeze({
  admit: async () => NOTHING_TO_SETTLE,
});
