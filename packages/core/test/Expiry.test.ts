/**
 * Message expiry: a message past its time to live is never handed to the application, on either side; the sender's
 * store removes it and reports it; the stream goes on without the gap being taken for a loss.
 */
import { assert, describe, it } from "@effect/vitest"
import type { ILM } from "@intersession/core/ILM"
import * as IlmError from "@intersession/core/IlmError"
import type { IlmEvent } from "@intersession/core/IlmEvent"
import { Eventually, InMemoryNetwork, TestPeer } from "@intersession/testing"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import { recordEvents, settle } from "./events.js"
import { A, awaitAcknowledged, awaitReceived, B, text, texts } from "./helpers.js"

const counted = (events: ReadonlyArray<IlmEvent>, tag: "MessagesExpired" | "MessagesPurged", direction: string) =>
  events.reduce(
    (sum, event) => event._tag === tag && event.direction === direction ? sum + event.count : sum,
    0
  )

const outboundStats = (ilm: ILM["Type"], lane = "default") =>
  Effect.map(ilm.stats, (stats) => stats.outbound.find((stream) => stream.lane === lane))

const inboundStats = (ilm: ILM["Type"], lane = "default") =>
  Effect.map(ilm.stats, (stats) => stats.inbound.find((stream) => stream.lane === lane))

describe("expiry", () => {
  it.scoped("an expired message is removed, reported and skipped; the stream goes on without a resync", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a)
      const rb = yield* TestPeer.start(hub, b)
      const aEvents = yield* recordEvents(ra.ilm)
      const bEvents = yield* recordEvents(rb.ilm)
      yield* hub.partition(A, B)
      yield* ra.ilm.send(B, text("keep 1"))
      yield* ra.ilm.send(B, text("short 1"), { timeToLive: "1 second" })
      yield* ra.ilm.send(B, text("keep 2"))
      yield* ra.ilm.sendAll(B, [text("short 2"), text("short 3")], { timeToLive: "2 seconds" })
      yield* ra.ilm.send(B, text("keep 3"), { timeToLive: "1 hour" })
      assert.strictEqual((yield* outboundStats(ra.ilm))?.pending, 6)

      yield* TestClock.adjust("5 seconds")
      yield* settle
      assert.strictEqual(counted(yield* aEvents, "MessagesExpired", "outbound"), 3)
      const expired = yield* outboundStats(ra.ilm)
      assert.strictEqual(expired?.expired, 3)
      assert.strictEqual(expired?.pending, 3)
      assert.strictEqual(yield* a.store.pendingCount, 3, "the store no longer holds the expired messages")

      yield* hub.heal(A, B)
      yield* awaitReceived(b, 3)
      yield* awaitAcknowledged(a)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), ["keep 1", "keep 2", "keep 3"])
      // B delivered seqs 1, 3 and 6 and skipped 2, 4 and 5: its stream ends at 6, and it never resynchronised.
      const inbound = yield* inboundStats(rb.ilm)
      assert.strictEqual(inbound?.delivered, 6)
      assert.strictEqual(inbound?.expired, 3)
      yield* settle
      assert.strictEqual(counted(yield* bEvents, "MessagesExpired", "inbound"), 3)
      assert.isFalse((yield* bEvents).some((event) => event._tag === "Resynchronised"))
      assert.strictEqual((yield* outboundStats(ra.ilm))?.pending, 0)
      yield* ra.ilm.drain("1 second")

      // The stream goes on.
      yield* ra.ilm.send(B, text("after"))
      yield* awaitReceived(b, 4)
      assert.deepStrictEqual((yield* b.recorder.messages).map((message) => message.seq), [1, 3, 6, 7])
    }))

  it.scoped("a receiver never delivers a message whose time ran out while it waited there", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      // A does not remove expired messages in this test: only B's clock decides.
      const ra = yield* TestPeer.start(hub, a, { expiryCheckInterval: "1 hour" })
      const rb = yield* TestPeer.start(hub, b)
      const bEvents = yield* recordEvents(rb.ilm)
      // B's application fails every delivery, so the message waits at B, past its time.
      yield* b.recorder.setFailing(true)
      yield* ra.ilm.send(B, text("urgent"), { timeToLive: "3 seconds" })
      yield* Eventually.eventually("B tried to deliver", Effect.map(b.recorder.attempts, (n) => n >= 2))
      yield* TestClock.adjust("4 seconds")
      yield* b.recorder.setFailing(false)
      yield* awaitAcknowledged(a)
      yield* ra.ilm.send(B, text("next"))
      yield* awaitReceived(b, 1)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), ["next"])
      yield* settle
      assert.strictEqual(counted(yield* bEvents, "MessagesExpired", "inbound"), 1)
      assert.strictEqual((yield* inboundStats(rb.ilm))?.expired, 1)
      // A's store never removed it: B skipped it and acknowledged it.
      assert.strictEqual((yield* outboundStats(ra.ilm))?.expired, 0)
      assert.strictEqual(yield* a.store.pendingCount, 0)
    }))

  it.scoped("sendAndAwait fails with MessageDroppedError once its message expired", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const ra = yield* TestPeer.start(hub, a)
      const waiting = yield* Effect.fork(
        Effect.either(ra.ilm.sendAndAwait(B, text("hello?"), { timeToLive: "2 seconds" }))
      )
      yield* TestClock.adjust("3 seconds")
      const result = yield* Fiber.join(waiting)
      assert.isTrue(Either.isLeft(result))
      if (Either.isRight(result)) return
      assert.instanceOf(result.left, IlmError.MessageDroppedError)
      if (!(result.left instanceof IlmError.MessageDroppedError)) return
      assert.strictEqual(result.left.reason, "expired")
      assert.strictEqual(result.left.id.seq, 1)
      assert.include(result.left.message, "expired")
    }))

  it.scoped("a time to live that is not positive and finite is refused with a typed error, and nothing is stored", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const ra = yield* TestPeer.start(hub, a)
      // As a caller without types might pass them.
      const inputs: ReadonlyArray<unknown> = [0, -5, Number.NaN, Infinity, "forever", "-1 second", null]
      for (const input of inputs) {
        const timeToLive = input as Duration.DurationInput
        const error = yield* Effect.flip(ra.ilm.send(B, text("x"), { timeToLive }))
        assert.instanceOf(error, IlmError.InvalidTimeToLiveError, String(timeToLive))
        assert.include(error.message, "positive, finite duration")
      }
      assert.strictEqual(yield* a.store.pendingCount, 0)
    }))

  it.scoped("messages that expire while the sender is stopped are removed after its restart and skipped", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const first = yield* TestPeer.start(hub, a)
      yield* first.ilm.send(B, text("one"))
      yield* first.ilm.sendAll(B, [text("two"), text("three")], { timeToLive: "1 minute" })
      yield* first.ilm.send(B, text("four"))
      yield* first.stop
      yield* TestClock.adjust("2 minutes")
      const ra = yield* TestPeer.start(hub, a)
      const aEvents = yield* recordEvents(ra.ilm)
      yield* Eventually.eventually(
        "A removed the expired messages",
        Effect.map(a.store.pendingCount, (count) => count === 2)
      )
      yield* settle
      assert.strictEqual(counted(yield* aEvents, "MessagesExpired", "outbound"), 2)
      const rb = yield* TestPeer.start(hub, b)
      const bEvents = yield* recordEvents(rb.ilm)
      yield* awaitReceived(b, 2)
      yield* awaitAcknowledged(a)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), ["one", "four"])
      yield* settle
      assert.isFalse((yield* bEvents).some((event) => event._tag === "Resynchronised"))
    }))

  it.scoped("expired messages at the head of a stream are skipped after the sender restarts, not taken for a loss", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a)
      const rb = yield* TestPeer.start(hub, b)
      const bEvents = yield* recordEvents(rb.ilm)
      yield* ra.ilm.send(B, text("first"))
      yield* awaitReceived(b, 1)
      yield* awaitAcknowledged(a)
      yield* hub.partition(A, B)
      yield* ra.ilm.sendAll(B, [text("stale 1"), text("stale 2")], { timeToLive: "1 second" })
      yield* TestClock.adjust("3 seconds")
      yield* ra.stop
      // Restarted, A's store holds no message of the stream: only the dropped seqs say where B should be.
      const again = yield* TestPeer.start(hub, a)
      yield* again.ilm.send(B, text("fresh"))
      yield* hub.heal(A, B)
      yield* awaitReceived(b, 2)
      yield* awaitAcknowledged(a)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), ["first", "fresh"])
      assert.deepStrictEqual((yield* b.recorder.messages).map((message) => message.seq), [1, 4])
      assert.isFalse((yield* bEvents).some((event) => event._tag === "Resynchronised"))
    }))
})
