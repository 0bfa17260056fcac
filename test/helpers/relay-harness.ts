// Starting a relay on a free loopback port for tests, with its log lines captured.

import { createLogger } from "../../server/logging.js";
import { createMetrics } from "../../server/metrics.js";
import { parseRelayConfig, type RelayConfig } from "../../relay/config.js";
import { startRelay, type StartedRelay } from "../../relay/main.js";
import type { RelayDeps } from "../../relay/app.js";

export interface TestRelay extends StartedRelay {
  config: RelayConfig;
  lines: string[];
}

import { captureLines } from "./log-lines.js";

export { captureLines };

export async function startTestRelay(raw: Record<string, unknown>, deps: Omit<RelayDeps, "log"> = {}): Promise<TestRelay> {
  const config = parseRelayConfig({ listen: { host: "127.0.0.1", port: 0 }, ...raw });
  const { stream, lines } = captureLines();
  const log = createLogger("relay", { destination: stream, level: "debug" });
  const relay = await startRelay(config, { log, handleSignals: false, deps: { metrics: createMetrics("relay", { defaultMetrics: false }), ...deps } });
  return { ...relay, config, lines };
}
