/**
 * `sendAll`: several messages to one stream in one step, stored all or none, in order and together.
 */
import { assert, describe, it } from "@effect/vitest"
import { BackendError } from "@intersession/core/Backend"
import * as IlmError from "@intersession/core/IlmError"
import { InMemoryNetwork, TestPeer } from "@intersession/testing"
import * as Effect from "effect/Effect"
import { A, awaitAcknowledged, awaitReceived, B, numbered, text, texts } from "./helpers.js"

const batch = (label: string, count: number) => numbered(label, 1, count).map(text)

describe("sendAll", () => {
  it.scoped("stores the messages with consecutive seqs and delivers them in order", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a)
      yield* TestPeer.start(hub, b)
      const ids = yield* ra.ilm.sendAll(B, batch("x", 500))
      assert.deepStrictEqual(ids.map((id) => id.seq), Array.from({ length: 500 }, (_, i) => i + 1))
      assert.isTrue(ids.every((id) => id.destination === B && id.lane === "default"))
      yield* awaitReceived(b, 500)
      yield* awaitAcknowledged(a)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), numbered("x", 1, 500))
    }))

  it.scoped("concurrent calls never interleave inside one call", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a)
      yield* TestPeer.start(hub, b)
      const labels = Array.from({ length: 20 }, (_, i) => `call${i}`)
      yield* Effect.forEach(
        labels,
        (label, i) =>
          i % 2 === 0
            ? Effect.asVoid(ra.ilm.sendAll(B, batch(label, 50)))
            : Effect.asVoid(ra.ilm.send(B, text(`${label} 1`))),
        { concurrency: "unbounded", discard: true }
      )
      yield* awaitReceived(b, 10 * 50 + 10)
      const received = texts(yield* b.recorder.messages)
      for (const [i, label] of labels.entries()) {
        if (i % 2 === 1) continue
        const first = received.indexOf(`${label} 1`)
        assert.deepStrictEqual(received.slice(first, first + 50), numbered(label, 1, 50))
      }
    }))

  it.scoped("a buffer reused by the sender once its send resolved does not change what is delivered", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a)
      const buffer = text("first")
      yield* ra.ilm.sendAll(B, [buffer])
      buffer.set(text("XXXXX"))
      yield* ra.ilm.send(B, buffer)
      yield* TestPeer.start(hub, b)
      yield* awaitReceived(b, 2)
      assert.deepStrictEqual(texts(yield* b.recorder.messages), ["first", "XXXXX"])
    }))

  it.scoped("an empty call stores nothing", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const ra = yield* TestPeer.start(hub, a)
      assert.deepStrictEqual(yield* ra.ilm.sendAll(B, []), [])
      assert.strictEqual(yield* a.store.pendingCount, 0)
    }))

  it.scoped("one payload over the limit refuses the whole call", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const ra = yield* TestPeer.start(hub, a, { maxPayloadBytes: 16 })
      const error = yield* Effect.flip(ra.ilm.sendAll(B, [new Uint8Array(3), new Uint8Array(17)]))
      assert.instanceOf(error, IlmError.PayloadTooLargeError)
      assert.strictEqual(error.size, 17)
      assert.strictEqual(yield* a.store.pendingCount, 0)
    }))

  it.scoped("a failing store refuses the whole call, and the outbox keeps no count of it", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const ra = yield* TestPeer.start(hub, a, { maxPendingPerPeer: 10, whenFull: "fail" })
      yield* a.store.failNext(1)
      const error = yield* Effect.flip(ra.ilm.sendAll(B, batch("lost", 10)))
      assert.instanceOf(error, BackendError)
      assert.strictEqual(yield* a.store.pendingCount, 0)
      yield* ra.ilm.sendAll(B, batch("kept", 10))
      assert.strictEqual(yield* a.store.pendingCount, 10)
    }))

  it.scoped("a call that does not fit the outbox fails with OutboxFullError, even when sends wait for room", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const failing = yield* TestPeer.start(hub, yield* TestPeer.make(A), { maxPendingPerPeer: 10, whenFull: "fail" })
      yield* failing.ilm.sendAll(B, batch("a", 6))
      const full = yield* Effect.flip(failing.ilm.sendAll(B, batch("b", 5)))
      assert.instanceOf(full, IlmError.OutboxFullError)
      yield* failing.ilm.sendAll(B, batch("c", 4))

      const waiting = yield* TestPeer.start(hub, yield* TestPeer.make(B), { maxPendingPerPeer: 10 })
      const never = yield* Effect.flip(waiting.ilm.sendAll(A, batch("d", 11)))
      assert.instanceOf(never, IlmError.OutboxFullError)
    }))
})
