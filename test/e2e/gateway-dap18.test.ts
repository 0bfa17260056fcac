// End to end, DAP-18 beside DAP-09: the client library -> the relay -> one gateway (DAP policy,
// tokens required) whose targets are a DAP-09 leader/helper (URL targets) and a DAP-18
// leader/helper (object targets with dap "18"). DAP-18 reports are sealed with real HPKE to the
// double's keys (random VDAF shares: the gateway never reads them). Covers: both drafts through the
// same gateway, the wrong draft refused, one report per token (two refused; two accepted with
// maxReportsPerToken 2), malformed framing refused and never forwarded (the token released), and
// the leader's answers passed back verbatim.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createObliviousFetch, createTokenSource, type ObliviousFetch, type TokenSource } from "../../client/index.js";
import { createDapTask, uploadUrl } from "../../client/dap.js";
import { concatBytes, toHex } from "../../core/bytes.js";
import { encodeUploadRequest, type Dap18Report } from "../../core/dap/index.js";
import { decodeHpkeConfigList, type DapHpkeConfig } from "../../demo/dap-double.js";
import { REPORT_ERROR, createDap18Task, decodeUploadErrors, sealReport18 } from "../../demo/dap18-aggregator.js";
import { HELPER, HELPER18, LEADER, LEADER18, STACK_CREDENTIAL, startVeilStack, type VeilStack } from "../helpers/veil-stack.js";

const UPLOAD_REQ = "application/ppm-dap;message=upload-req";
const sources: TokenSource[] = [];
let stack: VeilStack;

beforeAll(async () => {
  stack = await startVeilStack();
}, 60_000);
afterAll(async () => {
  for (const t of sources) t.close();
  await stack.stop();
});

function client(s: VeilStack, batch = 8): { f: ObliviousFetch; tokens: TokenSource } {
  const tokens = createTokenSource({ issuer: s.issuerUrl, credential: STACK_CREDENTIAL, batch, refillJitterMs: 0 });
  sources.push(tokens);
  return { f: createObliviousFetch({ relay: s.relayUrl, keys: s.keysUrl, tokens, retryDelayMs: 10 }), tokens };
}

const uploadUrl18 = (s: VeilStack, taskId = s.dap18.task.idBase64Url): string => `${LEADER18}/tasks/${taskId}/reports`;

/** A DAP-18 client's configs: GET {aggregator}/hpke_config (no query) through the relay. */
async function configs(f: ObliviousFetch): Promise<{ leader: DapHpkeConfig; helper: DapHpkeConfig }> {
  const get = async (origin: string): Promise<DapHpkeConfig> => {
    const res = await f(`${origin}/hpke_config`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/ppm-dap;message=hpke-config-list");
    return decodeHpkeConfigList(new Uint8Array(await res.arrayBuffer()))[0]!;
  };
  return { leader: await get(LEADER18), helper: await get(HELPER18) };
}

async function reports(s: VeilStack, n: number, time?: bigint): Promise<Dap18Report[]> {
  const { leader, helper } = await configs(client(s).f);
  const now = BigInt(Math.floor(Date.now() / 1000)) / 3600n;
  const random = (k: number): Uint8Array => crypto.getRandomValues(new Uint8Array(k));
  return Promise.all(Array.from({ length: n }, () => sealReport18(s.dap18.task, leader, helper, { time: time ?? now, leaderShare: random(48), helperShare: random(32) })));
}

function post(f: ObliviousFetch, url: string, body: Uint8Array, contentType = UPLOAD_REQ): Promise<Response> {
  return f(url, { method: "POST", headers: { "content-type": contentType }, body: new Uint8Array(body) });
}

async function problem(res: Response): Promise<{ code?: string; taskid?: string; type?: string }> {
  expect(res.headers.get("content-type")).toBe("application/problem+json");
  return (await res.json()) as { code?: string; taskid?: string; type?: string };
}

/** veil_gateway_tokens_settled_total{result} from the gateway's /metrics. */
async function settled(s: VeilStack, result: "committed" | "released"): Promise<number> {
  const text = await (await fetch(`${s.gateway.url}/metrics`)).text();
  const m = new RegExp(`veil_gateway_tokens_settled_total\\{[^}]*result="${result}"[^}]*\\} (\\d+)`).exec(text);
  return m === null ? 0 : Number(m[1]);
}

describe("end to end: one gateway in front of a DAP-09 and a DAP-18 leader, tokens required", () => {
  it("uploads one DAP-18 report with one token; the DAP-18 leader opens both shares and answers 200 with no body", async () => {
    const { f, tokens } = client(stack);
    const url = uploadUrl18(stack);
    // How a DAP-18 client prepares: the tokenless probe is a POST (empty body, no media type): the
    // gate answers its 401 challenge before any body check, so tokens come in a batch ahead of use.
    await f.prepare(url, { method: "POST" });
    expect(tokens.stats().stock).toBe(8);
    const [r] = await reports(stack, 1);
    const before = stack.dap18.leader.acceptedCount();
    const res = await post(f, url, encodeUploadRequest([r!]));
    expect(res.status).toBe(200);
    expect((await res.arrayBuffer()).byteLength).toBe(0);
    expect(stack.dap18.leader.acceptedCount()).toBe(before + 1);
    const stored = stack.dap18.leader.reports.get(stack.dap18.task.idBase64Url)!.at(-1)!;
    expect(stored.reportId).toBe(toHex(r!.metadata.reportId));
    expect(stored.helperShare?.length).toBe(32);
    expect(f.stats().challengeRetries).toBe(0);
    expect(tokens.stats().issued - tokens.stats().stock).toBe(1);
    for (const q of stack.dap18.leader.received) expect(q.headers.authorization).toBeUndefined();
  });

  it("carries DAP-09 uploads from @divviup/dap to the DAP-09 leader through the same gateway", async () => {
    const { f } = client(stack);
    const task = stack.tasks.count;
    const dap = createDapTask({ vdaf: "count", taskId: task.idBase64Url, leader: LEADER, helper: HELPER, timePrecisionSec: 3600, fetch: f });
    await f.prepare(uploadUrl(LEADER, task.idBase64Url));
    const before = stack.leader.acceptedCount();
    await dap.sendMeasurement(true);
    await dap.sendMeasurement(false);
    expect(stack.leader.acceptedCount()).toBe(before + 2);
  });

  it("refuses each draft's forms on the other draft's target with a sealed 403 (taskid kept), forwarding nothing", async () => {
    const { f } = client(stack);
    const [r] = await reports(stack, 1);
    const id18 = stack.dap18.task.idBase64Url;
    const id09 = stack.tasks.count.idBase64Url;
    const forwarded = stack.dap18.leader.received.length + stack.leader.received.length;
    const put = await f(uploadUrl18(stack), { method: "PUT", headers: { "content-type": "application/dap-report" }, body: new Uint8Array(230) });
    expect(put.status).toBe(403);
    expect(await problem(put)).toMatchObject({ code: "GATEWAY_ERR_POLICY", taskid: id18 });
    const post09 = await post(f, uploadUrl(LEADER, id09).href, encodeUploadRequest([r!]));
    expect(post09.status).toBe(403);
    expect(await problem(post09)).toMatchObject({ code: "GATEWAY_ERR_POLICY", taskid: id09 });
    const query = await f(`${LEADER18}/hpke_config?task_id=${id18}`);
    expect(query.status).toBe(403);
    expect(await problem(query)).toMatchObject({ code: "GATEWAY_ERR_POLICY", taskid: id18 });
    expect(stack.dap18.leader.received.length + stack.leader.received.length).toBe(forwarded);
  });

  it("refuses two reports with one token (sealed 413 GATEWAY_ERR_TOO_MANY_REPORTS), forwards nothing and releases the token", async () => {
    const { f } = client(stack);
    const two = encodeUploadRequest(await reports(stack, 2));
    const forwarded = stack.dap18.leader.received.length;
    const released = await settled(stack, "released");
    const res = await post(f, uploadUrl18(stack), two);
    expect(res.status).toBe(413);
    expect(await problem(res)).toMatchObject({ code: "GATEWAY_ERR_TOO_MANY_REPORTS", taskid: stack.dap18.task.idBase64Url });
    expect(stack.dap18.leader.received.length).toBe(forwarded);
    expect(await settled(stack, "released")).toBe(released + 1);
  });

  it("refuses malformed framing with a sealed 400 and never forwards it: truncated, trailing bytes, a length past the end", async () => {
    const { f } = client(stack);
    const one = encodeUploadRequest(await reports(stack, 1));
    const pastEnd = one.slice();
    pastEnd.set([0x7f, 0xff, 0xff, 0xff], 16 + 8 + 2); // public_share length
    const cases: [string, Uint8Array, string][] = [
      ["truncated", one.subarray(0, one.length - 3), "DAP_ERR_TRUNCATED"],
      ["trailing bytes", concatBytes(one, new Uint8Array([1, 2, 3])), "DAP_ERR_TRUNCATED"],
      ["length past the end", pastEnd, "DAP_ERR_TRUNCATED"],
    ];
    const forwarded = stack.dap18.leader.received.length;
    const committed = await settled(stack, "committed");
    for (const [what, body, code] of cases) {
      const res = await post(f, uploadUrl18(stack), body);
      expect(res.status, what).toBe(400);
      expect(await problem(res), what).toMatchObject({ code, taskid: stack.dap18.task.idBase64Url });
    }
    const wrongType = await post(f, uploadUrl18(stack), one, "application/dap-report");
    expect(wrongType.status).toBe(415);
    expect(await problem(wrongType)).toMatchObject({ code: "HTTP_ERR_MEDIA_TYPE" });
    expect(stack.dap18.leader.received.length).toBe(forwarded);
    expect(await settled(stack, "committed")).toBe(committed);
  });

  it("passes the DAP-18 leader's answers back verbatim: an upload-errors document, an unrecognizedTask problem", async () => {
    const { f } = client(stack);
    const far = BigInt(Math.floor(Date.now() / 1000)) / 3600n + 48n;
    const [early] = await reports(stack, 1, far);
    const res = await post(f, uploadUrl18(stack), encodeUploadRequest([early!]));
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/ppm-dap;message=upload-errors");
    expect(decodeUploadErrors(new Uint8Array(await res.arrayBuffer()))).toEqual([{ reportId: toHex(early!.metadata.reportId), error: REPORT_ERROR.report_too_early }]);
    const unknown = createDap18Task().idBase64Url;
    const res2 = await post(f, uploadUrl18(stack, unknown), encodeUploadRequest(await reports(stack, 1)));
    expect(res2.status).toBe(400);
    expect(await problem(res2)).toMatchObject({ type: "urn:ietf:params:ppm:dap:error:unrecognizedTask", taskid: unknown });
  });
});

describe("end to end: tokens.maxReportsPerToken 2", () => {
  let wide: VeilStack;
  beforeAll(async () => {
    wide = await startVeilStack({ maxReportsPerToken: 2 });
  }, 60_000);
  afterAll(async () => wide.stop());

  it("accepts two reports with one token, and refuses three", async () => {
    const { f, tokens } = client(wide, 2);
    const url = uploadUrl18(wide);
    await f.prepare(url, { method: "POST" });
    const before = wide.dap18.leader.acceptedCount();
    const res = await post(f, url, encodeUploadRequest(await reports(wide, 2)));
    expect(res.status).toBe(200);
    expect(wide.dap18.leader.acceptedCount()).toBe(before + 2);
    expect(tokens.stats().issued - tokens.stats().stock).toBe(1);
    const three = await post(f, url, encodeUploadRequest(await reports(wide, 3)));
    expect(three.status).toBe(413);
    expect(wide.dap18.leader.acceptedCount()).toBe(before + 2);
  });
});
