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

  it("bounds the bytes in flight, but always lets one message out when nothing is in flight", () => {
    const stream = withAllocated(10)
    assert.strictEqual(Outbound.fitting(stream, [600, 600, 600], 1000), 1)
    assert.strictEqual(Outbound.fitting(stream, [5000], 1000), 1)
    const sent = Outbound.sent(stream, 1, 1, 600, 0).stream
    assert.strictEqual(Outbound.fitting(sent, [300, 200], 1000), 1)
    assert.strictEqual(Outbound.fitting(sent, [500], 1000), 0)
    // An acknowledgement lands the transmission: its bytes leave the flight.
    const acked = Outbound.acknowledge(sent, 1, 1)
    assert.strictEqual(acked._tag, "acked")
    if (acked._tag !== "acked") return
    assert.strictEqual(acked.stream.flightBytes, 0)
    assert.strictEqual(Outbound.fitting(acked.stream, [500, 500, 1], 1000), 2)
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
    const stream = Outbound.restore(key, { peer: B, lane: "x", firstPending: 5, nextSeq: 9 }, [{ run: 3, from: 5 }])
    assert.strictEqual(Outbound.pending(stream), 4)
    assert.deepStrictEqual(Outbound.sendable(stream, 16, 1024), { from: 5, to: 8, more: false })
  })
})
