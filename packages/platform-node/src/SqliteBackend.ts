/**
 * The embedded default store: the SQL backend on a SQLite file through `@effect/sql-sqlite-node`.
 *
 * The database runs in WAL mode with the configured `synchronous` level, and in exclusive locking mode: the engine
 * that opens the file holds SQLite's lock on it until its scope closes or its process dies, and any other
 * connection to the file, in this process or another, is refused (the layer fails with `StoreLockedError`). The
 * lock cannot lapse while the engine runs, with one exception that SQLite documents: it is a POSIX lock, which the
 * process loses when it closes any descriptor of the file, so the application must not open the store's file by
 * other means while the engine runs (reading or copying it: back it up with SQLite, `VACUUM INTO`, instead).
 *
 * The layer also provides the `SqlClient` (and the `SqliteClient`) of the database, so an application's `Delivery`
 * can write its own tables in the same transaction as the receive state: see `SqlBackend`.
 *
 * @since 0.1.0
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import type * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { Backend, BackendError, type StoreLockedError, StoreUnusableError } from "@intersession/core/Backend"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Driver from "./internal/driver.js"
import * as internal from "./internal/sqlBackend.js"
import type { DriverMissingError } from "./SqlBackend.js"

/**
 * Options of a SQLite store.
 *
 * - `filename`: the database file, created when missing (its directory must exist).
 * - `synchronous`: `"NORMAL"` (the default) keeps every committed transaction through a crash of the process;
 *   `"FULL"` also through a power loss or an operating system crash, at the cost of a sync per commit.
 * - `tablePrefix`: the prefix of the store's tables, as in `SqlBackend.Options`.
 * - `checkIntegrity`: whether to check every page of the store when it opens (`PRAGMA quick_check`; `true` by
 *   default), so a corrupt store is refused before anything is written to it. The check reads the whole file once:
 *   a store holds only what is pending, but one with a large backlog opens faster without it (some 0.4 s per 200 MB
 *   read from the page cache).
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly filename: string
  readonly synchronous?: "NORMAL" | "FULL" | undefined
  readonly tablePrefix?: string | undefined
  readonly checkIntegrity?: boolean | undefined
}

/**
 * The defaults of the optional settings.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults: { readonly synchronous: "NORMAL" | "FULL"; readonly checkIntegrity: boolean } = {
  synchronous: "NORMAL",
  checkIntegrity: true
}

/**
 * Opens the SQLite store at `filename` and provides its `Backend`, and its `SqlClient` and `SqliteClient` for
 * the application's own tables. Fails with `StoreLockedError` while another connection owns the file; with
 * `StoreUnusableError`, having written nothing, when the file is not a database, is corrupt (every page is checked
 * with `PRAGMA quick_check`), cannot be written (a read-only file or directory) or was written by a newer version;
 * with `BackendError` when the file cannot be opened or migrated (its message gives SQLite's reason); and with
 * `DriverMissingError` when `@effect/sql-sqlite-node` is not installed (it is loaded only here). Closing the layer
 * closes the database and frees it.
 *
 * @example
 * ```ts
 * import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
 * import * as FileSystem from "@effect/platform/FileSystem"
 * import * as SqlClient from "@effect/sql/SqlClient"
 * import * as Delivery from "@intersession/core/Delivery"
 * import * as ILM from "@intersession/core/ILM"
 * import * as PeerId from "@intersession/core/PeerId"
 * import * as SqliteBackend from "@intersession/platform-node/SqliteBackend"
 * import * as TcpNetwork from "@intersession/platform-node/TcpNetwork"
 * import * as Context from "effect/Context"
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 * import * as Redacted from "effect/Redacted"
 *
 * const alice = PeerId.make("alice")
 * const bob = PeerId.make("bob")
 * const peers = new Map([[alice, { host: "127.0.0.1", port: 47421 }], [bob, { host: "127.0.0.1", port: 47422 }]])
 * const key = Redacted.make("the deployment's pre-shared key")
 * const network = (id: PeerId.PeerId) => TcpNetwork.layer({ peer: id, listen: peers.get(id)!, peers, key })
 *
 * // bob's application writes each message to a table of its own through the store's `SqlClient`: the row and the
 * // store's record of the delivery commit together, so a message is applied once, even across crashes.
 * const notes = Layer.effect(
 *   Delivery.Delivery,
 *   Effect.gen(function*() {
 *     const sql = yield* SqlClient.SqlClient
 *     yield* sql`CREATE TABLE IF NOT EXISTS notes (source TEXT NOT NULL, body TEXT NOT NULL)`
 *     return Delivery.Delivery.of({
 *       deliver: (message) =>
 *         sql`INSERT INTO notes VALUES (${message.source}, ${new TextDecoder().decode(message.payload)})`.pipe(
 *           Effect.asVoid,
 *           Effect.mapError((cause) => new Delivery.DeliveryError({ reason: "cannot write the note", cause }))
 *         )
 *     })
 *   })
 * )
 *
 * const program = Effect.gen(function*() {
 *   const directory = yield* Effect.flatMap(FileSystem.FileSystem, (fs) => fs.makeTempDirectoryScoped())
 *   const atBob = yield* Layer.build(
 *     ILM.layer().pipe(
 *       Layer.provide(Layer.merge(network(bob), notes)),
 *       // `provideMerge`: the store's `SqlClient` serves `notes` and stays in bob's context.
 *       Layer.provideMerge(SqliteBackend.layer({ filename: `${directory}/bob.db`, synchronous: "FULL" }))
 *     )
 *   )
 *   const sender = yield* Layer.build(
 *     ILM.layer().pipe(
 *       Layer.provide(Layer.merge(network(alice), Delivery.layerInbox())),
 *       Layer.provide(SqliteBackend.layer({ filename: `${directory}/alice.db` }))
 *     )
 *   ).pipe(Effect.map(Context.get(ILM.ILM)))
 *
 *   yield* sender.sendAndAwait(bob, new TextEncoder().encode("hello"))
 *   const sql = Context.get(atBob, SqlClient.SqlClient)
 *   console.log(yield* sql`SELECT source, body FROM notes`) // [ { source: 'alice', body: 'hello' } ]
 * })
 *
 * Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(NodeFileSystem.layer)))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options
): Layer.Layer<
  Backend | SqlClient.SqlClient | SqliteClient.SqliteClient,
  BackendError | StoreLockedError | StoreUnusableError | DriverMissingError
> =>
  Layer.scopedContext(Effect.gen(function*() {
    const synchronous = options.synchronous ?? defaults.synchronous
    if (synchronous !== "NORMAL" && synchronous !== "FULL") {
      return yield* new BackendError({
        operation: "open",
        cause: new Error(`synchronous must be "NORMAL" or "FULL", got ${JSON.stringify(synchronous)}`)
      })
    }
    yield* checkWritable(options.filename)
    const Sqlite = yield* Driver.load(
      "SqliteBackend",
      "@effect/sql-sqlite-node",
      () => import("@effect/sql-sqlite-node/SqliteClient")
    )
    const client = yield* Sqlite.make({ filename: options.filename, disableWAL: true }).pipe(
      Effect.provide(Reactivity.layer),
      // The driver throws from its constructor (a missing directory, say): the client turns that into a defect, and
      // it is where the store meets the driver that it becomes a typed error.
      Effect.catchAllDefect((cause) => Effect.fail(new BackendError({ operation: "open", cause })))
    )
    const open = (cause: unknown) => new BackendError({ operation: "open", cause })
    // The journal mode is set once the lock is held and the store checked, before anything is written: entering
    // WAL in exclusive locking mode keeps the WAL index in the connection's memory, with no shared-memory file
    // another process could use.
    const prepare = Effect.gen(function*() {
      const journal = yield* client.unsafe<{ readonly journal_mode?: unknown }>("PRAGMA journal_mode = WAL").pipe(
        Effect.mapError(open)
      )
      if (journal[0]?.journal_mode !== "wal") {
        return yield* open(
          new Error(`${options.filename} did not enter WAL mode (journal mode ${String(journal[0]?.journal_mode)})`)
        )
      }
      yield* client.unsafe(`PRAGMA synchronous = ${synchronous}`).pipe(Effect.mapError(open))
    })
    const backend = yield* internal.make({
      tablePrefix: options.tablePrefix,
      name: options.filename,
      checkIntegrity: options.checkIntegrity ?? defaults.checkIntegrity,
      prepare
    }).pipe(Effect.provideService(SqlClient.SqlClient, client))
    return Context.make(Backend, backend).pipe(
      Context.add(SqlClient.SqlClient, client),
      Context.add(Sqlite.SqliteClient, client)
    )
  }))

/**
 * Refuses a store SQLite could not write, before opening it: a file that exists and is read-only, or a directory
 * where SQLite cannot create the store's `-wal` file (a read-only directory or file system). SQLite would open
 * such a store read-only and fail only at the first write, with an error that does not say why (`SQLITE_IOERR_LOCK`
 * for a read-only file of a WAL store). What cannot be checked here, SQLite's own probe checks (see `lockSqlite`).
 */
const checkWritable = (filename: string) => {
  const refused = (error: NodeJS.ErrnoException | null) =>
    error !== null && (error.code === "EACCES" || error.code === "EPERM" || error.code === "EROFS")
  const access = (path: string) =>
    Effect.async<NodeJS.ErrnoException | null>((resume) => {
      Fs.access(path, Fs.constants.W_OK, (error) => resume(Effect.succeed(error)))
    })
  const writable = (path: string, detail: string) =>
    Effect.flatMap(access(path), (error) =>
      refused(error)
        ? Effect.fail(new StoreUnusableError({ store: filename, reason: "ReadOnly", detail, cause: error }))
        : Effect.void)
  // An in-memory or temporary database, or a URI: nothing to check on the file system.
  if (filename === "" || filename === ":memory:" || filename.startsWith("file:")) return Effect.void
  return Effect.zipRight(
    writable(filename, "the file is read-only"),
    writable(
      Path.dirname(Path.resolve(filename)),
      "its directory is read-only, and SQLite writes the store's -wal file there"
    )
  )
}
