/**
 * The SQL backend on PostgreSQL: the conformance suite and ownership through advisory locks. Needs the server of
 * PgTestKit.ts; without one every test here is reported as skipped, with the reason.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Backend } from "@intersession/core/Backend"
import * as PeerId from "@intersession/core/PeerId"
import * as BackendSuite from "@intersession/testing/BackendSuite"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as PostgresBackend from "../src/PostgresBackend.js"
import { adminLayer, freshPrefix, openBackend, openScoped, openWhenFree, probe, suiteName, url } from "./PgTestKit.js"
import { rowCountsRoundTrip, script, spawnScript } from "./SqlTestKit.js"

/** Every open builds the store's own layer, with a pool of its own: what a restarted engine does. */
const fixture = Layer.effect(
  BackendSuite.BackendFixture,
  Effect.map(SqlClient.SqlClient, (admin) =>
    BackendSuite.BackendFixture.of({
      makeStore: Effect.map(
        Effect.provideService(freshPrefix, SqlClient.SqlClient, admin),
        // A fresh store on the test server is usable: anything else is a broken test machine.
        (tablePrefix) => ({ open: Effect.catchTag(openBackend({ tablePrefix }), "StoreUnusableError", Effect.die) })
      )
    }))
).pipe(Layer.provide(adminLayer))

const A = PeerId.make("A")
const text = (value: string) => new TextEncoder().encode(value)

describe.skipIf(probe.url === undefined)(
  suiteName("PostgresBackend"),
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
