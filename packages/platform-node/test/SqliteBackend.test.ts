import * as Reactivity from "@effect/experimental/Reactivity"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as FileSystem from "@effect/platform/FileSystem"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Backend } from "@intersession/core/Backend"
import * as PeerId from "@intersession/core/PeerId"
import * as BackendSuite from "@intersession/testing/BackendSuite"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Path from "node:path"
import * as SqlBackend from "../src/SqlBackend.js"
import * as SqliteBackend from "../src/SqliteBackend.js"
import { buildScoped, rowCountsRoundTrip, script, spawnScript } from "./SqlTestKit.js"

/** A fresh directory for the scope, removed with everything in it when the scope closes. */
const tempDirectory = Effect.flatMap(
  FileSystem.FileSystem,
  (fs) => fs.makeTempDirectoryScoped({ prefix: "intersession-sqlite-" })
).pipe(Effect.provide(NodeFileSystem.layer))

const openBackend = (options: SqliteBackend.Options) =>
  Layer.build(SqliteBackend.layer(options)).pipe(
    Effect.map(Context.get(Backend)),
    // The repository installs the driver: its absence here is a broken checkout, not a store's failure.
    Effect.catchTag("DriverMissingError", Effect.die)
  )

const fixture = Layer.succeed(
  BackendSuite.BackendFixture,
  BackendSuite.BackendFixture.of({
    makeStore: Effect.map(tempDirectory, (directory) => ({
      // A fresh store in a fresh directory is usable: anything else is a broken test machine.
      open: Effect.catchTag(
        openBackend({ filename: Path.join(directory, "store.db") }),
        "StoreUnusableError",
        Effect.die
      )
    }))
  })
)

BackendSuite.backendSuite("SqliteBackend", fixture)

const A = PeerId.make("A")
const text = (value: string) => new TextEncoder().encode(value)

const openScoped = (options: SqliteBackend.Options) => buildScoped(SqliteBackend.layer(options))

const pragma = (name: string) =>
  Effect.map(SqlClient.SqlClient, (sql) => sql.unsafe<Record<string, unknown>>(`PRAGMA ${name}`)).pipe(
    Effect.flatten,
    Effect.map((rows) => rows[0]?.[name])
  )

describe("SqliteBackend", () => {
  it.scopedLive("runs in WAL mode, exclusive locking mode and synchronous NORMAL by default", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const { context } = yield* openScoped({ filename: Path.join(directory, "store.db") })
      const settings = yield* Effect.all({
        journal: pragma("journal_mode"),
        synchronous: pragma("synchronous"),
        locking: pragma("locking_mode")
      }).pipe(Effect.provide(context))
      // synchronous: 1 is NORMAL, 2 is FULL.
      assert.deepStrictEqual(settings, { journal: "wal", synchronous: 1, locking: "exclusive" })
    }))

  it.scopedLive("applies synchronous FULL when asked, and NORMAL again on the next open", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const filename = Path.join(directory, "store.db")
      const full = yield* openScoped({ filename, synchronous: "FULL" })
      assert.deepStrictEqual(
        yield* Effect.all([pragma("journal_mode"), pragma("synchronous")]).pipe(Effect.provide(full.context)),
        ["wal", 2]
      )
      yield* full.close
      const normal = yield* openScoped({ filename, synchronous: "NORMAL" })
      assert.deepStrictEqual(
        yield* Effect.all([pragma("journal_mode"), pragma("synchronous")]).pipe(Effect.provide(normal.context)),
        ["wal", 1]
      )
    }))

  it.scopedLive("provides the SqlClient of the store's database, for the application's own tables", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const { context } = yield* openScoped({ filename: Path.join(directory, "store.db") })
      const backend = Context.get(context, Backend)
      const sql = Context.get(context, SqlClient.SqlClient)
      assert.strictEqual(Context.get(context, SqliteClient.SqliteClient), sql)
      yield* sql`CREATE TABLE app (value TEXT NOT NULL)`
      yield* backend.withTransaction(Effect.zipRight(
        sql`INSERT INTO app (value) VALUES ('one')`,
        backend.append([{ peer: A, lane: "x", payload: text("m1") }], 1)
      ))
      const failed = yield* Effect.flip(backend.withTransaction(Effect.zipRight(
        Effect.zipRight(
          sql`INSERT INTO app (value) VALUES ('two')`,
          backend.append([{ peer: A, lane: "x", payload: text("m2") }], 1)
        ),
        Effect.fail("application failure" as const)
      )))
      assert.strictEqual(failed, "application failure")
      assert.deepStrictEqual(yield* sql<{ value: string }>`SELECT value FROM app`, [{ value: "one" }])
      assert.deepStrictEqual((yield* backend.read(A, "x", 1, 10)).map((m) => m.seq), [1])
    }))

  it.scopedLive("batches of every statement row count: appends, acknowledgements and receive states", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const { context } = yield* openScoped({ filename: Path.join(directory, "store.db") })
      yield* rowCountsRoundTrip(Context.get(context, Backend))
    }))

  it.scopedLive("reads back numbers when the application has the driver return integers as bigint", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const { context } = yield* openScoped({ filename: Path.join(directory, "store.db") })
      const backend = Context.get(context, Backend)
      const big = Number.MAX_SAFE_INTEGER
      yield* backend.append([{ peer: A, lane: "x", payload: text("a") }], big)
      yield* backend.commitReceived([{
        peer: A,
        lane: "x",
        incarnation: backend.incarnation,
        delivered: big,
        runs: []
      }])
      const safe = <X, E, R>(effect: Effect.Effect<X, E, R>) =>
        Effect.provideService(effect, SqlClient.SafeIntegers, true)
      const [read] = yield* safe(backend.read(A, "x", 1, 10))
      assert.deepStrictEqual([read?.seq, read?.run], [1, big])
      const [stream] = (yield* safe(backend.outbound)).streams
      assert.deepStrictEqual(stream, {
        peer: A,
        lane: "x",
        firstPending: 1,
        nextSeq: 2,
        runs: [{ run: big, from: 1 }],
        dropped: []
      })
      const [received] = yield* safe(backend.received)
      assert.deepStrictEqual([received?.delivered, received?.incarnation], [big, backend.incarnation])
    }))

  it.scopedLive("SqlBackend on an application's own SqliteClient: one owner per table prefix", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const client = SqliteClient.layer({ filename: Path.join(directory, "app.db") })
      yield* Effect.gen(function*() {
        const first = yield* SqlBackend.make()
        assert.deepStrictEqual(yield* first.append([{ peer: A, lane: "x", payload: text("a") }], 1), [1])
        const refused = yield* Effect.flip(Effect.scoped(SqlBackend.make()))
        assert.strictEqual(refused._tag, "StoreLockedError")
        const other = yield* SqlBackend.make({ tablePrefix: "other_" })
        assert.deepStrictEqual(yield* other.append([{ peer: A, lane: "x", payload: text("b") }], 1), [1])
        assert.deepStrictEqual(yield* pragma("locking_mode"), "exclusive")
      }).pipe(Effect.provide(client))
    }))

  it.scopedLive("fails with BackendError when the file cannot be opened", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const error = yield* Effect.flip(
        Effect.scoped(openBackend({ filename: Path.join(directory, "missing", "store.db") }))
      )
      assert.strictEqual(error._tag, "BackendError")
      const invalid = yield* Effect.flip(Effect.scoped(openBackend({
        filename: Path.join(directory, "store.db"),
        tablePrefix: "Not-A-Prefix"
      })))
      assert.strictEqual(invalid._tag, "BackendError")
    }))

  it.scopedLive("a second owner in this process is refused by SQLite's lock, at once, until the first closes", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const filename = Path.join(directory, "store.db")
      const first = yield* openScoped({ filename })
      yield* Context.get(first.context, Backend).append([{ peer: A, lane: "x", payload: text("kept") }], 1)

      const started = Date.now()
      const refused = yield* Effect.flip(Effect.scoped(openBackend({ filename })))
      assert.strictEqual(refused._tag, "StoreLockedError")
      assert.isBelow(Date.now() - started, 1000, "refused without waiting for a busy timeout")

      // Not only this library's layer: any other connection to the file is refused, so the lock is SQLite's.
      const raw = yield* Effect.scoped(
        Effect.gen(function*() {
          const sql = yield* SqliteClient.make({ filename, disableWAL: true })
          yield* sql.unsafe("PRAGMA busy_timeout = 0")
          return yield* Effect.either(sql.unsafe("SELECT count(*) AS n FROM sqlite_master"))
        }).pipe(Effect.provide(Reactivity.layer))
      )
      assert.isTrue(raw._tag === "Left", "a plain connection cannot read the owned file")

      yield* first.close
      const second = yield* Effect.scoped(
        Effect.flatMap(openBackend({ filename }), (backend) => backend.read(A, "x", 1, 10))
      )
      assert.deepStrictEqual(second.map((m) => new TextDecoder().decode(m.payload)), ["kept"])
    }))

  it.scopedLive("an owner in another process is refused while this one lives and opens once it closes; then it is this process that is refused, until that one is killed", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const filename = Path.join(directory, "store.db")
      const first = yield* openScoped({ filename })
      // The child tries to open the store at once, and again each time it is told to.
      const child = yield* spawnScript(script("SqliteLockChild.ts"), [filename])
      const refused = yield* child.next
      assert.strictEqual(refused.result, "StoreLockedError", refused.detail)
      yield* first.close
      yield* child.write("again")
      const opened = yield* child.next
      assert.strictEqual(opened.result, "opened", opened.detail)
      // Now the child owns the store: this process is refused until the child dies.
      const refusedHere = yield* Effect.flip(Effect.scoped(openBackend({ filename })))
      assert.strictEqual(refusedHere._tag, "StoreLockedError")
      yield* child.kill
      const backend = yield* openBackend({ filename })
      assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text("after") }], 1), [1])
    }))
})
