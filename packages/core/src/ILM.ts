/**
 * The engine: reliable, ordered messaging between peers across disconnects, crashes and restarts.
 *
 * The examples show `send`, `sendAll` and `drain` on in-memory peers (`@intersession/testing`); see `layer` for
 * how a peer is put together.
 *
 * @example
 * ```ts
 * import * as Delivery from "@intersession/core/Delivery"
 * import * as ILM from "@intersession/core/ILM"
 * import * as PeerId from "@intersession/core/PeerId"
 * import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
 * import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 *
 * const alice = PeerId.make("alice")
 * const bob = PeerId.make("bob")
 *
 * // `send`: alice is alone on the network, and bob is offline.
 * const aliceLayer = Layer.unwrapScoped(Effect.map(InMemoryNetwork.make(), (hub) =>
 *   ILM.layer().pipe(
 *     Layer.provide(Delivery.layerInbox()),
 *     Layer.provide(hub.layer(alice)),
 *     Layer.provide(InMemoryBackend.layerFresh)
 *   )))
 *
 * const program = Effect.gen(function*() {
 *   const ilm = yield* ILM.ILM
 *   // `send` resolves once the message is stored, whether or not bob is reachable: the engine delivers it later.
 *   const id = yield* ilm.send(bob, new TextEncoder().encode("see you"), { lane: "chat" })
 *   console.log(`${id.destination}/${id.lane} #${id.seq}`) // bob/chat #1
 *
 *   const { outbound } = yield* ilm.stats
 *   console.log(outbound.map((stream) => `${stream.peer}/${stream.lane}: ${stream.pending} pending`))
 *   // [ 'bob/chat: 1 pending' ]
 * })
 *
 * Effect.runPromise(Effect.provide(program, aliceLayer))
 * ```
 *
 * @example
 * ```ts
 * import * as Delivery from "@intersession/core/Delivery"
 * import * as ILM from "@intersession/core/ILM"
 * import * as PeerId from "@intersession/core/PeerId"
 * import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
 * import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
 * import * as Chunk from "effect/Chunk"
 * import * as Context from "effect/Context"
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 * import * as Stream from "effect/Stream"
 *
 * // `sendAll`: several messages to one peer and lane, stored in one step.
 * const peer = (hub: InMemoryNetwork.Hub, id: string) =>
 *   Layer.build(
 *     ILM.layer().pipe(
 *       Layer.provideMerge(Delivery.layerInbox()),
 *       Layer.provide(hub.layer(PeerId.make(id))),
 *       Layer.provide(InMemoryBackend.layerFresh)
 *     )
 *   )
 *
 * const program = Effect.gen(function*() {
 *   const hub = yield* InMemoryNetwork.make()
 *   const alice = Context.get(yield* peer(hub, "alice"), ILM.ILM)
 *   const bob = Context.get(yield* peer(hub, "bob"), Delivery.Inbox)
 *
 *   // All stored in one step, or none: no other message of the stream comes between them.
 *   const lines = ["BEGIN", "debit 10", "credit 10", "COMMIT"]
 *   const ids = yield* alice.sendAll(PeerId.make("bob"), lines.map((line) => new TextEncoder().encode(line)))
 *   console.log(ids.map((id) => id.seq)) // [ 1, 2, 3, 4 ]
 *
 *   const received = yield* Stream.runCollect(Stream.take(bob.messages, lines.length))
 *   console.log(Chunk.toReadonlyArray(received).map((message) => new TextDecoder().decode(message.payload)))
 *   // [ 'BEGIN', 'debit 10', 'credit 10', 'COMMIT' ]
 * })
 *
 * Effect.runPromise(Effect.scoped(program))
 * ```
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
 * // `drain`: wait until what was sent is acknowledged.
 * const peer = (hub: InMemoryNetwork.Hub, id: string) =>
 *   Layer.build(
 *     ILM.layer().pipe(
 *       Layer.provide(Delivery.layerInbox()),
 *       Layer.provide(hub.layer(PeerId.make(id))),
 *       Layer.provide(InMemoryBackend.layerFresh)
 *     )
 *   )
 *
 * const program = Effect.gen(function*() {
 *   const hub = yield* InMemoryNetwork.make()
 *   const alice = Context.get(yield* peer(hub, "alice"), ILM.ILM)
 *   yield* peer(hub, "bob")
 *   yield* alice.send(PeerId.make("bob"), new TextEncoder().encode("last words"))
 *   yield* alice.send(PeerId.make("carol"), new TextEncoder().encode("carol is offline"))
 *
 *   // Before a planned shutdown: wait until everything sent is acknowledged, for at most a second.
 *   // What is still pending is not lost: it stays stored and goes out when the engine runs again.
 *   yield* alice.drain("1 second").pipe(
 *     Effect.catchTag("DrainTimeoutError", (error) =>
 *       Effect.sync(() => console.log(error.pending.map((stream) => `${stream.peer}: ${stream.pending}`))))
 *   )
 *   // [ 'carol: 1' ]
 * })
 *
 * Effect.runPromise(Effect.scoped(program))
 * ```
 *
 * @since 0.1.0
 */
import type * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as HashSet from "effect/HashSet"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import type * as Subscribable from "effect/Subscribable"
import type { Backend, BackendError, DeadLetter } from "./Backend.js"
import type * as DeadLetters from "./DeadLetters.js"
import type { Delivery } from "./Delivery.js"
import * as IlmConfig from "./IlmConfig.js"
import type {
  DrainTimeoutError,
  EngineClosedError,
  ForgetSelfError,
  InvalidLaneError,
  InvalidTimeToLiveError,
  MessageDroppedError,
  OutboxFullError,
  PayloadTooLargeError,
  SendToSelfError
} from "./IlmError.js"
import type { IlmEvent } from "./IlmEvent.js"
import type { Incarnation } from "./Incarnation.js"
import * as internal from "./internal/engine/engine.js"
import type { MessageId } from "./Message.js"
import type { Network } from "./Network.js"
import type { PeerId } from "./PeerId.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface SendOptions {
  /** The lane to send in; `"default"` when absent. Order holds per lane. */
  readonly lane?: string | undefined
  /**
   * How long the message may wait for its delivery (a positive duration; a number is milliseconds). Once it has
   * passed, the message is never handed to the destination's application: the sender's store removes it and
   * reports it (`MessagesExpired`), and the stream goes on without it. The receiver counts the time it has left
   * down on its own clock from the frame's arrival, so the clocks' settings do not matter; only the frame's time
   * on the wire goes uncounted. Absent, a message never expires.
   */
  readonly timeToLive?: Duration.DurationInput | undefined
}

/**
 * @since 0.3.0
 * @category models
 */
export interface PurgeOptions {
  /** Purge only this lane; every lane to the peer when absent. */
  readonly lane?: string | undefined
}

/**
 * Every way `send` can fail.
 *
 * @since 0.1.0
 * @category errors
 */
export type SendError =
  | SendToSelfError
  | PayloadTooLargeError
  | InvalidLaneError
  | InvalidTimeToLiveError
  | OutboxFullError
  | EngineClosedError
  | BackendError

/**
 * What the engine knows of a remote peer.
 *
 * @since 0.1.0
 * @category models
 */
export interface PeerStats {
  readonly peer: PeerId
  /** The transport reaches the peer. */
  readonly connected: boolean
  /** Connected and greeted: messages flow. */
  readonly linked: boolean
  /** The incarnation this peer's outbound streams to `peer` run under. */
  readonly incarnation: Incarnation
  readonly retransmitTimeoutMillis: number
  readonly smoothedRoundTripMillis: number | undefined
}

/**
 * One outbound stream (this peer → `peer`, `lane`).
 *
 * @since 0.1.0
 * @category models
 */
export interface OutboundStats {
  readonly peer: PeerId
  readonly lane: string
  readonly incarnation: Incarnation
  /** Stored and not yet acknowledged. */
  readonly pending: number
  /** Sent and not yet acknowledged; never more than the window. */
  readonly inFlight: number
  /** Every seq up to this one is acknowledged. */
  readonly ackedUpTo: number
  /** The highest seq allocated. */
  readonly lastSeq: number
  /** Data frames sent again in this run. */
  readonly retransmitted: number
  /** Messages that expired in the store, in this run. */
  readonly expired: number
  /** Messages purged by `purge`, in this run. */
  readonly purged: number
}

/**
 * One inbound stream (`peer` → this peer, `lane`).
 *
 * @since 0.1.0
 * @category models
 */
export interface InboundStats {
  readonly peer: PeerId
  readonly lane: string
  readonly incarnation: Incarnation
  /** Every seq up to this one was delivered. */
  readonly delivered: number
  /** Messages held in the reorder buffer; never more than the window. */
  readonly buffered: number
  /** Messages never handed to the application because they expired, here or at the sender, in this run. */
  readonly expired: number
  /** Messages the sender purged, in this run. */
  readonly purged: number
  /** Messages moved to dead letters (see `Delivery.DeliveryPolicy`), in this run. */
  readonly deadLettered: number
}

/**
 * A snapshot of the engine's state.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  readonly peers: ReadonlyArray<PeerStats>
  readonly outbound: ReadonlyArray<OutboundStats>
  readonly inbound: ReadonlyArray<InboundStats>
}

/**
 * The engine's API (the examples at the top of this module show `send`, `sendAll` and `drain`).
 *
 * - `send` resolves with the message's id once it is durably stored.
 * - `sendAll` stores several messages to one peer and lane in one step: all of them or, on failure, none. They keep
 *   their order, and no other message of the stream comes between them. The fast way to send many messages.
 * - `sendAndAwait` resolves once the destination has delivered it to its application and acknowledged it, and
 *   fails with `MessageDroppedError` if it expired or was purged first.
 * - `purge` removes what is pending toward a peer (or one lane of it) and returns how many messages it removed;
 *   the peer's streams go on past them, and `MessagesPurged` reports it.
 * - `forget` forgets a peer: it purges what is pending toward it (returning how many, as `purge` does) and deletes
 *   everything the store holds about it — its streams, seqs and receive state — except the dead letters it sent.
 *   This peer then uses a new incarnation toward it and greets it in a new session, so if it comes back, both
 *   resynchronise (`Resynchronised`) without a duplicate on its side; messages from it that were delivered here but
 *   whose acknowledgement had not reached it are delivered again.
 * - `deadLetters` lists, replays and purges the messages this peer gave up delivering (see
 *   `Delivery.DeliveryPolicy`). `replay` hands each one selected to the `Delivery` again, lowest id first, and
 *   removes it from the store with the same transaction once delivered; one that fails again stays, and the result
 *   lists it. Dead letters marked for replay while the engine was stopped (`intersession dead-letters replay`) are
 *   replayed when it starts.
 * - `drain` succeeds when everything sent is acknowledged, else fails with `DrainTimeoutError` listing what is
 *   pending; nothing is lost either way.
 * - `peers` holds the peers messages flow to now (connected and greeted), with its changes.
 * - `stats` is a snapshot per peer and stream; `events` streams what happens from the moment it is run.
 * - `closed` waits until the engine stops: it succeeds when the engine's scope closed, and fails with
 *   `EngineClosedError` (its `reason` and `cause` say why) when one of the engine's fibers ended, failed or died,
 *   which stops the whole engine. Then every call fails with that error, and `events` and `peers.changes` end with
 *   it; after an ordinary close they simply end.
 *
 * @since 0.1.0
 * @category tags
 */
export class ILM extends Context.Tag("@intersession/core/ILM")<ILM, {
  readonly localPeer: PeerId
  readonly send: (to: PeerId, payload: Uint8Array, options?: SendOptions) => Effect.Effect<MessageId, SendError>
  readonly sendAll: (
    to: PeerId,
    payloads: ReadonlyArray<Uint8Array>,
    options?: SendOptions
  ) => Effect.Effect<ReadonlyArray<MessageId>, SendError>
  readonly sendAndAwait: (
    to: PeerId,
    payload: Uint8Array,
    options?: SendOptions
  ) => Effect.Effect<MessageId, SendError | MessageDroppedError>
  readonly purge: (
    peer: PeerId,
    options?: PurgeOptions
  ) => Effect.Effect<number, InvalidLaneError | EngineClosedError | BackendError>
  readonly forget: (peer: PeerId) => Effect.Effect<number, ForgetSelfError | EngineClosedError | BackendError>
  readonly drain: (timeout: Duration.DurationInput) => Effect.Effect<void, DrainTimeoutError | EngineClosedError>
  readonly deadLetters: {
    readonly list: (
      filter?: DeadLetters.Filter & { readonly limit?: number | undefined }
    ) => Effect.Effect<ReadonlyArray<DeadLetter>, DeadLetters.InvalidFilterError | EngineClosedError | BackendError>
    readonly replay: (
      filter?: DeadLetters.Filter
    ) => Effect.Effect<DeadLetters.ReplayResult, DeadLetters.InvalidFilterError | EngineClosedError | BackendError>
    readonly purge: (
      filter?: DeadLetters.Filter
    ) => Effect.Effect<number, DeadLetters.InvalidFilterError | EngineClosedError | BackendError>
  }
  readonly peers: Subscribable.Subscribable<HashSet.HashSet<PeerId>, EngineClosedError>
  readonly stats: Effect.Effect<Stats>
  readonly events: Stream.Stream<IlmEvent, EngineClosedError>
  readonly closed: Effect.Effect<void, EngineClosedError>
}>() {}

/**
 * Starts an engine in the current scope: loads the store's state, then forks the frame reader, peer watcher,
 * appender, outbox pump, ack handler, ack sender, inbox reorderer, retransmission timer and expirer. They are supervised
 * together: if one ends, fails or dies, all stop and the API fails with `EngineClosedError`. Closing the scope
 * stops them all.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options?: IlmConfig.Options
): Effect.Effect<
  ILM["Type"],
  IlmConfig.InvalidConfigError | BackendError,
  Network | Backend | Delivery | Scope.Scope
> => Effect.flatMap(IlmConfig.make(options), internal.make)

/**
 * The engine as a layer, with the given settings over the defaults.
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
 * // A peer is the engine over a network, a backend and a delivery: swap those layers to change environment
 * // (TcpNetwork and SqliteBackend from @intersession/platform-node in production).
 * const peer = (hub: InMemoryNetwork.Hub, id: PeerId.PeerId) =>
 *   ILM.layer({ window: 256 }).pipe(
 *     Layer.provideMerge(Delivery.layerInbox()),
 *     Layer.provide(hub.layer(id)),
 *     Layer.provide(InMemoryBackend.layerFresh)
 *   )
 *
 * const program = Effect.gen(function*() {
 *   const hub = yield* InMemoryNetwork.make()
 *   const alice = Context.get(yield* Layer.build(peer(hub, PeerId.make("alice"))), ILM.ILM)
 *   const bob = Context.get(yield* Layer.build(peer(hub, PeerId.make("bob"))), Delivery.Inbox)
 *
 *   yield* alice.send(PeerId.make("bob"), new TextEncoder().encode("hello"))
 *   const message = yield* bob.take
 *   console.log(`${message.source} → ${message.destination}: ${new TextDecoder().decode(message.payload)}`)
 *   // alice → bob: hello
 * })
 *
 * Effect.runPromise(Effect.scoped(program))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options?: IlmConfig.Options
): Layer.Layer<ILM, IlmConfig.InvalidConfigError | BackendError, Network | Backend | Delivery> =>
  Layer.scoped(ILM, make(options))

/**
 * The engine as a layer, with settings read from a `Config` (by default {@link IlmConfig.config}, which reads
 * each setting from the environment with the documented default).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config<IlmConfig.Options> = IlmConfig.config
): Layer.Layer<
  ILM,
  ConfigError.ConfigError | IlmConfig.InvalidConfigError | BackendError,
  Network | Backend | Delivery
> => Layer.scoped(ILM, Effect.flatMap(config, make))
