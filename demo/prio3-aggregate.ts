// The demo's aggregation: what the DAP leader and helper would compute together, done in one place
// because the demo runs both and holds both HPKE keys. For each report the leader double accepted
// it decodes the two input shares (vdaf-08 §7.2 Prio3, as @divviup/dap 0.9 produces them), runs
// the Prio3 preparation of both aggregators (which checks the FLP proof: a malformed or dishonest
// report is counted as invalid, not added), and keeps the two aggregate shares. `result()` is the
// collector's unsharded aggregate, e.g. how many reports said "yes" for Prio3Count.
//
// A real deployment never does this in one process: the leader alone cannot see a measurement.
// Only `npm start` uses it, so a newcomer can see that what the client sent arrived intact.

import { randomBytes } from "node:crypto";
import { Buffer } from "node:buffer";
import { Prio3Count, Prio3Histogram, Prio3Sum } from "@divviup/prio3";

export type DemoVdaf = { vdaf: "count" } | { vdaf: "sum"; bits: number } | { vdaf: "histogram"; length: number; chunkLength: number };

/** The parts of a Prio3 instance this module uses (Prio3's type parameters differ per circuit). */
interface Prio3Like {
  readonly shares: number;
  readonly proofs: number;
  readonly verifyKeySize: number;
  readonly xof: {
    seedSize: number;
    expandIntoVec(field: FieldLike, seed: Uint8Array, dst: Uint8Array, binder: Uint8Array, length: number): Promise<bigint[]>;
  };
  readonly flp: { measurementLen: number; proofLen: number; jointRandLen: number; outputLen: number; field: FieldLike };
  domainSeparationTag(usage: number): Uint8Array;
  prepareInit(
    verifyKey: Buffer,
    aggregatorId: number,
    aggregationParameter: null,
    nonce: Buffer,
    publicShare: { jointRandParts: Buffer[] },
    inputShare: { measurementShare: bigint[]; proofsShare: bigint[]; wireMeasurementShare: Buffer; wireProofShare: Buffer; blind: Buffer },
  ): Promise<{ preparationState: unknown; preparationShare: unknown }>;
  unshardPreparationShares(aggregationParameter: null, shares: unknown[]): Promise<unknown>;
  prepareNext(state: unknown, message: unknown): { outputShare: bigint[] } | { preparationState: unknown };
  unshard(aggregationParameter: null, aggregatorShares: bigint[][], measurementCount: number): unknown;
}
interface FieldLike {
  encodedSize: number;
  decode(encoded: Uint8Array): bigint[];
  vecAdd(a: bigint[], b: bigint[]): bigint[];
}

/** vdaf-08 §7.2.1: Prio3's XOF usages. */
const USAGE_MEASUREMENT_SHARE = 1;
const USAGE_PROOF_SHARE = 2;

export function makePrio3(spec: DemoVdaf): Prio3Like {
  switch (spec.vdaf) {
    case "count":
      return new Prio3Count({ shares: 2 });
    case "sum":
      return new Prio3Sum({ shares: 2, bits: spec.bits });
    case "histogram":
      return new Prio3Histogram({ shares: 2, length: spec.length, chunkLength: spec.chunkLength });
  }
}

export interface ReportShares {
  /** 16-byte report id: DAP-09 uses it as the VDAF nonce. */
  reportId: Uint8Array;
  publicShare: Uint8Array;
  leaderShare: Uint8Array;
  helperShare: Uint8Array;
}

export class Prio3Aggregation {
  readonly #vdaf: Prio3Like;
  readonly #verifyKey: Buffer;
  #leader: bigint[];
  #helper: bigint[];
  /** Reports whose proof checked out and that are in the aggregate. */
  valid = 0;
  /** Reports that failed to decode or whose proof did not verify. */
  invalid = 0;

  constructor(spec: DemoVdaf) {
    this.#vdaf = makePrio3(spec);
    this.#verifyKey = randomBytes(this.#vdaf.verifyKeySize);
    const zero = new Array<bigint>(this.#vdaf.flp.outputLen).fill(0n);
    this.#leader = zero;
    this.#helper = zero.slice();
  }

  /** Prepares one report (both aggregators) and adds it; false if it is invalid. */
  async add(r: ReportShares): Promise<boolean> {
    try {
      const outputs = await this.#prepare(r);
      const field = this.#vdaf.flp.field;
      this.#leader = field.vecAdd(this.#leader, outputs[0]);
      this.#helper = field.vecAdd(this.#helper, outputs[1]);
      this.valid++;
      return true;
    } catch {
      this.invalid++;
      return false;
    }
  }

  /** The collector's view: the aggregate of every valid report (e.g. a count, a sum, bucket counts). */
  result(): unknown {
    if (this.valid === 0) return undefined;
    return this.#vdaf.unshard(null, [this.#leader, this.#helper], this.valid);
  }

  async #prepare(r: ReportShares): Promise<[bigint[], bigint[]]> {
    const v = this.#vdaf;
    const { field, measurementLen, proofLen, jointRandLen } = v.flp;
    const seed = v.xof.seedSize;
    const enc = field.encodedSize;
    const proofsLen = proofLen * v.proofs;
    const joint = jointRandLen !== 0;
    const nonce = Buffer.from(r.reportId);
    if (nonce.length !== 16) throw new Error("report id");

    // Public share: the joint randomness parts of both aggregators (empty without joint randomness).
    if (r.publicShare.length !== (joint ? 2 * seed : 0)) throw new Error("public share length");
    const parts = (): Buffer[] => (joint ? [Buffer.from(r.publicShare.subarray(0, seed)), Buffer.from(r.publicShare.subarray(seed))] : []);

    // Leader: encoded measurement share || encoded proofs share || blind.
    const leaderLength = (measurementLen + proofsLen) * enc + (joint ? seed : 0);
    if (r.leaderShare.length !== leaderLength) throw new Error("leader share length");
    const leader = {
      measurementShare: field.decode(r.leaderShare.subarray(0, measurementLen * enc)),
      proofsShare: field.decode(r.leaderShare.subarray(measurementLen * enc, (measurementLen + proofsLen) * enc)),
      blind: Buffer.from(r.leaderShare.subarray((measurementLen + proofsLen) * enc)),
      wireMeasurementShare: Buffer.alloc(0),
      wireProofShare: Buffer.alloc(0),
    };

    // Helper: measurement seed || proofs seed || blind, expanded as in Prio3's helper shares.
    if (r.helperShare.length !== (joint ? 3 * seed : 2 * seed)) throw new Error("helper share length");
    const helperId = 1;
    const helper = {
      measurementShare: await v.xof.expandIntoVec(
        field,
        r.helperShare.subarray(0, seed),
        v.domainSeparationTag(USAGE_MEASUREMENT_SHARE),
        Uint8Array.of(helperId),
        measurementLen,
      ),
      proofsShare: await v.xof.expandIntoVec(
        field,
        r.helperShare.subarray(seed, 2 * seed),
        v.domainSeparationTag(USAGE_PROOF_SHARE),
        Uint8Array.of(v.proofs, helperId),
        proofsLen,
      ),
      blind: Buffer.from(r.helperShare.subarray(2 * seed)),
      wireMeasurementShare: Buffer.alloc(0),
      wireProofShare: Buffer.alloc(0),
    };

    const l = await v.prepareInit(this.#verifyKey, 0, null, nonce, { jointRandParts: parts() }, leader);
    const h = await v.prepareInit(this.#verifyKey, helperId, null, nonce, { jointRandParts: parts() }, helper);
    // Throws when the combined verifier rejects the proof.
    const message = await v.unshardPreparationShares(null, [l.preparationShare, h.preparationShare]);
    const lo = v.prepareNext(l.preparationState, message);
    const ho = v.prepareNext(h.preparationState, message);
    if (!("outputShare" in lo) || !("outputShare" in ho)) throw new Error("Prio3 has one round");
    return [lo.outputShare, ho.outputShare];
  }
}
