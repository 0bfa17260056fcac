import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // `npm run fuzz` (VEIL_FUZZ_RUNS=100000) runs each property for minutes, not seconds.
    testTimeout: process.env.VEIL_FUZZ_RUNS === undefined ? 30_000 : 3_600_000,
    hookTimeout: 60_000,
    // 2 cores: integration tests start servers and child processes.
    maxWorkers: 2,
  },
});
