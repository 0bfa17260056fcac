// `npm run bench -- token-client [--rounds N] [--ms N] [--stock N]`: client-side cost of one type 2
// (Blind RSA 2048) token, createTokenRequest + finalize (RFC 9474 Blind, Finalize with its
// RSASSA-PSS-VERIFY), Veil's native-BigInt client against the stock @cloudflare/privacypass-ts
// Client (blindrsa-ts, sjcl) in the same run, and against a node:crypto floor (two raw RSA public
// operations: r^e for the blind and s^e for the verify). The issuer's signing (node:crypto) runs
// between the two client steps and is not counted. Veil and the floor run interleaved in short
// rounds (medians of the rounds); the stock client is far slower and runs a few times per round.

import { constants, createPublicKey, publicEncrypt, randomBytes, type KeyObject } from "node:crypto";
import { publicVerif, TokenChallenge as PpTokenChallenge } from "@cloudflare/privacypass-ts";
import { exactCopy } from "../core/bytes.js";
import { createTokenRequest, decodeTokenRequest, encodeTokenChallenge } from "../core/privacypass/index.js";
import { generateRsa2048 } from "../issuer/key-store.js";
import { createBlindRsaSigner, signTokenRequest } from "../issuer/signer.js";
import { median, numberArg } from "./args.js";



/** Runs `one` repeatedly for about `ms` (or `n` times); returns the mean client-side ms per token. */
async function measure(one: () => Promise<number>, opts: { ms?: number; n?: number }): Promise<number> {
  let clientMs = 0;
  let count = 0;
  const start = performance.now();
  while (opts.n !== undefined ? count < opts.n : performance.now() - start < opts.ms!) {
    clientMs += await one();
    count++;
  }
  return clientMs / count;
}

export async function run(args: string[]): Promise<void> {
  const rounds = numberArg(args, "--rounds", 5);
  const ms = numberArg(args, "--ms", 400);
  const stockRuns = numberArg(args, "--stock", 6);
  console.log(`token-client: type 2 createTokenRequest + finalize, medians of ${rounds} rounds (Node ${process.version})`);

  const rsaKey: KeyObject = await generateRsa2048();
  const signer = createBlindRsaSigner(rsaKey);
  const challenge = encodeTokenChallenge({ tokenType: 2, issuerName: "issuer.example", redemptionContext: new Uint8Array(32), originInfo: ["leader.example"] });

  const veil = async (): Promise<number> => {
    const t0 = performance.now();
    const pending = await createTokenRequest(challenge, signer.tokenKey);
    const t1 = performance.now();
    const response = signTokenRequest(signer, decodeTokenRequest(pending.request));
    const t2 = performance.now();
    await pending.finalize(response);
    return t1 - t0 + (performance.now() - t2);
  };

  const stockChallenge = PpTokenChallenge.deserialize(exactCopy(challenge));
  const stock = async (): Promise<number> => {
    const t0 = performance.now();
    const client = new publicVerif.Client(publicVerif.BlindRSAMode.PSS);
    const req = await client.createTokenRequest(stockChallenge, exactCopy(signer.tokenKey));
    const t1 = performance.now();
    const response = signTokenRequest(signer, decodeTokenRequest(req.serialize()));
    const t2 = performance.now();
    await client.finalize(client.deserializeTokenResponse(response));
    return t1 - t0 + (performance.now() - t2);
  };

  const publicKey = createPublicKey(rsaKey);
  const floor = async (): Promise<number> => {
    const t0 = performance.now();
    const x = randomBytes(256);
    x[0] = 0; // below n
    publicEncrypt({ key: publicKey, padding: constants.RSA_NO_PADDING }, x);
    publicEncrypt({ key: publicKey, padding: constants.RSA_NO_PADDING }, x);
    return Promise.resolve(performance.now() - t0);
  };

  // Warm up every variant (JIT, key imports).
  await measure(veil, { n: 10 });
  await measure(stock, { n: 2 });
  await measure(floor, { n: 50 });

  const results = { veil: [] as number[], stock: [] as number[], floor: [] as number[], ratio: [] as number[] };
  for (let r = 0; r < rounds; r++) {
    const v = await measure(veil, { ms });
    const s = await measure(stock, { n: stockRuns });
    const f = await measure(floor, { ms: ms / 4 });
    results.veil.push(v);
    results.stock.push(s);
    results.floor.push(f);
    results.ratio.push(s / v);
    console.log(`  round ${r + 1}: veil ${v.toFixed(3)} ms, stock ${s.toFixed(1)} ms, floor ${f.toFixed(3)} ms`);
  }
  const v = median(results.veil);
  const s = median(results.stock);
  const f = median(results.floor);
  console.log(`veil client (native BigInt RSABSSA)      ${v.toFixed(3)} ms/token  (${(1000 / v).toFixed(0)} tokens/s on one core)`);
  console.log(`stock privacypass-ts Client (blindrsa-ts) ${s.toFixed(1)} ms/token  (${(1000 / s).toFixed(1)} tokens/s)`);
  console.log(`floor: 2 raw RSA public ops (node:crypto) ${f.toFixed(3)} ms`);
  console.log(`ratio stock/veil: ${median(results.ratio).toFixed(1)}x   veil/floor: ${(v / f).toFixed(1)}x`);
}
