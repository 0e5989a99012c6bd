import { assert, describe, it } from "@effect/vitest"
import * as ILM from "@intersession/core/ILM"
import * as IlmError from "@intersession/core/IlmError"
import * as PeerId from "@intersession/core/PeerId"
import { Eventually, InMemoryNetwork, TestPeer } from "@intersession/testing"
import * as Effect from "effect/Effect"

const A = PeerId.make("A")
const B = PeerId.make("B")
const bytes = (...values: Array<number>) => new Uint8Array(values)

describe("ILM", () => {
  it.scoped("two peers exchange messages with the right source, destination and content", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a)
      const rb = yield* TestPeer.start(hub, b)
      yield* ra.ilm.send(B, bytes(1, 2, 3))
      yield* rb.ilm.send(A, bytes(4, 5, 6))
      yield* Eventually.eventually(
        "both received",
        Effect.map(
          Effect.zip(a.recorder.messages, b.recorder.messages),
          ([x, y]) => x.length === 1 && y.length === 1
        )
      )
      const [got1] = yield* a.recorder.messages
      const [got2] = yield* b.recorder.messages
      assert.strictEqual(got1!.source, B)
      assert.strictEqual(got1!.destination, A)
      assert.deepStrictEqual(Array.from(got1!.payload), [4, 5, 6])
      assert.strictEqual(got2!.source, A)
      assert.strictEqual(got2!.destination, B)
      assert.deepStrictEqual(Array.from(got2!.payload), [1, 2, 3])
      yield* ra.ilm.drain("10 seconds")
      assert.strictEqual(yield* a.store.pendingCount, 0)
    }))

  it.scoped("sending to oneself is refused with a typed error", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const ra = yield* TestPeer.start(hub, a)
      const error = yield* Effect.flip(ra.ilm.send(A, bytes(1)))
      assert.instanceOf(error, IlmError.SendToSelfError)
    }))

  it.scoped("100 messages arrive in order", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a)
      yield* TestPeer.start(hub, b)
      for (let i = 0; i < 100; i++) yield* ra.ilm.send(B, bytes(i))
      yield* Eventually.eventually("100 received", Effect.map(b.recorder.messages, (m) => m.length === 100))
      const received = yield* b.recorder.messages
      assert.deepStrictEqual(received.map((m) => m.payload[0]), Array.from({ length: 100 }, (_, i) => i))
      assert.deepStrictEqual(received.map((m) => m.seq), Array.from({ length: 100 }, (_, i) => i + 1))
      void ILM
    }))
})
