/**
 * Group commit in the SQL backend: a write made while no other runs commits at once on the caller's fiber, writes
 * that arrive while one runs share the next transaction, and writes made inside a transaction run in it.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as FileSystem from "@effect/platform/FileSystem"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlConnection from "@effect/sql/SqlConnection"
import { assert, describe, it } from "@effect/vitest"
import { Backend, BackendError } from "@intersession/core/Backend"
import * as PeerId from "@intersession/core/PeerId"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import type * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Path from "node:path"
import * as SqlBackend from "../src/SqlBackend.js"
import { buildScoped } from "./SqlTestKit.js"

const A = PeerId.make("A")
const text = (value: string) => new TextEncoder().encode(value)
const decode = (payload: Uint8Array) => new TextDecoder().decode(payload)

/**
 * Holds SQLite's single connection in a transaction of its own until `release`: the backend's next transaction
 * waits for it, and writes made meanwhile pile up in the queue.
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

/**
 * Waits until every fiber waits (is suspended): a write made while another runs waits in the writer's queue, the
 * only place where it can wait, so this is when all of them have queued up. A fiber that has not started yet is
 * running, not suspended.
 */
const allWaiting = (fibers: ReadonlyArray<Fiber.RuntimeFiber<unknown, unknown>>) =>
  Effect.gen(function*() {
    for (;;) {
      const statuses = yield* Effect.forEach(fibers, Fiber.status)
      if (statuses.every((status) => status._tag === "Suspended")) return
      yield* Effect.yieldNow()
    }
  })

/**
 * Opens a SQLite store through a client that reports what the backend does with its connection: each reservation
 * (a transaction waiting for the connection, or a read) and each BEGIN, with the fiber that runs it. The store has a
 * scope of its own, so a test can close it while the client stays open.
 */
const openCounted = Effect.gen(function*() {
  const fs = yield* Effect.provide(FileSystem.FileSystem, NodeFileSystem.layer)
  const directory = yield* fs.makeTempDirectoryScoped({ prefix: "intersession-group-" })
  const sql = yield* SqliteClient.make({ filename: Path.join(directory, "store.db") }).pipe(
    Effect.provide(Reactivity.layer)
  )
  const reservations = yield* Queue.unbounded<FiberId.FiberId>()
  const begins = yield* Queue.unbounded<FiberId.FiberId>()
  const reporting = (connection: SqlConnection.Connection): SqlConnection.Connection => ({
    ...connection,
    execute: (statement, params, transformRows) =>
      statement === "BEGIN"
        ? Effect.zipRight(
          Effect.flatMap(Effect.fiberId, (id) => Queue.offer(begins, id)),
          connection.execute(statement, params, transformRows)
        )
        : connection.execute(statement, params, transformRows)
  })
  const counted = new Proxy(sql, {
    get: (target, key, receiver) =>
      key === "reserve"
        ? Effect.zipRight(
          Effect.flatMap(Effect.fiberId, (id) => Queue.offer(reservations, id)),
          Effect.map(target.reserve, reporting)
        )
        : Reflect.get(target, key, receiver)
  })
  const store = yield* buildScoped(SqlBackend.layer().pipe(Layer.provide(Layer.succeed(SqlClient.SqlClient, counted))))
  /** Forgets what was reported so far. */
  const reset = Effect.zipRight(Queue.takeAll(reservations), Queue.takeAll(begins))
  yield* reset
  const reserving = (n: number) => Queue.takeN(reservations, n)
  return {
    reset,
    backend: Context.get(store.context, Backend),
    sql,
    close: store.close,
    /** The fibers that began a transaction since the last call, in order. */
    begun: Effect.map(Queue.takeAll(begins), Chunk.toArray),
    /** The fibers that reserved the connection since the last call, in order. */
    reserved: Effect.map(Queue.takeAll(reservations), Chunk.toArray),
    /**
     * Holds the connection, forks `first`, which runs its own transaction and waits for the connection, then each of
     * `rest`, which queue behind it. `release` frees the connection.
     */
    contend: <A, E, B, E2>(first: Effect.Effect<A, E>, rest: ReadonlyArray<Effect.Effect<B, E2>>) =>
      Effect.gen(function*() {
        const { release } = yield* holdConnection(sql)
        const firstFiber = yield* Effect.fork(first)
        yield* reserving(1)
        const restFibers = yield* Effect.forEach(rest, (call) => Effect.fork(call))
        yield* allWaiting(restFibers)
        return { first: firstFiber, rest: restFibers, release }
      })
  }
})

describe("SqlBackend group commit", () => {
  it.scopedLive("a write made while none runs commits at once, in a transaction of its own on the caller's fiber", () =>
    Effect.gen(function*() {
      const { backend, begun, reserved } = yield* openCounted
      const caller = yield* Effect.fiberId
      for (let i = 1; i <= 3; i++) {
        assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text(`m${i}`) }], 1), [i])
        assert.deepStrictEqual([yield* reserved, yield* begun], [[caller], [caller]], `append ${i}`)
      }
      yield* backend.acknowledge([{ peer: A, lane: "x", upTo: 2 }])
      assert.deepStrictEqual([yield* reserved, yield* begun], [[caller], [caller]], "acknowledge")
      // One receive state is a single statement, which commits by itself.
      yield* backend.commitReceived([{ peer: A, lane: "in", incarnation: backend.incarnation, delivered: 1, runs: [] }])
      assert.deepStrictEqual([yield* reserved, yield* begun], [[caller], []], "commitReceived")
      assert.deepStrictEqual(yield* backend.received, [
        { peer: A, lane: "in", incarnation: backend.incarnation, delivered: 1, runs: [] }
      ])
      assert.deepStrictEqual((yield* backend.read(A, "x", 1, 10)).map((m) => decode(m.payload)), ["m3"])
    }))

  it.scopedLive("writes that arrive while one runs share the next transaction, with gap-free seqs in call order", () =>
    Effect.gen(function*() {
      const { backend, begun, contend, reset } = yield* openCounted
      const acked = yield* backend.append(
        Array.from({ length: 20 }, (_, i) => ({ peer: A, lane: "acked", payload: text(`a${i}`) })),
        1
      )
      assert.deepStrictEqual(acked, Array.from({ length: 20 }, (_, i) => i + 1))
      yield* reset

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

      const { first, release, rest } = yield* contend(calls[0]!, calls.slice(1))
      yield* release
      const results = [yield* Fiber.join(first), ...yield* Effect.forEach(rest, Fiber.join)]

      // The first call's transaction, then one for all the others, run by the writer.
      const fibers = yield* begun
      assert.strictEqual(fibers.length, 2, `${fibers.length} transactions for ${calls.length} calls`)
      assert.deepStrictEqual(fibers[0], first.id())
      assert.isFalse(rest.some((fiber) => fiber.id() === fibers[1]), "the batch runs on the writer's fiber")
      for (const result of results) {
        if (result === undefined) continue
        // Call i is the (i / lanes)-th call on its lane: its seq is that position, counting from 1.
        assert.deepStrictEqual(result.seqs, [Math.floor(result.i / lanes) + 1])
      }

      const { streams } = yield* backend.outbound
      const byLane = new Map(streams.map((stream) => [stream.lane, stream]))
      assert.deepStrictEqual(byLane.get("acked"), {
        peer: A,
        lane: "acked",
        firstPending: 21,
        nextSeq: 21,
        runs: [],
        dropped: []
      })
      for (let lane = 0; lane < lanes; lane++) {
        const stored = yield* backend.read(A, `l${lane}`, 1, 100)
        assert.deepStrictEqual(stored.map((m) => m.seq), Array.from({ length: 25 }, (_, i) => i + 1))
        assert.deepStrictEqual(
          stored.map((m) => decode(m.payload)),
          Array.from({ length: 25 }, (_, i) => `m${i * lanes + lane}`)
        )
      }
    }))

  it.scopedLive("a failed combined transaction fails every write in it with BackendError and applies none", () =>
    Effect.gen(function*() {
      const { backend, begun, contend, reset, sql } = yield* openCounted
      yield* backend.append([{ peer: A, lane: "acked", payload: text("a1") }, {
        peer: A,
        lane: "acked",
        payload: text("a2")
      }], 1)
      // Refuses any message of lane "bad", inside whatever transaction stores it.
      yield* sql.unsafe(`CREATE TRIGGER refuse_bad BEFORE INSERT ON intersession_outbound_messages
        WHEN NEW.lane = 'bad' BEGIN SELECT RAISE(ABORT, 'refused'); END`)
      yield* reset

      const { first, release, rest } = yield* contend(
        backend.append([{ peer: A, lane: "first", payload: text("f") }], 1),
        [
          backend.append([{ peer: A, lane: "ok", payload: text("o1") }], 1),
          backend.acknowledge([{ peer: A, lane: "acked", upTo: 2 }]),
          backend.append([{ peer: A, lane: "bad", payload: text("b") }], 1),
          backend.append([{ peer: A, lane: "ok", payload: text("o2") }], 1),
          backend.commitReceived([{ peer: A, lane: "in", incarnation: backend.incarnation, delivered: 3, runs: [] }])
        ].map((call) => Effect.either(call))
      )
      yield* release

      assert.deepStrictEqual(yield* Fiber.join(first), [1])
      const outcomes = yield* Effect.forEach(rest, Fiber.join)
      assert.deepStrictEqual(
        outcomes.map((outcome) =>
          Either.isLeft(outcome) && outcome.left instanceof BackendError ? outcome.left.operation : "succeeded"
        ),
        ["append", "acknowledge", "append", "append", "commitReceived"]
      )
      // The first append's transaction, and one for the five others.
      assert.strictEqual((yield* begun).length, 2)

      assert.deepStrictEqual((yield* backend.read(A, "acked", 1, 10)).map((m) => m.seq), [1, 2])
      assert.deepStrictEqual(yield* backend.read(A, "ok", 1, 10), [])
      assert.deepStrictEqual(yield* backend.received, [])
      const { streams } = yield* backend.outbound
      assert.deepStrictEqual(streams.map((stream) => stream.lane).sort(), ["acked", "first"])
      // Writes carry on, and the seqs of the failed transaction were not taken.
      assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "ok", payload: text("o3") }], 1), [1])
    }))

  it.scopedLive("a caller interrupted while waiting in the queue is skipped, and the writer carries on", () =>
    Effect.gen(function*() {
      const { backend, contend } = yield* openCounted
      const { first, release, rest: [gone, kept] } = yield* contend(
        backend.append([{ peer: A, lane: "x", payload: text("1") }], 1),
        ["gone", "2"].map((value) => backend.append([{ peer: A, lane: "x", payload: text(value) }], 1))
      )
      yield* Fiber.interrupt(gone!)
      yield* release
      assert.deepStrictEqual(yield* Fiber.join(first), [1])
      assert.deepStrictEqual(yield* Fiber.join(kept!), [2])
      const stored = yield* backend.read(A, "x", 1, 10)
      assert.deepStrictEqual(stored.map((m) => decode(m.payload)), ["1", "2"])
    }))

  it.scopedLive("a caller interrupted while its own transaction waits for the connection applies nothing, and the writes queued behind it still commit", () =>
    Effect.gen(function*() {
      const { backend, begun, contend } = yield* openCounted
      const { first: gone, release, rest: [kept] } = yield* contend(
        backend.append([{ peer: A, lane: "x", payload: text("gone") }], 1),
        [backend.append([{ peer: A, lane: "x", payload: text("kept") }], 1)]
      )
      yield* Fiber.interrupt(gone)
      yield* release
      assert.deepStrictEqual(yield* Fiber.join(kept!), [1])
      assert.strictEqual((yield* begun).length, 1)
      assert.deepStrictEqual((yield* backend.read(A, "x", 1, 10)).map((m) => decode(m.payload)), ["kept"])
      // With nothing left to run, a write runs its own transaction again.
      const caller = yield* Effect.fiberId
      assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text("next") }], 1), [2])
      assert.deepStrictEqual(yield* begun, [caller])
    }))

  it.scopedLive("once the store is closed, queued writes, a write waiting for the connection and later ones fail with \"the store is closed\" and apply nothing", () =>
    Effect.gen(function*() {
      const { backend, close, contend, sql } = yield* openCounted
      const { first: waiting, release, rest: [queued] } = yield* contend(
        backend.append([{ peer: A, lane: "x", payload: text("waiting") }], 1),
        [backend.append([{ peer: A, lane: "x", payload: text("queued") }], 1)]
      )
      yield* close
      yield* release
      const isClosed = (error: BackendError) => String(error.cause).includes("the store is closed")
      const outcomes = [
        yield* Effect.flip(Fiber.join(waiting)),
        yield* Effect.flip(Fiber.join(queued!)),
        yield* Effect.flip(backend.append([{ peer: A, lane: "x", payload: text("later") }], 1)),
        yield* Effect.flip(backend.acknowledge([{ peer: A, lane: "x", upTo: 1 }]))
      ]
      assert.deepStrictEqual(outcomes.map((error) => [error.operation, isClosed(error)]), [
        ["append", true],
        ["append", true],
        ["append", true],
        ["acknowledge", true]
      ])
      const reopened = yield* SqlBackend.make().pipe(Effect.provideService(SqlClient.SqlClient, sql))
      assert.deepStrictEqual(yield* reopened.read(A, "x", 1, 10), [])
      assert.deepStrictEqual((yield* reopened.outbound).streams, [])
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

  it.scopedLive("a write that fails inside withTransaction applies nothing of itself, and the transaction carries on", () =>
    Effect.gen(function*() {
      const { backend, sql } = yield* openCounted
      yield* sql`CREATE TABLE app (value TEXT NOT NULL)`
      for (const table of ["intersession_outbound_messages", "intersession_received"]) {
        yield* sql.unsafe(`CREATE TRIGGER refuse_${table} BEFORE INSERT ON ${table}
          WHEN NEW.lane = 'bad' BEGIN SELECT RAISE(ABORT, 'refused'); END`)
      }
      const state = (lane: string) => ({ peer: A, lane, incarnation: backend.incarnation, delivered: 1, runs: [] })
      const failed = yield* backend.withTransaction(Effect.gen(function*() {
        yield* sql`INSERT INTO app (value) VALUES ('row')`
        // Its stream's seq is allocated before its message is refused: the allocation is undone with it.
        const append = yield* Effect.flip(backend.append([{ peer: A, lane: "bad", payload: text("b") }], 1))
        // One statement for both states: the refused one takes the other with it.
        const commit = yield* Effect.flip(backend.commitReceived([state("good"), state("bad")]))
        yield* backend.commitReceived([state("after")])
        return [append.operation, commit.operation]
      }))
      assert.deepStrictEqual(failed, ["append", "commitReceived"])
      assert.deepStrictEqual(yield* sql`SELECT value FROM app`, [{ value: "row" }])
      assert.deepStrictEqual((yield* backend.outbound).streams, [])
      assert.deepStrictEqual(yield* backend.received, [state("after")])
    }))

  it.scopedLive("a row the store did not write fails the operation with BackendError, not a defect", () =>
    Effect.gen(function*() {
      const { backend, sql } = yield* openCounted
      yield* backend.append([1, 2, 3].map((i) => ({ peer: A, lane: "x", payload: text(`m${i}`) })), 1)
      yield* sql.unsafe("UPDATE intersession_outbound_messages SET payload = 'text' WHERE seq = 2")
      yield* sql.unsafe("UPDATE intersession_outbound_messages SET run = 1.5 WHERE seq = 3")
      for (const from of [2, 3]) {
        const error = yield* Effect.flip(backend.read(A, "x", from, 1))
        assert.strictEqual(error.operation, "read")
        assert.include(String(error.cause), "unexpected row")
      }
      assert.deepStrictEqual((yield* backend.read(A, "x", 1, 1)).map((m) => decode(m.payload)), ["m1"])

      yield* sql.unsafe("UPDATE intersession_outbound_streams SET next_seq = 'seven' WHERE lane = 'x'")
      const error = yield* Effect.flip(backend.append([{ peer: A, lane: "x", payload: text("m4") }], 1))
      assert.strictEqual(error.operation, "append")
      assert.deepStrictEqual(yield* backend.read(A, "x", 4, 10), [])
    }))
})
