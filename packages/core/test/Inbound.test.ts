/**
 * One inbound stream — acceptance, reordering, delivery — without the runtime.
 */
import { assert, describe, it } from "@effect/vitest"
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

const seqs = (stream: Inbound.InStream | undefined) => stream?.buffer.map((frame) => frame.seq)

/** Takes frames and checks that a stream came out. */
const accept = (current: Inbound.InStream | undefined, frames: ReadonlyArray<Frame.Data>) => {
  const accepted = Inbound.accept(key, current, frames, limits)
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
    const delivered = Inbound.delivered(buffered, incarnation, 2, [])!
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
    const after = Inbound.delivered(stream, incarnation, 2, [{ run: 5, from: 1 }])!
    assert.strictEqual(after.delivered, 2)
    assert.deepStrictEqual(seqs(after), [4])
    assert.strictEqual(after.bufferedBytes, 10)
    assert.deepStrictEqual(Inbound.deliverable(after, 10), [])
    // A delivery of another incarnation, or behind the stream, changes nothing.
    assert.isUndefined(Inbound.delivered(after, Incarnation.Incarnation.make(7), 4, []))
    assert.isUndefined(Inbound.delivered(after, incarnation, 2, []))
  })

  it("a new session of the sender drops what it buffered", () => {
    const stream = accept(undefined, [data(1), data(3)]).stream
    const cleared = Inbound.clear(stream)
    assert.deepStrictEqual(seqs(cleared), [])
    assert.strictEqual(cleared.bufferedBytes, 0)
    assert.strictEqual(cleared.delivered, 0)
  })
})
