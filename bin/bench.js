#!/usr/bin/env node
// `npm run bench -- NAME`: runs one benchmark from bench/ (compiled to dist/bench/).
import { runBench } from "../dist/bench/index.js";

await runBench(process.argv.slice(2));
