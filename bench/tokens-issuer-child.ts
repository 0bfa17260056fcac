// Child process of bench/tokens.ts: `veil issuer` as deployed (startIssuer with its own logger
// writing one line per request to stdout, which the parent points at /dev/null; the credentials
// attester with its quota in SQLite), issuing token type 2 or 5, so that its CPU time can be
// measured alone. The floors are measured in this process too, on the issuer's own keys.
//
// IPC: sends {ready, port} once listening. Answers "cpu" with {cpu: process.cpuUsage()};
// {floor: "rsa", n} with the CPU µs of n raw RSA-2048 private operations (privateDecrypt,
// RSA_NO_PADDING) on the current type 2 key; {floor: "ristretto255", n, batch} with the CPU µs of
// n times the scalar multiplications one type 5 batch of `batch` needs (see ristrettoFloor).
// "stop" closes the issuer and exits.

import { constants, createPrivateKey, privateDecrypt, randomBytes } from "node:crypto";
import { parseIssuerConfig } from "../issuer/config.js";
import { startIssuer } from "../issuer/main.js";
import type { IssuerKey } from "../issuer/key-store.js";
import { RISTRETTO255_SHA512 } from "../core/privacypass/oprf-suite.js";
import { randomScalar } from "../core/privacypass/voprf-batch.js";

const [dir, tokenType] = process.argv.slice(2);
if (dir === undefined || (tokenType !== "2" && tokenType !== "5")) {
  console.error("usage: tokens-issuer-child.js DIR 2|5");
  process.exit(2);
}
const config = parseIssuerConfig({
  listen: { host: "127.0.0.1", port: 0 },
  name: "issuer.example",
  keys: `${dir}/keys.json`,
  tokenTypes: [Number(tokenType)],
  maxBatchTokens: 100,
  attester: { kind: "credentials", credentials: ["bench-credential"], tokensPerWindow: 1e9, windowSec: 86_400, store: `sqlite:${dir}/quota.db` },
  logLevel: "info",
});
const issuer = await startIssuer(config, { handleSignals: false });

function currentKey(tokenType: number): IssuerKey {
  const now = issuer.keys.nowSec();
  const k = issuer.keys.published().find((key) => key.tokenType === tokenType && key.notBefore <= now);
  if (k === undefined) throw new Error(`no current key of type ${tokenType}`);
  return k;
}

function cpuUs(): number {
  const c = process.cpuUsage();
  return c.user + c.system;
}

/** CPU µs of `n` raw RSA private operations (the work of RSASP1 alone) on the issuer's type 2 key. */
function rsaFloor(n: number): number {
  const key = createPrivateKey({ key: Buffer.from(currentKey(2).privateKey.reveal()), format: "der", type: "pkcs8" });
  // Random 255-byte values (below any 2048-bit modulus), as blinded messages are.
  const inputs = Array.from({ length: 16 }, () => Buffer.concat([Buffer.of(0), randomBytes(255)]));
  const start = cpuUs();
  for (let i = 0; i < n; i++) privateDecrypt({ key, padding: constants.RSA_NO_PADDING }, inputs[i & 15]!);
  return cpuUs() - start;
}

/**
 * CPU µs of `n` times the scalar multiplications of one type 5 (VOPRF ristretto255) batch of
 * `batch` elements, with the suite the issuer uses (@noble/curves): `batch` evaluations k*C[i],
 * the composite M = sum d[i]*C[i] (one multi-scalar multiplication; one plain multiplication for
 * a batch of one), and the proof's Z = k*M, t3 = r*M, t2 = r*G. No hashing, no encoding.
 */
function ristrettoFloor(n: number, batch: number): number {
  const suite = RISTRETTO255_SHA512;
  const C = Array.from({ length: batch }, () => suite.generator.multiply(randomScalar(suite)));
  const d = C.map(() => randomScalar(suite));
  const k = randomScalar(suite);
  const start = cpuUs();
  for (let i = 0; i < n; i++) {
    for (const c of C) c.multiply(k);
    const r = randomScalar(suite);
    const M = batch === 1 ? C[0]!.multiply(d[0]!) : suite.msm(C, d);
    M.multiply(k);
    M.multiply(r);
    suite.generator.multiply(r);
  }
  return cpuUs() - start;
}

process.on("message", (m: string | { floor: "rsa" | "ristretto255"; n: number; batch?: number }) => {
  if (m === "cpu") process.send?.({ cpu: process.cpuUsage() });
  else if (m === "stop") void issuer.stop().then(() => process.exit(0));
  else if (typeof m === "object" && m.floor === "rsa") process.send?.({ floorUs: rsaFloor(m.n) });
  else if (typeof m === "object" && m.floor === "ristretto255") process.send?.({ floorUs: ristrettoFloor(m.n, m.batch ?? 1) });
});
process.send?.({ ready: true, port: issuer.port });
