/**
 * What the platform-browser project runs, in Node, when the Chromium its tests need is missing (see
 * vitest.config.ts): one failing test that says how to install it, so that `pnpm test` fails rather than passes
 * without running them.
 */
import { assert, it } from "@effect/vitest"

it("the browser tests need Chromium", () => {
  assert.fail(
    `Chromium is missing at ${process.env.CHROMIUM_PATH}: install it with \`apt-get install -y chromium\` ` +
      "(or point CHROMIUM_PATH at a Chromium or Chrome binary), then run the tests again"
  )
})
