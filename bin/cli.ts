// The `veil` command line. Each component contributes its subcommand; this file only assembles them.
import { Command } from "commander";
import { gatewayCommand } from "../gateway/main.js";
import { keysCommand } from "../gateway/keys-command.js";
import { issuerCommand } from "../issuer/main.js";
import { relayCommand } from "../relay/main.js";
import { clientCommand } from "../client/main.js";
import { startCommand } from "../demo/start.js";
import { demoCommand } from "../demo/demo-command.js";

export async function main(argv: string[]): Promise<void> {
  const program = new Command("veil")
    .description("Oblivious HTTP relay, gateway and Privacy Pass issuer for private DAP uploads")
    .showHelpAfterError()
    .enablePositionalOptions();
  // Subcommands (one line each):
  program.addCommand(gatewayCommand());
  program.addCommand(keysCommand());
  program.addCommand(issuerCommand());
  program.addCommand(relayCommand());
  program.addCommand(clientCommand());
  program.addCommand(startCommand());
  program.addCommand(demoCommand());
  await program.parseAsync(argv);
}
