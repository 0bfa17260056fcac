// The `veil` command line. Each component contributes its subcommand; this file only assembles them.
// A subcommand's module is loaded only when it runs (all of them for --help), so a relay process
// does not carry the gateway's, issuer's and client's code in memory.
import { Command } from "commander";

const COMMANDS: Readonly<Record<string, () => Promise<Command>>> = {
  gateway: async () => (await import("../gateway/main.js")).gatewayCommand(),
  keys: async () => (await import("../gateway/keys-command.js")).keysCommand(),
  issuer: async () => (await import("../issuer/main.js")).issuerCommand(),
  relay: async () => (await import("../relay/main.js")).relayCommand(),
  client: async () => (await import("../client/main.js")).clientCommand(),
  start: async () => (await import("../demo/start.js")).startCommand(),
  demo: async () => (await import("../demo/demo-command.js")).demoCommand(),
};

export async function main(argv: string[]): Promise<void> {
  const program = new Command("veil")
    .description("Oblivious HTTP relay, gateway and Privacy Pass issuer for private DAP uploads")
    .showHelpAfterError()
    .enablePositionalOptions();
  const name = argv[2];
  const wanted = name !== undefined && Object.hasOwn(COMMANDS, name) ? [name] : Object.keys(COMMANDS);
  for (const command of await Promise.all(wanted.map((n) => COMMANDS[n]!()))) program.addCommand(command);
  await program.parseAsync(argv);
}
