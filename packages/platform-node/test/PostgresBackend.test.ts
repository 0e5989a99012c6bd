/**
 * The SQL backend on PostgreSQL: the conformance suite and ownership through advisory locks. Needs a server on
 * 127.0.0.1:5432 with a database `test` (user `postgres` or the current user, trust authentication), or the URL in
 * `INTERSESSION_TEST_PG_URL`; without one every test here is reported as skipped, with the reason.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Backend } from "@intersession/core/Backend"
import * as PeerId from "@intersession/core/PeerId"
import * as BackendSuite from "@intersession/testing/BackendSuite"
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
import { rowCountsRoundTrip, script, spawnScript } from "./SqlTestKit.js"

/**
 * Where to look for the server. The tests' own sessions commit without waiting for the disk (the stores' tables are
 * created and dropped by the hundred): durability is the server's business and nothing here depends on it.
 */
const testSessions = "options=-c%20synchronous_commit%3Doff"
const candidates = process.env.INTERSESSION_TEST_PG_URL !== undefined
  ? [process.env.INTERSESSION_TEST_PG_URL]
  : [
    `postgres://postgres@127.0.0.1:5432/test?${testSessions}`,
    `postgres://${Os.userInfo().username}@127.0.0.1:5432/test?${testSessions}`
  ]

/** The first candidate URL a client can connect to within 2 seconds, or why none could. */
const probe = await Effect.runPromise(
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

const url = probe.url ?? ""
if (probe.url === undefined) {
  console.warn(`PostgresBackend tests SKIPPED: no PostgreSQL at ${candidates.join(" or ")} (${probe.reason})`)
}

let stores = 0
/** A table prefix no other store of this run or of another run uses. */
const uniquePrefix = () => `it${process.pid}_${++stores}_${Math.random().toString(36).slice(2, 8)}_`

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
const adminLayer = PgClient.layer({ url: Redacted.make(url) })

/** A fresh store prefix for the scope; its tables are dropped when the scope closes. */
const freshPrefix = Effect.flatMap(SqlClient.SqlClient, (admin) =>
  Effect.acquireRelease(
    Effect.sync(uniquePrefix),
    (prefix) => Effect.orDie(Effect.provideService(dropStore(prefix), SqlClient.SqlClient, admin))
  ))

const openBackend = (options: Omit<PostgresBackend.Options, "url">) =>
  Layer.build(PostgresBackend.layer({ url, ...options })).pipe(
    Effect.map(Context.get(Backend)),
    // The repository installs the driver: its absence here is a broken checkout, not a store's failure.
    Effect.catchTag("DriverMissingError", Effect.die)
  )

/** Every open builds the store's own layer, with a pool of its own: what a restarted engine does. */
const fixture = Layer.effect(
  BackendSuite.BackendFixture,
  Effect.map(SqlClient.SqlClient, (admin) =>
    BackendSuite.BackendFixture.of({
      makeStore: Effect.map(
        Effect.provideService(freshPrefix, SqlClient.SqlClient, admin),
        (tablePrefix) => ({ open: openBackend({ tablePrefix }) })
      )
    }))
).pipe(Layer.provide(adminLayer))

const A = PeerId.make("A")
const text = (value: string) => new TextEncoder().encode(value)

/** Builds the layer in a scope of its own, returned with its context so a test can close it when it chooses. */
const openScoped = (options: Omit<PostgresBackend.Options, "url">) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(PostgresBackend.layer({ url, ...options }), scope)
    return { context, backend: Context.get(context, Backend), close: Scope.close(scope, Exit.void) }
  })

/** Opens the store, retrying while it is still locked: a server notices a dead session a moment later. */
const openWhenFree = (options: Omit<PostgresBackend.Options, "url">) =>
  openBackend(options).pipe(
    Effect.retry({
      while: (error) => error._tag === "StoreLockedError",
      schedule: Schedule.spaced("50 millis").pipe(Schedule.upTo("5 seconds"))
    })
  )

describe.skipIf(probe.url === undefined)(
  probe.url === undefined ? `PostgresBackend (skipped: no PostgreSQL reachable: ${probe.reason})` : "PostgresBackend",
  () => {
    // The suite's tests are independent (each makes its own stores) and mostly wait on the server: run them side by
    // side, as engines on separate stores would.
    describe.concurrent("conformance", () => BackendSuite.backendSuite("suite", fixture))

    describe("store", () => {
      it.scopedLive("payloads are stored as bytea, byte for byte", () =>
        Effect.gen(function*() {
          const tablePrefix = yield* freshPrefix
          const { backend, context } = yield* openScoped({ tablePrefix })
          const payload = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff)
          yield* backend.append([{ peer: A, lane: "x", payload }], 1)
          const sql = Context.get(context, SqlClient.SqlClient)
          const columns = yield* sql<{ data_type: string }>`
            SELECT data_type FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = ${`${tablePrefix}outbound_messages`}
              AND column_name = 'payload'`
          assert.deepStrictEqual(columns.map((column) => column.data_type), ["bytea"])
          const stored = yield* sql<{ length: number }>`
            SELECT octet_length(payload) AS length FROM ${sql(`${tablePrefix}outbound_messages`)}`
          assert.deepStrictEqual(stored.map((row) => row.length), [300])
        }).pipe(Effect.scoped, Effect.provide(adminLayer)))

      it.scopedLive("batches of every statement row count: appends, acknowledgements and receive states", () =>
        Effect.gen(function*() {
          const { backend } = yield* openScoped({ tablePrefix: yield* freshPrefix })
          yield* rowCountsRoundTrip(backend)
        }).pipe(Effect.scoped, Effect.provide(adminLayer)))

      it.scopedLive("stores with different prefixes in one database have different owners", () =>
        Effect.gen(function*() {
          const one = yield* openScoped({ tablePrefix: yield* freshPrefix })
          const two = yield* openScoped({ tablePrefix: yield* freshPrefix })
          assert.deepStrictEqual(yield* one.backend.append([{ peer: A, lane: "x", payload: text("one") }], 1), [1])
          assert.deepStrictEqual(yield* two.backend.append([{ peer: A, lane: "x", payload: text("two") }], 1), [1])
        }).pipe(Effect.scoped, Effect.provide(adminLayer)))

      it.scopedLive("a lost session frees the store: its owner's connections are terminated", () =>
        Effect.gen(function*() {
          const tablePrefix = yield* freshPrefix
          const applicationName = `intersession-test-${tablePrefix}`
          const first = yield* openScoped({ tablePrefix, applicationName })
          yield* first.backend.append([{ peer: A, lane: "x", payload: text("kept") }], 1)
          const refused = yield* Effect.flip(Effect.scoped(openBackend({ tablePrefix })))
          assert.strictEqual(refused._tag, "StoreLockedError")
          const admin = yield* SqlClient.SqlClient
          const terminated = yield* admin<{ terminated: boolean }>`
            SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity
            WHERE application_name = ${applicationName}`
          assert.isAbove(terminated.length, 0, "the owner had sessions to terminate")
          const second = yield* Effect.scoped(Effect.flatMap(
            openWhenFree({ tablePrefix }),
            (backend) => backend.read(A, "x", 1, 10)
          ))
          assert.deepStrictEqual(second.map((m) => new TextDecoder().decode(m.payload)), ["kept"])
        }).pipe(Effect.scoped, Effect.provide(adminLayer)))

      it.scopedLive("a store owned by another process is refused here, and freed when that process is killed", () =>
        Effect.gen(function*() {
          const tablePrefix = yield* freshPrefix
          const holder = yield* spawnScript(script("PostgresLockChild.ts"), [url, tablePrefix, "hold"])
          const held = yield* holder.next
          assert.strictEqual(held.result, "opened", held.detail)
          const refused = yield* Effect.flip(Effect.scoped(openBackend({ tablePrefix })))
          assert.strictEqual(refused._tag, "StoreLockedError")
          yield* holder.kill
          const backend = yield* openWhenFree({ tablePrefix })
          assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text("after") }], 1), [1])
        }).pipe(Effect.scoped, Effect.provide(adminLayer)))

      it.scopedLive("fails with BackendError when the server cannot be reached", () =>
        Effect.gen(function*() {
          const error = yield* Effect.flip(Effect.scoped(Effect.map(
            Layer.build(PostgresBackend.layer({
              url: "postgres://postgres@127.0.0.1:1/test",
              connectTimeout: Duration.seconds(2)
            })),
            Context.get(Backend)
          )))
          assert.strictEqual(error._tag, "BackendError")
        }))
    })
  }
)
