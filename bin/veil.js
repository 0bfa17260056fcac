#!/usr/bin/env node
// The `veil` command line. The TypeScript sources are compiled to dist/ by `npm ci` (prepare).
import { main } from "../dist/bin/cli.js";

await main(process.argv);
