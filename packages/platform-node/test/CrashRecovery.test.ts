/**
 * The crash test: two peers as child processes over TCP with SQLite files stream messages both ways while each is
 * killed with SIGKILL mid-transfer and restarted; then every promise of protocol.md §1 is checked against what each
 * application recorded, and at least one kill must have landed while messages were in flight. `CRASH_TEST_KILLS` and
 * `CRASH_TEST_MESSAGES` make a longer run.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { formatReport } from "../src/Cli.js"
import * as Demo from "../src/internal/demo.js"

const kills = Number(process.env["CRASH_TEST_KILLS"] ?? 10)
const messages = Number(process.env["CRASH_TEST_MESSAGES"] ?? 1000)
const budget = Duration.toSeconds(Demo.budget(messages, kills))

describe("crash recovery with real processes", () => {
  it("the check counts lost, duplicated and out-of-order messages", () => {
    const clean = { from: "A", to: "B", sent: 5, delivered: 5, lost: 0, duplicated: 0, outOfOrder: 0 }
    assert.deepStrictEqual(Demo.check("A", "B", 5, [1, 2, 3, 4, 5]), clean)
    assert.deepStrictEqual(Demo.check("A", "B", 5, [1, 3, 2, 2, 5]), {
      ...clean,
      lost: 1,
      duplicated: 1,
      outOfOrder: 1
    })
    assert.deepStrictEqual(Demo.check("A", "B", 5, []), { ...clean, delivered: 0, lost: 5 })
  })

  for (const seed of [1, 2]) {
    it.live(`${messages} messages each way survive ${kills} kill -9s (seed ${seed})`, () =>
      Effect.gen(function*() {
        const report = yield* Demo.run({
          messages,
          kills,
          seed,
          timeout: `${budget} seconds`,
          onProgress: () => Effect.void
        }).pipe(Effect.scoped)
        console.log(`seed ${seed}:\n${formatReport(report)}`)
        assert.strictEqual(report.kills, kills)
        assert.strictEqual(report.killLog.length, kills)
        if (kills > 0) {
          assert.isAtLeast(report.killsMidTransfer, 1, `no kill landed mid-transfer: ${JSON.stringify(report.killLog)}`)
        }
        for (const direction of report.directions) {
          assert.strictEqual(direction.sent, messages, `${direction.from}→${direction.to} sent`)
          assert.strictEqual(direction.delivered, messages, `${direction.from}→${direction.to} delivered`)
          assert.strictEqual(direction.lost, 0)
          assert.strictEqual(direction.duplicated, 0)
          assert.strictEqual(direction.outOfOrder, 0)
        }
        assert.isTrue(report.ok)
      }).pipe(Effect.provide(NodeContext.layer)), (budget + 30) * 1000)
  }
})
