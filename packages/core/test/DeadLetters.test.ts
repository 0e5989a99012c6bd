/**
 * Delivery policies and dead letters: a lane gives up on a message after its attempts or its schedule, moves it to
 * the receiver's dead letters with the stream's progress, reports it, and goes on; the application lists, replays
 * and purges them; the default still retries forever.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Backend from "@intersession/core/Backend"
import * as DeadLetters from "@intersession/core/DeadLetters"
import * as IlmConfig from "@intersession/core/IlmConfig"
import * as IlmError from "@intersession/core/IlmError"
import type { Message } from "@intersession/core/Message"
import { InMemoryBackend, InMemoryNetwork, TestPeer } from "@intersession/testing"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as TestClock from "effect/TestClock"
import { recordEvents, settle } from "./events.js"
import { A, awaitAcknowledged, awaitReceived, B, sendNumbered, texts } from "./helpers.js"

const isPoison = (message: Message) => new TextDecoder().decode(message.payload).endsWith("poison")

const start = Effect.gen(function*() {
  const hub = yield* InMemoryNetwork.make()
  const a = yield* TestPeer.make(A)
  const b = yield* TestPeer.make(B)
  const ra = yield* TestPeer.start(hub, a)
  return { hub, a, b, ra }
})

describe("dead letters", () => {
  it.scoped("a lane with 3 attempts moves a failing message to dead letters with its progress, and goes on", () =>
    Effect.gen(function*() {
      const { a, b, hub, ra } = yield* start
      const rb = yield* TestPeer.start(hub, b, { lanePolicies: { pay: { attempts: 3 } } })
      const events = yield* recordEvents(rb.ilm)
      yield* b.recorder.setFailing(isPoison)
      yield* ra.ilm.send(B, new TextEncoder().encode("pay 1"), { lane: "pay" })
      yield* ra.ilm.send(B, new TextEncoder().encode("pay poison"), { lane: "pay" })
      yield* ra.ilm.send(B, new TextEncoder().encode("pay 3"), { lane: "pay" })
      yield* awaitReceived(b, 2)
      yield* awaitAcknowledged(a)
      yield* settle
      assert.deepStrictEqual(texts(yield* b.recorder.messages), ["pay 1", "pay 3"])
      // 1 and 3 once each, the poison three times.
      assert.strictEqual(yield* b.recorder.attempts, 5)
      const all = yield* events
      const failed = all.filter((event) => event._tag === "DeliveryFailed")
      assert.deepStrictEqual(failed.map((event) => [event.seq, event.attempt, event.retryInMillis]), [[2, 1, 100], [
        2,
        2,
        200
      ]])
      const dead = all.filter((event) => event._tag === "DeadLettered")
      assert.deepStrictEqual(dead.map((event) => [event.peer, event.lane, event.seq, event.attempts]), [[
        A,
        "pay",
        2,
        3
      ]])
      const letters = yield* rb.ilm.deadLetters.list()
      assert.strictEqual(letters.length, 1)
      const letter = letters[0]!
      assert.deepStrictEqual([letter.peer, letter.lane, letter.seq, letter.attempts, letter.replayRequested], [
        A,
        "pay",
        2,
        3,
        false
      ])
      assert.strictEqual(new TextDecoder().decode(letter.payload), "pay poison")
      assert.strictEqual(letter.error, "Delivery failed: the recorder was told to fail")
      assert.strictEqual(letter.incarnation, yield* a.store.incarnation)
      const inbound = (yield* rb.ilm.stats).inbound.find((stream) => stream.lane === "pay")
      assert.deepStrictEqual([inbound?.delivered, inbound?.deadLettered], [3, 1])
    }))

  it.scoped("a permanent failure goes to dead letters at once, even under the default policy", () =>
    Effect.gen(function*() {
      const { a, b, hub, ra } = yield* start
      const rb = yield* TestPeer.start(hub, b)
      yield* b.recorder.setFailing((message) => isPoison(message) ? "permanent" : false)
      yield* sendNumbered(ra, B, "m", 1, 2)
      yield* ra.ilm.send(B, new TextEncoder().encode("poison"))
      yield* sendNumbered(ra, B, "m", 4, 2)
      yield* awaitReceived(b, 4)
      yield* awaitAcknowledged(a)
      assert.strictEqual(yield* b.recorder.attempts, 5)
      const letters = yield* rb.ilm.deadLetters.list()
      assert.deepStrictEqual(letters.map((letter) => [letter.seq, letter.attempts]), [[3, 1]])
      assert.strictEqual(letters[0]!.error, "Delivery failed for good: the recorder was told to fail")
    }))

  it.scoped("the default policy retries forever: a failing message holds its lane and nothing is dead-lettered", () =>
    Effect.gen(function*() {
      const { b, hub, ra } = yield* start
      const rb = yield* TestPeer.start(hub, b)
      yield* b.recorder.setFailing(isPoison)
      yield* ra.ilm.send(B, new TextEncoder().encode("poison"))
      yield* sendNumbered(ra, B, "m", 2, 1)
      yield* TestClock.adjust("5 minutes")
      // Waits of 100 ms doubling to 25.6 s take the first 51 s, then one retry every 30 s: about 17 attempts.
      assert.isAtLeast(yield* b.recorder.attempts, 15)
      assert.deepStrictEqual(yield* b.recorder.messages, [])
      assert.deepStrictEqual(yield* rb.ilm.deadLetters.list(), [])
      yield* b.recorder.setFailing(false)
      yield* awaitReceived(b, 2)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), ["poison", "m 2"])
    }))

  it.scoped("a back-off schedule sets the waits, and its end gives up", () =>
    Effect.gen(function*() {
      const { a, b, hub, ra } = yield* start
      const backoff = Schedule.spaced("7 seconds").pipe(Schedule.intersect(Schedule.recurs(2)))
      const rb = yield* TestPeer.start(hub, b, { deliveryPolicy: { backoff } })
      const events = yield* recordEvents(rb.ilm)
      yield* b.recorder.setFailing(isPoison)
      yield* ra.ilm.send(B, new TextEncoder().encode("poison"))
      yield* sendNumbered(ra, B, "m", 2, 1)
      yield* awaitReceived(b, 1)
      yield* awaitAcknowledged(a)
      yield* settle
      const all = yield* events
      assert.deepStrictEqual(
        all.filter((event) => event._tag === "DeliveryFailed").map((event) => event.retryInMillis),
        [7000, 7000]
      )
      assert.deepStrictEqual(
        all.filter((event) => event._tag === "DeadLettered").map((event) => event.attempts),
        [3]
      )
    }))

  it.scoped("replay hands dead letters to the application again and removes them; one that fails again stays", () =>
    Effect.gen(function*() {
      const { a, b, hub, ra } = yield* start
      const rb = yield* TestPeer.start(hub, b, { deliveryPolicy: { attempts: 1 } })
      yield* b.recorder.setFailing(isPoison)
      for (const word of ["one poison", "two", "three poison", "other poison"]) {
        yield* ra.ilm.send(B, new TextEncoder().encode(word), { lane: word.startsWith("other") ? "other" : "main" })
      }
      yield* awaitReceived(b, 1)
      yield* awaitAcknowledged(a)
      const letters = yield* rb.ilm.deadLetters.list()
      // Lanes are delivered apart: order holds within each one.
      const lanes = letters.map((letter) => `${letter.lane} ${letter.seq}`)
      assert.deepStrictEqual(lanes.filter((entry) => entry.startsWith("main")), ["main 1", "main 3"])
      assert.deepStrictEqual(lanes.filter((entry) => entry.startsWith("other")), ["other 1"])
      const main = letters.filter((letter) => letter.lane === "main")
      // Still failing: nothing is replayed, and the result says why.
      const again = yield* rb.ilm.deadLetters.replay({ lane: "main" })
      assert.strictEqual(again.replayed, 0)
      assert.deepStrictEqual(again.failed.map((failure) => failure.id), main.map((letter) => letter.id))
      assert.strictEqual(again.failed[0]!.error, "Delivery failed: the recorder was told to fail")
      yield* b.recorder.setFailing(false)
      const result = yield* rb.ilm.deadLetters.replay({ lane: "main" })
      assert.deepStrictEqual(result, { replayed: 2, failed: [] })
      assert.deepStrictEqual(texts(yield* b.recorder.messages), ["two", "one poison", "three poison"])
      const replayed = (yield* b.recorder.messages).slice(1)
      assert.deepStrictEqual(replayed.map((message) => [message.source, message.lane, message.seq]), [[A, "main", 1], [
        A,
        "main",
        3
      ]])
      assert.deepStrictEqual((yield* rb.ilm.deadLetters.list()).map((letter) => letter.lane), ["other"])
      // Replaying what is not there is a no-op.
      assert.deepStrictEqual(yield* rb.ilm.deadLetters.replay({ ids: [main[0]!.id] }), { replayed: 0, failed: [] })
    }))

  it.scoped("purge removes the dead letters a filter selects and counts them; a bad filter is a typed error", () =>
    Effect.gen(function*() {
      const { a, b, hub, ra } = yield* start
      const rb = yield* TestPeer.start(hub, b, { deliveryPolicy: { attempts: 1 } })
      yield* b.recorder.setFailing(true)
      yield* sendNumbered(ra, B, "x", 1, 3, "x")
      yield* sendNumbered(ra, B, "y", 1, 2, "y")
      yield* awaitAcknowledged(a)
      const letters = yield* rb.ilm.deadLetters.list()
      assert.strictEqual(letters.length, 5)
      // Lanes are delivered apart, so their letters interleave in any order: pick lane x's first two by lane.
      const onX = letters.filter((letter) => letter.lane === "x")
      assert.strictEqual(yield* rb.ilm.deadLetters.purge({ ids: [onX[0]!.id, onX[1]!.id] }), 2)
      assert.strictEqual(yield* rb.ilm.deadLetters.purge({ lane: "y", peer: A }), 2)
      assert.strictEqual(yield* rb.ilm.deadLetters.purge({ lane: "y" }), 0)
      assert.deepStrictEqual((yield* rb.ilm.deadLetters.list()).map((letter) => letter.seq), [3])
      assert.strictEqual((yield* rb.ilm.deadLetters.list({ limit: 1 })).length, 1)
      const attempts: ReadonlyArray<Effect.Effect<unknown, unknown>> = [
        rb.ilm.deadLetters.list({ lane: "" }),
        rb.ilm.deadLetters.purge({ ids: [0] }),
        rb.ilm.deadLetters.replay({ ids: [1.5] }),
        rb.ilm.deadLetters.list({ limit: 0 })
      ]
      for (const bad of attempts) {
        const result = yield* Effect.either(bad)
        assert.isTrue(Either.isLeft(result) && result.left instanceof DeadLetters.InvalidFilterError)
      }
      yield* rb.stop
      const closed = yield* Effect.either(rb.ilm.deadLetters.list())
      assert.isTrue(Either.isLeft(closed) && closed.left instanceof IlmError.EngineClosedError)
    }))

  it.scoped("dead letters marked for replay on a stopped store are delivered when the engine starts", () =>
    Effect.gen(function*() {
      const { a, b, hub, ra } = yield* start
      const rb = yield* TestPeer.start(hub, b, { deliveryPolicy: { attempts: 2 } })
      yield* b.recorder.setFailing(isPoison)
      yield* ra.ilm.send(B, new TextEncoder().encode("first poison"))
      yield* ra.ilm.send(B, new TextEncoder().encode("second poison"))
      yield* awaitAcknowledged(a)
      yield* rb.stop
      // What `intersession dead-letters replay` does: mark them on the stopped store.
      const marked = yield* Effect.scoped(Effect.gen(function*() {
        const backend = Context.get(yield* Layer.build(InMemoryBackend.layer(b.store)), Backend.Backend)
        const [first] = yield* DeadLetters.list(backend)
        return yield* DeadLetters.requestReplay(backend, { ids: [first!.id] })
      }))
      assert.strictEqual(marked, 1)
      yield* b.recorder.setFailing(false)
      const again = yield* TestPeer.start(hub, b)
      yield* awaitReceived(b, 1)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), ["first poison"])
      assert.deepStrictEqual(
        (yield* again.ilm.deadLetters.list()).map((letter) => [letter.seq, letter.replayRequested]),
        [[2, false]]
      )
    }))

  it("policies are checked with the other settings", () => {
    const result = IlmConfig.make({
      deliveryPolicy: { attempts: 0 },
      lanePolicies: { "": {}, ok: { attempts: 2.5 } }
    })
    assert.isTrue(Either.isLeft(result))
    if (Either.isLeft(result)) {
      assert.deepStrictEqual(result.left.problems, [
        "deliveryPolicy.attempts must be an integer >= 1, got 0",
        "lanePolicies: \"\" is not a lane name",
        "lanePolicies[\"ok\"].attempts must be an integer >= 1, got 2.5"
      ])
    }
  })
})
