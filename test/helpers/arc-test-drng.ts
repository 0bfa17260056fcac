// The deterministic test RNG of draft-irtf-cfrg-sigma-protocols (Appendix "TestDRNG"), which the
// ARC reference implementation uses to make its test vectors:
//
//   stream = SHAKE128(pad64("sigma-proofs/TestDRNG/SHAKE128") || 0^104 || seed), read in order
//   random_scalar():  OS2IP(stream[48]) mod Order()              (the sigma prover's nonces)
//   randint(0, Order() - 1): OS2IP(stream[48]) mod (Order() - 1)  (ARC's G.RandomScalar())

import { shake128 } from "@noble/hashes/sha3.js";
import { bytesToNumberBE } from "@noble/curves/utils.js";
import { ORDER, type ScalarRng } from "../../core/privacypass/arc/group.js";

export class TestDrng implements ScalarRng {
  readonly #xof: ReturnType<typeof shake128.create>;

  constructor(seed: Uint8Array) {
    if (seed.length !== 32) throw new Error("seed must be 32 bytes");
    const block = new Uint8Array(168);
    block.set(new TextEncoder().encode("sigma-proofs/TestDRNG/SHAKE128"));
    this.#xof = shake128.create().update(block).update(seed);
  }

  #next(): bigint {
    return bytesToNumberBE(this.#xof.xof(48));
  }

  randomScalar(): bigint {
    return this.#next() % (ORDER - 1n);
  }

  proofNonce(): bigint {
    return this.#next() % ORDER;
  }
}

/** The seed as the reference tests write it: an ASCII string padded with zeros to 32 bytes. */
export function paddedSeed(s: string): Uint8Array {
  const out = new Uint8Array(32);
  out.set(new TextEncoder().encode(s));
  return out;
}
