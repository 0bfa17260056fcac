// The whole Veil stack, in process, on free loopback ports, for the client's end-to-end tests:
// DAP-09 leader and helper doubles, DAP-18 leader and helper doubles (one gateway fronts both
// drafts: DAP-09 targets as URLs, DAP-18 targets as { upstream, dap: "18" }), the issuer (type 2 tokens, attester with a quota), the gateway
// (DAP policy, tokens required, memory nonce store) and the relay, each from its own start function
// with a validated config, the way `veil <component> --config` starts them.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createDapTask, startDapAggregator, type DapAggregator, type DapTask } from "../../demo/dap-aggregator.js";
import { createDapHpkeKey, type DapHpkeKey } from "../../demo/dap-double.js";
import { createDap18Task, startDap18Aggregator, type Dap18Aggregator, type Dap18Task } from "../../demo/dap18-aggregator.js";
import { parseGatewayConfig } from "../../gateway/config.js";
import { writeKeyFile } from "../../gateway/key-file.js";
import { startGateway, type StartedGateway } from "../../gateway/main.js";
import { createTokenGate } from "../../gateway/tokens.js";
import { parseIssuerConfig } from "../../issuer/config.js";
import { startIssuer, type StartedIssuer } from "../../issuer/main.js";
import { parseRelayConfig } from "../../relay/config.js";
import { startRelay, type StartedRelay } from "../../relay/main.js";
import { createLogger } from "../../server/logging.js";
import { captureLines, makeKeyData } from "./gateway-fixture.js";

export const STACK_CREDENTIAL = "client-credential-1";
/** Inner origins the gateway maps to the leader and helper doubles. */
export const LEADER = "https://leader.example";
export const HELPER = "https://helper.example";
/** Inner origins of the DAP-18 leader and helper doubles. */
export const LEADER18 = "https://leader18.example";
export const HELPER18 = "https://helper18.example";

export interface VeilStack {
  leader: DapAggregator;
  helper: DapAggregator;
  tasks: { count: DapTask; sum: DapTask; histogram: DapTask };
  dap18: { leader: Dap18Aggregator; helper: Dap18Aggregator; task: Dap18Task; keys: { leader: DapHpkeKey[]; helper: DapHpkeKey[] } };
  issuer: StartedIssuer;
  gateway: StartedGateway;
  relay: StartedRelay;
  /** POST here (the relay route for the gateway). */
  relayUrl: string;
  /** The gateway's own key configurations. */
  keysUrl: string;
  issuerUrl: string;
  /** The gateway's key file (rewrite it, then `gateway.reloadKeys()`, to rotate). */
  keyFile: string;
  /** Every log line of the three servers. */
  lines: string[];
  stop(): Promise<void>;
}

export interface VeilStackOptions {
  tokensRequired?: boolean;
  tokensPerWindow?: number;
  credentials?: string[];
  /** cors.origins of relay, issuer and gateway (browser pages on other origins). */
  corsOrigins?: string[];
  /**
   * ARC instead of type 2: the issuer issues ARC credentials only, the gateway trusts it as an ARC
   * issuer reading the issuer's key file, with this rate limit and contexts; `now` is the gate's
   * clock (to move to the next epoch without waiting).
   */
  arc?: { rateLimit: number; redemptionContext?: "task-epoch" | "epoch" | "none"; credentialContext?: "epoch" | "none"; now?: () => number };
  /** tokens.maxReportsPerToken of the gateway (default 1). */
  maxReportsPerToken?: number;
}

export async function startVeilStack(o: VeilStackOptions = {}): Promise<VeilStack> {
  const dir = mkdtempSync(join(tmpdir(), "veil-stack-"));
  const cors = o.corsOrigins === undefined ? {} : { cors: { origins: o.corsOrigins } };
  const { stream, lines } = captureLines();
  const log = (name: string) => createLogger(name, { destination: stream });
  const tasks = { count: await createDapTask(), sum: await createDapTask(), histogram: await createDapTask() };
  const all = [tasks.count, tasks.sum, tasks.histogram];
  const leader = await startDapAggregator({ role: "leader", tasks: all });
  const helper = await startDapAggregator({ role: "helper", tasks: all });
  const keys18 = { leader: [await createDapHpkeKey(18)], helper: [await createDapHpkeKey(19)] };
  const task18 = createDap18Task({ configuration: { leaderEndpoint: `${LEADER18}/`, helperEndpoint: `${HELPER18}/` } });
  const leader18 = await startDap18Aggregator({ role: "leader", keys: keys18, tasks: [task18] });
  const helper18 = await startDap18Aggregator({ role: "helper", keys: keys18, tasks: [task18] });

  const issuer = await startIssuer(
    parseIssuerConfig({
      listen: { host: "127.0.0.1", port: 0 },
      name: "issuer.example",
      keys: join(dir, "issuer-keys.json"),
      tokenTypes: o.arc === undefined ? [2] : [0xe5ac],
      attester: { credentials: o.credentials ?? [STACK_CREDENTIAL], tokensPerWindow: o.tokensPerWindow ?? 1000, windowSec: 86_400 },
      ...cors,
    }),
    { log: log("issuer"), handleSignals: false },
  );

  const keyFile = join(dir, "gateway-keys.json");
  writeKeyFile(keyFile, (await makeKeyData([{ keyId: 1 }])).data);
  const issuerEntry = { name: "issuer.example", directory: `${issuer.url}/.well-known/private-token-issuer-directory`, keyLifetimeSec: 604_800 };
  const arcEntry =
    o.arc === undefined
      ? {}
      : {
          tokenType: "arc",
          rateLimit: o.arc.rateLimit,
          keys: join(dir, "issuer-keys.json"),
          ...(o.arc.redemptionContext === undefined ? {} : { redemptionContext: o.arc.redemptionContext }),
          ...(o.arc.credentialContext === undefined ? {} : { credentialContext: o.arc.credentialContext }),
        };
  const gatewayConfig = parseGatewayConfig({
      listen: { host: "127.0.0.1", port: 0 },
      keys: keyFile,
      targets: { [LEADER]: leader.url, [HELPER]: helper.url, [LEADER18]: { upstream: leader18.url, dap: "18" }, [HELPER18]: { upstream: helper18.url, dap: "18" } },
      policy: "dap",
      tokens: {
        required: o.tokensRequired ?? true,
        maxReportsPerToken: o.maxReportsPerToken ?? 1,
        issuers: [{ ...issuerEntry, ...arcEntry }],
        store: "memory",
      },
      ...cors,
    });
  const now = o.arc?.now;
  const gateway = await startGateway(gatewayConfig, {
    log: log("gateway"),
    handleSignals: false,
    ...(now === undefined ? {} : { gate: await createTokenGate(gatewayConfig.tokens, { log: log("gateway"), now }) }),
  });

  const relay = await startRelay(
    parseRelayConfig({
      listen: { host: "127.0.0.1", port: 0 },
      routes: [{ path: "/leader-gateway", gateway: `${gateway.url}/gateway`, keys: `${gateway.url}/ohttp-keys` }],
      ...cors,
    }),
    { log: log("relay"), handleSignals: false },
  );

  return {
    leader,
    helper,
    tasks,
    dap18: { leader: leader18, helper: helper18, task: task18, keys: keys18 },
    issuer,
    gateway,
    relay,
    relayUrl: `${relay.url}/leader-gateway`,
    keysUrl: `${gateway.url}/ohttp-keys`,
    issuerUrl: issuer.url,
    keyFile,
    lines,
    async stop() {
      await relay.stop();
      await gateway.stop();
      await issuer.stop();
      await leader.close();
      await helper.close();
      await leader18.close();
      await helper18.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
