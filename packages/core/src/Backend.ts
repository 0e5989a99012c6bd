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
 * The operations of a store, as `BackendError` names them: the `Backend` service's own, and the steps of opening a
 * store (`connect` to its server, `open` the store and take ownership of it, `migrate` its schema).
 *
 * @since 0.2.0
 * @category models
 */
export type BackendOperation =
  | "connect"
  | "open"
  | "migrate"
  | "outbound"
  | "append"
  | "read"
  | "acknowledge"
  | "setIncarnation"
  | "received"
  | "commitReceived"
  | "withTransaction"

/**
 * What went wrong, in one line: the first error along the `cause` chain that says it precisely. That is the driver's
 * own error, with its code (`SQLITE_FULL: database or disk is full`, PostgreSQL's SQLSTATE `57P01: terminating
 * connection due to administrator command`, `ECONNREFUSED: …`), or one of this module's store errors; wrappers such
 * as `@effect/sql`'s `SqlError` ("Failed to execute statement") are looked through. Without either, the innermost
 * error's message.
 */
const describeCause = (cause: unknown): string => {
  let innermost: string | undefined
  let current = cause
  for (let depth = 0; depth < 10 && typeof current === "object" && current !== null; depth++) {
    if (
      current instanceof StoreLostError || current instanceof StoreUnusableError || current instanceof StoreLockedError
    ) {
      return current.message
    }
    const code = "code" in current && typeof current.code === "string" && current.code !== "" ? current.code : undefined
    const message = "message" in current && typeof current.message === "string" && current.message !== ""
      ? current.message
      : undefined
    if (code !== undefined) {
      return message === undefined ? code : message.includes(code) ? message : `${code}: ${message}`
    }
    if (message !== undefined) innermost = message
    current = "cause" in current ? current.cause : undefined
  }
  return innermost ?? String(cause)
}

/**
 * A backend operation failed. The engine reports it to the caller that needs it (`send`, say) and keeps running;
 * it retries its own work once the backend answers again.
 *
 * `operation` names the operation; the message carries the store's reason, taken from `cause` (see
 * `describeCause`): `Backend operation append failed: SQLITE_FULL: database or disk is full`. `cause` is the error
 * as the driver gave it, for code that inspects it. An operation of a store this engine no longer owns fails with a
 * {@link StoreLostError} as its cause, and every later one too: see {@link isStoreLost}.
 *
 * @since 0.1.0
 * @category errors
 */
export class BackendError extends Data.TaggedError("BackendError")<{
  readonly operation: BackendOperation
  readonly cause: unknown
}> {
  override get message(): string {
    return `Backend operation ${this.operation} failed: ${describeCause(this.cause)}`
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
 * The store cannot be used, and opening it wrote nothing to it:
 *
 * - `NotADatabase`: the file is not a database of the store's kind (`SQLITE_NOTADB`);
 * - `Corrupt`: the database is damaged (`SQLITE_CORRUPT`, or an integrity check found faults; `detail` says which);
 * - `ReadOnly`: the store cannot be written: a read-only file or directory, a read-only file system, a server that
 *   runs read-only transactions or a standby;
 * - `NewerSchema`: a newer version of this library wrote it; `detail` names the store's newest migration and the
 *   newest this version knows.
 *
 * `cause` is the driver's error, where there is one; the message carries its reason.
 *
 * @since 0.2.0
 * @category errors
 */
export class StoreUnusableError extends Data.TaggedError("StoreUnusableError")<{
  readonly store: string
  readonly reason: "NotADatabase" | "Corrupt" | "ReadOnly" | "NewerSchema"
  readonly detail?: string | undefined
  readonly cause?: unknown
}> {
  override get message(): string {
    const what = {
      NotADatabase: "it is not a database",
      Corrupt: "it is corrupt",
      ReadOnly: "it cannot be written",
      NewerSchema: "a newer version of @intersession wrote it"
    }[this.reason]
    const detail = this.detail === undefined ? "" : `: ${this.detail}`
    const cause = this.cause === undefined ? "" : ` (${describeCause(this.cause)})`
    return `Store ${this.store} cannot be used, ${what}${detail}${cause}; nothing was written to it`
  }
}

/**
 * This engine no longer owns its store: the connection that held its lock ended (`LockLost`), or another engine
 * took the store over (`TakenOver`, seen by the fencing check of a write). From then on every operation of the
 * backend fails with a `BackendError` caused by this error, and no write of this engine reaches the store; stop
 * the engine, and start it again if the store is free.
 *
 * @since 0.2.0
 * @category errors
 */
export class StoreLostError extends Data.TaggedError("StoreLostError")<{
  readonly store: string
  readonly reason: "LockLost" | "TakenOver"
  readonly cause?: unknown
}> {
  override get message(): string {
    const why = this.reason === "LockLost"
      ? `the connection holding its lock ended${this.cause === undefined ? "" : ` (${describeCause(this.cause)})`}`
      : "another engine took it over"
    return `This engine no longer owns store ${this.store}: ${why}; every operation of it fails from now on`
  }
}

/**
 * Whether a backend failed because its engine no longer owns the store ({@link StoreLostError}): retrying is
 * useless, every later operation fails too.
 *
 * @since 0.2.0
 * @category refinements
 */
export const isStoreLost = (error: BackendError): boolean => error.cause instanceof StoreLostError

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
 * - `lost`, where ownership can lapse while the engine runs (a lock held by a connection that can end), fails once
 *   this engine no longer owns the store; the engine then stops, with that error as the reason. A store whose
 *   ownership cannot lapse leaves it out.
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
  readonly lost?: Effect.Effect<never, StoreLostError> | undefined
}>() {}
