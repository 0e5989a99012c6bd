/**
 * The SQL store's computations over dropped seqs, outside SQL: ranges of removed seqs, the ranges and runs that
 * `outbound` reports, and the streams that acknowledgements clean up.
 */
import { assert, describe, it } from "@effect/vitest"
import type { DroppedRange } from "@intersession/core/Backend"
import * as PeerId from "@intersession/core/PeerId"
import * as StreamKey from "@intersession/core/StreamKey"
import * as Dropped from "../src/internal/sqlDropped.js"

const A = PeerId.make("A")
const B = PeerId.make("B")

describe("sqlDropped", () => {
  it("rangesOf: per stream, in seq order, split where seqs do not follow each other or the run changes", () => {
    const removed = [
      { peer: B, lane: "x", seq: 4, run: 1 },
      { peer: A, lane: "x", seq: 3, run: 1 },
      { peer: A, lane: "x", seq: 1, run: 1 },
      { peer: A, lane: "x", seq: 2, run: 1 },
      { peer: A, lane: "x", seq: 4, run: 2 },
      { peer: A, lane: "x", seq: 6, run: 2 },
      { peer: A, lane: "y", seq: 5, run: 2 }
    ]
    const ranges = Dropped.rangesOf(removed)
    assert.deepStrictEqual(ranges, [
      { peer: A, lane: "x", from: 1, to: 3, run: 1 },
      { peer: A, lane: "x", from: 4, to: 4, run: 2 },
      { peer: A, lane: "x", from: 6, to: 6, run: 2 },
      { peer: A, lane: "y", from: 5, to: 5, run: 2 },
      { peer: B, lane: "x", from: 4, to: 4, run: 1 }
    ])
    assert.deepStrictEqual(Dropped.perStream(ranges.slice().reverse()), [
      {
        peer: A,
        lane: "x",
        seqs: [{ from: 1, to: 3, run: 1 }, { from: 4, to: 4, run: 2 }, { from: 6, to: 6, run: 2 }]
      },
      { peer: A, lane: "y", seqs: [{ from: 5, to: 5, run: 2 }] },
      { peer: B, lane: "x", seqs: [{ from: 4, to: 4, run: 1 }] }
    ])
    assert.deepStrictEqual(Dropped.rangesOf([]), [])
  })

  it("pendingRanges: from the first unacknowledged seq, ranges of one run and reason that continue each other joined", () => {
    const stored: Array<DroppedRange> = [
      { from: 1, to: 2, run: 1, reason: "expired" },
      { from: 3, to: 5, run: 1, reason: "expired" },
      { from: 6, to: 6, run: 2, reason: "expired" },
      { from: 8, to: 9, run: 2, reason: "expired" },
      // Continues 8-9 in run 2, but purged: not joined. 12 continues it for the same reason: joined.
      { from: 10, to: 11, run: 2, reason: "purged" },
      { from: 12, to: 12, run: 2, reason: "purged" },
      { from: 13, to: 13, run: 2, reason: "expired" }
    ]
    assert.deepStrictEqual(Dropped.pendingRanges(stored, 1), [
      { from: 1, to: 5, run: 1, reason: "expired" },
      { from: 6, to: 6, run: 2, reason: "expired" },
      { from: 8, to: 9, run: 2, reason: "expired" },
      { from: 10, to: 12, run: 2, reason: "purged" },
      { from: 13, to: 13, run: 2, reason: "expired" }
    ])
    assert.deepStrictEqual(Dropped.pendingRanges(stored, 4), [
      { from: 4, to: 5, run: 1, reason: "expired" },
      { from: 6, to: 6, run: 2, reason: "expired" },
      { from: 8, to: 9, run: 2, reason: "expired" },
      { from: 10, to: 12, run: 2, reason: "purged" },
      { from: 13, to: 13, run: 2, reason: "expired" }
    ])
    // A range the first unacknowledged seq cuts keeps its reason.
    assert.deepStrictEqual(Dropped.pendingRanges(stored, 11), [
      { from: 11, to: 12, run: 2, reason: "purged" },
      { from: 13, to: 13, run: 2, reason: "expired" }
    ])
    assert.deepStrictEqual(Dropped.pendingRanges(stored, 14), [])
  })

  it("runsOf: the runs of stored and dropped seqs together, each from its lowest seq", () => {
    // Stored 1-2 (run 1), 5 (run 1), 6-7 (run 2), 10 (run 3); dropped 3-4 (run 2), 8-9 (run 2); next seq 11.
    const stored = [{ run: 1, from: 1 }, { run: 2, from: 6 }, { run: 3, from: 10 }]
    const dropped = [{ from: 3, to: 4, run: 2 }, { from: 8, to: 9, run: 2 }]
    assert.deepStrictEqual(Dropped.runsOf(stored, dropped, 11), [
      { run: 1, from: 1 },
      { run: 2, from: 3 },
      { run: 1, from: 5 },
      { run: 2, from: 6 },
      { run: 3, from: 10 }
    ])
    // Dropped only, and dropped at both ends of what is stored.
    assert.deepStrictEqual(Dropped.runsOf([], [{ from: 1, to: 4, run: 1 }, { from: 5, to: 5, run: 2 }], 6), [
      { run: 1, from: 1 },
      { run: 2, from: 5 }
    ])
    assert.deepStrictEqual(
      Dropped.runsOf([{ run: 2, from: 3 }], [{ from: 1, to: 2, run: 1 }, { from: 4, to: 4, run: 2 }], 5),
      [{ run: 1, from: 1 }, { run: 2, from: 3 }]
    )
    assert.strictEqual(Dropped.runsOf(stored, [], 11), stored)
  })

  it("DroppedStreams: a stream is listed until an acknowledgement covers its highest dropped seq", () => {
    const streams = new Dropped.DroppedStreams()
    const key = StreamKey.make(A, "x")
    streams.add(A, "x", 5)
    streams.add(A, "x", 3)
    streams.acknowledged(key, 4)
    assert.isTrue(streams.has(key))
    streams.acknowledged(key, 5)
    assert.isFalse(streams.has(key))
    assert.strictEqual(streams.size, 0)
  })
})
