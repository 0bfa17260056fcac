import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isProtocolError } from "../../../core/errors.js";
import { importVoprfPrivateKey } from "../../../core/privacypass/verify-node.js";
import {
  DIRECTORY_DEFAULTS,
  TokenKeyDirectory,
  defaultFetcher,
  freshnessSec,
  parseDirectory,
  type DirectoryFetcher,
  type DirectoryResponse,
} from "../../../gateway/issuer-directory.js";
import { directoryDocument, makeBlindRsaIssuerKey, makeVoprfIssuerKey, type TestIssuerKey } from "../../helpers/tokens.js";

const T0 = 1_700_000_000_000;
const LIFETIME = 3600;

function headers(h: Record<string, string>): DirectoryResponse["headers"] {
  return { get: (n: string) => h[n.toLowerCase()] ?? null };
}

/** A programmable issuer: what the next fetch answers, and what the gate sent. */
function fakeIssuer(): {
  fetcher: DirectoryFetcher;
  requests: Record<string, string>[];
  serve(keys: { key: TestIssuerKey; notBeforeSec?: number }[], h?: Record<string, string>): void;
  down(): void;
} {
  let answer: (() => DirectoryResponse) | undefined;
  let etag = 0;
  let current: { body: Uint8Array; etag: string; h: Record<string, string> } | undefined;
  const requests: Record<string, string>[] = [];
  return {
    requests,
    fetcher: async (_url, init) => {
      requests.push(init.headers);
      if (answer === undefined) throw new Error("ECONNREFUSED");
      return answer();
    },
    serve(keys, h = { "cache-control": "max-age=60" }) {
      current = { body: directoryDocument(keys), etag: `"v${++etag}"`, h };
      const c = current;
      answer = () => {
        const last = requests[requests.length - 1]!;
        if (last["if-none-match"] === c.etag) return { status: 304, headers: headers({ ...c.h, etag: c.etag }), body: new Uint8Array() };
        return { status: 200, headers: headers({ ...c.h, etag: c.etag }), body: c.body };
      };
    },
    down() {
      answer = undefined;
    },
  };
}

const k1 = makeBlindRsaIssuerKey({ reuse: 0 });
const k2 = makeBlindRsaIssuerKey({ reuse: 1 });
const source = { name: "issuer.example", directory: "https://issuer.example/.well-known/private-token-issuer-directory", keyLifetimeSec: LIFETIME };

function setup(deps: { voprf?: TestIssuerKey } = {}) {
  const clock = { t: T0 };
  const issuer = fakeIssuer();
  const dir = new TokenKeyDirectory([source], {
    fetcher: issuer.fetcher,
    now: () => clock.t,
    ...(deps.voprf === undefined ? {} : { voprfKeys: [importVoprfPrivateKey(deps.voprf.voprfPrivateKey!)] }),
  });
  return { clock, issuer, dir };
}

describe("issuer directory", () => {
  it("is not ready until the directory was fetched, then finds keys by full token key id", async () => {
    const { issuer, dir } = setup();
    await expect(dir.ready()).rejects.toSatisfy((e) => isProtocolError(e) && e.code === "PP_ERR_ISSUER_UNAVAILABLE");
    issuer.serve([{ key: k1, notBeforeSec: T0 / 1000 - 10 }]);
    await dir.start();
    await dir.ready();
    const found = await dir.find(2, k1.tokenKeyId);
    expect(found?.issuerName).toBe("issuer.example");
    expect(found?.verification).toBeDefined();
    expect(await dir.find(2, k2.tokenKeyId)).toBeUndefined();
    expect(await dir.find(1, k1.tokenKeyId)).toBeUndefined(); // right id, wrong type
  });

  it("accepts a key only from its not-before until not-before + keyLifetimeSec", async () => {
    const { clock, issuer, dir } = setup();
    issuer.serve([{ key: k1, notBeforeSec: T0 / 1000 + 100 }], { "cache-control": "max-age=86400" });
    await dir.start();
    expect(await dir.find(2, k1.tokenKeyId)).toBeUndefined();
    clock.t = T0 + 100_000;
    expect(await dir.find(2, k1.tokenKeyId)).toBeDefined();
    clock.t = T0 + 100_000 + LIFETIME * 1000 - 1;
    expect(await dir.find(2, k1.tokenKeyId)).toBeDefined();
    clock.t = T0 + 100_000 + LIFETIME * 1000;
    expect(await dir.find(2, k1.tokenKeyId)).toBeUndefined();
  });

  it("does not refetch while fresh, then revalidates with If-None-Match and keeps the keys on 304", async () => {
    const { clock, issuer, dir } = setup();
    issuer.serve([{ key: k1, notBeforeSec: T0 / 1000 }]);
    await dir.start();
    expect(issuer.requests).toHaveLength(1);
    clock.t += 59_000;
    await dir.find(2, k1.tokenKeyId);
    expect(issuer.requests).toHaveLength(1);
    clock.t += 2_000;
    await dir.find(2, k1.tokenKeyId);
    await dir.issuers[0]!.refreshIfStale(); // the in-flight refresh
    expect(issuer.requests).toHaveLength(2);
    expect(issuer.requests[1]!["if-none-match"]).toBe('"v1"');
    expect(await dir.find(2, k1.tokenKeyId)).toBeDefined();
  });

  it("follows rotation: a new key appears and a removed one disappears", async () => {
    const { clock, issuer, dir } = setup();
    issuer.serve([{ key: k1, notBeforeSec: T0 / 1000 }]);
    await dir.start();
    issuer.serve([{ key: k2, notBeforeSec: T0 / 1000 }]);
    clock.t += 61_000;
    await dir.issuers[0]!.refreshIfStale();
    expect(await dir.find(2, k2.tokenKeyId)).toBeDefined();
    expect(dir.issuers[0]!.allKeys.map((k) => k.tokenKeyId)).toEqual([k2.tokenKeyId]);
  });

  it("keeps the last good keys while the issuer is unreachable, but never past their lifetime", async () => {
    const { clock, issuer, dir } = setup();
    issuer.serve([{ key: k1, notBeforeSec: T0 / 1000 }]);
    await dir.start();
    issuer.down();
    clock.t += 120_000;
    await dir.issuers[0]!.refreshIfStale();
    expect(await dir.find(2, k1.tokenKeyId)).toBeDefined();
    expect(dir.hasValidKeys()).toBe(true);
    await dir.ready(); // fetched once: still ready
    clock.t = T0 + LIFETIME * 1000;
    expect(await dir.find(2, k1.tokenKeyId)).toBeUndefined();
    expect(dir.hasValidKeys()).toBe(false);
    expect(dir.challengeKeys()).toEqual([]);
  });

  it("keeps the last good keys when the issuer serves a broken directory or an error status", async () => {
    const { clock, issuer, dir } = setup();
    const events: string[] = [];
    issuer.serve([{ key: k1, notBeforeSec: T0 / 1000 }]);
    await dir.start();
    const broken: DirectoryFetcher = async () => ({ status: 200, headers: headers({}), body: new TextEncoder().encode("{nope") });
    const dir2 = new TokenKeyDirectory([source], { fetcher: broken, now: () => clock.t, onEvent: (e) => events.push(e.what) });
    await dir2.start();
    expect(dir2.issuers[0]!.fetched).toBe(false);
    expect(events).toEqual(["directory fetch failed"]);
    issuer.down();
    clock.t += 61_000;
    await dir.issuers[0]!.refreshIfStale();
    expect(await dir.find(2, k1.tokenKeyId)).toBeDefined();
  });

  it("backs off after a failed fetch instead of retrying on every lookup", async () => {
    const { clock, issuer, dir } = setup();
    await dir.start();
    expect(issuer.requests).toHaveLength(1);
    await dir.find(2, k1.tokenKeyId);
    await dir.find(2, k1.tokenKeyId);
    expect(issuer.requests.length).toBeLessThanOrEqual(2);
    clock.t += 2_000;
    issuer.serve([{ key: k1, notBeforeSec: T0 / 1000 }]);
    await dir.ready();
    expect(await dir.find(2, k1.tokenKeyId)).toBeDefined();
  });

  it("refetches once for an unknown key id (rate-limited), picking up a key published since", async () => {
    const { clock, issuer, dir } = setup();
    issuer.serve([{ key: k1, notBeforeSec: T0 / 1000 }], { "cache-control": "max-age=86400" });
    await dir.start();
    issuer.serve([{ key: k1, notBeforeSec: T0 / 1000 }, { key: k2, notBeforeSec: T0 / 1000 }], { "cache-control": "max-age=86400" });
    expect(await dir.find(2, k2.tokenKeyId)).toBeDefined();
    expect(issuer.requests).toHaveLength(2);
    const random = new Uint8Array(32).fill(7);
    expect(await dir.find(2, random)).toBeUndefined();
    expect(await dir.find(2, random)).toBeUndefined();
    expect(issuer.requests).toHaveLength(2); // within minRefetchMs: no new fetch
    clock.t += DIRECTORY_DEFAULTS.minRefetchMs;
    expect(await dir.find(2, random)).toBeUndefined();
    expect(issuer.requests).toHaveLength(3);
  });

  it("counts a key without not-before from when the gate first saw it", async () => {
    const { clock, issuer, dir } = setup();
    issuer.serve([{ key: k1 }], { "cache-control": "max-age=10" });
    await dir.start();
    clock.t += 30_000;
    await dir.issuers[0]!.refreshIfStale();
    expect(dir.issuers[0]!.allKeys[0]!.notBeforeMs).toBe(T0);
    clock.t = T0 + LIFETIME * 1000;
    expect(await dir.find(2, k1.tokenKeyId)).toBeUndefined();
  });

  it("uses a type 1 key only when the gate holds its private key", async () => {
    const v = makeVoprfIssuerKey();
    const a = setup();
    a.issuer.serve([{ key: v, notBeforeSec: T0 / 1000 }, { key: k1, notBeforeSec: T0 / 1000 }]);
    await a.dir.start();
    expect((await a.dir.find(1, v.tokenKeyId))?.verification).toBeUndefined();
    expect(a.dir.challengeKeys().map((k) => k.tokenType)).toEqual([2]);
    const b = setup({ voprf: v });
    b.issuer.serve([{ key: v, notBeforeSec: T0 / 1000 }, { key: k1, notBeforeSec: T0 / 1000 }]);
    await b.dir.start();
    expect((await b.dir.find(1, v.tokenKeyId))?.verification).toBeDefined();
    expect(b.dir.challengeKeys().map((k) => k.tokenType)).toEqual([1, 2]);
  });

  it("offers, per token type, the first key in directory order whose not-before has passed", async () => {
    const { issuer, dir } = setup();
    issuer.serve([
      { key: k2, notBeforeSec: T0 / 1000 + 600 }, // the successor, published ahead of use
      { key: k1, notBeforeSec: T0 / 1000 - 600 },
    ]);
    await dir.start();
    expect(dir.challengeKeys().map((k) => k.tokenKeyId)).toEqual([k1.tokenKeyId]);
  });
});

describe("directory parsing", () => {
  it("skips entries it cannot use and ignores unknown members", () => {
    const doc = {
      "issuer-request-uri": "https://i/x",
      extra: 1,
      "token-keys": [
        { "token-type": 2, "token-key": "AAAA", "not-before": 5, other: true },
        { "token-type": "2", "token-key": "AAAA" },
        { "token-type": 2, "token-key": "not base64!" },
        { "token-type": 2, "token-key": "AAAA", "not-before": -1 },
        null,
      ],
    };
    const keys = parseDirectory(new TextEncoder().encode(JSON.stringify(doc)));
    expect(keys).toHaveLength(1);
    expect(keys[0]!.notBeforeSec).toBe(5);
  });

  it.each(["", "[]", '{"token-keys": 3}', "\xff"])("rejects the document %j", (text) => {
    expect(() => parseDirectory(new TextEncoder().encode(text))).toThrow(expect.objectContaining({ code: "PP_ERR_ISSUER_UNAVAILABLE" }));
  });

  it("reads freshness from Cache-Control max-age minus Age, within bounds", () => {
    const o = DIRECTORY_DEFAULTS;
    expect(freshnessSec(headers({ "cache-control": "public, max-age=600" }), o)).toBe(600);
    expect(freshnessSec(headers({ "cache-control": "max-age=600", age: "100" }), o)).toBe(500);
    expect(freshnessSec(headers({ "cache-control": "no-cache" }), o)).toBe(o.minMaxAgeSec);
    expect(freshnessSec(headers({}), o)).toBe(o.defaultMaxAgeSec);
    expect(freshnessSec(headers({ "cache-control": "max-age=99999999" }), o)).toBe(o.maxMaxAgeSec);
  });
});

describe("default fetcher against a real HTTP issuer", () => {
  let server: Server;
  let url: string;
  let hits = 0;
  const body = directoryDocument([{ key: k1, notBeforeSec: Math.floor(Date.now() / 1000) - 10 }]);
  beforeAll(async () => {
    server = createServer((req, res) => {
      hits++;
      if (req.url === "/big") {
        res.writeHead(200, { "content-type": "application/private-token-issuer-directory" });
        res.end(Buffer.alloc(200_000, 0x20));
        return;
      }
      if (req.headers["if-none-match"] === '"e1"') {
        res.writeHead(304, { etag: '"e1"', "cache-control": "max-age=10" });
        res.end();
        return;
      }
      res.writeHead(200, { "content-type": "application/private-token-issuer-directory", etag: '"e1"', "cache-control": "max-age=10" });
      res.end(body);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
  });

  it("fetches, then revalidates with the ETag", async () => {
    const clock = { t: Date.now() };
    const dir = new TokenKeyDirectory([{ ...source, directory: url + "/.well-known/private-token-issuer-directory" }], { now: () => clock.t });
    await dir.start();
    expect(await dir.find(2, k1.tokenKeyId)).toBeDefined();
    clock.t += 11_000;
    hits = 0;
    await dir.issuers[0]!.refresh();
    expect(hits).toBe(1);
    expect(await dir.find(2, k1.tokenKeyId)).toBeDefined();
  });

  it("refuses a directory larger than the limit", async () => {
    await expect(defaultFetcher(url + "/big", { headers: {}, timeoutMs: 2000, maxBytes: 65_536 })).rejects.toSatisfy(
      (e) => isProtocolError(e) && e.code === "PP_ERR_ISSUER_UNAVAILABLE",
    );
  });
});
