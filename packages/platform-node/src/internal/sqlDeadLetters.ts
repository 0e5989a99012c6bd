/**
 * Dead letters of the SQL store: the messages its engine gave up delivering, a row each in `<prefix>dead_letters`
 * (see `4_dead_letters`), kept until the application replays or removes them.
 *
 * `commitReceived` stores them with the receive states that move their streams past them, in its one write (see
 * `store`); the operations here read, remove and mark them. Lists of ids run as statements of at most 1,024 ids each
 * (see `executeChunks`), so no list is too long for a driver's parameter limit.
 *
 * @internal
 */
import type * as SqlConnection from "@effect/sql/SqlConnection"
import { BackendError } from "@intersession/core/Backend"
import type * as BackendTypes from "@intersession/core/Backend"
import * as Incarnation from "@intersession/core/Incarnation"
import * as Lane from "@intersession/core/Lane"
import * as PeerId from "@intersession/core/PeerId"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import {
  bytes,
  type ChunkOptions,
  executeChunks,
  integerColumn,
  plainBytes,
  type Row,
  rowCounts,
  statementCount,
  type statementsOf,
  unexpectedRow
} from "./sqlStatements.js"

/** A write of the store, as its group commit runs it (see `makeGroupCommit`). @internal */
export type Write = <A>(
  operation: BackendTypes.BackendOperation,
  statements: (connection: SqlConnection.Connection) => Effect.Effect<A, unknown>,
  oneStatement: boolean
) => Effect.Effect<A, BackendError>

/** What the dead-letter operations need of the store. @internal */
export interface Store {
  readonly table: string
  readonly statements: ReturnType<typeof statementsOf>
  readonly write: Write
  /** Runs reads on the open transaction's connection, or on one reserved for them, once the store is still owned. */
  readonly read: <A>(
    f: (connection: SqlConnection.Connection) => Effect.Effect<A, unknown>
  ) => Effect.Effect<A, unknown>
}

/** PostgreSQL's `integer`, which `attempts` is. */
const maxAttempts = 2 ** 31 - 1

const invalid = (operation: BackendTypes.BackendOperation, detail: string) =>
  new BackendError({ operation, cause: new Error(detail) })

/**
 * The first dead letter of `letters` the store cannot hold, as `commitReceived`'s error: its seq and attempts are
 * whole numbers a column holds, and its time is a number (see `safeFloor`).
 *
 * @internal
 */
export const checkLetters = (letters: ReadonlyArray<BackendTypes.NewDeadLetter>): BackendError | undefined => {
  for (const letter of letters) {
    if (!Number.isSafeInteger(letter.seq)) return invalid("commitReceived", `a dead letter's seq must be an integer`)
    if (!Number.isSafeInteger(letter.attempts) || letter.attempts < 0 || letter.attempts > maxAttempts) {
      return invalid("commitReceived", `a dead letter's attempts must be an integer from 0 to ${maxAttempts}`)
    }
    if (Number.isNaN(letter.deadLetteredAt)) {
      return invalid(
        "commitReceived",
        `deadLetteredAt must be a time in milliseconds since the epoch, got ${letter.deadLetteredAt}`
      )
    }
  }
  return undefined
}

/**
 * A number rounded down and kept within the safe integers: a dead letter's time as stored (so a clock far off never
 * keeps a commit from succeeding, and the row reads back), and a query's limit and `afterId`.
 */
const safeFloor = (value: number) =>
  Math.max(Math.min(Math.floor(value), Number.MAX_SAFE_INTEGER), Number.MIN_SAFE_INTEGER)

/**
 * How `store` binds dead letters. An error message is text, which PostgreSQL cannot hold with a NUL character in it:
 * each becomes U+FFFD, on both dialects, so that a message never keeps a commit from succeeding.
 */
const storeOptions = (statements: Store["statements"]): ChunkOptions<BackendTypes.NewDeadLetter> => ({
  padded: false,
  text: statements.storeDeadLetters,
  bind: (letter, _, params) =>
    params.push(
      letter.peer,
      letter.lane,
      letter.incarnation,
      letter.seq,
      bytes(letter.payload),
      letter.error.includes("\u0000") ? letter.error.replaceAll("\u0000", "\uFFFD") : letter.error,
      letter.attempts,
      safeFloor(letter.deadLetteredAt)
    )
})

/**
 * The statements that store `letters` (checked by `checkLetters`), in the order given, so their ids increase in it;
 * `count` is how many statements they are.
 *
 * @internal
 */
export const store = (statements: Store["statements"], letters: ReadonlyArray<BackendTypes.NewDeadLetter>) => {
  const options = storeOptions(statements)
  return {
    count: statementCount(letters.length, options.padded, options.text),
    run: (connection: SqlConnection.Connection) => executeChunks(connection, letters, options)
  }
}

const isIncarnation = Schema.is(Incarnation.Incarnation)

/** A boolean column: PostgreSQL's `boolean`, or SQLite's 0 or 1 (a `bigint` with `SqlClient.SafeIntegers`). */
const booleanColumn = (value: unknown): boolean | undefined =>
  value === true || value === 1 || value === 1n
    ? true
    : value === false || value === 0 || value === 0n
    ? false
    : undefined

/** A row as `selectDeadLetters` reads it, checked by hand: a row the store did not write fails the read. */
const deadLetterOf = (table: string, row: Row): Effect.Effect<BackendTypes.DeadLetter, Error> => {
  const id = integerColumn(row.id)
  const incarnation = integerColumn(row.incarnation)
  const seq = integerColumn(row.seq)
  const attempts = integerColumn(row.attempts)
  const deadLetteredAt = integerColumn(row.dead_lettered_at)
  const replayRequested = booleanColumn(row.replay_requested)
  const { error, lane, payload, peer } = row
  if (
    id === undefined || !isIncarnation(incarnation) || seq === undefined || attempts === undefined ||
    deadLetteredAt === undefined || replayRequested === undefined || !PeerId.isPeerId(peer) || !Lane.isLane(lane) ||
    typeof error !== "string" || !(payload instanceof Uint8Array)
  ) {
    return Effect.fail(unexpectedRow(table, row))
  }
  return Effect.succeed({
    id,
    peer,
    lane,
    incarnation,
    seq,
    payload: plainBytes(payload),
    error,
    attempts,
    deadLetteredAt,
    replayRequested
  })
}

/** The ids of a list that can name a dead letter, each once, in increasing order: any other matches none. */
const idsOf = (ids: ReadonlyArray<number>): Array<number> =>
  Array.from(new Set(ids.filter((id) => Number.isSafeInteger(id) && id > 0))).sort((a, b) => a - b)

/** The dead-letter operations of the `Backend` service. @internal */
export const make = ({ read, statements, table, write }: Store) => {
  /**
   * The dead letters a query selects, lowest id first, at most `limit`: one statement, or with `ids` one per chunk
   * of them in increasing order, each for what the chunks before left of the limit, until it is reached.
   */
  const deadLetters = (query: BackendTypes.DeadLetterQuery) => {
    if (query.afterId !== undefined && Number.isNaN(query.afterId)) {
      return Effect.fail(invalid("deadLetters", "afterId must be a number, got NaN"))
    }
    if (!(query.limit >= 1)) return Effect.succeed([])
    const limit = safeFloor(query.limit)
    const afterId = query.afterId === undefined ? undefined : safeFloor(query.afterId)
    // With ids, afterId only leaves some of them out.
    const ids = query.ids === undefined
      ? undefined
      : idsOf(query.ids).filter((id) => afterId === undefined || id > afterId)
    if (ids !== undefined && ids.length === 0) return Effect.succeed([])
    const params: Array<unknown> = []
    if (query.peer !== undefined) params.push(query.peer)
    if (query.lane !== undefined) params.push(query.lane)
    if (ids === undefined && afterId !== undefined) params.push(afterId)
    const selection = {
      peer: query.peer !== undefined,
      lane: query.lane !== undefined,
      afterId: ids === undefined && afterId !== undefined,
      replayRequested: query.replayRequested
    }
    const select = (connection: SqlConnection.Connection): Effect.Effect<ReadonlyArray<Row>, unknown> => {
      if (ids === undefined) {
        return connection.execute(statements.selectDeadLetters({ ...selection, ids: 0 }), [...params, limit], undefined)
      }
      const rows: Array<Row> = []
      const chunks = rowCounts(ids.length, true)
      const from = (chunk: number, offset: number): Effect.Effect<ReadonlyArray<Row>, unknown> => {
        const count = chunks[chunk]
        if (count === undefined || rows.length >= limit) return Effect.succeed(rows)
        // A padded chunk repeats its last id, which selects no row twice.
        const chunkIds = Array.from({ length: count }, (_, i) => ids[Math.min(offset + i, ids.length - 1)])
        const text = statements.selectDeadLetters({ ...selection, ids: count })
        return Effect.flatMap(
          connection.execute(text, [...params, ...chunkIds, limit - rows.length], undefined),
          (chunkRows) => {
            for (const row of chunkRows) rows.push(row)
            return from(chunk + 1, offset + count)
          }
        )
      }
      return from(0, 0)
    }
    return read(select).pipe(
      Effect.flatMap((rows) => Effect.forEach(rows, (row) => deadLetterOf(table, row))),
      Effect.mapError((cause) => new BackendError({ operation: "deadLetters", cause }))
    )
  }

  /** A write over a list of ids, a statement per chunk of them, that returns how many rows its statements returned. */
  const writeIds = (
    operation: BackendTypes.BackendOperation,
    list: ReadonlyArray<number>,
    text: ChunkOptions<number>["text"]
  ): Effect.Effect<number, BackendError> => {
    const ids = idsOf(list)
    if (ids.length === 0) return Effect.succeed(0)
    const options: ChunkOptions<number> = { padded: true, text, bind: (id, _, params) => params.push(id) }
    return write(
      operation,
      (connection) => Effect.map(executeChunks(connection, ids, options), (rows) => rows.length),
      statementCount(ids.length, true, text) === 1
    )
  }

  return {
    deadLetters,
    /** Deletes the dead letters of `ids` and returns how many it deleted. */
    removeDeadLetters: (ids: ReadonlyArray<number>) => writeIds("removeDeadLetters", ids, statements.removeDeadLetters),
    /**
     * Marks (or unmarks) the dead letters of `ids` for replay, and returns how many there are: every dead letter of
     * the ids counts, whether or not it was marked so already.
     */
    requestReplay: (ids: ReadonlyArray<number>, requested: boolean) =>
      writeIds("requestReplay", ids, statements.requestReplay(requested))
  }
}
