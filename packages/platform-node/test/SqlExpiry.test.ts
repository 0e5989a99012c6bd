/**
 * Expiry and purging in the SQL backend, on SQLite and PostgreSQL: what the conformance suite cannot see from the
 * outside. The migration of a store made by the previous version, with messages in it; the index that keeps `expire`
 * cheap when nothing is due; the table of dropped ranges, with why each was dropped, which acknowledgements delete
 * and cut; the time each message was stored; batches of ranges over every statement row count; and the operations'
 * names in errors.
 */
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as PeerId from "@intersession/core/PeerId"
import * as Effect from "effect/Effect"
import { migrations, tablesOf } from "../src/internal/sqlSchema.js"
import { suiteName } from "./PgTestKit.js"
import * as Dialects from "./SqlDialects.js"

const A = PeerId.make("A")
const B = PeerId.make("B")
const text = (value: string) => new TextEncoder().encode(value)
const decode = (payload: Uint8Array) => new TextDecoder().decode(payload)

interface Dialect extends Dialects.Dialect {
  /** Whether the plan of the due probe uses the index of due messages. */
  readonly probeUsesIndex: (sql: SqlClient.SqlClient, prefix: string) => Effect.Effect<boolean, unknown>
}

const sqliteDialect: Dialect = {
  ...Dialects.sqlite,
  probeUsesIndex: (sql, prefix) =>
    Effect.map(
      sql.unsafe<{ detail: string }>(`EXPLAIN QUERY PLAN SELECT 1 AS due FROM "${prefix}outbound_messages"
        WHERE expires_at IS NOT NULL AND expires_at <= 1 LIMIT 1`),
      (rows) => rows.some((row) => row.detail.includes(`${prefix}outbound_messages_due`))
    )
}

const pgDialect: Dialect = {
  ...Dialects.postgres,
  probeUsesIndex: (sql, prefix) =>
    sql.withTransaction(Effect.gen(function*() {
      // A small table is cheaper to scan: the plan shows that the index can be used, not that it is chosen.
      yield* sql.unsafe("SET LOCAL enable_seqscan = off")
      const rows = yield* sql.unsafe<{ "QUERY PLAN": string }>(
        `EXPLAIN SELECT 1 AS due FROM "${prefix}outbound_messages"
        WHERE expires_at IS NOT NULL AND expires_at <= 1 LIMIT 1`
      )
      return rows.some((row) => row["QUERY PLAN"].includes(`${prefix}outbound_messages_due`))
    }))
}

for (const dialect of [sqliteDialect, pgDialect]) {
  describe.skipIf(dialect.skip === true)(suiteName(`SqlBackend expiry on ${dialect.name}`), () => {
    const rows = (store: Dialects.Store, query: string) => store.sql.unsafe<Record<string, unknown>>(query)
    const droppedTable = (store: Dialects.Store) =>
      Effect.map(
        rows(
          store,
          `SELECT peer, lane, from_seq, to_seq, run, reason FROM "${store.prefix}outbound_dropped"
          ORDER BY peer, lane, from_seq`
        ),
        (list) =>
          list.map((row) => [
            row.peer,
            row.lane,
            Number(row.from_seq),
            Number(row.to_seq),
            Number(row.run),
            row.reason
          ])
      )

    it.scopedLive("append and read carry expiresAt; expire takes the most overdue first, up to its limit", () =>
      Effect.gen(function*() {
        const store = yield* dialect.open(yield* dialect.place)
        const { backend } = store
        yield* backend.append([
          { peer: A, lane: "x", payload: text("a1"), expiresAt: 1_000 },
          { peer: A, lane: "x", payload: text("a2") },
          { peer: A, lane: "x", payload: text("a3"), expiresAt: 3_000 },
          { peer: B, lane: "y", payload: text("b1"), expiresAt: 2_000 },
          { peer: A, lane: "x", payload: text("a4"), expiresAt: 1_000.5 }
        ], 7)
        const read = yield* backend.read(A, "x", 1, 10)
        assert.deepStrictEqual(read.map((m) => [m.seq, decode(m.payload), m.expiresAt]), [
          [1, "a1", 1_000],
          [2, "a2", undefined],
          [3, "a3", 3_000],
          [4, "a4", 1_001]
        ])
        assert.isFalse("expiresAt" in read[1]!, "no key for a message that never expires")

        assert.deepStrictEqual(yield* backend.expire(999, 10), [])
        // Due at 2,000: a1 and a4 (1,000 and 1,001) and b1; two of them, the most overdue first.
        assert.deepStrictEqual(yield* backend.expire(2_000, 2), [
          { peer: A, lane: "x", seqs: [{ from: 1, to: 1, run: 7 }, { from: 4, to: 4, run: 7 }] }
        ])
        assert.deepStrictEqual(yield* backend.expire(2_000, 2), [{
          peer: B,
          lane: "y",
          seqs: [{ from: 1, to: 1, run: 7 }]
        }])
        assert.deepStrictEqual(yield* backend.expire(2_000, 2), [])
        assert.deepStrictEqual((yield* backend.read(A, "x", 1, 10)).map((m) => m.seq), [2, 3])

        const { streams } = yield* backend.outbound
        const x = streams.find((s) => s.peer === A)!
        assert.deepStrictEqual(x, {
          peer: A,
          lane: "x",
          firstPending: 2,
          nextSeq: 5,
          runs: [{ run: 7, from: 1 }],
          dropped: [{ from: 1, to: 1, run: 7, reason: "expired" }, { from: 4, to: 4, run: 7, reason: "expired" }]
        })
      }))

    it.scopedLive("ranges are one run each, joined across operations in outbound, and cut by acknowledgements", () =>
      Effect.gen(function*() {
        const store = yield* dialect.open(yield* dialect.place)
        const { backend } = store
        const message = (i: number, expiresAt?: number) => ({
          peer: A,
          lane: "x",
          payload: text(`m${i}`),
          ...(expiresAt === undefined ? {} : { expiresAt })
        })
        // Seqs 1-4 of run 1, 5-8 of run 2, 9-10 of run 3.
        yield* backend.append([1, 2, 3, 4].map((i) => message(i, i === 1 ? undefined : 100 + i)), 1)
        yield* backend.append([5, 6, 7, 8].map((i) => message(i, i === 8 ? undefined : 100 + i)), 2)
        yield* backend.append([9, 10].map((i) => message(i)), 3)
        // 2-3 then 4-7 expire in two calls: 2-4 is one range of run 1 across them, 5-7 one of run 2.
        assert.deepStrictEqual(yield* backend.expire(103, 100), [
          { peer: A, lane: "x", seqs: [{ from: 2, to: 3, run: 1 }] }
        ])
        assert.deepStrictEqual(yield* backend.expire(200, 100), [
          { peer: A, lane: "x", seqs: [{ from: 4, to: 4, run: 1 }, { from: 5, to: 7, run: 2 }] }
        ])
        const before = (yield* backend.outbound).streams[0]!
        assert.deepStrictEqual(before.dropped, [
          { from: 2, to: 4, run: 1, reason: "expired" },
          { from: 5, to: 7, run: 2, reason: "expired" }
        ])
        assert.deepStrictEqual(before.runs, [{ run: 1, from: 1 }, { run: 2, from: 5 }, { run: 3, from: 9 }])
        assert.strictEqual(before.firstPending, 1)

        // An acknowledgement up to 3 deletes seq 1 and the dropped 2-3, and cuts 4-4 … as it stands.
        yield* backend.acknowledge([{ peer: A, lane: "x", upTo: 3 }])
        assert.deepStrictEqual(yield* droppedTable(store), [["A", "x", 4, 4, 1, "expired"], [
          "A",
          "x",
          5,
          7,
          2,
          "expired"
        ]])
        yield* backend.acknowledge([{ peer: A, lane: "x", upTo: 6 }])
        assert.deepStrictEqual(yield* droppedTable(store), [["A", "x", 7, 7, 2, "expired"]])
        const after = (yield* backend.outbound).streams[0]!
        assert.deepStrictEqual(after, {
          peer: A,
          lane: "x",
          firstPending: 8,
          nextSeq: 11,
          runs: [{ run: 2, from: 7 }, { run: 3, from: 9 }],
          dropped: [{ from: 7, to: 7, run: 2, reason: "expired" }]
        })
        yield* backend.acknowledge([{ peer: A, lane: "x", upTo: 10 }])
        assert.deepStrictEqual(yield* droppedTable(store), [])
        assert.deepStrictEqual((yield* backend.outbound).streams[0], {
          peer: A,
          lane: "x",
          firstPending: 11,
          nextSeq: 11,
          runs: [],
          dropped: []
        })
      }))

    it.scopedLive("each dropped row keeps why: a row per reason, a cut keeps it, and no other reason is stored", () =>
      Effect.gen(function*() {
        const store = yield* dialect.open(yield* dialect.place)
        const { backend } = store
        // Seqs 1-4 of run 1: 2 and 3 expire, then a purge takes 1 and 4; 5-6 of run 1 are purged next.
        yield* backend.append(
          [1, 2, 3, 4].map((i) => ({
            peer: A,
            lane: "x",
            payload: text(`m${i}`),
            ...(i === 2 || i === 3 ? { expiresAt: 10 } : {})
          })),
          1
        )
        assert.strictEqual((yield* backend.expire(10, 10)).length, 1)
        assert.strictEqual((yield* backend.purge(A, "x")).length, 1)
        yield* backend.append([5, 6].map((i) => ({ peer: A, lane: "x", payload: text(`m${i}`) })), 1)
        assert.strictEqual((yield* backend.purge(A, undefined)).length, 1)
        assert.deepStrictEqual(yield* droppedTable(store), [
          ["A", "x", 1, 1, 1, "purged"],
          ["A", "x", 2, 3, 1, "expired"],
          ["A", "x", 4, 4, 1, "purged"],
          ["A", "x", 5, 6, 1, "purged"]
        ])
        // outbound joins 4 and 5-6 (one run, one reason), not 3 and 4.
        assert.deepStrictEqual((yield* backend.outbound).streams[0]?.dropped, [
          { from: 1, to: 1, run: 1, reason: "purged" },
          { from: 2, to: 3, run: 1, reason: "expired" },
          { from: 4, to: 6, run: 1, reason: "purged" }
        ])
        yield* backend.acknowledge([{ peer: A, lane: "x", upTo: 2 }])
        assert.deepStrictEqual(yield* droppedTable(store), [
          ["A", "x", 3, 3, 1, "expired"],
          ["A", "x", 4, 4, 1, "purged"],
          ["A", "x", 5, 6, 1, "purged"]
        ])
        // The table refuses a reason of neither kind, and a missing one.
        const table = `"${store.prefix}outbound_dropped"`
        for (const reason of ["'lost'", "NULL"]) {
          const refused = yield* Effect.either(rows(
            store,
            `INSERT INTO ${table} (peer, lane, from_seq, to_seq, run, reason) VALUES ('B', 'x', 1, 1, 1, ${reason})`
          ))
          assert.isTrue(refused._tag === "Left", `reason ${reason} is refused`)
        }
        assert.strictEqual((yield* droppedTable(store)).length, 3)
      }))

    it.scopedLive("a store reopened finds its dropped ranges, and acknowledgements still delete them", () =>
      Effect.gen(function*() {
        const place = yield* dialect.place
        const first = yield* dialect.open(place)
        yield* first.backend.append([1, 2, 3].map((i) => ({ peer: A, lane: "x", payload: text(`m${i}`) })), 1)
        yield* first.backend.purge(A, "x")
        yield* first.close
        const second = yield* dialect.open(place)
        assert.deepStrictEqual((yield* second.backend.outbound).streams[0]?.dropped, [
          { from: 1, to: 3, run: 1, reason: "purged" }
        ])
        yield* second.backend.acknowledge([{ peer: A, lane: "x", upTo: 2 }])
        assert.deepStrictEqual(yield* droppedTable(second), [["A", "x", 3, 3, 1, "purged"]])
      }))

    it.scopedLive("purge removes a lane, or every lane of a peer, of any size, and records one range per run", () =>
      Effect.gen(function*() {
        const store = yield* dialect.open(yield* dialect.place)
        const { backend } = store
        const batch = (lane: string, count: number) =>
          Array.from({ length: count }, (_, i) => ({ peer: A, lane, payload: text(`${lane}${i}`) }))
        yield* backend.append(batch("x", 1500), 1)
        yield* backend.append(batch("x", 10), 2)
        yield* backend.append(batch("y", 3), 1)
        yield* backend.append([{ peer: B, lane: "x", payload: text("other") }], 1)
        assert.deepStrictEqual(yield* backend.purge(A, "x"), [
          { peer: A, lane: "x", seqs: [{ from: 1, to: 1500, run: 1 }, { from: 1501, to: 1510, run: 2 }] }
        ])
        assert.deepStrictEqual(yield* backend.purge(A, "x"), [])
        yield* backend.append(batch("x", 2), 3)
        assert.deepStrictEqual(yield* backend.purge(A, undefined), [
          { peer: A, lane: "x", seqs: [{ from: 1511, to: 1512, run: 3 }] },
          { peer: A, lane: "y", seqs: [{ from: 1, to: 3, run: 1 }] }
        ])
        assert.deepStrictEqual((yield* backend.read(B, "x", 1, 10)).map((m) => decode(m.payload)), ["other"])
        const x = (yield* backend.outbound).streams.find((s) => s.peer === A && s.lane === "x")!
        assert.deepStrictEqual(x.dropped, [
          { from: 1, to: 1500, run: 1, reason: "purged" },
          { from: 1501, to: 1510, run: 2, reason: "purged" },
          { from: 1511, to: 1512, run: 3, reason: "purged" }
        ])
        assert.deepStrictEqual([x.firstPending, x.nextSeq], [1513, 1513])
        assert.deepStrictEqual(x.runs, [{ run: 1, from: 1 }, { run: 2, from: 1501 }, { run: 3, from: 1511 }])
      }))

    it.scopedLive("expire records ranges of every statement row count: one message of each of 1,500 streams", () =>
      Effect.gen(function*() {
        const store = yield* dialect.open(yield* dialect.place)
        const { backend } = store
        const lanes = Array.from({ length: 1500 }, (_, i) => `l${i}`)
        yield* backend.append(lanes.map((lane) => ({ peer: A, lane, payload: text(lane), expiresAt: 10 })), 1)
        const first = yield* backend.expire(10, 1100)
        const second = yield* backend.expire(10, 1100)
        assert.deepStrictEqual([first.length, second.length], [1100, 400])
        const all = [...first, ...second].map((dropped) => dropped.lane).sort()
        assert.deepStrictEqual(all, lanes.slice().sort())
        assert.deepStrictEqual(yield* backend.expire(10, 1100), [])
        assert.strictEqual((yield* droppedTable(store)).length, 1500)
        yield* backend.acknowledge(lanes.map((lane) => ({ peer: A, lane, upTo: 1 })))
        assert.deepStrictEqual(yield* droppedTable(store), [])
      }))

    it.scopedLive("expire and purge inside withTransaction roll back with it", () =>
      Effect.gen(function*() {
        const store = yield* dialect.open(yield* dialect.place)
        const { backend } = store
        yield* backend.append([1, 2].map((i) => ({ peer: A, lane: "x", payload: text(`m${i}`), expiresAt: 5 })), 1)
        const failed = yield* Effect.flip(backend.withTransaction(
          Effect.zipRight(Effect.zipRight(backend.expire(5, 1), backend.purge(A, undefined)), Effect.fail("undo"))
        ))
        assert.strictEqual(failed, "undo")
        assert.deepStrictEqual((yield* backend.read(A, "x", 1, 10)).map((m) => m.seq), [1, 2])
        assert.deepStrictEqual(yield* droppedTable(store), [])
        assert.deepStrictEqual(yield* backend.expire(5, 10), [{
          peer: A,
          lane: "x",
          seqs: [{ from: 1, to: 2, run: 1 }]
        }])
      }))

    it.scopedLive("the due probe uses the index of due messages; each message records when it was stored", () =>
      Effect.gen(function*() {
        const store = yield* dialect.open(yield* dialect.place)
        assert.isTrue(yield* dialect.probeUsesIndex(store.sql, store.prefix))
        const before = Date.now()
        yield* store.backend.append([{ peer: A, lane: "x", payload: text("m") }], 1)
        const after = Date.now()
        const [row] = yield* rows(store, `SELECT stored_at FROM "${store.prefix}outbound_messages"`)
        const storedAt = Number(row?.stored_at)
        // The database's clock is this machine's: allow for rounding.
        assert.isTrue(storedAt >= before - 5 && storedAt <= after + 5, `stored_at ${storedAt} in [${before}, ${after}]`)
      }))

    it.scopedLive("a store made by the previous migrations, with messages in it, migrates and works", () =>
      Effect.gen(function*() {
        const place = yield* dialect.place
        // The store as version 2 of the schema left it: migrations 1 and 2, and rows its backend wrote.
        yield* dialect.plain(place, (sql, prefix) =>
          Effect.gen(function*() {
            const tables = tablesOf(prefix)
            const loader = Effect.map(migrations(sql, tables), (all) => all.filter(([id]) => id <= 2))
            yield* Migrator.make({})({ loader, table: tables.migrations }).pipe(
              Effect.provideService(SqlClient.SqlClient, sql)
            )
            yield* sql`INSERT INTO ${sql(tables.store)} (id, incarnation, owner) VALUES (1, 12345, 3)`
            yield* sql`INSERT INTO ${sql(tables.streams)} (peer, lane, next_seq, first_pending)
              VALUES ('A', 'x', 6, 3)`
            for (const [seq, run] of [[3, 1], [4, 1], [5, 2]]) {
              yield* sql`INSERT INTO ${sql(tables.messages)} (peer, lane, seq, run, payload)
                VALUES ('A', 'x', ${seq}, ${run}, ${Buffer.from(`old${seq}`)})`
            }
          }))
        const store = yield* dialect.open(place)
        const { backend } = store
        assert.strictEqual(backend.incarnation, 12345)
        const migrated = yield* rows(
          store,
          `SELECT migration_id FROM "${store.prefix}migrations" ORDER BY migration_id`
        )
        assert.deepStrictEqual(migrated.map((row) => Number(row.migration_id)), [1, 2, 3, 4])
        const old = yield* backend.read(A, "x", 1, 10)
        assert.deepStrictEqual(old.map((m) => [m.seq, m.run, decode(m.payload), "expiresAt" in m]), [
          [3, 1, "old3", false],
          [4, 1, "old4", false],
          [5, 2, "old5", false]
        ])
        assert.deepStrictEqual((yield* backend.outbound).streams, [{
          peer: A,
          lane: "x",
          firstPending: 3,
          nextSeq: 6,
          runs: [{ run: 1, from: 3 }, { run: 2, from: 5 }],
          dropped: []
        }])
        assert.deepStrictEqual(
          yield* backend.append([{ peer: A, lane: "x", payload: text("new"), expiresAt: 50 }], 3),
          [6]
        )
        // The rows stored before the migration have no time of storage; the new one has.
        const times = yield* rows(store, `SELECT seq, stored_at FROM "${store.prefix}outbound_messages" ORDER BY seq`)
        assert.deepStrictEqual(times.map((row) => row.stored_at === null), [true, true, true, false])
        assert.deepStrictEqual(yield* backend.expire(50, 10), [{
          peer: A,
          lane: "x",
          seqs: [{ from: 6, to: 6, run: 3 }]
        }])
        assert.deepStrictEqual(yield* backend.purge(A, "x"), [
          { peer: A, lane: "x", seqs: [{ from: 3, to: 4, run: 1 }, { from: 5, to: 5, run: 2 }] }
        ])
        assert.deepStrictEqual(yield* droppedTable(store), [
          ["A", "x", 3, 4, 1, "purged"],
          ["A", "x", 5, 5, 2, "purged"],
          ["A", "x", 6, 6, 3, "expired"]
        ])
        yield* backend.acknowledge([{ peer: A, lane: "x", upTo: 6 }])
        assert.deepStrictEqual(yield* droppedTable(store), [])
      }))

    it.scopedLive("errors name the operation: expire and purge", () =>
      Effect.gen(function*() {
        const store = yield* dialect.open(yield* dialect.place)
        yield* store.backend.append([{ peer: A, lane: "x", payload: text("m"), expiresAt: 1 }], 1)
        yield* store.close
        const expired = yield* Effect.flip(store.backend.expire(10, 10))
        const purged = yield* Effect.flip(store.backend.purge(A, undefined))
        assert.deepStrictEqual([expired.operation, purged.operation], ["expire", "purge"])
        const invalid = yield* Effect.flip(
          store.backend.append([{ peer: A, lane: "x", payload: text("m"), expiresAt: Number.NaN }], 1)
        )
        assert.strictEqual(invalid.operation, "append")
        assert.include(invalid.message, "expiresAt must be a time in milliseconds since the epoch")
      }))
  })
}
