/**
 * The original crate's failure modes and their relatives: state lost or gone back in time on either side. Each
 * must re-synchronise by itself, say so in an event, never wedge, never drop a new message, and deliver what
 * survived.
 */
import { assert, describe, it } from "@effect/vitest"
import type { IlmEvent, ResyncReason } from "@intersession/core/IlmEvent"
import type { PeerId } from "@intersession/core/PeerId"
import { InMemoryNetwork, TestPeer } from "@intersession/testing"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { A, awaitAcknowledged, awaitReceived, B, numbered, sendNumbered, texts } from "./helpers.js"

/** Collects the `Resynchronised` events of a running engine from now on. */
const watchResyncs = (running: TestPeer.Running) =>
  Effect.gen(function*() {
    const seen: Array<{ peer: PeerId; reason: ResyncReason; lane: string | undefined }> = []
    yield* Effect.forkScoped(Stream.runForEach(running.ilm.events, (event: IlmEvent) =>
      Effect.sync(() => {
        if (event._tag === "Resynchronised") seen.push({ peer: event.peer, reason: event.reason, lane: event.lane })
      })))
    yield* Effect.yieldNow()
    return seen
  })

const reasons = (seen: ReadonlyArray<{ reason: ResyncReason }>) => [...new Set(seen.map((event) => event.reason))]

/** A clock `offsetMillis` behind the test clock, for stores made on a machine whose clock is wrong. */
const behind = (offsetMillis: number) =>
  Effect.map(Effect.clock, (clock): Clock.Clock => ({
    [Clock.ClockTypeId]: Clock.ClockTypeId,
    unsafeCurrentTimeMillis: () => clock.unsafeCurrentTimeMillis() - offsetMillis,
    unsafeCurrentTimeNanos: () => clock.unsafeCurrentTimeNanos() - BigInt(offsetMillis) * 1_000_000n,
    currentTimeMillis: Effect.map(clock.currentTimeMillis, (now) => now - offsetMillis),
    currentTimeNanos: Effect.map(clock.currentTimeNanos, (now) => now - BigInt(offsetMillis) * 1_000_000n),
    sleep: (duration) => clock.sleep(duration)
  }))

/** Two peers that have exchanged `count` acknowledged messages each way. */
const warmPair = (count: number): Effect.Effect<
  {
    hub: InMemoryNetwork.Hub
    a: TestPeer.Peer
    b: TestPeer.Peer
    ra: TestPeer.Running
    rb: TestPeer.Running
  },
  unknown,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const hub = yield* InMemoryNetwork.make()
    const a = yield* TestPeer.make(A)
    const b = yield* TestPeer.make(B)
    const ra = yield* TestPeer.start(hub, a)
    const rb = yield* TestPeer.start(hub, b)
    yield* sendNumbered(ra, B, "a", 1, count)
    yield* sendNumbered(rb, A, "b", 1, count)
    yield* awaitAcknowledged(a)
    yield* awaitAcknowledged(b)
    return { hub, a, b, ra, rb }
  })

describe("re-synchronisation", () => {
  it.scoped("a receiver whose store was wiped gets the sender's pending messages, and both report it", () =>
    Effect.gen(function*() {
      const { a, b, hub, ra, rb } = yield* warmPair(10)
      const seenA = yield* watchResyncs(ra)
      yield* rb.stop
      yield* b.store.wipe
      yield* b.recorder.clear
      yield* sendNumbered(ra, B, "a", 11, 10)
      const rb2 = yield* TestPeer.start(hub, b)
      const seenB = yield* watchResyncs(rb2)
      yield* awaitAcknowledged(a)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), numbered("a", 11, 10))
      // The wiped peer talks again under a new incarnation, and its partner adopts it.
      yield* sendNumbered(rb2, A, "b'", 1, 3)
      yield* awaitAcknowledged(b)
      assert.deepStrictEqual(texts(yield* a.recorder.messages), [...numbered("b", 1, 10), ...numbered("b'", 1, 3)])
      assert.includeMembers(reasons(seenA), ["peer-lost-state", "peer-new-incarnation"])
      assert.includeMembers(reasons(seenB), ["receiver-behind"])
    }))

  it.scoped("a sender whose store was wiped starts a new incarnation its partner adopts", () =>
    Effect.gen(function*() {
      const { a, b, hub, ra, rb } = yield* warmPair(10)
      const seenB = yield* watchResyncs(rb)
      yield* ra.stop
      yield* a.store.wipe
      yield* a.recorder.clear
      yield* sendNumbered(rb, A, "b", 11, 5)
      const ra2 = yield* TestPeer.start(hub, a)
      yield* sendNumbered(ra2, B, "a'", 1, 5)
      yield* awaitAcknowledged(a)
      yield* awaitAcknowledged(b)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), [...numbered("a", 1, 10), ...numbered("a'", 1, 5)])
      assert.deepStrictEqual(texts(yield* a.recorder.messages), numbered("b", 11, 5))
      assert.includeMembers(reasons(seenB), ["peer-new-incarnation", "peer-lost-state"])
    }))

  it.scoped("a wiped store whose new incarnation was made with a clock running behind moves past the old one", () =>
    Effect.gen(function*() {
      yield* TestClock.adjust("2 hours")
      const { a, b, hub, ra } = yield* warmPair(10)
      const oldIncarnation = yield* a.store.incarnation
      yield* ra.stop
      yield* a.store.wipe
      const clock = yield* behind(3_600_000)
      const ra2 = yield* Effect.withClock(TestPeer.start(hub, a), clock)
      const seenA = yield* watchResyncs(ra2)
      assert.isBelow((yield* a.store.incarnation)!, oldIncarnation!)
      yield* sendNumbered(ra2, B, "a'", 1, 5)
      yield* awaitAcknowledged(a)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), [...numbered("a", 1, 10), ...numbered("a'", 1, 5)])
      assert.includeMembers(reasons(seenA), ["peer-knows-newer-incarnation"])
      const stats = yield* ra2.ilm.stats
      assert.isAbove(stats.peers.find((peer) => peer.peer === B)!.incarnation, oldIncarnation!)
    }))

  it.scoped("a receiver restored from an older copy jumps to the sender's floor instead of waiting", () =>
    Effect.gen(function*() {
      const { a, b, hub, ra, rb } = yield* warmPair(10)
      const backup = yield* b.store.snapshot
      yield* sendNumbered(ra, B, "a", 11, 10)
      yield* awaitAcknowledged(a)
      yield* rb.stop
      yield* b.store.restore(backup)
      const rb2 = yield* TestPeer.start(hub, b)
      const seenB = yield* watchResyncs(rb2)
      yield* sendNumbered(ra, B, "a", 21, 10)
      yield* awaitAcknowledged(a)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), numbered("a", 1, 30))
      assert.includeMembers(reasons(seenB), ["receiver-behind"])
      // It keeps sending its own messages too: b 11.. were never sent, so they follow b 10.
      yield* sendNumbered(rb2, A, "b", 11, 3)
      yield* awaitAcknowledged(b)
      assert.deepStrictEqual(texts(yield* a.recorder.messages), numbered("b", 1, 13))
    }))

  it.scoped("a sender restored from an older copy never lets a new message pass for an old one", () =>
    Effect.gen(function*() {
      const { a, b, hub, ra } = yield* warmPair(10)
      const backup = yield* a.store.snapshot
      yield* sendNumbered(ra, B, "a", 11, 10)
      yield* awaitAcknowledged(a)
      yield* ra.stop
      yield* a.store.restore(backup)
      const ra2 = yield* TestPeer.start(hub, a)
      const seenA = yield* watchResyncs(ra2)
      // The restored store would hand out seqs 11… again, which B has already delivered.
      yield* sendNumbered(ra2, B, "new", 1, 10)
      yield* awaitAcknowledged(a)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), [...numbered("a", 1, 20), ...numbered("new", 1, 10)])
      assert.includeMembers(reasons(seenA), ["store-went-back"])
    }))

  it.scoped("a restored sender with messages queued before its partner is back loses none of them", () =>
    Effect.gen(function*() {
      const { a, b, hub, ra, rb } = yield* warmPair(5)
      // The backup holds five pending messages that B delivers afterwards.
      yield* rb.stop
      yield* sendNumbered(ra, B, "a", 6, 5)
      const backup = yield* a.store.snapshot
      yield* TestPeer.start(hub, b)
      yield* sendNumbered(ra, B, "a", 11, 5)
      yield* awaitAcknowledged(a)
      yield* ra.stop
      yield* a.store.restore(backup)
      yield* hub.disconnect(B)
      const ra2 = yield* TestPeer.start(hub, a)
      yield* sendNumbered(ra2, B, "new", 1, 5)
      yield* hub.connect(B)
      yield* awaitAcknowledged(a)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), [...numbered("a", 1, 15), ...numbered("new", 1, 5)])
    }))

  // Found by simulation seed 1359: the restored store's first run allocates seqs its partner has already delivered,
  // and crashes before reaching it. The next run must still see those seqs as new, not as this run's history.
  it.scoped("a restored sender that restarts before reaching its partner still delivers its new messages", () =>
    Effect.gen(function*() {
      const { a, b, hub, ra } = yield* warmPair(10)
      const backup = yield* a.store.snapshot
      yield* sendNumbered(ra, B, "a", 11, 10)
      yield* awaitAcknowledged(a)
      yield* ra.stop
      yield* a.store.restore(backup)
      yield* hub.disconnect(B)
      const ra2 = yield* TestPeer.start(hub, a)
      yield* sendNumbered(ra2, B, "new", 1, 5)
      yield* ra2.stop
      const ra3 = yield* TestPeer.start(hub, a)
      const seenA = yield* watchResyncs(ra3)
      yield* sendNumbered(ra3, B, "new", 6, 5)
      yield* hub.connect(B)
      yield* awaitAcknowledged(a)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), [...numbered("a", 1, 20), ...numbered("new", 1, 10)])
      assert.includeMembers(reasons(seenA), ["store-went-back"])
    }))

  it.scoped("both peers restarted from stale copies re-synchronise and keep talking", () =>
    Effect.gen(function*() {
      const { a, b, hub, ra, rb } = yield* warmPair(5)
      const backupA = yield* a.store.snapshot
      const backupB = yield* b.store.snapshot
      yield* sendNumbered(ra, B, "a", 6, 5)
      yield* sendNumbered(rb, A, "b", 6, 5)
      yield* awaitAcknowledged(a)
      yield* awaitAcknowledged(b)
      yield* ra.stop
      yield* rb.stop
      yield* a.store.restore(backupA)
      yield* b.store.restore(backupB)
      const ra2 = yield* TestPeer.start(hub, a)
      const rb2 = yield* TestPeer.start(hub, b)
      yield* sendNumbered(ra2, B, "a'", 1, 5)
      yield* sendNumbered(rb2, A, "b'", 1, 5)
      yield* awaitAcknowledged(a)
      yield* awaitAcknowledged(b)
      // Messages 6…10 were delivered before the restore; everything new arrives once, in order, after them.
      assert.deepStrictEqual(texts(yield* b.recorder.messages), [...numbered("a", 1, 10), ...numbered("a'", 1, 5)])
      assert.deepStrictEqual(texts(yield* a.recorder.messages), [...numbered("b", 1, 10), ...numbered("b'", 1, 5)])
    }))

  it.scoped("repeated wipes and restarts of both sides never wedge", () =>
    Effect.gen(function*() {
      const { a, b, hub, ra, rb } = yield* warmPair(3)
      let runningA = ra
      let runningB = rb
      for (let round = 0; round < 4; round++) {
        yield* runningA.stop
        yield* runningB.stop
        if (round % 2 === 0) yield* a.store.wipe
        else yield* b.store.wipe
        yield* a.recorder.clear
        yield* b.recorder.clear
        runningA = yield* TestPeer.start(hub, a)
        runningB = yield* TestPeer.start(hub, b)
        yield* sendNumbered(runningA, B, `r${round}`, 1, 3)
        yield* sendNumbered(runningB, A, `r${round}`, 1, 3)
        yield* awaitReceived(a, 3)
        yield* awaitReceived(b, 3)
        yield* awaitAcknowledged(a)
        yield* awaitAcknowledged(b)
        assert.deepStrictEqual(texts(yield* b.recorder.messages).slice(-3), numbered(`r${round}`, 1, 3))
        assert.deepStrictEqual(texts(yield* a.recorder.messages).slice(-3), numbered(`r${round}`, 1, 3))
      }
    }))
})
