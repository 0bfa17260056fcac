// `veil issuer --config FILE` as an operator runs it (needs a built dist/): the config file written
// to a folder, the process started and its URL read from its log.

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { logLine, startVeil, type VeilProcess } from "./veil-process.js";

/** Writes `<dir>/issuer.json`: a loopback listener on a free port, name issuer.example, keys in `dir`, then `raw`. */
export function writeIssuerConfig(dir: string, raw: Record<string, unknown>): string {
  const config = join(dir, "issuer.json");
  writeFileSync(config, JSON.stringify({ listen: { host: "127.0.0.1", port: 0 }, name: "issuer.example", keys: join(dir, "issuer-keys.json"), ...raw }));
  return config;
}

/** Starts `veil issuer --config <config>` and resolves once it listens, with its URL. */
export async function startIssuerProcess(config: string): Promise<{ issuer: VeilProcess; url: string }> {
  const issuer = startVeil(["issuer", "--config", config]);
  await issuer.waitFor('"msg":"issuer listening"');
  const url = logLine(issuer.stdout(), "issuer listening")?.url;
  if (typeof url !== "string") throw new Error(`no URL in the issuer's log:\n${issuer.stdout()}`);
  return { issuer, url };
}
