/**
 * The engine: reliable, ordered messaging between peers across disconnects, crashes and restarts.
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
import type { Backend, BackendError } from "./Backend.js"
import type { Delivery } from "./Delivery.js"
import * as IlmConfig from "./IlmConfig.js"
import type {
  DrainTimeoutError,
  EngineClosedError,
  InvalidLaneError,
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
 * The engine's API.
 *
 * - `send` resolves with the message's id once it is durably stored.
 * - `sendAll` stores several messages to one peer and lane in one step: all of them or, on failure, none. They keep
 *   their order, and no other message of the stream comes between them. The fast way to send many messages.
 * - `sendAndAwait` resolves once the destination has delivered it to its application and acknowledged it.
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
  ) => Effect.Effect<MessageId, SendError>
  readonly drain: (timeout: Duration.DurationInput) => Effect.Effect<void, DrainTimeoutError | EngineClosedError>
  readonly peers: Subscribable.Subscribable<HashSet.HashSet<PeerId>, EngineClosedError>
  readonly stats: Effect.Effect<Stats>
  readonly events: Stream.Stream<IlmEvent, EngineClosedError>
  readonly closed: Effect.Effect<void, EngineClosedError>
}>() {}

/**
 * Starts an engine in the current scope: loads the store's state, then forks the frame reader, peer watcher,
 * appender, outbox pump, ack handler, ack sender, inbox reorderer and retransmission timer. They are supervised
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
