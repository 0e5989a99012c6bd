import { assert, describe, it } from "@effect/vitest"
import { type Inbound, Network } from "@intersession/core/Network"
import * as PeerId from "@intersession/core/PeerId"
import { InMemoryNetwork } from "@intersession/testing"
import * as NetworkSuite from "@intersession/testing/NetworkSuite"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"

const fixture = Layer.scoped(
  NetworkSuite.NetworkFixture,
  Effect.map(InMemoryNetwork.make(), (hub) =>
    NetworkSuite.NetworkFixture.of({
      make: (peer) => Effect.map(Layer.build(hub.layer(peer)), Context.get(Network))
    }))
)

NetworkSuite.networkSuite("InMemoryNetwork", fixture)

const A = PeerId.make("A")
const B = PeerId.make("B")
const C = PeerId.make("C")

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const text = (value: string) => encoder.encode(value)

interface Node {
  readonly network: Network["Type"]
  readonly mailbox: Queue.Queue<Inbound>
}

/** Brings `peer` online on `hub` and collects what it receives. */
const join = (hub: InMemoryNetwork.Hub, peer: PeerId.PeerId): Effect.Effect<Node, never, Scope.Scope> =>
  Effect.gen(function*() {
    const network = Context.get(yield* Layer.build(hub.layer(peer)), Network)
    const mailbox = yield* Queue.unbounded<Inbound>()
    yield* Effect.forkScoped(Stream.runForEach(network.inbound, (inbound) => Queue.offer(mailbox, inbound)))
    return { network, mailbox }
  })

const connected = (node: Node) => Effect.map(node.network.connected.get, (set) => Array.from(set).sort())

const receive = (node: Node, count: number) =>
  Effect.map(
    Queue.takeN(node.mailbox, count),
    (frames) => Chunk.toReadonlyArray(frames).map((inbound) => `${inbound.from}:${decoder.decode(inbound.frame)}`)
  )

/**
 * Receives everything up to a marker sent over a fault-free link after the frames under test. Frames are delivered
 * in the sender's fiber when nothing delays them, so everything sent before the marker has arrived by then.
 */
const receiveUntilMarker = (hub: InMemoryNetwork.Hub, from: Node, to: Node) =>
  Effect.gen(function*() {
    yield* hub.setFaults({})
    yield* from.network.send(to.network.localPeer, [text("marker")])
    const received: Array<string> = []
    while (true) {
      const inbound = yield* Queue.take(to.mailbox)
      const frame = decoder.decode(inbound.frame)
      if (frame === "marker") return received
      received.push(frame)
    }
  })

const numbered = (count: number) => Array.from({ length: count }, (_, i) => text(`${i + 1}`))

describe("InMemoryNetwork hub", () => {
  it.scoped("partition cuts the link between two peers and heal restores it", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* join(hub, A)
      const b = yield* join(hub, B)
      const c = yield* join(hub, C)
      yield* hub.partition(A, B)
      assert.deepStrictEqual(yield* connected(a), [C])
      assert.deepStrictEqual(yield* connected(b), [C])
      assert.deepStrictEqual(yield* connected(c), [A, B])
      const error = yield* Effect.flip(a.network.send(B, [text("cut")]))
      assert.strictEqual(error._tag, "NetworkError")
      assert.strictEqual(error.reason, "Unreachable")
      assert.strictEqual(error.peer, B)
      yield* a.network.send(C, [text("around")])
      assert.deepStrictEqual(yield* receive(c, 1), ["A:around"])
      yield* hub.heal(B, A)
      assert.deepStrictEqual(yield* connected(a), [B, C])
      assert.deepStrictEqual(yield* connected(b), [A, C])
      yield* a.network.send(B, [text("healed")])
      assert.deepStrictEqual(yield* receive(b, 1), ["A:healed"])
    }))

  it.scoped("disconnect cuts every link of a peer and connect restores them", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* join(hub, A)
      const b = yield* join(hub, B)
      const c = yield* join(hub, C)
      yield* hub.disconnect(A)
      assert.deepStrictEqual(yield* connected(a), [])
      assert.deepStrictEqual(yield* connected(b), [C])
      assert.deepStrictEqual(yield* connected(c), [B])
      assert.strictEqual((yield* Effect.flip(a.network.send(B, [text("out")]))).reason, "Unreachable")
      assert.strictEqual((yield* Effect.flip(b.network.send(A, [text("in")]))).reason, "Unreachable")
      yield* hub.connect(A)
      assert.deepStrictEqual(yield* connected(a), [B, C])
      assert.deepStrictEqual(yield* connected(b), [A, C])
      yield* b.network.send(A, [text("back")])
      assert.deepStrictEqual(yield* receive(a, 1), ["B:back"])
    }))

  it.scoped("drop 1 drops every frame", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make({ seed: 1 })
      const a = yield* join(hub, A)
      const b = yield* join(hub, B)
      yield* hub.setFaults({ drop: 1 })
      yield* a.network.send(B, numbered(20))
      assert.deepStrictEqual(yield* receiveUntilMarker(hub, a, b), [])
      const stats = yield* hub.stats
      assert.strictEqual(stats.dropped, 20)
      assert.strictEqual(stats.delivered, 1)
    }))

  it.scoped("duplicate 1 delivers every frame twice", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make({ seed: 1 })
      const a = yield* join(hub, A)
      const b = yield* join(hub, B)
      yield* hub.setFaults({ duplicate: 1 })
      yield* a.network.send(B, numbered(5))
      assert.deepStrictEqual(yield* receiveUntilMarker(hub, a, b), ["1", "1", "2", "2", "3", "3", "4", "4", "5", "5"])
      assert.strictEqual((yield* hub.stats).duplicated, 5)
    }))

  it.scoped("faults apply to the link they are set on", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* join(hub, A)
      const b = yield* join(hub, B)
      yield* hub.setFaults({ drop: 1 }, { from: A, to: B })
      yield* a.network.send(B, [text("lost")])
      yield* b.network.send(A, [text("kept")])
      assert.deepStrictEqual(yield* receive(a, 1), ["B:kept"])
      assert.deepStrictEqual(yield* receiveUntilMarker(hub, a, b), [])
    }))

  it.scoped("the same seed gives the same fate to every frame", () =>
    Effect.gen(function*() {
      const fates = (seed: number) =>
        Effect.scoped(Effect.gen(function*() {
          const hub = yield* InMemoryNetwork.make({ seed })
          const a = yield* join(hub, A)
          const b = yield* join(hub, B)
          yield* hub.setFaults({ drop: 0.4, duplicate: 0.3 })
          yield* a.network.send(B, numbered(60))
          return (yield* receiveUntilMarker(hub, a, b)).join(" ")
        }))
      const first = yield* fates(7)
      const second = yield* fates(7)
      const other = yield* fates(8)
      assert.strictEqual(second, first)
      assert.notStrictEqual(other, first, "another seed gives other fates")
      const received = first.split(" ")
      assert.isBelow(new Set(received).size, 60, "some frames were dropped")
      assert.isAbove(received.length, new Set(received).size, "some frames were duplicated")
    }))

  it.scoped("delay holds each frame until the clock passes it", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* join(hub, A)
      const b = yield* join(hub, B)
      yield* hub.setFaults({ delay: "1 second" }, { from: A, to: B })
      yield* a.network.send(B, [text("late 1")])
      yield* TestClock.adjust("500 millis")
      yield* a.network.send(B, [text("late 2")])
      yield* TestClock.adjust("499 millis")
      assert.strictEqual((yield* hub.stats).delivered, 0)
      assert.strictEqual(yield* Queue.size(b.mailbox), 0)
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* receive(b, 1), ["A:late 1"])
      assert.strictEqual((yield* hub.stats).delivered, 1)
      yield* TestClock.adjust("499 millis")
      assert.strictEqual((yield* hub.stats).delivered, 1)
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* receive(b, 1), ["A:late 2"])
      // The delay was set on A → B only.
      yield* b.network.send(A, [text("prompt")])
      assert.deepStrictEqual(yield* receive(a, 1), ["B:prompt"])
    }))

  // Timers due at the same instant need not fire in the order they were set: a delay must still keep frames in order.
  it.scoped("a fixed delay alone keeps frames sent at the same instant in order", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* join(hub, A)
      const b = yield* join(hub, B)
      yield* hub.setFaults({ delay: "1 second" })
      yield* a.network.send(B, numbered(3))
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(yield* receive(b, 3), ["A:1", "A:2", "A:3"])
    }))

  it.scoped("a delayed frame is lost when its link is cut before it arrives", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* join(hub, A)
      const b = yield* join(hub, B)
      yield* hub.setFaults({ delay: "1 second" })
      yield* a.network.send(B, [text("in flight")])
      yield* hub.partition(A, B)
      yield* TestClock.adjust("2 seconds")
      yield* hub.heal(A, B)
      assert.deepStrictEqual(yield* receiveUntilMarker(hub, a, b), [])
      assert.strictEqual((yield* hub.stats).dropped, 1)
    }))

  it.scoped("inject delivers raw bytes as if from any peer, and to an offline peer does nothing", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const b = yield* join(hub, B)
      yield* hub.inject(PeerId.make("ghost"), B, new Uint8Array([0xff, 0x00]))
      const [inbound] = Chunk.toReadonlyArray(yield* Queue.takeN(b.mailbox, 1))
      assert.strictEqual(inbound!.from, "ghost")
      assert.deepStrictEqual(Array.from(inbound!.frame), [0xff, 0x00])
      yield* hub.inject(A, PeerId.make("offline"), text("nobody"))
      yield* hub.inject(A, B, text("after"))
      assert.deepStrictEqual(yield* receive(b, 1), ["A:after"])
      assert.strictEqual((yield* hub.stats).sent, 0, "injected frames do not count as sent")
    }))
})
