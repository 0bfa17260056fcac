// The stock @cloudflare/privacypass-ts client (not Veil's) against Veil's issuer and gate: it reads
// the gate's challenge from the sealed 401, gets a token from the issuer (type 2 and type 1), and
// the gate accepts it once.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AuthorizationHeader, WWWAuthenticateHeader, privateVerif, publicVerif } from "@cloudflare/privacypass-ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { KeyConfig } from "../../core/ohttp/index.js";
import { createDapTask, startDapAggregator, type DapAggregator, type DapTask } from "../../demo/dap-aggregator.js";
import { parseGatewayConfig } from "../../gateway/config.js";
import { writeKeyFile } from "../../gateway/key-file.js";
import { startGateway, type StartedGateway } from "../../gateway/main.js";
import { parseIssuerConfig } from "../../issuer/config.js";
import { startIssuer, type StartedIssuer } from "../../issuer/main.js";
import { createLogger } from "../../server/logging.js";
import { makeKeyData } from "../helpers/gateway-fixture.js";
import { fetchKeyConfig } from "../helpers/oblivious-fetch.js";
import { header, makeDapReports, problem, sealedUpload, uploadPath } from "../helpers/token-gateway.js";

const CREDENTIAL = "client-credential-1";
const dir = mkdtempSync(join(tmpdir(), "veil-stock-"));
let task: DapTask;
let leader: DapAggregator;
let helper: DapAggregator;
let issuer: StartedIssuer;
let gateway: StartedGateway;
let keyConfig: KeyConfig;
let reports: Uint8Array[];
const silent = createLogger("test", { level: "silent" });

beforeAll(async () => {
  task = await createDapTask();
  leader = await startDapAggregator({ role: "leader", tasks: [task] });
  helper = await startDapAggregator({ role: "helper", tasks: [task] });
  reports = await makeDapReports(task, leader.url, helper.url, 6);
  const issuerKeys = join(dir, "issuer-keys.json");
  issuer = await startIssuer(
    parseIssuerConfig({
      listen: { host: "127.0.0.1", port: 0 },
      name: "issuer.example",
      keys: issuerKeys,
      tokenTypes: [2, 1],
      keyLifetimeSec: 3600,
      attester: { credentials: [CREDENTIAL], tokensPerWindow: 10, windowSec: 3600 },
    }),
    { log: silent, handleSignals: false },
  );
  const keyFile = join(dir, "gateway-keys.json");
  writeKeyFile(keyFile, (await makeKeyData([{ keyId: 1 }])).data);
  gateway = await startGateway(
    parseGatewayConfig({
      listen: { host: "127.0.0.1", port: 0 },
      keys: keyFile,
      targets: { "https://leader.example": leader.url },
      tokens: {
        required: true,
        issuers: [
          { name: "issuer.example", directory: `${issuer.url}/.well-known/private-token-issuer-directory`, keyLifetimeSec: 3600, keyFile: issuerKeys },
        ],
        store: `sqlite:${join(dir, "nonces.db")}`,
        greaseProbability: 0,
      },
    }),
    { log: silent, handleSignals: false },
  );
  keyConfig = await fetchKeyConfig(gateway.url);
});

afterAll(async () => {
  await gateway?.stop();
  await issuer?.stop();
  await leader?.close();
  await helper?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** What a stock client does with a WWW-Authenticate challenge: ask the issuer for a token. */
async function stockToken(challenge: WWWAuthenticateHeader): Promise<string> {
  const client = challenge.challenge.tokenType === 2 ? new publicVerif.Client(publicVerif.BlindRSAMode.PSS) : new privateVerif.Client();
  const request = await client.createTokenRequest(challenge.challenge, challenge.tokenKey);
  const res = await fetch(`${issuer.url}/token-request`, {
    method: "POST",
    headers: { "content-type": "application/private-token-request", authorization: `Bearer ${CREDENTIAL}` },
    body: new Uint8Array(request.serialize()),
  });
  expect(res.status).toBe(200);
  const body = new Uint8Array(await res.arrayBuffer());
  const token =
    client instanceof publicVerif.Client
      ? await client.finalize(client.deserializeTokenResponse(body))
      : await client.finalize(privateVerif.TokenResponse.deserialize(body));
  return new AuthorizationHeader(token).toString(true);
}

describe("the stock privacypass-ts client with Veil's issuer and gate", () => {
  it.each([2, 1])("gets a type %i token for the gate's challenge and redeems it once", async (tokenType) => {
    const tokenless = await sealedUpload(gateway.url, keyConfig, { path: uploadPath(task), body: reports[0]! });
    expect(tokenless.status).toBe(401);
    const challenges = WWWAuthenticateHeader.parse(header(tokenless, "www-authenticate")!);
    expect(challenges.map((c) => c.challenge.tokenType)).toEqual([2, 1]);
    const challenge = challenges.find((c) => c.challenge.tokenType === tokenType)!;
    expect(challenge.challenge.issuerName).toBe("issuer.example");
    expect(challenge.challenge.originInfo).toEqual(["leader.example"]);
    const authorization = await stockToken(challenge);
    const report = reports[tokenType * 2]!;
    const ok = await sealedUpload(gateway.url, keyConfig, { path: uploadPath(task), body: report, authorization });
    expect(ok.status).toBe(201);
    const spent = await sealedUpload(gateway.url, keyConfig, { path: uploadPath(task), body: reports[tokenType * 2 + 1]!, authorization });
    expect(spent.status).toBe(401);
    expect(problem(spent).type).toBe("urn:veil:error:PP_ERR_TOKEN_REPLAYED");
  });
});
