/**
 * Never half-alive: when any fiber of the engine ends, fails, dies or is interrupted, the engine closes as a whole,
 * visibly — `closed` fails with the reason, every call fails with `EngineClosedError`, and `events` and
 * `peers.changes` end with that error — and an ordinary close ends them quietly.
 */
import { assert, describe, it } from "@effect/vitest"
import { Backend } from "@intersession/core/Backend"
import { Delivery } from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as IlmError from "@intersession/core/IlmError"
import { Network } from "@intersession/core/Network"
import { InMemoryBackend, InMemoryNetwork, TestPeer } from "@intersession/testing"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as HashSet from "effect/HashSet"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { A, awaitReceived, B, text } from "./helpers.js"

/** Starts A's engine on the given network and backend layers, in a scope the test closes. */
const startA = (network: Layer.Layer<Network>, backend: Layer.Layer<Backend, unknown>) =>
  Effect.gen(function*() {
    const recorder = yield* TestPeer.makeRecorder
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const layer = ILM.layer().pipe(
      Layer.provide(network),
      Layer.provide(backend),
      Layer.provide(Layer.succeed(Delivery, recorder.delivery))
    )
    const context = yield* Layer.buildWithScope(layer, scope)
    return { ilm: Context.get(context, ILM.ILM), scope }
  })

/** Subscribes to the engine's events and linked peers, so the test can check how both end. */
const watch = (ilm: ILM.ILM["Type"]) =>
  Effect.gen(function*() {
    const events = yield* Effect.forkScoped(Stream.runDrain(ilm.events))
    const peers = yield* Effect.forkScoped(Stream.runDrain(ilm.peers.changes))
    const closed = yield* Effect.forkScoped(ilm.closed)
    // Let the subscriptions start before anything happens.
    yield* Effect.yieldNow()
    return { events, peers, closed }
  })

/** Every way the engine answers once it has stopped with `reason`. */
const assertStopped = (
  ilm: ILM.ILM["Type"],
  watched: Effect.Effect.Success<ReturnType<typeof watch>>,
  reason: string
) =>
  Effect.gen(function*() {
    const closed = yield* Fiber.join(watched.closed).pipe(Effect.flip)
    assert.instanceOf(closed, IlmError.EngineClosedError)
    assert.include(closed.reason ?? "", reason)
    assert.include(closed.message, reason)
    for (const fiber of [watched.events, watched.peers]) {
      const ended = yield* Fiber.join(fiber).pipe(Effect.either)
      assert.isTrue(Either.isLeft(ended), "the stream ends with the engine's failure")
      if (Either.isLeft(ended)) assert.strictEqual(ended.left, closed)
    }
    const sent = yield* Effect.flip(ilm.send(B, text("after")))
    assert.strictEqual(sent, closed)
    assert.instanceOf(yield* Effect.flip(ilm.drain("1 second")), IlmError.EngineClosedError)
    assert.instanceOf(yield* Effect.flip(ilm.sendAndAwait(B, text("after"))), IlmError.EngineClosedError)
  })

describe("lifecycle", () => {
  it.scoped(
    "when the network's inbound stream ends, the engine closes, and says so everywhere",
    () =>
      Effect.gen(function*() {
        const hub = yield* InMemoryNetwork.make()
        const inbound = yield* Queue.unbounded<{ readonly from: typeof B; readonly frame: Uint8Array }>()
        // A's network, but with an inbound stream the test can end, as a network whose listener failed would.
        const network = Layer.effect(
          Network,
          Effect.map(Effect.context<Network>(), (context) => {
            const real = Context.get(context, Network)
            return Network.of({ ...real, inbound: Stream.fromQueue(inbound) })
          })
        ).pipe(Layer.provide(hub.layer(A)))
        const { ilm } = yield* startA(network, InMemoryBackend.layerFresh)
        const watched = yield* watch(ilm)
        yield* ilm.send(B, text("stored before"))
        yield* Queue.shutdown(inbound)
        yield* assertStopped(ilm, watched, "frame reader ended")
      }),
    10_000
  )

  it.scoped("when the backend dies, the engine closes with its cause", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const store = yield* InMemoryBackend.makeStore("A")
      let dying = false
      const backend = Layer.effect(
        Backend,
        Effect.map(Effect.context<Backend>(), (context) => {
          const real = Context.get(context, Backend)
          return Backend.of({
            ...real,
            acknowledge: (acks) => dying ? Effect.die(new Error("the disk is gone")) : real.acknowledge(acks)
          })
        })
      ).pipe(Layer.provide(InMemoryBackend.layer(store)))
      const { ilm } = yield* startA(hub.layer(A), backend)
      const watched = yield* watch(ilm)
      const b = yield* TestPeer.make(B)
      yield* TestPeer.start(hub, b)
      dying = true
      // B's acknowledgement makes the ack handler delete the message: the backend dies under it.
      yield* ilm.send(B, text("one"))
      yield* awaitReceived(b, 1)
      yield* assertStopped(ilm, watched, "ack handler failed")
      const closed = yield* Effect.flip(ilm.closed)
      assert.include(String(closed.cause), "the disk is gone")
    }), 10_000)

  it.scoped("when one of its fibers is interrupted, the engine closes", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      let interrupting = false
      // A network whose `send` interrupts the fiber that calls it: the outbox pump, once data flows.
      const network = Layer.effect(
        Network,
        Effect.map(Effect.context<Network>(), (context) => {
          const real = Context.get(context, Network)
          return Network.of({ ...real, send: (to, frames) => interrupting ? Effect.interrupt : real.send(to, frames) })
        })
      ).pipe(Layer.provide(hub.layer(A)))
      const { ilm } = yield* startA(network, InMemoryBackend.layerFresh)
      const watched = yield* watch(ilm)
      const b = yield* TestPeer.make(B)
      yield* TestPeer.start(hub, b)
      yield* Stream.runDrain(Stream.takeUntil(ilm.peers.changes, (peers) => HashSet.size(peers) > 0))
      interrupting = true
      yield* ilm.send(B, text("one"))
      yield* assertStopped(ilm, watched, "outbox pump was interrupted")
    }), 10_000)

  it.scoped("an ordinary close ends the streams quietly and `closed` succeeds", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const { ilm, scope } = yield* startA(hub.layer(A), InMemoryBackend.layerFresh)
      const watched = yield* watch(ilm)
      yield* Scope.close(scope, Exit.void)
      yield* Fiber.join(watched.closed)
      yield* Fiber.join(watched.events)
      yield* Fiber.join(watched.peers)
      const error = yield* Effect.flip(ilm.send(B, text("after")))
      assert.strictEqual(error._tag, "EngineClosedError")
      if (error._tag === "EngineClosedError") assert.isUndefined(error.reason)
    }), 10_000)
})
