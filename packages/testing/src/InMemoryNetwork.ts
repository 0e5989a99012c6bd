/**
 * An in-memory network hub with fault injection. Each peer gets a `Network` layer from the hub; the hub's controls
 * connect and disconnect peers, partition pairs, and make links drop, duplicate, reorder and delay frames. Faults
 * draw from a seeded generator and delays go through `Clock`, so a failing case replays exactly under `TestClock`.
 *
 * @since 0.1.0
 */
import { type Inbound, Network, NetworkError } from "@intersession/core/Network"
import type { PeerId } from "@intersession/core/PeerId"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as HashSet from "effect/HashSet"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Random from "effect/Random"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"

/**
 * What a link does to the frames crossing it. Probabilities are per frame, from 0 to 1.
 *
 * @since 0.1.0
 * @category models
 */
export interface Faults {
  /** Probability that a frame is lost. */
  readonly drop?: number | undefined
  /** Probability that a frame arrives twice. */
  readonly duplicate?: number | undefined
  /** Probability that a frame is held back by up to `reorderWindow`, letting later frames overtake it. */
  readonly reorder?: number | undefined
  /** How far a reordered frame can be held back; 10 ms by default. */
  readonly reorderWindow?: Duration.DurationInput | undefined
  /** Fixed delay of every frame. */
  readonly delay?: Duration.DurationInput | undefined
  /** Drops every frame this accepts, to lose only some kinds of frames (acknowledgements, say). */
  readonly dropWhen?: ((frame: Uint8Array) => boolean) | undefined
}

/**
 * Counts of what the hub did with frames.
 *
 * @since 0.1.0
 * @category models
 */
export interface HubStats {
  readonly sent: number
  readonly delivered: number
  readonly dropped: number
  readonly duplicated: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Hub {
  /** The `Network` of one peer. Building it brings the peer online; closing its scope takes it offline. */
  readonly layer: (peer: PeerId) => Layer.Layer<Network>
  /** Brings a peer's links back after `disconnect`. */
  readonly connect: (peer: PeerId) => Effect.Effect<void>
  /** Cuts every link of a peer, as unplugging its cable would; its layer stays alive. */
  readonly disconnect: (peer: PeerId) => Effect.Effect<void>
  /** Cuts the link between two peers. */
  readonly partition: (a: PeerId, b: PeerId) => Effect.Effect<void>
  /** Restores the link between two peers. */
  readonly heal: (a: PeerId, b: PeerId) => Effect.Effect<void>
  /** Sets the faults of the link `from → to`, or of every link when no link is given. */
  readonly setFaults: (faults: Faults, link?: { readonly from: PeerId; readonly to: PeerId }) => Effect.Effect<void>
  /** Delivers raw bytes to `to` as if the transport had received them from `from` (which need not exist). */
  readonly inject: (from: PeerId, to: PeerId, frame: Uint8Array) => Effect.Effect<void>
  readonly stats: Effect.Effect<HubStats>
}

interface Registration {
  readonly inbound: Queue.Queue<Inbound>
  readonly connected: SubscriptionRef.SubscriptionRef<HashSet.HashSet<PeerId>>
}

const isClean = (faults: Faults): boolean =>
  !(faults.drop ?? 0) && !(faults.duplicate ?? 0) && !(faults.reorder ?? 0) && faults.delay === undefined &&
  faults.dropWhen === undefined

const linkKey = (from: string, to: string) => `${from.length}:${from}${to}`
const pairKey = (a: string, b: string) => (a < b ? linkKey(a, b) : linkKey(b, a))

/**
 * Makes a hub. `seed` fixes every fault decision; the same seed and the same schedule replay the same run.
 *
 * @example
 * ```ts
 * import * as Delivery from "@intersession/core/Delivery"
 * import * as ILM from "@intersession/core/ILM"
 * import * as PeerId from "@intersession/core/PeerId"
 * import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
 * import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
 * import * as Context from "effect/Context"
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 *
 * const alice = PeerId.make("alice")
 * const bob = PeerId.make("bob")
 *
 * const program = Effect.gen(function*() {
 *   // One hub per test; the seed fixes every fault decision, so a failing run replays exactly.
 *   const hub = yield* InMemoryNetwork.make({ seed: 7 })
 *   const peer = (id: PeerId.PeerId) =>
 *     Layer.build(
 *       ILM.layer().pipe(
 *         Layer.provideMerge(Delivery.layerInbox()),
 *         Layer.provide(hub.layer(id)), // brings `id` online on the hub
 *         Layer.provide(InMemoryBackend.layerFresh)
 *       )
 *     )
 *   const sender = Context.get(yield* peer(alice), ILM.ILM)
 *   const inbox = Context.get(yield* peer(bob), Delivery.Inbox)
 *
 *   // Lossy links: 30% of the frames lost, 10% duplicated, 20% overtaken by later ones; then a partition.
 *   yield* hub.setFaults({ drop: 0.3, duplicate: 0.1, reorder: 0.2 })
 *   yield* hub.partition(alice, bob)
 *   yield* sender.sendAll(bob, ["a", "b", "c"].map((text) => new TextEncoder().encode(text)))
 *   yield* hub.heal(alice, bob)
 *
 *   const received: Array<string> = []
 *   for (let i = 0; i < 3; i++) received.push(new TextDecoder().decode((yield* inbox.take).payload))
 *   console.log(received) // [ 'a', 'b', 'c' ]: once each and in order, whatever the link did
 * })
 *
 * Effect.runPromise(Effect.scoped(program))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options?: { readonly seed?: number | undefined }): Effect.Effect<Hub, never, Scope.Scope> =>
  Effect.gen(function*() {
    const random = Random.make(options?.seed ?? 0)
    const fibers = yield* FiberSet.make()
    const registered = new Map<PeerId, Registration>()
    const unplugged = new Set<PeerId>()
    const partitions = new Set<string>()
    const linkFaults = new Map<string, Faults>()
    let defaultFaults: Faults = {}
    const stats = { sent: 0, delivered: 0, dropped: 0, duplicated: 0 }

    const reachable = (from: PeerId, to: PeerId) =>
      from !== to && registered.has(from) && registered.has(to) && !unplugged.has(from) && !unplugged.has(to) &&
      !partitions.has(pairKey(from, to))

    const refresh = Effect.forEach(registered, ([peer, registration]) => {
      const now = HashSet.fromIterable(Array.from(registered.keys()).filter((other) => reachable(peer, other)))
      return SubscriptionRef.update(
        registration.connected,
        (old) => (HashSet.size(HashSet.difference(old, now)) === 0 &&
            HashSet.size(HashSet.difference(now, old)) === 0 ?
          old :
          now)
      )
    }, { discard: true })

    const deliverAllNow = (from: PeerId, to: PeerId, frames: ReadonlyArray<Uint8Array>) =>
      Effect.suspend(() => {
        const target = registered.get(to)
        if (target === undefined || !reachable(from, to)) {
          stats.dropped += frames.length
          return Effect.void
        }
        stats.delivered += frames.length
        return Effect.asVoid(Queue.offerAll(target.inbound, frames.map((frame) => ({ from, frame }))))
      })

    const deliverNow = (from: PeerId, to: PeerId, frame: Uint8Array) => deliverAllNow(from, to, [frame])

    /** Held-back frames, each on its own timer, so later frames overtake them. */
    const deliverAfter = (from: PeerId, to: PeerId, frame: Uint8Array, delay: number) =>
      FiberSet.run(fibers, Effect.zipRight(Effect.sleep(Duration.millis(delay)), deliverNow(from, to, frame)))

    /**
     * Delayed frames that keep their order go through one queue per link. Timers due at the same instant need not
     * fire in the order they were set, so one timer per frame could reverse frames sent together.
     */
    const delayedLinks = new Map<string, Queue.Queue<{ readonly due: number; readonly frame: Uint8Array }>>()
    const deliverInOrder = (from: PeerId, to: PeerId, frame: Uint8Array, delay: number) =>
      Effect.gen(function*() {
        const key = linkKey(from, to)
        let queue = delayedLinks.get(key)
        if (queue === undefined) {
          const created = yield* Queue.unbounded<{ readonly due: number; readonly frame: Uint8Array }>()
          delayedLinks.set(key, created)
          queue = created
          // Frames wait here in sending order; every frame due by now goes in one offer, as a socket read would.
          const waiting: Array<{ readonly due: number; readonly frame: Uint8Array }> = []
          yield* FiberSet.run(
            fibers,
            Effect.forever(Effect.gen(function*() {
              if (waiting.length === 0) waiting.push(yield* Queue.take(created))
              for (const next of yield* Queue.takeAll(created)) waiting.push(next)
              const now = yield* Clock.currentTimeMillis
              const first = waiting[0]!
              if (first.due > now) return yield* Effect.sleep(Duration.millis(first.due - now))
              let due = 0
              while (due < waiting.length && waiting[due]!.due <= now) due++
              yield* deliverAllNow(from, to, waiting.splice(0, due).map((next) => next.frame))
            }))
          )
        }
        const now = yield* Clock.currentTimeMillis
        yield* Queue.offer(queue, { due: now + delay, frame })
      })

    const chance = (p: number | undefined) =>
      p === undefined || p <= 0 ? Effect.succeed(false) : Effect.map(random.next, (x) => x < p)

    const route = (from: PeerId, to: PeerId, frame: Uint8Array) =>
      Effect.gen(function*() {
        stats.sent++
        const faults = linkFaults.get(linkKey(from, to)) ?? defaultFaults
        if (faults.dropWhen?.(frame) === true || (yield* chance(faults.drop))) {
          stats.dropped++
          return
        }
        const copies = (yield* chance(faults.duplicate)) ? 2 : 1
        if (copies === 2) stats.duplicated++
        const base = faults.delay === undefined ? 0 : Duration.toMillis(faults.delay)
        const window = faults.reorderWindow === undefined ? 10 : Duration.toMillis(faults.reorderWindow)
        for (let i = 0; i < copies; i++) {
          const held = (yield* chance(faults.reorder)) ? 1 + (yield* random.nextIntBetween(0, Math.max(1, window))) : 0
          if (held > 0) yield* deliverAfter(from, to, frame, base + held)
          else if (base > 0) yield* deliverInOrder(from, to, frame, base)
          else yield* deliverNow(from, to, frame)
        }
      })

    const register = (peer: PeerId) =>
      Effect.acquireRelease(
        Effect.gen(function*() {
          if (registered.has(peer)) return yield* Effect.die(`peer ${peer} is already online in this hub`)
          const registration: Registration = {
            inbound: yield* Queue.unbounded<Inbound>(),
            connected: yield* SubscriptionRef.make(HashSet.empty<PeerId>())
          }
          registered.set(peer, registration)
          yield* refresh
          return registration
        }),
        (registration) =>
          Effect.gen(function*() {
            registered.delete(peer)
            yield* Queue.shutdown(registration.inbound)
            yield* refresh
          })
      )

    const layer = (peer: PeerId) =>
      Layer.scoped(
        Network,
        Effect.map(register(peer), (registration) =>
          Network.of({
            localPeer: peer,
            send: (to, frames) =>
              Effect.suspend(() => {
                if (!reachable(peer, to)) {
                  return Effect.fail(new NetworkError({ peer: to, reason: "Unreachable" }))
                }
                const faults = linkFaults.get(linkKey(peer, to)) ?? defaultFaults
                // A link without faults hands the frames over together, as one read of a socket would.
                if (isClean(faults)) {
                  stats.sent += frames.length
                  return deliverAllNow(peer, to, frames)
                }
                return Effect.forEach(frames, (frame) => route(peer, to, frame), { discard: true })
              }),
            inbound: Stream.fromQueue(registration.inbound),
            connected: registration.connected
          }))
      )

    const control = (f: () => void) => Effect.zipRight(Effect.sync(f), refresh)

    return {
      layer,
      connect: (peer) => control(() => unplugged.delete(peer)),
      disconnect: (peer) => control(() => unplugged.add(peer)),
      partition: (a, b) => control(() => partitions.add(pairKey(a, b))),
      heal: (a, b) => control(() => partitions.delete(pairKey(a, b))),
      setFaults: (faults, link) =>
        Effect.sync(() => {
          if (link === undefined) {
            defaultFaults = faults
            linkFaults.clear()
          } else {
            linkFaults.set(linkKey(link.from, link.to), faults)
          }
        }),
      inject: (from, to, frame) =>
        Effect.suspend(() => {
          const target = registered.get(to)
          return target === undefined ? Effect.void : Effect.asVoid(Queue.offer(target.inbound, { from, frame }))
        }),
      stats: Effect.sync(() => ({ ...stats }))
    } satisfies Hub
  })
