// Random bytes for the response nonces of RFC 9458 §4.4 (16 bytes per request), drawn from a
// pooled CSPRNG buffer: one randomFillSync per 4 KiB instead of a WebCrypto getRandomValues call
// per request (measured in bench/gateway.ts). Every byte is handed out once, as a copy.

import { randomFillSync } from "node:crypto";

export function pooledRandomBytes(poolBytes = 4096): (n: number) => Uint8Array {
  let pool = new Uint8Array(poolBytes);
  let offset = poolBytes;
  return (n: number): Uint8Array => {
    if (n > poolBytes) return randomFillSync(new Uint8Array(n));
    if (offset + n > poolBytes) {
      pool = randomFillSync(new Uint8Array(poolBytes));
      offset = 0;
    }
    const out = pool.slice(offset, offset + n);
    offset += n;
    return out;
  };
}
