/**
 * Forgetting a peer: what is pending toward it is purged and counted, the store keeps nothing of it but its dead
 * letters, and if it comes back both sides resynchronise: the forgotten peer sees no duplicate and loses nothing
 * sent after the forget, and its own pending messages arrive.
 */
import { assert, describe, it } from "@effect/vitest"
import * as IlmError from "@intersession/core/IlmError"
import { InMemoryNetwork, TestPeer } from "@intersession/testing"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { recordEvents, settle } from "./events.js"
import { A, awaitAcknowledged, awaitReceived, B, C, numbered, sendNumbered, text, texts } from "./helpers.js"

describe("forget", () => {
  it.scoped("forgetting a linked peer purges toward it, keeps nothing of it, and both sides resynchronise", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a)
      const rb = yield* TestPeer.start(hub, b)
      const aEvents = yield* recordEvents(ra.ilm)
      const bEvents = yield* recordEvents(rb.ilm)
      yield* sendNumbered(ra, B, "x", 1, 5, "x")
      yield* sendNumbered(rb, A, "b", 1, 3)
      yield* awaitReceived(b, 5)
      yield* awaitReceived(a, 3)
      yield* awaitAcknowledged(a)
      yield* awaitAcknowledged(b)
      const before = (yield* ra.ilm.stats).outbound.find((stream) => stream.peer === B)!
      yield* hub.partition(A, B)
      yield* sendNumbered(ra, B, "x", 6, 3, "x")
      yield* sendNumbered(rb, A, "b", 4, 2)

      assert.strictEqual(yield* ra.ilm.forget(B), 3)
      assert.strictEqual(yield* a.store.pendingCount, 0)
      assert.deepStrictEqual(yield* a.store.heldFor(B), { acknowledged: [], received: [] })
      const stats = yield* ra.ilm.stats
      assert.deepStrictEqual(stats.outbound.filter((stream) => stream.peer === B), [])
      assert.deepStrictEqual(stats.inbound.filter((stream) => stream.peer === B), [])
      yield* settle
      const purged = (yield* aEvents).filter((event) => event._tag === "MessagesPurged")
      assert.deepStrictEqual(purged.map((event) => [event.peer, event.lane, event.count]), [[B, "x", 3]])

      // A new stream toward B: seq 1 again, under a newer incarnation.
      const id = yield* ra.ilm.send(B, text("x new"), { lane: "x" })
      assert.strictEqual(id.seq, 1)
      assert.isAbove(id.incarnation, before.incarnation)
      yield* hub.heal(A, B)
      yield* awaitReceived(b, 6)
      yield* awaitReceived(a, 5)
      yield* awaitAcknowledged(a)
      yield* awaitAcknowledged(b)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), [...numbered("x", 1, 5), "x new"])
      assert.deepStrictEqual(texts(yield* a.recorder.messages), numbered("b", 1, 5))
      yield* settle
      const resyncs = (yield* bEvents).flatMap((event) =>
        event._tag === "Resynchronised" ? [[event.peer, event.reason]] : []
      )
      assert.deepInclude(resyncs, [A, "peer-new-incarnation"])
      assert.deepInclude(resyncs, [A, "peer-lost-state"])
    }))

  it.scoped("forgetting a peer while linked to it starts a new session: it resynchronises at once", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a)
      const rb = yield* TestPeer.start(hub, b)
      const bEvents = yield* recordEvents(rb.ilm)
      yield* sendNumbered(ra, B, "x", 1, 3)
      yield* sendNumbered(rb, A, "b", 1, 2)
      yield* awaitAcknowledged(a)
      yield* awaitAcknowledged(b)
      assert.strictEqual(yield* ra.ilm.forget(B), 0)
      yield* sendNumbered(ra, B, "x", 4, 2)
      yield* sendNumbered(rb, A, "b", 3, 2)
      yield* awaitAcknowledged(a)
      yield* awaitAcknowledged(b)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), numbered("x", 1, 5))
      assert.deepStrictEqual(texts(yield* a.recorder.messages), numbered("b", 1, 4))
      yield* settle
      // B takes A's new streams as new. A took B's stream at its floor: B's messages since then, and no others.
      const resyncs = (yield* bEvents).flatMap((event) => event._tag === "Resynchronised" ? [event.reason] : [])
      assert.include(resyncs, "peer-new-incarnation")
    }))

  it.scoped("forgetting a peer that never comes back frees its outbox and lets drain finish", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const ra = yield* TestPeer.start(hub, a, { maxPendingPerPeer: 3, whenFull: "fail" })
      yield* sendNumbered(ra, C, "c", 1, 3, "one")
      const full = yield* Effect.either(ra.ilm.send(C, text("no room")))
      assert.isTrue(Either.isLeft(full) && full.left instanceof IlmError.OutboxFullError)
      assert.strictEqual(yield* ra.ilm.forget(C), 3)
      yield* ra.ilm.drain("1 second")
      assert.strictEqual(yield* ra.ilm.forget(C), 0)
      assert.deepStrictEqual(yield* a.store.heldFor(C), { acknowledged: [], received: [] })
      // Forgetting a peer the store never heard of is a no-op.
      assert.strictEqual(yield* ra.ilm.forget(B), 0)
      // The store survives a restart without the forgotten peer, and a send to it starts a new stream.
      yield* ra.stop
      const again = yield* TestPeer.start(hub, a)
      assert.strictEqual((yield* again.ilm.send(C, text("fresh"))).seq, 1)
    }))

  it.scoped("a send racing a forget is either purged with the old streams or stored in the new ones", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a)
      yield* TestPeer.start(hub, b)
      yield* sendNumbered(ra, B, "x", 1, 2)
      yield* awaitAcknowledged(a)
      const incarnation = (yield* ra.ilm.stats).outbound[0]!.incarnation
      yield* hub.partition(A, B)
      const [purged, id] = yield* Effect.all([ra.ilm.forget(B), ra.ilm.send(B, text("racing"))], {
        concurrency: "unbounded"
      })
      yield* hub.heal(A, B)
      if (id.incarnation === incarnation) {
        // Stored before the forget: purged with the old stream.
        assert.strictEqual(purged, 1)
        yield* awaitAcknowledged(a)
        assert.deepStrictEqual(texts(yield* b.recorder.messages), ["x 1", "x 2"])
      } else {
        assert.strictEqual(purged, 0)
        assert.strictEqual(id.seq, 1)
        yield* awaitReceived(b, 3)
        assert.deepStrictEqual(texts(yield* b.recorder.messages), ["x 1", "x 2", "racing"])
      }
    }))

  it.scoped("a peer cannot forget itself, and a closed engine forgets nothing", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const ra = yield* TestPeer.start(hub, yield* TestPeer.make(A))
      const self = yield* Effect.either(ra.ilm.forget(A))
      assert.isTrue(Either.isLeft(self) && self.left instanceof IlmError.ForgetSelfError)
      yield* ra.stop
      const closed = yield* Effect.either(ra.ilm.forget(B))
      assert.isTrue(Either.isLeft(closed) && closed.left instanceof IlmError.EngineClosedError)
    }))
})
