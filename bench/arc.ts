// `npm run bench -- arc [--rounds N] [--limit N]`: ARC(P-256) CPU costs against their floor, all
// measured in this run with process.cpuUsage (CPU time per operation; the machine is shared):
//   1. presentation creation (client)       vs the same number of P-256 scalar multiplications
//   2. presentation verification (gateway)     (by base: G, H, other points; constant-time or
//                                               not as Veil does them) and point additions, done
//                                               with @noble/curves
//   3. gate CPU per ARC upload (token check)  vs a type 2 upload's (RSA-PSS verify): the rest of
//                                               the upload path (OHTTP, forwarding) is the same
// The operation counts are taken from one instrumented run of each operation.

import { generateKeyPairSync, createHash, randomBytes, sign, constants } from "node:crypto";
import { p256 } from "@noble/curves/nist.js";
import { encodeTokenChallenge } from "../core/privacypass/index.js";
import { importBlindRsaTokenKey, verifyToken } from "../core/privacypass/verify-node.js";
import { encodeAuthenticatorInput, type Token } from "../core/privacypass/token.js";
import { rsaPssSpkiFromRsaSpki, tokenKeyId } from "../core/privacypass/token-key.js";
import {
  createCredentialRequest,
  createCredentialResponse,
  encodeArcToken,
  encodeServerPublicKey,
  finalizeCredential,
  generatorG,
  generatorH,
  issuerKeyId,
  ORDER,
  presentationContext,
  presentationContexts,
  PresentationState,
  requestContext,
  setupServer,
  verifyPresentation,
  type Point,
} from "../core/privacypass/arc/index.js";
import { ArcVerifier, type ArcIssuer } from "../gateway/arc-verifier.js";
import { contextPrf } from "../gateway/gate.js";
import { intArg, median } from "./args.js";

type Kind = "G" | "H" | "var";
interface Counts {
  mul: Record<Kind, number>;
  mulUnsafe: Record<Kind, number>;
  add: number;
}

const proto = p256.Point.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;

/** Counts the top-level multiplications (by base) and additions `op` makes. */
function countOps(op: () => void): Counts {
  const c: Counts = { mul: { G: 0, H: 0, var: 0 }, mulUnsafe: { G: 0, H: 0, var: 0 }, add: 0 };
  const orig = { multiply: proto.multiply!, multiplyUnsafe: proto.multiplyUnsafe!, add: proto.add! };
  let depth = 0;
  const kind = (p: unknown): Kind => (p === generatorG ? "G" : p === generatorH ? "H" : "var");
  const wrap = (name: "multiply" | "multiplyUnsafe", table: Record<Kind, number>) =>
    function (this: unknown, ...a: unknown[]): unknown {
      if (depth === 0) table[kind(this)]++;
      depth++;
      try {
        return orig[name].apply(this, a);
      } finally {
        depth--;
      }
    };
  proto.multiply = wrap("multiply", c.mul);
  proto.multiplyUnsafe = wrap("multiplyUnsafe", c.mulUnsafe);
  proto.add = function (this: unknown, ...a: unknown[]): unknown {
    if (depth === 0) c.add++;
    depth++;
    try {
      return orig.add.apply(this, a);
    } finally {
      depth--;
    }
  };
  try {
    op();
  } finally {
    Object.assign(proto, orig);
  }
  return c;
}

function randomScalar(): bigint {
  return BigInt(`0x${randomBytes(40).toString("hex")}`) % (ORDER - 1n) + 1n;
}

/** The floor: the same multiplications (same bases and kind) and additions with @noble/curves. */
function floorOp(c: Counts): () => void {
  const points: Point[] = Array.from({ length: 8 }, () => generatorG.multiply(randomScalar()));
  const scalars = Array.from({ length: 64 }, randomScalar);
  let i = 0;
  const base = (k: Kind): Point => (k === "G" ? generatorG : k === "H" ? generatorH : points[i++ % points.length]!);
  return () => {
    let acc = points[0]!;
    for (const k of ["G", "H", "var"] as const) {
      for (let n = 0; n < c.mul[k]; n++) acc = base(k).multiply(scalars[i++ % 64]!);
      for (let n = 0; n < c.mulUnsafe[k]; n++) acc = base(k).multiplyUnsafe(scalars[i++ % 64]!);
    }
    for (let n = 0; n < c.add; n++) acc = acc.add(points[n % points.length]!);
  };
}

function cpuUs(op: () => void, n: number): number {
  const start = process.cpuUsage();
  for (let i = 0; i < n; i++) op();
  const d = process.cpuUsage(start);
  return (d.user + d.system) / n;
}

function describe(c: Counts): string {
  return `${c.mul.G + c.mul.H + c.mul.var} constant-time mults (G ${c.mul.G}, H ${c.mul.H}, other ${c.mul.var}), ${c.mulUnsafe.G + c.mulUnsafe.H + c.mulUnsafe.var} variable-time mults (G ${c.mulUnsafe.G}, H ${c.mulUnsafe.H}, other ${c.mulUnsafe.var}), ${c.add} adds`;
}

export async function run(args: string[]): Promise<void> {
  const rounds = intArg(args, "rounds", 5);
  const limit = intArg(args, "limit", 100);
  const perRound = 4;
  // One issuer key, one credential, a challenge of the gate's shape.
  const now = Date.now();
  const { privateKey, publicKey } = setupServer();
  const tokenKey = encodeServerPublicKey(publicKey);
  const keyId = issuerKeyId(tokenKey);
  const issuer: ArcIssuer = {
    name: "issuer.example",
    rateLimit: limit,
    keyLifetimeSec: 7 * 86_400,
    redemptionContext: "epoch",
    credentialContext: "none",
    keys: () => [{ keyId, notBeforeSec: Math.floor(now / 1000) - 60, tokenKey, privateKey, publicKey }],
  };
  const verifier = new ArcVerifier([issuer], { prf: (d) => contextPrf(undefined, d), epochSec: 86_400 });
  const challengeBytes = verifier.challenges(["leader.example"], "task", now)[0]!.challenge;
  const { decodeTokenChallenge } = await import("../core/privacypass/index.js");
  const challenge = decodeTokenChallenge(challengeBytes);
  const { clientSecrets, request } = createCredentialRequest(requestContext(challenge, keyId));
  const credential = finalizeCredential(clientSecrets, publicKey, request, createCredentialResponse(privateKey, publicKey, request));
  const pctx = presentationContext(challenge, keyId);
  const contexts = presentationContexts(requestContext(challenge, keyId), pctx);
  const digest = new Uint8Array(createHash("sha256").update(challengeBytes).digest());
  let state = new PresentationState(credential, pctx, limit);
  const present = (): ReturnType<PresentationState["present"]> => {
    if (state.remaining === 0) state = new PresentationState(credential, pctx, limit);
    return state.present();
  };
  const sample = present().presentation;
  const tokens = Array.from({ length: perRound }, () => {
    const { nonce, presentation } = present();
    return encodeArcToken({ presentationNonce: nonce, challengeDigest: digest, issuerKeyId: keyId, presentation });
  });

  const presentCounts = countOps(() => void present());
  const verifyCounts = countOps(() => void verifyPresentation(privateKey, publicKey, contexts, sample, limit));
  const presentFloor = floorOp(presentCounts);
  const verifyFloor = floorOp(verifyCounts);

  // Type 2 token verification (the gate's work for a type 2 upload).
  const { publicKey: rsaPub, privateKey: rsaPriv } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const spki = rsaPssSpkiFromRsaSpki(new Uint8Array(rsaPub.export({ format: "der", type: "spki" })));
  const t2challenge = encodeTokenChallenge({ tokenType: 2, issuerName: "issuer.example", redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] });
  const t2: Omit<Token, "authenticator"> = {
    tokenType: 2,
    nonce: new Uint8Array(randomBytes(32)),
    challengeDigest: new Uint8Array(createHash("sha256").update(t2challenge).digest()),
    tokenKeyId: tokenKeyId(spki),
  };
  const authenticator = new Uint8Array(sign("sha384", encodeAuthenticatorInput(t2), { key: rsaPriv, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 }));
  const t2key = importBlindRsaTokenKey(spki);
  const t2token: Token = { ...t2, authenticator };
  if (!verifyToken(t2token, t2key)) throw new Error("type 2 token does not verify");

  console.log(`ARC(P-256), rate limit ${limit} (${sample.D.length} bit commitments), CPU time per operation, ${rounds} rounds`);
  console.log(`  presentation: ${describe(presentCounts)}`);
  console.log(`  verification: ${describe(verifyCounts)}`);
  const r = { present: [] as number[], verify: [] as number[], gate: [] as number[], us: { present: [] as number[], pf: [] as number[], verify: [] as number[], vf: [] as number[], arc: [] as number[], t2: [] as number[] } };
  let k = 0;
  for (let round = 0; round < rounds; round++) {
    const p = cpuUs(() => void present(), perRound);
    const pf = cpuUs(presentFloor, perRound);
    const v = cpuUs(() => void verifyPresentation(privateKey, publicKey, contexts, sample, limit), perRound);
    const vf = cpuUs(verifyFloor, perRound);
    const arc = cpuUs(() => {
      try {
        verifier.verify(tokens[k++ % tokens.length]!, ["leader.example"], "task", now);
      } catch (e) {
        throw new Error("ARC token refused", { cause: e });
      }
    }, perRound);
    const t2us = cpuUs(() => void verifyToken(t2token, t2key), 200);
    r.present.push(p / pf);
    r.verify.push(v / vf);
    r.gate.push(arc / t2us);
    Object.entries({ present: p, pf, verify: v, vf, arc, t2: t2us }).forEach(([name, x]) => r.us[name as keyof typeof r.us].push(x));
  }
  const ms = (xs: number[]): string => `${(median(xs) / 1000).toFixed(2)} ms`;
  console.log(`  presentation creation ${ms(r.us.present)} vs floor ${ms(r.us.pf)}: ${median(r.present).toFixed(2)}x`);
  console.log(`  presentation verification ${ms(r.us.verify)} vs floor ${ms(r.us.vf)}: ${median(r.verify).toFixed(2)}x (target <= 1.5x)`);
  console.log(`  gate token check per upload: ARC ${ms(r.us.arc)} vs type 2 ${ms(r.us.t2)}: ${median(r.gate).toFixed(1)}x`);
}
