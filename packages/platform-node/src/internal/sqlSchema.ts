/**
 * The SQL store's schema: its tables, behind a table-name prefix, and the migrations that create and upgrade them.
 *
 * @internal
 */
import * as Migrator from "@effect/sql/Migrator"
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

/** @internal */
export interface Tables {
  readonly migrations: string
  readonly store: string
  readonly streams: string
  readonly messages: string
  /** The index of `messages` by `expires_at`, of the messages that expire only. */
  readonly due: string
  readonly dropped: string
  readonly incarnations: string
  readonly received: string
  readonly deadLetters: string
  /** The index of `deadLetters` by stream, then id. */
  readonly deadLettersByStream: string
  /** The index of `deadLetters` by id, of the dead letters marked for replay only. */
  readonly deadLettersReplay: string
}

/** @internal */
export const tablesOf = (prefix: string): Tables => ({
  migrations: `${prefix}migrations`,
  store: `${prefix}store`,
  streams: `${prefix}outbound_streams`,
  messages: `${prefix}outbound_messages`,
  due: `${prefix}outbound_messages_due`,
  dropped: `${prefix}outbound_dropped`,
  incarnations: `${prefix}peer_incarnations`,
  received: `${prefix}received`,
  deadLetters: `${prefix}dead_letters`,
  deadLettersByStream: `${prefix}dead_letters_stream`,
  deadLettersReplay: `${prefix}dead_letters_replay`
})

/**
 * The time on the database's clock, in milliseconds since the epoch, as SQLite computes it (3.42 or later, as
 * `better-sqlite3` bundles): the `stored_at` of each message the store inserts (see `3_expiry`).
 *
 * @internal
 */
export const sqliteNowMillis = "CAST(unixepoch('subsec') * 1000 AS INTEGER)"

/**
 * The store's migrations, which the migrator runs in one transaction, in id order. A migration, once released, never
 * changes: a store records the ones it ran, and runs only those it has not.
 *
 * @internal
 */
export const migrations = (sql: SqlClient.SqlClient, tables: Tables) => {
  const store = sql(tables.store)
  const streams = sql(tables.streams)
  const messages = sql(tables.messages)
  const due = sql(tables.due)
  const dropped = sql(tables.dropped)
  const incarnations = sql(tables.incarnations)
  const received = sql(tables.received)
  const deadLetters = sql(tables.deadLetters)
  const deadLettersByStream = sql(tables.deadLettersByStream)
  const deadLettersReplay = sql(tables.deadLettersReplay)
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
    }),
    // The fencing token of PostgreSQL stores (see `Fence`); SQLite stores have the column and leave it at 0.
    "2_owner_token": sql.onDialectOrElse({
      pg: () => sql`ALTER TABLE ${store} ADD COLUMN owner bigint NOT NULL DEFAULT 0`,
      orElse: () => sql`ALTER TABLE ${store} ADD COLUMN owner INTEGER NOT NULL DEFAULT 0`
    }),
    /**
     * Expiry and dropped messages. Every change is cheap on a store with a backlog: no table is rewritten.
     *
     * - `expires_at`: when the message expires (ms since the epoch, the engine's clock), or NULL; the partial index
     *   `<messages>_due` holds the messages that expire only, so finding due ones costs nothing when there are none.
     * - `stored_at`: when the message was stored, on the database's clock (ms since the epoch), for inspecting a
     *   store offline. NULL for messages stored before this migration. On PostgreSQL it is the column's default;
     *   SQLite cannot add a column whose default is not a constant without copying the table, so its store
     *   statement sets it (`sqliteNowMillis`).
     * - `<prefix>outbound_dropped`: the seqs that `expire` and `purge` removed and no acknowledgement has covered
     *   yet, as ranges of one run and one reason each: `from_seq … to_seq` (both included) were all allocated by
     *   `run`, and all dropped for `reason`, `'expired'` (by `expire`) or `'purged'` (by `purge`). They are written
     *   in the transaction that deletes the messages, and deleted (or cut, keeping their run and reason) by the
     *   acknowledgements that cover them. A stream's seqs from its `first_pending` (one past its last
     *   acknowledgement) to its `next_seq` are exactly its stored messages and its dropped ranges.
     */
    "3_expiry": sql.onDialectOrElse({
      pg: () =>
        Effect.all([
          sql`ALTER TABLE ${messages} ADD COLUMN expires_at bigint, ADD COLUMN stored_at bigint`,
          // Apart from the column, so the rows already stored keep NULL and the table is not rewritten.
          sql`ALTER TABLE ${messages} ALTER COLUMN stored_at
            SET DEFAULT (extract(epoch from clock_timestamp()) * 1000)::bigint`,
          sql`CREATE INDEX ${due} ON ${messages} (expires_at) WHERE expires_at IS NOT NULL`,
          sql`CREATE TABLE ${dropped} (
            peer text NOT NULL,
            lane text NOT NULL,
            from_seq bigint NOT NULL,
            to_seq bigint NOT NULL,
            run bigint NOT NULL,
            reason text NOT NULL CHECK (reason IN ('expired', 'purged')),
            PRIMARY KEY (peer, lane, from_seq),
            CHECK (from_seq <= to_seq)
          )`
        ], { discard: true }),
      orElse: () =>
        Effect.all([
          sql`ALTER TABLE ${messages} ADD COLUMN expires_at INTEGER`,
          sql`ALTER TABLE ${messages} ADD COLUMN stored_at INTEGER`,
          sql`CREATE INDEX ${due} ON ${messages} (expires_at) WHERE expires_at IS NOT NULL`,
          sql`CREATE TABLE ${dropped} (
            peer TEXT NOT NULL,
            lane TEXT NOT NULL,
            from_seq INTEGER NOT NULL,
            to_seq INTEGER NOT NULL,
            run INTEGER NOT NULL,
            reason TEXT NOT NULL CHECK (reason IN ('expired', 'purged')),
            PRIMARY KEY (peer, lane, from_seq),
            CHECK (from_seq <= to_seq)
          ) WITHOUT ROWID`
        ], { discard: true })
    }),
    /**
     * Dead letters: the messages this store's engine gave up delivering, one row each, kept until the application
     * replays or removes them. A new table: the store's other tables are not touched.
     *
     * - `id`: given by the store, increasing in the order the rows were inserted, and never reused (SQLite's
     *   `AUTOINCREMENT`, PostgreSQL's identity column), so a caller pages through them by id.
     * - `peer`, `lane`, `incarnation`, `seq`: which message it was (`peer` is its sender; `incarnation` is stored
     *   as `received` stores it); `payload` its bytes.
     * - `error`: the last failure's message; `attempts`: how many deliveries were tried; `dead_lettered_at`: when it
     *   was moved here, in milliseconds since the epoch (the engine's clock).
     * - `replay_requested`: marked to be delivered again when an engine next starts on the store (PostgreSQL's
     *   `boolean`; SQLite's 0 or 1).
     *
     * `<dead_letters>_stream` serves the queries of one peer or stream in id order; the partial index
     * `<dead_letters>_replay` holds the rows marked for replay only, so an engine finds them at start without a scan.
     */
    "4_dead_letters": sql.onDialectOrElse({
      pg: () =>
        Effect.all([
          sql`CREATE TABLE ${deadLetters} (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            peer text NOT NULL,
            lane text NOT NULL,
            incarnation bigint NOT NULL,
            seq bigint NOT NULL,
            payload bytea NOT NULL,
            error text NOT NULL,
            attempts integer NOT NULL,
            dead_lettered_at bigint NOT NULL,
            replay_requested boolean NOT NULL DEFAULT false
          )`,
          sql`CREATE INDEX ${deadLettersByStream} ON ${deadLetters} (peer, lane, id)`,
          sql`CREATE INDEX ${deadLettersReplay} ON ${deadLetters} (id) WHERE replay_requested`
        ], { discard: true }),
      orElse: () =>
        Effect.all([
          sql`CREATE TABLE ${deadLetters} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            peer TEXT NOT NULL,
            lane TEXT NOT NULL,
            incarnation INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            payload BLOB NOT NULL,
            error TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            dead_lettered_at INTEGER NOT NULL,
            replay_requested INTEGER NOT NULL DEFAULT 0 CHECK (replay_requested IN (0, 1))
          )`,
          sql`CREATE INDEX ${deadLettersByStream} ON ${deadLetters} (peer, lane, id)`,
          sql`CREATE INDEX ${deadLettersReplay} ON ${deadLetters} (id) WHERE replay_requested = 1`
        ], { discard: true })
    })
  })
}

/**
 * The newest migration of this version, as the migrator names it (`<id>_<name>`): a store whose table of migrations
 * records a higher id was written by a newer version, and is refused before anything is written (see `checkSchema`).
 *
 * @internal
 */
export const newestMigration = "4_dead_letters"
