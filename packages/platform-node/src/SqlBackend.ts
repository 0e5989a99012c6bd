/**
 * A `Backend` over `@effect/sql`'s `SqlClient`, written once for SQLite and PostgreSQL.
 *
 * The store is seven tables behind a table-name prefix, created and upgraded by `@effect/sql`'s `Migrator`:
 *
 * - `<prefix>store`: the store's incarnation, created once when the store is first opened, and the owner token
 *   that fences a PostgreSQL store's writes (see below);
 * - `<prefix>outbound_streams`: per (peer, lane), the next seq to allocate and one past the last acknowledged one
 *   (`first_pending`);
 * - `<prefix>outbound_messages`: per (peer, lane, seq), the allocating run, the payload as bytes, when the message
 *   expires (`expires_at`, milliseconds since the epoch, or NULL; an index holds the messages that expire) and when
 *   it was stored (`stored_at`, on the database's clock; NULL for messages stored before migration `3_expiry`);
 * - `<prefix>outbound_dropped`: the seqs `expire` and `purge` removed and no acknowledgement has covered yet, as
 *   ranges `from_seq … to_seq` of one `run` each, with why (`reason`: `'expired'` or `'purged'`);
 * - `<prefix>peer_incarnations`: the incarnation used toward a peer, where it differs from the store's;
 * - `<prefix>received`: per inbound (peer, lane), the source incarnation, the delivered seq and its last runs;
 * - `<prefix>dead_letters`: the messages this store's engine gave up delivering, one row each, with an `id` the store
 *   gives in the order they were stored and never reuses, which message it was (`peer`, `lane`, `incarnation`,
 *   `seq`), its `payload`, the last `error`, its `attempts`, when it was moved (`dead_lettered_at`, milliseconds since
 *   the epoch) and whether it is marked for replay (`replay_requested`). `commitReceived` writes them with the
 *   receive states in one transaction; `requestReplay` counts every dead letter of the ids given, whether or not it
 *   was marked so already.
 *
 * Every operation is a few statements in one transaction, whatever the size of its batch: a statement carries up to
 * 1,024 rows, and its text is one of a few per operation, so the driver's statement cache keeps them prepared.
 * Writes made outside a transaction (`append`, `acknowledge`, `expire`, `purge`, `commitReceived`, …) are
 * group-committed: a write made while no other runs commits at once, in a transaction of its own; writes that
 * arrive meanwhile queue, and one writer runs every write waiting in the next transaction, in arrival order, and
 * answers each caller once it commits. `expire` first looks for a due message in the index of those that expire,
 * and writes nothing when there is none. If a transaction fails, every write in it fails with `BackendError` and none is applied. Writes made
 * inside `withTransaction` run in that transaction instead, and commit or roll back with it. The backend is
 * transactional: `withTransaction` runs its effect as a transaction of the client (a nested call, or one inside the
 * client's own `withTransaction`, is a savepoint), so a `Delivery` that writes through the same `SqlClient` commits
 * or rolls back together with the receive state that records it, and a message is delivered exactly once even
 * across crashes.
 *
 * Opening the store takes ownership of it: on SQLite an exclusive lock on the database file, held by the
 * connection until it closes; on PostgreSQL a session advisory lock on a connection reserved for the scope. A
 * second owner fails with `StoreLockedError` until the first closes its scope or its process dies. The SQLite lock
 * cannot lapse while its process lives (unless the process opens the file by other means: see `SqliteBackend`).
 * The PostgreSQL lock can, with its connection: then every operation fails
 * with a `BackendError` caused by `StoreLostError`, and a fencing token, which each new owner advances and each
 * transaction checks under a row lock, keeps every write of the old owner from committing after a new owner took
 * the store.
 *
 * Before anything is written, the store is checked: one written by a newer version of this library (its table of
 * migrations records a migration this version does not know) is refused with `StoreUnusableError`, and so is a
 * database that cannot be written.
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { BackendError, StoreLockedError, StoreUnusableError } from "@intersession/core/Backend"
import { Backend } from "@intersession/core/Backend"
import * as Data from "effect/Data"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as internal from "./internal/sqlBackend.js"

/**
 * Options of the SQL backend.
 *
 * - `tablePrefix` starts the name of every table of the store (`"intersession_"` by default): up to 40 lower-case
 *   letters, digits and underscores. Stores with different prefixes are independent, even in one database, and
 *   each has its own owner.
 * - `name` names the store in `StoreLockedError` (by default the dialect and the prefix).
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly tablePrefix?: string | undefined
  readonly name?: string | undefined
}

/**
 * A backend's SQL driver is not installed, or does not load. The drivers are optional peer dependencies of
 * `@intersession/platform-node`, so an application installs only the one it uses: `@effect/sql-sqlite-node` (which
 * brings the native addon `better-sqlite3`) for `SqliteBackend`, `@effect/sql-pg` for `PostgresBackend`.
 *
 * @since 0.2.0
 * @category errors
 */
export class DriverMissingError extends Data.TaggedError("DriverMissingError")<{
  /** The backend that needs the driver, e.g. `SqliteBackend`. */
  readonly backend: string
  /** The npm package of the driver. */
  readonly driver: string
  readonly cause: unknown
}> {
  override get message(): string {
    const reason = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `${this.backend} needs ${this.driver}, an optional peer dependency of @intersession/platform-node: ` +
      `install it with \`npm install ${this.driver}\` (loading it failed: ${reason})`
  }
}

/**
 * The table prefix used when none is given.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultTablePrefix: string = internal.defaultTablePrefix

/**
 * Opens the store on the `SqlClient` in context: takes ownership of it, runs its migrations, creates its
 * incarnation on first use, and returns its `Backend`. Fails with `StoreLockedError` while another owner lives;
 * with `StoreUnusableError`, having written nothing, when the database cannot be used (not a database, corrupt,
 * read-only, or a store written by a newer version of this library); and with `BackendError` for a client of
 * another dialect, an invalid prefix or a failed migration.
 *
 * Ownership lasts as long as the scope. On SQLite it puts the client's connection in exclusive locking mode with no
 * busy timeout: the file lock is the connection's and lasts until the client closes (`SqliteBackend` closes it
 * with the scope); within this process, another store with the same prefix on the same client is refused too. On
 * PostgreSQL the lock holds one pooled connection for the scope, so the pool needs at least two.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (
  options?: Options
) => Effect.Effect<
  Backend["Type"],
  BackendError | StoreLockedError | StoreUnusableError,
  SqlClient.SqlClient | Scope.Scope
> = internal.make

/**
 * The SQL backend as a layer over the `SqlClient` in context.
 *
 * @example
 * ```ts
 * import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
 * import * as FileSystem from "@effect/platform/FileSystem"
 * import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
 * import * as SqlClient from "@effect/sql/SqlClient"
 * import * as SqlBackend from "@intersession/platform-node/SqlBackend"
 * import * as Context from "effect/Context"
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 *
 * const program = Effect.gen(function*() {
 *   const directory = yield* Effect.flatMap(FileSystem.FileSystem, (fs) => fs.makeTempDirectoryScoped())
 *   // The application's own client, and the store in the same database behind its table prefix; provide the
 *   // resulting `Backend` to `ILM.layer`.
 *   const client = SqliteClient.layer({ filename: `${directory}/app.db` })
 *   const store = SqlBackend.layer({ tablePrefix: "messaging_" }).pipe(Layer.provideMerge(client))
 *
 *   const sql = Context.get(yield* Layer.build(store), SqlClient.SqlClient)
 *   const tables = yield* sql<{ readonly name: string }>`
 *     SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'messaging%' ORDER BY name`
 *   console.log(tables.map((table) => table.name))
 *   // [ 'messaging_migrations', 'messaging_outbound_dropped', 'messaging_outbound_messages',
 *   //   'messaging_outbound_streams', 'messaging_peer_incarnations', 'messaging_received', 'messaging_store' ]
 * })
 *
 * Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(NodeFileSystem.layer)))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options?: Options
): Layer.Layer<Backend, BackendError | StoreLockedError | StoreUnusableError, SqlClient.SqlClient> =>
  Layer.scoped(Backend, make(options))
