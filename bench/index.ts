// `npm run bench -- NAME [args]`: each benchmark measures a floor or a peer in the same run and
// prints the ratio. Benchmarks are not tests: nothing here asserts a time.
type Bench = { run(args: string[]): Promise<void> };

const BENCHES: Record<string, () => Promise<Bench>> = {
  // name: () => import("./name.js"),
  arc: () => import("./arc.js"),
  chunked: () => import("./chunked.js"),
  "chunked-memory": () => import("./chunked-memory.js"),
  client: () => import("./client.js"),
  faults: () => import("./faults.js"),
  gateway: () => import("./gateway.js"),
  ohttp: () => import("./ohttp.js"),
  relay: () => import("./relay.js"),
  "relay-h2": () => import("./relay-h2.js"),
  soak: () => import("./soak.js"),
  tokens: () => import("./tokens.js"),
  "tokens-gateway": () => import("./tokens-gateway.js"),
  "tokens-issuer": () => import("./tokens-issuer.js"),
  "token-client": () => import("./token-client.js"),
  workers: () => import("./workers.js"),
};

export async function runBench(argv: string[]): Promise<void> {
  const [name, ...args] = argv;
  const load = name === undefined ? undefined : BENCHES[name];
  if (load === undefined) {
    console.error(`usage: npm run bench -- <${Object.keys(BENCHES).join("|")}> [args]`);
    process.exitCode = 2;
    return;
  }
  await (await load()).run(args);
}
