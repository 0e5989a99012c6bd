/**
 * Group commit in the SQL backend: writes made outside a transaction share one transaction, writes made inside one
 * run in it.
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as FileSystem from "@effect/platform/FileSystem"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Backend, BackendError } from "@intersession/core/Backend"
import * as PeerId from "@intersession/core/PeerId"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Queue from "effect/Queue"
import * as Tracer from "effect/Tracer"
import * as Path from "node:path"
import * as SqliteBackend from "../src/SqliteBackend.js"
import { buildScoped } from "./SqlTestKit.js"

const A = PeerId.make("A")
const text = (value: string) => new TextEncoder().encode(value)

/**
 * Opens a SQLite store whose fibers, the backend's writer among them, report every `sql.transaction` span: one per
 * `withTransaction` of @effect/sql, that is one per BEGIN (or SAVEPOINT when nested). Transactions of the test's own
 * fibers are counted only inside `traced`.
 */
const openCounted = Effect.gen(function*() {
  const fs = yield* Effect.provide(FileSystem.FileSystem, NodeFileSystem.layer)
  const directory = yield* fs.makeTempDirectoryScoped({ prefix: "intersession-group-" })
  const transactions = yield* Queue.unbounded<void>()
  const base = yield* Effect.tracer
  const tracer = Tracer.make({
    span: (...args) => {
      if (args[0] === "sql.transaction") Queue.unsafeOffer(transactions, undefined)
      return base.span(...args)
    },
    context: base.context
  })
  const { context } = yield* Effect.withTracer(
    buildScoped(SqliteBackend.layer({ filename: Path.join(directory, "store.db") })),
    tracer
  )
  // Transactions started since the last count; the first count includes the store's opening.
  const count = Effect.map(Queue.takeAll(transactions), (chunk) => chunk.length)
  return {
    backend: Context.get(context, Backend),
    sql: Context.get(context, SqlClient.SqlClient),
    count,
    traced: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.withTracer(effect, tracer),
    /** Waits until `n` more transactions have started. */
    started: (n: number) => Queue.takeN(transactions, n)
  }
})

/**
 * Holds SQLite's single connection in a transaction of its own until `release`: the writer's next transaction
 * waits for it, and writes made meanwhile pile up in the writer's queue.
 */
const holdConnection = (sql: SqlClient.SqlClient) =>
  Effect.gen(function*() {
    const held = yield* Deferred.make<void>()
    const gate = yield* Deferred.make<void>()
    const holder = yield* Effect.fork(
      sql.withTransaction(Effect.zipRight(Deferred.succeed(held, undefined), Deferred.await(gate)))
    )
    yield* Deferred.await(held)
    return { release: Effect.zipRight(Deferred.succeed(gate, undefined), Fiber.join(holder)) }
  })

describe("SqlBackend group commit", () => {
  it.scopedLive("concurrent appends and acknowledgements share few transactions, with gap-free seqs in call order", () =>
    Effect.gen(function*() {
      const { backend, count, traced } = yield* openCounted
      const acked = yield* backend.append(
        Array.from({ length: 20 }, (_, i) => ({
          peer: A,
          lane: "acked",
          payload: text(`a${i}`)
        })),
        1
      )
      assert.deepStrictEqual(acked, Array.from({ length: 20 }, (_, i) => i + 1))
      yield* count

      const lanes = 4
      const appends = Array.from(
        { length: 100 },
        (_, i) =>
          backend.append([{ peer: A, lane: `l${i % lanes}`, payload: text(`m${i}`) }], 2).pipe(
            Effect.map((seqs) => ({ i, seqs }))
          )
      )
      // Acknowledgements in scrambled order, between the appends.
      const acks = Array.from(
        { length: 20 },
        (_, i) => backend.acknowledge([{ peer: A, lane: "acked", upTo: (i * 7) % 20 + 1 }]).pipe(Effect.as(undefined))
      )
      const calls = appends.flatMap((append, i) => (i % 5 === 0 ? [append, acks[i / 5]!] : [append]))
      // Traced: a transaction per call, run by the caller's own fiber, would count too.
      const results = yield* traced(Effect.all(calls, { concurrency: "unbounded" }))
      const transactions = yield* count

      for (const result of results) {
        if (result === undefined) continue
        // Call i is the (i / lanes)-th call on its lane: its seq is that position, counting from 1.
        assert.deepStrictEqual(result.seqs, [Math.floor(result.i / lanes) + 1])
      }
      assert.isAtMost(transactions, calls.length / 10, `${transactions} transactions for ${calls.length} calls`)
      assert.isAtLeast(transactions, 1)

      const { streams } = yield* backend.outbound
      const byLane = new Map(streams.map((stream) => [stream.lane, stream]))
      assert.deepStrictEqual(byLane.get("acked"), { peer: A, lane: "acked", firstPending: 21, nextSeq: 21, runs: [] })
      for (let lane = 0; lane < lanes; lane++) {
        const stored = yield* backend.read(A, `l${lane}`, 1, 100)
        assert.deepStrictEqual(stored.map((m) => m.seq), Array.from({ length: 25 }, (_, i) => i + 1))
        assert.deepStrictEqual(
          stored.map((m) => new TextDecoder().decode(m.payload)),
          Array.from({ length: 25 }, (_, i) => `m${i * lanes + lane}`)
        )
      }
    }))

  it.scopedLive("a failed combined transaction fails every write in it with BackendError and applies none", () =>
    Effect.gen(function*() {
      const { backend, count, sql, started } = yield* openCounted
      yield* backend.append([{ peer: A, lane: "acked", payload: text("a1") }, {
        peer: A,
        lane: "acked",
        payload: text("a2")
      }], 1)
      // Refuses any message of lane "bad", inside whatever transaction stores it.
      yield* sql.unsafe(`CREATE TRIGGER refuse_bad BEFORE INSERT ON intersession_outbound_messages
        WHEN NEW.lane = 'bad' BEGIN SELECT RAISE(ABORT, 'refused'); END`)
      yield* count

      const { release } = yield* holdConnection(sql)
      // The writer takes this one alone and waits for the connection; the others queue behind it.
      const first = yield* Effect.fork(backend.append([{ peer: A, lane: "first", payload: text("f") }], 1))
      yield* started(1)
      const fibers = yield* Effect.all([
        backend.append([{ peer: A, lane: "ok", payload: text("o1") }], 1),
        backend.acknowledge([{ peer: A, lane: "acked", upTo: 2 }]),
        backend.append([{ peer: A, lane: "bad", payload: text("b") }], 1),
        backend.append([{ peer: A, lane: "ok", payload: text("o2") }], 1),
        backend.commitReceived([{ peer: A, lane: "in", incarnation: backend.incarnation, delivered: 3, runs: [] }])
      ].map((call) => Effect.fork(Effect.either(call))))
      yield* Effect.sleep("50 millis")
      yield* release

      assert.deepStrictEqual(yield* Fiber.join(first), [1])
      const outcomes = yield* Effect.forEach(fibers, Fiber.join)
      assert.deepStrictEqual(
        outcomes.map((outcome) =>
          Either.isLeft(outcome) && outcome.left instanceof BackendError ? outcome.left.operation : "succeeded"
        ),
        ["append", "acknowledge", "append", "append", "commitReceived"]
      )
      // Since the first append's transaction (taken by `started`): one transaction for the five others.
      assert.strictEqual(yield* count, 1)

      assert.deepStrictEqual((yield* backend.read(A, "acked", 1, 10)).map((m) => m.seq), [1, 2])
      assert.deepStrictEqual(yield* backend.read(A, "ok", 1, 10), [])
      assert.deepStrictEqual(yield* backend.received, [])
      const { streams } = yield* backend.outbound
      assert.deepStrictEqual(streams.map((stream) => stream.lane).sort(), ["acked", "first"])
      // The writer carries on, and the seqs of the failed transaction were not taken.
      assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "ok", payload: text("o3") }], 1), [1])
    }))

  it.scopedLive("a caller interrupted while waiting is skipped, and the writer carries on", () =>
    Effect.gen(function*() {
      const { backend, count, sql, started } = yield* openCounted
      yield* count
      const { release } = yield* holdConnection(sql)
      const first = yield* Effect.fork(backend.append([{ peer: A, lane: "x", payload: text("1") }], 1))
      yield* started(1)
      const gone = yield* Effect.fork(backend.append([{ peer: A, lane: "x", payload: text("gone") }], 1))
      const kept = yield* Effect.fork(backend.append([{ peer: A, lane: "x", payload: text("2") }], 1))
      yield* Effect.sleep("20 millis")
      yield* Fiber.interrupt(gone)
      yield* release
      assert.deepStrictEqual(yield* Fiber.join(first), [1])
      assert.deepStrictEqual(yield* Fiber.join(kept), [2])
      const stored = yield* backend.read(A, "x", 1, 10)
      assert.deepStrictEqual(stored.map((m) => new TextDecoder().decode(m.payload)), ["1", "2"])
    }))

  it.scopedLive("writes inside withTransaction run in it: they commit and roll back with it", () =>
    Effect.gen(function*() {
      const { backend, sql } = yield* openCounted
      yield* sql`CREATE TABLE app (value TEXT NOT NULL)`
      yield* backend.append([{ peer: A, lane: "acked", payload: text("a1") }], 1)
      const writes = Effect.all([
        sql`INSERT INTO app (value) VALUES ('row')`,
        backend.append([{ peer: A, lane: "x", payload: text("m") }], 1),
        backend.acknowledge([{ peer: A, lane: "acked", upTo: 1 }]),
        backend.commitReceived([{ peer: A, lane: "in", incarnation: backend.incarnation, delivered: 1, runs: [] }]),
        backend.setIncarnation(A, backend.incarnation)
      ])
      // On SQLite the transaction holds the only connection: a write deferred to the writer would never finish.
      const failed = yield* Effect.flip(
        backend.withTransaction(Effect.zipRight(writes, Effect.fail("rollback" as const)))
      ).pipe(
        Effect.timeout("5 seconds")
      )
      assert.strictEqual(failed, "rollback")
      assert.deepStrictEqual(yield* sql`SELECT value FROM app`, [])
      assert.deepStrictEqual(yield* backend.read(A, "x", 1, 10), [])
      assert.deepStrictEqual((yield* backend.read(A, "acked", 1, 10)).map((m) => m.seq), [1])
      assert.deepStrictEqual(yield* backend.received, [])
      assert.deepStrictEqual((yield* backend.outbound).incarnations, [])

      yield* backend.withTransaction(writes).pipe(Effect.timeout("5 seconds"))
      assert.deepStrictEqual(yield* sql`SELECT value FROM app`, [{ value: "row" }])
      assert.deepStrictEqual((yield* backend.read(A, "x", 1, 10)).map((m) => m.seq), [1])
      assert.deepStrictEqual(yield* backend.read(A, "acked", 1, 10), [])
      assert.strictEqual((yield* backend.received).length, 1)
      assert.strictEqual((yield* backend.outbound).incarnations.length, 1)
    }))
})
