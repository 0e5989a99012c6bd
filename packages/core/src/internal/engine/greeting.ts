/**
 * The `Hello` exchange: greeting a peer on every connection (resent while unanswered), answering its `Hello`s, and
 * linking once a fresh one arrived — acknowledgements it carries, a new incarnation when this store went back in
 * time, a resend from the first gap. The frame reader hands it every `Hello`; the peer watcher, connections.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberMap from "effect/FiberMap"
import * as HashSet from "effect/HashSet"
import * as PubSub from "effect/PubSub"
import * as STM from "effect/STM"
import * as SubscriptionRef from "effect/SubscriptionRef"
import type { BackendError } from "../../Backend.js"
import * as Frame from "../../Frame.js"
import { IlmEvent } from "../../IlmEvent.js"
import * as Incarnation from "../../Incarnation.js"
import type { PeerId } from "../../PeerId.js"
import type { StreamKey } from "../../StreamKey.js"
import type { Env } from "./env.js"
import * as Hello from "./hello.js"
import * as Inbound from "./inbound.js"
import * as Outbound from "./outbound.js"
import * as Receive from "./receive.js"
import * as Report from "./report.js"
import * as Rtt from "./rtt.js"
import * as State from "./state.js"

export interface Greeting {
  /** Handles a `Hello` that came from its claimed sender to this peer. */
  readonly receive: (hello: Frame.Hello) => Effect.Effect<void>
  /** Asks a peer for a `Hello`: it sent data of a session this peer has not heard of. */
  readonly ask: (peer: PeerId) => Effect.Effect<void>
  readonly connect: (peer: PeerId) => Effect.Effect<void>
  readonly disconnect: (peer: PeerId) => Effect.Effect<void>
  /**
   * Forgets a peer: stops taking its frames and greeting it, runs `purge` (which drops what is pending toward it),
   * deletes what the store holds about it under a new incarnation toward it, clears its streams in memory, and
   * greets it again in a new session if it is connected; gives what `purge` gave.
   */
  readonly forget: <E>(peer: PeerId, purge: Effect.Effect<number, E>) => Effect.Effect<number, E | BackendError>
}

export const make = (
  env: Env,
  workers: FiberMap.FiberMap<StreamKey>,
  helloLoops: FiberMap.FiberMap<PeerId>
): Greeting => {
  const { state } = env

  /** Sends a `Hello` to a connected peer: one that is not connected gets this peer's first on connecting. */
  const send = (peer: PeerId, reply: boolean) =>
    Effect.flatMap(
      STM.gen(function*() {
        const link = yield* env.peerLink(peer)
        if (!link.connected || link.forgetting) return undefined
        const lanes = Hello.laneStates(yield* State.streamsFrom(state, peer))
        return Frame.encode({
          _tag: "Hello",
          from: env.self,
          to: peer,
          incarnation: link.incarnation,
          nonce: link.nonce,
          echo: link.theirNonce,
          reply,
          lanes
        })
      }),
      (frame) => frame === undefined ? Effect.void : env.sendFrames(peer, [frame])
    )

  const setLinked = (peer: PeerId, linked: boolean) =>
    SubscriptionRef.update(env.linkedPeers, (set) => linked ? HashSet.add(set, peer) : HashSet.remove(set, peer))

  /**
   * A `Hello` with a new nonce opens a new session of the peer, and what it sent before is history: its buffered
   * frames are dropped and delivery of them stops before this peer answers. So the `delivered` the answer reports
   * is final, and no frame of an earlier run can be delivered after the peer was told where to resume.
   */
  const startSession = (peer: PeerId, nonce: number) =>
    Effect.gen(function*() {
      yield* state.peers.ensure([peer])
      const streams = yield* STM.gen(function*() {
        yield* state.peers.set(peer, { ...(yield* env.peerLink(peer)), theirNonce: nonce })
        const streams = yield* State.streamsFrom(state, peer)
        for (const stream of streams) yield* state.ins.set(stream.key, Inbound.clear(stream))
        return streams
      })
      for (const stream of streams) yield* FiberMap.remove(workers, stream.key)
      yield* STM.forEach(streams, (stream) =>
        STM.flatMap(state.ins.get(stream.key), (current) =>
          current === undefined ? STM.void : state.ins.set(stream.key, { ...current, busy: false })), {
        discard: true
      })
    })

  /**
   * Applies a fresh `Hello`'s plan: acknowledgements, the incarnation, and a resend from the first gap — unless the
   * link stands already in this session under this incarnation: then what is in flight is on its way, and the
   * `Hello` (the one that crossed this peer's, or a resent one) only acknowledges.
   */
  const link = (
    peerId: PeerId,
    plan: Hello.Plan,
    incarnation: Incarnation.Incarnation,
    newSession: boolean,
    now: number
  ) =>
    STM.gen(function*() {
      const report = Report.make()
      const effects = Receive.emptyEffects()
      for (const { stream, upTo } of plan.acks) {
        const current = yield* state.outs.get(stream.key)
        if (current !== undefined) yield* Receive.applyAck(env, current, upTo, now, report, effects)
      }
      const peer = yield* env.peerLink(peerId)
      if (!peer.connected) return { report, effects, connected: false }
      yield* state.peers.set(peerId, { ...peer, incarnation, linked: true, verified: true })
      if (!peer.linked || newSession || incarnation !== peer.incarnation) {
        for (const stream of yield* State.streamsTo(state, peerId)) {
          yield* state.outs.set(stream.key, Outbound.restart(stream))
          effects.outReady.push(stream.key)
        }
      }
      yield* Receive.flush(env, effects)
      if (plan.resync !== undefined) {
        report.events.push(IlmEvent.Resynchronised({
          peer: peerId,
          lane: undefined,
          reason: plan.resync.reason,
          detail: `${plan.resync.detail}; now incarnation ${incarnation}`
        }))
      }
      if (!peer.linked) report.events.push(IlmEvent.PeerConnected({ peer: peerId }))
      return { report, effects, connected: !peer.linked }
    })

  /** The incarnation to link under: a new one, stored, when the plan says this store must move on. */
  const incarnationFor = (peerId: PeerId, plan: Hello.Plan, current: Incarnation.Incarnation) =>
    Effect.gen(function*() {
      if (plan.resync === undefined) return current
      const next = yield* Incarnation.after(Incarnation.Incarnation.make(plan.resync.after))
      // Forget what the peer has delivered before moving on, so a crash in between cannot resend it.
      const acknowledgements = plan.acks.map(({ stream, upTo }) => ({ peer: stream.peer, lane: stream.lane, upTo }))
      yield* env.backend.withTransaction(
        Effect.zipRight(env.backend.acknowledge(acknowledgements), env.backend.setIncarnation(peerId, next))
      )
      return next
    })

  const receive = (hello: Frame.Hello) =>
    Effect.gen(function*() {
      // A peer being forgotten is greeted again in a new session once that is done.
      if ((yield* env.peerLink(hello.from)).forgetting) return
      const now = yield* Clock.currentTimeMillis
      const newSession = hello.nonce !== (yield* env.peerLink(hello.from)).theirNonce
      if (newSession) yield* startSession(hello.from, hello.nonce)
      const fresh = yield* STM.gen(function*() {
        const peer = yield* env.peerLink(hello.from)
        if (!peer.connected || hello.echo !== peer.nonce) return undefined
        const session = `${hello.nonce}/${hello.echo}`
        const firstOfSession = peer.checkedSession !== session
        if (firstOfSession) yield* state.peers.set(hello.from, { ...peer, checkedSession: session })
        const plan = Hello.plan(hello, peer.incarnation, yield* State.streamsTo(state, hello.from))
        return { peer, plan, firstOfSession }
      })
      if (fresh !== undefined) {
        const { firstOfSession, peer, plan } = fresh
        const forgotten = Report.make()
        for (const stream of firstOfSession ? plan.forgotten : []) {
          forgotten.events.push(IlmEvent.Resynchronised({
            peer: hello.from,
            lane: stream.lane,
            reason: "peer-lost-state",
            detail:
              `peer has no record of this stream, acknowledged up to ${stream.acked}; it will adopt it at the floor`
          }))
        }
        yield* env.publish(forgotten)
        yield* incarnationFor(hello.from, plan, peer.incarnation).pipe(
          Effect.flatMap((incarnation) => link(hello.from, plan, incarnation, newSession, now)),
          Effect.tap(({ connected, effects, report }) =>
            Effect.gen(function*() {
              yield* Receive.release(env, effects)
              if (connected) yield* setLinked(hello.from, true)
              yield* env.publish(report)
            })
          ),
          Effect.catchAllCause((cause) =>
            Effect.logWarning("Could not start a new incarnation; waiting for the next Hello", cause)
          )
        )
      }
      if (!hello.reply) yield* send(hello.from, (yield* env.peerLink(hello.from)).linked)
    })

  const awaitLinked = (peer: PeerId) => STM.flatMap(env.peerLink(peer), (link) => STM.check(() => link.linked))

  const helloLoop = (peer: PeerId): Effect.Effect<void> =>
    Effect.gen(function*() {
      let interval = env.config.helloInitial
      while (true) {
        yield* send(peer, false)
        const linked = yield* Effect.raceFirst(
          Effect.as(awaitLinked(peer), true),
          Effect.as(Effect.sleep(interval), false)
        )
        if (linked) return
        interval = Duration.min(Duration.times(interval, 2), env.config.helloMax)
      }
    })

  const connect = (peer: PeerId) =>
    Effect.gen(function*() {
      yield* state.peers.ensure([peer])
      yield* STM.flatMap(
        env.peerLink(peer),
        (link) => state.peers.set(peer, { ...link, connected: true, linked: false, nonce: env.nextNonce() })
      )
      yield* FiberMap.run(helloLoops, peer, helloLoop(peer))
    })

  const disconnect = (peer: PeerId) =>
    Effect.gen(function*() {
      yield* FiberMap.remove(helloLoops, peer)
      const wasLinked = yield* STM.gen(function*() {
        const link = yield* state.peers.get(peer)
        if (link === undefined) return false
        yield* state.peers.set(peer, { ...link, connected: false, linked: false })
        for (const stream of yield* State.streamsTo(state, peer)) {
          yield* state.outs.set(stream.key, Outbound.restart(stream))
        }
        return link.linked
      })
      if (wasLinked) {
        yield* setLinked(peer, false)
        yield* PubSub.publish(env.events, IlmEvent.PeerDisconnected({ peer }))
      }
    })

  const forget = <E>(peer: PeerId, purge: Effect.Effect<number, E>) =>
    Effect.gen(function*() {
      yield* state.peers.ensure([peer])
      const before = yield* STM.commit(STM.gen(function*() {
        const link = yield* env.peerLink(peer)
        // Its frames are refused from now on: `Data` as of an unknown session, an `Ack` as before the handshake.
        yield* state.peers.set(peer, { ...link, forgetting: true, linked: false, verified: false, theirNonce: 0 })
        return link
      }))
      yield* FiberMap.remove(helloLoops, peer)
      for (const stream of yield* STM.commit(State.streamsFrom(state, peer))) {
        yield* FiberMap.remove(workers, stream.key)
      }
      if (before.linked) {
        yield* setLinked(peer, false)
        yield* PubSub.publish(env.events, IlmEvent.PeerDisconnected({ peer }))
      }
      const purged = yield* purge
      // Newer than any incarnation the peer knows of this store: it takes the new streams as new, from seq 1.
      const next = yield* Incarnation.after(
        Incarnation.Incarnation.make(Math.max(before.incarnation, env.backend.incarnation))
      )
      yield* env.backend.forget(peer, next)
      const outbound = yield* STM.commit(State.streamsTo(state, peer))
      for (const stream of outbound) env.sendBuffer.forget(stream.key)
      yield* STM.commit(STM.gen(function*() {
        for (const stream of outbound) yield* state.outs.clear(stream.key)
        for (const stream of yield* State.streamsFrom(state, peer)) yield* state.ins.clear(stream.key)
        const link = yield* env.peerLink(peer)
        yield* state.peers.set(peer, {
          ...link,
          incarnation: next,
          nonce: link.connected ? env.nextNonce() : 0,
          checkedSession: undefined,
          rtt: Rtt.initial(env.rttBounds)
        })
      }))
      return purged
    }).pipe(
      // Done or not, the peer is greeted again: in a new session, which tells it to resynchronise.
      Effect.ensuring(Effect.gen(function*() {
        const connected = yield* STM.commit(STM.gen(function*() {
          const link = yield* env.peerLink(peer)
          yield* state.peers.set(peer, { ...link, forgetting: false })
          return link.connected
        }))
        if (connected) yield* FiberMap.run(helloLoops, peer, helloLoop(peer))
      }))
    )

  return { receive, ask: (peer) => send(peer, false), connect, disconnect, forget }
}
