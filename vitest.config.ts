import { existsSync } from "node:fs"
import { defineConfig } from "vitest/config"

// The workspace's packages resolve to their TypeScript sources (the `@intersession/source` export condition), so
// tests run without a build; published code resolves to `dist/`.
const conditions = ["@intersession/source"]

const project = (name: string, include: string) => ({ extends: true as const, test: { name, include: [include] } })

// @intersession/platform-browser's tests run in a real Chromium, the system's (Debian's `chromium` package; CI
// installs it), driven by Playwright, which never downloads a browser of its own here. Without that Chromium the
// project is one failing test that says how to install it: `pnpm test` must not pass without running them.
const chromium = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"
const browserProject = existsSync(chromium)
  ? {
    extends: true as const,
    // Vite's conditions for the browser, after the workspace's own.
    resolve: { conditions: [...conditions, "module", "browser", "development|production"] },
    // Vite pre-bundles the dependencies it finds from these files (the worker's too, which it would not see) before
    // the tests start, afresh each run: a dependency found later, or missing from a stale cache, makes Vite reload
    // the page in the middle of a run.
    optimizeDeps: { entries: ["packages/platform-browser/test/**/*.ts"], force: true },
    test: {
      name: "platform-browser",
      include: ["packages/platform-browser/test/**/*.test.ts"],
      // `test/node/`: the network's cryptography and handshake, checked against `node:crypto` in Node.
      exclude: ["packages/platform-browser/test/node/**"],
      browser: {
        enabled: true,
        provider: "playwright",
        headless: true,
        screenshotFailures: false,
        instances: [{
          browser: "chromium" as const,
          launch: {
            executablePath: chromium,
            // Running as root needs --no-sandbox; without the background-networking flags Chromium reaches out to
            // the network at start, and a closed network refuses its connections.
            args: [
              "--headless",
              "--no-sandbox",
              "--disable-gpu",
              "--disable-quic",
              "--no-first-run",
              "--disable-background-networking",
              "--disable-component-update",
              "--disable-sync"
            ]
          }
        }]
      }
    }
  }
  : {
    extends: true as const,
    test: {
      name: "platform-browser",
      include: ["packages/platform-browser/test/ChromiumMissing.ts"],
      env: { CHROMIUM_PATH: chromium }
    }
  }

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions } },
  test: {
    projects: [
      project("core", "packages/core/test/**/*.test.ts"),
      project("testing", "packages/testing/test/**/*.test.ts"),
      project("platform-node", "packages/platform-node/test/**/*.test.ts"),
      browserProject,
      project("platform-browser-node", "packages/platform-browser/test/node/**/*.test.ts"),
      project("examples", "examples/**/*.test.ts")
    ],
    testTimeout: 120_000,
    hookTimeout: 60_000
  }
})
