import { defineConfig } from "vitest/config"

// The workspace's packages resolve to their TypeScript sources (the `@intersession/source` export condition), so
// tests run without a build; published code resolves to `dist/`.
const conditions = ["@intersession/source"]

const project = (name: string, include: string) => ({ extends: true as const, test: { name, include: [include] } })

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions } },
  test: {
    projects: [
      project("core", "packages/core/test/**/*.test.ts"),
      project("testing", "packages/testing/test/**/*.test.ts"),
      project("platform-node", "packages/platform-node/test/**/*.test.ts"),
      project("examples", "examples/**/*.test.ts")
    ],
    testTimeout: 120_000,
    hookTimeout: 60_000
  }
})
