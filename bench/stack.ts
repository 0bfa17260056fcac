// Building blocks of the system benchmarks (bench/faults.ts, bench/soak.ts): free ports, `veil`
// components as child processes (`node bin/veil.js <component> --config FILE`), the gateway's key
// file, a Privacy Pass issuer directory with tokens signed directly (no issuance round trip), and
// the DAP leader double behind the fault proxy in its own process (bench/faults-leader.ts).

import { fork, spawn, type ChildProcess } from "node:child_process";
import { constants, createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from "node:crypto";
import { openSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { toBase64Url } from "../core/bytes.js";
import { generateGatewayKey, KEM } from "../core/ohttp/index.js";
import {
  TOKEN_TYPE,
  encodeAuthenticatorInput,
  encodeToken,
  encodeTokenChallenge,
  formatAuthorization,
  rsaPssSpkiFromRsaSpki,
  tokenKeyId,
  type TokenChallenge,
} from "../core/privacypass/index.js";
import { Secret } from "../core/secret.js";
import type { DapHpkeConfig } from "../demo/dap-aggregator.js";
import { KEY_FILE_VERSION, writeKeyFile, type KeyFileData } from "../gateway/key-file.js";
import { KeyStore } from "../gateway/key-store.js";
import type { KeyConfig } from "../core/ohttp/index.js";
import { createLogger, type Logger } from "../server/logging.js";
import type { FaultMode } from "./fault-proxy.js";

export const VEIL_BIN = fileURLToPath(new URL("../../bin/veil.js", import.meta.url));

/** A key store with one fresh active key (id 1), for gateways the benchmarks build in process. */
export async function oneKeyStore(retiredGraceSec: number): Promise<{ keys: KeyStore; config: KeyConfig }> {
  const { data, config } = await oneKeyData();
  return { keys: await KeyStore.fromData(data, { retiredGraceSec }), config };
}

/**
 * The gateway's own logger exactly as `veil gateway` makes it (one redacted JSON line per request,
 * buffered, on stdout): the benchmarks give their server children a log file as stdout.
 */
export function benchLogger(): Logger {
  return createLogger("gateway");
}

/** A file for a benchmark child's stdout (its log), in `dir`; returns the open descriptor. */
export function logFileFor(dir: string, name: string): number {
  return openSync(join(dir, `${name}.log`), "w");
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A loopback port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Resident set size of a process in bytes (Linux /proc). */
export function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m === null ? 0 : Number(m[1]) * 1024;
  } catch {
    return 0;
  }
}

// --- veil components as child processes -----------------------------------------------------

export interface VeilChild {
  name: string;
  url: string;
  child: ChildProcess;
  /** The last lines the process wrote (stdout and stderr), for error reports. */
  tail(): string;
  /** Sends `signal` (if still running) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Starts `veil <component>` with `config` (listening on a fixed `port`, so a restart comes back
 * at the same address) and waits until /healthz answers. `nodeArgs` go to node before the script.
 */
export async function startVeilChild(
  component: "gateway" | "relay" | "issuer",
  configFile: string,
  config: Record<string, unknown>,
  port: number,
  nodeArgs: readonly string[] = [],
): Promise<VeilChild> {
  writeFileSync(configFile, JSON.stringify({ ...config, listen: { host: "127.0.0.1", port } }));
  const child = spawn(process.execPath, [...nodeArgs, VEIL_BIN, component, "--config", configFile], { stdio: ["ignore", "pipe", "pipe"] });
  let tail = "";
  const keep = (d: Buffer): void => {
    tail = (tail + d.toString()).slice(-4000);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`veil ${component} exited with ${child.exitCode}: ${tail}`);
    try {
      if ((await fetch(`${url}/healthz`)).status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`veil ${component} did not start: ${tail}`);
    await sleep(50);
  }
  return {
    name: component,
    url,
    child,
    tail: () => tail,
    kill: async (signal = "SIGTERM") => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill(signal);
      await exited;
    },
  };
}

/** The key-file contents of one fresh active X25519 key (id 1), and its public configuration. */
async function oneKeyData(): Promise<{ data: KeyFileData; config: KeyConfig }> {
  const { key, privateKey } = await generateGatewayKey(1, KEM.X25519);
  const data: KeyFileData = {
    version: KEY_FILE_VERSION,
    keys: [
      {
        keyId: 1,
        kemId: key.config.kemId,
        symmetric: key.config.symmetric.map((s) => ({ ...s })),
        state: "active",
        createdAt: new Date().toISOString(),
        publicKey: key.config.publicKey,
        privateKey: new Secret(privateKey),
      },
    ],
  };
  return { data, config: key.config };
}

/** A gateway key file with one active X25519 key (mode 0600). */
export async function writeGatewayKeyFile(file: string): Promise<void> {
  writeKeyFile(file, (await oneKeyData()).data);
}

// --- tokens without issuance --------------------------------------------------------------------

export interface DirectIssuer {
  /** The RFC 9578 §4 directory URL to configure in the gateway. */
  directoryUrl: string;
  name: string;
  /** A fresh type 2 token for the challenge a gateway issues for `origin`, as an Authorization value. */
  token(origin: string): { authorization: string; nonce: string };
  close(): Promise<void>;
}

/**
 * An issuer key (RSA-2048) whose directory is served here, and type 2 tokens signed with it
 * directly: a finalized blind signature is exactly an RSASSA-PSS signature over the token input
 * (RFC 9578 §6.4), so no issuance round trip is needed to make valid tokens.
 */
export async function startDirectIssuer(name = "issuer.example"): Promise<DirectIssuer> {
  const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const tokenKey = rsaPssSpkiFromRsaSpki(new Uint8Array(publicKey.export({ format: "der", type: "spki" })));
  const keyId = tokenKeyId(tokenKey);
  const body = JSON.stringify({
    "issuer-request-uri": "/token-request",
    "token-keys": [{ "token-type": TOKEN_TYPE.BLIND_RSA_2048, "token-key": toBase64Url(tokenKey), "not-before": Math.floor(Date.now() / 1000) - 60 }],
  });
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/private-token-issuer-directory", "cache-control": "max-age=3600" });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const digests = new Map<string, Uint8Array>();
  const digestFor = (origin: string): Uint8Array => {
    let d = digests.get(origin);
    if (d === undefined) {
      const c: TokenChallenge = { tokenType: TOKEN_TYPE.BLIND_RSA_2048, issuerName: name, redemptionContext: new Uint8Array(0), originInfo: [origin] };
      d = new Uint8Array(createHash("sha256").update(encodeTokenChallenge(c)).digest());
      digests.set(origin, d);
    }
    return d;
  };
  const signer: KeyObject = privateKey;
  return {
    directoryUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/private-token-issuer-directory`,
    name,
    token(origin) {
      const nonce = new Uint8Array(randomBytes(32));
      const fields = { tokenType: TOKEN_TYPE.BLIND_RSA_2048, nonce, challengeDigest: digestFor(origin), tokenKeyId: keyId };
      const authenticator = new Uint8Array(sign("sha384", encodeAuthenticatorInput(fields), { key: signer, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 }));
      return { authorization: formatAuthorization(encodeToken({ ...fields, authenticator })), nonce: Buffer.from(nonce).toString("hex") };
    },
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

// --- the leader double (behind the fault proxy) in its own process ---------------------------------

export interface LeaderReport {
  /** Accepted report ids (hex). */
  accepted: string[];
  duplicates: number;
  rejections: Record<string, number>;
  faults: Record<string, number>;
}

export interface LeaderChild {
  /** The fault proxy in front of the leader (the gateway's target). */
  url: string;
  pid: number;
  task: { id: Uint8Array; idBase64Url: string; leaderConfig: DapHpkeConfig; helperConfig: DapHpkeConfig };
  /** Fault probabilities per request (the rest passes); empty for none. */
  setFaults(rates: Partial<Record<FaultMode, number>>): void;
  /** The proxy refuses connections for `ms`. */
  refuse(ms: number): void;
  /** Event-loop delay p99 (ms) since the last call, and RSS. */
  sample(): Promise<{ eldP99Ms: number; rss: number }>;
  report(): Promise<LeaderReport>;
  stop(): Promise<void>;
}

interface ReadyMessage {
  type: "ready";
  url: string;
  task: { id: string; idBase64Url: string; leaderConfig: DapHpkeConfig & { publicKey: string }; helperConfig: DapHpkeConfig & { publicKey: string } };
}

export async function forkLeader(): Promise<LeaderChild> {
  const child = fork(fileURLToPath(new URL("./faults-leader.js", import.meta.url)), [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const waiting = new Map<string, (m: unknown) => void>();
  child.on("message", (m: { type: string }) => {
    const w = waiting.get(m.type);
    if (w !== undefined) {
      waiting.delete(m.type);
      w(m);
    }
  });
  const ask = <T>(request: object, answer: string): Promise<T> =>
    new Promise((resolve) => {
      waiting.set(answer, (m) => resolve(m as T));
      child.send(request);
    });
  const ready = await new Promise<ReadyMessage>((resolve, reject) => {
    waiting.set("ready", (m) => resolve(m as ReadyMessage));
    child.once("exit", (code) => reject(new Error(`leader process exited with ${code}`)));
  });
  const config = (c: DapHpkeConfig & { publicKey: string }): DapHpkeConfig => ({ ...c, publicKey: new Uint8Array(Buffer.from(c.publicKey, "hex")) });
  return {
    url: ready.url,
    pid: child.pid!,
    task: {
      id: new Uint8Array(Buffer.from(ready.task.id, "hex")),
      idBase64Url: ready.task.idBase64Url,
      leaderConfig: config(ready.task.leaderConfig),
      helperConfig: config(ready.task.helperConfig),
    },
    setFaults: (rates) => child.send({ type: "faults", rates }),
    refuse: (ms) => child.send({ type: "refuse", ms }),
    sample: () => ask({ type: "sample" }, "sampled"),
    report: () => ask({ type: "report" }, "reported"),
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      child.send({ type: "stop" });
      await exited;
    },
  };
}
