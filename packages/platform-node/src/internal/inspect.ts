/**
 * `intersession inspect`: what a store holds, read without an engine and without writing to it: its incarnations,
 * the receive state of each inbound stream, the messages pending per outbound stream (how many, the oldest, their
 * bytes, and the dropped seqs no acknowledgement has covered yet) and the dead letters per stream.
 *
 * A store is named by a SQLite file, or a PostgreSQL URL, and the prefix of its tables (see `SqlBackend`).
 *
 * - SQLite: the file is opened read-only (a missing file is an error, never a new store), and everything is read in
 *   one read transaction, a consistent snapshot, with the store's last transactions in its `-wal` file included
 *   (after a crash, say). Like any reader of a database in WAL mode, SQLite creates the `-shm` and `-wal` files next
 *   to the database when they are missing; the database file itself is never written. An engine holds its SQLite
 *   store in exclusive locking mode (see `lockSqlite`): no other connection can read it while the engine runs, so a
 *   store in use fails at once with `StoreAccessError` (`InUse`) rather than waiting; while inspect reads (a few
 *   milliseconds), an engine that starts on the store is refused in turn, with `StoreLockedError`.
 * - PostgreSQL: everything is read in one `REPEATABLE READ READ ONLY` transaction, so the figures are consistent
 *   with each other while an engine runs and writes.
 *
 * A store written by a newer version (a migration this version does not know), or tables that are not a store,
 * fail with `StoreAccessError` before anything else is read.
 *
 * @internal
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as ParseResult from "effect/ParseResult"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Fs from "node:fs"
import type { DriverMissingError } from "../SqlBackend.js"
import * as Driver from "./driver.js"
import { defaultTablePrefix } from "./sqlBackend.js"
import { newestMigration, sqliteNowMillis, tablesOf } from "./sqlSchema.js"
import { integerColumn } from "./sqlStatements.js"

// --- stores ------------------------------------------------------------------------------------------------------

/**
 * A store, as the command line names it: a SQLite file, or a PostgreSQL URL; and the prefix of its tables.
 *
 * @internal
 */
export type Target =
  | { readonly _tag: "Sqlite"; readonly filename: string; readonly tablePrefix: string }
  | { readonly _tag: "Postgres"; readonly url: Redacted.Redacted; readonly tablePrefix: string }

/**
 * The store `<store>` names: a `postgres://` or `postgresql://` URL, or else the path of a SQLite file.
 *
 * @internal
 */
export const target = (store: string, tablePrefix: string = defaultTablePrefix): Target =>
  /^postgres(ql)?:\/\//i.test(store)
    ? { _tag: "Postgres", url: Redacted.make(store), tablePrefix }
    : { _tag: "Sqlite", filename: store, tablePrefix }

/** A URL without its password, to name a store in messages. */
const withoutPassword = (url: string) => {
  try {
    const parsed = new URL(url)
    if (parsed.password !== "") parsed.password = "***"
    return parsed.toString()
  } catch {
    return "the PostgreSQL URL given"
  }
}

/** Where a store is: the file, or the URL without its password. */
const location = (store: Target): string =>
  store._tag === "Sqlite" ? store.filename : withoutPassword(Redacted.value(store.url))

/**
 * How messages name a store: where it is, and the prefix of its tables when it is not the default.
 *
 * @internal
 */
export const storeName = (store: Target): string =>
  store.tablePrefix === defaultTablePrefix ? location(store) : `${location(store)} (tables ${store.tablePrefix}*)`

/** The prefixes `SqlBackend` accepts (see `validPrefix` there). */
const validPrefix = /^[a-z_][a-z0-9_]{0,39}$/

// --- errors ------------------------------------------------------------------------------------------------------

/**
 * A store cannot be read or changed by the command-line tools:
 *
 * - `NotFound`: there is no such SQLite file;
 * - `InUse`: a running engine owns the store (its SQLite lock, or for `dead-letters` its PostgreSQL lock too);
 * - `NotAStore`: the database holds no store with this table prefix;
 * - `NewerSchema`: a newer version of `@intersession` wrote the store;
 * - `NotADatabase`, `Corrupt`: what SQLite says of the file;
 * - `Unreadable`: anything else (the server cannot be reached, a row is not what a store writes, …), with the
 *   driver's reason.
 *
 * @internal
 */
export class StoreAccessError extends Data.TaggedError("StoreAccessError")<{
  readonly store: string
  readonly reason: "NotFound" | "InUse" | "NotAStore" | "NewerSchema" | "NotADatabase" | "Corrupt" | "Unreadable"
  readonly detail?: string | undefined
  readonly cause?: unknown
}> {
  override get message(): string {
    const what = {
      NotFound: "there is no such file",
      InUse: "a running engine owns it",
      NotAStore: "it is not an intersession store",
      NewerSchema: "a newer version of @intersession wrote it",
      NotADatabase: "it is not a SQLite database",
      Corrupt: "it is corrupt",
      Unreadable: "it cannot be read"
    }[this.reason]
    const detail = this.detail === undefined ? "" : `: ${this.detail}`
    const cause = this.cause === undefined ? "" : ` (${describe(this.cause)})`
    return `Store ${this.store}: ${what}${detail}${cause}`
  }
}

/** The first error code and message along a cause chain (a driver's error under `@effect/sql`'s `SqlError`). */
const describe = (cause: unknown): string => {
  let innermost: string | undefined
  let current = cause
  for (let depth = 0; depth < 10 && typeof current === "object" && current !== null; depth++) {
    const code = "code" in current && typeof current.code === "string" && current.code !== "" ? current.code : undefined
    const message = "message" in current && typeof current.message === "string" && current.message.trim() !== ""
      ? current.message.trim()
      : undefined
    if (code !== undefined) {
      return message === undefined || message.includes(code)
        ? message ?? code
        : `${code}: ${message}`
    }
    if (message !== undefined) innermost = message
    current = "cause" in current ? current.cause : undefined
  }
  return innermost ?? String(cause)
}

const codeOf = (cause: unknown): string | undefined => {
  let current = cause
  for (let depth = 0; depth < 10 && typeof current === "object" && current !== null; depth++) {
    if ("code" in current && typeof current.code === "string") return current.code
    current = "cause" in current ? current.cause : undefined
  }
  return undefined
}

/** What a reading failure means for the store, from the driver's error code. */
const readError = (store: string) => (cause: unknown): StoreAccessError => {
  if (cause instanceof StoreAccessError) return cause
  const code = codeOf(cause) ?? ""
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) {
    return new StoreAccessError({
      store,
      reason: "InUse",
      detail: "an engine holds its SQLite store locked exclusively while it runs, so nothing else can read it; " +
        "stop the engine, or ask it (ILM.stats, the status line of `intersession peer`)"
    })
  }
  if (code === "SQLITE_NOTADB") return new StoreAccessError({ store, reason: "NotADatabase", cause })
  if (code.startsWith("SQLITE_CORRUPT")) return new StoreAccessError({ store, reason: "Corrupt", cause })
  return new StoreAccessError({ store, reason: "Unreadable", cause })
}

// --- the report --------------------------------------------------------------------------------------------------

/**
 * Dropped seqs of an outbound stream that no acknowledgement has covered yet, `from … to` (both included), all
 * allocated by `run`, and why they were dropped.
 *
 * @internal
 */
export interface DroppedRange {
  readonly from: number
  readonly to: number
  readonly run: number
  readonly reason: string
}

/**
 * An outbound stream: its `pending` stored messages, their payloads' `bytes`, the oldest of them (`oldestStoredAt`,
 * on the database's clock, and its age when the store was read; `null` when some were stored by a version older
 * than 0.3, which did not record when: `undated` counts those), the seq the next message gets (`nextSeq`), one past
 * its last acknowledgement (`firstPending`), its lowest stored seq, and its dropped ranges.
 *
 * @internal
 */
export interface OutboundReport {
  readonly peer: string
  readonly lane: string
  readonly pending: number
  readonly bytes: number
  readonly oldestStoredAt: number | null
  readonly oldestAgeMillis: number | null
  readonly undated: number
  readonly nextSeq: number
  readonly firstPending: number
  readonly lowestStored: number | null
  readonly dropped: ReadonlyArray<DroppedRange>
}

/**
 * The dead letters of one inbound stream: how many, their payloads' bytes, the oldest (when it was moved, on the
 * engine's clock, and its age when the store was read) and how many are marked for replay.
 *
 * @internal
 */
export interface DeadLetterReport {
  readonly peer: string
  readonly lane: string
  readonly count: number
  readonly bytes: number
  readonly oldestAt: number
  readonly oldestAgeMillis: number
  readonly replayRequested: number
}

/**
 * What a store holds: `store` is where it is (the file, or the URL without its password). `readAt` is when it was read, on the database's clock (milliseconds since the epoch);
 * `migration` its newest migration; `incarnation` `null` for a store whose first open did not finish.
 * `deadLetters` is `null` for a store without the table (one of a version older than 0.3).
 *
 * @internal
 */
export interface Report {
  readonly store: string
  readonly dialect: "sqlite" | "pg"
  readonly tablePrefix: string
  readonly migration: string
  readonly readAt: number
  readonly incarnation: number | null
  readonly peerIncarnations: ReadonlyArray<{ readonly peer: string; readonly incarnation: number }>
  readonly inbound: ReadonlyArray<
    { readonly peer: string; readonly lane: string; readonly incarnation: number; readonly delivered: number }
  >
  readonly outbound: ReadonlyArray<OutboundReport>
  readonly deadLetters: ReadonlyArray<DeadLetterReport> | null
}

// --- reading -----------------------------------------------------------------------------------------------------

/** A column of whole numbers, as either driver gives them: a number, a `bigint`, or digits (PostgreSQL's). */
const Integer = Schema.transformOrFail(Schema.Unknown, Schema.Number, {
  strict: true,
  decode: (value, _, ast) => {
    const number = integerColumn(value)
    return number === undefined
      ? ParseResult.fail(new ParseResult.Type(ast, value, `not an integer: ${String(value)}`))
      : ParseResult.succeed(number)
  },
  encode: ParseResult.succeed
})
const NullableInteger = Schema.NullOr(Integer)

const StoreRow = Schema.Struct({ incarnation: Integer })
const MigrationRow = Schema.Struct({ migration_id: Integer, name: Schema.String })
const PeerIncarnationRow = Schema.Struct({ peer: Schema.String, incarnation: Integer })
const ReceivedRow = Schema.Struct({
  peer: Schema.String,
  lane: Schema.String,
  incarnation: Integer,
  delivered: Integer
})
const OutboundRow = Schema.Struct({
  peer: Schema.String,
  lane: Schema.String,
  next_seq: Integer,
  first_pending: Integer,
  pending: NullableInteger,
  bytes: NullableInteger,
  oldest: NullableInteger,
  undated: NullableInteger,
  lowest: NullableInteger
})
const DroppedRow = Schema.Struct({
  peer: Schema.String,
  lane: Schema.String,
  from_seq: Integer,
  to_seq: Integer,
  run: Integer,
  reason: Schema.String
})
const DeadLetterRow = Schema.Struct({
  peer: Schema.String,
  lane: Schema.String,
  count: Integer,
  bytes: NullableInteger,
  oldest: Integer,
  replay: NullableInteger
})
const NowRow = Schema.Struct({ now: Integer })
const NameRow = Schema.Struct({ name: Schema.String })

const decodeRows =
  <A, I>(schema: Schema.Schema<A, I>, store: string, table: string) => (rows: ReadonlyArray<unknown>) =>
    Schema.decodeUnknown(Schema.Array(schema))(rows).pipe(
      Effect.mapError((error) =>
        new StoreAccessError({ store, reason: "Unreadable", detail: `unexpected rows in ${table}`, cause: error })
      )
    )

/**
 * What the store with this prefix is: its newest migration and which of its tables exist. Fails with `NotAStore`
 * when the database has none of it (naming the prefixes of the stores it does hold) and with `NewerSchema` when a
 * newer version wrote it.
 */
const identify = (sql: SqlClient.SqlClient, dialect: "sqlite" | "pg", prefix: string, store: string) =>
  Effect.gen(function*() {
    const tables = tablesOf(prefix)
    const names = new Set(
      (yield* Effect.flatMap(
        dialect === "pg"
          ? sql`SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema()`
          : sql`SELECT name FROM sqlite_master WHERE type = 'table'`,
        decodeRows(NameRow, store, "the list of tables")
      )).map((row) => row.name)
    )
    if (!names.has(tables.migrations) || !names.has(tables.store)) {
      const suffix = "migrations"
      const others = Array.from(names)
        .filter((name) => name.endsWith(suffix) && names.has(`${name.slice(0, -suffix.length)}store`))
        .map((name) => name.slice(0, -suffix.length))
        .sort()
      const shown = others.slice(0, 8).map((other) => other === "" ? "\"\" (none)" : other).join(", ")
      return yield* new StoreAccessError({
        store,
        reason: "NotAStore",
        detail: `it has no tables ${tables.migrations} and ${tables.store}` + (others.length === 0
          ? ""
          : `; it holds the store${others.length === 1 ? "" : "s"} of table prefix ${shown}${
            others.length > 8 ? ` and ${others.length - 8} more` : ""
          }: pass --table-prefix`)
      })
    }
    const migrations = yield* Effect.flatMap(
      sql`SELECT migration_id, name FROM ${sql(tables.migrations)} ORDER BY migration_id DESC LIMIT 1`,
      decodeRows(MigrationRow, store, tables.migrations)
    )
    const newest = migrations[0]
    const known = Number.parseInt(newestMigration, 10)
    if (newest !== undefined && newest.migration_id > known) {
      return yield* new StoreAccessError({
        store,
        reason: "NewerSchema",
        detail: `its newest migration is ${newest.migration_id}_${newest.name}, and this version of ` +
          `@intersession/platform-node knows migrations up to ${newestMigration}; upgrade it to inspect this store`
      })
    }
    return {
      tables,
      migration: newest === undefined ? "none" : `${newest.migration_id}_${newest.name}`,
      migrationId: newest?.migration_id ?? 0,
      has: (table: string) => names.has(table)
    }
  })

/** Reads the report, in the transaction the caller opened. */
const read = (sql: SqlClient.SqlClient, dialect: "sqlite" | "pg", prefix: string, store: string) =>
  Effect.gen(function*() {
    const { has, migration, migrationId, tables } = yield* identify(sql, dialect, prefix, store)
    const now = dialect === "pg" ? "(extract(epoch from now()) * 1000)::bigint" : sqliteNowMillis
    const clock = yield* Effect.flatMap(sql`SELECT ${sql.literal(now)} AS now`, decodeRows(NowRow, store, "the clock"))
    const readAt = clock[0]?.now ?? 0
    const storeRows = yield* Effect.flatMap(
      sql`SELECT incarnation FROM ${sql(tables.store)}`,
      decodeRows(StoreRow, store, tables.store)
    )
    const peerIncarnations = yield* Effect.flatMap(
      sql`SELECT peer, incarnation FROM ${sql(tables.incarnations)} ORDER BY peer`,
      decodeRows(PeerIncarnationRow, store, tables.incarnations)
    )
    const inbound = yield* Effect.flatMap(
      sql`SELECT peer, lane, incarnation, delivered FROM ${sql(tables.received)} ORDER BY peer, lane`,
      decodeRows(ReceivedRow, store, tables.received)
    )
    const length = sql.literal(dialect === "pg" ? "octet_length" : "length")
    // `stored_at` came with migration 3; the rows stored before it have none, and are older than every row that has.
    const storedAt = sql.literal(migrationId >= 3 ? "stored_at" : "NULL")
    const outboundRows = yield* Effect.flatMap(
      sql`SELECT s.peer, s.lane, s.next_seq, s.first_pending, m.pending, m.bytes, m.oldest, m.undated, m.lowest
        FROM ${sql(tables.streams)} AS s LEFT JOIN (
          SELECT peer, lane, count(*) AS pending, sum(${length}(payload)) AS bytes, min(${storedAt}) AS oldest,
            count(*) - count(${storedAt}) AS undated, min(seq) AS lowest
          FROM ${sql(tables.messages)} GROUP BY peer, lane
        ) AS m ON m.peer = s.peer AND m.lane = s.lane
        ORDER BY s.peer, s.lane`,
      decodeRows(OutboundRow, store, tables.messages)
    )
    const droppedRows = has(tables.dropped)
      ? yield* Effect.flatMap(
        sql`SELECT peer, lane, from_seq, to_seq, run, reason FROM ${sql(tables.dropped)} ORDER BY peer, lane, from_seq`,
        decodeRows(DroppedRow, store, tables.dropped)
      )
      : []
    const deadLetters = has(tables.deadLetters)
      ? yield* Effect.flatMap(
        sql`SELECT peer, lane, count(*) AS count, sum(${length}(payload)) AS bytes, min(dead_lettered_at) AS oldest,
            sum(CASE WHEN replay_requested THEN 1 ELSE 0 END) AS replay
          FROM ${sql(tables.deadLetters)} GROUP BY peer, lane ORDER BY peer, lane`,
        decodeRows(DeadLetterRow, store, tables.deadLetters)
      )
      : null
    const outbound = outboundRows.map((row): OutboundReport => {
      const pending = row.pending ?? 0
      const undated = row.undated ?? 0
      const oldest = pending > 0 && undated === 0 ? row.oldest : null
      return {
        peer: row.peer,
        lane: row.lane,
        pending,
        bytes: row.bytes ?? 0,
        oldestStoredAt: oldest,
        oldestAgeMillis: oldest === null ? null : Math.max(0, readAt - oldest),
        undated,
        nextSeq: row.next_seq,
        firstPending: row.first_pending,
        lowestStored: row.lowest,
        // The ranges an acknowledgement covered are deleted or cut with it; what is below `first_pending` is not
        // pending in any case.
        dropped: droppedRows
          .filter((range) => range.peer === row.peer && range.lane === row.lane && range.to_seq >= row.first_pending)
          .map((range) => ({
            from: Math.max(range.from_seq, row.first_pending),
            to: range.to_seq,
            run: range.run,
            reason: range.reason
          }))
      }
    })
    return {
      store,
      dialect,
      tablePrefix: prefix,
      migration,
      readAt,
      incarnation: storeRows[0]?.incarnation ?? null,
      peerIncarnations,
      inbound,
      outbound,
      deadLetters: deadLetters === null ? null : deadLetters.map((row): DeadLetterReport => ({
        peer: row.peer,
        lane: row.lane,
        count: row.count,
        bytes: row.bytes ?? 0,
        oldestAt: row.oldest,
        oldestAgeMillis: Math.max(0, readAt - row.oldest),
        replayRequested: row.replay ?? 0
      }))
    } satisfies Report
  })

/** Opens a SQLite file read-only, for the scope; a missing file is `NotFound`, never a new store. */
const openSqlite = (filename: string, store: string) =>
  Effect.gen(function*() {
    const stat = yield* Effect.async<Fs.Stats | NodeJS.ErrnoException>((resume) => {
      Fs.stat(filename, (error, stats) => resume(Effect.succeed(error ?? stats)))
    })
    if (!(stat instanceof Fs.Stats)) {
      return yield* new StoreAccessError({
        store,
        reason: stat.code === "ENOENT" ? "NotFound" : "Unreadable",
        cause: stat.code === "ENOENT" ? undefined : stat
      })
    }
    if (!stat.isFile()) return yield* new StoreAccessError({ store, reason: "NotADatabase", detail: "not a file" })
    const Sqlite = yield* Driver.load(
      "intersession inspect",
      "@effect/sql-sqlite-node",
      () => import("@effect/sql-sqlite-node/SqliteClient")
    )
    // Read-only, and without the driver's own `journal_mode = WAL`: a connection that changes nothing.
    const client = yield* Sqlite.make({ filename, readonly: true, disableWAL: true }).pipe(
      Effect.provide(Reactivity.layer),
      Effect.catchAllDefect((cause) => Effect.fail(cause)),
      Effect.mapError(readError(store))
    )
    // A store in use fails at once: its engine holds the lock as long as it runs, and waiting would not help.
    yield* client.unsafe("PRAGMA busy_timeout = 0").pipe(Effect.mapError(readError(store)))
    return client
  })

/** Connects to PostgreSQL for the scope, with one connection: the read is one transaction. */
const openPostgres = (url: Redacted.Redacted, store: string) =>
  Effect.gen(function*() {
    const Pg = yield* Driver.load(
      "intersession inspect",
      "@effect/sql-pg",
      () => import("@effect/sql-pg/PgClient")
    )
    return yield* Pg.make({
      url,
      maxConnections: 1,
      connectTimeout: "5 seconds",
      applicationName: "intersession inspect"
    }).pipe(
      Effect.provide(Reactivity.layer),
      Effect.catchAllDefect((cause) => Effect.fail(cause)),
      Effect.mapError((cause) =>
        new StoreAccessError({ store, reason: "Unreadable", detail: "cannot connect to PostgreSQL", cause })
      )
    )
  })

const checkPrefix = (store: Target) =>
  validPrefix.test(store.tablePrefix) ? Effect.void : Effect.fail(
    new StoreAccessError({
      store: storeName(store),
      reason: "NotAStore",
      detail: `${JSON.stringify(store.tablePrefix)} is not a table prefix (up to 40 lower-case letters, digits and ` +
        "underscores, not starting with a digit)"
    })
  )

/**
 * Runs `f` on a read-only view of the store: on SQLite a read-only connection in one read transaction, on
 * PostgreSQL one `REPEATABLE READ READ ONLY` transaction.
 */
const readOnly = <A>(
  store: Target,
  f: (sql: SqlClient.SqlClient, dialect: "sqlite" | "pg", name: string) => Effect.Effect<A, unknown>
): Effect.Effect<A, StoreAccessError | DriverMissingError> => {
  const name = storeName(store)
  return Effect.scoped(Effect.gen(function*() {
    yield* checkPrefix(store)
    if (store._tag === "Sqlite") {
      const sql = yield* openSqlite(store.filename, name)
      return yield* sql.withTransaction(f(sql, "sqlite", name)).pipe(Effect.mapError(readError(name)))
    }
    const sql = yield* openPostgres(store.url, name)
    return yield* sql.withTransaction(
      Effect.zipRight(sql`SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY`, f(sql, "pg", name))
    ).pipe(Effect.mapError(readError(name)))
  }))
}

/**
 * Reads what a store holds, writing nothing (see the module's description).
 *
 * @internal
 */
export const inspect = (store: Target): Effect.Effect<Report, StoreAccessError | DriverMissingError> =>
  readOnly(store, (sql, dialect, name) => read(sql, dialect, store.tablePrefix, name)).pipe(
    Effect.map((report) => ({ ...report, store: location(store) }))
  )

/**
 * Checks, reading only, that the store exists and is one this version can open: its file is there, and it is a store
 * of this prefix and of a schema this version knows. A store in use passes: opening it says so.
 *
 * @internal
 */
export const checkStore = (store: Target): Effect.Effect<void, StoreAccessError | DriverMissingError> =>
  readOnly(store, (sql, dialect, name) => identify(sql, dialect, store.tablePrefix, name)).pipe(
    Effect.asVoid,
    Effect.catchIf((error) => error._tag === "StoreAccessError" && error.reason === "InUse", () => Effect.void)
  )

// --- formatting --------------------------------------------------------------------------------------------------

/**
 * A duration for people: `850 ms`, `12.3 s`, `4.2 min`, `3.1 h`, `2.0 d`.
 *
 * @internal
 */
export const formatAge = (millis: number): string =>
  millis < 1000
    ? `${Math.round(millis)} ms`
    : millis < 60_000
    ? `${(millis / 1000).toFixed(1)} s`
    : millis < 3_600_000
    ? `${(millis / 60_000).toFixed(1)} min`
    : millis < 86_400_000
    ? `${(millis / 3_600_000).toFixed(1)} h`
    : `${(millis / 86_400_000).toFixed(1)} d`

/**
 * A byte count for people: `512 B`, `1.5 KiB`, `3.2 MiB`.
 *
 * @internal
 */
export const formatBytes = (bytes: number): string =>
  bytes < 1024
    ? `${bytes} B`
    : bytes < 1024 ** 2
    ? `${(bytes / 1024).toFixed(1)} KiB`
    : bytes < 1024 ** 3
    ? `${(bytes / 1024 ** 2).toFixed(1)} MiB`
    : `${(bytes / 1024 ** 3).toFixed(1)} GiB`

/**
 * Rows under a header, in columns: text to the left, numbers (the columns listed in `right`) to the right; every
 * line indented by two spaces.
 *
 * @internal
 */
export const table = (
  header: ReadonlyArray<string>,
  rows: ReadonlyArray<ReadonlyArray<string | number>>,
  right: ReadonlySet<number> = new Set()
): Array<string> => {
  const cells = [header, ...rows.map((row) => row.map(String))]
  const widths = header.map((_, column) => Math.max(...cells.map((row) => row[column]?.length ?? 0)))
  return cells.map((row) =>
    "  " + row.map((cell, column) => {
      const last = column === row.length - 1
      return right.has(column)
        ? cell.padStart(widths[column]!)
        : last
        ? cell
        : cell.padEnd(widths[column]!)
    }).join("  ").trimEnd()
  )
}

const dialectName = { sqlite: "SQLite", pg: "PostgreSQL" } as const

/**
 * The report as readable tables.
 *
 * @internal
 */
export const formatReport = (report: Report): string => {
  const lines: Array<string> = [
    `Store ${report.store}`,
    `  ${dialectName[report.dialect]}, tables ${report.tablePrefix}*, schema ${report.migration}; ` +
    `read at ${new Date(report.readAt).toISOString()} (database clock)`,
    `  incarnation ${report.incarnation ?? "none (the store's first open did not finish)"}`,
    ""
  ]
  const section = (title: string, body: Array<string>) => {
    lines.push(title, ...(body.length === 0 ? ["  none"] : body), "")
  }
  section(
    "Peer incarnations (where not the store's)",
    report.peerIncarnations.length === 0
      ? []
      : table(["peer", "incarnation"], report.peerIncarnations.map((row) => [row.peer, row.incarnation]), new Set([1]))
  )
  section(
    "Inbound streams (received)",
    report.inbound.length === 0 ? [] : table(
      ["peer", "lane", "incarnation", "delivered up to"],
      report.inbound.map((row) => [row.peer, row.lane, row.incarnation, row.delivered]),
      new Set([2, 3])
    )
  )
  const dropped = report.outbound.flatMap((stream) =>
    stream.dropped.map((range) =>
      `    ${stream.peer} [${stream.lane}]: ${
        range.from === range.to ? `seq ${range.from}` : `seqs ${range.from}–${range.to}`
      } ${range.reason} (run ${range.run})`
    )
  )
  section(
    "Outbound streams (pending)",
    report.outbound.length === 0 ? [] : [
      ...table(
        ["peer", "lane", "pending", "oldest", "bytes", "next seq", "first pending", "dropped"],
        report.outbound.map((row) => [
          row.peer,
          row.lane,
          row.pending,
          row.pending === 0 ? "-" : row.oldestAgeMillis === null ? "unknown" : formatAge(row.oldestAgeMillis),
          formatBytes(row.bytes),
          row.nextSeq,
          row.firstPending,
          row.dropped.reduce((total, range) => total + range.to - range.from + 1, 0)
        ]),
        new Set([2, 3, 4, 5, 6, 7])
      ),
      ...(dropped.length === 0 ? [] : ["  dropped, not yet acknowledged:", ...dropped])
    ]
  )
  section(
    "Dead letters",
    report.deadLetters === null
      ? ["  none (the store has no table of dead letters: its schema predates them)"]
      : report.deadLetters.length === 0
      ? []
      : table(
        ["peer", "lane", "count", "oldest", "bytes", "marked for replay"],
        report.deadLetters.map((row) => [
          row.peer,
          row.lane,
          row.count,
          formatAge(row.oldestAgeMillis),
          formatBytes(row.bytes),
          row.replayRequested
        ]),
        new Set([2, 3, 4, 5])
      )
  )
  const undated = report.outbound.reduce((total, stream) => total + stream.undated, 0)
  if (undated > 0) {
    lines.push(
      `"unknown": ${undated} pending message${undated === 1 ? " was" : "s were"} stored by a version older than ` +
        "0.3, which did not record when",
      ""
    )
  }
  return lines.join("\n").trimEnd()
}

/**
 * The report as JSON, for machines: the fields of {@link Report}, times in milliseconds since the epoch.
 *
 * @internal
 */
export const formatJson = (report: Report): string => JSON.stringify(report, null, 2)
