/**
 * Run lists: how far two records of a stream share their history.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Runs from "../src/internal/runs.js"

describe("run lists", () => {
  it("runAt finds the run that allocated a seq", () => {
    const runs = [{ run: 1, from: 1 }, { run: 2, from: 4 }, { run: 1, from: 6 }]
    assert.deepStrictEqual([0, 1, 3, 4, 5, 6, 99].map((seq) => Runs.runAt(runs, seq)), [undefined, 1, 1, 2, 2, 1, 1])
  })

  it("extend starts an entry only when the run changes, and keeps the latest entries", () => {
    let runs = Runs.extend([], 1, 1)
    runs = Runs.extend(runs, 1, 2)
    runs = Runs.extend(runs, 2, 3)
    runs = Runs.extend(runs, 3, 4, 2)
    assert.deepStrictEqual(runs, [{ run: 2, from: 3 }, { run: 3, from: 4 }])
  })

  it("prune drops what lies below the first kept seq and starts the first entry there", () => {
    const runs = [{ run: 1, from: 1 }, { run: 2, from: 4 }, { run: 1, from: 6 }]
    assert.deepStrictEqual(Runs.prune(runs, 1), runs)
    assert.deepStrictEqual(Runs.prune(runs, 5), [{ run: 2, from: 5 }, { run: 1, from: 6 }])
    assert.deepStrictEqual(Runs.prune(runs, 6), [{ run: 1, from: 6 }])
    assert.deepStrictEqual(Runs.prune(runs, 50), [{ run: 1, from: 50 }])
  })

  it("sharedUpTo is the end of the common history, never past a difference or an uncovered seq", () => {
    const ours = [{ run: 1, from: 11 }, { run: 2, from: 15 }]
    assert.strictEqual(Runs.sharedUpTo(ours, [{ run: 1, from: 1 }, { run: 2, from: 15 }], 11, 20), 20)
    assert.strictEqual(Runs.sharedUpTo(ours, [{ run: 1, from: 1 }, { run: 3, from: 15 }], 11, 20), 14)
    assert.strictEqual(Runs.sharedUpTo(ours, [{ run: 1, from: 1 }], 11, 20), 14)
    assert.strictEqual(Runs.sharedUpTo(ours, [{ run: 9, from: 1 }], 11, 20), 10)
    // The partner's record starts above the seqs in question: nothing is known to be shared.
    assert.strictEqual(Runs.sharedUpTo(ours, [{ run: 1, from: 13 }], 11, 20), 10)
    assert.strictEqual(Runs.sharedUpTo(ours, [], 11, 20), 10)
    assert.strictEqual(Runs.sharedUpTo(ours, [{ run: 1, from: 1 }, { run: 2, from: 15 }], 11, 12), 12)
  })
})
