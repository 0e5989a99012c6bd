/**
 * The SQL backend on PostgreSQL through `@effect/sql-pg`.
 *
 * Several stores can share one database: each lives in its own tables, named by `tablePrefix`, and is owned by one
 * engine at a time through a session advisory lock keyed by the current schema and the prefix. The lock is held on
 * a connection reserved for the layer's lifetime; closing the layer, or the end of the session (a dead process, a
 * dropped connection), frees it.
 *
 * The layer also provides the `SqlClient` (and the `PgClient`), so an application's `Delivery` can write its own
 * tables in the same transaction as the receive state: see `SqlBackend`.
 *
 * @since 0.1.0
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import type * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { Backend, BackendError, type StoreLockedError, type StoreUnusableError } from "@intersession/core/Backend"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Driver from "./internal/driver.js"
import * as internal from "./internal/sqlBackend.js"
import type { DriverMissingError } from "./SqlBackend.js"

/**
 * Options of a PostgreSQL store.
 *
 * - `url`: a connection string (`postgres://user@host:5432/database`); `host`, `port`, `database`, `username` and
 *   `password` override its parts or stand in for it.
 * - `tablePrefix`: the prefix of the store's tables, as in `SqlBackend.Options`; one database holds any number of
 *   stores with different prefixes.
 * - `maxConnections`: the size of the connection pool (10 by default); the store's lock keeps one of them.
 * - `connectTimeout`: how long to wait for the server (5 seconds by default).
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly url?: string | Redacted.Redacted | undefined
  readonly host?: string | undefined
  readonly port?: number | undefined
  readonly database?: string | undefined
  readonly username?: string | undefined
  readonly password?: string | Redacted.Redacted | undefined
  readonly tablePrefix?: string | undefined
  readonly maxConnections?: number | undefined
  readonly connectTimeout?: Duration.DurationInput | undefined
  readonly applicationName?: string | undefined
}

const redacted = (value: string | Redacted.Redacted | undefined) =>
  value === undefined || Redacted.isRedacted(value) ? value : Redacted.make(value)

/**
 * Connects to PostgreSQL, opens the store named by `tablePrefix` and provides its `Backend`, and the `SqlClient`
 * and `PgClient` of the connection pool. Fails with `StoreLockedError` while another engine owns the store; with
 * `StoreUnusableError`, having written nothing, when the server only runs read-only transactions or a newer
 * version wrote the store; with `BackendError` when the server cannot be reached or the store cannot be migrated
 * (its message gives the server's SQLSTATE and reason); and with `DriverMissingError` when `@effect/sql-pg` is not
 * installed (it is loaded only here).
 *
 * If the connection that holds the store's lock ends while the engine runs (a terminated backend, a dropped
 * connection), another engine can take the store. This one learns it at once, from the connection's events (and a
 * check of the connection every 2 seconds), and from then on every operation of its backend fails with a
 * `BackendError` caused by `StoreLostError`. Its writes are also fenced: each transaction checks, under a row lock,
 * the owner token the engine wrote when it took the store, so none of its writes commits once another engine has
 * taken the store, even before it learns that its lock is gone.
 *
 * @example
 * ```ts
 * import * as Delivery from "@intersession/core/Delivery"
 * import * as ILM from "@intersession/core/ILM"
 * import * as PeerId from "@intersession/core/PeerId"
 * import * as PostgresBackend from "@intersession/platform-node/PostgresBackend"
 * import * as TcpNetwork from "@intersession/platform-node/TcpNetwork"
 * import * as Config from "effect/Config"
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 *
 * const carol = PeerId.make("carol")
 * const dave = PeerId.make("dave")
 * const peers = new Map([[carol, { host: "10.0.0.1", port: 7400 }], [dave, { host: "10.0.0.2", port: 7400 }]])
 *
 * // carol keeps her state in PostgreSQL, so it outlives her host: she can restart on another one. Her store is the
 * // tables prefixed `carol_`; other stores can share the database under other prefixes.
 * export const carolLayer = Layer.unwrapEffect(Effect.gen(function*() {
 *   const url = yield* Config.redacted("DATABASE_URL")
 *   const key = yield* Config.redacted("INTERSESSION_KEY")
 *   return ILM.layer().pipe(
 *     Layer.provideMerge(Delivery.layerInbox()),
 *     Layer.provide(TcpNetwork.layer({ peer: carol, listen: { port: 7400 }, peers, key })),
 *     Layer.provide(PostgresBackend.layer({ url, tablePrefix: "carol_", maxConnections: 4 }))
 *   )
 * }))
 * // An application runs it with, say, `NodeRuntime.runMain(Layer.launch(carolLayer))`.
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options
): Layer.Layer<
  Backend | SqlClient.SqlClient | PgClient.PgClient,
  BackendError | StoreLockedError | StoreUnusableError | DriverMissingError
> =>
  Layer.scopedContext(Effect.gen(function*() {
    const Pg = yield* Driver.load("PostgresBackend", "@effect/sql-pg", () => import("@effect/sql-pg/PgClient"))
    const client = yield* Pg.make({
      url: redacted(options.url),
      host: options.host,
      port: options.port,
      database: options.database,
      username: options.username,
      password: redacted(options.password),
      maxConnections: options.maxConnections,
      connectTimeout: options.connectTimeout === undefined ? undefined : Duration.decode(options.connectTimeout),
      applicationName: options.applicationName ?? "@intersession/platform-node"
    }).pipe(
      Effect.provide(Reactivity.layer),
      Effect.mapError((cause) => new BackendError({ operation: "connect", cause })),
      // The driver can throw synchronously on a malformed configuration: a failure to connect, not a defect.
      Effect.catchAllDefect((cause) => Effect.fail(new BackendError({ operation: "connect", cause })))
    )
    const store = options.tablePrefix ?? internal.defaultTablePrefix
    const backend = yield* internal.make({
      tablePrefix: options.tablePrefix,
      name: `${client.config.database ?? "postgres"}/${store}`
    }).pipe(Effect.provideService(SqlClient.SqlClient, client))
    return Context.make(Backend, backend).pipe(
      Context.add(SqlClient.SqlClient, client),
      Context.add(Pg.PgClient, client)
    )
  }))
