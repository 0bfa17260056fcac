// `veil client`: the client library on the command line (Node only).
//
//   veil client upload --relay URL --keys URL --issuer URL --credential C --task ID --leader URL
//                      --helper URL --vdaf count|sum|histogram --measurement V [--reports N]
//                      [--time-precision S]
//   veil client fetch URL [--method M] [--data D] --relay URL --keys URL [--issuer URL --credential C]
//
// Exit status: 0 when every report landed (upload) or the answer was not an error (fetch); 1
// otherwise, with a one-line reason on stderr; 2 for bad options (commander).

import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { Command, InvalidArgumentError, Option } from "commander";
import cliProgress from "cli-progress";
import { ProtocolError, isProtocolError } from "../core/errors.js";
import { createObliviousFetch, type ObliviousFetch } from "./oblivious-fetch.js";
import { createTokenSource, type TokenSource } from "./token-source.js";
import { importOptional } from "../server/optional-dependency.js";
import type { UploadOutcome, VdafName } from "./dap.js";

interface ConnectionOptions {
  relay: string;
  keys: string;
  relayKeys?: string | boolean;
  issuer?: string;
  credential?: string;
  credentialFile?: string;
  batch?: number;
  timeoutMs?: number;
}

interface UploadOptions extends ConnectionOptions {
  task: string;
  leader: string;
  helper: string;
  vdaf: VdafName;
  measurement: string;
  reports: number;
  timePrecision: number;
  bits?: number;
  length?: number;
  chunkLength?: number;
  concurrency: number;
  json?: boolean;
  progress: boolean;
}

interface FetchOptions extends ConnectionOptions {
  method?: string;
  data?: string;
  header: string[];
  include?: boolean;
}

function int(name: string, min: number, max: number): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}`);
    }
    return n;
  };
}

function connectionOptions(cmd: Command): Command {
  return cmd
    .requiredOption("--relay <url>", "the relay resource for the gateway (POST)")
    .requiredOption("--keys <url>", "the gateway's own /ohttp-keys (https, or http on loopback)")
    .addOption(
      new Option("--relay-keys <url>", "compare the keys with this copy at the relay").default(true, "<relay>/ohttp-keys"),
    )
    .option("--no-relay-keys", "do not compare the keys with the relay's copy")
    .option("--issuer <url>", "Privacy Pass issuer base URL (with --credential)")
    .option("--credential <c>", "attester credential for the issuer (Authorization: Bearer)")
    .option("--credential-file <file>", "read the credential from a file instead (keeps it out of the process list)")
    .option("--batch <n>", "tokens fetched per batch", int("--batch", 1, 1000))
    .option("--timeout-ms <ms>", "timeout of each relay exchange", int("--timeout-ms", 1, 600_000));
}

/** Builds the token source (if asked for) and the oblivious fetch. */
function connect(o: ConnectionOptions, uses: number): { fetch: ObliviousFetch; tokens: TokenSource | undefined } {
  let credential = o.credential;
  if (o.credentialFile !== undefined) {
    try {
      credential = readFileSync(o.credentialFile, "utf8").trim();
    } catch (e) {
      throw new ProtocolError("CFG_ERR_INVALID", `--credential-file: cannot read ${o.credentialFile}`, { cause: e });
    }
  }
  if ((o.issuer === undefined) !== (credential === undefined)) {
    throw new ProtocolError("CFG_ERR_INVALID", "--issuer and --credential (or --credential-file) go together");
  }
  const tokens =
    o.issuer !== undefined && credential !== undefined
      ? createTokenSource({
          issuer: o.issuer,
          credential,
          batch: o.batch ?? Math.min(uses, 10),
          // Fetch no more tokens than the run needs (a token left over is a token wasted).
          budget: uses,
          // A command runs for seconds: refill soon after the stock runs low.
          refillJitterMs: 500,
          ...(o.timeoutMs === undefined ? {} : { timeoutMs: o.timeoutMs }),
        })
      : undefined;
  const fetch = createObliviousFetch({
    relay: o.relay,
    keys: o.keys,
    ...(o.relayKeys === undefined || o.relayKeys === false ? {} : { relayKeys: o.relayKeys }),
    ...(tokens === undefined ? {} : { tokens }),
    ...(o.timeoutMs === undefined ? {} : { timeoutMs: o.timeoutMs }),
  });
  return { fetch, tokens };
}

function fail(prefix: string, e: unknown): void {
  const msg = isProtocolError(e) ? `${e.message} [${e.code}]` : e instanceof Error ? e.message : String(e);
  process.stderr.write(`veil client ${prefix}: ${msg}\n`);
  const retryAfter = isProtocolError(e) ? e.headers["retry-after"] : undefined;
  if (retryAfter !== undefined) process.stderr.write(`veil client ${prefix}: retry after ${retryAfter} s\n`);
  process.exitCode = 1;
}

async function runUpload(o: UploadOptions): Promise<void> {
  const started = performance.now();
  const { createDapTask, parseMeasurement, resolveVdaf, uploadOne, uploadUrl } = await importOptional(
    () => import("./dap.js"),
    "@divviup/dap",
    "veil client upload",
  );
  const vdaf = resolveVdaf({
    vdaf: o.vdaf,
    ...(o.bits === undefined ? {} : { bits: o.bits }),
    ...(o.length === undefined ? {} : { length: o.length }),
    ...(o.chunkLength === undefined ? {} : { chunkLength: o.chunkLength }),
  });
  const measurement = parseMeasurement(vdaf, o.measurement);
  const { fetch, tokens } = connect(o, o.reports);
  try {
    const task = createDapTask({ ...vdaf, taskId: o.task, leader: o.leader, helper: o.helper, timePrecisionSec: o.timePrecision, fetch });
    // Keys, the gateway's challenge and a first batch of tokens, before any report is made.
    await fetch.prepare(uploadUrl(o.leader, o.task));
    await task.fetchKeyConfiguration();

    const showBar = o.progress && o.reports > 1 && process.stderr.isTTY === true;
    const bar = new cliProgress.SingleBar(
      { stream: process.stderr, format: "uploading [{bar}] {value}/{total} reports | {landed} landed | {failed} not landed | eta {eta}s", hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    const counts = { landed: 0, refused: 0, failed: 0 };
    const reasons = new Map<string, { message: string; n: number }>();
    let fatal: UploadOutcome | undefined;
    if (showBar) bar.start(o.reports, 0, { landed: 0, failed: 0 });
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < o.reports && fatal === undefined) {
        next++;
        const r = await uploadOne(task, measurement);
        if (r.ok) counts.landed++;
        else {
          if (r.refused) counts.refused++;
          else counts.failed++;
          const seen = reasons.get(r.code);
          if (seen === undefined) reasons.set(r.code, { message: r.message, n: 1 });
          else seen.n++;
          if (r.fatal) fatal ??= r;
        }
        if (showBar) bar.increment(1, { landed: counts.landed, failed: counts.refused + counts.failed });
        else if (o.reports > 1 && !o.json && process.stderr.isTTY !== true && (counts.landed + counts.refused + counts.failed) % 100 === 0) {
          process.stderr.write(`${counts.landed + counts.refused + counts.failed}/${o.reports} reports\n`);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(o.concurrency, o.reports) }, worker));
    if (showBar) bar.stop();

    const seconds = (performance.now() - started) / 1000;
    const attempted = counts.landed + counts.refused + counts.failed;
    const skipped = o.reports - attempted;
    const summary = {
      reports: o.reports,
      landed: counts.landed,
      refused: counts.refused,
      failed: counts.failed,
      skipped,
      seconds: Number(seconds.toFixed(3)),
      msPerReport: attempted === 0 ? 0 : Number(((seconds * 1000) / attempted).toFixed(1)),
      tokensIssued: tokens?.stats().issued ?? 0,
      reasons: Object.fromEntries([...reasons].map(([code, r]) => [code, r])),
    };
    if (o.json === true) {
      process.stdout.write(JSON.stringify(summary) + "\n");
    } else {
      process.stdout.write(
        `${counts.landed}/${o.reports} reports landed, ${counts.refused} refused, ${counts.failed} failed` +
          `${skipped > 0 ? `, ${skipped} not sent` : ""} in ${summary.seconds} s (${summary.msPerReport} ms per report)` +
          `${tokens === undefined ? "" : `, ${summary.tokensIssued} tokens issued`}\n`,
      );
      for (const [code, r] of reasons) process.stderr.write(`  ${r.n} x ${r.message} [${code}]\n`);
    }
    if (counts.landed !== o.reports) {
      if (fatal !== undefined && !fatal.ok) process.stderr.write(`veil client upload: stopped: ${fatal.message} [${fatal.code}]\n`);
      process.exitCode = 1;
    }
  } finally {
    tokens?.close();
  }
}

function parseHeader(h: string): [string, string] {
  const i = h.indexOf(":");
  if (i <= 0) throw new ProtocolError("CFG_ERR_INVALID", `--header must look like "Name: value", got ${JSON.stringify(h)}`);
  return [h.slice(0, i).trim(), h.slice(i + 1).trim()];
}

async function runFetch(url: string, o: FetchOptions): Promise<void> {
  const { fetch, tokens } = connect(o, 1);
  try {
    const method = (o.method ?? (o.data === undefined ? "GET" : "POST")).toUpperCase();
    const headers = new Headers(o.header.map(parseHeader));
    const res = await fetch(url, { method, headers, ...(o.data === undefined ? {} : { body: o.data }) });
    if (o.include === true) {
      process.stdout.write(`HTTP ${res.status}\n`);
      res.headers.forEach((v, k) => process.stdout.write(`${k}: ${v}\n`));
      process.stdout.write("\n");
    }
    process.stdout.write(new Uint8Array(await res.arrayBuffer()));
    if (res.status >= 400) {
      process.stderr.write(`veil client fetch: the target answered ${res.status}\n`);
      process.exitCode = 1;
    }
  } finally {
    tokens?.close();
  }
}

export function clientCommand(): Command {
  const client = new Command("client").description("send requests and DAP reports obliviously: through the relay, encrypted to the gateway");

  const upload = connectionOptions(
    new Command("upload")
      .description("build DAP-09 reports with @divviup/dap and upload them through the relay")
      .requiredOption("--task <id>", "DAP task id (unpadded base64url, 32 bytes)")
      .requiredOption("--leader <url>", "leader URL as the gateway's targets name it (e.g. https://leader.example)")
      .requiredOption("--helper <url>", "helper URL as the gateway's targets name it")
      .addOption(new Option("--vdaf <name>", "the task's VDAF").choices(["count", "sum", "histogram"]).makeOptionMandatory())
      .requiredOption("--measurement <v>", "count: 0/1; sum: an integer below 2^bits; histogram: a bucket index")
      .option("--reports <n>", "number of reports to upload", int("--reports", 1, 10_000_000), 1)
      .option("--time-precision <s>", "the task's time precision in seconds", int("--time-precision", 1, 31_536_000), 3600)
      .option("--bits <n>", "sum: bits per measurement (task parameter, default 32)", int("--bits", 1, 64))
      .option("--length <n>", "histogram: number of buckets (task parameter, default 4)", int("--length", 1, 100_000))
      .option("--chunk-length <n>", "histogram: chunk length (task parameter, default ~sqrt(length))", int("--chunk-length", 1, 100_000))
      .option("--concurrency <n>", "reports in flight at once", int("--concurrency", 1, 256), 4)
      .option("--no-progress", "no progress bar")
      .option("--json", "print the summary as one JSON line"),
  ).action(async (o: UploadOptions) => {
    try {
      await runUpload(o);
    } catch (e) {
      fail("upload", e);
    }
  });

  const fetchCmd = connectionOptions(
    new Command("fetch")
      .description("send one request obliviously and print the answer's body")
      .argument("<url>", "the target URL (the gateway must allow it)")
      .option("--method <m>", "HTTP method (default GET, or POST with --data)")
      .option("--data <d>", "request body")
      .option("-H, --header <h>", "request header 'Name: value' (repeatable)", (v: string, acc: string[]) => [...acc, v], [] as string[])
      .option("-i, --include", "print the status and header fields first"),
  ).action(async (url: string, o: FetchOptions) => {
    try {
      await runFetch(url, o);
    } catch (e) {
      fail("fetch", e);
    }
  });

  client.addCommand(upload);
  client.addCommand(fetchCmd);
  client.addCommand(
    new Command("build-browser")
      .description("bundle the client library for browsers with esbuild (an ES module)")
      .requiredOption("--out <file>", "output file, e.g. dist/browser/veil-client.js")
      .option("--minify", "minify the bundle")
      .action(async (o: { out: string; minify?: boolean }) => {
        try {
          const { buildBrowserBundle } = await import("./build-browser.js");
          const r = await buildBrowserBundle({ outfile: o.out, minify: o.minify === true });
          process.stdout.write(`${r.outfile}: ${r.bytes} bytes\n`);
        } catch (e) {
          fail("build-browser", e);
        }
      }),
  );
  return client;
}
