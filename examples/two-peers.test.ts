import { assert, describe, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))

describe("the README example", () => {
  it("and every other TypeScript block of the README are example files, verbatim", () => {
    const readme = readFileSync(`${root}/README.md`, "utf8")
    const blocks = Array.from(readme.matchAll(/```ts\n([\s\S]*?)```/g), (match) => match[1])
    const files = ["examples/two-peers.ts", "examples/partition.test.ts"]
    assert.deepStrictEqual(blocks, files.map((file) => readFileSync(`${root}/${file}`, "utf8")))
  })

  it("runs and prints what each peer received", () => {
    const output = execFileSync(`${root}/node_modules/.bin/tsx`, ["examples/two-peers.ts"], {
      cwd: root,
      encoding: "utf8",
      timeout: 60_000
    })
    assert.deepStrictEqual(output.trim().split("\n"), [
      "peer 1 got [4,5,6] from 2 to 1",
      "peer 2 got [1,2,3] from 1 to 2"
    ])
  })
})
