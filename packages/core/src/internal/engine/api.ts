/**
 * The engine's API over its state: `send`, `sendAll`, `sendAndAwait`, `purge`, `drain`, `deadLetters`, `stats`,
 * `peers`, `events` and `closed`.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as STM from "effect/STM"
import * as Stream from "effect/Stream"
import * as Subscribable from "effect/Subscribable"
import * as TRef from "effect/TRef"
import * as DeadLetters from "../../DeadLetters.js"
import type * as ILM from "../../ILM.js"
import {
  DrainTimeoutError,
  type EngineClosedError,
  ForgetSelfError,
  InvalidLaneError,
  InvalidTimeToLiveError,
  MessageDroppedError,
  OutboxFullError,
  PayloadTooLargeError,
  SendToSelfError
} from "../../IlmError.js"
import * as Lane from "../../Lane.js"
import type { MessageId } from "../../Message.js"
import type { PeerId } from "../../PeerId.js"
import * as StreamKey from "../../StreamKey.js"
import type { Appender } from "./appender.js"
import * as DeadLetterReplay from "./deadLetters.js"
import * as Drops from "./drops.js"
import type { Env } from "./env.js"
import type { Greeting } from "./greeting.js"
import * as Outbound from "./outbound.js"
import type * as Outbox from "./outbox.js"
import type { Supervisor } from "./supervisor.js"

/** A time to live in whole milliseconds, rounded up; `undefined` when it is not a positive, finite duration. */
const timeToLiveMillis = (input: Duration.DurationInput): number | undefined => {
  const decoded = Duration.decodeUnknown(input)
  if (decoded._tag === "None" || !Duration.isFinite(decoded.value)) return undefined
  const millis = Math.ceil(Duration.toMillis(decoded.value))
  return millis > 0 && millis < Number.MAX_SAFE_INTEGER / 2 ? millis : undefined
}

export const make = (env: Env, appender: Appender, supervisor: Supervisor, greeting: Greeting): ILM.ILM["Type"] => {
  const { config, state } = env
  const closedError = Effect.flatMap(supervisor.closedError, Effect.fail)

  /** Lanes already found valid: checking a lane against its schema costs more than the rest of a `send`. */
  const validLanes = new Set<string>([Lane.defaultLane])

  const invalidLane = (lane: string) => {
    if (validLanes.has(lane)) return undefined
    if (!Lane.isLane(lane)) return new InvalidLaneError({ lane })
    if (validLanes.size < 1024) validLanes.add(lane)
    return undefined
  }

  const invalid = (to: PeerId, lane: string, payloads: ReadonlyArray<Uint8Array>) => {
    if (to === env.self) return new SendToSelfError({ peer: env.self })
    const badLane = invalidLane(lane)
    if (badLane !== undefined) return badLane
    for (const payload of payloads) {
      if (payload.length > config.maxPayloadBytes) {
        return new PayloadTooLargeError({ size: payload.length, maxPayloadBytes: config.maxPayloadBytes })
      }
    }
    return undefined
  }

  const refused = (to: PeerId, refusal: Outbox.Refusal): Effect.Effect<never, OutboxFullError | EngineClosedError> =>
    refusal === "full"
      ? Effect.fail(new OutboxFullError({ peer: to, maxPendingPerPeer: config.maxPendingPerPeer }))
      : closedError

  const sendAll = (to: PeerId, payloads: ReadonlyArray<Uint8Array>, options?: ILM.SendOptions) =>
    Effect.suspend((): Effect.Effect<ReadonlyArray<MessageId>, ILM.SendError> => {
      const lane = options?.lane ?? Lane.defaultLane
      const error = invalid(to, lane, payloads)
      if (error !== undefined) return Effect.fail(error)
      const timeToLive = options?.timeToLive
      if (timeToLive !== undefined) {
        const millis = timeToLiveMillis(timeToLive)
        if (millis === undefined) return Effect.fail(new InvalidTimeToLiveError({ timeToLive }))
        return Effect.flatMap(Clock.currentTimeMillis, (now) => submit(to, lane, payloads, now + millis))
      }
      return submit(to, lane, payloads, undefined)
    })

  const submit = (
    to: PeerId,
    lane: string,
    payloads: ReadonlyArray<Uint8Array>,
    expiresAt: number | undefined
  ): Effect.Effect<ReadonlyArray<MessageId>, ILM.SendError> =>
    Effect.suspend(() => {
      if (payloads.length === 0) return Effect.succeed([])
      const request = { peer: to, lane, key: StreamKey.make(to, lane), payloads, expiresAt }
      // Room is reserved on the caller's fiber, at once when there is some.
      const room = env.outbox.tryReserve(to, payloads.length)
      if (room === "reserved") return appender.submit(request)
      if (room !== "wait") return refused(to, room)
      return Effect.zipRight(
        Effect.catchAll(env.outbox.reserve(to, payloads.length), (refusal) => refused(to, refusal)),
        appender.submit(request)
      )
    })

  // No span per message: a span costs more than the rest of a send.
  const send = (to: PeerId, payload: Uint8Array, options?: ILM.SendOptions) =>
    Effect.map(sendAll(to, [payload], options), (ids) => ids[0]!)

  /** Waits until a message is acknowledged (`"acked"`), dropped, or the engine closed. */
  const settled = (id: MessageId) =>
    STM.gen(function*() {
      if (yield* TRef.get(state.closed)) return "closed" as const
      const stream = yield* state.outs.get(StreamKey.make(id.destination, id.lane))
      if (stream === undefined) return yield* STM.retry
      const dropped = Outbound.droppedAt(stream, id.seq)
      if (dropped !== undefined) return dropped.reason
      if (stream.acked >= id.seq) return "acked" as const
      return yield* STM.retry
    })

  const sendAndAwait = (to: PeerId, payload: Uint8Array, options?: ILM.SendOptions) =>
    Effect.gen(function*() {
      const id = yield* send(to, payload, options)
      const outcome = yield* settled(id)
      if (outcome === "closed") return yield* closedError
      if (outcome !== "acked") return yield* Effect.fail(new MessageDroppedError({ id, reason: outcome }))
      return id
    }).pipe(Effect.withSpan("ILM.sendAndAwait", { attributes: { to } }))

  const purgeStored = (peer: PeerId, lane: Lane.Lane | undefined) =>
    Effect.flatMap(env.backend.purge(peer, lane), (removed) => Drops.apply(env, removed, "purged"))

  const purge = (peer: PeerId, options?: ILM.PurgeOptions) =>
    Effect.gen(function*() {
      const lane = options?.lane
      if (lane !== undefined) {
        const badLane = invalidLane(lane)
        if (badLane !== undefined) return yield* Effect.fail(badLane)
      }
      if (yield* TRef.get(state.closed)) return yield* closedError
      return yield* purgeStored(peer, lane)
    }).pipe(Effect.withSpan("ILM.purge", { attributes: { peer, lane: options?.lane } }))

  // Alone with the appender: a send to the peer made meanwhile is stored after it, in the new streams.
  const forget = (peer: PeerId) =>
    Effect.gen(function*() {
      if (peer === env.self) return yield* Effect.fail(new ForgetSelfError({ peer }))
      if (yield* TRef.get(state.closed)) return yield* closedError
      return yield* appender.exclusive(greeting.forget(peer, purgeStored(peer, undefined)))
    }).pipe(Effect.withSpan("ILM.forget", { attributes: { peer } }))

  const pendingStreams = STM.map(
    state.outs.values(),
    (all) =>
      all.filter((stream) => Outbound.pending(stream) > 0).map((stream) => ({
        peer: stream.peer,
        lane: stream.lane,
        pending: Outbound.pending(stream)
      }))
  )

  const drained = STM.gen(function*() {
    if (yield* TRef.get(state.closed)) return false
    if ((yield* TRef.get(state.pending)) > 0) return yield* STM.retry
    return true
  })

  const drain = (timeout: Duration.DurationInput) =>
    Effect.gen(function*() {
      const result = yield* Effect.timeout(drained, timeout).pipe(Effect.option)
      if (Option.isNone(result)) {
        return yield* Effect.fail(new DrainTimeoutError({ pending: yield* pendingStreams }))
      }
      if (!result.value) return yield* closedError
    }).pipe(Effect.withSpan("ILM.drain"))

  const stats = STM.gen(function*() {
    const peerList = yield* state.peers.values()
    const incarnations = new Map(peerList.map((peer) => [peer.peer, peer.incarnation]))
    return {
      peers: peerList.map((peer): ILM.PeerStats => ({
        peer: peer.peer,
        connected: peer.connected,
        linked: peer.linked,
        incarnation: peer.incarnation,
        retransmitTimeoutMillis: peer.rtt.rto,
        smoothedRoundTripMillis: peer.rtt.srtt
      })),
      outbound: (yield* state.outs.values()).map((stream): ILM.OutboundStats => ({
        peer: stream.peer,
        lane: stream.lane,
        incarnation: incarnations.get(stream.peer) ?? env.backend.incarnation,
        pending: Outbound.pending(stream),
        inFlight: Outbound.inFlight(stream),
        ackedUpTo: stream.acked,
        lastSeq: stream.allocated,
        retransmitted: stream.retransmitted,
        expired: stream.expired,
        purged: stream.purged
      })),
      inbound: (yield* state.ins.values()).map((stream): ILM.InboundStats => ({
        peer: stream.peer,
        lane: stream.lane,
        incarnation: stream.incarnation,
        delivered: stream.delivered,
        buffered: stream.buffer.length,
        expired: stream.expired,
        purged: stream.purged,
        deadLettered: stream.deadLettered
      }))
    } satisfies ILM.Stats
  }).pipe(STM.commit)

  /** Runs a dead-letter operation unless the engine is closed. */
  const open = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E | EngineClosedError> =>
    Effect.flatMap(
      TRef.get(state.closed),
      (closed): Effect.Effect<A, E | EngineClosedError> => closed ? closedError : effect
    )

  const deadLetters: ILM.ILM["Type"]["deadLetters"] = {
    list: (filter) => open(DeadLetters.list(env.backend, filter)).pipe(Effect.withSpan("ILM.deadLetters.list")),
    replay: (filter) => open(DeadLetterReplay.replay(env, filter)).pipe(Effect.withSpan("ILM.deadLetters.replay")),
    purge: (filter) => open(DeadLetters.purge(env.backend, filter)).pipe(Effect.withSpan("ILM.deadLetters.purge"))
  }

  const untilClosed = <A, E>(stream: Stream.Stream<A, E>) => Stream.interruptWhenDeferred(stream, supervisor.closed)

  return {
    localPeer: env.self,
    send,
    sendAll,
    sendAndAwait,
    purge,
    forget,
    drain,
    deadLetters,
    peers: Subscribable.make({ get: env.linkedPeers.get, changes: untilClosed(env.linkedPeers.changes) }),
    stats,
    events: untilClosed(Stream.fromPubSub(env.events)),
    closed: Deferred.await(supervisor.closed)
  }
}
