import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlConnection from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import { Backend, BackendError, StoreLockedError } from "@intersession/core/Backend"
import type * as BackendTypes from "@intersession/core/Backend"
import * as Incarnation from "@intersession/core/Incarnation"
import * as Lane from "@intersession/core/Lane"
import * as PeerId from "@intersession/core/PeerId"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Queue from "effect/Queue"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"

/** @internal */
export const defaultTablePrefix = "intersession_"

/** Lower-case so PostgreSQL needs no quoting to find them; short enough that every derived name fits 63 bytes. */
const validPrefix = /^[a-z_][a-z0-9_]{0,39}$/

/** Most rows one multi-row statement carries: 1,000 rows of 5 columns stay far below both drivers' parameter limits. */
const rowsPerStatement = 1000

interface Tables {
  readonly migrations: string
  readonly store: string
  readonly streams: string
  readonly messages: string
  readonly incarnations: string
  readonly received: string
}

const tablesOf = (prefix: string): Tables => ({
  migrations: `${prefix}migrations`,
  store: `${prefix}store`,
  streams: `${prefix}outbound_streams`,
  messages: `${prefix}outbound_messages`,
  incarnations: `${prefix}peer_incarnations`,
  received: `${prefix}received`
})

// --- row schemas -------------------------------------------------------------------------------------------------

/**
 * An integer column as a driver returns it: a number (SQLite), a decimal string (PostgreSQL's `bigint`) or a
 * `bigint` (SQLite with `SqlClient.SafeIntegers`). Every value the store writes is a safe integer.
 */
const Integer = Schema.Union(
  Schema.Int,
  Schema.compose(Schema.NumberFromString, Schema.Int),
  Schema.transformOrFail(Schema.BigIntFromSelf, Schema.Int, {
    strict: true,
    decode: (value, _, ast) => {
      const number = Number(value)
      return Number.isSafeInteger(number)
        ? ParseResult.succeed(number)
        : ParseResult.fail(new ParseResult.Type(ast, value, "not a safe integer"))
    },
    encode: (value) => ParseResult.succeed(BigInt(value))
  })
)

const IncarnationColumn = Schema.compose(Integer, Incarnation.Incarnation)

/** Run starts of a receive state, stored as compact JSON: `[[run, from], …]`. */
const RunsColumn = Schema.parseJson(Schema.Array(Schema.Tuple(Integer, Integer)))

const StoreRow = Schema.Struct({ incarnation: IncarnationColumn })
const StreamRow = Schema.Struct({ peer: PeerId.PeerId, lane: Lane.Lane, next_seq: Integer, first_pending: Integer })
const AllocationRow = Schema.Struct({ peer: Schema.String, lane: Schema.String, next_seq: Integer })
const RunStartRow = Schema.Struct({ peer: Schema.String, lane: Schema.String, seq: Integer, run: Integer })
const MessageRow = Schema.Struct({ seq: Integer, run: Integer, payload: Schema.Uint8ArrayFromSelf })
const IncarnationRow = Schema.Struct({ peer: PeerId.PeerId, incarnation: IncarnationColumn })
const ReceivedRow = Schema.Struct({
  peer: PeerId.PeerId,
  lane: Lane.Lane,
  incarnation: IncarnationColumn,
  delivered: Integer,
  runs: RunsColumn
})

const decodeRows = <A, I>(schema: Schema.Schema<A, I>) => Schema.decodeUnknown(Schema.Array(schema))

// --- helpers -----------------------------------------------------------------------------------------------------

/** One key per stream; the length prefix keeps ("ab", "c") and ("a", "bc") apart. */
const streamKey = (peer: string, lane: string) => `${peer.length}:${peer}${lane}`

const chunks = <A>(items: ReadonlyArray<A>, size: number): Array<ReadonlyArray<A>> => {
  const result: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) result.push(items.slice(i, i + size))
  return result
}

/** Binds a payload as bytes without copying it; both drivers take a `Buffer` as a BLOB / `bytea`. */
const bytes = (payload: Uint8Array): Buffer => Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)

/** A driver's `Buffer` seen as a plain `Uint8Array` over the same memory, so `slice` copies as callers expect. */
const plainBytes = (payload: Uint8Array): Uint8Array =>
  payload.constructor === Uint8Array ? payload : new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength)

const failWith = (operation: string) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, BackendError, R> =>
  Effect.mapError(effect, (cause) => new BackendError({ operation, cause }))

/**
 * The connection of a transaction this backend opened. Nested transactions on it are savepoints opened only just
 * before their first statement: the engine runs each delivered message in one, and a delivery that writes nothing
 * needs none. (@effect/sql's own nested transaction would also prepare its statement and open a span each time.)
 */
class LazySavepoints implements SqlConnection.Connection {
  /** The nested transactions running now, outermost first; `open` once their savepoint exists. */
  private readonly nesting: Array<{ open: boolean }> = []

  constructor(private readonly connection: SqlConnection.Connection) {}

  /** Opens the savepoints of the nested transactions that have none yet, outermost first. */
  private readonly opening: Effect.Effect<void, SqlError> = Effect.suspend(() => {
    const closed = this.nesting.filter((level) => !level.open)
    if (closed.length === 0) return Effect.void
    return Effect.forEach(
      closed,
      (level) =>
        Effect.map(this.connection.execute("SAVEPOINT intersession", [], undefined), () => {
          level.open = true
        }),
      { discard: true }
    )
  })

  readonly execute: SqlConnection.Connection["execute"] = (sql, params, transform) =>
    Effect.zipRight(this.opening, this.connection.execute(sql, params, transform))
  readonly executeRaw: SqlConnection.Connection["executeRaw"] = (sql, params) =>
    Effect.zipRight(this.opening, this.connection.executeRaw(sql, params))
  readonly executeStream: SqlConnection.Connection["executeStream"] = (sql, params, transform) =>
    Stream.unwrap(Effect.as(this.opening, this.connection.executeStream(sql, params, transform)))
  readonly executeValues: SqlConnection.Connection["executeValues"] = (sql, params) =>
    Effect.zipRight(this.opening, this.connection.executeValues(sql, params))
  readonly executeUnprepared: SqlConnection.Connection["executeUnprepared"] = (sql, params, transform) =>
    Effect.zipRight(this.opening, this.connection.executeUnprepared(sql, params, transform))

  /** Runs `effect` as a nested transaction. */
  nested<A, E, R, E2>(
    effect: Effect.Effect<A, E, R>,
    statementError: (cause: SqlError) => E2
  ): Effect.Effect<A, E | E2, R> {
    return Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        const level = { open: false }
        this.nesting.push(level)
        return Effect.flatMap(Effect.exit(restore(effect)), (exit) => {
          this.nesting.pop()
          return level.open ? closeSavepoint(this.connection, exit, statementError) : exit
        })
      })
    )
  }
}

/** Runs `effect` in a savepoint opened at once: on the connection of a transaction this backend did not open. */
const inSavepoint = <A, E, R, E2>(
  connection: SqlConnection.Connection,
  effect: Effect.Effect<A, E, R>,
  statementError: (cause: SqlError) => E2
): Effect.Effect<A, E | E2, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.zipRight(
      Effect.mapError(connection.execute("SAVEPOINT intersession", [], undefined), statementError),
      Effect.flatMap(Effect.exit(restore(effect)), (exit) => closeSavepoint(connection, exit, statementError))
    )
  )

/** Releases a savepoint after its effect succeeded, or rolls back to it first; then ends as the effect did. */
const closeSavepoint = <A, E, E2>(
  connection: SqlConnection.Connection,
  exit: Exit.Exit<A, E>,
  statementError: (cause: SqlError) => E2
): Effect.Effect<A, E | E2> => {
  const run = (statement: string) => Effect.mapError(connection.execute(statement, [], undefined), statementError)
  return Exit.isSuccess(exit)
    ? Effect.zipRight(run("RELEASE SAVEPOINT intersession"), exit)
    : Effect.zipRight(
      Effect.zipRight(run("ROLLBACK TO SAVEPOINT intersession"), run("RELEASE SAVEPOINT intersession")),
      // A failure made inside the outer transaction's span carries it; the caller gets its own value.
      Effect.failCause(Cause.map(exit.cause, Cause.originalError))
    )
}

/** A nested transaction on the open transaction's connection: lazily where this backend opened it. */
const nestedTransaction = <A, E, R, E2>(
  connection: SqlConnection.Connection,
  effect: Effect.Effect<A, E, R>,
  statementError: (cause: SqlError) => E2
): Effect.Effect<A, E | E2, R> =>
  connection instanceof LazySavepoints
    ? connection.nested(effect, statementError)
    : inSavepoint(connection, effect, statementError)

/** A failure of the effect given to `withTransaction`, kept apart from the transaction's own errors. */
class EffectFailure<E> {
  constructor(readonly error: E) {}
}

const errorCode = (error: unknown): string | undefined => {
  const cause = error instanceof SqlError ? error.cause : error
  return typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string"
    ? cause.code
    : undefined
}

/** SQLite refuses a lock another connection holds with `SQLITE_BUSY` (another connection or process). */
const isSqliteBusy = (error: unknown) => {
  const code = errorCode(error)
  return code !== undefined && (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED"))
}

// --- ownership ---------------------------------------------------------------------------------------------------

/**
 * Stores owned in this process, per client: a second owner through the same client shares its connection, so the
 * database's own lock cannot tell them apart.
 */
const owners = new WeakMap<SqlClient.SqlClient, Set<string>>()

const ownInProcess = (client: SqlClient.SqlClient, prefix: string, store: string) =>
  Effect.acquireRelease(
    Effect.suspend(() => {
      let owned = owners.get(client)
      if (owned === undefined) {
        owned = new Set()
        owners.set(client, owned)
      }
      if (owned.has(prefix)) return Effect.fail(new StoreLockedError({ store }))
      owned.add(prefix)
      return Effect.void
    }),
    () => Effect.sync(() => owners.get(client)?.delete(prefix))
  )

/**
 * Takes SQLite's lock on the database file for as long as the connection lives: exclusive locking mode keeps every
 * lock a connection takes, and `BEGIN EXCLUSIVE` takes the write lock now. Another connection, in this process or
 * another, is refused at once (`busy_timeout = 0`) until this one closes or its process dies.
 *
 * @internal
 */
export const lockSqlite = (sql: SqlClient.SqlClient, store: string) =>
  Effect.gen(function*() {
    yield* sql.unsafe("PRAGMA busy_timeout = 0")
    yield* sql.unsafe("PRAGMA locking_mode = EXCLUSIVE")
    yield* Effect.scoped(Effect.flatMap(sql.reserve, (connection) =>
      Effect.zipRight(
        connection.executeUnprepared("BEGIN EXCLUSIVE", [], undefined),
        connection.executeUnprepared("COMMIT", [], undefined)
      )))
  }).pipe(
    Effect.mapError((error): StoreLockedError | BackendError =>
      isSqliteBusy(error) ? new StoreLockedError({ store }) : new BackendError({ operation: "open", cause: error })
    )
  )

/**
 * Takes a session-level advisory lock, keyed by the schema and table prefix, on a connection reserved for the
 * scope; it is released when the scope closes, and by the server when the session ends.
 */
const lockPg = (sql: SqlClient.SqlClient, prefix: string, store: string) =>
  Effect.gen(function*() {
    const connection = yield* failWith("open")(sql.reserve)
    const key = `intersession/${prefix}`
    const lockId = "hashtextextended(coalesce(current_schema(), '') || '/' || $1, 0)"
    const locked = yield* Effect.acquireRelease(
      failWith("open")(connection.execute(`SELECT pg_try_advisory_lock(${lockId}) AS locked`, [key], undefined)).pipe(
        Effect.map((rows) => rows[0]?.locked === true)
      ),
      (locked) =>
        locked
          ? Effect.ignore(connection.execute(`SELECT pg_advisory_unlock(${lockId})`, [key], undefined))
          : Effect.void
    )
    if (!locked) return yield* new StoreLockedError({ store })
  })

// --- schema ------------------------------------------------------------------------------------------------------

const migrations = (sql: SqlClient.SqlClient, tables: Tables) => {
  const store = sql(tables.store)
  const streams = sql(tables.streams)
  const messages = sql(tables.messages)
  const incarnations = sql(tables.incarnations)
  const received = sql(tables.received)
  return Migrator.fromRecord({
    "1_create_store": sql.onDialectOrElse({
      pg: () =>
        Effect.all([
          sql`CREATE TABLE ${store} (
            id integer PRIMARY KEY CHECK (id = 1),
            incarnation bigint NOT NULL
          )`,
          sql`CREATE TABLE ${streams} (
            peer text NOT NULL,
            lane text NOT NULL,
            next_seq bigint NOT NULL,
            first_pending bigint NOT NULL,
            PRIMARY KEY (peer, lane)
          )`,
          sql`CREATE TABLE ${messages} (
            peer text NOT NULL,
            lane text NOT NULL,
            seq bigint NOT NULL,
            run bigint NOT NULL,
            payload bytea NOT NULL,
            PRIMARY KEY (peer, lane, seq)
          )`,
          sql`CREATE TABLE ${incarnations} (
            peer text PRIMARY KEY,
            incarnation bigint NOT NULL
          )`,
          sql`CREATE TABLE ${received} (
            peer text NOT NULL,
            lane text NOT NULL,
            incarnation bigint NOT NULL,
            delivered bigint NOT NULL,
            runs text NOT NULL,
            PRIMARY KEY (peer, lane)
          )`
        ], { discard: true }),
      orElse: () =>
        Effect.all([
          sql`CREATE TABLE ${store} (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            incarnation INTEGER NOT NULL
          )`,
          sql`CREATE TABLE ${streams} (
            peer TEXT NOT NULL,
            lane TEXT NOT NULL,
            next_seq INTEGER NOT NULL,
            first_pending INTEGER NOT NULL,
            PRIMARY KEY (peer, lane)
          ) WITHOUT ROWID`,
          // A rowid table: payloads can be large, and SQLite keeps large rows best outside the key's b-tree.
          sql`CREATE TABLE ${messages} (
            peer TEXT NOT NULL,
            lane TEXT NOT NULL,
            seq INTEGER NOT NULL,
            run INTEGER NOT NULL,
            payload BLOB NOT NULL,
            PRIMARY KEY (peer, lane, seq)
          )`,
          sql`CREATE TABLE ${incarnations} (
            peer TEXT PRIMARY KEY NOT NULL,
            incarnation INTEGER NOT NULL
          ) WITHOUT ROWID`,
          sql`CREATE TABLE ${received} (
            peer TEXT NOT NULL,
            lane TEXT NOT NULL,
            incarnation INTEGER NOT NULL,
            delivered INTEGER NOT NULL,
            runs TEXT NOT NULL,
            PRIMARY KEY (peer, lane)
          ) WITHOUT ROWID`
        ], { discard: true })
    })
  })
}

/** Runs the store's migrations. The migrator turns a failed migration into a defect; this makes it a typed error. */
const migrate = (sql: SqlClient.SqlClient, tables: Tables) =>
  Migrator.make({})({ loader: migrations(sql, tables), table: tables.migrations }).pipe(
    Effect.provideService(SqlClient.SqlClient, sql),
    failWith("migrate"),
    Effect.catchSomeDefect((defect) =>
      defect instanceof Migrator.MigrationError || defect instanceof SqlError
        ? Option.some(Effect.fail(new BackendError({ operation: "migrate", cause: defect })))
        : Option.none()
    )
  )

// --- group commit ------------------------------------------------------------------------------------------------

/** One caller's write, waiting for the writer. */
interface Write {
  readonly operation: string
  /** False once the caller stopped waiting (it was interrupted): its write is then skipped. */
  readonly waiting: Effect.Effect<boolean>
  /** Runs the caller's statements in the writer's transaction; gives back how to answer the caller once committed. */
  readonly run: Effect.Effect<Effect.Effect<void>, unknown>
  readonly fail: (error: BackendError) => Effect.Effect<void>
}

const storeClosed = (operation: string) => new BackendError({ operation, cause: new Error("the store is closed") })

/**
 * Group commit: writes made outside a transaction go to a single writer fiber, which runs every write waiting in
 * one transaction, in arrival order, and then answers each caller. There is no timer: what arrives while a
 * transaction runs goes in the next one. If the transaction fails, every write in it fails with `BackendError` and
 * none stays applied, as if each had failed its own transaction.
 *
 * A write made inside an open transaction (`withTransaction`, marked by @effect/sql's `TransactionConnection` in
 * the fiber's context) runs at once on that transaction's connection, in a savepoint, so it commits or rolls back
 * with it. Deferring it would break that atomicity, and on SQLite, whose single connection the open transaction
 * holds, it would deadlock.
 */
const makeGroupCommit = (sql: SqlClient.SqlClient) =>
  Effect.gen(function*() {
    const writes = yield* Queue.unbounded<Write>()
    let closed = false

    // Fails whatever still waits once the writer has stopped (finalizers run in reverse: this one after the writer's
    // interruption), and every later write: callers get an error rather than wait forever.
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closed = true
        return Effect.flatMap(
          Queue.takeAll(writes),
          (rest) => Effect.forEach(rest, (write) => write.fail(storeClosed(write.operation)), { discard: true })
        )
      })
    )

    const commitBatch = (batch: Iterable<Write>) =>
      // Uninterruptible but for the transaction itself, so the callers are answered even when the scope closes.
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const live = yield* Effect.filter(batch, (write) => write.waiting)
          if (live.length === 0) return
          const exit = yield* Effect.exit(restore(sql.withTransaction(Effect.forEach(live, (write) => write.run))))
          if (Exit.isSuccess(exit)) {
            yield* Effect.all(exit.value, { discard: true })
            return
          }
          // A failed statement, a failed COMMIT (a defect in @effect/sql) or the writer's interruption: the
          // transaction is rolled back, and each caller gets the error its own transaction would have given.
          const interrupted = Cause.isInterruptedOnly(exit.cause)
          yield* Effect.forEach(
            live,
            (write) =>
              write.fail(
                interrupted
                  ? storeClosed(write.operation)
                  : new BackendError({ operation: write.operation, cause: Cause.squash(exit.cause) })
              ),
            { discard: true }
          )
        })
      )

    yield* Effect.forkScoped(
      Effect.forever(Effect.flatMap(Queue.takeBetween(writes, 1, Number.POSITIVE_INFINITY), commitBatch))
    )

    return <A>(operation: string, statements: Effect.Effect<A, unknown>): Effect.Effect<A, BackendError> =>
      Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (transaction) => {
        if (Option.isSome(transaction)) {
          return nestedTransaction(
            transaction.value[0],
            failWith(operation)(statements),
            (cause) => new BackendError({ operation, cause })
          )
        }
        return Effect.flatMap(Deferred.make<A, BackendError>(), (deferred) => {
          const write: Write = {
            operation,
            waiting: Effect.map(Deferred.isDone(deferred), (done) => !done),
            run: Effect.map(statements, (result) => Deferred.succeed(deferred, result).pipe(Effect.asVoid)),
            fail: (error) => Deferred.fail(deferred, error).pipe(Effect.asVoid)
          }
          // The check and the offer happen in one step, so no write slips in after the closing drain.
          const submit = Effect.suspend(() =>
            closed ? Effect.fail(storeClosed(operation)) : Effect.sync(() => Queue.unsafeOffer(writes, write))
          )
          return Effect.zipRight(
            submit,
            // An interrupted caller marks its write done, so the writer skips it if it has not started it yet.
            Effect.onInterrupt(Deferred.await(deferred), () => Deferred.interrupt(deferred))
          )
        })
      })
  })

// --- the backend -------------------------------------------------------------------------------------------------

/** @internal */
export interface MakeOptions {
  readonly tablePrefix?: string | undefined
  readonly name?: string | undefined
}

/** @internal */
export const make = (
  options: MakeOptions = {}
): Effect.Effect<Backend["Type"], BackendError | StoreLockedError, SqlClient.SqlClient | Scope.Scope> =>
  Effect.gen(function*() {
    const client = yield* SqlClient.SqlClient
    // The store names its tables and columns itself: an application's name transforms must not apply to them.
    const sql = client.withoutTransforms()
    const prefix = options.tablePrefix ?? defaultTablePrefix
    if (!validPrefix.test(prefix)) {
      return yield* new BackendError({
        operation: "open",
        cause: new Error(
          `invalid table prefix ${JSON.stringify(prefix)}: use up to 40 lower-case letters, digits and underscores`
        )
      })
    }
    const dialect = sql.onDialectOrElse({ sqlite: () => "sqlite", pg: () => "pg", orElse: () => "unsupported" })
    const store = options.name ?? `${dialect}:${prefix}`
    const tables = tablesOf(prefix)

    yield* ownInProcess(client, prefix, store)
    if (dialect === "sqlite") yield* lockSqlite(sql, store)
    else if (dialect === "pg") yield* lockPg(sql, prefix, store)
    else {
      return yield* new BackendError({
        operation: "open",
        cause: new Error("the SQL backend supports SQLite and PostgreSQL clients only")
      })
    }
    yield* migrate(sql, tables)

    const storeTable = sql(tables.store)
    const streams = sql(tables.streams)
    const messages = sql(tables.messages)
    const incarnations = sql(tables.incarnations)
    const received = sql(tables.received)

    const write = yield* makeGroupCommit(sql)

    const incarnation = yield* Effect.gen(function*() {
      const fresh = yield* Incarnation.make
      yield* sql`INSERT INTO ${storeTable} (id, incarnation) VALUES (1, ${fresh}) ON CONFLICT (id) DO NOTHING`
      const rows = yield* Effect.flatMap(sql`SELECT incarnation FROM ${storeTable} WHERE id = 1`, decodeRows(StoreRow))
      const row = rows[0]
      if (row === undefined) return yield* Effect.fail(new Error("the store's incarnation is missing"))
      return row.incarnation
    }).pipe(sql.withTransaction, failWith("open"))

    const outbound = Effect.gen(function*() {
      const streamRows = yield* Effect.flatMap(
        sql`SELECT peer, lane, next_seq, first_pending FROM ${streams}`,
        decodeRows(StreamRow)
      )
      // The pending messages where the run changes from the seq before: the start of each run, in seq order. One
      // pass over the pending messages in key order, at engine start only; payloads are not read.
      const runRows = yield* Effect.flatMap(
        sql`SELECT peer, lane, seq, run FROM (
          SELECT peer, lane, seq, run, LAG(run) OVER (PARTITION BY peer, lane ORDER BY seq) AS previous
          FROM ${messages}
        ) AS pending
        WHERE previous IS NULL OR previous <> run
        ORDER BY peer, lane, seq`,
        decodeRows(RunStartRow)
      )
      const incarnationRows = yield* Effect.flatMap(
        sql`SELECT peer, incarnation FROM ${incarnations}`,
        decodeRows(IncarnationRow)
      )
      const runs = new Map<string, Array<BackendTypes.RunStart>>()
      for (const row of runRows) {
        const key = streamKey(row.peer, row.lane)
        let list = runs.get(key)
        if (list === undefined) {
          list = []
          runs.set(key, list)
        }
        list.push({ run: row.run, from: row.seq })
      }
      return {
        streams: streamRows.map((row): BackendTypes.OutboundStream => ({
          peer: row.peer,
          lane: row.lane,
          firstPending: row.first_pending,
          nextSeq: row.next_seq,
          runs: runs.get(streamKey(row.peer, row.lane)) ?? []
        })),
        incarnations: incarnationRows.map((row): BackendTypes.PeerIncarnation => ({
          peer: row.peer,
          incarnation: row.incarnation
        }))
      }
    }).pipe(sql.withTransaction, failWith("outbound"))

    const append = (messagesToStore: ReadonlyArray<BackendTypes.OutboundMessage>, run: number) => {
      if (messagesToStore.length === 0) return Effect.succeed([])
      return Effect.gen(function*() {
        const allocations = new Map<string, { peer: string; lane: string; count: number; next: number }>()
        for (const message of messagesToStore) {
          const key = streamKey(message.peer, message.lane)
          const allocation = allocations.get(key)
          if (allocation === undefined) {
            allocations.set(key, { peer: message.peer, lane: message.lane, count: 1, next: 0 })
          } else {
            allocation.count++
          }
        }
        // One upsert per chunk of streams moves each stream's next_seq past its new messages and returns it; streams
        // go in key order, so concurrent writers lock them in the same order.
        const sorted = Array.from(allocations.values()).sort((a, b) =>
          a.peer < b.peer ? -1 : a.peer > b.peer ? 1 : a.lane < b.lane ? -1 : a.lane > b.lane ? 1 : 0
        )
        for (const chunk of chunks(sorted, rowsPerStatement)) {
          const rows = yield* Effect.flatMap(
            sql`INSERT INTO ${streams} ${
              sql.insert(chunk.map((stream) => ({
                peer: stream.peer,
                lane: stream.lane,
                next_seq: stream.count + 1,
                first_pending: 1
              })))
            }
            ON CONFLICT (peer, lane) DO UPDATE SET next_seq = ${streams}.next_seq + excluded.next_seq - 1
            RETURNING peer, lane, next_seq`,
            decodeRows(AllocationRow)
          )
          for (const row of rows) {
            const allocation = allocations.get(streamKey(row.peer, row.lane))
            if (allocation !== undefined) allocation.next = row.next_seq - allocation.count
          }
        }
        for (const allocation of allocations.values()) {
          if (allocation.next < 1) return yield* Effect.fail(new Error("a stream's next seq was not returned"))
        }
        const seqs = messagesToStore.map((message) => {
          const allocation = allocations.get(streamKey(message.peer, message.lane))!
          return allocation.next++
        })
        for (
          const chunk of chunks(messagesToStore.map((message, i) => [message, seqs[i]!] as const), rowsPerStatement)
        ) {
          yield* sql`INSERT INTO ${messages} ${
            sql.insert(chunk.map(([message, seq]) => ({
              peer: message.peer,
              lane: message.lane,
              seq,
              run,
              payload: bytes(message.payload)
            })))
          }`
        }
        return seqs
      }).pipe((statements) => write("append", statements))
    }

    const read = (peer: PeerId.PeerId, lane: Lane.Lane, fromSeq: number, limit: number) =>
      limit <= 0 ? Effect.succeed([]) : Effect.flatMap(
        sql`SELECT seq, run, payload FROM ${messages}
          WHERE peer = ${peer} AND lane = ${lane} AND seq >= ${fromSeq}
          ORDER BY seq
          LIMIT ${limit}`,
        decodeRows(MessageRow)
      ).pipe(
        Effect.map((rows) =>
          rows.map((row): BackendTypes.StoredMessage => ({
            peer,
            lane,
            seq: row.seq,
            run: row.run,
            payload: plainBytes(row.payload)
          }))
        ),
        failWith("read")
      )

    const acknowledge = (acks: ReadonlyArray<BackendTypes.Acknowledgement>) => {
      // The highest upTo per stream; a lower one than the store has seen changes nothing.
      const highest = new Map<string, BackendTypes.Acknowledgement>()
      for (const ack of acks) {
        const key = streamKey(ack.peer, ack.lane)
        const seen = highest.get(key)
        if (seen === undefined || ack.upTo > seen.upTo) highest.set(key, ack)
      }
      if (highest.size === 0) return Effect.void
      // An array, not the map's iterator: the effect may run more than once (a retry), and an iterator runs out.
      return Effect.forEach(Array.from(highest.values()), ({ lane, peer, upTo }) =>
        Effect.zipRight(
          sql`DELETE FROM ${messages} WHERE peer = ${peer} AND lane = ${lane} AND seq <= ${upTo}`,
          sql`UPDATE ${streams}
            SET first_pending = CASE WHEN next_seq < ${upTo + 1} THEN next_seq ELSE ${upTo + 1} END
            WHERE peer = ${peer} AND lane = ${lane} AND first_pending <= ${upTo}`
        ), { discard: true }).pipe((statements) => write("acknowledge", statements))
    }

    const setIncarnation = (peer: PeerId.PeerId, next: Incarnation.Incarnation) =>
      sql`INSERT INTO ${incarnations} (peer, incarnation) VALUES (${peer}, ${next})
        ON CONFLICT (peer) DO UPDATE SET incarnation = excluded.incarnation`.pipe(
        Effect.asVoid,
        failWith("setIncarnation")
      )

    const receivedStates = Effect.flatMap(
      sql`SELECT peer, lane, incarnation, delivered, runs FROM ${received}`,
      decodeRows(ReceivedRow)
    ).pipe(
      Effect.map((rows) =>
        rows.map((row): BackendTypes.ReceiveState => ({
          peer: row.peer,
          lane: row.lane,
          incarnation: row.incarnation,
          delivered: row.delivered,
          runs: row.runs.map(([run, from]) => ({ run, from }))
        }))
      ),
      failWith("received")
    )

    const commitReceived = (states: ReadonlyArray<BackendTypes.ReceiveState>) => {
      // The last state per stream wins, as it would with one statement per state.
      const latest = new Map<string, BackendTypes.ReceiveState>()
      for (const state of states) latest.set(streamKey(state.peer, state.lane), state)
      if (latest.size === 0) return Effect.void
      return Effect.forEach(
        chunks(Array.from(latest.values()), rowsPerStatement),
        (chunk) =>
          sql`INSERT INTO ${received} ${
            sql.insert(chunk.map((state) => ({
              peer: state.peer,
              lane: state.lane,
              incarnation: state.incarnation,
              delivered: state.delivered,
              runs: JSON.stringify(state.runs.map(({ from, run }) => [run, from]))
            })))
          }
        ON CONFLICT (peer, lane) DO UPDATE SET
          incarnation = excluded.incarnation,
          delivered = excluded.delivered,
          runs = excluded.runs`,
        { discard: true }
      ).pipe((statements) => write("commitReceived", statements))
    }

    /**
     * The effect's own failures pass through unchanged, as they would without a transaction; errors of the
     * transaction itself (BEGIN, SAVEPOINT) become `BackendError`. Errors are mapped in the cause: `Effect.fail`
     * and `Effect.mapError` inside the transaction's span would hand on a proxy of each error carrying the span,
     * and a caller that compares errors must get back the very value its effect failed with.
     */
    const withTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | BackendError, R> =>
      Effect.flatMap(
        Effect.serviceOption(SqlClient.TransactionConnection),
        (open) =>
          Option.isSome(open)
            ? nestedTransaction(
              open.value[0],
              effect,
              (cause) => new BackendError({ operation: "withTransaction", cause })
            )
            : transaction(effect)
      )

    /** An outer transaction, whose connection opens the savepoints of nested ones lazily. */
    const transaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | BackendError, R> =>
      sql.withTransaction(
        Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (open) => {
          const inner = Effect.mapErrorCause(effect, Cause.map((error) => new EffectFailure(error)))
          return Option.isSome(open)
            ? Effect.provideService(inner, SqlClient.TransactionConnection, [
              new LazySavepoints(open.value[0]),
              open.value[1]
            ])
            : inner
        })
      ).pipe(
        Effect.mapErrorCause(Cause.map((error): E | BackendError =>
          error instanceof EffectFailure
            ? Cause.originalError(error.error)
            : new BackendError({ operation: "withTransaction", cause: error })
        )),
        // @effect/sql turns a failed COMMIT or ROLLBACK into a defect; for the store it is a failed operation.
        Effect.catchSomeDefect((defect) =>
          defect instanceof SqlError
            ? Option.some(
              Effect.failCause(Cause.fail(new BackendError({ operation: "withTransaction", cause: defect })))
            )
            : Option.none()
        )
      )

    return Backend.of({
      incarnation,
      transactional: true,
      outbound,
      append,
      read,
      acknowledge,
      setIncarnation,
      received: receivedStates,
      commitReceived,
      withTransaction
    })
  })
