/**
 * The README's programs: each TypeScript block is an example file, verbatim, and each example runs and prints what
 * the README says it does.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import { readFileSync } from "node:fs"
import { Socket } from "node:net"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"

const root = fileURLToPath(new URL("..", import.meta.url))

// Asynchronously, never `execFileSync`: a synchronous run blocks this worker's event loop, so it cannot read the main
// process's replies, and once that lasts 60 s vitest's RPC timer fires first: the run fails with `Timeout calling
// "onTaskUpdate"` after every test passed. The three runs here took 76 s together on a loaded 2-core machine.
// The timeout stays under vitest's 120 s per test.
const run = async (file: string) => {
  const { stdout } = await promisify(execFile)(
    `${root}/node_modules/.bin/tsx`,
    ["--conditions=@intersession/source", file],
    { cwd: root, encoding: "utf8", timeout: 100_000 }
  )
  return stdout.trim().split("\n")
}

/** Whether something accepts connections on the port, within a second. */
const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = new Socket()
    const done = (up: boolean) => {
      socket.destroy()
      resolve(up)
    }
    socket.setTimeout(1000, () => done(false))
    socket.once("error", () => done(false))
    socket.connect(port, "127.0.0.1", () => done(true))
  })

const postgres = await listening(5432)
if (!postgres) console.warn("SKIPPED examples/scale-out.ts: no PostgreSQL on 127.0.0.1:5432")

describe("the README", () => {
  it("holds the example files verbatim, in this order", () => {
    const readme = readFileSync(`${root}/README.md`, "utf8")
    const blocks = Array.from(readme.matchAll(/```ts\n([\s\S]*?)```/g), (match) => match[1])
    const files = [
      "examples/two-peers.ts",
      "examples/lifecycle.ts",
      "examples/dead-letters.ts",
      "examples/channels.ts",
      "examples/tracing.ts",
      "examples/production.ts",
      "examples/scale-out.ts",
      "examples/browser/page/engine.ts",
      "examples/browser/src/network.ts",
      "examples/partition.test.ts"
    ]
    assert.deepStrictEqual(blocks, files.map((file) => readFileSync(`${root}/${file}`, "utf8")))
  })

  it("dead-letters.ts prints the payment it gave up on, and its replay", async () => {
    assert.deepStrictEqual(await run("examples/dead-letters.ts"), [
      "ledger: 10 EUR",
      "ledger: 7 EUR",
      "dead letter: alice/payments seq 2",
      "kept: \"25 USD\" after 3 attempts: Delivery failed: unknown currency in \"25 USD\"",
      "ledger: 25 USD",
      "replayed 1; 0 dead letters left"
    ])
  })

  it("channels.ts prints typed orders, and the payload that did not decode as a dead letter", async () => {
    assert.deepStrictEqual(await run("examples/channels.ts"), [
      "shop #1: tea",
      "shop #2: cups (gift)",
      "shop #4: pot",
      "dead letter #3: Delivery failed for good: the payload of shop/orders #3 does not decode with channel " +
      "\"orders\"'s schema: ((Uint8ArrayFromSelf <-> string) <-> (parseJson <-> (Order (Encoded side) <-> Order)))"
    ])
  })

  it("tracing.ts prints the spans of one message, the delivery linked to the span it was sent in", async () => {
    assert.deepStrictEqual(await run("examples/tracing.ts"), [
      "bob got \"order 42\" from alice",
      "app: checkout (trace 1, root)",
      "alice: intersession.append (trace 1, child of checkout)",
      "alice: intersession.transmit (trace 2, root, linked to checkout)",
      "bob: intersession.deliver (trace 3, root)",
      "bob: intersession.deliver.message (trace 3, child of intersession.deliver, linked to checkout)"
    ])
  })

  it("lifecycle.ts prints what expired, what was purged, and what arrived", async () => {
    assert.deepStrictEqual(await run("examples/lifecycle.ts"), [
      "bob/default: 1 pending, 1 expired, 0 purged",
      "bob/telemetry: 0 pending, 0 expired, 3 purged",
      "purge removed 3",
      "bob got \"order: buy 10\" in default, seq 2",
      "drained: everything acknowledged, expired or purged"
    ])
  })

  it("two-peers.ts prints what each peer received", async () => {
    assert.deepStrictEqual(await run("examples/two-peers.ts"), [
      "peer 1 got [4,5,6] from 2 to 1",
      "peer 2 got [1,2,3] from 1 to 2"
    ])
  })

  it("production.ts delivers over TCP with SQLite stores, in order", async () => {
    assert.deepStrictEqual(await run("examples/production.ts"), [
      "bob got \"one\" from alice, seq 1",
      "bob got \"two\" from alice, seq 2",
      "bob got \"three\" from alice, seq 3"
    ])
  })

  it.skipIf(!postgres)("scale-out.ts delivers from a PostgreSQL store", async () => {
    assert.deepStrictEqual(await run("examples/scale-out.ts"), [
      "dave got \"stored in PostgreSQL until dave has it\" from carol"
    ])
  })
})
