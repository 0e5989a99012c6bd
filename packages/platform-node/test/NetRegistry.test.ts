import { assert, describe, it } from "@effect/vitest"
import * as PeerId from "@intersession/core/PeerId"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as HashSet from "effect/HashSet"
import * as Stream from "effect/Stream"
import type { ConnectionError } from "../src/internal/netLink.js"
import * as NetRegistry from "../src/internal/netRegistry.js"

const B = PeerId.make("peer-b")

const bytes = (value: number, length = 32) => new Uint8Array(length).fill(value)

/** A connection with peer B that records why it was closed. */
const connection = (options: { readonly id: number; readonly instance: number; readonly dialled: boolean }) => {
  const closed: Array<ConnectionError["reason"]> = []
  const value: NetRegistry.Connection = {
    peer: B,
    id: bytes(options.id),
    dialled: options.dialled,
    remoteInstance: bytes(options.instance, 16),
    remote: "test",
    write: () => Effect.void,
    close: (reason) => Effect.sync(() => closed.push(reason.reason))
  }
  return { value, closed }
}

const connected = (registry: NetRegistry.Registry) => Effect.map(registry.connected.get, (peers) => Array.from(peers))

describe("one connection per pair (the lower peer's decisions)", () => {
  it.effect("a connection the other side dialled while this side dials is refused; this side's own is kept", () =>
    Effect.gen(function*() {
      const registry = yield* NetRegistry.make
      assert.isTrue(yield* registry.startDialling(B))
      assert.isFalse(yield* registry.startDialling(B), "one dial at a time")
      const theirs = connection({ id: 1, instance: 1, dialled: false })
      assert.isFalse(yield* registry.decide(theirs.value, undefined))
      assert.deepStrictEqual(yield* connected(registry), [])
      const ours = connection({ id: 2, instance: 1, dialled: true })
      assert.isTrue(yield* registry.decide(ours.value, undefined))
      assert.strictEqual(registry.get(B), ours.value)
      assert.deepStrictEqual(yield* connected(registry), [B])
      assert.isFalse(yield* registry.startDialling(B), "no dial while connected")
    }))

  it.effect("a dial by the same instance that did not know the current connection is refused", () =>
    Effect.gen(function*() {
      const registry = yield* NetRegistry.make
      const current = connection({ id: 1, instance: 7, dialled: true })
      yield* registry.install(current.value)
      const late = connection({ id: 2, instance: 7, dialled: false })
      assert.isFalse(yield* registry.decide(late.value, undefined), "knows no connection")
      assert.isFalse(yield* registry.decide(late.value, bytes(9)), "knows an older connection")
      assert.strictEqual(registry.get(B), current.value)
      assert.deepStrictEqual(current.closed, [])
    }))

  it.effect("a dial by the same instance that lost the current connection replaces it, and the peer is greeted again", () =>
    Effect.gen(function*() {
      const registry = yield* NetRegistry.make
      const current = connection({ id: 1, instance: 7, dialled: true })
      yield* registry.install(current.value)
      const seen: Array<Array<PeerId.PeerId>> = []
      yield* Effect.fork(
        Stream.runForEach(registry.connected.changes, (peers) => Effect.sync(() => seen.push(Array.from(peers))))
      )
      const until = (count: number): Effect.Effect<void> =>
        Effect.suspend(() => (seen.length >= count ? Effect.void : Effect.zipRight(Effect.yieldNow(), until(count))))
      yield* until(1)
      const again = connection({ id: 2, instance: 7, dialled: false })
      assert.isTrue(yield* registry.decide(again.value, bytes(1)))
      assert.strictEqual(registry.get(B), again.value)
      assert.deepStrictEqual(current.closed, ["Replaced"])
      yield* until(3)
      assert.deepStrictEqual(seen, [[B], [], [B]], "B leaves connected for a moment")
      // The replaced connection ending later changes nothing.
      yield* registry.remove(current.value)
      assert.strictEqual(registry.get(B), again.value)
      assert.deepStrictEqual(Array.from(yield* registry.connected.get), [B])
      assert.deepStrictEqual(registry.lastConnection(B), bytes(2))
    }))

  it.effect("a dial by a new instance (the peer restarted) replaces the current connection", () =>
    Effect.gen(function*() {
      const registry = yield* NetRegistry.make
      const current = connection({ id: 1, instance: 7, dialled: false })
      yield* registry.install(current.value)
      const restarted = connection({ id: 2, instance: 8, dialled: false })
      assert.isTrue(yield* registry.decide(restarted.value, undefined))
      assert.strictEqual(registry.get(B), restarted.value)
      assert.deepStrictEqual(current.closed, ["Replaced"])
    }))

  it.effect("removing the connection in use disconnects the peer and wakes the dialler", () =>
    Effect.gen(function*() {
      const registry = yield* NetRegistry.make
      const current = connection({ id: 1, instance: 7, dialled: false })
      yield* registry.install(current.value)
      const waiting = yield* Effect.fork(registry.awaitDisconnected(B))
      yield* Effect.yieldNow()
      assert.isNull(waiting.unsafePoll())
      yield* registry.remove(current.value)
      yield* Fiber.join(waiting)
      assert.isTrue(HashSet.size(yield* registry.connected.get) === 0)
      assert.isUndefined(registry.get(B))
    }))
})
