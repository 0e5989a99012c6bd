/**
 * Purge: the application drops what is pending toward a peer, or one lane of it, with a count and an event; the
 * receiver moves past the purged seqs without a resync or a duplicate, and the stream goes on.
 */
import { assert, describe, it } from "@effect/vitest"
import * as IlmError from "@intersession/core/IlmError"
import { InMemoryNetwork, TestPeer } from "@intersession/testing"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import { recordEvents, settle } from "./events.js"
import { A, awaitAcknowledged, awaitReceived, B, C, numbered, sendNumbered, text, texts } from "./helpers.js"

describe("purge", () => {
  it.scoped("purging one lane drops its pending messages only, reports them, and both sides go on", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a)
      const rb = yield* TestPeer.start(hub, b)
      const aEvents = yield* recordEvents(ra.ilm)
      const bEvents = yield* recordEvents(rb.ilm)
      yield* sendNumbered(ra, B, "x", 1, 2, "x")
      yield* awaitReceived(b, 2)
      yield* awaitAcknowledged(a)
      yield* hub.partition(A, B)
      yield* sendNumbered(ra, B, "x", 3, 5, "x")
      yield* sendNumbered(ra, B, "y", 1, 3, "y")

      assert.strictEqual(yield* ra.ilm.purge(B, { lane: "x" }), 5)
      yield* settle
      const purged = (yield* aEvents).filter((event) => event._tag === "MessagesPurged")
      assert.deepStrictEqual(purged.map((event) => [event.peer, event.lane, event.direction, event.count]), [[
        B,
        "x",
        "outbound",
        5
      ]])
      const stats = yield* ra.ilm.stats
      const x = stats.outbound.find((stream) => stream.lane === "x")
      assert.strictEqual(x?.pending, 0)
      assert.strictEqual(x?.purged, 5)
      assert.strictEqual(stats.outbound.find((stream) => stream.lane === "y")?.pending, 3)
      assert.strictEqual(yield* a.store.pendingCount, 3)

      yield* sendNumbered(ra, B, "x", 8, 1, "x")
      yield* hub.heal(A, B)
      yield* awaitReceived(b, 6)
      yield* awaitAcknowledged(a)
      const received = texts(yield* b.recorder.messages)
      assert.deepStrictEqual(received.filter((m) => m.startsWith("x")), ["x 1", "x 2", "x 8"])
      assert.deepStrictEqual(received.filter((m) => m.startsWith("y")), numbered("y", 1, 3))
      yield* settle
      const inbound = (yield* rb.ilm.stats).inbound.find((stream) => stream.lane === "x")
      assert.strictEqual(inbound?.delivered, 8)
      assert.strictEqual(inbound?.purged, 5)
      assert.isTrue(
        (yield* bEvents).some((event) =>
          event._tag === "MessagesPurged" && event.direction === "inbound" && event.count === 5
        )
      )
      assert.isFalse((yield* bEvents).some((event) => event._tag === "Resynchronised"))
    }))

  it.scoped("purging a peer drops every lane, frees its outbox, and lets drain finish", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const ra = yield* TestPeer.start(hub, a, { maxPendingPerPeer: 4, whenFull: "fail" })
      yield* sendNumbered(ra, C, "c", 1, 2, "one")
      yield* sendNumbered(ra, C, "c", 3, 2, "two")
      const full = yield* Effect.either(ra.ilm.send(C, text("no room")))
      assert.isTrue(Either.isLeft(full) && full.left instanceof IlmError.OutboxFullError)
      assert.strictEqual(yield* ra.ilm.purge(C), 4)
      // Nothing is pending any more: drain succeeds although C never came.
      yield* ra.ilm.drain("1 second")
      yield* ra.ilm.send(C, text("room again"))
      assert.strictEqual(yield* ra.ilm.purge(C, { lane: "nothing here" }), 0)
      assert.strictEqual(yield* ra.ilm.purge(B), 0)
    }))

  it.scoped("sendAndAwait fails with MessageDroppedError when its message is purged", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const ra = yield* TestPeer.start(hub, a)
      const waiting = yield* Effect.fork(Effect.either(ra.ilm.sendAndAwait(C, text("anyone?"))))
      yield* awaitPending(ra, 1)
      assert.strictEqual(yield* ra.ilm.purge(C), 1)
      const result = yield* Fiber.join(waiting)
      assert.isTrue(Either.isLeft(result) && result.left instanceof IlmError.MessageDroppedError)
      if (Either.isLeft(result) && result.left instanceof IlmError.MessageDroppedError) {
        assert.strictEqual(result.left.reason, "purged")
      }
    }))

  it.scoped("a lane that is not valid is refused with InvalidLaneError", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const ra = yield* TestPeer.start(hub, yield* TestPeer.make(A))
      const error = yield* Effect.flip(ra.ilm.purge(B, { lane: "" }))
      assert.instanceOf(error, IlmError.InvalidLaneError)
    }))

  it.scoped("a purge while messages are in flight: the receiver never delivers a purged message twice or out of order", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a)
      yield* TestPeer.start(hub, b)
      yield* hub.setFaults({ drop: 0.3, duplicate: 0.2, reorder: 0.3 })
      yield* sendNumbered(ra, B, "m", 1, 50)
      const purged = yield* ra.ilm.purge(B)
      yield* sendNumbered(ra, B, "m", 51, 20)
      yield* awaitAcknowledged(a)
      const seqs = (yield* b.recorder.messages).map((message) => message.seq)
      // Whatever got through before the purge, then everything after it: in order, once each.
      assert.deepStrictEqual(seqs, [...seqs].sort((x, y) => x - y))
      assert.strictEqual(new Set(seqs).size, seqs.length)
      assert.includeMembers(seqs, Array.from({ length: 20 }, (_, i) => 51 + i))
      // A message delivered just before the purge, whose acknowledgement had not come back, is counted as purged too.
      assert.isAtLeast(seqs.length, 70 - purged)
    }))
})

const awaitPending = (running: TestPeer.Running, count: number) =>
  Effect.repeat(Effect.map(running.ilm.stats, (stats) => stats.outbound.reduce((n, s) => n + s.pending, 0)), {
    until: (pending) => pending >= count
  })
