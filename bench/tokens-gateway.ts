// `npm run bench -- tokens-gateway [--requests N] [--concurrency C] [--rounds R] [--store sqlite|memory|redis|all] [--per-round] [--perf]`
//
// CPU time per TOKENED upload of the Veil gateway (decapsulate, decode, policy, token gate: parse,
// key lookup, challenge digest, RSA-PSS verify, nonce reservation and commit in the store; forward,
// encapsulate, log, metrics) against its peer: the bare fastify + undici pass-through proxy of
// bench/gateway.ts forwarding the same DAP-09 upload in the clear (no token, no OHTTP). For
// reference, the same gateway without tokens, so the gate's own share is visible. Each server runs
// in its own child process and reports process.cpuUsage(); neither the load generator, the client
// side (token signing, sealing) nor the upstream is counted. With Redis, the Redis server's own
// CPU is not counted either (it is another machine in a deployment). Target: <= 3x.
//
// Also exported as runTokensGateway(args) so bench/tokens.ts can include it.

import { fork, spawn, type ChildProcess } from "node:child_process";
import { constants, createHash, generateKeyPairSync, randomBytes, sign, verify, type KeyObject } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Pool } from "undici";
import { decodeResponse, encodeRequest, type Field } from "../core/bhttp/index.js";
import { fromHex, toBase64Url } from "../core/bytes.js";
import { decodeKeyConfig, encapsulateRequest, type KeyConfig } from "../core/ohttp/index.js";
import type { BhttpRequest } from "../core/bhttp/index.js";
import type { NonceStore } from "../core/privacypass/nonce-store.js";
import { TokenGate } from "../gateway/gate.js";
import { TokenKeyDirectory } from "../gateway/issuer-directory.js";
import { openNonceStore } from "../gateway/nonce-stores/index.js";
import { checkPolicy, compileTargets, resolveTarget } from "../gateway/policy.js";
import {
  encodeAuthenticatorInput,
  encodeToken,
  encodeTokenChallenge,
  formatAuthorization,
  rsaPssSpkiFromRsaSpki,
  tokenKeyId,
} from "../core/privacypass/index.js";
import { intArg } from "./args.js";
import { PERF_NODE_FLAGS, breakdownTable, recordPerf, type Breakdown } from "./cpu-breakdown.js";
import { logFileFor } from "./stack.js";

interface Ready {
  ready: true;
  port: number;
  keyConfig?: string;
}


/** A server child; its log (stdout) goes to `logFd`, as a deployment writes it to a file. */
function startChild(script: string, argv: string[], logFd: number, execArgv: string[]): Promise<{ child: ChildProcess; ready: Ready }> {
  const child = fork(fileURLToPath(new URL(script, import.meta.url)), argv, { stdio: ["ignore", logFd, "inherit", "ipc"], execArgv });
  return new Promise((resolve, reject) => {
    child.once("message", (m) => resolve({ child, ready: m as Ready }));
    child.once("exit", (code) => reject(new Error(`${script} exited with ${code}`)));
  });
}

function cpuOf(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    child.once("message", (m) => {
      const c = (m as { cpu: NodeJS.CpuUsage }).cpu;
      resolve(c.user + c.system);
    });
    child.send("cpu");
  });
}

interface Req {
  method: "POST" | "PUT";
  path: string;
  headers: Record<string, string>;
  body: Uint8Array;
}

async function drive(pool: Pool, concurrency: number, make: () => Req, n: number, check?: (i: number, body: Uint8Array) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      const r = make();
      const res = await pool.request({ method: r.method, path: r.path, headers: r.headers, body: Buffer.from(r.body) });
      const body = new Uint8Array(await res.body.arrayBuffer());
      if (res.statusCode >= 300) throw new Error(`request ${i}: status ${res.statusCode}`);
      if (check !== undefined) await check(i, body);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A Redis as the gateway's store requires it (append-only file, no eviction), its files in `dir`. */
async function startRedisServer(dir: string): Promise<{ url: string; stop(): Promise<void> }> {
  const probe = createServer();
  const port = Number(new URL(await listen(probe)).port);
  await new Promise((r) => probe.close(r));
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction", "--dir", dir];
  const child = spawn("redis-server", args, { stdio: "ignore" });
  await new Promise((r) => setTimeout(r, 300));
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: async () => {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

/**
 * The gate alone, in this process: CPU per admit + settle(reached) of a fresh token (parse, key
 * lookup, challenge digest, RSA-PSS verify, reserve, commit), against its floor: one node:crypto
 * RSA-PSS verify plus one SHA-256 of the request.
 */
async function measureGateAlone(
  store: NonceStore,
  o: { directoryUrl: string; mint: () => string; publicKey: KeyObject; signed: { msg: Uint8Array; sig: Uint8Array }; n: number },
): Promise<{ gate: number; floor: number }> {
  const directory = new TokenKeyDirectory([{ name: "issuer.example", directory: o.directoryUrl, keyLifetimeSec: 86_400 }]);
  await directory.start();
  const gate = new TokenGate({}, { directory, store });
  const table = compileTargets({ "https://leader.example": "http://127.0.0.1:1" });
  const taskId = toBase64Url(new Uint8Array(randomBytes(32)), false);
  const body = new Uint8Array(randomBytes(230));
  const warm = 500;
  const inputs = Array.from({ length: o.n + warm }, () => {
    const request: BhttpRequest = {
      method: "PUT",
      scheme: "https",
      authority: "leader.example",
      path: `/tasks/${taskId}/reports`,
      headers: [["content-type", "application/dap-report"], ["authorization", o.mint()]],
      body,
      trailers: [],
    };
    const target = resolveTarget(table, request);
    return { request, target, route: checkPolicy("dap", "PUT", target), taskId };
  });
  const { msg, sig } = o.signed;
  // One event-loop turn per upload, as in a server (each request is its own I/O): without it the
  // loop would run on promise jobs alone and a store that writes at the end of a turn (SQLite's
  // commits) would write nothing until the segment ends.
  const once = async (i: number): Promise<void> => {
    await (await gate.admit(inputs[i]!)).settle(true);
    await new Promise((r) => setImmediate(r));
  };
  const floorOnce = (): void => {
    verify("sha384", msg, { key: o.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 }, sig);
    createHash("sha256").update(body).digest();
  };
  for (let i = 0; i < warm; i++) {
    await once(i);
    floorOnce();
  }
  // Five interleaved segments; the fastest segment of each counts (the machine is shared: noise
  // only ever adds time).
  const segment = Math.floor(o.n / 5);
  let gateUs = Infinity;
  let floorUs = Infinity;
  for (let k = 0; k < 5; k++) {
    let c0 = process.cpuUsage();
    for (let i = warm + k * segment; i < warm + (k + 1) * segment; i++) await once(i);
    let c = process.cpuUsage(c0);
    gateUs = Math.min(gateUs, (c.user + c.system) / segment);
    c0 = process.cpuUsage();
    for (let i = 0; i < segment; i++) floorOnce();
    c = process.cpuUsage(c0);
    floorUs = Math.min(floorUs, (c.user + c.system) / segment);
  }
  await gate.close();
  return { gate: gateUs, floor: floorUs };
}

/** One store's measurement: µs CPU per upload of the tokened gateway, the plain gateway and the peer. */
async function measure(
  store: string,
  o: { requests: number; concurrency: number; rounds: number; upstreamUrl: string; directoryUrl: string; mint: () => string; perRound: boolean; dir: string; perf: boolean },
): Promise<{ tokened: number; plain: number; peer: number; wallTokened: number; medianRatio: number; parts?: string }> {
  const execArgv = o.perf ? PERF_NODE_FLAGS : [];
  const tk = await startChild("./tokens-gateway-child.js", [o.upstreamUrl, o.directoryUrl, store], logFileFor(o.dir, "tokened"), execArgv);
  const gw = await startChild("./gateway-child.js", ["gateway", o.upstreamUrl], logFileFor(o.dir, "gateway"), execArgv);
  const px = await startChild("./gateway-child.js", ["proxy", o.upstreamUrl], logFileFor(o.dir, "proxy"), execArgv);
  const pools = [tk, gw, px].map((c) => new Pool(`http://127.0.0.1:${c.ready.port}`, { connections: o.concurrency }));
  const [tkPool, gwPool, pxPool] = pools as [Pool, Pool, Pool];
  const tkConfig: KeyConfig = decodeKeyConfig(fromHex(tk.ready.keyConfig!));
  const gwConfig: KeyConfig = decodeKeyConfig(fromHex(gw.ready.keyConfig!));

  // A DAP-09 Prio3Count report is 230 bytes; its content does not matter to the gateway.
  const taskId = toBase64Url(new Uint8Array(randomBytes(32)), false);
  const report = new Uint8Array(randomBytes(230));
  const path = `/tasks/${taskId}/reports`;
  // Warm-up: enough for the JIT of all three servers to settle (fewer shows a falling trend).
  const warm = 1500;
  const total = o.requests * (o.rounds + (o.perf ? 1 : 0)) + warm;

  // Client side, not measured: one fresh token and one sealed request per upload.
  process.stdout.write(`  [${store}] minting and sealing ${total} tokened and ${total} plain requests...\n`);
  const seal = async (config: KeyConfig, headers: Field[]) => {
    const inner = encodeRequest({ method: "PUT", scheme: "https", authority: "leader.example", path, headers, body: report, trailers: [] });
    const { encapsulated, response } = await encapsulateRequest(config, inner);
    return { body: encapsulated, open: (b: Uint8Array) => response.decapsulateResponse(b) };
  };
  const tokened: Awaited<ReturnType<typeof seal>>[] = [];
  const plain: Awaited<ReturnType<typeof seal>>[] = [];
  for (let i = 0; i < total; i++) {
    tokened.push(await seal(tkConfig, [["content-type", "application/dap-report"], ["authorization", o.mint()]]));
    plain.push(await seal(gwConfig, [["content-type", "application/dap-report"]]));
  }
  let tkCursor = 0;
  let gwCursor = 0;
  const tkReq = (): Req => ({ method: "POST", path: "/gateway", headers: { "content-type": "message/ohttp-req" }, body: tokened[tkCursor++]!.body });
  const gwReq = (): Req => ({ method: "POST", path: "/gateway", headers: { "content-type": "message/ohttp-req" }, body: plain[gwCursor++]!.body });
  const pxReq = (): Req => ({ method: "PUT", path, headers: { "content-type": "application/dap-report" }, body: report });
  let tkBase = 0;
  // Every 50th tokened answer is opened: the token must have been accepted (the upstream's 201).
  const tkCheck = async (i: number, body: Uint8Array): Promise<void> => {
    if (i % 50 !== 0) return;
    const res = decodeResponse(await tokened[tkBase + i]!.open(body));
    if (res.status !== 201) throw new Error(`tokened gateway answered ${res.status} inside`);
  };

  tkBase = tkCursor;
  await drive(tkPool, o.concurrency, tkReq, warm, tkCheck);
  await drive(gwPool, o.concurrency, gwReq, warm);
  await drive(pxPool, o.concurrency, pxReq, warm);

  // Per round and server: CPU µs. The order of the three servers rotates from round to round, so
  // that none always runs first after the client-side work (or always next to a noisy neighbour).
  const perRound: { tk: number; gw: number; px: number }[] = [];
  let tkWall = 0;
  const phases = {
    tk: async (): Promise<number> => {
      const c0 = await cpuOf(tk.child);
      const t0 = performance.now();
      tkBase = tkCursor;
      await drive(tkPool, o.concurrency, tkReq, o.requests, tkCheck);
      tkWall += performance.now() - t0;
      return (await cpuOf(tk.child)) - c0;
    },
    gw: async (): Promise<number> => {
      const c0 = await cpuOf(gw.child);
      await drive(gwPool, o.concurrency, gwReq, o.requests);
      return (await cpuOf(gw.child)) - c0;
    },
    px: async (): Promise<number> => {
      const c0 = await cpuOf(px.child);
      await drive(pxPool, o.concurrency, pxReq, o.requests);
      return (await cpuOf(px.child)) - c0;
    },
  };
  const order: ("tk" | "gw" | "px")[] = ["tk", "gw", "px"];
  for (let r = 0; r < o.rounds; r++) {
    const round = { tk: 0, gw: 0, px: 0 };
    for (let k = 0; k < 3; k++) {
      const which = order[(r + k) % 3]!;
      round[which] = await phases[which]();
    }
    perRound.push(round);
  }
  const tkCpu = perRound.reduce((a, x) => a + x.tk, 0);
  const gwCpu = perRound.reduce((a, x) => a + x.gw, 0);
  const pxCpu = perRound.reduce((a, x) => a + x.px, 0);
  if (o.perRound) for (const x of perRound) process.stdout.write(`    round: tokened ${(x.tk / o.requests).toFixed(0)} plain ${(x.gw / o.requests).toFixed(0)} peer ${(x.px / o.requests).toFixed(0)} µs\n`);
  const ratios = perRound.map((x) => x.tk / x.px).sort((a, b) => a - b);
  const medianRatio = ratios[Math.floor(ratios.length / 2)]!;
  const n = o.requests * o.rounds;
  let parts: string | undefined;
  if (o.perf) {
    // One more round of the tokened gateway and the peer under Linux perf (bench/cpu-breakdown.ts).
    const under = async (pid: number, work: () => Promise<unknown>): Promise<Breakdown> => {
      const rec = await recordPerf(pid, join(o.dir, `perf-${pid}.data`));
      await work();
      return rec.stop();
    };
    const tkParts = await under(tk.child.pid!, phases.tk);
    const pxParts = await under(px.child.pid!, phases.px);
    parts = breakdownTable([[`tokened`, tkParts, tkCpu / n], ["peer", pxParts, pxCpu / n]]);
  }
  for (const p of pools) await p.close();
  const exited = (c: ChildProcess) => new Promise((r) => c.once("exit", r));
  for (const c of [tk, gw, px]) c.child.send("stop");
  await Promise.all([exited(tk.child), exited(gw.child), exited(px.child)]);
  return { tokened: tkCpu / n, plain: gwCpu / n, peer: pxCpu / n, wallTokened: (n / tkWall) * 1000, medianRatio, ...(parts === undefined ? {} : { parts }) };
}

export async function runTokensGateway(args: string[]): Promise<void> {
  const requests = intArg(args, "requests", 1000);
  const concurrency = intArg(args, "concurrency", 16);
  const rounds = intArg(args, "rounds", 6);
  const s = args.indexOf("--store");
  const which = s >= 0 ? args[s + 1] : "sqlite";
  const kinds = which === "all" ? ["memory", "sqlite", "redis"] : [which ?? "sqlite"];
  for (const k of kinds) if (k !== "memory" && k !== "sqlite" && k !== "redis") throw new Error("--store: memory, sqlite, redis or all");

  // The upstream: a stand-in DAP leader that accepts every upload (its CPU is not measured).
  const upstream = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(201, { "content-length": "0" });
      res.end();
    });
  });
  upstream.keepAliveTimeout = 60_000;
  const upstreamUrl = await listen(upstream);

  // The issuer: a type 2 key and its directory. Tokens are minted by signing directly (a finalized
  // blind signature is exactly an RSASSA-PSS signature over AuthenticatorInput, RFC 9578 §6.4).
  const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const tokenKey = rsaPssSpkiFromRsaSpki(new Uint8Array(publicKey.export({ format: "der", type: "spki" })));
  const keyId = tokenKeyId(tokenKey);
  const directoryBody = JSON.stringify({
    "issuer-request-uri": "/token-request",
    "token-keys": [{ "token-type": 2, "token-key": toBase64Url(tokenKey), "not-before": Math.floor(Date.now() / 1000) - 60 }],
  });
  const directory = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/private-token-issuer-directory", "cache-control": "max-age=3600" });
    res.end(directoryBody);
  });
  const directoryUrl = (await listen(directory)) + "/.well-known/private-token-issuer-directory";
  const challengeDigest = new Uint8Array(
    createHash("sha256")
      .update(encodeTokenChallenge({ tokenType: 2, issuerName: "issuer.example", redemptionContext: new Uint8Array(0), originInfo: ["leader.example"] }))
      .digest(),
  );
  const mint = (): string => {
    const fields = { tokenType: 2, nonce: new Uint8Array(randomBytes(32)), challengeDigest, tokenKeyId: keyId };
    const input = encodeAuthenticatorInput(fields);
    const authenticator = new Uint8Array(sign("sha384", input, { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 }));
    return formatAuthorization(encodeToken({ ...fields, authenticator }));
  };

  const floorMsg = new Uint8Array(randomBytes(98));
  const signed = { msg: floorMsg, sig: new Uint8Array(sign("sha384", floorMsg, { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 })) };
  const dir = mkdtempSync(join(tmpdir(), "veil-bench-tokens-"));
  const lines: string[] = [];
  try {
    for (const kind of kinds) {
      let store: string;
      let redis: Awaited<ReturnType<typeof startRedisServer>> | undefined;
      if (kind === "redis") {
        redis = await startRedisServer(dir);
        store = redis.url;
      } else store = kind === "memory" ? "memory" : `sqlite:${join(dir, "nonces.db")}`;
      try {
        const alone = await measureGateAlone(openNonceStore(store), { directoryUrl, mint, publicKey, signed, n: 2500 });
        const m = await measure(store, { requests, concurrency, rounds, upstreamUrl, directoryUrl, mint, perRound: args.includes("--per-round"), dir, perf: args.includes("--perf") });
        lines.push(
          `  store ${kind.padEnd(6)}: tokened gateway ${m.tokened.toFixed(1)} µs CPU/upload (${m.wallTokened.toFixed(0)} req/s); ` +
            `gateway without tokens ${m.plain.toFixed(1)}; gate share ${(m.tokened - m.plain).toFixed(1)} µs; ` +
            `peer (bare fastify + undici proxy) ${m.peer.toFixed(1)}`,
          `    ratio tokened gateway / peer: ${(m.tokened / m.peer).toFixed(2)}x over all rounds, median of per-round ratios ${m.medianRatio.toFixed(2)}x (target <= 3x; a straightforward build measured 20.5x)`,
          `    the gate alone, in process (fastest of 5 segments): ${alone.gate.toFixed(1)} µs CPU per admit + commit; floor (RSA-PSS verify + SHA-256 of the request) ${alone.floor.toFixed(1)} µs: ${(alone.gate / alone.floor).toFixed(2)}x`,
          ...(m.parts === undefined ? [] : [m.parts]),
        );
      } finally {
        await redis?.stop();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    upstream.closeAllConnections();
    await new Promise((r) => upstream.close(r));
    directory.closeAllConnections();
    await new Promise((r) => directory.close(r));
  }
  process.stdout.write(
    [
      `tokens-gateway bench: ${requests * rounds} uploads per server (${rounds} rounds of ${requests}, concurrency ${concurrency}), 230-byte report, type 2 tokens`,
      ...lines,
      "",
    ].join("\n"),
  );
}

export async function run(args: string[]): Promise<void> {
  await runTokensGateway(args);
}
