/**
 * Dead letters in the SQL backend, on SQLite and PostgreSQL: what the conformance suite cannot see from the outside.
 * The table the offline tools read, written with the receive states in one transaction; queries and lists of ids
 * longer than a statement carries; ids that survive reopening and are never reused; the migration of a store made by
 * the previous version; the fencing of the writes on PostgreSQL; and the operations' names in errors.
 */
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import type { Backend } from "@intersession/core/Backend"
import {
  type BackendError,
  type DeadLetter,
  isStoreLost,
  type NewDeadLetter,
  StoreLostError
} from "@intersession/core/Backend"
import * as Incarnation from "@intersession/core/Incarnation"
import * as Lane from "@intersession/core/Lane"
import * as PeerId from "@intersession/core/PeerId"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { migrations, tablesOf } from "../src/internal/sqlSchema.js"
import { adminLayer, probe, suiteName } from "./PgTestKit.js"
import * as Dialects from "./SqlDialects.js"

const A = PeerId.make("A")
const B = PeerId.make("B")
const x = Lane.Lane.make("x")
const y = Lane.Lane.make("y")
const text = (value: string) => new TextEncoder().encode(value)
const decode = (payload: Uint8Array) => new TextDecoder().decode(payload)
const incarnation = Incarnation.Incarnation.make(1_700_000_000_000 * 1024 + 7)

/** A dead letter of `peer` and `lane` whose payload and error name its seq. */
const letter = (peer: PeerId.PeerId, lane: Lane.Lane, seq: number): NewDeadLetter => ({
  peer,
  lane,
  incarnation,
  seq,
  payload: text(`p${seq}`),
  error: `failed ${seq}`,
  attempts: 3,
  deadLetteredAt: 1_000 + seq
})

/** What a test compares of a dead letter: its id, stream, seq and mark. */
const brief = (letter: DeadLetter) => [letter.id, letter.peer, letter.lane, letter.seq, letter.replayRequested]
const idsOf = (letters: ReadonlyArray<DeadLetter>) => letters.map((letter) => letter.id)

interface Dialect extends Dialects.Dialect {
  /** The columns of a table, in order, with their declared types (lower case). */
  readonly columns: (sql: SqlClient.SqlClient, table: string) => Effect.Effect<ReadonlyArray<string>, unknown>
}

const sqliteDialect: Dialect = {
  ...Dialects.sqlite,
  columns: (sql, table) =>
    Effect.map(
      sql.unsafe<{ name: string; type: string }>(`SELECT name, type FROM pragma_table_info('${table}') ORDER BY cid`),
      (rows) => rows.map((row) => `${row.name} ${row.type.toLowerCase()}`)
    )
}

const pgDialect: Dialect = {
  ...Dialects.postgres,
  columns: (sql, table) =>
    Effect.map(
      sql<{ column_name: string; data_type: string }>`SELECT column_name, data_type FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = ${table} ORDER BY ordinal_position`,
      (rows) => rows.map((row) => `${row.column_name} ${row.data_type}`)
    )
}

for (const dialect of [sqliteDialect, pgDialect]) {
  describe.skipIf(dialect.skip === true)(suiteName(`SqlBackend dead letters on ${dialect.name}`), () => {
    const rows = (store: Dialects.Store, query: string) => store.sql.unsafe<Record<string, unknown>>(query)
    const count = (store: Dialects.Store) =>
      Effect.map(rows(store, `SELECT count(*) AS n FROM "${store.prefix}dead_letters"`), (list) => Number(list[0]?.n))
    const state = (lane: Lane.Lane, delivered: number) => ({ peer: A, lane, incarnation, delivered, runs: [] })
    const all = (backend: Backend["Type"]) => backend.deadLetters({ limit: 100_000 })

    it.scopedLive("commitReceived stores receive states and dead letters in one step; a failure after it undoes both", () =>
      Effect.gen(function*() {
        const store = yield* dialect.open(yield* dialect.place)
        const { backend } = store
        yield* backend.commitReceived([state(x, 2)], [letter(A, x, 1), letter(A, x, 2)])
        const stored = yield* all(backend)
        assert.deepStrictEqual(stored.map(brief), [[1, A, x, 1, false], [2, A, x, 2, false]])
        const [first] = stored
        assert.deepStrictEqual(
          first && [first.incarnation, decode(first.payload), first.error, first.attempts, first.deadLetteredAt],
          [incarnation, "p1", "failed 1", 3, 1_001]
        )
        assert.strictEqual(first?.payload.constructor, Uint8Array)
        assert.deepStrictEqual((yield* backend.received).map((s) => [s.lane, s.delivered]), [[x, 2]])

        // Inside withTransaction, a failure after the commit rolls back its states and its dead letters.
        const failed = yield* Effect.flip(backend.withTransaction(
          Effect.zipRight(
            backend.commitReceived([state(x, 5)], [letter(A, x, 3), letter(A, x, 4)]),
            Effect.fail("undo")
          )
        ))
        assert.strictEqual(failed, "undo")
        assert.deepStrictEqual((yield* backend.received).map((s) => [s.lane, s.delivered]), [[x, 2]])
        assert.deepStrictEqual(idsOf(yield* all(backend)), [1, 2])
        // Nested, too: the savepoint of the inner transaction rolls back alone.
        yield* backend.withTransaction(
          Effect.zipRight(
            Effect.ignore(backend.withTransaction(
              Effect.zipRight(backend.commitReceived([state(y, 9)], [letter(A, y, 9)]), Effect.fail("inner"))
            )),
            backend.commitReceived([state(x, 5)], [letter(A, x, 5)])
          )
        )
        assert.deepStrictEqual((yield* backend.received).map((s) => [s.lane, s.delivered]), [[x, 5]])
        // An id of a rolled-back row may be skipped (PostgreSQL's identity), never given twice.
        const after = yield* all(backend)
        assert.deepStrictEqual(after.map((l) => l.seq), [1, 2, 5])
        assert.isTrue(after[2]!.id > 2)

        // A dead letter that fails to store fails the whole commit: its receive state is not stored either.
        const refused = yield* Effect.flip(
          backend.commitReceived([state(x, 7)], [{ ...letter(A, x, 6), attempts: 1.5 }])
        )
        assert.strictEqual(refused.operation, "commitReceived")
        assert.deepStrictEqual((yield* backend.received).map((s) => s.delivered), [5])

        // Dead letters alone, with no receive state, and an error message with a NUL in it.
        yield* backend.commitReceived([], [{ ...letter(B, y, 1), error: "bad\u0000byte" }])
        const last = yield* backend.deadLetters({ peer: B, limit: 10 })
        assert.deepStrictEqual(last.map((l) => l.error), ["bad\uFFFDbyte"])
      }))

    it.scopedLive("commitReceived stores batches over every statement row count, ids in the order given", () =>
      Effect.gen(function*() {
        const store = yield* dialect.open(yield* dialect.place)
        const { backend } = store
        let seq = 0
        for (const size of [1, 3, 1024, 1500]) {
          const batch = Array.from({ length: size }, () => letter(A, x, ++seq))
          yield* backend.commitReceived([state(x, seq)], batch)
        }
        const stored = yield* all(backend)
        assert.strictEqual(stored.length, seq)
        assert.deepStrictEqual(stored.map((l) => l.seq), Array.from({ length: seq }, (_, i) => i + 1))
        assert.deepStrictEqual(idsOf(stored), Array.from({ length: seq }, (_, i) => i + 1))
        assert.deepStrictEqual(stored.slice(-1).map((l) => decode(l.payload)), [`p${seq}`])
      }))

    it.scopedLive("queries filter by peer, lane, ids and replayRequested, and page with afterId and limit", () =>
      Effect.gen(function*() {
        const store = yield* dialect.open(yield* dialect.place)
        const { backend } = store
        // Ids 1-6: A/x 1, A/y 2, B/x 3, A/x 4, B/y 5, A/x 6.
        yield* backend.commitReceived([], [
          letter(A, x, 1),
          letter(A, y, 2),
          letter(B, x, 3),
          letter(A, x, 4),
          letter(B, y, 5),
          letter(A, x, 6)
        ])
        const ids = (query: Parameters<Backend["Type"]["deadLetters"]>[0]) =>
          Effect.map(backend.deadLetters(query), idsOf)
        assert.deepStrictEqual(yield* ids({ limit: 10 }), [1, 2, 3, 4, 5, 6])
        assert.deepStrictEqual(yield* ids({ peer: A, limit: 10 }), [1, 2, 4, 6])
        assert.deepStrictEqual(yield* ids({ lane: x, limit: 10 }), [1, 3, 4, 6])
        assert.deepStrictEqual(yield* ids({ peer: A, lane: x, limit: 10 }), [1, 4, 6])
        assert.deepStrictEqual(yield* ids({ ids: [6, 2, 2, 99, 1.5, -1], limit: 10 }), [2, 6])
        assert.deepStrictEqual(yield* ids({ ids: [], limit: 10 }), [])
        assert.deepStrictEqual(yield* ids({ peer: B, ids: [1, 3, 4, 5], limit: 10 }), [3, 5])
        assert.deepStrictEqual(yield* ids({ limit: 2 }), [1, 2])
        assert.deepStrictEqual(yield* ids({ afterId: 2, limit: 2 }), [3, 4])
        assert.deepStrictEqual(yield* ids({ afterId: 6, limit: 2 }), [])
        assert.deepStrictEqual(yield* ids({ peer: A, lane: x, afterId: 1, limit: 1 }), [4])
        assert.deepStrictEqual(yield* ids({ ids: [1, 2, 3, 4, 5], afterId: 2, limit: 2 }), [3, 4])
        assert.deepStrictEqual(yield* ids({ limit: 0 }), [])
        assert.deepStrictEqual(yield* ids({ replayRequested: true, limit: 10 }), [])
        assert.deepStrictEqual(yield* ids({ replayRequested: false, limit: 10 }), [1, 2, 3, 4, 5, 6])

        yield* backend.requestReplay([2, 5, 6], true)
        assert.deepStrictEqual(yield* ids({ replayRequested: true, limit: 10 }), [2, 5, 6])
        assert.deepStrictEqual(yield* ids({ replayRequested: false, limit: 10 }), [1, 3, 4])
        assert.deepStrictEqual(yield* ids({ replayRequested: true, peer: A, afterId: 2, limit: 10 }), [6])

        // Paging through every page of one peer, two at a time, as `DeadLetters.forEachPage` does.
        const pages: Array<ReadonlyArray<number>> = []
        let afterId = 0
        for (;;) {
          const page = yield* ids({ peer: A, afterId, limit: 2 })
          if (page.length === 0) break
          pages.push(page)
          afterId = page[page.length - 1]!
        }
        assert.deepStrictEqual(pages, [[1, 2], [4, 6]])
      }))

    it.scopedLive("lists of ids longer than a statement carries: queries, removal and replay", () =>
      Effect.gen(function*() {
        const store = yield* dialect.open(yield* dialect.place)
        const { backend } = store
        yield* backend.commitReceived([], Array.from({ length: 3000 }, (_, i) => letter(i % 2 === 0 ? A : B, x, i + 1)))
        // Every id, twice, with ids that name nothing: well above SQLite's 32,766 parameters.
        const wanted = [
          ...Array.from({ length: 40_000 }, (_, i) => i + 1),
          ...Array.from({ length: 3000 }, (_, i) => 3000 - i)
        ]
        assert.strictEqual((yield* backend.deadLetters({ ids: wanted, limit: 100_000 })).length, 3000)
        // A limit reached in the second chunk of ids, and one past afterId.
        assert.deepStrictEqual(
          idsOf(yield* backend.deadLetters({ ids: wanted, limit: 1500 })),
          Array.from({ length: 1500 }, (_, i) => i + 1)
        )
        assert.deepStrictEqual(
          idsOf(yield* backend.deadLetters({ ids: wanted, peer: B, afterId: 2000, limit: 3 })),
          [2002, 2004, 2006]
        )

        // Rows matched: marking again counts them again.
        const odd = Array.from({ length: 1500 }, (_, i) => 2 * i + 1)
        assert.strictEqual(yield* backend.requestReplay([...odd, ...odd, 5000], true), 1500)
        assert.strictEqual(yield* backend.requestReplay(odd, true), 1500)
        assert.strictEqual((yield* backend.deadLetters({ replayRequested: true, limit: 100_000 })).length, 1500)
        assert.strictEqual(yield* backend.requestReplay(odd.slice(0, 1100), false), 1100)
        assert.deepStrictEqual(
          idsOf(yield* backend.deadLetters({ replayRequested: true, limit: 2 })),
          [2201, 2203]
        )

        assert.strictEqual(yield* backend.removeDeadLetters([...wanted.slice(0, 2500), ...wanted.slice(0, 10)]), 2500)
        assert.strictEqual(yield* backend.removeDeadLetters(wanted.slice(0, 2500)), 0)
        assert.strictEqual(yield* count(store), 500)
        assert.strictEqual(yield* backend.removeDeadLetters(wanted), 500)
        assert.strictEqual(yield* count(store), 0)
      }))

    it.scopedLive("removeDeadLetters and requestReplay count what they change, and roll back with withTransaction", () =>
      Effect.gen(function*() {
        const store = yield* dialect.open(yield* dialect.place)
        const { backend } = store
        yield* backend.commitReceived([], [letter(A, x, 1), letter(A, x, 2), letter(A, x, 3)])
        assert.strictEqual(yield* backend.requestReplay([], true), 0)
        assert.strictEqual(yield* backend.removeDeadLetters([]), 0)
        assert.strictEqual(yield* backend.requestReplay([1, 3, 7], true), 2)
        assert.deepStrictEqual((yield* all(backend)).map(brief), [
          [1, A, x, 1, true],
          [2, A, x, 2, false],
          [3, A, x, 3, true]
        ])
        assert.strictEqual(yield* backend.requestReplay([3], false), 1)
        // The flag is stored as the table says: a boolean on PostgreSQL, 0 or 1 on SQLite.
        const flags = yield* rows(store, `SELECT replay_requested FROM "${store.prefix}dead_letters" ORDER BY id`)
        assert.deepStrictEqual(
          flags.map((row) => row.replay_requested),
          dialect.name === "SQLite" ? [1, 0, 0] : [true, false, false]
        )

        const failed = yield* Effect.flip(backend.withTransaction(
          Effect.zipRight(
            Effect.zipRight(backend.removeDeadLetters([1, 2]), backend.requestReplay([3], true)),
            Effect.fail("undo")
          )
        ))
        assert.strictEqual(failed, "undo")
        assert.deepStrictEqual((yield* all(backend)).map(brief), [
          [1, A, x, 1, true],
          [2, A, x, 2, false],
          [3, A, x, 3, false]
        ])
        assert.strictEqual(yield* backend.removeDeadLetters([2, 2, 4]), 1)
        assert.deepStrictEqual(idsOf(yield* all(backend)), [1, 3])
      }))

    it.scopedLive("ids stay the same across reopening, and an id removed is never given again", () =>
      Effect.gen(function*() {
        const place = yield* dialect.place
        const first = yield* dialect.open(place)
        yield* first.backend.commitReceived([state(x, 3)], [letter(A, x, 1), letter(A, x, 2), letter(A, x, 3)])
        yield* first.backend.requestReplay([2], true)
        // The highest id goes: a table without AUTOINCREMENT would give it again.
        assert.strictEqual(yield* first.backend.removeDeadLetters([3]), 1)
        const before = yield* all(first.backend)
        yield* first.close

        const second = yield* dialect.open(place)
        const reopened = yield* all(second.backend)
        assert.deepStrictEqual(reopened.map(brief), [[1, A, x, 1, false], [2, A, x, 2, true]])
        assert.deepStrictEqual(reopened, before)
        yield* second.backend.commitReceived([], [letter(A, x, 4)])
        assert.deepStrictEqual(idsOf(yield* all(second.backend)), [1, 2, 4])
      }))

    it.scopedLive("a store made by migrations 1 to 3, with data in it, migrates to 4_dead_letters and works", () =>
      Effect.gen(function*() {
        const place = yield* dialect.place
        // The store as version 3 of the schema left it: migrations 1 to 3, and rows its backend wrote.
        yield* dialect.plain(place, (sql, prefix) =>
          Effect.gen(function*() {
            const tables = tablesOf(prefix)
            const loader = Effect.map(migrations(sql, tables), (all) => all.filter(([id]) => id <= 3))
            yield* Migrator.make({})({ loader, table: tables.migrations }).pipe(
              Effect.provideService(SqlClient.SqlClient, sql)
            )
            yield* sql`INSERT INTO ${sql(tables.store)} (id, incarnation, owner) VALUES (1, 12345, 3)`
            yield* sql`INSERT INTO ${sql(tables.received)} (peer, lane, incarnation, delivered, runs)
              VALUES ('A', 'x', ${incarnation}, 41, '[[7,40]]')`
            yield* sql`INSERT INTO ${sql(tables.streams)} (peer, lane, next_seq, first_pending)
              VALUES ('B', 'y', 2, 1)`
            yield* sql`INSERT INTO ${sql(tables.messages)} (peer, lane, seq, run, payload)
              VALUES ('B', 'y', 1, 1, ${Buffer.from("old")})`
          }))
        const store = yield* dialect.open(place)
        const { backend } = store
        assert.strictEqual(backend.incarnation, 12345)
        const migrated = yield* rows(
          store,
          `SELECT migration_id, name FROM "${store.prefix}migrations" ORDER BY migration_id`
        )
        assert.deepStrictEqual(migrated.map((row) => `${Number(row.migration_id)}_${row.name}`), [
          "1_create_store",
          "2_owner_token",
          "3_expiry",
          "4_dead_letters"
        ])
        assert.deepStrictEqual(
          yield* dialect.columns(store.sql, `${store.prefix}dead_letters`),
          dialect.name === "SQLite"
            ? [
              "id integer",
              "peer text",
              "lane text",
              "incarnation integer",
              "seq integer",
              "payload blob",
              "error text",
              "attempts integer",
              "dead_lettered_at integer",
              "replay_requested integer"
            ]
            : [
              "id bigint",
              "peer text",
              "lane text",
              "incarnation bigint",
              "seq bigint",
              "payload bytea",
              "error text",
              "attempts integer",
              "dead_lettered_at bigint",
              "replay_requested boolean"
            ]
        )
        assert.deepStrictEqual(yield* backend.received, [{
          peer: A,
          lane: x,
          incarnation,
          delivered: 41,
          runs: [{ run: 7, from: 40 }]
        }])
        assert.deepStrictEqual((yield* backend.read(B, y, 1, 10)).map((m) => decode(m.payload)), ["old"])
        assert.deepStrictEqual(yield* all(backend), [])
        yield* backend.commitReceived([state(x, 42)], [letter(A, x, 42)])
        assert.deepStrictEqual((yield* all(backend)).map(brief), [[1, A, x, 42, false]])
        assert.deepStrictEqual((yield* backend.received).map((s) => s.delivered), [42])
        assert.strictEqual(yield* backend.requestReplay([1], true), 1)
        assert.strictEqual(yield* backend.removeDeadLetters([1]), 1)
        // The columns the offline tools read have their defaults.
        yield* rows(
          store,
          `INSERT INTO "${store.prefix}dead_letters" (peer, lane, incarnation, seq, payload, error, attempts,
            dead_lettered_at) VALUES ('A', 'x', 1, 1, ${
            dialect.name === "SQLite" ? "x'00'" : "'\\x00'::bytea"
          }, 'e', 1, 1)`
        )
        assert.deepStrictEqual((yield* all(backend)).map(brief), [[2, A, x, 1, false]])
      }))

    it.scopedLive("errors name the operation: deadLetters, removeDeadLetters, requestReplay, commitReceived", () =>
      Effect.gen(function*() {
        const store = yield* dialect.open(yield* dialect.place)
        const { backend } = store
        yield* backend.commitReceived([], [letter(A, x, 1)])
        const invalid = yield* Effect.flip(backend.commitReceived([], [{ ...letter(A, x, 2), deadLetteredAt: NaN }]))
        assert.strictEqual(invalid.operation, "commitReceived")
        assert.include(invalid.message, "deadLetteredAt must be a time in milliseconds since the epoch")
        const badPage = yield* Effect.flip(backend.deadLetters({ afterId: NaN, limit: 1 }))
        assert.strictEqual(badPage.operation, "deadLetters")
        yield* store.close
        const operations = yield* Effect.all([
          Effect.flip(backend.deadLetters({ limit: 10 })),
          Effect.flip(backend.removeDeadLetters([1])),
          Effect.flip(backend.requestReplay([1], true)),
          Effect.flip(backend.commitReceived([], [letter(A, x, 3)]))
        ])
        assert.deepStrictEqual(operations.map((error) => error.operation), [
          "deadLetters",
          "removeDeadLetters",
          "requestReplay",
          "commitReceived"
        ])
      }))
  })
}

describe.skipIf(probe.url === undefined)(suiteName("SqlBackend dead letters on PostgreSQL: fencing"), () => {
  it.scopedLive("a dead-letter write of an engine whose store was taken over fails with StoreLostError and changes nothing", () =>
    Effect.gen(function*() {
      const admin = Context.get(yield* Layer.build(adminLayer), SqlClient.SqlClient)
      const writes: ReadonlyArray<(backend: Backend["Type"]) => Effect.Effect<unknown, BackendError>> = [
        (backend) => backend.commitReceived([], [letter(A, x, 9)]),
        (backend) => backend.removeDeadLetters([1]),
        (backend) => backend.requestReplay([1], true),
        (backend) => backend.withTransaction(backend.commitReceived([], [letter(A, x, 9)]))
      ]
      for (const write of writes) {
        const place = yield* pgDialect.place
        const store = yield* pgDialect.open(place)
        yield* store.backend.commitReceived([], [letter(A, x, 1)])
        // What a new owner does when it takes the store: its token is not this engine's.
        yield* admin.unsafe(`UPDATE "${place}store" SET owner = owner + 1 WHERE id = 1`)
        const error = yield* Effect.flip(write(store.backend))
        assert.isTrue(isStoreLost(error), error.message)
        assert.strictEqual(error.cause instanceof StoreLostError ? error.cause.reason : undefined, "TakenOver")
        const table = yield* admin.unsafe<{ id: string; replay_requested: boolean }>(
          `SELECT id, replay_requested FROM "${place}dead_letters" ORDER BY id`
        )
        assert.deepStrictEqual(table.map((row) => [Number(row.id), row.replay_requested]), [[1, false]])
      }
    }))
})
