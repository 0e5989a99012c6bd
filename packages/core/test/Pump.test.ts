/**
 * What the pump sends of one stream — messages within the byte window, `Skip`s for dropped seqs, each message's time
 * to live — without the runtime.
 */
import { assert, describe, it } from "@effect/vitest"
import type { StoredMessage } from "../src/Backend.js"
import type { SkipReason } from "../src/Frame.js"
import * as Outbound from "../src/internal/engine/outbound.js"
import { itemsToSend } from "../src/internal/engine/pump.js"
import * as Lane from "../src/Lane.js"
import * as StreamKey from "../src/StreamKey.js"
import { B } from "./helpers.js"

const lane = Lane.defaultLane
const key = StreamKey.make(B, lane)
const now = 1_000_000

/** A stream with seqs 1 … `allocated` stored by run 7. */
const withAllocated = (allocated: number) => Outbound.allocate(Outbound.make(key, B, lane), 7, 1, allocated)

/** Drops ranges of run 5. */
const drop = (
  stream: Outbound.OutStream,
  ranges: ReadonlyArray<readonly [number, number]>,
  reason: SkipReason = "expired"
) => Outbound.drop(stream, ranges.map(([from, to]) => ({ run: 5, from, to })), reason).stream

/** Stored messages of run 7, `size` bytes each. */
const stored = (seqs: ReadonlyArray<number>, size = 10, expiresAt?: number): Array<StoredMessage> =>
  seqs.map((seq) => ({
    peer: B,
    lane,
    seq,
    run: 7,
    payload: new Uint8Array(size).fill(seq % 256),
    ...(expiresAt === undefined ? {} : { expiresAt })
  }))

/** Messages of these sizes at seqs `from …`. */
const sized = (sizes: ReadonlyArray<number>, from = 1) =>
  sizes.map((size, i): StoredMessage => ({ peer: B, lane, seq: from + i, run: 7, payload: new Uint8Array(size) }))

/** The items as short strings: `D3` a message, `S3-5 purged` a skip. */
const shown = (planned: ReturnType<typeof itemsToSend>) =>
  planned.items.map((item) =>
    item._tag === "Data" ? `D${item.seq}` : `S${item.seq}-${item.last} ${item.reason} run ${item.run}`
  )

describe("pump: what goes out of a stream", () => {
  it("messages in seq order, with a skip for each dropped range between them", () => {
    const stream = drop(drop(withAllocated(10), [[3, 4]], "expired"), [[7, 7]], "purged")
    const planned = itemsToSend(stream, 1, 10, stored([1, 2, 5, 6, 8, 9, 10]), 1000, now)
    assert.deepStrictEqual(shown(planned), [
      "D1",
      "D2",
      "S3-4 expired run 5",
      "D5",
      "D6",
      "S7-7 purged run 5",
      "D8",
      "D9",
      "D10"
    ])
    assert.strictEqual(planned.last, 10)
    // Skips carry no payload: only the messages count.
    assert.strictEqual(planned.bytes, 70)
    const data = planned.items.filter((item) => item._tag === "Data")
    assert.deepStrictEqual(data.map((item) => [item.run, item.payload[0]]), [
      [7, 1],
      [7, 2],
      [7, 5],
      [7, 6],
      [7, 8],
      [7, 9],
      [7, 10]
    ])
  })

  it("a skip may start the transmission, or start inside a dropped range, and consecutive ranges go as they are", () => {
    const stream = drop(withAllocated(10), [[1, 3], [4, 6]])
    assert.deepStrictEqual(shown(itemsToSend(stream, 1, 10, stored([7, 8, 9, 10]), 1000, now)), [
      "S1-3 expired run 5",
      "S4-6 expired run 5",
      "D7",
      "D8",
      "D9",
      "D10"
    ])
    // Resent from seq 2, inside the first range.
    assert.deepStrictEqual(shown(itemsToSend(stream, 2, 8, stored([7, 8, 9, 10]), 1000, now)), [
      "S2-3 expired run 5",
      "S4-6 expired run 5",
      "D7",
      "D8"
    ])
  })

  it("a skip reaches past `to`, up to the end of its range, but never past the allocated seqs", () => {
    // The window lets out 1 … 4, and 3 … 15 were dropped: one frame skips them all.
    const inside = drop(withAllocated(20), [[3, 15]])
    const planned = itemsToSend(inside, 1, 4, stored([1, 2, 16]), 1000, now)
    assert.deepStrictEqual(shown(planned), ["D1", "D2", "S3-15 expired run 5"])
    assert.strictEqual(planned.last, 15)
    assert.strictEqual(planned.bytes, 20)
    // The store dropped seqs this run has not recorded as allocated yet: the skip stops at the allocated seq.
    const ahead = drop(withAllocated(10), [[3, 15]])
    const clipped = itemsToSend(ahead, 1, 4, stored([1, 2]), 1000, now)
    assert.deepStrictEqual(shown(clipped), ["D1", "D2", "S3-10 expired run 5"])
    assert.strictEqual(clipped.last, 10)
  })

  it("stops at `to`, whatever else was read", () => {
    const planned = itemsToSend(withAllocated(10), 1, 3, stored([1, 2, 3, 4, 5]), 1000, now)
    assert.deepStrictEqual(shown(planned), ["D1", "D2", "D3"])
    assert.strictEqual(planned.last, 3)
  })

  it("stops at a hole no dropped range explains yet", () => {
    const planned = itemsToSend(withAllocated(10), 1, 10, stored([1, 2, 4, 5]), 1000, now)
    assert.deepStrictEqual(shown(planned), ["D1", "D2"])
    assert.strictEqual(planned.last, 2)
    assert.strictEqual(planned.bytes, 20)
    // A hole at the first seq: nothing goes, and `last` is below `from`.
    const none = itemsToSend(withAllocated(10), 3, 10, stored([4, 5]), 1000, now)
    assert.deepStrictEqual(none.items, [])
    assert.strictEqual(none.last, 2)
    assert.strictEqual(none.bytes, 0)
    const empty = itemsToSend(withAllocated(10), 1, 10, [], 1000, now)
    assert.deepStrictEqual(empty.items, [])
    assert.strictEqual(empty.last, 0)
    // After a skip, a hole stops the transmission too.
    const afterSkip = itemsToSend(drop(withAllocated(10), [[2, 3]]), 1, 10, stored([1, 5]), 1000, now)
    assert.deepStrictEqual(shown(afterSkip), ["D1", "S2-3 expired run 5"])
    assert.strictEqual(afterSkip.last, 3)
  })

  it("a message read back that the stream has since dropped goes as a skip", () => {
    const stream = drop(withAllocated(5), [[2, 3]], "purged")
    const planned = itemsToSend(stream, 1, 5, stored([1, 2, 3, 4, 5]), 1000, now)
    assert.deepStrictEqual(shown(planned), ["D1", "S2-3 purged run 5", "D4", "D5"])
    assert.strictEqual(planned.bytes, 30)
  })

  it("bounds the bytes in flight, but always lets one message out when nothing is in flight", () => {
    const stream = withAllocated(10)
    const count = (s: Outbound.OutStream, sizes: ReadonlyArray<number>, from = 1) =>
      itemsToSend(s, from, from + sizes.length - 1, sized(sizes, from), 1000, now).items.length
    assert.strictEqual(count(stream, [600, 600, 600]), 1)
    assert.strictEqual(count(stream, [5000]), 1)
    assert.strictEqual(count(stream, [500, 500, 1]), 2)
    assert.strictEqual(itemsToSend(stream, 1, 3, sized([600, 300, 200]), 1000, now).bytes, 900)
    const sent = Outbound.sent(stream, 1, 1, 600, 0).stream
    assert.strictEqual(count(sent, [300, 200], 2), 1)
    const blocked = itemsToSend(sent, 2, 2, sized([0, 500]), 1000, now)
    assert.deepStrictEqual(blocked.items, [])
    assert.strictEqual(blocked.last, 1)
    // An acknowledgement lands the transmission: its bytes leave the flight.
    const acked = Outbound.acknowledge(sent, 1, 1)
    if (acked._tag !== "acked") return assert.fail("expected progress")
    assert.strictEqual(count(acked.stream, [500, 500, 1], 2), 2)
  })

  it("skips cost the byte window nothing, and a message too large for it still goes first after them", () => {
    // 900 of 1000 bytes in flight: the skips go, and then a message of 100 bytes but not one of 200.
    const inFlight = drop(Outbound.sent(withAllocated(10), 1, 2, 900, 0).stream, [[3, 4], [6, 6]])
    const small = itemsToSend(inFlight, 3, 10, stored([5, 7], 100), 1000, now)
    assert.deepStrictEqual(shown(small), ["S3-4 expired run 5", "D5", "S6-6 expired run 5"])
    assert.strictEqual(small.bytes, 100)
    assert.strictEqual(small.last, 6)
    const large = itemsToSend(inFlight, 3, 10, stored([5, 7], 200), 1000, now)
    assert.deepStrictEqual(shown(large), ["S3-4 expired run 5"])
    assert.strictEqual(large.bytes, 0)
    assert.strictEqual(large.last, 4)
    // Nothing in flight: a message larger than the window goes after a skip, and only it.
    const idle = drop(withAllocated(10), [[1, 2]])
    const big = itemsToSend(idle, 1, 10, stored([3, 4], 5000), 1000, now)
    assert.deepStrictEqual(shown(big), ["S1-2 expired run 5", "D3"])
    assert.strictEqual(big.bytes, 5000)
  })

  it("gives each message the time it has left, never below zero, and none to a message that never expires", () => {
    const messages = [
      ...stored([1], 1, now + 5000),
      ...stored([2], 1, now + 1),
      ...stored([3], 1, now),
      ...stored([4], 1, now - 1),
      ...stored([5], 1, now - 10_000_000),
      ...stored([6], 1)
    ]
    const planned = itemsToSend(withAllocated(6), 1, 6, messages, 1000, now)
    const ttls = planned.items.map((item) => item._tag === "Data" ? item.ttl : "skip")
    assert.deepStrictEqual(ttls, [5000, 1, 0, 0, 0, undefined])
    const last = planned.items[5]!
    assert.isFalse("ttl" in last, "a message without an expiry has no ttl key")
    // The same message, sent later, has less left.
    const later = itemsToSend(withAllocated(1), 1, 1, stored([1], 1, now + 5000), 1000, now + 2000).items[0]
    assert.strictEqual(later?._tag === "Data" ? later.ttl : "no message", 3000)
  })
})
