/**
 * The outbound window of one stream, without the runtime.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Outbound from "../src/internal/engine/outbound.js"
import * as Lane from "../src/Lane.js"
import * as StreamKey from "../src/StreamKey.js"
import { B } from "./helpers.js"

const fresh = () => Outbound.make(StreamKey.make(B, Lane.defaultLane), B, Lane.defaultLane)

/** A stream with seqs 1 … `allocated` stored. */
const withAllocated = (allocated: number) => Outbound.allocate(fresh(), 7, 1, allocated)

describe("outbound window", () => {
  it("lets out at most the window past the acknowledged seq, and at most a batch at a time", () => {
    const stream = withAllocated(100)
    assert.deepStrictEqual(Outbound.sendable(stream, 16, 1024), { from: 1, to: 16, more: false })
    assert.deepStrictEqual(Outbound.sendable(stream, 64, 10), { from: 1, to: 10, more: true })
    const sent = Outbound.sent(stream, 1, 16, 160, 0).stream
    assert.isUndefined(Outbound.sendable(sent, 16, 1024))
    assert.strictEqual(Outbound.inFlight(sent), 16)
    const acked = Outbound.acknowledge(sent, 4, 5)
    assert.strictEqual(acked._tag, "acked")
    if (acked._tag !== "acked") return
    assert.deepStrictEqual(Outbound.sendable(acked.stream, 16, 1024), { from: 17, to: 20, more: false })
  })

  it("lets nothing out before a message is stored", () => {
    assert.isUndefined(Outbound.sendable(fresh(), 16, 1024))
  })

  it("an acknowledgement lands the transmissions it covers: their bytes leave the flight", () => {
    const sent = Outbound.sent(Outbound.sent(withAllocated(10), 1, 1, 600, 0).stream, 2, 3, 300, 0).stream
    assert.strictEqual(sent.flightBytes, 900)
    const partial = Outbound.acknowledge(sent, 2, 1)
    if (partial._tag !== "acked") return assert.fail("expected progress")
    // The second transmission is only partly acknowledged: it stays in flight whole.
    assert.strictEqual(partial.stream.flightBytes, 300)
    assert.deepStrictEqual(partial.stream.flight, [{ to: 3, bytes: 300 }])
    const full = Outbound.acknowledge(partial.stream, 3, 2)
    if (full._tag !== "acked") return assert.fail("expected progress")
    assert.strictEqual(full.stream.flightBytes, 0)
    assert.deepStrictEqual(full.stream.flight, [])
  })

  it("counts resent seqs as retransmissions and times only first transmissions", () => {
    const first = Outbound.sent(withAllocated(10), 1, 5, 50, 100)
    assert.strictEqual(first.retransmits, 0)
    assert.deepStrictEqual(first.stream.probe, { seq: 5, at: 100 })
    const rewound = Outbound.rewind(first.stream)
    assert.strictEqual(rewound.nextToSend, 1)
    assert.isUndefined(rewound.probe)
    assert.strictEqual(rewound.flightBytes, 0)
    const again = Outbound.sent(rewound, 1, 5, 50, 200)
    assert.strictEqual(again.retransmits, 5)
    assert.strictEqual(again.stream.retransmitted, 5)
    // Karn: a retransmission is never timed.
    assert.isUndefined(again.stream.probe)
    const more = Outbound.sent(again.stream, 6, 8, 30, 300)
    assert.strictEqual(more.retransmits, 0)
    assert.deepStrictEqual(more.stream.probe, { seq: 8, at: 300 })
  })

  it("an acknowledgement that covers the timed seq gives a round-trip sample", () => {
    const sent = Outbound.sent(withAllocated(10), 1, 5, 50, 100).stream
    const partial = Outbound.acknowledge(sent, 3, 130)
    assert.strictEqual(partial._tag, "acked")
    if (partial._tag !== "acked") return
    assert.isUndefined(partial.sample)
    assert.strictEqual(partial.count, 3)
    const full = Outbound.acknowledge(partial.stream, 5, 160)
    assert.strictEqual(full._tag, "acked")
    if (full._tag !== "acked") return
    assert.strictEqual(full.sample, 60)
    assert.strictEqual(full.stream.acked, 5)
    assert.isUndefined(full.stream.probe)
  })

  it("the third repeated acknowledgement resends from the gap at once, once per gap", () => {
    let stream = Outbound.sent(withAllocated(10), 1, 10, 100, 0).stream
    const acked = Outbound.acknowledge(stream, 2, 1)
    if (acked._tag !== "acked") return assert.fail("expected progress")
    stream = acked.stream
    for (let i = 1; i <= 2; i++) {
      const outcome = Outbound.acknowledge(stream, 2, 1 + i)
      if (outcome._tag !== "duplicate") return assert.fail("expected a duplicate")
      assert.isFalse(outcome.rewound)
      stream = outcome.stream
    }
    const third = Outbound.acknowledge(stream, 2, 4)
    if (third._tag !== "duplicate") return assert.fail("expected a duplicate")
    assert.isTrue(third.rewound)
    assert.strictEqual(third.stream.nextToSend, 3)
    // Resent, the same gap is not retransmitted fast again however many duplicates follow.
    stream = Outbound.sent(third.stream, 3, 10, 80, 5).stream
    for (let i = 0; i < 5; i++) {
      const outcome = Outbound.acknowledge(stream, 2, 6 + i)
      if (outcome._tag === "duplicate") {
        assert.isFalse(outcome.rewound)
        stream = outcome.stream
      } else {
        assert.strictEqual(outcome._tag, "stale")
      }
    }
    assert.strictEqual(stream.nextToSend, 11)
  })

  it("an acknowledgement below the acknowledged seq, or with nothing in flight, changes nothing", () => {
    const sent = Outbound.sent(withAllocated(10), 1, 4, 40, 0).stream
    const acked = Outbound.acknowledge(sent, 4, 1)
    if (acked._tag !== "acked") return assert.fail("expected progress")
    assert.strictEqual(Outbound.acknowledge(acked.stream, 2, 2)._tag, "stale")
    assert.strictEqual(Outbound.acknowledge(acked.stream, 4, 2)._tag, "stale")
  })

  it("a restored stream resends from its first pending seq", () => {
    const key = StreamKey.make(B, "x")
    const stream = Outbound.restore(key, {
      peer: B,
      lane: "x",
      firstPending: 5,
      nextSeq: 9,
      runs: [{ run: 3, from: 5 }],
      dropped: []
    })
    assert.strictEqual(stream.acked, 4)
    assert.strictEqual(stream.highestSent, 4)
    assert.deepStrictEqual(stream.runs, [{ run: 3, from: 5 }])
    assert.strictEqual(Outbound.pending(stream), 4)
    assert.deepStrictEqual(Outbound.sendable(stream, 16, 1024), { from: 5, to: 8, more: false })
  })
})

/** Acknowledges up to `upTo`, expecting progress. */
const ack = (stream: Outbound.OutStream, upTo: number) => {
  const outcome = Outbound.acknowledge(stream, upTo, 0)
  if (outcome._tag !== "acked") throw new Error(`an acknowledgement up to ${upTo} was ${outcome._tag}`)
  return outcome
}

/** Drops ranges of run 7. */
const drop = (
  stream: Outbound.OutStream,
  ranges: ReadonlyArray<readonly [number, number]>,
  reason: "expired" | "purged" = "expired"
) => Outbound.drop(stream, ranges.map(([from, to]) => ({ run: 7, from, to })), reason)

const ranges = (stream: Outbound.OutStream) => stream.dropped.map(({ from, to }) => [from, to])

describe("dropped seqs", () => {
  it("drop records the ranges above acked, in seq order, and counts them by reason", () => {
    const base = ack(Outbound.sent(withAllocated(20), 1, 20, 200, 0).stream, 2).stream
    const first = drop(base, [[10, 12], [4, 5]], "expired")
    assert.strictEqual(first.count, 5)
    assert.deepStrictEqual(ranges(first.stream), [[4, 5], [10, 12]])
    assert.deepStrictEqual(first.stream.dropped.map((range) => range.reason), ["expired", "expired"])
    assert.strictEqual(first.stream.droppedCount, 5)
    assert.strictEqual(first.stream.expired, 5)
    assert.strictEqual(first.stream.purged, 0)
    const second = drop(first.stream, [[7, 8], [15, 20]], "purged")
    assert.strictEqual(second.count, 8)
    assert.deepStrictEqual(ranges(second.stream), [[4, 5], [7, 8], [10, 12], [15, 20]])
    assert.deepStrictEqual(second.stream.dropped.map((range) => range.reason), [
      "expired",
      "purged",
      "expired",
      "purged"
    ])
    assert.strictEqual(second.stream.droppedCount, 13)
    assert.strictEqual(second.stream.expired, 5)
    assert.strictEqual(second.stream.purged, 8)
    // Dropping changes neither the acknowledged seq nor what is in flight.
    assert.strictEqual(second.stream.acked, 2)
    assert.strictEqual(second.stream.nextToSend, 21)
    assert.strictEqual(second.stream.flightBytes, base.flightBytes)
  })

  it("drop leaves out what is acknowledged already: only the part above acked counts", () => {
    const stream = ack(Outbound.sent(withAllocated(10), 1, 10, 100, 0).stream, 4).stream
    const straddling = drop(stream, [[3, 6]])
    assert.strictEqual(straddling.count, 2)
    assert.deepStrictEqual(ranges(straddling.stream), [[5, 6]])
    assert.strictEqual(straddling.stream.expired, 2)
    // Wholly acknowledged (delivered before its removal reached the store): nothing changes.
    const below = drop(stream, [[1, 4], [2, 3]])
    assert.strictEqual(below.count, 0)
    assert.strictEqual(below.stream, stream)
    assert.strictEqual(drop(stream, []).stream, stream)
  })

  it("pending leaves dropped seqs out, and is never negative", () => {
    const stream = withAllocated(10)
    assert.strictEqual(Outbound.pending(stream), 10)
    const dropped = drop(stream, [[2, 3], [8, 10]]).stream
    assert.strictEqual(Outbound.pending(dropped), 5)
    // The store removed seqs whose allocation this run has not recorded yet.
    const ahead = drop(Outbound.make(StreamKey.make(B, "y"), B, "y"), [[1, 3]]).stream
    assert.strictEqual(Outbound.pending(ahead), 0)
    assert.strictEqual(Outbound.pending(Outbound.allocate(ahead, 7, 1, 5)), 2)
  })

  it("droppedAt finds the range holding a seq, at its edges too, and nothing between ranges", () => {
    const stream = drop(withAllocated(20), [[3, 5], [9, 9], [12, 15]]).stream
    const at = (seq: number) => {
      const range = Outbound.droppedAt(stream, seq)
      return range === undefined ? undefined : [range.from, range.to]
    }
    assert.deepStrictEqual(
      [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 15, 16, 20].map(at),
      [
        undefined,
        undefined,
        [3, 5],
        [3, 5],
        [3, 5],
        undefined,
        undefined,
        [9, 9],
        undefined,
        undefined,
        [12, 15],
        [12, 15],
        undefined,
        undefined
      ]
    )
    assert.strictEqual(Outbound.droppedAt(stream, 4)?.run, 7)
    assert.strictEqual(Outbound.droppedAt(stream, 4)?.reason, "expired")
    assert.isUndefined(Outbound.droppedAt(withAllocated(5), 3))
  })

  it("an acknowledgement prunes the dropped ranges it covers, trims one it straddles, and counts only messages", () => {
    const sent = Outbound.sent(withAllocated(12), 1, 12, 120, 0).stream
    const stream = drop(ack(sent, 2).stream, [[3, 4], [7, 9], [11, 11]]).stream
    assert.strictEqual(Outbound.pending(stream), 4) // 5, 6, 10, 12
    // Up to 8: seqs 3, 4, 7 and 8 were dropped, 5 and 6 delivered.
    const straddling = ack(stream, 8)
    assert.strictEqual(straddling.count, 2)
    assert.deepStrictEqual(ranges(straddling.stream), [[9, 9], [11, 11]])
    assert.strictEqual(straddling.stream.droppedCount, 2)
    assert.strictEqual(Outbound.pending(straddling.stream), 2) // 10, 12
    assert.strictEqual(Outbound.droppedAt(straddling.stream, 9)?.from, 9)
    assert.isUndefined(Outbound.droppedAt(straddling.stream, 8))
    // The reasons and the totals stay.
    assert.strictEqual(straddling.stream.expired, 6)
    // Below every dropped range: the ranges stay as they are.
    const below = ack(drop(ack(sent, 2).stream, [[7, 9]]).stream, 5)
    assert.strictEqual(below.count, 3)
    assert.deepStrictEqual(ranges(below.stream), [[7, 9]])
    assert.strictEqual(below.stream.droppedCount, 3)
    // Covering everything: no range is left.
    const all = ack(straddling.stream, 12)
    assert.strictEqual(all.count, 2)
    assert.deepStrictEqual(all.stream.dropped, [])
    assert.strictEqual(all.stream.droppedCount, 0)
    assert.strictEqual(Outbound.pending(all.stream), 0)
  })

  it("an acknowledgement ending exactly at a range's first or last seq", () => {
    const stream = drop(Outbound.sent(withAllocated(10), 1, 10, 100, 0).stream, [[4, 6]]).stream
    const atFirst = ack(stream, 4)
    assert.strictEqual(atFirst.count, 3)
    assert.deepStrictEqual(ranges(atFirst.stream), [[5, 6]])
    assert.strictEqual(atFirst.stream.droppedCount, 2)
    const atLast = ack(stream, 6)
    assert.strictEqual(atLast.count, 3)
    assert.deepStrictEqual(ranges(atLast.stream), [])
    assert.strictEqual(atLast.stream.droppedCount, 0)
  })

  it("a restored stream's acknowledged seq is below its first stored or dropped seq, and it skips from there", () => {
    const key = StreamKey.make(B, "x")
    const restore = (
      firstPending: number,
      nextSeq: number,
      dropped: ReadonlyArray<readonly [number, number, reason?: "expired" | "purged"]>
    ) =>
      Outbound.restore(key, {
        peer: B,
        lane: "x",
        firstPending,
        nextSeq,
        runs: [{ run: 3, from: 1 }],
        dropped: dropped.map(([from, to, reason = "expired"]) => ({ run: 3, from, to, reason }))
      })
    // A dropped prefix: seqs 3 … 5 were removed, 6 … 10 are stored.
    const prefix = restore(6, 11, [[3, 5]])
    assert.strictEqual(prefix.acked, 2)
    assert.strictEqual(prefix.nextToSend, 3)
    assert.strictEqual(prefix.highestSent, 2)
    assert.strictEqual(prefix.allocated, 10)
    assert.strictEqual(prefix.droppedCount, 3)
    assert.strictEqual(Outbound.pending(prefix), 5)
    assert.deepStrictEqual(Outbound.sendable(prefix, 16, 1024), { from: 3, to: 10, more: false })
    // Each range is skipped for the reason the store kept with it.
    assert.deepStrictEqual(prefix.dropped, [{ run: 3, from: 3, to: 5, reason: "expired" }])
    const mixed = restore(9, 11, [[3, 4, "purged"], [5, 6, "expired"], [7, 8, "purged"]])
    assert.deepStrictEqual(mixed.dropped, [
      { run: 3, from: 3, to: 4, reason: "purged" },
      { run: 3, from: 5, to: 6, reason: "expired" },
      { run: 3, from: 7, to: 8, reason: "purged" }
    ])
    assert.strictEqual(mixed.droppedCount, 6)
    assert.strictEqual(Outbound.droppedAt(mixed, 4)?.reason, "purged")
    assert.strictEqual(Outbound.droppedAt(mixed, 5)?.reason, "expired")
    // The counters of this run count what it drops, not what it restored.
    assert.strictEqual(mixed.purged, 0)
    // Nothing stored any more, only dropped seqs.
    const onlyDropped = restore(11, 11, [[8, 10]])
    assert.strictEqual(onlyDropped.acked, 7)
    assert.strictEqual(Outbound.pending(onlyDropped), 0)
    assert.deepStrictEqual(Outbound.sendable(onlyDropped, 16, 1024), { from: 8, to: 10, more: false })
    // Dropped seqs between stored ones: the first stored seq decides.
    const middle = restore(3, 9, [[5, 6]])
    assert.strictEqual(middle.acked, 2)
    assert.strictEqual(Outbound.pending(middle), 4)
    // The restored counters of this run start at zero.
    assert.strictEqual(prefix.expired, 0)
    assert.strictEqual(prefix.purged, 0)
    // Its acknowledgement prunes the restored ranges.
    const acked = ack(prefix, 7)
    assert.strictEqual(acked.count, 2)
    assert.deepStrictEqual(acked.stream.dropped, [])
  })
})
