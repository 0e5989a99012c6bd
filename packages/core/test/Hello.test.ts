/**
 * `Hello` planning, without the runtime.
 */
import { assert, describe, it } from "@effect/vitest"
import type * as Frame from "../src/Frame.js"
import * as Incarnation from "../src/Incarnation.js"
import * as Hello from "../src/internal/engine/hello.js"
import * as Outbound from "../src/internal/engine/outbound.js"
import * as StreamKey from "../src/StreamKey.js"
import { A, B } from "./helpers.js"

const ours = Incarnation.Incarnation.make(1000)
const run = 7

const stream = (lane: string, acked: number, allocated: number) =>
  Outbound.restore(StreamKey.make(B, lane), {
    peer: B,
    lane,
    firstPending: acked + 1,
    nextSeq: allocated + 1,
    runs: [{ run, from: acked + 1 }],
    dropped: []
  })

const hello = (lanes: ReadonlyArray<typeof Frame.LaneState.Type>): Frame.Hello => ({
  _tag: "Hello",
  from: B,
  to: A,
  incarnation: Incarnation.Incarnation.make(5),
  nonce: 1,
  echo: 1,
  reply: false,
  lanes
})

const lane = (name: string, delivered: number, runs = [{ run, from: 1 }], incarnation = ours) => ({
  lane: name,
  incarnation,
  delivered,
  runs
})

describe("Hello planning", () => {
  it("acknowledges what the peer delivered of this store's history", () => {
    const plan = Hello.plan(hello([lane("x", 8)]), ours, [stream("x", 2, 10)])
    assert.deepStrictEqual(plan.acks.map(({ upTo }) => upTo), [8])
    assert.isUndefined(plan.resync)
    assert.deepStrictEqual(plan.forgotten, [])
  })

  it("ignores what is already acknowledged and lanes of an older incarnation", () => {
    const plan = Hello.plan(
      hello([lane("x", 2), lane("y", 9, undefined, Incarnation.Incarnation.make(10))]),
      ours,
      [stream("x", 2, 10), stream("y", 0, 10)]
    )
    assert.deepStrictEqual(plan.acks, [])
    assert.isUndefined(plan.resync)
  })

  it("starts a new incarnation when the peer delivered seqs this store never allocated or another run did", () => {
    const beyond = Hello.plan(hello([lane("x", 12)]), ours, [stream("x", 2, 10)])
    assert.deepStrictEqual(beyond.acks.map(({ upTo }) => upTo), [10])
    assert.strictEqual(beyond.resync?.reason, "store-went-back")
    const otherRun = Hello.plan(hello([lane("x", 8, [{ run: 99, from: 1 }])]), ours, [stream("x", 2, 10)])
    assert.deepStrictEqual(otherRun.acks, [])
    assert.strictEqual(otherRun.resync?.reason, "store-went-back")
    assert.strictEqual(otherRun.resync?.after, ours)
  })

  it("moves past an incarnation the peer knows that is not older than this one", () => {
    const newer = Incarnation.Incarnation.make(2000)
    const plan = Hello.plan(hello([lane("x", 3, undefined, newer)]), ours, [stream("x", 0, 5)])
    assert.strictEqual(plan.resync?.reason, "peer-knows-newer-incarnation")
    assert.strictEqual(plan.resync?.after, 2000)
  })

  it("acknowledges by runs what the peer delivered under a newer incarnation, when the store was restored", () => {
    // Seqs 1–10 of run 7 were delivered, then this store moved on (seqs 11–12 under a newer incarnation, another
    // run) and was restored to a copy from before: its seqs 3–10 are pending again, and were delivered already.
    const newer = Incarnation.Incarnation.make(2000)
    const seen = [{ run, from: 1 }, { run: 8, from: 11 }]
    const plan = Hello.plan(hello([lane("x", 12, seen, newer)]), ours, [stream("x", 2, 10)])
    assert.deepStrictEqual(plan.acks.map(({ upTo }) => upTo), [10])
    assert.strictEqual(plan.resync?.reason, "peer-knows-newer-incarnation")
    // Another run's seqs are other messages, under any incarnation.
    const other = Hello.plan(hello([lane("x", 12, [{ run: 99, from: 1 }], newer)]), ours, [stream("x", 2, 10)])
    assert.deepStrictEqual(other.acks, [])
  })

  it("acknowledges seqs the peer moved past by a Skip, for a stream restored with a dropped prefix", () => {
    const restored = Outbound.restore(StreamKey.make(B, "x"), {
      peer: B,
      lane: "x",
      firstPending: 6,
      nextSeq: 11,
      runs: [{ run, from: 3 }],
      dropped: [{ run, from: 3, to: 5, reason: "expired" }]
    })
    assert.strictEqual(restored.acked, 2)
    const plan = Hello.plan(hello([lane("x", 8)]), ours, [restored])
    assert.deepStrictEqual(plan.acks.map(({ upTo }) => upTo), [8])
    assert.isUndefined(plan.resync)
    // Only into the dropped prefix: acknowledged too, so the stream stops skipping it.
    const intoDropped = Hello.plan(hello([lane("x", 4)]), ours, [restored])
    assert.deepStrictEqual(intoDropped.acks.map(({ upTo }) => upTo), [4])
  })

  it("reports streams the peer acknowledged before and no longer knows", () => {
    const plan = Hello.plan(hello([]), ours, [stream("x", 4, 10), stream("y", 0, 3)])
    assert.deepStrictEqual(plan.forgotten.map((s) => s.lane), ["x"])
  })

  it("lists what this peer delivered per lane", () => {
    const states = Hello.laneStates([{
      key: StreamKey.make(B, "x"),
      peer: B,
      lane: "x",
      incarnation: ours,
      delivered: 4,
      runs: [{ run, from: 1 }],
      buffer: [],
      bufferedBytes: 0,
      busy: false,
      expired: 0,
      purged: 0,
      deadLettered: 0
    }])
    assert.deepStrictEqual(states, [{ lane: "x", incarnation: ours, delivered: 4, runs: [{ run, from: 1 }] }])
  })
})
