// `npm run bench -- tokens [--rounds N] [--ms N]`: Privacy Pass token costs, each against its floor
// measured in the same run, with the stock @cloudflare/privacypass-ts figures beside them:
//   1. type 2 issuance signing (RFC 9474 BlindSign)   vs the raw RSA private operation
//   2. issuer CPU per token over HTTP, with the attester, at batch sizes 1, 8 and 32 (types 2
//      and 5)                                      vs the raw RSA private operation / the
//                                                     scalar multiplications of VOPRF ristretto255
//   3. type 2 token verification                      vs node:crypto RSA-PSS verify
//   4. type 1 token verification                      vs one @noble/curves P-384 hash-to-curve
//                                                        plus one node:crypto P-384 ECDH
// Fast variants run interleaved in short rounds (other processes share the cores); medians of the
// per-round ratios are printed. Stock variants are hundreds of times slower and run a few times.

import { constants, createECDH, createPublicKey, privateDecrypt, randomBytes, verify, webcrypto, type KeyObject } from "node:crypto";
import { p384_hasher } from "@noble/curves/nist.js";
import { Token as PpToken, TOKEN_TYPES, privateVerif, publicVerif } from "@cloudflare/privacypass-ts";
import { exactCopy } from "../core/bytes.js";
import { createTokenRequest, decodeToken, decodeTokenRequest, encodeAuthenticatorInput, encodeTokenChallenge, encodeTokenRequest, rsaSpkiFromRsaPssSpki } from "../core/privacypass/index.js";
import { importBlindRsaTokenKey, importVoprfPrivateKey, verifyToken } from "../core/privacypass/verify-node.js";
import { HASH_TO_GROUP_DST, deriveKeyPair } from "../core/privacypass/voprf.js";
import { generateRsa2048 } from "../issuer/key-store.js";
import { createBlindRsaSigner, createVoprfSigner, signTokenRequest } from "../issuer/signer.js";
import { runTokensGateway } from "./tokens-gateway.js";
import { runTokensIssuer } from "./tokens-issuer.js";
import { median, numberArg } from "./args.js";

// ---- measurement -----------------------------------------------------------------------------

async function timeFor(ms: number, op: () => unknown): Promise<number> {
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now - start < ms) {
    for (let i = 0; i < 4; i++) await op();
    n += 4;
    now = performance.now();
  }
  return ((now - start) * 1000) / n;
}

async function timeN(n: number, op: () => unknown): Promise<number> {
  await op();
  const start = performance.now();
  for (let i = 0; i < n; i++) await op();
  return ((performance.now() - start) * 1000) / n;
}



type Op = () => unknown;
interface Variant {
  name: string;
  op: Op;
}

/** Runs the variants interleaved; the LAST one is the floor. Prints medians and ratios. */
async function compare(title: string, variants: Variant[], stock: { name: string; op: Op; n: number }[], rounds: number, ms: number): Promise<void> {
  const results = variants.map(() => [] as number[]);
  for (const v of variants) await timeFor(50, v.op);
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < variants.length; k++) results[k]!.push(await timeFor(ms, variants[k]!.op));
  }
  const floorIdx = variants.length - 1;
  const floorUs = median(results[floorIdx]!);
  console.log(`\n${title}`);
  for (let k = 0; k < variants.length; k++) {
    const us = median(results[k]!);
    const ratio = median(results[k]!.map((x, r) => x / results[floorIdx]![r]!));
    console.log(`  ${variants[k]!.name.padEnd(46)} ${fmt(us)}  ${ratio.toFixed(2).padStart(7)}x floor`);
  }
  for (const s of stock) {
    const us = await timeN(s.n, s.op);
    console.log(`  ${s.name.padEnd(46)} ${fmt(us)}  ${(us / floorUs).toFixed(1).padStart(7)}x floor  (n=${s.n})`);
  }
}

const fmt = (us: number): string => (us >= 1000 ? `${(us / 1000).toFixed(2).padStart(8)} ms` : `${us.toFixed(1).padStart(8)} µs`);

// ---- run -------------------------------------------------------------------------------------

export async function run(args: string[]): Promise<void> {
  const rounds = numberArg(args, "--rounds", 9);
  const ms = numberArg(args, "--ms", 120);
  const stockRuns = numberArg(args, "--stock-runs", 3);
  console.log(`tokens: medians of ${rounds} interleaved rounds of ${ms} ms per variant (Node ${process.version})`);

  const challenge2 = encodeTokenChallenge({ tokenType: 2, issuerName: "issuer.example", redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] });
  const challenge1 = encodeTokenChallenge({ tokenType: 1, issuerName: "issuer.example", redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] });

  // Type 2 key material.
  const rsaKey: KeyObject = await generateRsa2048();
  const signer = createBlindRsaSigner(rsaKey);
  const requests: Uint8Array[] = [];
  const pendings = [];
  for (let i = 0; i < 16; i++) {
    const p = await createTokenRequest(challenge2, signer.tokenKey);
    pendings.push(p);
    requests.push(p.request);
  }
  const blinded = requests.map((r) => decodeTokenRequest(r).blindedMsg);
  let i = 0;
  const nextBlinded = (): Uint8Array => blinded[i++ & 15]!;

  // 1. Signing.
  const stockIssuerKey = await webcrypto.subtle.importKey("pkcs8", rsaKey.export({ format: "der", type: "pkcs8" }), { name: "RSA-PSS", hash: "SHA-384" }, true, ["sign"]);
  const stockPub = await webcrypto.subtle.importKey("spki", rsaSpkiFromRsaPssSpki(signer.tokenKey), { name: "RSA-PSS", hash: "SHA-384" }, true, ["verify"]);
  const stockIssuer = new publicVerif.Issuer(publicVerif.BlindRSAMode.PSS, "issuer.example", stockIssuerKey, stockPub);
  const stockReq = publicVerif.TokenRequest.deserialize(TOKEN_TYPES.BLIND_RSA, exactCopy(requests[0]!));
  await compare(
    "1. type 2 issuance: BlindSign of one 256-byte blinded message",
    [
      { name: "veil (node:crypto CRT + range + RSAVP1 checks)", op: () => signer.sign(nextBlinded()) },
      { name: "floor: raw RSA private op (privateDecrypt)", op: () => privateDecrypt({ key: rsaKey, padding: constants.RSA_NO_PADDING }, nextBlinded()) },
    ],
    [{ name: "stock privacypass-ts Issuer.issue (blindrsa-ts)", op: () => stockIssuer.issue(stockReq), n: stockRuns }],
    rounds,
    ms,
  );

  // 2. Issuer CPU per token over HTTP with the attester, batch sizes 1, 8 and 32, types 2 and 5
  //    (bench/tokens-issuer.ts; alone: `npm run bench -- tokens-issuer`).
  console.log("\n2. issuance over HTTP: issuer CPU per token vs the floor of its crypto");
  await runTokensIssuer(args);

  // 3. Type 2 verification.
  const tokens2: Uint8Array[] = [];
  for (const p of pendings) tokens2.push(await p.finalize(signTokenRequest(signer, decodeTokenRequest(p.request))));
  const vkey = importBlindRsaTokenKey(signer.tokenKey);
  const pub = createPublicKey(rsaKey);
  const decoded2 = tokens2.map(decodeToken);
  const inputs2 = decoded2.map((t) => encodeAuthenticatorInput(t));
  for (const t of decoded2) if (!verifyToken(t, vkey)) throw new Error("type 2 token does not verify");
  let t2 = 0;
  const stockOrigin = new publicVerif.Origin(publicVerif.BlindRSAMode.PSS, ["leader.example"]);
  const stockTokens2 = tokens2.map((t) => PpToken.deserialize(TOKEN_TYPES.BLIND_RSA, exactCopy(t)));
  await compare(
    "3. type 2 verification of one token",
    [
      { name: "veil (decode + key id check + RSA-PSS verify)", op: () => verifyToken(decodeToken(tokens2[t2++ & 15]!), vkey) },
      {
        name: "floor: node:crypto RSA-PSS verify",
        op: () => {
          const k = t2++ & 15;
          return verify("sha384", inputs2[k]!, { key: pub, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 }, decoded2[k]!.authenticator);
        },
      },
    ],
    [{ name: "stock privacypass-ts Origin.verify (WebCrypto)", op: () => stockOrigin.verify(stockTokens2[t2++ & 15]!, stockPub), n: 200 }],
    rounds,
    ms,
  );

  // 4. Type 1 verification.
  const { skS } = deriveKeyPair(new Uint8Array(randomBytes(32)));
  const vsigner = createVoprfSigner(skS);
  const tokens1: Uint8Array[] = [];
  for (let j = 0; j < 8; j++) {
    const p = await createTokenRequest(challenge1, vsigner.tokenKey);
    tokens1.push(await p.finalize(signTokenRequest(vsigner, decodeTokenRequest(p.request))));
  }
  const vkey1 = importVoprfPrivateKey(skS);
  const decoded1 = tokens1.map(decodeToken);
  for (const t of decoded1) if (!verifyToken(t, vkey1)) throw new Error("type 1 token does not verify");
  const inputs1 = decoded1.map((t) => encodeAuthenticatorInput(t));
  const ecdh = createECDH("secp384r1");
  ecdh.setPrivateKey(Buffer.from(skS));
  let t1 = 0;
  const stockTokens1 = tokens1.map((t) => PpToken.deserialize(TOKEN_TYPES.VOPRF, exactCopy(t)));
  await compare(
    "4. type 1 verification of one token",
    [
      { name: "veil (noble hash-to-curve + OpenSSL ECDH, 2 finalize hashes, a 2nd ECDH for the y parity)", op: () => verifyToken(decodeToken(tokens1[t1++ & 7]!), vkey1) },
      {
        name: "floor: noble P-384 hash-to-curve + node ECDH",
        op: () => ecdh.computeSecret(uncompressed(p384_hasher.hashToCurve(inputs1[t1++ & 7]!, { DST: HASH_TO_GROUP_DST }))),
      },
    ],
    [{ name: "stock privacypass-ts verifyToken (voprf-ts sjcl)", op: () => privateVerif.verifyToken(stockTokens1[t1++ & 7]!, skS), n: Math.max(5, stockRuns * 3) }],
    rounds,
    ms,
  );

  // For information: type 1 issuance (BlindEvaluate + DLEQ proof).
  const req1 = decodeTokenRequest((await createTokenRequest(challenge1, vsigner.tokenKey)).request);
  const stockV = new privateVerif.Issuer("issuer.example", skS, vsigner.tokenKey);
  const stockReq1 = privateVerif.TokenRequest.deserialize(encodeTokenRequest(req1));
  const oursUs = await timeN(10, () => signTokenRequest(vsigner, req1));
  const stockUs = await timeN(stockRuns, () => stockV.issue(stockReq1));
  console.log(`\n(type 1 issuance, BlindEvaluate + DLEQ proof: veil ${fmt(oursUs)}, stock privacypass-ts ${fmt(stockUs)})`);

  // 5. The gateway's CPU per tokened upload vs a bare proxy (bench/tokens-gateway.ts; alone:
  //    `npm run bench -- tokens-gateway --store all`). --no-gateway skips it.
  if (!args.includes("--no-gateway")) {
    console.log("\n5. gateway CPU per tokened upload (SQLite store) vs a bare proxy");
    await runTokensGateway([]);
  }
}

/** The hasher returns p384.Point instances, typed as its narrower H2CPoint. */
function uncompressed(p: unknown): Uint8Array {
  return (p as { toBytes(compressed: boolean): Uint8Array }).toBytes(false);
}
