// What the gate does when its double-spend store lost data (gateway/nonce-stores/redis.ts notices
// it: a marker written at start-up and checked atomically by every reserve, and INFO evicted_keys).
//
// The rule: after a loss noticed at `lostAtMs`, a token is refused when its issuer key
//   (a) has a not-before at or before lostAtMs (it may have been valid, so spent, before the loss;
//       this part is all a gateway started after the loss knows, from the marker), or
//   (b) was in this gateway's copy of the issuer directories (or among the ARC keys it holds from
//       the issuer's key file) when it noticed the loss, or in the directories as fetched right
//       then bypassing the cache (keys published ahead of their not-before: another gateway may
//       have accepted them already),
// until those keys leave the directories (their lifetime ends, or the issuer drops them: `veil
// issuer rotate --now`). Keys published after the loss cannot have been used before it: their
// tokens are accepted. So no token that could have been spent before the loss is accepted after
// it, whatever the store forgot, and the outage lasts until the issuer publishes a fresh key.
//
// The fresh key of a `veil issuer rotate --now` run after the loss was noticed is not caught:
//   - by (a): its not-before is the next whole second after the rotation (issuer/key-store.ts
//     rotateNow), so it is later than any loss noticed up to the rotation, even in the same
//     second. This compares the issuer's clock with the gateways': they must agree to well within
//     a second (NTP), as the keys' lifetimes already assume.
//   - by (b): the copy is taken and the refetch started in the call that first tells of the loss
//     (the error log, the metric, /readyz), so a rotation made in answer starts after both. It
//     could reach the refetch's answer only if the issuer answered that request after the
//     rotation command had generated and written its keys and the issuer had re-read its key file
//     (at most once a second). The refetch's keys all stay in the rule: leaving out those it
//     brings would let through a key published ahead before the loss (and accepted early by a
//     gateway whose clock runs ahead). "directories refetched after the loss" is logged, with the
//     final count of refused keys, once the refetch is in.
//   A gateway that notices the loss only after the rotation (no token reached it in between)
//   holds the fresh key in its copy already and refuses it under (b); its /readyz keeps failing
//   after the rotation, and a second rotation ends that.
//
// The rule is about keys, not nonces: it holds for anything spent in the store under a key of a
// trusted issuer (type 1 and 2 nonces, presentation tags), through isTainted({ tokenKeyId,
// notBeforeMs }).
//
// While tainted keys remain, the gate names only untainted keys in its challenges (clients fetch
// fresh tokens), refetches the directories (rate-limited, bypassing caches) when a refused token
// comes in, logs the loss at error level, counts it in veil_gateway_nonce_store_losses_total,
// shows the tainted keys in veil_gateway_nonce_store_tainted_keys, and fails /readyz with what
// happened and what to do.

import { Counter, Gauge, type Registry } from "prom-client";
import type { Logger } from "../server/logging.js";
import { ReadinessProblem } from "../server/lifecycle.js";
import type { TokenKeyDirectory } from "./issuer-directory.js";
import type { ArcVerifier } from "./arc-verifier.js";
import type { StoreLoss } from "./nonce-stores/types.js";

/** A key tokens are spent under: its full key id and the start of its validity. */
export interface SpendKey {
  tokenKeyId: Uint8Array;
  notBeforeMs: number;
}

export interface StoreLossGuardDeps {
  directory: TokenKeyDirectory;
  /** The ARC issuers, whose keys come from the issuer's key file rather than a directory. */
  arc?: Pick<ArcVerifier, "heldKeys" | "validSpendKeys">;
  log: Pick<Logger, "error" | "info">;
  registry?: Registry;
  now?: () => number;
}

function hexOf(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

const WHAT_TO_DO =
  "run `veil issuer rotate --now` on the issuer to publish a fresh key (clients then get new tokens within minutes), and make Redis keep its data (appendonly yes, maxmemory-policy noeviction)";

export class StoreLossGuard {
  readonly #dir: TokenKeyDirectory;
  readonly #arc: StoreLossGuardDeps["arc"];
  readonly #log: StoreLossGuardDeps["log"];
  readonly #now: () => number;
  readonly #losses: Counter<"reason">;
  #loss: StoreLoss | undefined;
  readonly #tainted = new Set<string>();
  #active = false;

  constructor(deps: StoreLossGuardDeps) {
    this.#dir = deps.directory;
    this.#arc = deps.arc;
    this.#log = deps.log;
    this.#now = deps.now ?? Date.now;
    const registers = deps.registry === undefined ? [] : [deps.registry];
    this.#losses = new Counter({
      name: "veil_gateway_nonce_store_losses_total",
      help: "Times the nonce store was found to have lost spent tokens, by what was noticed (marker_missing, evicted_keys)",
      labelNames: ["reason"],
      registers,
    });
    const tainted = (): number => this.taintedKeys().length;
    new Gauge({
      name: "veil_gateway_nonce_store_tainted_keys",
      help: "Issuer keys in the directories whose tokens are refused because the nonce store lost data (0 = normal)",
      registers,
      collect() {
        this.set(tainted());
      },
    });
  }

  /** The latest loss, if any. */
  get loss(): StoreLoss | undefined {
    return this.#loss;
  }

  /** Called by the store when it notices a loss (or reads an earlier one from its marker). */
  noteLoss(loss: StoreLoss): void {
    this.#loss = loss;
    this.#active = true;
    if (loss.fromMarker === true) {
      // An earlier loss read at start-up: this process held no directory then, so only part (a)
      // of the rule applies (its keys now may include ones published after the loss).
      this.#log.error({ reason: loss.reason, lostAt: new Date(loss.lostAtMs).toISOString() }, `NONCE STORE LOST SPENT TOKENS (before this gateway started): tokens of issuer keys valid before the loss are refused until those keys leave the issuer directory; ${WHAT_TO_DO}`);
      return;
    }
    this.#snapshot();
    // Keys published ahead of their not-before that this copy has not seen yet: fetch now,
    // bypassing caches, and taint what the directories hold at the moment of the loss. Sent
    // before the loss is announced (the rule above: why a rotation in answer comes after it).
    const refetched = Promise.all(this.#dir.issuers.map((d) => d.refresh({ bypassCache: true })));
    this.#losses.inc({ reason: loss.reason });
    this.#log.error(
      { reason: loss.reason, lostAt: new Date(loss.lostAtMs).toISOString(), taintedKeys: this.taintedKeys().length },
      `NONCE STORE LOST SPENT TOKENS: tokens of issuer keys published before the loss are refused until those keys leave the issuer directory; ${WHAT_TO_DO}`,
    );
    void refetched.then(() => {
      this.#snapshotDirectories();
      this.#log.info({ lostAt: new Date(loss.lostAtMs).toISOString(), taintedKeys: this.taintedKeys().length }, "nonce store loss: issuer directories refetched after the loss");
    });
  }

  /** Rule (b): every key held when the loss is noticed, valid or published ahead. */
  #snapshot(): void {
    this.#snapshotDirectories();
    // ARC keys come from the issuer's key file, read here and now (no refetch to wait for).
    for (const k of this.#arc?.heldKeys() ?? []) this.#tainted.add(hexOf(k.tokenKeyId));
  }

  #snapshotDirectories(): void {
    for (const d of this.#dir.issuers) for (const k of d.allKeys) this.#tainted.add(hexOf(k.tokenKeyId));
  }

  /** True when tokens of `key` may have been spent before the loss (the rule above). */
  isTainted(key: SpendKey): boolean {
    const loss = this.#loss;
    if (loss === undefined) return false;
    return key.notBeforeMs <= loss.lostAtMs || this.#tainted.has(hexOf(key.tokenKeyId));
  }

  /** Keys valid now (in the directories, and ARC keys) whose tokens are refused. */
  taintedKeys(): SpendKey[] {
    if (this.#loss === undefined) return [];
    const now = this.#now();
    const valid: SpendKey[] = this.#dir.issuers.flatMap((d) => d.validKeys(now));
    valid.push(...(this.#arc?.validSpendKeys(now) ?? []));
    return valid.filter((k) => this.isTainted(k));
  }

  /** A tainted token came in: look (rate-limited, bypassing caches) whether its key has left. */
  refetch(): void {
    for (const d of this.#dir.issuers) void d.refetchForUnknownKey();
  }

  /** Readiness: fails, saying what happened and what to do, while tainted keys remain. */
  check(): void {
    if (!this.#active) return;
    const tainted = this.taintedKeys();
    if (tainted.length === 0) {
      this.#active = false;
      this.#log.info({ lostAt: new Date(this.#loss!.lostAtMs).toISOString() }, "nonce store loss: every issuer key published before it has left the directory; tokens are accepted again");
      return;
    }
    this.refetch();
    throw new ReadinessProblem(
      `the nonce store lost spent tokens (${this.#loss!.reason}, noticed ${new Date(this.#loss!.lostAtMs).toISOString()}): tokens of ${tainted.length} issuer key(s) published before are refused until they leave the issuer directory; ${WHAT_TO_DO}`,
    );
  }
}
