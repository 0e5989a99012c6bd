/**
 * Ownership that cannot lapse unnoticed. On PostgreSQL the store's lock lives on one connection: when it ends while
 * the engine runs, the backend fails every operation with `StoreLostError`, and a fencing token keeps every write
 * of the old owner from committing once a new owner took the store. On SQLite the lock is the connection's, in this
 * process, and does not lapse while the process lives.
 *
 * The numbers of the fencing run are printed, prefixed with `[fencing]`.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as FileSystem from "@effect/platform/FileSystem"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Backend, type BackendError, isStoreLost, StoreLostError } from "@intersession/core/Backend"
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as PeerId from "@intersession/core/PeerId"
import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Path from "node:path"
import * as PostgresBackend from "../src/PostgresBackend.js"
import * as SqliteBackend from "../src/SqliteBackend.js"
import { adminLayer, freshPrefix, openScoped, openWhenFree, probe, suiteName } from "./PgTestKit.js"
import { buildScoped, script, spawnScript } from "./SqlTestKit.js"

const A = PeerId.make("A")
const text = (value: string) => new TextEncoder().encode(value)

/** Prints a line of the record. */
const report = (line: string) => Effect.sync(() => console.log(`[fencing] ${line}`))

/** The error is a `BackendError` of a store this engine no longer owns, for `reason`. */
const assertLost = (error: BackendError, reason: StoreLostError["reason"]) => {
  assert.isTrue(isStoreLost(error), error.message)
  assert.strictEqual(error.cause instanceof StoreLostError ? error.cause.reason : undefined, reason, error.message)
}

/** The store's messages of the run, per lane. */
const committed = (prefix: string, run: number) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ lane: string; count: string; last: string }>`
      SELECT lane, count(*) AS count, max(seq) AS last FROM ${sql(`${prefix}outbound_messages`)}
      WHERE run = ${run} GROUP BY lane ORDER BY lane`).pipe(
      Effect.map((rows) => rows.map((row) => ({ lane: row.lane, count: Number(row.count), last: Number(row.last) })))
    )

const total = (rows: ReadonlyArray<{ readonly count: number }>) => rows.reduce((sum, row) => sum + row.count, 0)

/** The pid of the session that holds the store's advisory lock, among the sessions of an application. */
const lockHolder = (applicationName: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ pid: number }>`
      SELECT l.pid FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = ${applicationName}`)

/** Waits until a statement on the store's table waits for a lock (another session's row lock). */
const blockedOnStore = (prefix: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ waiting: string }>`
      SELECT count(*) AS waiting FROM pg_stat_activity
      WHERE wait_event_type = 'Lock' AND query LIKE ${`%${prefix}store%`}`).pipe(
      Effect.map((rows) => Number(rows[0]?.waiting ?? 0)),
      Effect.repeat({ until: (waiting) => waiting > 0, schedule: Schedule.spaced("5 millis") }),
      Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("nothing waited for the store's row") })
    )

describe.skipIf(probe.url === undefined)(suiteName("PostgreSQL fencing"), () => {
  it.scopedLive("the lock's connection is terminated while four writers run: every write begun after the backend learns it fails, none commits once the second engine took the store, and the second goes on from the first's last commit", () =>
    Effect.gen(function*() {
      const tablePrefix = yield* freshPrefix
      const applicationName = `intersession-fencing-${tablePrefix}`
      const first = yield* openScoped({ tablePrefix, applicationName })
      const run = 7

      type Phase = "owned" | "terminated" | "takenOver"
      let phase: Phase = "owned"
      const succeeded: Record<Phase, number> = { owned: 0, terminated: 0, takenOver: 0 }
      const failed: Record<Phase, number> = { owned: 0, terminated: 0, takenOver: 0 }
      /** Writes that began after the backend had failed one with `StoreLostError`, and succeeded: must stay 0. */
      let succeededAfterLost = 0
      const otherFailures: Array<string> = []
      const flowing = yield* Deferred.make<void>()
      const lost = yield* Deferred.make<BackendError>()
      const refusedAfterTakeover = yield* Deferred.make<void>()

      const writer = (lane: string) =>
        Effect.forever(Effect.gen(function*() {
          const lostBefore = yield* Deferred.isDone(lost)
          const outcome = yield* Effect.either(first.backend.append([{ peer: A, lane, payload: text(lane) }], run))
          const at = phase
          if (Either.isRight(outcome)) {
            succeeded[at]++
            if (lostBefore) succeededAfterLost++
            if (succeeded.owned >= 40) yield* Deferred.succeed(flowing, undefined)
          } else {
            failed[at]++
            if (isStoreLost(outcome.left)) yield* Deferred.succeed(lost, outcome.left)
            else otherFailures.push(outcome.left.message)
            if (at === "takenOver" && failed.takenOver >= 40) yield* Deferred.succeed(refusedAfterTakeover, undefined)
          }
          // A refused write returns at once: let the others run.
          yield* Effect.yieldNow()
        }))
      const writers = yield* Effect.forkScoped(
        Effect.all(["w1", "w2", "w3", "w4"].map(writer), { concurrency: "unbounded", discard: true })
      )
      yield* Deferred.await(flowing)

      const holders = yield* lockHolder(applicationName)
      assert.strictEqual(holders.length, 1, "one session holds the store's lock")
      const admin = yield* SqlClient.SqlClient
      phase = "terminated"
      const terminatedAt = Date.now()
      const [terminated] = yield* admin<{ done: boolean }>`SELECT pg_terminate_backend(${holders[0]!.pid}) AS done`
      assert.isTrue(terminated?.done)

      const firstLost = yield* Deferred.await(lost)
      const learnedAfter = Date.now() - terminatedAt
      assertLost(firstLost, "LockLost")

      const second = yield* openWhenFree({ tablePrefix })
      const tookOverAfter = Date.now() - terminatedAt
      phase = "takenOver"
      const atTakeover = yield* committed(tablePrefix, run)
      yield* Deferred.await(refusedAfterTakeover)
      yield* Fiber.interrupt(writers)
      const atEnd = yield* committed(tablePrefix, run)

      yield* report(
        `first engine: ${succeeded.owned} appends committed while it held the lock; ` +
          `${succeeded.terminated} more answered after its lock connection was terminated, before it learned of it ` +
          `(${learnedAfter} ms later); ${succeededAfterLost} begun after that succeeded; ` +
          `${failed.terminated + failed.takenOver} refused with StoreLostError`
      )
      yield* report(
        `second engine took the store ${tookOverAfter} ms after the termination; the first's rows then: ` +
          `${total(atTakeover)}, after ${failed.takenOver} more refused attempts: ${total(atEnd)}`
      )
      yield* report(`a refused write: ${firstLost.message}`)

      assert.deepStrictEqual(otherFailures, [], "every failure is StoreLostError")
      assert.strictEqual(failed.owned, 0)
      assert.strictEqual(succeededAfterLost, 0, "a write begun after the loss was known succeeded")
      assert.strictEqual(succeeded.takenOver, 0, "a write succeeded after the second engine took the store")
      assert.deepStrictEqual(atEnd, atTakeover, "the first engine's rows changed after the second took the store")
      // Exactly what the first engine was told it stored is in the store.
      assert.strictEqual(total(atEnd), succeeded.owned + succeeded.terminated)

      // Every other operation of the first engine fails the same way.
      for (
        const operation of [
          first.backend.read(A, "w1", 1, 10),
          first.backend.outbound,
          first.backend.received,
          first.backend.acknowledge([{ peer: A, lane: "w1", upTo: 1 }]),
          first.backend.commitReceived([{
            peer: A,
            lane: "in",
            incarnation: first.backend.incarnation,
            delivered: 1,
            runs: []
          }]),
          first.backend.setIncarnation(A, first.backend.incarnation),
          first.backend.expire(Date.now(), 10),
          first.backend.purge(A, undefined),
          first.backend.withTransaction(Effect.void)
        ]
      ) {
        assertLost(yield* Effect.flip(operation), "LockLost")
      }

      // The second engine has everything the first committed, and goes on from it.
      for (const lane of atEnd) {
        const stored = yield* second.read(A, lane.lane, 1, 100_000)
        assert.strictEqual(stored.length, lane.count, lane.lane)
        assert.deepStrictEqual(yield* second.append([{ peer: A, lane: lane.lane, payload: text("next") }], 8), [
          lane.last + 1
        ])
      }
    }).pipe(Effect.scoped, Effect.provide(adminLayer)))

  it.scopedLive("a takeover the backend cannot see (the owner token moved on behind its back): its next write fails, commits nothing, and every later operation fails", () =>
    Effect.gen(function*() {
      const tablePrefix = yield* freshPrefix
      const { backend } = yield* openScoped({ tablePrefix })
      assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text("before") }], 1), [1])
      const admin = yield* SqlClient.SqlClient
      // What a new owner does when it takes the store, while this engine's lock connection still looks alive.
      yield* admin`UPDATE ${admin(`${tablePrefix}store`)} SET owner = owner + 1`

      const refused = yield* Effect.flip(backend.append([{ peer: A, lane: "x", payload: text("after") }], 1))
      yield* report(`a write after an unseen takeover: ${refused.message}`)
      assertLost(refused, "TakenOver")
      // A write inside the application's own transaction on the store's connection is fenced too.
      const inTransaction = yield* Effect.flip(backend.withTransaction(
        backend.commitReceived([{ peer: A, lane: "in", incarnation: backend.incarnation, delivered: 1, runs: [] }])
      ))
      assertLost(inTransaction, "TakenOver")
      assertLost(yield* Effect.flip(backend.read(A, "x", 1, 10)), "TakenOver")
      assertLost(yield* Effect.flip(backend.purge(A, undefined)), "TakenOver")
      assert.deepStrictEqual(yield* committed(tablePrefix, 1), [{ lane: "x", count: 1, last: 1 }])
      const received = yield* admin`SELECT * FROM ${admin(`${tablePrefix}received`)}`
      assert.deepStrictEqual(received, [])
    }).pipe(Effect.scoped, Effect.provide(adminLayer)))

  it.scopedLive("an engine whose lock connection is terminated stops by itself, with nothing to write: closed fails and names the lost store", () =>
    Effect.gen(function*() {
      const tablePrefix = yield* freshPrefix
      const applicationName = `intersession-engine-${tablePrefix}`
      const hub = yield* InMemoryNetwork.make()
      const context = yield* Layer.build(
        ILM.layer().pipe(
          Layer.provide(Layer.merge(hub.layer(A), Delivery.layerInbox())),
          Layer.provide(PostgresBackend.layer({ url: probe.url, tablePrefix, applicationName }))
        )
      )
      const ilm = Context.get(context, ILM.ILM)
      const holders = yield* lockHolder(applicationName)
      assert.strictEqual(holders.length, 1, "one session holds the store's lock")
      const admin = yield* SqlClient.SqlClient
      yield* admin`SELECT pg_terminate_backend(${holders[0]!.pid})`

      const closed = yield* Effect.flip(ilm.closed).pipe(
        Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error("the engine did not stop") })
      )
      yield* report(`an idle engine whose lock connection ended: ${closed.message}`)
      assert.include(closed.message, "no longer owns store")
      assert.include(closed.message, "57P01")
      // Every call fails from then on.
      const refused = yield* Effect.flip(ilm.send(PeerId.make("B"), text("after")))
      assert.strictEqual(refused._tag, "EngineClosedError")
    }).pipe(Effect.scoped, Effect.provide(adminLayer)))

  it.scopedLive("a new owner's token waits for the transaction that read the old one: that transaction commits first, and the old owner's next one fails", () =>
    Effect.gen(function*() {
      const tablePrefix = yield* freshPrefix
      const { backend } = yield* openScoped({ tablePrefix })
      const inside = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      const transaction = yield* Effect.fork(backend.withTransaction(Effect.gen(function*() {
        yield* backend.append([{ peer: A, lane: "x", payload: text("inside") }], 1)
        yield* Deferred.succeed(inside, undefined)
        yield* Deferred.await(gate)
      })))
      yield* Deferred.await(inside)

      const admin = yield* SqlClient.SqlClient
      const takeover = yield* Effect.fork(admin`UPDATE ${admin(`${tablePrefix}store`)} SET owner = owner + 1`)
      yield* blockedOnStore(tablePrefix)
      assert.isTrue(Option.isNone(yield* Fiber.poll(takeover)), "the new token waits for the open transaction")

      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(transaction)
      yield* Fiber.join(takeover)
      assert.deepStrictEqual(yield* committed(tablePrefix, 1), [{ lane: "x", count: 1, last: 1 }])
      assertLost(yield* Effect.flip(backend.append([{ peer: A, lane: "x", payload: text("late") }], 1)), "TakenOver")
      assert.deepStrictEqual(yield* committed(tablePrefix, 1), [{ lane: "x", count: 1, last: 1 }])
    }).pipe(Effect.scoped, Effect.provide(adminLayer)))

  it.scopedLive("a second engine that takes the store waits for the first's open transaction, which the first then rolls back: it learned that its lock is gone", () =>
    Effect.gen(function*() {
      const tablePrefix = yield* freshPrefix
      const applicationName = `intersession-fencing-${tablePrefix}`
      const first = yield* openScoped({ tablePrefix, applicationName })
      yield* first.backend.append([{ peer: A, lane: "x", payload: text("before") }], 1)
      const inside = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      const transaction = yield* Effect.fork(first.backend.withTransaction(Effect.gen(function*() {
        yield* first.backend.append([{ peer: A, lane: "x", payload: text("inside") }], 1)
        yield* Deferred.succeed(inside, undefined)
        yield* Deferred.await(gate)
      })))
      yield* Deferred.await(inside)

      const admin = yield* SqlClient.SqlClient
      const holders = yield* lockHolder(applicationName)
      assert.strictEqual(holders.length, 1)
      yield* admin`SELECT pg_terminate_backend(${holders[0]!.pid})`
      // The first engine learns it from its lock connection's events.
      yield* first.backend.outbound.pipe(
        Effect.flip,
        Effect.retry(Schedule.spaced("5 millis").pipe(Schedule.upTo("10 seconds")))
      )
      const secondOpening = yield* Effect.fork(openWhenFree({ tablePrefix }))
      yield* blockedOnStore(tablePrefix)
      assert.isTrue(Option.isNone(yield* Fiber.poll(secondOpening)), "the second engine waits for the open transaction")

      yield* Deferred.succeed(gate, undefined)
      const rolledBack = yield* Effect.flip(Fiber.join(transaction))
      yield* report(`the first engine's open transaction at the takeover: ${rolledBack.message}`)
      assertLost(rolledBack, "LockLost")
      const second = yield* Fiber.join(secondOpening)
      const stored = yield* second.read(A, "x", 1, 10)
      assert.deepStrictEqual(stored.map((message) => new TextDecoder().decode(message.payload)), ["before"])
    }).pipe(Effect.scoped, Effect.provide(adminLayer)))
})

describe("SQLite ownership", () => {
  it.scopedLive("the lock does not lapse while its process lives: connections of this process that were refused and closed leave it in place, and another process is still refused", () =>
    Effect.gen(function*() {
      const directory = yield* Effect.flatMap(
        FileSystem.FileSystem,
        (fs) => fs.makeTempDirectoryScoped({ prefix: "intersession-fencing-" })
      ).pipe(Effect.provide(NodeFileSystem.layer))
      const filename = Path.join(directory, "store.db")
      const owner = yield* buildScoped(SqliteBackend.layer({ filename }))
      const backend = Context.get(owner.context, Backend)
      for (let i = 0; i < 3; i++) {
        const refused = yield* Effect.scoped(
          Effect.gen(function*() {
            const sql = yield* SqliteClient.make({ filename, disableWAL: true })
            yield* sql.unsafe("PRAGMA busy_timeout = 0")
            return yield* Effect.either(sql.unsafe("SELECT count(*) AS n FROM sqlite_master"))
          }).pipe(Effect.provide(Reactivity.layer))
        )
        assert.isTrue(Either.isLeft(refused), "a plain connection of this process is refused")
        assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text(`m${i}`) }], 1), [i + 1])
      }
      const child = yield* spawnScript(script("SqliteLockChild.ts"), [filename])
      const line = yield* child.next
      assert.strictEqual(line.result, "StoreLockedError", line.detail)
      assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text("m3") }], 1), [4])
    }))
})
