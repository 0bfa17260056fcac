// HTTPS on both hops (RFC 9458 §6): the relay serving TLS itself (lean path and node:http behind
// it), and https gateways trusted through a per-route CA, with and without a client certificate
// (mTLS). Throwaway certificates are made with openssl for each run.

import { Readable } from "node:stream";
import { Agent, request } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startStandIn, type StandIn } from "../helpers/relay-gateway-stand-in.js";
import { startTestRelay, type TestRelay } from "../helpers/relay-harness.js";
import { SERVER_EXT, createTestCa, type TestCa } from "../helpers/test-ca.js";

const OHTTP_REQ = "message/ohttp-req";
let ca: TestCa;
const file = (name: string) => ca.file(name);
const pem = (name: string) => ca.pem(name);

beforeAll(() => {
  ca = createTestCa("veil-relay-tls-");
  ca.makeCa("test-ca");
  ca.makeCa("other-ca");
  ca.makeCert("gateway", "test-ca", SERVER_EXT);
  ca.makeCert("relay-front", "test-ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  ca.makeCert("relay-operator", "test-ca", "extendedKeyUsage=clientAuth\n");
});

afterAll(() => {
  ca.close();
});

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function gateway(mtls: boolean): Promise<StandIn> {
  const gw = await startStandIn({ tls: { cert: pem("gateway.pem"), key: pem("gateway.key"), ...(mtls ? { ca: pem("test-ca.pem") } : {}) } });
  cleanups.push(() => gw.close());
  return gw;
}

async function relay(raw: Record<string, unknown>): Promise<TestRelay> {
  const r = await startTestRelay(raw);
  cleanups.push(() => r.stop());
  return r;
}

function post(url: string, body: string, dispatcher?: Agent) {
  return request(url, { method: "POST", body, headers: { "content-type": OHTTP_REQ }, ...(dispatcher === undefined ? {} : { dispatcher }) });
}

describe("relay to an https gateway", () => {
  it("trusts the route's CA", async () => {
    const gw = await gateway(false);
    const r = await relay({ routes: [{ path: "/gw", gateway: `${gw.url}/gateway`, ca: file("test-ca.pem") }] });
    const res = await post(`${r.url}/gw`, "over-tls");
    expect(res.statusCode).toBe(200);
    expect(await res.body.text()).toBe("res:over-tls");
  });

  it("refuses a gateway certificate from another CA with 502", async () => {
    const gw = await gateway(false);
    const r = await relay({ routes: [{ path: "/gw", gateway: `${gw.url}/gateway`, ca: file("other-ca.pem") }] });
    const res = await post(`${r.url}/gw`, "x");
    expect(res.statusCode).toBe(502);
    expect(await res.body.json()).toMatchObject({ code: "RELAY_ERR_UPSTREAM_UNREACHABLE" });
    expect(gw.requests).toHaveLength(0);
  });

  it("authenticates with its client certificate (mTLS), for forwarding and key fetches", async () => {
    const gw = await gateway(true);
    const r = await relay({
      routes: [
        {
          path: "/gw",
          gateway: `${gw.url}/gateway`,
          keys: `${gw.url}/ohttp-keys`,
          ca: file("test-ca.pem"),
          clientCert: file("relay-operator.pem"),
          clientKey: file("relay-operator.key"),
        },
      ],
    });
    const res = await post(`${r.url}/gw`, "mtls");
    expect(res.statusCode).toBe(200);
    expect(await res.body.text()).toBe("res:mtls");
    expect(gw.requests[0]!.clientCertSubject).toBe("relay-operator");
    const keys = await request(`${r.url}/gw/ohttp-keys`);
    expect(keys.statusCode).toBe(200);
    expect(Buffer.from(await keys.body.arrayBuffer()).equals(gw.keys.body)).toBe(true);
  });

  it("gets 502 from a gateway that requires a client certificate it does not have", async () => {
    const gw = await gateway(true);
    const r = await relay({ routes: [{ path: "/gw", gateway: `${gw.url}/gateway`, ca: file("test-ca.pem") }] });
    const res = await post(`${r.url}/gw`, "x");
    expect(res.statusCode).toBe(502);
    await res.body.dump();
    expect(gw.requests).toHaveLength(0);
  });
});

describe("relay serving HTTPS (listen.tls)", () => {
  it("serves the lean path and node:http over TLS", async () => {
    const gw = await startStandIn();
    cleanups.push(() => gw.close());
    const r = await relay({
      listen: { tls: { cert: file("relay-front.pem"), key: file("relay-front.key") } },
      routes: [{ path: "/gw", gateway: `${gw.url}/gateway` }],
    });
    expect(r.url.startsWith("https://")).toBe(true);
    const client = new Agent({ connect: { ca: pem("test-ca.pem") } });
    cleanups.push(() => client.close());
    const a = await post(`${r.url}/gw`, "lean", client);
    expect(await a.body.text()).toBe("res:lean");
    async function* chunks() {
      yield Buffer.from("chun");
      yield Buffer.from("ked");
    }
    const b = await request(`${r.url}/gw`, { method: "POST", body: Readable.from(chunks()), headers: { "content-type": OHTTP_REQ }, dispatcher: client });
    expect(await b.body.text()).toBe("res:chunked");
    const c = await request(`${r.url}/healthz`, { dispatcher: client });
    expect(await c.body.json()).toEqual({ status: "ok" });
    const d = await post(`${r.url}/gw`, "again", client);
    expect(await d.body.text()).toBe("res:again");
  });
});
