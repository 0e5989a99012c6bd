/**
 * One inbound stream — acceptance, reordering, delivery — without the runtime.
 */
import { assert, describe, it } from "@effect/vitest"
import * as FastCheck from "effect/FastCheck"
import type * as Frame from "../src/Frame.js"
import * as Incarnation from "../src/Incarnation.js"
import * as Inbound from "../src/internal/engine/inbound.js"
import * as Lane from "../src/Lane.js"
import * as StreamKey from "../src/StreamKey.js"
import { A, B } from "./helpers.js"

const key = StreamKey.make(A, Lane.defaultLane)
const limits: Inbound.Limits = { window: 8, windowBytes: 1000 }
const incarnation = Incarnation.Incarnation.make(100)

const data = (seq: number, options?: { floor?: number; incarnation?: number; size?: number }): Frame.Data => ({
  _tag: "Data",
  from: A,
  to: B,
  lane: Lane.defaultLane,
  incarnation: Incarnation.Incarnation.make(options?.incarnation ?? 100),
  session: 1,
  run: 5,
  seq,
  floor: options?.floor ?? 1,
  payload: new Uint8Array(options?.size ?? 10)
})

const skip = (
  seq: number,
  last: number,
  options?: { floor?: number; incarnation?: number; reason?: Frame.SkipReason; run?: number }
): Frame.Skip => ({
  _tag: "Skip",
  from: A,
  to: B,
  lane: Lane.defaultLane,
  incarnation: Incarnation.Incarnation.make(options?.incarnation ?? 100),
  session: 1,
  run: options?.run ?? 5,
  seq,
  last,
  floor: options?.floor ?? 1,
  reason: options?.reason ?? "expired"
})

const seqs = (stream: Inbound.InStream | undefined) => stream?.buffer.map((frame) => frame.seq)

/** The buffer as short strings: `D3` a message, `S3-5` a skip. */
const items = (list: ReadonlyArray<Inbound.Item> | undefined) =>
  list?.map((item) => (item._tag === "Skip" ? `S${item.seq}-${item.last}` : `D${item.seq}`))

const none = { expired: 0, purged: 0, deadLettered: 0 }

/** Takes frames and checks that a stream came out. */
const accept = (
  current: Inbound.InStream | undefined,
  frames: ReadonlyArray<Inbound.Item>,
  within: Inbound.Limits = limits
) => {
  const accepted = Inbound.accept(key, current, frames, within)
  if (accepted.stream === undefined) throw new Error("no stream")
  return { ...accepted, stream: accepted.stream }
}

describe("inbound stream", () => {
  it("adopts a new stream at the sender's floor and buffers in seq order", () => {
    const { jumps, repeatAck, stream } = accept(undefined, [data(1), data(3), data(2)])
    assert.deepStrictEqual(seqs(stream), [1, 2, 3])
    assert.strictEqual(stream.delivered, 0)
    assert.strictEqual(stream.bufferedBytes, 30)
    assert.deepStrictEqual(jumps, [])
    // 3 arrived while 1 was already here: no sign of loss.
    assert.isFalse(repeatAck)
    const late = accept(undefined, [data(5, { floor: 5 })])
    assert.strictEqual(late.stream.delivered, 4)
    assert.strictEqual(late.jumps[0]?.reason, "receiver-behind")
  })

  it("asks for the acknowledgement again past a gap, once per frame waiting past it", () => {
    const first = accept(undefined, [data(2), data(3), data(4)])
    assert.isTrue(first.repeatAck)
    assert.strictEqual(Inbound.pastGap(first.stream), 3)
    const filled = accept(first.stream, [data(1)])
    assert.isFalse(filled.repeatAck)
    assert.strictEqual(Inbound.pastGap(filled.stream), 0)
  })

  it("counts duplicates of delivered and buffered seqs, and never buffers one again", () => {
    const buffered = accept(undefined, [data(1), data(2), data(3)]).stream
    const delivered = Inbound.delivered(buffered, incarnation, 2, [], none)!
    assert.deepStrictEqual(seqs(delivered), [3])
    const again = accept(delivered, [data(1), data(2), data(3), data(2)])
    assert.strictEqual(again.duplicates, 4)
    assert.isTrue(again.repeatAck)
    assert.deepStrictEqual(seqs(again.stream), [3])
    assert.deepStrictEqual(Inbound.deliverable(again.stream, 10).map((frame) => frame.seq), [3])
  })

  it("drops what lies beyond the window, in messages and in bytes, but always takes the next seq", () => {
    const { stream } = accept(undefined, [data(9), data(8), data(2, { size: 600 }), data(3, { size: 600 })])
    assert.deepStrictEqual(seqs(stream), [2, 8])
    const next = accept(stream, [data(1, { size: 900 })])
    assert.deepStrictEqual(seqs(next.stream), [1, 2, 8])
    assert.strictEqual(next.stream.bufferedBytes, 900 + 600 + 10)
  })

  it("replaces the stream on a newer incarnation and refuses an older one", () => {
    const old = accept(undefined, [data(1), data(2)]).stream
    const newer = accept(old, [data(4, { incarnation: 200, floor: 4 })])
    assert.strictEqual(newer.stream.incarnation, 200)
    assert.strictEqual(newer.stream.delivered, 3)
    assert.deepStrictEqual(seqs(newer.stream), [4])
    assert.strictEqual(newer.jumps[0]?.reason, "peer-new-incarnation")
    const stale = accept(newer.stream, [data(5, { incarnation: 100 })])
    assert.strictEqual(stale.stale.length, 1)
    assert.strictEqual(stale.stream, newer.stream)
  })

  it("keeps the runs of the seqs below a newer incarnation's floor when it delivered all of them", () => {
    const old = Inbound.delivered(accept(undefined, [data(1), data(2), data(3)]).stream, incarnation, 3, [
      { run: 5, from: 1 }
    ], none)!
    // The sender moved to a new incarnation keeping its seqs: 1–3 are the messages delivered.
    assert.deepStrictEqual(accept(old, [data(4, { incarnation: 200, floor: 4 })]).stream.runs, [{ run: 5, from: 1 }])
    assert.deepStrictEqual(accept(old, [data(3, { incarnation: 200, floor: 3 })]).stream.runs, [{ run: 5, from: 1 }])
    // Seqs it never delivered lie below the floor: it cannot say which messages those were.
    assert.deepStrictEqual(accept(old, [data(6, { incarnation: 200, floor: 6 })]).stream.runs, [])
  })

  it("jumps to the floor when the sender has acknowledgements this receiver lacks, unless a delivery is under way", () => {
    const stream = accept(undefined, [data(1), data(2)]).stream
    const jumped = accept(stream, [data(6, { floor: 5 })])
    assert.strictEqual(jumped.stream.delivered, 4)
    assert.deepStrictEqual(seqs(jumped.stream), [6])
    assert.strictEqual(jumped.jumps[0]?.reason, "receiver-behind")
    const busy = accept({ ...stream, busy: true }, [data(6, { floor: 5 })])
    assert.strictEqual(busy.stream.delivered, 0)
    assert.deepStrictEqual(busy.jumps, [])
  })

  it("delivers consecutive seqs only, and forgets them once delivered", () => {
    const stream = accept(undefined, [data(1), data(2), data(4)]).stream
    assert.deepStrictEqual(Inbound.deliverable(stream, 10).map((frame) => frame.seq), [1, 2])
    assert.deepStrictEqual(Inbound.deliverable(stream, 1).map((frame) => frame.seq), [1])
    const after = Inbound.delivered(stream, incarnation, 2, [{ run: 5, from: 1 }], none)!
    assert.strictEqual(after.delivered, 2)
    assert.deepStrictEqual(seqs(after), [4])
    assert.strictEqual(after.bufferedBytes, 10)
    assert.deepStrictEqual(Inbound.deliverable(after, 10), [])
    // A delivery of another incarnation, or behind the stream, changes nothing.
    assert.isUndefined(Inbound.delivered(after, Incarnation.Incarnation.make(7), 4, [], none))
    assert.isUndefined(Inbound.delivered(after, incarnation, 2, [], none))
  })

  it("a new session of the sender drops what it buffered", () => {
    const stream = accept(undefined, [data(1), data(3)]).stream
    const cleared = Inbound.clear(stream)
    assert.deepStrictEqual(seqs(cleared), [])
    assert.strictEqual(cleared.bufferedBytes, 0)
    assert.strictEqual(cleared.delivered, 0)
  })
})

describe("inbound stream: skips", () => {
  it("a skip whose seqs all wait in buffered skips is a duplicate, as a repeated message is", () => {
    const first = accept(undefined, [skip(2, 3), data(4)]).stream
    const again = accept(first, [skip(2, 3)])
    assert.strictEqual(again.duplicates, 1)
    assert.isTrue(again.repeatAck)
    assert.deepStrictEqual(items(again.stream.buffer), ["S2-3", "D4"])
    const covered = accept(first, [skip(2, 2)])
    assert.strictEqual(covered.duplicates, 1)
  })

  it("a skip waits in the buffer like a message, costs no bytes, and data after it delivers across it", () => {
    const { repeatAck, stream } = accept(undefined, [skip(1, 3), data(4), data(6)])
    assert.deepStrictEqual(items(stream.buffer), ["S1-3", "D4", "D6"])
    assert.strictEqual(stream.bufferedBytes, 20)
    assert.strictEqual(stream.delivered, 0)
    assert.isFalse(repeatAck)
    assert.deepStrictEqual(items(Inbound.deliverable(stream, 10)), ["S1-3", "D4"])
    // `max` counts items, a skip as one.
    assert.deepStrictEqual(items(Inbound.deliverable(stream, 1)), ["S1-3"])
    const after = Inbound.delivered(stream, incarnation, 4, [{ run: 5, from: 1 }], {
      expired: 3,
      purged: 0,
      deadLettered: 0
    })!
    assert.strictEqual(after.delivered, 4)
    assert.deepStrictEqual(items(after.buffer), ["D6"])
    assert.strictEqual(after.bufferedBytes, 10)
    assert.strictEqual(after.expired, 3)
    assert.deepStrictEqual(Inbound.deliverable(after, 10), [])
  })

  it("a skip covering buffered messages supersedes them, and frees their bytes", () => {
    const buffered = accept(undefined, [data(2), data(3), data(5), data(7, { size: 30 })]).stream
    assert.strictEqual(buffered.bufferedBytes, 60)
    const skipped = accept(buffered, [skip(2, 6, { reason: "purged" })])
    assert.deepStrictEqual(items(skipped.stream.buffer), ["S2-6", "D7"])
    assert.strictEqual(skipped.stream.bufferedBytes, 30)
    assert.strictEqual(skipped.duplicates, 0)
    assert.strictEqual((skipped.stream.buffer[0] as Frame.Skip).reason, "purged")
    // The first stream is untouched: the buffer is copied.
    assert.deepStrictEqual(items(buffered.buffer), ["D2", "D3", "D5", "D7"])
    // The messages come again (a retransmission): each is a duplicate of the skip.
    const again = accept(skipped.stream, [data(2), data(4), data(6)])
    assert.strictEqual(again.duplicates, 3)
    assert.isTrue(again.repeatAck)
    assert.deepStrictEqual(items(again.stream.buffer), ["S2-6", "D7"])
    assert.strictEqual(again.stream.bufferedBytes, 30)
  })

  it("a skip and the message it covers, in one batch either way round, leave the skip", () => {
    const skipFirst = accept(undefined, [skip(1, 2), data(2)])
    assert.deepStrictEqual(items(skipFirst.stream.buffer), ["S1-2"])
    assert.strictEqual(skipFirst.stream.bufferedBytes, 0)
    assert.strictEqual(skipFirst.duplicates, 1)
    const dataFirst = accept(undefined, [data(2), skip(1, 2)])
    assert.deepStrictEqual(items(dataFirst.stream.buffer), ["S1-2"])
    assert.strictEqual(dataFirst.stream.bufferedBytes, 0)
  })

  it("overlapping skips: the parts buffered skips cover already are left out", () => {
    const buffered = accept(undefined, [skip(3, 5, { reason: "purged" }), skip(8, 9, { reason: "purged" })]).stream
    const wide = accept(buffered, [skip(2, 10)]).stream
    assert.deepStrictEqual(items(wide.buffer), ["S2-2", "S3-5", "S6-7", "S8-9", "S10-10"])
    // The skips already buffered keep their reasons; the new parts carry the new one.
    assert.deepStrictEqual(wide.buffer.map((item) => (item as Frame.Skip).reason), [
      "expired",
      "purged",
      "expired",
      "purged",
      "expired"
    ])
    // Starting inside a buffered skip, ending past it.
    assert.deepStrictEqual(items(accept(buffered, [skip(4, 6)]).stream.buffer), ["S3-5", "S6-6", "S8-9"])
    // Ending inside one.
    assert.deepStrictEqual(items(accept(buffered, [skip(1, 4)]).stream.buffer), ["S1-2", "S3-5", "S8-9"])
    // Wholly inside, or the same again: nothing changes.
    assert.deepStrictEqual(items(accept(buffered, [skip(4, 4), skip(3, 5), skip(8, 9)]).stream.buffer), [
      "S3-5",
      "S8-9"
    ])
    // Skips, messages and gaps together: the messages go, the skips stay, the gaps are filled.
    const roomy: Inbound.Limits = { window: 100, windowBytes: 1000 }
    const mixed = accept(undefined, [data(4), skip(6, 7), data(9), data(12)], roomy).stream
    const covered = accept(mixed, [skip(3, 10)], roomy).stream
    assert.deepStrictEqual(items(covered.buffer), ["S3-5", "S6-7", "S8-10", "D12"])
    assert.strictEqual(covered.bufferedBytes, 10)
  })

  it("a skip partly below the delivered seq is trimmed, and one wholly below is a duplicate", () => {
    const base = accept(undefined, [data(1), data(2), data(3)]).stream
    const stream = Inbound.delivered(base, incarnation, 3, [], none)!
    const partly = accept(stream, [skip(2, 5)])
    assert.deepStrictEqual(items(partly.stream.buffer), ["S4-5"])
    assert.strictEqual(partly.duplicates, 0)
    assert.deepStrictEqual(items(Inbound.deliverable(partly.stream, 10)), ["S4-5"])
    const wholly = accept(stream, [skip(1, 3)])
    assert.strictEqual(wholly.duplicates, 1)
    assert.isTrue(wholly.repeatAck)
    assert.deepStrictEqual(items(wholly.stream.buffer), [])
  })

  it("a skip starting beyond the window is dropped; one starting inside it is kept whole", () => {
    const beyond = accept(undefined, [data(1), skip(9, 12)])
    assert.deepStrictEqual(items(beyond.stream.buffer), ["D1"])
    const inside = accept(undefined, [data(1), skip(8, 100)])
    assert.deepStrictEqual(items(inside.stream.buffer), ["D1", "S8-100"])
    // A message past the window stays out even where a buffered skip reaches.
    const past = accept(inside.stream, [data(101), data(9)])
    assert.deepStrictEqual(items(past.stream.buffer), ["D1", "S8-100"])
    // A skip ignores the byte bound: it holds no bytes.
    const full = accept(undefined, [data(2, { size: 990 }), skip(4, 5)], { window: 8, windowBytes: 1000 })
    assert.deepStrictEqual(items(full.stream.buffer), ["D2", "S4-5"])
  })

  it("a skip past a gap asks for the acknowledgement again; one at the next seq does not", () => {
    assert.isTrue(accept(undefined, [skip(3, 4)]).repeatAck)
    assert.isFalse(accept(undefined, [skip(1, 4)]).repeatAck)
    const waiting = accept(undefined, [data(1)]).stream
    assert.isFalse(accept(waiting, [skip(2, 3)]).repeatAck)
    assert.strictEqual(Inbound.pastGap(accept(undefined, [skip(3, 4), data(6)]).stream), 2)
  })

  it("deliverable walks across skips and stops at a gap", () => {
    const stream = accept(undefined, [data(1), skip(2, 4), data(5), skip(6, 6), data(8)]).stream
    assert.deepStrictEqual(items(Inbound.deliverable(stream, 10)), ["D1", "S2-4", "D5", "S6-6"])
    assert.deepStrictEqual(items(Inbound.deliverable(stream, 2)), ["D1", "S2-4"])
    // A gap before the first item: nothing.
    assert.deepStrictEqual(Inbound.deliverable(accept(undefined, [skip(2, 4), data(5)]).stream, 10), [])
  })

  it("delivered() trims a skip it covers part of, keeps its bytes right, and adds the counts", () => {
    // The worker delivers 1 and 2 while the sender's skip of 1 … 5 arrives: it superseded them in the buffer.
    const taken = accept(undefined, [data(1), data(2), data(6)]).stream
    const busy = { ...taken, busy: true }
    const skipped = accept(busy, [skip(1, 5, { reason: "purged" })]).stream
    assert.deepStrictEqual(items(skipped.buffer), ["S1-5", "D6"])
    assert.strictEqual(skipped.bufferedBytes, 10)
    const after = Inbound.delivered(skipped, incarnation, 2, [{ run: 5, from: 1 }], none)!
    assert.strictEqual(after.delivered, 2)
    assert.deepStrictEqual(items(after.buffer), ["S3-5", "D6"])
    assert.strictEqual((after.buffer[0] as Frame.Skip).reason, "purged")
    assert.strictEqual(after.bufferedBytes, 10)
    assert.deepStrictEqual(items(Inbound.deliverable(after, 10)), ["S3-5", "D6"])
    // The rest of the skip, then the message.
    const done = Inbound.delivered(after, incarnation, 6, [{ run: 5, from: 1 }], {
      expired: 0,
      purged: 3,
      deadLettered: 0
    })!
    assert.deepStrictEqual(items(done.buffer), [])
    assert.strictEqual(done.bufferedBytes, 0)
    assert.strictEqual(done.purged, 3)
    assert.strictEqual(done.expired, 0)
    // Ending exactly at a skip's last seq leaves nothing of it.
    const exact = Inbound.delivered(skipped, incarnation, 5, [], { expired: 1, purged: 4, deadLettered: 0 })!
    assert.deepStrictEqual(items(exact.buffer), ["D6"])
    assert.strictEqual(exact.expired, 1)
    assert.strictEqual(exact.purged, 4)
  })

  it("a skip adopts a new stream at its floor, and a jump to the floor trims a buffered skip", () => {
    const adopted = accept(undefined, [skip(5, 7, { floor: 5 })])
    assert.strictEqual(adopted.stream.delivered, 4)
    assert.deepStrictEqual(items(adopted.stream.buffer), ["S5-7"])
    assert.strictEqual(adopted.jumps[0]?.reason, "receiver-behind")
    const buffered = accept(undefined, [skip(2, 6), data(8)]).stream
    const jumped = accept(buffered, [data(9, { floor: 5 })])
    assert.strictEqual(jumped.stream.delivered, 4)
    assert.deepStrictEqual(items(jumped.stream.buffer), ["S5-6", "D8", "D9"])
    assert.strictEqual(jumped.stream.bufferedBytes, 20)
    // A skip's floor moves the stream too, and what it skips below the floor is gone.
    const bySkip = accept(buffered, [skip(7, 7, { floor: 7 })])
    assert.strictEqual(bySkip.stream.delivered, 6)
    assert.deepStrictEqual(items(bySkip.stream.buffer), ["S7-7", "D8"])
  })

  it("a skip of an older incarnation is refused; a newer one replaces the stream and keeps its counts", () => {
    const base = accept(undefined, [data(1), data(2)]).stream
    const counted = Inbound.delivered(base, incarnation, 1, [], { expired: 2, purged: 3, deadLettered: 0 })!
    const stale = accept(counted, [skip(3, 4, { incarnation: 50 })])
    assert.strictEqual(stale.stale.length, 1)
    assert.strictEqual(stale.stream, counted)
    const newer = accept(counted, [skip(4, 6, { incarnation: 200, floor: 4 })])
    assert.strictEqual(newer.stream.incarnation, 200)
    assert.strictEqual(newer.stream.delivered, 3)
    assert.deepStrictEqual(items(newer.stream.buffer), ["S4-6"])
    assert.strictEqual(newer.stream.expired, 2)
    assert.strictEqual(newer.stream.purged, 3)
  })

  it("a message keeps the deadline it arrived with", () => {
    const { stream } = accept(undefined, [{ ...data(1), deadline: 1234 }, data(2)])
    assert.strictEqual((stream.buffer[0] as Inbound.Message).deadline, 1234)
    assert.isUndefined((stream.buffer[1] as Inbound.Message).deadline)
  })

  // Any mix of messages and skips, in any order, with deliveries in between: the buffer is what a model of it says.
  // Per seq: a skip wins over a message, the first skip over later ones, the first message over its duplicates.
  it("any mix of messages, skips and deliveries leaves the buffer the model says", () => {
    type Step =
      | { readonly _tag: "data"; readonly seq: number }
      | { readonly _tag: "skip"; readonly seq: number; readonly length: number; readonly reason: Frame.SkipReason }
      | { readonly _tag: "deliver"; readonly count: number; readonly cut: number }
    const step: FastCheck.Arbitrary<Step> = FastCheck.oneof(
      FastCheck.record({ _tag: FastCheck.constant("data" as const), seq: FastCheck.integer({ min: 1, max: 40 }) }),
      FastCheck.record({
        _tag: FastCheck.constant("skip" as const),
        seq: FastCheck.integer({ min: 1, max: 40 }),
        length: FastCheck.integer({ min: 1, max: 8 }),
        reason: FastCheck.constantFrom<Frame.SkipReason>("expired", "purged")
      }),
      FastCheck.record({
        _tag: FastCheck.constant("deliver" as const),
        count: FastCheck.integer({ min: 1, max: 6 }),
        cut: FastCheck.integer({ min: 0, max: 8 })
      })
    )
    const wide: Inbound.Limits = { window: 1000, windowBytes: 1_000_000 }
    FastCheck.assert(
      FastCheck.property(FastCheck.array(step, { maxLength: 40 }), (steps) => {
        let stream: Inbound.InStream | undefined
        let delivered = 0
        const model = new Map<number, "data" | Frame.SkipReason>()
        for (const op of steps) {
          if (op._tag === "data") {
            stream = Inbound.accept(key, stream, [data(op.seq, { size: op.seq })], wide).stream
            if (op.seq > delivered && !model.has(op.seq)) model.set(op.seq, "data")
          } else if (op._tag === "skip") {
            const last = op.seq + op.length - 1
            stream = Inbound.accept(key, stream, [skip(op.seq, last, { reason: op.reason })], wide).stream
            for (let seq = Math.max(op.seq, delivered + 1); seq <= last; seq++) {
              const was = model.get(seq)
              if (was === undefined || was === "data") model.set(seq, op.reason)
            }
          } else if (stream !== undefined) {
            const ready = Inbound.deliverable(stream, op.count)
            if (ready.length === 0) continue
            // Up to the end of what is ready, or a few seqs short of it (into a skip, when the last item is one).
            const end = Inbound.lastOf(ready[ready.length - 1]!)
            const lastOk = Math.max(ready[0]!.seq, end - op.cut)
            const covered = ready.filter((item) => item.seq <= lastOk)
            if (Inbound.lastOf(covered[covered.length - 1]!) < lastOk && covered.at(-1)!._tag !== "Skip") continue
            stream = Inbound.delivered(stream, incarnation, lastOk, [], none)!
            for (let seq = delivered + 1; seq <= lastOk; seq++) {
              assert.isTrue(model.has(seq), `seq ${seq} was delivered without having arrived`)
              model.delete(seq)
            }
            delivered = lastOk
          }
          if (stream === undefined) continue
          assert.strictEqual(stream.delivered, delivered)
          // The buffer, seq by seq, is the model; in seq order, no seq twice, nothing at or below delivered.
          const seen = new Map<number, "data" | Frame.SkipReason>()
          let previous = delivered
          let bytes = 0
          for (const item of stream.buffer) {
            assert.isAbove(item.seq, previous, `the buffer ${items(stream.buffer)} is out of order`)
            assert.isAtLeast(Inbound.lastOf(item), item.seq)
            for (let seq = item.seq; seq <= Inbound.lastOf(item); seq++) {
              seen.set(seq, item._tag === "Skip" ? item.reason : "data")
            }
            if (item._tag === "Data") bytes += item.payload.length
            previous = Inbound.lastOf(item)
          }
          assert.deepStrictEqual(
            [...seen].sort(([a], [b]) => a - b),
            [...model].sort(([a], [b]) => a - b),
            `after ${JSON.stringify(steps)}`
          )
          assert.strictEqual(stream.bufferedBytes, bytes)
          // What is deliverable is everything consecutive from the next seq.
          let next = delivered + 1
          while (model.has(next)) next++
          const ready = Inbound.deliverable(stream, Number.MAX_SAFE_INTEGER)
          assert.strictEqual(ready.length === 0 ? delivered : Inbound.lastOf(ready[ready.length - 1]!), next - 1)
        }
      }),
      { seed: 20_250_611, numRuns: 2000 }
    )
  })
})
