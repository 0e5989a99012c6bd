import { assert, describe, it } from "@effect/vitest"
import { Backend } from "@intersession/core/Backend"
import * as PeerId from "@intersession/core/PeerId"
import { InMemoryBackend } from "@intersession/testing"
import * as BackendSuite from "@intersession/testing/BackendSuite"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"

const fixture = Layer.succeed(
  BackendSuite.BackendFixture,
  BackendSuite.BackendFixture.of({
    makeStore: Effect.map(InMemoryBackend.makeStore(), (store) => ({
      open: Effect.map(Layer.build(InMemoryBackend.layer(store)), Context.get(Backend))
    }))
  })
)

BackendSuite.backendSuite("InMemoryBackend", fixture)

const A = PeerId.make("A")
const B = PeerId.make("B")
const run = 7
const text = (value: string) => new TextEncoder().encode(value)
const decoded = (messages: ReadonlyArray<{ readonly payload: Uint8Array }>) =>
  messages.map((message) => new TextDecoder().decode(message.payload))

const open = (store: InMemoryBackend.Store) =>
  Effect.map(Layer.build(InMemoryBackend.layer(store)), Context.get(Backend))

describe("InMemoryBackend controls", () => {
  it.scoped("wipe forgets everything, and the next open starts a newer incarnation", () =>
    Effect.gen(function*() {
      const store = yield* InMemoryBackend.makeStore()
      assert.isUndefined(yield* store.incarnation)
      const before = yield* Effect.scoped(Effect.gen(function*() {
        const backend = yield* open(store)
        yield* backend.append([{ peer: A, lane: "x", payload: text("a1") }, {
          peer: A,
          lane: "x",
          payload: text("a2")
        }], run)
        yield* backend.setIncarnation(B, backend.incarnation)
        yield* backend.commitReceived([{
          peer: B,
          lane: "x",
          incarnation: backend.incarnation,
          delivered: 3,
          runs: []
        }])
        return backend.incarnation
      }))
      assert.strictEqual(yield* store.incarnation, before)
      assert.strictEqual(yield* store.pendingCount, 2)
      yield* store.wipe
      assert.isUndefined(yield* store.incarnation)
      assert.strictEqual(yield* store.pendingCount, 0)
      yield* TestClock.adjust("1 second")
      const backend = yield* open(store)
      assert.isAbove(backend.incarnation, before)
      assert.strictEqual(yield* store.incarnation, backend.incarnation)
      assert.deepStrictEqual(yield* backend.outbound, { streams: [], incarnations: [] })
      assert.deepStrictEqual(yield* backend.received, [])
      assert.deepStrictEqual(yield* backend.read(A, "x", 1, 10), [])
      assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text("new") }], run), [1])
    }))

  it.scoped("restore brings back a snapshot's content, even after later writes", () =>
    Effect.gen(function*() {
      const store = yield* InMemoryBackend.makeStore()
      const snapshot = yield* Effect.scoped(Effect.gen(function*() {
        const backend = yield* open(store)
        yield* backend.append([1, 2, 3].map((i) => ({ peer: A, lane: "x", payload: text(`m${i}`) })), run)
        yield* backend.commitReceived([{
          peer: B,
          lane: "x",
          incarnation: backend.incarnation,
          delivered: 1,
          runs: []
        }])
        const snapshot = yield* store.snapshot
        // Writes after the snapshot do not reach it.
        yield* backend.acknowledge([{ peer: A, lane: "x", upTo: 3 }])
        yield* backend.append([{ peer: A, lane: "x", payload: text("m4") }], run)
        yield* backend.commitReceived([{
          peer: B,
          lane: "x",
          incarnation: backend.incarnation,
          delivered: 9,
          runs: []
        }])
        return snapshot
      }))
      for (const round of [1, 2]) {
        yield* store.restore(snapshot)
        yield* Effect.scoped(Effect.gen(function*() {
          const backend = yield* open(store)
          const outbound = yield* backend.outbound
          assert.deepStrictEqual(
            outbound.streams,
            [{ peer: A, lane: "x", firstPending: 1, nextSeq: 4, runs: [{ run, from: 1 }] }],
            `round ${round}`
          )
          assert.deepStrictEqual(decoded(yield* backend.read(A, "x", 1, 10)), ["m1", "m2", "m3"])
          assert.deepStrictEqual((yield* backend.received).map((state) => state.delivered), [1])
          // Writing to the restored store leaves the snapshot as it was, for the next round.
          assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text("m4'") }], run), [4])
          yield* backend.acknowledge([{ peer: A, lane: "x", upTo: 2 }])
        }))
      }
    }))

  it.scoped("failNext makes the next operations fail with BackendError, then the store recovers", () =>
    Effect.gen(function*() {
      const store = yield* InMemoryBackend.makeStore()
      const backend = yield* open(store)
      yield* backend.append([{ peer: A, lane: "x", payload: text("kept") }], run)
      yield* store.failNext(2)
      const first = yield* Effect.flip(backend.append([{ peer: A, lane: "x", payload: text("refused") }], run))
      assert.strictEqual(first._tag, "BackendError")
      assert.strictEqual(first.operation, "append")
      assert.include(first.message, "append")
      const second = yield* Effect.flip(backend.read(A, "x", 1, 10))
      assert.strictEqual(second.operation, "read")
      assert.deepStrictEqual(decoded(yield* backend.read(A, "x", 1, 10)), ["kept"])
      assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text("next") }], run), [2])
    }))

  it.scoped("setFailing makes every operation fail until it is turned off", () =>
    Effect.gen(function*() {
      const store = yield* InMemoryBackend.makeStore()
      const backend = yield* open(store)
      yield* backend.append([{ peer: A, lane: "x", payload: text("kept") }], run)
      yield* store.setFailing(true)
      const operations = [
        backend.outbound,
        backend.append([{ peer: A, lane: "x", payload: text("refused") }], run),
        backend.read(A, "x", 1, 10),
        backend.acknowledge([{ peer: A, lane: "x", upTo: 1 }]),
        backend.setIncarnation(B, backend.incarnation),
        backend.received,
        backend.commitReceived([{ peer: B, lane: "x", incarnation: backend.incarnation, delivered: 1, runs: [] }])
      ]
      for (let round = 0; round < 2; round++) {
        for (const operation of operations) {
          const error = yield* Effect.flip(operation)
          assert.strictEqual(error._tag, "BackendError")
        }
      }
      yield* store.setFailing(false)
      assert.deepStrictEqual(decoded(yield* backend.read(A, "x", 1, 10)), ["kept"])
      assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text("next") }], run), [2])
      assert.deepStrictEqual(yield* backend.received, [])
    }))
})
