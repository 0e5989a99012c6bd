/**
 * The sliding window, lanes, acknowledgement coalescing and bounded memory.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Frame from "@intersession/core/Frame"
import type * as ILM from "@intersession/core/ILM"
import { Eventually, InMemoryNetwork, TestPeer, VirtualClock } from "@intersession/testing"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as TestClock from "effect/TestClock"
import { A, awaitAcknowledged, awaitReceived, B, C, numbered, sendNumbered, text, texts } from "./helpers.js"

const frameTag = (frame: Uint8Array) => {
  const decoded = Frame.decode(frame, Number.MAX_SAFE_INTEGER)
  return Either.isRight(decoded) ? decoded.right._tag : "invalid"
}

/** Moves the clock until `done`, checking `invariant` on the stats of every engine after each step. */
const watchUntil = (
  what: string,
  done: Effect.Effect<boolean>,
  engines: ReadonlyArray<TestPeer.Running>,
  invariant: (stats: ILM.Stats) => void
) =>
  Eventually.eventually(
    what,
    Effect.gen(function*() {
      for (const engine of engines) invariant(yield* engine.ilm.stats)
      return yield* done
    }),
    { step: "5 millis" }
  )

/** The seq of a `Data` frame, else undefined. */
const dataSeq = (frame: Uint8Array) => {
  const decoded = Frame.decode(frame, Number.MAX_SAFE_INTEGER)
  return Either.isRight(decoded) && decoded.right._tag === "Data" ? decoded.right.seq : undefined
}

describe("flow", () => {
  it.scoped("one lost frame is resent after three repeated acknowledgements, long before the retransmission timeout", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      let dropped = 0
      // The first transmission of seq 5 is lost; later frames arrive past the gap.
      yield* hub.setFaults({ dropWhen: (frame) => dataSeq(frame) === 5 && dropped++ === 0 }, { from: A, to: B })
      const config = { window: 16, retransmitInitial: "1 minute", retransmitMin: "1 minute" } as const
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a, config)
      yield* TestPeer.start(hub, b, config)
      yield* sendNumbered(ra, B, "m", 1, 12)
      yield* awaitAcknowledged(a, "1 second")
      assert.strictEqual(dropped, 2)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), numbered("m", 1, 12))
      assert.isAbove((yield* ra.ilm.stats).outbound[0]!.retransmitted, 0)
    }))

  // Virtual time: a lossy link fires thousands of retransmission timers, which `TestClock.adjust` makes slow.
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) {
    it.live(`window 16 under drops, duplicates, reordering and delay keeps every message once, in order (seed ${seed})`, () =>
      VirtualClock.run(
        Effect.scoped(Effect.gen(function*() {
          const hub = yield* InMemoryNetwork.make({ seed })
          yield* hub.setFaults({ drop: 0.2, duplicate: 0.2, reorder: 0.3, delay: "2 millis" })
          const config = { window: 16, retransmitMin: "20 millis", retransmitInitial: "50 millis" } as const
          const a = yield* TestPeer.make(A)
          const b = yield* TestPeer.make(B)
          const ra = yield* TestPeer.start(hub, a, config)
          const rb = yield* TestPeer.start(hub, b, config)
          yield* Effect.all([sendNumbered(ra, B, "a", 1, 400), sendNumbered(rb, A, "b", 1, 400)], {
            concurrency: 2
          })
          yield* VirtualClock.waitUntil(
            Effect.map(Effect.all([a.store.pendingCount, b.store.pendingCount]), ([x, y]) => x === 0 && y === 0),
            "10 millis"
          )
          assert.deepStrictEqual(texts(yield* b.recorder.messages), numbered("a", 1, 400))
          assert.deepStrictEqual(texts(yield* a.recorder.messages), numbered("b", 1, 400))
          const stats = yield* hub.stats
          assert.isAbove(stats.dropped, 0)
          assert.isAbove(stats.duplicated, 0)
          const retransmitted = (yield* ra.ilm.stats).outbound.reduce((sum, out) => sum + out.retransmitted, 0)
          assert.isAbove(retransmitted, 0)
        })),
        { limit: "1 hour" }
      ))
  }

  it.scoped("window 1 is stop-and-wait: never more than one message in flight", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      yield* hub.setFaults({ delay: "3 millis" })
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a, { window: 1 })
      const rb = yield* TestPeer.start(hub, b, { window: 1 })
      yield* sendNumbered(ra, B, "w", 1, 30)
      let most = 0
      yield* watchUntil("30 delivered", Effect.map(b.recorder.messages, (m) => m.length === 30), [ra, rb], (stats) => {
        for (const out of stats.outbound) most = Math.max(most, out.inFlight)
        for (const inbound of stats.inbound) assert.isAtMost(inbound.buffered, 1)
      })
      assert.strictEqual(most, 1)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), numbered("w", 1, 30))
    }))

  it.scoped("a window of 8 keeps at most 8 in flight and 8 buffered, and uses all of it", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make({ seed: 11 })
      yield* hub.setFaults({ delay: "3 millis", reorder: 0.5, reorderWindow: "4 millis" })
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a, { window: 8 })
      const rb = yield* TestPeer.start(hub, b, { window: 8 })
      yield* sendNumbered(ra, B, "w", 1, 200)
      let most = 0
      yield* watchUntil(
        "200 delivered",
        Effect.map(b.recorder.messages, (m) => m.length === 200),
        [ra, rb],
        (stats) => {
          for (const out of stats.outbound) {
            assert.isAtMost(out.inFlight, 8)
            most = Math.max(most, out.inFlight)
          }
          for (const inbound of stats.inbound) assert.isAtMost(inbound.buffered, 8)
        }
      )
      assert.strictEqual(most, 8)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), numbered("w", 1, 200))
    }))

  it.scoped("a lane whose delivery fails does not hold up another lane", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a)
      yield* TestPeer.start(hub, b)
      yield* b.recorder.setFailing((message) => message.lane === "blocked")
      yield* sendNumbered(ra, B, "stuck", 1, 5, "blocked")
      yield* sendNumbered(ra, B, "free", 1, 50, "free")
      yield* Eventually.eventually(
        "the free lane is delivered",
        Effect.map(b.recorder.messages, (m) => m.length === 50)
      )
      yield* TestClock.adjust("1 minute")
      assert.deepStrictEqual(texts(yield* b.recorder.messages), numbered("free", 1, 50))
      const stats = yield* ra.ilm.stats
      assert.strictEqual(stats.outbound.find((out) => out.lane === "blocked")!.pending, 5)
      assert.strictEqual(stats.outbound.find((out) => out.lane === "free")!.pending, 0)
      yield* b.recorder.setFailing(false)
      yield* awaitAcknowledged(a)
      assert.deepStrictEqual(
        texts(yield* b.recorder.messages).filter((m) => m.startsWith("stuck")),
        numbered("stuck", 1, 5)
      )
    }))

  it.scoped("lanes keep their own order and seqs", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make({ seed: 5 })
      yield* hub.setFaults({ reorder: 0.5, duplicate: 0.2, drop: 0.1 })
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a, { retransmitMin: "20 millis" })
      yield* TestPeer.start(hub, b)
      const lanes = ["x", "y", "z"]
      yield* Effect.forEach(lanes, (lane) => sendNumbered(ra, B, lane, 1, 100, lane), { concurrency: "unbounded" })
      yield* awaitAcknowledged(a)
      const received = yield* b.recorder.messages
      for (const lane of lanes) {
        const inLane = received.filter((m) => m.lane === lane)
        assert.deepStrictEqual(texts(inLane), numbered(lane, 1, 100))
        assert.deepStrictEqual(inLane.map((m) => m.seq), Array.from({ length: 100 }, (_, i) => i + 1))
      }
    }))

  it.scoped("acknowledgements are cumulative and coalesced", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const counts = { Data: 0, Ack: 0 }
      yield* hub.setFaults({
        dropWhen: (frame) => {
          const tag = frameTag(frame)
          if (tag === "Data" || tag === "Ack") counts[tag]++
          return false
        }
      })
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a, { window: 256 })
      yield* TestPeer.start(hub, b, { window: 256, ackDelay: "5 millis" })
      yield* Effect.forEach(numbered("c", 1, 1000), (m) => ra.ilm.send(B, new TextEncoder().encode(m)), {
        concurrency: 100,
        discard: true
      })
      yield* awaitAcknowledged(a)
      assert.strictEqual(counts.Data, 1000)
      assert.isBelow(counts.Ack, 100)
      assert.strictEqual((yield* b.recorder.messages).length, 1000)
    }))

  it.scoped("a send to a full outbox waits, storing nothing, until the peer acknowledges, then resumes", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      // B receives everything, but its acknowledgements are lost until the test lets them through.
      let acksLost = true
      yield* hub.setFaults({ dropWhen: (frame) => acksLost && frameTag(frame) === "Ack" }, { from: B, to: A })
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a, { maxPendingPerPeer: 3, whenFull: "wait" })
      yield* TestPeer.start(hub, b)
      yield* sendNumbered(ra, B, "m", 1, 3)
      const single = yield* Effect.fork(ra.ilm.send(B, text("m 4")))
      const pair = yield* Effect.fork(ra.ilm.sendAll(B, [text("m 5"), text("m 6")]))
      yield* awaitReceived(b, 3)
      yield* TestClock.adjust("10 minutes")

      // Blocked: delivered but unacknowledged messages still fill the outbox, so nothing more is stored or sent.
      assert.isTrue(Option.isNone(yield* Fiber.poll(single)), "the send did not wait")
      assert.isTrue(Option.isNone(yield* Fiber.poll(pair)), "the sendAll did not wait")
      assert.strictEqual(yield* a.store.pendingCount, 3)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), numbered("m", 1, 3))
      // The limit is per peer: a send to another peer goes through at once.
      yield* ra.ilm.send(C, text("to C"))
      assert.strictEqual(yield* a.store.pendingCount, 4)

      // Room: once B's acknowledgements arrive, both calls resume, are stored, and arrive in order.
      acksLost = false
      yield* Eventually.eventually(
        "the waiting calls resumed",
        Effect.map(
          Effect.all([Fiber.poll(single), Fiber.poll(pair)]),
          ([one, two]) => Option.isSome(one) && Option.isSome(two)
        )
      )
      const singleSeq = (yield* Fiber.join(single)).seq
      const pairSeqs = (yield* Fiber.join(pair)).map((id) => id.seq)
      assert.sameMembers([singleSeq, ...pairSeqs], [4, 5, 6])
      assert.strictEqual(pairSeqs[1], pairSeqs[0]! + 1, "the sendAll's messages stay together")
      yield* awaitReceived(b, 6)
      yield* Eventually.eventually(
        "B's messages are acknowledged",
        Effect.map(ra.ilm.stats, (stats) => stats.outbound.find((out) => out.peer === B)?.pending === 0)
      )
      const received = texts(yield* b.recorder.messages)
      assert.deepStrictEqual(received.slice(0, 3), numbered("m", 1, 3))
      assert.sameMembers(received.slice(3), numbered("m", 4, 3))
      assert.deepStrictEqual((yield* b.recorder.messages).map((m) => m.seq), [1, 2, 3, 4, 5, 6])
    }))

  it.scoped(
    "100,000 messages for an absent peer cost memory bounded by the window, not the backlog",
    () =>
      Effect.gen(function*() {
        const hub = yield* InMemoryNetwork.make()
        const a = yield* TestPeer.make(A)
        const b = yield* TestPeer.make(B)
        const window = 64
        const ra = yield* TestPeer.start(hub, a, { window })
        const total = 100_000
        const payload = new Uint8Array(16)
        yield* Effect.forEach(Array.from({ length: total }), () => ra.ilm.send(B, payload), {
          concurrency: 1000,
          discard: true
        })
        const before = yield* ra.ilm.stats
        assert.strictEqual(before.outbound[0]!.pending, total)
        assert.strictEqual(before.outbound[0]!.inFlight, 0)
        assert.strictEqual((yield* a.store.usage).reads, 0)
        const rb = yield* TestPeer.start(hub, b, { window })
        yield* watchUntil(
          "the backlog drained",
          Effect.map(a.store.pendingCount, (n) => n === 0),
          [ra, rb],
          (stats) => {
            for (const out of stats.outbound) assert.isAtMost(out.inFlight, window)
            for (const inbound of stats.inbound) assert.isAtMost(inbound.buffered, window)
          }
        )
        const usage = yield* a.store.usage
        assert.isAtMost(usage.largestRead, window)
        const received = yield* b.recorder.messages
        assert.strictEqual(received.length, total)
        assert.isTrue(received.every((m, i) => m.seq === i + 1))
      }),
    120_000
  )
})
