/**
 * Durable storage for outbound messages and inbound receive state.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as Effect from "effect/Effect"
import type { Incarnation } from "./Incarnation.js"
import type { Lane } from "./Lane.js"
import type { PeerId } from "./PeerId.js"

/**
 * A backend operation failed. The engine reports it to the caller that needs it (`send`, say) and keeps running;
 * it retries its own work once the backend answers again.
 *
 * @since 0.1.0
 * @category errors
 */
export class BackendError extends Data.TaggedError("BackendError")<{
  readonly operation: string
  readonly cause: unknown
}> {
  override get message(): string {
    const cause = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `Backend operation ${this.operation} failed: ${cause}`
  }
}

/**
 * Another live engine owns the store. Only one engine may run on a store at a time; stop the other one first.
 *
 * @since 0.1.0
 * @category errors
 */
export class StoreLockedError extends Data.TaggedError("StoreLockedError")<{
  readonly store: string
}> {
  override get message(): string {
    return `Store ${this.store} is owned by another running engine; stop it before starting a new one`
  }
}

/**
 * A message to store for sending.
 *
 * @since 0.1.0
 * @category models
 */
export interface OutboundMessage {
  readonly peer: PeerId
  readonly lane: Lane
  readonly payload: Uint8Array
}

/**
 * A stored outbound message. `run` identifies the engine run that allocated its seq.
 *
 * @since 0.1.0
 * @category models
 */
export interface StoredMessage extends OutboundMessage {
  readonly seq: number
  readonly run: number
}

/**
 * Where a run's seqs begin in a stream: seqs from `from` up to the next entry's `from` were allocated by `run`.
 *
 * Every engine start is a new run with a random id, so a seq and its run name one message even when a store was
 * restored from a backup and reuses seqs: that is how an engine tells its peer's record from its own history.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunStart {
  readonly run: number
  readonly from: number
}

/**
 * The summary of one outbound stream: `firstPending` is its lowest stored seq (equal to `nextSeq` when nothing is
 * pending) and `nextSeq` the seq the next message will get. Pending seqs are always `firstPending … nextSeq - 1`.
 * `runs` lists the runs of the pending messages, each with its lowest pending seq, in seq order.
 *
 * @since 0.1.0
 * @category models
 */
export interface OutboundStream {
  readonly peer: PeerId
  readonly lane: Lane
  readonly firstPending: number
  readonly nextSeq: number
  readonly runs: ReadonlyArray<RunStart>
}

/**
 * The incarnation this store uses toward one peer, where it differs from the store's own.
 *
 * @since 0.1.0
 * @category models
 */
export interface PeerIncarnation {
  readonly peer: PeerId
  readonly incarnation: Incarnation
}

/**
 * What the store knows of its outbound side: every stream that ever allocated a seq, and per-peer incarnations.
 *
 * @since 0.1.0
 * @category models
 */
export interface OutboundState {
  readonly streams: ReadonlyArray<OutboundStream>
  readonly incarnations: ReadonlyArray<PeerIncarnation>
}

/**
 * Receive state of one inbound stream: the source's incarnation, the highest seq delivered under it, and the source
 * runs of the last seqs delivered (the engine keeps a few; the store keeps them as given).
 *
 * @since 0.1.0
 * @category models
 */
export interface ReceiveState {
  readonly peer: PeerId
  readonly lane: Lane
  readonly incarnation: Incarnation
  readonly delivered: number
  readonly runs: ReadonlyArray<RunStart>
}

/**
 * Acknowledges a stream up to a seq: the store may forget every message of it up to `upTo`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Acknowledgement {
  readonly peer: PeerId
  readonly lane: Lane
  readonly upTo: number
}

/**
 * The store behind one engine (protocol.md §4 in the repository). Every operation works on batches and none loads a whole backlog.
 *
 * - `incarnation` is created once when the store is first initialised and never changes.
 * - `append` allocates the next seq of each message's stream and stores it with the engine's `run`, all in one
 *   atomic step, and returns the seqs in the order given.
 * - `read` returns up to `limit` pending messages of a stream with seq `>= fromSeq`, in seq order.
 * - `acknowledge` deletes messages up to a seq; seqs only ever grow, so a lower `upTo` than before is a no-op.
 * - `withTransaction` runs an effect in one transaction where the store has them (a nested call is a savepoint),
 *   and runs it as is where it does not. The engine runs a delivery and the commit of its receive state in one.
 * - `transactional` says which: `true` when a failure inside `withTransaction` rolls back what the effect wrote.
 *   The engine then delivers again after a failed commit; otherwise it keeps the deliveries and retries the commit.
 *
 * A layer that provides a `Backend` takes ownership of its store and fails with {@link StoreLockedError} while
 * another owner lives; closing the layer's scope releases it.
 *
 * @since 0.1.0
 * @category tags
 */
export class Backend extends Context.Tag("@intersession/core/Backend")<Backend, {
  readonly incarnation: Incarnation
  readonly transactional: boolean
  readonly outbound: Effect.Effect<OutboundState, BackendError>
  readonly append: (
    messages: ReadonlyArray<OutboundMessage>,
    run: number
  ) => Effect.Effect<ReadonlyArray<number>, BackendError>
  readonly read: (
    peer: PeerId,
    lane: Lane,
    fromSeq: number,
    limit: number
  ) => Effect.Effect<ReadonlyArray<StoredMessage>, BackendError>
  readonly acknowledge: (acks: ReadonlyArray<Acknowledgement>) => Effect.Effect<void, BackendError>
  readonly setIncarnation: (peer: PeerId, incarnation: Incarnation) => Effect.Effect<void, BackendError>
  readonly received: Effect.Effect<ReadonlyArray<ReceiveState>, BackendError>
  readonly commitReceived: (states: ReadonlyArray<ReceiveState>) => Effect.Effect<void, BackendError>
  readonly withTransaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | BackendError, R>
}>() {}
