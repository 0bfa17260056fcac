import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BhttpResponse, Field } from "../../../core/bhttp/index.js";
import { ProtocolError } from "../../../core/errors.js";
import { decodeKeyConfigs, encapsulateRequest } from "../../../core/ohttp/index.js";
import { createDapTask, startDapAggregator, type DapAggregator, type DapTask } from "../../../demo/dap-aggregator.js";
import type { Gate, GateInput } from "../../../gateway/gate-contract.js";
import { makeGateway, type Fixture } from "../../helpers/gateway-fixture.js";
import { sealRequest } from "../../helpers/oblivious-fetch.js";

let leader: DapAggregator;
let task: DapTask;
let hang: Server;
let hangUrl: string;
let big: Server;
let bigUrl: string;
let closedUrl: string;

function listen(s: Server): Promise<string> {
  return new Promise((resolve) => s.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(s.address() as AddressInfo).port}`)));
}

beforeAll(async () => {
  task = await createDapTask();
  leader = await startDapAggregator({ role: "leader", tasks: [task] });
  hang = createServer(() => {
    // never answers
  });
  hangUrl = await listen(hang);
  big = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/octet-stream" });
    res.end(Buffer.alloc(4096, 7));
  });
  bigUrl = await listen(big);
  const closed = createServer();
  closedUrl = await listen(closed);
  await new Promise((r) => closed.close(r));
});

afterAll(async () => {
  await leader.close();
  hang.closeAllConnections();
  big.closeAllConnections();
  await new Promise((r) => hang.close(r));
  await new Promise((r) => big.close(r));
});

function targets(): Record<string, string> {
  return {
    "https://leader.example": leader.url,
    "https://prefixed.example/dap/": leader.url,
    "https://hang.example": hangUrl,
    "https://big.example": bigUrl,
    "https://down.example": closedUrl,
  };
}

async function gateway(extra: Record<string, unknown> = {}, opts: Parameters<typeof makeGateway>[1] = {}): Promise<Fixture> {
  return makeGateway(
    {
      targets: targets(),
      upstream: { headersTimeoutMs: 300, bodyTimeoutMs: 300, totalTimeoutMs: 2000, maxResponseBytes: 1024 },
      ...extra,
    },
    opts,
  );
}

let fx: Fixture;
beforeAll(async () => {
  fx = await gateway();
});
afterAll(async () => {
  await fx.app.close();
});

const uploadPath = (): string => `/tasks/${task.idBase64Url}/reports`;
const configPath = (): string => `/hpke_config?task_id=${task.idBase64Url}`;

async function post(f: Fixture, body: Uint8Array, contentType = "message/ohttp-req") {
  return f.app.inject({ method: "POST", url: "/gateway", headers: { "content-type": contentType }, payload: Buffer.from(body) });
}

/** Sends one sealed inner request through `f` and returns the outer response and the opened inner one. */
async function roundTrip(
  f: Fixture,
  req: { method?: string; authority?: string; scheme?: string; path: string; headers?: Field[]; body?: Uint8Array },
): Promise<{ outer: { statusCode: number; headers: Record<string, unknown> }; inner: BhttpResponse; problem: Record<string, unknown> | undefined }> {
  const sealed = await sealRequest(f.keyConfig, req);
  const res = await post(f, sealed.body);
  expect(res.statusCode).toBe(200);
  expect(res.headers["content-type"]).toBe("message/ohttp-res");
  const inner = await sealed.open(new Uint8Array(res.rawPayload));
  const ct = inner.headers.find(([n]) => n === "content-type")?.[1];
  const problem = ct === "application/problem+json" ? (JSON.parse(new TextDecoder().decode(inner.body)) as Record<string, unknown>) : undefined;
  return { outer: res, inner, problem };
}

describe("gateway: before decapsulation (plain problem+json)", () => {
  it("answers 405 with Allow for other methods on /gateway and /ohttp-keys", async () => {
    const a = await fx.app.inject({ method: "GET", url: "/gateway" });
    expect(a.statusCode).toBe(405);
    expect(a.headers.allow).toBe("POST");
    expect(a.headers["content-type"]).toBe("application/problem+json");
    const b = await fx.app.inject({ method: "POST", url: "/ohttp-keys", headers: { "content-type": "message/ohttp-req" }, payload: "x" });
    expect(b.statusCode).toBe(405);
    expect(b.headers.allow).toBe("GET");
  });

  it("answers 404 for other paths", async () => {
    const res = await fx.app.inject({ method: "POST", url: "/relay", headers: { "content-type": "message/ohttp-req" }, payload: "x" });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toMatchObject({ code: "HTTP_ERR_NOT_FOUND" });
  });

  it("answers 415 for another media type, JSON included, and for none", async () => {
    for (const ct of ["application/octet-stream", "application/json", "text/plain"]) {
      const res = await post(fx, new TextEncoder().encode("{}"), ct);
      expect(res.statusCode).toBe(415);
      expect(res.json()).toMatchObject({ code: "HTTP_ERR_MEDIA_TYPE" });
    }
    const none = await fx.app.inject({ method: "POST", url: "/gateway" });
    expect(none.statusCode).toBe(415);
  });

  it("answers 413 when Content-Length is over maxRequestBytes", async () => {
    const small = await gateway({ limits: { maxRequestBytes: 100 } });
    const res = await post(small, new Uint8Array(101));
    expect(res.statusCode).toBe(413);
    expect(res.json()).toMatchObject({ code: "HTTP_ERR_TOO_LARGE" });
    await small.app.close();
  });

  it("answers 400 ohttp-key for an unknown key id", async () => {
    const sealed = await sealRequest(fx.keyConfig, { path: configPath() });
    const body = sealed.body.slice();
    body[0] = 99;
    const res = await post(fx, body);
    expect(res.statusCode).toBe(400);
    expect(res.headers["content-type"]).toBe("application/problem+json");
    expect(res.json()).toMatchObject({ type: "https://iana.org/assignments/http-problem-types#ohttp-key", code: "OHTTP_ERR_KEY_UNKNOWN" });
  });

  it("answers 400 ohttp-key for a suite the key does not offer", async () => {
    const sealed = await sealRequest(fx.keyConfig, { path: configPath() });
    const wrongAead = sealed.body.slice();
    wrongAead[6] = 2; // AES-256-GCM: not in the key's list
    const a = await post(fx, wrongAead);
    expect(a.statusCode).toBe(400);
    expect(a.json()).toMatchObject({ type: "https://iana.org/assignments/http-problem-types#ohttp-key", code: "OHTTP_ERR_SUITE_UNSUPPORTED" });
    const wrongKem = sealed.body.slice();
    wrongKem[2] = 0x10; // P-256 for an X25519 key
    expect((await post(fx, wrongKem)).json()).toMatchObject({ code: "OHTTP_ERR_SUITE_UNSUPPORTED" });
  });

  it("answers 400 for truncated, empty and undecryptable messages", async () => {
    const sealed = await sealRequest(fx.keyConfig, { path: configPath() });
    expect((await post(fx, sealed.body.subarray(0, 20))).json()).toMatchObject({ status: 400, code: "OHTTP_ERR_TRUNCATED" });
    expect((await post(fx, new Uint8Array(0))).json()).toMatchObject({ status: 400, code: "OHTTP_ERR_TRUNCATED" });
    const flipped = sealed.body.slice();
    flipped[flipped.length - 1]! ^= 1;
    const res = await post(fx, flipped);
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code: "OHTTP_ERR_DECRYPT" });
  });
});

describe("gateway: after decapsulation (sealed answers in a 200)", () => {
  it("passes the target's own answer back: the HPKE config list with its exact media type", async () => {
    const { inner } = await roundTrip(fx, { path: configPath(), headers: [["accept", "application/dap-hpke-config-list"]] });
    expect(inner.status).toBe(200);
    expect(inner.headers).toContainEqual(["content-type", "application/dap-hpke-config-list"]);
    expect(new Uint8Array(inner.body)).toEqual(leader.hpkeConfigList(task));
  });

  it("passes a DAP problem document from the target through unchanged", async () => {
    const { inner, problem } = await roundTrip(fx, {
      method: "PUT",
      path: uploadPath(),
      headers: [["content-type", "application/dap-report"]],
      body: new Uint8Array(10),
    });
    expect(inner.status).toBe(400);
    expect(problem).toMatchObject({ type: "urn:ietf:params:ppm:dap:error:invalidMessage", taskid: task.idBase64Url });
  });

  it("maps a path prefix onto the upstream base path", async () => {
    const { inner } = await roundTrip(fx, { authority: "prefixed.example", path: `/dap${configPath()}` });
    expect(inner.status).toBe(200);
    expect(leader.received.at(-1)?.path).toBe(configPath());
  });

  it("seals 400 for a bad Binary HTTP message", async () => {
    const { encapsulated, response } = await encapsulateRequest(fx.keyConfig, new Uint8Array([0x00, 0x03, 0x47]));
    const res = await post(fx, encapsulated);
    expect(res.statusCode).toBe(200);
    const { decodeResponse } = await import("../../../core/bhttp/index.js");
    const inner = decodeResponse(await response.decapsulateResponse(new Uint8Array(res.rawPayload)));
    expect(inner.status).toBe(400);
    expect(JSON.parse(new TextDecoder().decode(inner.body))).toMatchObject({ code: "BHTTP_ERR_TRUNCATED" });
  });

  it("seals 417 for an inner Expect: 100-continue, with the taskid", async () => {
    const { inner, problem } = await roundTrip(fx, {
      method: "PUT",
      path: uploadPath(),
      headers: [["content-type", "application/dap-report"], ["expect", "100-continue"]],
      body: new Uint8Array(10),
    });
    expect(inner.status).toBe(417);
    expect(problem).toMatchObject({ code: "GATEWAY_ERR_EXPECT", taskid: task.idBase64Url });
  });

  it("seals 403 for a target outside the allow-list, with the taskid on a DAP path", async () => {
    const { inner, problem } = await roundTrip(fx, { authority: "evil.example", path: configPath() });
    expect(inner.status).toBe(403);
    expect(problem).toMatchObject({ code: "GATEWAY_ERR_TARGET_FORBIDDEN", taskid: task.idBase64Url });
    const http = await roundTrip(fx, { scheme: "http", path: configPath() });
    expect(http.inner.status).toBe(403);
    const outside = await roundTrip(fx, { authority: "prefixed.example", path: configPath() });
    expect(outside.problem).toMatchObject({ code: "GATEWAY_ERR_TARGET_FORBIDDEN" });
  });

  it("seals 403 for paths and methods outside the DAP policy, refusing DAP-18's POST uploads on a DAP-09 target", async () => {
    const postUpload = await roundTrip(fx, { method: "POST", path: uploadPath(), body: new Uint8Array(3) });
    expect(postUpload.inner.status).toBe(403);
    expect(postUpload.problem).toMatchObject({ code: "GATEWAY_ERR_POLICY", taskid: task.idBase64Url });
    expect(String(postUpload.problem?.detail)).toContain("this target speaks DAP-09");
    for (const path of ["/admin", "/tasks/x/reports", "/hpke_config?task_id=x&y=1", `/tasks/${task.idBase64Url}/collection_jobs/x`]) {
      const r = await roundTrip(fx, { path });
      expect(r.inner.status).toBe(403);
      expect(r.problem).toMatchObject({ code: "GATEWAY_ERR_POLICY" });
    }
    expect((await roundTrip(fx, { method: "DELETE", path: uploadPath() })).inner.status).toBe(403);
    expect((await roundTrip(fx, { path: "/hpke_config" })).inner.status).toBe(400); // allowed: the double wants a task id
  });

  it("lets anything through to an allow-listed target under targets-only", async () => {
    const open = await gateway({ policy: "targets-only" });
    const r = await roundTrip(open, { path: "/anything" });
    expect(r.inner.status).toBe(404); // the double's own 404
    const evil = await roundTrip(open, { authority: "evil.example", path: "/anything" });
    expect(evil.inner.status).toBe(403);
    await open.app.close();
  });

  it("seals 502 when the target is unreachable", async () => {
    const { inner, problem } = await roundTrip(fx, { authority: "down.example", path: configPath() });
    expect(inner.status).toBe(502);
    expect(problem).toMatchObject({ code: "GATEWAY_ERR_UPSTREAM_UNREACHABLE", taskid: task.idBase64Url });
  });

  it("seals 504 when the target does not answer in time", async () => {
    const { inner, problem } = await roundTrip(fx, { authority: "hang.example", path: configPath() });
    expect(inner.status).toBe(504);
    expect(problem).toMatchObject({ code: "GATEWAY_ERR_UPSTREAM_TIMEOUT" });
  });

  it("seals 502 when the target's answer exceeds maxResponseBytes", async () => {
    const { inner, problem } = await roundTrip(fx, { authority: "big.example", path: configPath() });
    expect(inner.status).toBe(502);
    expect(problem).toMatchObject({ code: "GATEWAY_ERR_UPSTREAM_TOO_LARGE" });
  });

  it("strips the token and hop-by-hop fields and adds nothing identifying", async () => {
    const before = leader.received.length;
    await roundTrip(fx, {
      path: configPath(),
      headers: [
        ["accept", "application/dap-hpke-config-list"],
        ["authorization", 'PrivateToken token="AAAA"'],
        ["connection", "x-secret-hop"],
        ["x-secret-hop", "1"],
        ["keep-alive", "timeout=5"],
        ["te", "trailers"],
        ["proxy-authorization", "Basic Zm9v"],
      ],
    });
    expect(leader.received.length).toBe(before + 1);
    const got = leader.received.at(-1)!.headers;
    expect(Object.keys(got).sort()).toEqual(["accept", "connection", "host"].sort());
    expect(got.connection).toBe("keep-alive");
    expect(got.host).toBe(new URL(leader.url).host);
  });

  it("forwards other Authorization schemes (targets-only deployments may use them)", async () => {
    await roundTrip(fx, { path: configPath(), headers: [["authorization", "Bearer abc"]] });
    expect(leader.received.at(-1)!.headers.authorization).toBe("Bearer abc");
  });
});

describe("gateway: the token gate seam", () => {
  class RecordingGate implements Gate {
    admitted: GateInput[] = [];
    settled: boolean[] = [];
    refuse = false;
    async admit(input: GateInput) {
      if (this.refuse) {
        throw new ProtocolError("PP_ERR_TOKEN_MISSING", undefined, { headers: { "WWW-Authenticate": 'PrivateToken challenge="x", token-key="y"' } });
      }
      this.admitted.push(input);
      return { settle: async (reached: boolean) => void this.settled.push(reached) };
    }
  }

  it("admits after the policy, then settles with whether the target was reached", async () => {
    const gate = new RecordingGate();
    const g = await gateway({}, { deps: { gate } });
    await roundTrip(g, { path: "/admin" }); // policy refuses: the gate never sees it
    expect(gate.admitted.length).toBe(0);
    await roundTrip(g, { path: configPath() });
    await roundTrip(g, { authority: "down.example", path: configPath() });
    await roundTrip(g, { authority: "hang.example", path: configPath() });
    expect(gate.admitted.map((a) => [a.route, a.target.innerOrigin, a.taskId])).toEqual([
      ["dap-hpke-config", "https://leader.example", task.idBase64Url],
      ["dap-hpke-config", "https://down.example", task.idBase64Url],
      ["dap-hpke-config", "https://hang.example", task.idBase64Url],
    ]);
    expect(gate.settled).toEqual([true, false, true]);
    await g.app.close();
  });

  it("seals the gate's refusal with its WWW-Authenticate header and the taskid", async () => {
    const gate = new RecordingGate();
    gate.refuse = true;
    const g = await gateway({}, { deps: { gate } });
    const before = leader.received.length;
    const { inner, problem } = await roundTrip(g, { method: "PUT", path: uploadPath(), headers: [["content-type", "application/dap-report"]], body: new Uint8Array(5) });
    expect(inner.status).toBe(401);
    expect(inner.headers).toContainEqual(["www-authenticate", 'PrivateToken challenge="x", token-key="y"']);
    expect(problem).toMatchObject({ code: "PP_ERR_TOKEN_MISSING", taskid: task.idBase64Url });
    expect(leader.received.length).toBe(before);
    await g.app.close();
  });

  it("refuses to build with tokens.required and no gate", async () => {
    await expect(makeGateway({ tokens: { required: true, issuers: [{ name: "i.example", directory: "http://127.0.0.1:1/d" }] } })).rejects.toMatchObject({
      code: "CFG_ERR_INVALID",
    });
  });
});

describe("gateway: keys, health, metrics, logs", () => {
  it("serves the active key configs with caching headers and revalidation", async () => {
    const res = await fx.app.inject({ method: "GET", url: "/ohttp-keys" });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toBe("application/ohttp-keys");
    expect(res.headers["cache-control"]).toBe(`public, max-age=${fx.config.keysMaxAgeSec}`);
    const configs = decodeKeyConfigs(new Uint8Array(res.rawPayload));
    expect(configs.map((c) => c.keyId)).toEqual([1]);
    expect(configs[0]!.publicKey).toEqual(fx.keyConfig.publicKey);
    const again = await fx.app.inject({ method: "GET", url: "/ohttp-keys", headers: { "if-none-match": String(res.headers.etag) } });
    expect(again.statusCode).toBe(304);
  });

  it("answers /healthz and /readyz", async () => {
    expect((await fx.app.inject({ method: "GET", url: "/healthz" })).statusCode).toBe(200);
    expect((await fx.app.inject({ method: "GET", url: "/readyz" })).json()).toMatchObject({ status: "ready" });
  });

  it("counts requests by route and outcome, and decapsulations by key id", async () => {
    await roundTrip(fx, { path: configPath() });
    const text = (await fx.app.inject({ method: "GET", url: "/metrics" })).body;
    expect(text).toMatch(/veil_http_requests_total\{route="\/gateway",outcome="forwarded",status="200"/);
    expect(text).toMatch(/veil_http_requests_total\{route="\/gateway",outcome="GATEWAY_ERR_POLICY",status="200"/);
    expect(text).toMatch(/veil_gateway_decapsulations_total\{key_id="1"/);
    expect(text).toMatch(/veil_gateway_keys\{key_id="1",kem="x25519",state="active"/);
    expect(text).toMatch(/veil_gateway_upstream_total\{target="https:\/\/leader.example",result="2xx"/);
  });

  it("logs one line per request with route, outcome and duration, and nothing secret", async () => {
    const g = await gateway();
    const secretToken = "PrivateToken token=\"c2VjcmV0LXRva2VuLWJ5dGVz\"";
    await roundTrip(g, { path: configPath(), headers: [["authorization", secretToken]] });
    await roundTrip(g, { authority: "evil.example", path: configPath() });
    await g.app.inject({ method: "GET", url: "/ohttp-keys", remoteAddress: "203.0.113.7" });
    const requests = g.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === "request");
    expect(requests.length).toBe(3);
    expect(requests[0]).toMatchObject({ route: "/gateway", outcome: "forwarded", status: 200 });
    expect(requests[1]).toMatchObject({ route: "/gateway", outcome: "GATEWAY_ERR_TARGET_FORBIDDEN" });
    expect(typeof requests[0]!.durationMs).toBe("number");
    const all = g.lines.join("\n");
    for (const secret of ["c2VjcmV0", "203.0.113.7", "127.0.0.1", task.idBase64Url, "privateKey\":\"", Buffer.from(g.secrets[0]!).toString("hex")]) {
      expect(all).not.toContain(secret);
    }
    await g.app.close();
  });
});
