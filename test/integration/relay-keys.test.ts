// GET <path>/ohttp-keys through a running relay: one cached copy per route, the same bytes for every
// client, refreshed by the gateway's max-age, served stale while the gateway is briefly down.

import { Agent, request } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { fakeKeyConfigs, startStandIn, type StandIn } from "../helpers/relay-gateway-stand-in.js";
import { startTestRelay, type TestRelay } from "../helpers/relay-harness.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function setup(): Promise<{ gw: StandIn; relay: TestRelay; clock: { now: number } }> {
  const gw = await startStandIn();
  cleanups.push(() => gw.close());
  const clock = { now: 1_700_000_000_000 };
  const relay = await startTestRelay(
    { routes: [{ path: "/gw", gateway: `${gw.url}/gateway`, keys: `${gw.url}/ohttp-keys` }], keyCache: { retrySec: 0, staleIfErrorSec: 600 } },
    { now: () => clock.now },
  );
  cleanups.push(() => relay.stop());
  return { gw, relay, clock };
}

async function getKeys(relay: TestRelay, localAddress?: string) {
  const dispatcher = localAddress === undefined ? undefined : new Agent({ localAddress });
  const res = await request(`${relay.url}/gw/ohttp-keys`, dispatcher === undefined ? {} : { dispatcher });
  const body = Buffer.from(await res.body.arrayBuffer());
  await dispatcher?.close();
  return { status: res.statusCode, headers: res.headers, body };
}

describe("relay key cache", () => {
  it("serves every client byte for byte the same copy, fetched once", async () => {
    const { gw, relay } = await setup();
    const answers = await Promise.all(["127.0.0.1", "127.0.0.2", "127.0.0.3", undefined].map((a) => getKeys(relay, a)));
    for (const a of answers) {
      expect(a.status).toBe(200);
      expect(a.headers["content-type"]).toBe("application/ohttp-keys");
      expect(a.body.equals(gw.keys.body)).toBe(true);
      expect(a.headers.etag).toBe(answers[0]!.headers.etag);
    }
    expect(gw.keyFetches).toBe(1);
  });

  it("refetches when the gateway's max-age has passed", async () => {
    const { gw, relay, clock } = await setup();
    await getKeys(relay);
    gw.keys = { body: fakeKeyConfigs(9, 9), cacheControl: "max-age=300" };
    clock.now += 30_000;
    expect((await getKeys(relay)).body.equals(fakeKeyConfigs(1))).toBe(true);
    clock.now += 31_000;
    const fresh = await getKeys(relay);
    expect(fresh.body.equals(fakeKeyConfigs(9, 9))).toBe(true);
    expect(fresh.headers["cache-control"]).toBe("public, max-age=300");
    expect(gw.keyFetches).toBe(2);
  });

  it("serves the stale copy while the gateway is down", async () => {
    const { gw, relay, clock } = await setup();
    const first = await getKeys(relay);
    await gw.close();
    clock.now += 120_000;
    const stale = await getKeys(relay);
    expect(stale.status).toBe(200);
    expect(stale.body.equals(first.body)).toBe(true);
    expect(stale.headers["cache-control"]).toBe("public, max-age=0");
    expect(relay.lines.some((l) => l.includes("key configuration fetch failed"))).toBe(true);
    clock.now += 700_000;
    const gone = await getKeys(relay);
    expect(gone.status).toBe(502);
    expect(JSON.parse(gone.body.toString())).toMatchObject({ code: "RELAY_ERR_KEYS_UNAVAILABLE" });
  });
});
