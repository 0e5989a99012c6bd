/**
 * The PostgreSQL server of the tests, and stores on it. Needs a server on 127.0.0.1:5432 with a database `test`
 * (user `postgres` or the current user, trust authentication), or the URL in `INTERSESSION_TEST_PG_URL`; without
 * one, `probe.url` is undefined and `probe.reason` says why, for the tests to report themselves as skipped.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { Backend } from "@intersession/core/Backend"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Os from "node:os"
import * as PostgresBackend from "../src/PostgresBackend.js"

/**
 * Where to look for the server. The tests' own sessions commit without waiting for the disk (the stores' tables are
 * created and dropped by the hundred): durability is the server's business and nothing here depends on it.
 */
export const testSessions = "options=-c%20synchronous_commit%3Doff"
const candidates = process.env.INTERSESSION_TEST_PG_URL !== undefined
  ? [process.env.INTERSESSION_TEST_PG_URL]
  : [
    `postgres://postgres@127.0.0.1:5432/test?${testSessions}`,
    `postgres://${Os.userInfo().username}@127.0.0.1:5432/test?${testSessions}`
  ]

/** The first candidate URL a client can connect to within 2 seconds, or why none could. */
export const probe: { readonly url: string | undefined; readonly reason: string | undefined } = await Effect.runPromise(
  Effect.firstSuccessOf(
    candidates.map((url) =>
      Effect.scoped(PgClient.make({ url: Redacted.make(url), connectTimeout: Duration.seconds(2) })).pipe(
        Effect.provide(Reactivity.layer),
        Effect.as(url)
      )
    )
  ).pipe(
    Effect.map((url) => ({ url, reason: undefined })),
    Effect.catchAllCause((cause) => Effect.succeed({ url: undefined, reason: Cause.pretty(cause).split("\n")[0] }))
  )
)

export const url = probe.url ?? ""
if (probe.url === undefined) {
  console.warn(`PostgreSQL tests SKIPPED: no PostgreSQL at ${candidates.join(" or ")} (${probe.reason})`)
}

/** The name of a suite that needs the server, saying why it is skipped when there is none. */
export const suiteName = (name: string) =>
  probe.url === undefined ? `${name} (skipped: no PostgreSQL reachable: ${probe.reason})` : name

let stores = 0
/** A table prefix no other store of this run or of another run uses. */
export const uniquePrefix = () => `it${process.pid}_${++stores}_${Math.random().toString(36).slice(2, 8)}_`

/** Drops every table of the store with this prefix. */
const dropStore = (prefix: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const tables = yield* sql<{ tablename: string }>`
      SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND starts_with(tablename, ${prefix})`
    // One statement, one commit. The names are the store's own: a prefix of [a-z0-9_] and a fixed suffix.
    if (tables.length > 0) {
      yield* sql.unsafe(`DROP TABLE IF EXISTS ${tables.map((table) => `"${table.tablename}"`).join(", ")}`)
    }
  })

/** A client of the test database for the tests' own statements, apart from the stores' clients. */
export const adminLayer = PgClient.layer({ url: Redacted.make(url) })

/** A fresh store prefix for the scope; its tables are dropped when the scope closes. */
export const freshPrefix = Effect.flatMap(SqlClient.SqlClient, (admin) =>
  Effect.acquireRelease(
    Effect.sync(uniquePrefix),
    (prefix) => Effect.orDie(Effect.provideService(dropStore(prefix), SqlClient.SqlClient, admin))
  ))

export const openBackend = (options: Omit<PostgresBackend.Options, "url">) =>
  Layer.build(PostgresBackend.layer({ url, ...options })).pipe(
    Effect.map(Context.get(Backend)),
    // The repository installs the driver: its absence here is a broken checkout, not a store's failure.
    Effect.catchTag("DriverMissingError", Effect.die)
  )

/** Builds the layer in a scope of its own, returned with its context so a test can close it when it chooses. */
export const openScoped = (options: PostgresBackend.Options & { readonly url?: string | undefined }) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(PostgresBackend.layer({ url, ...options }), scope)
    return { context, backend: Context.get(context, Backend), close: Scope.close(scope, Exit.void) }
  })

/** Opens the store, retrying while it is still locked: a server notices a dead session a moment later. */
export const openWhenFree = (options: Omit<PostgresBackend.Options, "url">) =>
  openBackend(options).pipe(
    Effect.retry({
      while: (error) => error._tag === "StoreLockedError",
      schedule: Schedule.spaced("50 millis").pipe(Schedule.upTo("5 seconds"))
    })
  )
