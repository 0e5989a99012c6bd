import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    projects: [
      "packages/*",
      { test: { name: "examples", include: ["examples/**/*.test.ts"] } }
    ],
    testTimeout: 60_000,
    hookTimeout: 60_000
  }
})
