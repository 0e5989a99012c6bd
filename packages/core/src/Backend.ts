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
  | "expire"
  | "purge"
  | "forget"
  | "read"
  | "acknowledge"
  | "setIncarnation"
  | "received"
  | "commitReceived"
  | "deadLetters"
  | "removeDeadLetters"
  | "requestReplay"
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
  /**
   * When the message expires, in milliseconds since the epoch on this peer's clock; absent, it never does. An
   * expired message is never handed to the destination's application; {@link Backend} `expire` removes it.
   */
  readonly expiresAt?: number | undefined
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
 * The seqs `from … to` of a stream, both included.
 *
 * @since 0.3.0
 * @category models
 */
export interface SeqRange {
  readonly from: number
  readonly to: number
}

/**
 * Seqs `from … to` of a stream that were all allocated by `run`.
 *
 * @since 0.3.0
 * @category models
 */
export interface RunRange extends SeqRange {
  readonly run: number
}

/**
 * Why seqs were dropped: they expired, or the application purged them.
 *
 * @since 0.3.0
 * @category models
 */
export type DropReason = "expired" | "purged"

/**
 * Dropped seqs `from … to` of one run, and why: `"expired"` for the seqs `expire` removed, `"purged"` for those
 * `purge` removed.
 *
 * @since 0.3.0
 * @category models
 */
export interface DroppedRange extends RunRange {
  readonly reason: DropReason
}

/**
 * Messages of one outbound stream that a store removed without an acknowledgement (they expired, or the
 * application purged them): their seqs as ranges in seq order, each as long as it can be while one run allocated
 * all of it. They carry no reason: the operation that returns them (`expire` or `purge`) says why.
 *
 * @since 0.3.0
 * @category models
 */
export interface DroppedMessages {
  readonly peer: PeerId
  readonly lane: Lane
  readonly seqs: ReadonlyArray<RunRange>
}

/**
 * The summary of one outbound stream: `firstPending` is its lowest stored seq (equal to `nextSeq` when nothing is
 * stored) and `nextSeq` the seq the next message will get. `runs` lists the runs of the stored and the dropped
 * seqs, each with its lowest such seq, in seq order.
 *
 * `dropped` lists the seqs that `expire` or `purge` removed and that no acknowledgement has covered yet, in seq
 * order, each range with the reason it was dropped for (which the store keeps across reopening). A range is as long
 * as it can be while one run allocated all of it and one reason dropped all of it: ranges that continue each other
 * are joined only when both their run and their reason match, whichever operations dropped them. The stream's seqs
 * above its last acknowledgement are exactly its stored messages and these: the engine tells the destination to skip
 * them, and why, so that a removed message is never taken for a lost one. The last acknowledgement is therefore
 * `min(firstPending, dropped[0].from) - 1`.
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
  readonly dropped: ReadonlyArray<DroppedRange>
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
 * Acknowledges a stream up to a seq: the store may forget every message of it up to `upTo`, and every dropped seq.
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
 * A message its receiver gave up delivering: its `Delivery` failed as many times as the lane's delivery policy
 * allows, or failed for good (`DeliveryError` with `permanent`). The receiver's store keeps it, with why and when,
 * until the application replays or purges it; its stream went on past it.
 *
 * `peer`, `lane`, `incarnation` and `seq` say which message it was (`peer` is its sender); `error` is the last
 * failure's message, `attempts` how many deliveries were tried and `deadLetteredAt` when it was moved, in
 * milliseconds since the epoch. `id` is given by the store, increasing in the order dead letters were stored.
 * `replayRequested` marks a dead letter to be delivered again when an engine next starts on the store.
 *
 * @since 0.3.0
 * @category models
 */
export interface DeadLetter {
  readonly id: number
  readonly peer: PeerId
  readonly lane: Lane
  readonly incarnation: Incarnation
  readonly seq: number
  readonly payload: Uint8Array
  readonly error: string
  readonly attempts: number
  readonly deadLetteredAt: number
  readonly replayRequested: boolean
}

/**
 * A dead letter to store: the store gives it its `id`, and it is not marked for replay.
 *
 * @since 0.3.0
 * @category models
 */
export type NewDeadLetter = Omit<DeadLetter, "id" | "replayRequested">

/**
 * Which dead letters a store operation applies to: every field given must match (`ids` lists the ones wanted),
 * and those with an id above `afterId`, which is how a caller pages through them. `limit` bounds how many are
 * returned, lowest id first.
 *
 * @since 0.3.0
 * @category models
 */
export interface DeadLetterQuery {
  readonly peer?: PeerId | undefined
  readonly lane?: Lane | undefined
  readonly ids?: ReadonlyArray<number> | undefined
  readonly replayRequested?: boolean | undefined
  readonly afterId?: number | undefined
  readonly limit: number
}

/**
 * The store behind one engine (protocol.md §4 in the repository). Every operation works on batches and none loads a whole backlog.
 *
 * - `incarnation` is created once when the store is first initialised and never changes.
 * - `append` allocates the next seq of each message's stream and stores it with the engine's `run`, all in one
 *   atomic step, and returns the seqs in the order given.
 * - `append` stores each message's `expiresAt` when it has one.
 * - `read` returns up to `limit` stored messages of a stream with seq `>= fromSeq`, in seq order, with their
 *   `expiresAt`. A dropped seq leaves a hole: the seqs returned need not follow each other.
 * - `acknowledge` deletes messages and dropped ranges up to a seq; seqs only ever grow, so a lower `upTo` than
 *   before is a no-op.
 * - `expire` removes up to `limit` stored messages whose `expiresAt` is at or before `now` (any of them, wherever
 *   they are in their streams), records their seqs as dropped for `"expired"`, and returns them; fewer than `limit`
 *   means none is left. The engine calls it again while it returns `limit`.
 * - `purge` removes every stored message to `peer`, or only those of `lane` when it is given, records their seqs as
 *   dropped for `"purged"`, and returns them.
 * - `forget` deletes everything the store holds about `peer` but its dead letters — the streams to it with their
 *   messages, seqs and dropped ranges, the receive state of its streams — and sets `incarnation` as the one this
 *   store uses toward it, all in one atomic step.
 * - `commitReceived` stores the receive state of each stream given, and the dead letters given with it, in one
 *   atomic step: a message moved to dead letters is never both kept there and delivered again, nor lost.
 * - `deadLetters` returns the dead letters the query selects, lowest id first; `removeDeadLetters` deletes those of
 *   the ids given and says how many it deleted; `requestReplay` marks (or with `false` unmarks) those of the ids
 *   given for replay and says how many it changed.
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
  readonly expire: (now: number, limit: number) => Effect.Effect<ReadonlyArray<DroppedMessages>, BackendError>
  readonly purge: (peer: PeerId, lane: Lane | undefined) => Effect.Effect<ReadonlyArray<DroppedMessages>, BackendError>
  readonly setIncarnation: (peer: PeerId, incarnation: Incarnation) => Effect.Effect<void, BackendError>
  readonly forget: (peer: PeerId, incarnation: Incarnation) => Effect.Effect<void, BackendError>
  readonly received: Effect.Effect<ReadonlyArray<ReceiveState>, BackendError>
  readonly commitReceived: (
    states: ReadonlyArray<ReceiveState>,
    deadLetters?: ReadonlyArray<NewDeadLetter>
  ) => Effect.Effect<void, BackendError>
  readonly deadLetters: (query: DeadLetterQuery) => Effect.Effect<ReadonlyArray<DeadLetter>, BackendError>
  readonly removeDeadLetters: (ids: ReadonlyArray<number>) => Effect.Effect<number, BackendError>
  readonly requestReplay: (ids: ReadonlyArray<number>, requested: boolean) => Effect.Effect<number, BackendError>
  readonly withTransaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | BackendError, R>
  readonly lost?: Effect.Effect<never, StoreLostError> | undefined
}>() {}
