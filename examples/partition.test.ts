import { assert, it } from "@effect/vitest"
import * as PeerId from "@intersession/core/PeerId"
import { Eventually, InMemoryNetwork, TestPeer } from "@intersession/testing"
import * as Effect from "effect/Effect"
import * as TestClock from "effect/TestClock"

it.scoped("a message sent during a partition arrives once the link heals", () =>
  Effect.gen(function*() {
    const hub = yield* InMemoryNetwork.make({ seed: 1 })
    const a = yield* TestPeer.make(PeerId.make("A"))
    const b = yield* TestPeer.make(PeerId.make("B"))
    const runningA = yield* TestPeer.start(hub, a)
    yield* TestPeer.start(hub, b)

    yield* hub.partition(a.id, b.id)
    yield* runningA.ilm.send(b.id, new TextEncoder().encode("hello"))
    yield* TestClock.adjust("10 minutes") // virtual time: retransmissions and Hellos fire, nothing gets through
    assert.strictEqual((yield* b.recorder.messages).length, 0)

    yield* hub.heal(a.id, b.id)
    yield* Eventually.eventually("B received it", Effect.map(b.recorder.messages, (got) => got.length === 1))
    yield* Eventually.eventually("A's store is empty", Effect.map(a.store.pendingCount, (n) => n === 0))
  }))
