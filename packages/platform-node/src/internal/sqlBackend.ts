import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlConnection from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import { Backend, BackendError, StoreLockedError, StoreLostError, StoreUnusableError } from "@intersession/core/Backend"
import type * as BackendTypes from "@intersession/core/Backend"
import * as Incarnation from "@intersession/core/Incarnation"
import * as Lane from "@intersession/core/Lane"
import * as PeerId from "@intersession/core/PeerId"
import * as StreamKey from "@intersession/core/StreamKey"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { identity } from "effect/Function"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { EventEmitter } from "node:events"
import * as DeadLetters from "./sqlDeadLetters.js"
import * as Dropped from "./sqlDropped.js"
import { byStream } from "./sqlDropped.js"
import { migrations, newestMigration, type Tables, tablesOf } from "./sqlSchema.js"
import {
  bytes,
  type ChunkOptions,
  type Dialect,
  executeChunks,
  integerColumn,
  plainBytes,
  type Row,
  statementCount,
  statementsOf,
  unexpectedRow
} from "./sqlStatements.js"

/** @internal */
export const defaultTablePrefix = "intersession_"

/** Lower-case so PostgreSQL needs no quoting to find them; short enough that every derived name fits 63 bytes. */
const validPrefix = /^[a-z_][a-z0-9_]{0,39}$/

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

// Rows read when an engine starts; the hot paths check the few columns they read by hand (see `integerColumn`).
const StoreRow = Schema.Struct({ incarnation: IncarnationColumn })
const StreamRow = Schema.Struct({ peer: PeerId.PeerId, lane: Lane.Lane, next_seq: Integer, first_pending: Integer })
const RunStartRow = Schema.Struct({ peer: Schema.String, lane: Schema.String, seq: Integer, run: Integer })
const IncarnationRow = Schema.Struct({ peer: PeerId.PeerId, incarnation: IncarnationColumn })
/** A dropped range, as `expire` and `purge` write them (the operation says why). */
const DroppedRow = Schema.Struct({
  peer: PeerId.PeerId,
  lane: Lane.Lane,
  from_seq: Integer,
  to_seq: Integer,
  run: Integer
})
/** A dropped range with why it was dropped, as `outbound` reads them. */
const StoredDroppedRow = Schema.Struct({
  ...DroppedRow.fields,
  reason: Schema.Literal("expired", "purged")
})
/** The highest dropped seq of a stream, as the store reads them when it opens. */
const HighestDroppedRow = Schema.Struct({ peer: Schema.String, lane: Schema.String, to_seq: Integer })
/** A message `expire` removed (SQLite, which gives them back for the store to make the ranges). */
const RemovedRow = Schema.Struct({ peer: PeerId.PeerId, lane: Lane.Lane, seq: Integer, run: Integer })
const ReceivedRow = Schema.Struct({
  peer: PeerId.PeerId,
  lane: Lane.Lane,
  incarnation: IncarnationColumn,
  delivered: Integer,
  runs: RunsColumn
})

const decodeRows = <A, I>(schema: Schema.Schema<A, I>) => Schema.decodeUnknown(Schema.Array(schema))

// --- helpers -----------------------------------------------------------------------------------------------------

const failWith =
  (operation: BackendTypes.BackendOperation) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, BackendError, R> =>
    Effect.mapError(effect, (cause) => new BackendError({ operation, cause }))

// --- fencing -----------------------------------------------------------------------------------------------------

/**
 * What this backend knows of its ownership of the store. An engine owns its store while it holds the store's lock
 * (SQLite's file lock, PostgreSQL's advisory lock); on PostgreSQL the lock lives on one connection, which can end
 * while the engine runs, so ownership is also fenced: see `Fence`.
 */
interface Ownership {
  readonly store: string
  /** Why this engine lost the store, once it has: every operation fails with it from then on. */
  lost: StoreLostError | undefined
  /** Fails with that error once the store is lost: the engine stops on it, even when it has nothing to write. */
  readonly lostSignal: Deferred.Deferred<never, StoreLostError>
  /** PostgreSQL: the owner token this engine wrote when it took the store, checked by each of its transactions. */
  fence: Fence | undefined
}

/**
 * A fencing token. Each engine that takes a PostgreSQL store writes a new token into the store's row (the next
 * `owner`), under the advisory lock. Every transaction this backend opens reads the token `FOR SHARE` before its first
 * write, and goes on only if the token is still its own. The row lock orders both: a new owner's token update waits
 * for every transaction that read the old token to end, and a transaction that starts after the update reads the
 * new token and fails. So once another engine has taken the store, no write of this one commits, however long
 * this engine takes to notice that its lock connection ended, and the new owner reads the store only after the old
 * owner's last commit.
 */
interface Fence {
  readonly token: number
  /** Reads the token: after `BEGIN` in one round trip, or alone in a transaction this backend did not open. */
  readonly begin: string
  readonly read: string
}

const lostError = (ownership: Ownership, reason: StoreLostError["reason"], cause?: unknown) => {
  if (ownership.lost === undefined) {
    ownership.lost = new StoreLostError({ store: ownership.store, reason, cause })
    Deferred.unsafeDone(ownership.lostSignal, Exit.fail(ownership.lost))
  }
  return ownership.lost
}

/**
 * Checks the token a fence statement read (the rows of the statement, or of each statement where `BEGIN` came
 * first): a token that is not this engine's means another engine took the store over.
 */
const checkToken = (
  ownership: Ownership,
  fence: Fence,
  result: ReadonlyArray<unknown>
): Effect.Effect<void, StoreLostError> => {
  const rows = result.length > 0 && Array.isArray(result[0]) ? result[result.length - 1] : result
  const row: unknown = Array.isArray(rows) ? rows[0] : undefined
  const token = typeof row === "object" && row !== null && "owner" in row ? integerColumn(row.owner) : undefined
  return token === fence.token ? Effect.void : Effect.fail(lostError(ownership, "TakenOver"))
}

/** Fails once the store is lost, before a statement or commit of this backend. */
const stillOwned = (ownership: Ownership): Effect.Effect<void, StoreLostError> =>
  Effect.suspend(() => ownership.lost === undefined ? Effect.void : Effect.fail(ownership.lost))

// --- transactions ------------------------------------------------------------------------------------------------

/** What runs on a reserved connection; `restore` makes a part of it interruptible. */
type OnConnection<A, E, R> = (
  connection: SqlConnection.Connection,
  restore: <X, EX, RX>(effect: Effect.Effect<X, EX, RX>) => Effect.Effect<X, EX, RX>
) => Effect.Effect<A, E, R>

/**
 * Runs `body` on a connection reserved for it, which goes back when `body` ends. Only waiting for the connection is
 * interruptible, and what of `body` it runs under `restore`; a failed reservation fails with `statementError`.
 */
const reserved = <A, E, R, E2>(
  sql: SqlClient.SqlClient,
  body: OnConnection<A, E, R>,
  statementError: (cause: SqlError) => E2
): Effect.Effect<A, E | E2, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.scoped(
      Effect.flatMap(Effect.mapError(restore(sql.reserve), statementError), (connection) => body(connection, restore))
    )
  )

/**
 * Runs `body` in a transaction of its own, on a reserved connection (see `reserved`): BEGIN, then COMMIT once `body`
 * succeeds, or ROLLBACK once it fails (and after a failed COMMIT). `body`'s own failures pass through unchanged; a
 * failed BEGIN or COMMIT fails with `statementError`, and so does a transaction of a store this engine no longer
 * owns: on PostgreSQL BEGIN checks the fencing token (see `Fence`), and no transaction commits once the store is
 * known to be lost.
 *
 * BEGIN and COMMIT are prepared once, like the store's other statements, and no span is opened: this is the
 * transaction of every write of the store (@effect/sql's `withTransaction` costs several times a SQLite commit).
 */
const transaction = <A, E, R, E2>(
  sql: SqlClient.SqlClient,
  ownership: Ownership,
  body: OnConnection<A, E, R>,
  statementError: (cause: SqlError | StoreLostError) => E2
): Effect.Effect<A, E | E2, R> =>
  reserved(sql, (connection, restore): Effect.Effect<A, E | E2, R> => {
    const run = (statement: string) => Effect.mapError(connection.execute(statement, [], undefined), statementError)
    const rollback = Effect.ignore(connection.execute("ROLLBACK", [], undefined))
    const fence = ownership.fence
    const begin = fence === undefined
      ? Effect.zipRight(Effect.mapError(stillOwned(ownership), statementError), run("BEGIN"))
      : Effect.zipRight(stillOwned(ownership), connection.execute(fence.begin, [], undefined)).pipe(
        Effect.flatMap((result) => checkToken(ownership, fence, result)),
        // BEGIN may have run before the check failed: the transaction must not stay open on the connection.
        Effect.tapError(() => rollback),
        Effect.mapError(statementError)
      )
    const commit = Effect.zipRight(Effect.mapError(stillOwned(ownership), statementError), run("COMMIT"))
    return Effect.zipRight(
      begin,
      Effect.flatMap(Effect.exit(body(connection, restore)), (exit): Effect.Effect<A, E | E2, R> =>
        Exit.isSuccess(exit)
          ? Effect.as(Effect.tapError(commit, () => rollback), exit.value)
          : Effect.zipRight(rollback, exit))
    )
  }, statementError)

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

/**
 * Runs `effect` in a savepoint opened at once: on the connection of a transaction this backend did not open. On
 * PostgreSQL the savepoint first checks the fencing token, in the caller's transaction (see `Fence`).
 */
const inSavepoint = <A, E, R, E2>(
  connection: SqlConnection.Connection,
  ownership: Ownership,
  effect: Effect.Effect<A, E, R>,
  statementError: (cause: SqlError | StoreLostError) => E2
): Effect.Effect<A, E | E2, R> =>
  Effect.uninterruptibleMask((restore) => {
    const fence = ownership.fence
    const check: Effect.Effect<void, E2> = Effect.zipRight(
      stillOwned(ownership),
      fence === undefined
        ? Effect.void
        : Effect.flatMap(connection.execute(fence.read, [], undefined), (rows) => checkToken(ownership, fence, rows))
    ).pipe(Effect.mapError(statementError))
    return Effect.zipRight(
      Effect.mapError(connection.execute("SAVEPOINT intersession", [], undefined), statementError),
      Effect.flatMap(
        Effect.exit(Effect.zipRight(check, restore(effect))),
        (exit) => closeSavepoint(connection, exit, statementError)
      )
    )
  })

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
  ownership: Ownership,
  effect: Effect.Effect<A, E, R>,
  statementError: (cause: SqlError | StoreLostError) => E2
): Effect.Effect<A, E | E2, R> =>
  connection instanceof LazySavepoints
    ? connection.nested(effect, statementError)
    : inSavepoint(connection, ownership, effect, statementError)

/** The driver's error code, the first along the `cause` chain (`SqlError`, the migrator's errors, …). */
const errorCode = (error: unknown): string | undefined => {
  let current = error
  for (let depth = 0; depth < 5 && typeof current === "object" && current !== null; depth++) {
    if ("code" in current && typeof current.code === "string") return current.code
    current = "cause" in current ? current.cause : undefined
  }
  return undefined
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
 * Why a store cannot be used, from the driver's error, where that says so: SQLite's result codes (the extended ones
 * too, `SQLITE_CORRUPT_INDEX` or `SQLITE_READONLY_DIRECTORY`, say) and PostgreSQL's SQLSTATE for a read-only
 * transaction (`25006`).
 */
const unusableReason = (error: unknown): StoreUnusableError["reason"] | undefined => {
  const code = errorCode(error)
  if (code === undefined) return undefined
  if (code === "SQLITE_NOTADB") return "NotADatabase"
  if (code.startsWith("SQLITE_CORRUPT")) return "Corrupt"
  if (code.startsWith("SQLITE_READONLY") || code === "25006") return "ReadOnly"
  return undefined
}

/** An error of opening the store: `StoreUnusableError` where the driver says why the store cannot be used. */
const openError =
  (store: string, operation: "open" | "migrate" = "open") => (error: unknown): StoreUnusableError | BackendError => {
    const reason = unusableReason(error)
    return reason === undefined
      ? new BackendError({ operation, cause: error })
      : new StoreUnusableError({ store, reason, cause: error })
  }

/**
 * Takes SQLite's lock on the database file for as long as the connection lives: exclusive locking mode keeps every
 * lock a connection takes, and `BEGIN EXCLUSIVE` takes the write lock now. Another connection, in this process or
 * another, is refused at once (`busy_timeout = 0`) until this one closes or its process dies.
 *
 * The lock cannot lapse while the engine runs: it is the connection's, in this process, and SQLite's unix VFS keeps
 * it as long as the connection is open. (A POSIX lock is the process's: closing any other descriptor of the file in
 * this process would drop it, which SQLite guards against for its own connections; an application must not open
 * the store's file by other means, as SQLite's "How To Corrupt An SQLite Database File" says.)
 *
 * First it checks that the store can be written, writing nothing: a write in a transaction it rolls back fails at
 * once with `SQLITE_READONLY` on a file SQLite opened read-only (where taking the lock would fail with a mere
 * `SQLITE_IOERR_LOCK`), or whose directory it cannot write; and with `SQLITE_NOTADB` on a file that is not a
 * database.
 *
 * @internal
 */
export const lockSqlite = (sql: SqlClient.SqlClient, store: string) =>
  Effect.gen(function*() {
    yield* sql.unsafe("PRAGMA busy_timeout = 0")
    yield* sql.unsafe("PRAGMA locking_mode = EXCLUSIVE")
    yield* Effect.scoped(Effect.flatMap(sql.reserve, (connection) => {
      const run = (statement: string) => connection.executeUnprepared(statement, [], undefined)
      const rollback = Effect.ignore(run("ROLLBACK"))
      return Effect.all([
        run("BEGIN"),
        Effect.onError(run("PRAGMA user_version = 0"), () => rollback),
        rollback,
        run("BEGIN EXCLUSIVE"),
        run("COMMIT")
      ], { discard: true })
    }))
  }).pipe(
    Effect.mapError((error): StoreLockedError | StoreUnusableError | BackendError =>
      isSqliteBusy(error) ? new StoreLockedError({ store }) : openError(store)(error)
    )
  )

/**
 * Checks a SQLite store's every page with `PRAGMA quick_check`, reading them all once (a store holds what is
 * pending, so this is quick), and fails with `StoreUnusableError` when some are damaged.
 *
 * @internal
 */
export const checkSqliteIntegrity = (sql: SqlClient.SqlClient, store: string) =>
  sql.unsafe<{ readonly quick_check?: unknown }>("PRAGMA quick_check").pipe(
    Effect.mapError(openError(store)),
    Effect.flatMap((rows) => {
      // Each row is a fault, or "ok"; a fault may start with the name of its database (`*** in database main ***`).
      const faults = rows.flatMap((row) => String(row.quick_check).split("\n"))
        .filter((fault) => fault !== "ok" && !fault.startsWith("***"))
      if (faults.length === 0) return Effect.void
      const shown = faults.slice(0, 3).join("; ")
      return Effect.fail(
        new StoreUnusableError({
          store,
          reason: "Corrupt",
          detail: `the integrity check found ${faults.length === 1 ? "a fault" : `${faults.length} faults`}: ${shown}${
            faults.length > 3 ? "; …" : ""
          }`
        })
      )
    })
  )

/**
 * A PostgreSQL store must be writable: a server that runs read-only transactions (a standby, or
 * `default_transaction_read_only`) is refused before anything is tried.
 */
const checkPgWritable = (sql: SqlClient.SqlClient, store: string) =>
  sql.unsafe<{ readonly read_only?: unknown; readonly standby?: unknown }>(
    "SELECT current_setting('transaction_read_only') AS read_only, pg_is_in_recovery() AS standby"
  ).pipe(
    Effect.mapError(openError(store)),
    Effect.flatMap((rows) => {
      const row = rows[0]
      if (row?.standby === true) {
        return Effect.fail(
          new StoreUnusableError({ store, reason: "ReadOnly", detail: "the server is a standby, in recovery" })
        )
      }
      if (row?.read_only === "on") {
        return Effect.fail(
          new StoreUnusableError({
            store,
            reason: "ReadOnly",
            detail: "the server's transactions are read-only here (transaction_read_only is on: see " +
              "default_transaction_read_only of the role, the database or the server)"
          })
        )
      }
      return Effect.void
    })
  )

/** How often the lock's connection is checked, besides its own `error` and `end` events. */
const lockCheckInterval = Duration.seconds(2)

/**
 * Completes with why the lock's connection ended. `@effect/sql-pg`'s connection exposes its `pg` client, whose
 * `error` and `end` events say at once that the session is gone (a terminated backend, a dropped socket); any
 * connection is also checked with a statement every `lockCheckInterval`, which fails once the session is gone.
 * The check runs uninterruptibly, so closing the store never cancels a statement on the lock's connection.
 */
const lockConnectionEnded = (connection: SqlConnection.Connection): Effect.Effect<unknown> => {
  const client = "pg" in connection ? connection.pg : undefined
  const events = client instanceof EventEmitter
    ? Effect.async<unknown>((resume) => {
      const stop = () => {
        client.off("error", onError)
        client.off("end", onEnd)
      }
      // A terminated session gives both, `error` first: the first is the reason.
      const onError = (error: unknown) => {
        stop()
        resume(Effect.succeed(error))
      }
      const onEnd = () => {
        stop()
        resume(Effect.succeed(new Error("the connection ended")))
      }
      client.on("error", onError)
      client.on("end", onEnd)
      return Effect.sync(stop)
    })
    : Effect.never
  const polled = Effect.flip(
    Effect.forever(
      Effect.zipRight(
        Effect.sleep(lockCheckInterval),
        Effect.uninterruptible(connection.execute("SELECT 1", [], undefined))
      )
    )
  )
  return Effect.raceFirst(events, polled)
}

/**
 * Takes a session-level advisory lock, keyed by the schema and table prefix, on a connection reserved for the
 * scope; it is released when the scope closes, and by the server when the session ends.
 *
 * The session can end while the engine runs (a terminated backend, a dropped connection), and then the lock is
 * gone and another engine can take the store. A fiber of the scope watches the lock's connection and, once it
 * ends, marks the store lost: every operation fails from then on with `StoreLostError`. That is prompt, not a
 * guarantee: the fencing token is (see `Fence`).
 */
const lockPg = (sql: SqlClient.SqlClient, prefix: string, ownership: Ownership) =>
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
    if (!locked) return yield* new StoreLockedError({ store: ownership.store })
    yield* lockConnectionEnded(connection).pipe(
      Effect.flatMap((cause) => {
        const lost = lostError(ownership, "LockLost", cause)
        return Effect.logError("The store's lock is lost: every operation of this engine fails from now on", lost)
      }),
      Effect.annotateLogs({ store: ownership.store }),
      Effect.forkScoped
    )
  })

// --- schema ------------------------------------------------------------------------------------------------------

/**
 * Refuses a store written by a newer version of this library: its newest recorded migration has an id this version
 * does not know. Reads only; a store without a table of migrations is new.
 */
const checkSchema = (sql: SqlClient.SqlClient, tables: Tables, store: string) =>
  Effect.gen(function*() {
    const exists = yield* sql.onDialectOrElse({
      pg: () =>
        Effect.map(
          sql<{ readonly found?: unknown }>`SELECT to_regclass(${tables.migrations}) IS NOT NULL AS found`,
          (rows) => rows[0]?.found === true
        ),
      orElse: () =>
        Effect.map(
          sql<{ readonly found?: unknown }>`SELECT count(*) AS found FROM sqlite_master
            WHERE type = 'table' AND name = ${tables.migrations}`,
          (rows) => (integerColumn(rows[0]?.found) ?? 0) > 0
        )
    })
    if (!exists) return
    const rows = yield* sql<{ readonly migration_id?: unknown; readonly name?: unknown }>`
      SELECT migration_id, name FROM ${sql(tables.migrations)} ORDER BY migration_id DESC LIMIT 1`
    const id = integerColumn(rows[0]?.migration_id)
    const known = Number.parseInt(newestMigration, 10)
    if (id !== undefined && id > known) {
      return yield* new StoreUnusableError({
        store,
        reason: "NewerSchema",
        detail: `its newest migration is ${id}_${String(rows[0]?.name)}, and this version of ` +
          `@intersession/platform-node knows migrations up to ${newestMigration}; upgrade it to open this store`
      })
    }
  }).pipe(Effect.mapError((error) => error instanceof StoreUnusableError ? error : openError(store)(error)))

/**
 * Runs the store's migrations. The migrator turns a failed migration into a defect; this makes it a typed error
 * (`StoreUnusableError` where the driver says the store cannot be used).
 */
const migrate = (sql: SqlClient.SqlClient, tables: Tables, store: string) =>
  Migrator.make({})({ loader: migrations(sql, tables), table: tables.migrations }).pipe(
    Effect.provideService(SqlClient.SqlClient, sql),
    Effect.mapError(openError(store, "migrate")),
    Effect.catchSomeDefect((defect) =>
      defect instanceof Migrator.MigrationError || defect instanceof SqlError
        ? Option.some(Effect.fail(openError(store, "migrate")(defect)))
        : Option.none()
    )
  )

// --- group commit ------------------------------------------------------------------------------------------------

/** A write's statements, run on the connection of the transaction that carries it. */
type Statements<A> = (connection: SqlConnection.Connection) => Effect.Effect<A, unknown>

/** One caller's write, waiting in the queue for the writer. */
interface Waiting {
  readonly operation: BackendTypes.BackendOperation
  /** Runs the caller's statements in the writer's transaction; gives back how to answer the caller once committed. */
  readonly run: (connection: SqlConnection.Connection) => Effect.Effect<() => void, unknown>
  readonly fail: (error: BackendError) => void
  /** The caller stopped waiting (it was interrupted): its write is skipped unless it has started. */
  cancelled: boolean
}

const storeClosed = (operation: BackendTypes.BackendOperation) =>
  new BackendError({ operation, cause: new Error("the store is closed") })

/**
 * Group commit, with no hop when there is no contention. A write made outside a transaction while no other write of
 * the store runs, runs at once in a transaction of its own on the caller's fiber. Writes that arrive while one runs
 * queue up, and a single writer fiber runs every write waiting, in arrival order, in one transaction, then answers
 * each caller through its `Effect.async` callback; what arrives meanwhile goes in its next transaction. There is no
 * timer. If a transaction fails, every write in it fails with `BackendError` and none stays applied, as if each had
 * failed its own transaction.
 *
 * A write made inside an open transaction (`withTransaction`, marked by @effect/sql's `TransactionConnection` in
 * the fiber's context) runs at once on that transaction's connection, in a savepoint (see `oneStatement` below), so
 * it commits or rolls back with it, and fails alone. Deferring it would break that atomicity, and on SQLite, whose single connection the open transaction
 * holds, it would deadlock.
 *
 * Once the scope closes, no write of the store runs: those waiting fail with "the store is closed", and so does a
 * caller's own transaction that gets the connection after the close; one already running is waited for.
 */
const makeGroupCommit = (sql: SqlClient.SqlClient, dialect: Dialect, ownership: Ownership) =>
  Effect.gen(function*() {
    const queue: Array<Waiting> = []
    /**
     * Who runs the store's writes: nobody (the next caller runs its own transaction), a caller in its own
     * transaction, or the writer, which takes over the writes queued behind a caller's. Writes queue unless nobody.
     */
    let running: "nobody" | "caller" | "writer" = "nobody"
    /** Wakes the writer while it sleeps. */
    let wake: (() => void) | undefined
    let closed = false
    /** A caller's own transaction runs its statements; `ended` is the closing finalizer waiting for it. */
    let ownRunning = false
    let ended: (() => void) | undefined

    const failure = (operation: BackendTypes.BackendOperation, cause: Cause.Cause<unknown>) =>
      closed || Cause.isInterruptedOnly(cause)
        ? storeClosed(operation)
        : new BackendError({ operation, cause: Cause.squash(cause) })

    // Fails whatever still waits once the writer has stopped (finalizers run in reverse: this one after the writer's
    // interruption), and every later write: callers get an error rather than wait forever.
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closed = true
        for (const waiting of queue.splice(0)) waiting.fail(storeClosed(waiting.operation))
        return ownRunning
          ? Effect.async<void>((resume) => {
            ended = () => resume(Effect.void)
          })
          : Effect.void
      })
    )

    const commitBatch = (batch: ReadonlyArray<Waiting>) =>
      // Uninterruptible but for waiting for the connection, so the callers are answered even when the scope closes.
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(
          Effect.exit(
            restore(
              transaction(sql, ownership, (connection) => Effect.forEach(batch, (w) => w.run(connection)), identity)
            )
          ),
          (exit) =>
            Effect.sync(() => {
              if (Exit.isSuccess(exit)) {
                for (const answer of exit.value) answer()
                return
              }
              // A failed statement or COMMIT, or the writer's interruption while it waited for the connection: the
              // transaction is rolled back, and each caller gets the error its own transaction would have given.
              for (const waiting of batch) waiting.fail(failure(waiting.operation, exit.cause))
            })
        )
      )

    /** Sleeps until a caller's own transaction ends with writes queued behind it; not at all if one has already. */
    const sleep = Effect.async<void>((resume) => {
      if (running === "writer") {
        if (queue.length > 0) return resume(Effect.void)
        running = "nobody"
      }
      wake = () => {
        wake = undefined
        resume(Effect.void)
      }
      return Effect.sync(() => {
        wake = undefined
      })
    })

    const takeBatch = Effect.suspend(() => {
      const batch = queue.splice(0).filter((waiting) => !waiting.cancelled)
      return batch.length === 0 ? Effect.void : commitBatch(batch)
    })
    yield* Effect.forkScoped(Effect.forever(Effect.zipRight(sleep, takeBatch)))

    /** A caller's own transaction, on its own fiber: a single statement is one by itself. */
    const runOwn = <A>(
      operation: BackendTypes.BackendOperation,
      statements: Statements<A>,
      oneStatement: boolean
    ): Effect.Effect<A, BackendError> =>
      Effect.suspend(() => {
        const body: OnConnection<A, unknown, never> = (connection) => {
          if (closed) return Effect.fail(storeClosed(operation))
          ownRunning = true
          return statements(connection)
        }
        // A fenced store checks its token in a transaction, even for one statement.
        return oneStatement && ownership.fence === undefined
          ? reserved(
            sql,
            (connection, restore) => Effect.zipRight(stillOwned(ownership), body(connection, restore)),
            identity
          )
          : transaction(sql, ownership, body, identity)
      }).pipe(
        Effect.catchAllCause((cause) =>
          Cause.isInterruptedOnly(cause) ? Effect.interrupt : Effect.fail(failure(operation, cause))
        )
      )

    /** Ends a caller's own transaction: the writes queued meanwhile go to the writer, at once if it sleeps. */
    const ownEnded = Effect.sync(() => {
      ownRunning = false
      if (queue.length === 0) {
        running = "nobody"
      } else {
        running = "writer"
        wake?.()
      }
      ended?.()
    })

    const enqueue = <A>(operation: BackendTypes.BackendOperation, statements: Statements<A>) =>
      Effect.async<A, BackendError>((resume) => {
        const waiting: Waiting = {
          operation,
          run: (connection) => Effect.map(statements(connection), (value) => () => resume(Effect.succeed(value))),
          fail: (error) => resume(Effect.fail(error)),
          cancelled: false
        }
        queue.push(waiting)
        // An interrupted caller marks its write, so the writer skips it if it has not started it yet.
        return Effect.sync(() => {
          waiting.cancelled = true
        })
      })

    /**
     * Runs a write of `operation`, made of `statements`; `oneStatement` says they are a single statement, which
     * needs no transaction or savepoint of its own where a failed statement undoes itself and leaves the transaction
     * usable (SQLite; on PostgreSQL it would abort the open transaction, so it gets a savepoint all the same).
     */
    return <A>(
      operation: BackendTypes.BackendOperation,
      statements: Statements<A>,
      oneStatement: boolean
    ): Effect.Effect<A, BackendError> =>
      Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (open) => {
        if (Option.isSome(open)) {
          const connection = open.value[0]
          const write = failWith(operation)(
            Effect.zipRight(stillOwned(ownership), Effect.suspend(() => statements(connection)))
          )
          return oneStatement && dialect === "sqlite"
            ? write
            : nestedTransaction(connection, ownership, write, (cause) => new BackendError({ operation, cause }))
        }
        // The checks and the change of state happen in one step, so no write slips in after the closing drain, and
        // a caller's own transaction hands on the queue however it ends.
        return Effect.uninterruptibleMask((restore) =>
          Effect.suspend(() => {
            if (closed) return Effect.fail(storeClosed(operation))
            if (running !== "nobody") return restore(enqueue(operation, statements))
            running = "caller"
            return Effect.ensuring(restore(runOwn(operation, statements, oneStatement)), ownEnded)
          })
        )
      })
  })

// --- the backend -------------------------------------------------------------------------------------------------

/** @internal */
export interface MakeOptions {
  readonly tablePrefix?: string | undefined
  readonly name?: string | undefined
  /** SQLite: check every page of the store (`checkSqliteIntegrity`) before anything is written. */
  readonly checkIntegrity?: boolean | undefined
  /** Runs once the store is owned and checked, before anything is written (SQLite's journal mode, say). */
  readonly prepare?: Effect.Effect<void, BackendError> | undefined
}

/** Whether a time can be stored: finite, and a safe integer once rounded up to a whole millisecond. */
const validMillis = (millis: number) => Number.isSafeInteger(Math.ceil(millis))

const invalidTime = (operation: BackendTypes.BackendOperation, name: string, value: number) =>
  new BackendError({
    operation,
    cause: new Error(`${name} must be a time in milliseconds since the epoch, got ${value}`)
  })

/** Rows grouped by stream, each group in the order of the rows. */
const groupByStream = <R extends { readonly peer: string; readonly lane: string }, A>(
  rows: ReadonlyArray<R>,
  f: (row: R) => A
): Map<StreamKey.StreamKey, Array<A>> => {
  const groups = new Map<StreamKey.StreamKey, Array<A>>()
  for (const row of rows) {
    const key = StreamKey.make(row.peer, row.lane)
    const group = groups.get(key)
    if (group === undefined) groups.set(key, [f(row)])
    else group.push(f(row))
  }
  return groups
}

/** Message rows as `read` selects them, checked by hand: a row the store did not write fails the read. */
const storedMessages = (
  table: string,
  peer: PeerId.PeerId,
  lane: Lane.Lane,
  rows: ReadonlyArray<Row>
): Effect.Effect<Array<BackendTypes.StoredMessage>, Error> => {
  const messages: Array<BackendTypes.StoredMessage> = []
  for (const row of rows) {
    const seq = integerColumn(row.seq)
    const run = integerColumn(row.run)
    const payload = row.payload
    const expiresAt = row.expires_at === null ? undefined : integerColumn(row.expires_at)
    if (
      seq === undefined || run === undefined || !(payload instanceof Uint8Array) ||
      (expiresAt === undefined && row.expires_at !== null)
    ) {
      return Effect.fail(unexpectedRow(table, row))
    }
    messages.push(
      expiresAt === undefined
        ? { peer, lane, seq, run, payload: plainBytes(payload) }
        : { peer, lane, seq, run, payload: plainBytes(payload), expiresAt }
    )
  }
  return Effect.succeed(messages)
}

/** @internal */
export const make = (
  options: MakeOptions = {}
): Effect.Effect<
  Backend["Type"],
  BackendError | StoreLockedError | StoreUnusableError,
  SqlClient.SqlClient | Scope.Scope
> =>
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
    const dialect = sql.onDialectOrElse({
      sqlite: () => "sqlite" as const,
      pg: () => "pg" as const,
      orElse: () => "unsupported" as const
    })
    const store = options.name ?? `${dialect}:${prefix}`
    const tables = tablesOf(prefix)

    const ownership: Ownership = {
      store,
      lost: undefined,
      lostSignal: yield* Deferred.make<never, StoreLostError>(),
      fence: undefined
    }

    // Nothing is written to the store until it is owned and known to be usable: a refused store is left as it was.
    yield* ownInProcess(client, prefix, store)
    if (dialect === "sqlite") {
      yield* lockSqlite(sql, store)
      if (options.checkIntegrity === true) yield* checkSqliteIntegrity(sql, store)
    } else if (dialect === "pg") {
      yield* checkPgWritable(sql, store)
      yield* lockPg(sql, prefix, ownership)
    } else {
      return yield* new BackendError({
        operation: "open",
        cause: new Error("the SQL backend supports SQLite and PostgreSQL clients only")
      })
    }
    yield* checkSchema(sql, tables, store)
    if (options.prepare !== undefined) yield* options.prepare
    yield* migrate(sql, tables, store)

    const storeTable = sql(tables.store)
    const streams = sql(tables.streams)
    const messages = sql(tables.messages)
    const droppedTable = sql(tables.dropped)
    const incarnations = sql(tables.incarnations)
    const received = sql(tables.received)
    const statements = statementsOf(dialect, tables)

    const write = yield* makeGroupCommit(sql, dialect, ownership)

    /** A write of `items`, a statement per chunk of them (see `executeChunks`). */
    const writeRows = <A>(
      operation: BackendTypes.BackendOperation,
      items: ReadonlyArray<A>,
      options: ChunkOptions<A>
    ) =>
      write(
        operation,
        (connection) => Effect.asVoid(executeChunks(connection, items, options)),
        statementCount(items.length, options.padded, options.text) === 1
      )

    /** Fails once the store is lost (see `Ownership`), before `effect` runs. */
    const owned = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.zipRight(stillOwned(ownership), effect)

    /** Runs `f` on the connection of the open transaction, or on one reserved for it. */
    const withConnection = <A, E>(f: (connection: SqlConnection.Connection) => Effect.Effect<A, E>) =>
      Effect.flatMap(
        Effect.serviceOption(SqlClient.TransactionConnection),
        (open): Effect.Effect<A, E | SqlError> => Option.isSome(open) ? f(open.value[0]) : reserved(sql, f, identity)
      )

    const incarnation = yield* Effect.gen(function*() {
      const fresh = yield* Incarnation.make
      yield* sql`INSERT INTO ${storeTable} (id, incarnation) VALUES (1, ${fresh}) ON CONFLICT (id) DO NOTHING`
      const rows = yield* Effect.flatMap(sql`SELECT incarnation FROM ${storeTable} WHERE id = 1`, decodeRows(StoreRow))
      const row = rows[0]
      if (row === undefined) return yield* Effect.fail(new Error("the store's incarnation is missing"))
      if (dialect === "pg") {
        // A new fencing token: it waits for the transactions of a previous owner that read the old one to end.
        const owners = yield* sql<{ readonly owner?: unknown }>`
          UPDATE ${storeTable} SET owner = owner + 1 WHERE id = 1 RETURNING owner`
        const token = integerColumn(owners[0]?.owner)
        if (token === undefined) return yield* Effect.fail(new Error("the store's owner token is missing"))
        const read = `SELECT owner FROM "${tables.store}" WHERE id = 1 FOR SHARE`
        ownership.fence = { token, begin: `BEGIN; ${read}`, read }
      }
      return row.incarnation
    }).pipe(sql.withTransaction, failWith("open"))

    /** The streams with dropped ranges: the store's own `expire` and `purge` add to them from now on. */
    const dropped = new Dropped.DroppedStreams()
    yield* Effect.flatMap(
      sql`SELECT peer, lane, max(to_seq) AS to_seq FROM ${droppedTable} GROUP BY peer, lane`,
      decodeRows(HighestDroppedRow)
    ).pipe(
      Effect.map((rows) => {
        for (const row of rows) dropped.add(row.peer, row.lane, row.to_seq)
      }),
      failWith("open")
    )

    const outbound = Effect.gen(function*() {
      yield* stillOwned(ownership)
      const streamRows = yield* Effect.flatMap(
        sql`SELECT peer, lane, next_seq, first_pending FROM ${streams}`,
        decodeRows(StreamRow)
      )
      // The stored messages where the run changes from the seq before: the start of each run, in seq order. One
      // pass over the stored messages in key order, at engine start only; payloads are not read.
      const runRows = yield* Effect.flatMap(
        sql`SELECT peer, lane, seq, run FROM (
          SELECT peer, lane, seq, run, LAG(run) OVER (PARTITION BY peer, lane ORDER BY seq) AS previous
          FROM ${messages}
        ) AS pending
        WHERE previous IS NULL OR previous <> run
        ORDER BY peer, lane, seq`,
        decodeRows(RunStartRow)
      )
      const droppedRows = yield* Effect.flatMap(
        sql`SELECT peer, lane, from_seq, to_seq, run, reason FROM ${droppedTable} ORDER BY peer, lane, from_seq`,
        decodeRows(StoredDroppedRow)
      )
      const incarnationRows = yield* Effect.flatMap(
        sql`SELECT peer, incarnation FROM ${incarnations}`,
        decodeRows(IncarnationRow)
      )
      // Per stream, in seq order: the run starts of its stored messages, and its dropped ranges.
      const runs = groupByStream(runRows, (row): BackendTypes.RunStart => ({ run: row.run, from: row.seq }))
      const ranges = groupByStream(
        droppedRows,
        (row): BackendTypes.DroppedRange => ({ from: row.from_seq, to: row.to_seq, run: row.run, reason: row.reason })
      )
      return {
        streams: streamRows.map((row): BackendTypes.OutboundStream => {
          const key = StreamKey.make(row.peer, row.lane)
          const stored = runs.get(key) ?? []
          // `first_pending` is one past the stream's last acknowledgement: what is below it is acknowledged.
          const pendingDropped = Dropped.pendingRanges(ranges.get(key) ?? [], row.first_pending)
          return {
            peer: row.peer,
            lane: row.lane,
            firstPending: stored[0]?.from ?? row.next_seq,
            nextSeq: row.next_seq,
            runs: Dropped.runsOf(stored, pendingDropped, row.next_seq),
            dropped: pendingDropped
          }
        }),
        incarnations: incarnationRows.map((row): BackendTypes.PeerIncarnation => ({
          peer: row.peer,
          incarnation: row.incarnation
        }))
      }
    }).pipe(sql.withTransaction, failWith("outbound"))

    /** Allocates the seqs of `toStore` and stores the messages: a statement per chunk of streams, then of messages. */
    const appendStatements = (
      toStore: ReadonlyArray<BackendTypes.OutboundMessage>,
      run: number
    ) =>
    (connection: SqlConnection.Connection) => {
      // Per stream, how many messages it gets, then the seq of the next of them.
      const allocations = new Map<StreamKey.StreamKey, { peer: string; lane: string; count: number; next: number }>()
      const keys = toStore.map((message) => {
        const key = StreamKey.make(message.peer, message.lane)
        const allocation = allocations.get(key)
        if (allocation === undefined) {
          allocations.set(key, { peer: message.peer, lane: message.lane, count: 1, next: 0 })
        } else allocation.count++
        return key
      })
      const allocate = executeChunks(connection, Array.from(allocations.values()).sort(byStream), {
        padded: false,
        text: statements.allocate,
        bind: (stream, _, params) => params.push(stream.peer, stream.lane, stream.count + 1)
      })
      return Effect.flatMap(allocate, (rows) => {
        for (const row of rows) {
          const nextSeq = integerColumn(row.next_seq)
          const allocation = typeof row.peer === "string" && typeof row.lane === "string"
            ? allocations.get(StreamKey.make(row.peer, row.lane))
            : undefined
          if (nextSeq === undefined || allocation === undefined || nextSeq - allocation.count < 1) {
            return Effect.fail(unexpectedRow(tables.streams, row))
          }
          allocation.next = nextSeq - allocation.count
        }
        for (const allocation of allocations.values()) {
          if (allocation.next < 1) return Effect.fail(new Error("a stream's next seq was not returned"))
        }
        const seqs = keys.map((key) => allocations.get(key)!.next++)
        return Effect.as(
          executeChunks(connection, toStore, {
            padded: false,
            text: statements.store,
            bind: (message, i, params) =>
              params.push(
                message.peer,
                message.lane,
                seqs[i],
                run,
                bytes(message.payload),
                message.expiresAt === undefined ? null : Math.ceil(message.expiresAt)
              )
          }),
          seqs
        )
      })
    }

    const append = (toStore: ReadonlyArray<BackendTypes.OutboundMessage>, run: number) => {
      if (toStore.length === 0) return Effect.succeed([])
      for (const message of toStore) {
        if (message.expiresAt !== undefined && !validMillis(message.expiresAt)) {
          return Effect.fail(invalidTime("append", "expiresAt", message.expiresAt))
        }
      }
      return write("append", appendStatements(toStore, run), false)
    }

    const read = (peer: PeerId.PeerId, lane: Lane.Lane, fromSeq: number, limit: number) => {
      if (limit <= 0) return Effect.succeed([])
      const params = [peer, lane, fromSeq, limit]
      return owned(withConnection((connection) => connection.execute(statements.read, params, undefined))).pipe(
        Effect.flatMap((rows) => storedMessages(tables.messages, peer, lane, rows)),
        failWith("read")
      )
    }

    const acknowledge = (acks: ReadonlyArray<BackendTypes.Acknowledgement>) => {
      // The highest upTo per stream; a lower one than the store has seen changes nothing.
      const highest = new Map<StreamKey.StreamKey, BackendTypes.Acknowledgement>()
      for (const ack of acks) {
        const key = StreamKey.make(ack.peer, ack.lane)
        const seen = highest.get(key)
        if (seen === undefined || ack.upTo > seen.upTo) highest.set(key, ack)
      }
      if (highest.size === 0) return Effect.void
      const sorted = Array.from(highest.values()).sort(byStream)
      const bind = (ack: BackendTypes.Acknowledgement, _: number, params: Array<unknown>) => {
        params.push(ack.peer, ack.lane, ack.upTo)
      }
      // Whether the acknowledgement deletes dropped ranges too: only where one of its streams has some, as the store
      // knows when the statements run, in the order of its writes. (PostgreSQL runs one statement either way, SQLite
      // more than one either way: the choice does not change how the write is made.)
      let droppedToo = false
      const acknowledged = write(
        "acknowledge",
        (connection) => {
          droppedToo = dropped.size > 0 && Array.from(highest.keys()).some((key) => dropped.has(key))
          const text = droppedToo ? statements.acknowledgeDropped : statements.acknowledge
          return executeChunks(connection, sorted, { padded: true, text, bind })
        },
        statementCount(sorted.length, true, statements.acknowledge) === 1
      )
      return Effect.flatMap(acknowledged, () => {
        if (!droppedToo) return Effect.void
        // Committed, unless an open transaction of the caller's carries it: then the streams stay listed.
        return Effect.map(Effect.serviceOption(SqlClient.TransactionConnection), (open) => {
          if (Option.isSome(open)) return
          for (const [key, ack] of highest) dropped.acknowledged(key, ack.upTo)
        })
      })
    }

    /** The ranges of what `expire` or `purge` removed, as the store recorded them. */
    const recorded = (rows: ReadonlyArray<Row>) =>
      Effect.map(decodeRows(DroppedRow)(rows), (ranges) =>
        ranges.map((row): Dropped.StreamRange => ({
          peer: row.peer,
          lane: row.lane,
          from: row.from_seq,
          to: row.to_seq,
          run: row.run
        })))

    /** Lists the streams of `ranges` as having dropped ranges; done before the transaction that writes them ends. */
    const noteDropped = (ranges: ReadonlyArray<Dropped.StreamRange>) => {
      for (const range of ranges) dropped.add(range.peer, range.lane, range.to)
      return Dropped.perStream(ranges)
    }

    /**
     * Removes the due messages and records them as dropped: one statement on PostgreSQL; on SQLite one that removes
     * them and gives them back, and one per chunk of their ranges.
     */
    const expireStatements = (now: number, limit: number) => (connection: SqlConnection.Connection) => {
      const removed = connection.execute(statements.expire, [now, limit], undefined)
      if (dialect === "pg") return Effect.map(Effect.flatMap(removed, recorded), noteDropped)
      return Effect.flatMap(Effect.flatMap(removed, decodeRows(RemovedRow)), (rows) => {
        const ranges = Dropped.rangesOf(rows)
        const result = noteDropped(ranges)
        return ranges.length === 0 ? Effect.succeed(result) : Effect.as(
          executeChunks(connection, ranges, {
            padded: false,
            text: statements.recordExpired,
            bind: (range, _, params) => params.push(range.peer, range.lane, range.from, range.to, range.run)
          }),
          result
        )
      })
    }

    /**
     * Removes up to `limit` due messages. A probe of the index of due messages comes first, outside any write: when
     * nothing is due, as is usual, `expire` costs one read.
     */
    const expire = (now: number, limit: number) => {
      if (Number.isNaN(now)) return Effect.fail(invalidTime("expire", "now", now))
      if (!(limit >= 1)) return Effect.succeed([])
      // Whole milliseconds: a message whose (whole) expiresAt is at or before now is at or before its floor.
      const upTo = Math.max(Math.min(Math.floor(now), Number.MAX_SAFE_INTEGER), Number.MIN_SAFE_INTEGER)
      const count = Math.min(Math.floor(limit), Number.MAX_SAFE_INTEGER)
      return owned(withConnection((connection) => connection.execute(statements.due, [upTo], undefined))).pipe(
        failWith("expire"),
        Effect.flatMap((due) =>
          due.length === 0
            ? Effect.succeed([])
            : write("expire", expireStatements(upTo, count), dialect === "pg")
        )
      )
    }

    const purge = (peer: PeerId.PeerId, lane: Lane.Lane | undefined) => {
      const params = lane === undefined ? [peer] : [peer, lane]
      const texts = lane === undefined ? statements.purgePeer : statements.purgeStream
      return write(
        "purge",
        (connection) => {
          // PostgreSQL removes and records in one statement; SQLite records, then removes the same rows.
          const [record, remove] = texts
          return Effect.flatMap(
            Effect.flatMap(connection.execute(record!, params, undefined), recorded),
            (ranges) => {
              const result = noteDropped(ranges)
              return remove === undefined || ranges.length === 0
                ? Effect.succeed(result)
                : Effect.as(connection.execute(remove, params, undefined), result)
            }
          )
        },
        texts.length === 1
      )
    }

    const setIncarnation = (peer: PeerId.PeerId, next: Incarnation.Incarnation) =>
      write(
        "setIncarnation",
        (connection) => Effect.asVoid(connection.execute(statements.setIncarnation, [peer, next], undefined)),
        true
      )

    const forget = (peer: PeerId.PeerId, next: Incarnation.Incarnation) =>
      write(
        "forget",
        (connection) =>
          Effect.zipRight(
            Effect.forEach(statements.forget, (text) => connection.execute(text, [peer], undefined), {
              discard: true
            }),
            connection.execute(statements.setIncarnation, [peer, next], undefined)
          ),
        false
      )

    const receivedStates = Effect.flatMap(
      owned(sql`SELECT peer, lane, incarnation, delivered, runs FROM ${received}`),
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

    /** How `commitReceived` binds receive states. */
    const receiveStates: ChunkOptions<BackendTypes.ReceiveState> = {
      padded: false,
      text: statements.commitReceived,
      bind: (state, _, params) =>
        params.push(
          state.peer,
          state.lane,
          state.incarnation,
          state.delivered,
          JSON.stringify(state.runs.map(({ from, run }) => [run, from]))
        )
    }

    /** The receive states, then the dead letters, in one write; without dead letters, no statement more. */
    const commitReceived = (
      states: ReadonlyArray<BackendTypes.ReceiveState>,
      letters?: ReadonlyArray<BackendTypes.NewDeadLetter>
    ) => {
      // The last state per stream wins, as it would with one statement per state.
      const latest = new Map<StreamKey.StreamKey, BackendTypes.ReceiveState>()
      for (const state of states) latest.set(StreamKey.make(state.peer, state.lane), state)
      const sorted = Array.from(latest.values()).sort(byStream)
      if (letters === undefined || letters.length === 0) {
        return sorted.length === 0 ? Effect.void : writeRows("commitReceived", sorted, receiveStates)
      }
      const invalid = DeadLetters.checkLetters(letters)
      if (invalid !== undefined) return Effect.fail(invalid)
      const stored = DeadLetters.store(statements, letters)
      const stateStatements = sorted.length === 0 ? 0 : statementCount(sorted.length, false, statements.commitReceived)
      return write(
        "commitReceived",
        (connection) =>
          sorted.length === 0
            ? Effect.asVoid(stored.run(connection))
            : Effect.zipRight(executeChunks(connection, sorted, receiveStates), Effect.asVoid(stored.run(connection))),
        stateStatements + stored.count === 1
      )
    }

    const deadLetters = DeadLetters.make({
      table: tables.deadLetters,
      statements,
      write,
      read: (f) => owned(withConnection(f))
    })

    /**
     * An outer transaction runs on a connection of its own, whose nested transactions open their savepoints
     * lazily; a nested one is a savepoint of the open transaction. The effect's own failures pass through
     * unchanged, as they would without a transaction; errors of the transaction itself (BEGIN, SAVEPOINT, COMMIT)
     * become `BackendError`.
     */
    const withTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | BackendError, R> =>
      Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (open) => {
        const statementError = (cause: SqlError | StoreLostError) =>
          new BackendError({ operation: "withTransaction", cause })
        return Option.isSome(open)
          ? nestedTransaction(open.value[0], ownership, effect, statementError)
          : transaction(
            sql,
            ownership,
            (connection, restore) =>
              restore(
                Effect.provideService(effect, SqlClient.TransactionConnection, [new LazySavepoints(connection), 0])
              ),
            statementError
          )
      })

    return Backend.of({
      incarnation,
      transactional: true,
      outbound,
      append,
      read,
      acknowledge,
      setIncarnation,
      forget,
      received: receivedStates,
      commitReceived,
      deadLetters: deadLetters.deadLetters,
      removeDeadLetters: deadLetters.removeDeadLetters,
      requestReplay: deadLetters.requestReplay,
      expire,
      purge,
      withTransaction,
      // SQLite's file lock lasts as long as the connection, which lasts as long as the engine: it cannot lapse.
      ...(dialect === "pg" ? { lost: Deferred.await(ownership.lostSignal) } : {})
    })
  })
