import { availableParallelism } from "node:os"
import { configDefaults, defineConfig, mergeConfig } from "vitest/config"
import full from "./vitest.config.js"

// `pnpm test:quick`: every test file of the full suite (`pnpm test`) but the soak tests, in under two minutes on two
// cores. Left out: the crash test's real processes killed again and again (CrashRecovery.test.ts), the floods of
// unauthenticated connections (PreAuthFlood.test.ts) and the SqlDelivery test that kills receiver processes (skipped
// by name); the simulation runs 100 seeds of the usual mix instead of 1,000.
// Two test files at a time even on two cores, where vitest's default is one (cores - 1): 103 s instead of 135 s.
export default mergeConfig(
  full,
  defineConfig({
    test: {
      exclude: [
        ...configDefaults.exclude,
        "packages/platform-node/test/CrashRecovery.test.ts",
        "packages/platform-node/test/PreAuthFlood.test.ts"
      ],
      env: { SIMULATION_SEEDS: "100", SKIP_PROCESS_KILLS: "1" },
      maxWorkers: Math.max(2, availableParallelism() - 1)
    }
  })
)
