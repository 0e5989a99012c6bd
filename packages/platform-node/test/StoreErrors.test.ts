/**
 * Stores the backends refuse at start, and errors that give the store's own reason.
 *
 * Each bad store is made for real: garbage bytes, damaged pages of a real store, a read-only file or directory, a
 * migration of a newer version; a PostgreSQL server that runs read-only transactions. Each open is refused with
 * `StoreUnusableError` naming the reason, and leaves the store as it was: the files' bytes, or the tables' rows.
 * Every message is printed as it is (the operator's view), prefixed with `[store error]`.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as FileSystem from "@effect/platform/FileSystem"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import { assert, describe, it } from "@effect/vitest"
import { Backend, BackendError, StoreUnusableError } from "@intersession/core/Backend"
import * as PeerId from "@intersession/core/PeerId"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import * as Fs from "node:fs/promises"
import * as Path from "node:path"
import * as PostgresBackend from "../src/PostgresBackend.js"
import * as SqlBackend from "../src/SqlBackend.js"
import * as SqliteBackend from "../src/SqliteBackend.js"
import { adminLayer, freshPrefix, openScoped, probe, suiteName, testSessions, url } from "./PgTestKit.js"
import { script, spawnScript } from "./SqlTestKit.js"

const A = PeerId.make("A")
const text = (value: string) => new TextEncoder().encode(value)

/** Prints an error's message as the operator reads it, for the record of what each bad store says. */
const show = (label: string, message: string) => Effect.sync(() => console.log(`[store error] ${label}: ${message}`))

const tempDirectory = Effect.flatMap(
  FileSystem.FileSystem,
  (fs) => fs.makeTempDirectoryScoped({ prefix: "intersession-bad-" })
).pipe(Effect.provide(NodeFileSystem.layer))

/** Every file of a directory, with a digest of its bytes: what a refused open must leave as it was. */
const filesOf = (directory: string) =>
  Effect.promise(async () => {
    const names = (await Fs.readdir(directory)).sort()
    const digests = await Promise.all(
      names.map(async (
        name
      ) => [name, createHash("sha256").update(await Fs.readFile(Path.join(directory, name))).digest("hex")])
    )
    return Object.fromEntries(digests)
  })

/** Opens the SQLite store and closes it again; gives the error it was refused with. */
const refusal = (options: SqliteBackend.Options) =>
  Layer.build(SqliteBackend.layer(options)).pipe(
    Effect.scoped,
    // The repository installs the driver: its absence here is a broken checkout, not a store's failure.
    Effect.catchTag("DriverMissingError", Effect.die),
    Effect.flip
  )

/** Opens the store, which must be refused as unusable for `reason`, and gives the error. */
const refusedAs = (options: SqliteBackend.Options, reason: StoreUnusableError["reason"]) =>
  Effect.gen(function*() {
    const error = yield* refusal(options)
    if (!(error instanceof StoreUnusableError)) return assert.fail(`expected StoreUnusableError, got ${error.message}`)
    assert.strictEqual(error.reason, reason, error.message)
    assert.strictEqual(error.store, options.filename)
    return error
  })

/** A real store: created by the layer, three messages appended, then closed. */
const createStore = (filename: string) =>
  Layer.build(SqliteBackend.layer({ filename })).pipe(
    Effect.flatMap((context) =>
      Context.get(context, Backend).append([1, 2, 3].map((i) => ({ peer: A, lane: "x", payload: text(`m${i}`) })), 1)
    ),
    Effect.scoped,
    Effect.catchTag("DriverMissingError", Effect.die)
  )

/** Runs `f` on a plain connection to the file (no lock, no WAL change), closed afterwards. */
const withPlainClient = <A, E>(filename: string, f: (sql: SqlClient.SqlClient) => Effect.Effect<A, E>) =>
  Effect.scoped(Effect.flatMap(SqliteClient.make({ filename, disableWAL: true }), f)).pipe(
    Effect.provide(Reactivity.layer)
  )

/** Overwrites bytes of a file, as a failing disk or a stray write would. */
const overwrite = (filename: string, offset: number, bytes: Uint8Array) =>
  Effect.promise(async () => {
    const file = await Fs.open(filename, "r+")
    try {
      await file.write(bytes, 0, bytes.length, offset)
    } finally {
      await file.close()
    }
  })

/** The root page of one of the store's tables, and the page size. */
const rootPage = (filename: string, table: string) =>
  withPlainClient(filename, (sql) =>
    Effect.all({
      page: Effect.map(
        sql<{ rootpage: number }>`SELECT rootpage FROM sqlite_master WHERE name = ${table}`,
        (rows) => rows[0]!.rootpage
      ),
      size: Effect.map(sql.unsafe<{ page_size: number }>("PRAGMA page_size"), (rows) => rows[0]!.page_size)
    }))

/**
 * As root, `chmod` stops no write: a read-only store is then opened by a child process running as `nobody`
 * (uid 65534), for which the file or directory really is read-only. Checked once: the child must be able to read
 * the sources it runs.
 */
const isRoot = process.getuid?.() === 0
const unprivileged = { uid: 65534, gid: 65534 }
const readOnlySkip: string | undefined = (() => {
  if (!isRoot) return undefined
  const check = spawnSync(process.execPath, [
    "-e",
    `require("fs").accessSync(${JSON.stringify(script("SqliteLockChild.ts"))})`
  ], {
    ...unprivileged,
    encoding: "utf8"
  })
  return check.status === 0
    ? undefined
    : `running as root, and a child process as uid 65534 cannot read the sources (${
      check.error?.message ?? check.stderr.trim()
    })`
})()
if (readOnlySkip !== undefined) console.warn(`Read-only store tests SKIPPED: ${readOnlySkip}`)

/**
 * Opens the SQLite store as a user for whom `chmod` counts: this process, or a child running as `nobody` when this
 * one is root. Gives the tag and message of the error it was refused with.
 */
const openAsUnprivileged = (filename: string) =>
  Effect.gen(function*() {
    if (!isRoot) {
      const error = yield* refusal({ filename })
      return { tag: error._tag, message: error.message }
    }
    const child = yield* spawnScript(script("SqliteLockChild.ts"), [filename], unprivileged)
    const line = yield* child.next
    yield* child.kill
    return { tag: line.result, message: line.detail ?? "" }
  }).pipe(Effect.scoped)

const chmod = (path: string, mode: number) => Effect.promise(() => Fs.chmod(path, mode))

describe("SQLite stores refused at start, with nothing written", () => {
  it.scopedLive("a file that is not a database: NotADatabase", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const filename = Path.join(directory, "store.db")
      yield* Effect.promise(() =>
        Fs.writeFile(filename, "these are the minutes of the meeting, not a database\n".repeat(100))
      )
      const before = yield* filesOf(directory)
      const error = yield* refusedAs({ filename }, "NotADatabase")
      yield* show("not a database", error.message)
      assert.include(error.message, "SQLITE_NOTADB: file is not a database")
      assert.deepStrictEqual(yield* filesOf(directory), before)
    }))

  it.scopedLive("a store whose table page is overwritten: Corrupt, with SQLite's error", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const filename = Path.join(directory, "store.db")
      yield* createStore(filename)
      const { page, size } = yield* rootPage(filename, "intersession_outbound_messages")
      yield* overwrite(filename, (page - 1) * size, new Uint8Array(size).fill(0x5a))
      const before = yield* filesOf(directory)
      const error = yield* refusedAs({ filename }, "Corrupt")
      yield* show("corrupt page", error.message)
      assert.include(error.message, "SQLITE_CORRUPT")
      assert.deepStrictEqual(yield* filesOf(directory), before)
    }))

  it.scopedLive("a store with rows out of order in a page: Corrupt, with the integrity check's finding", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const filename = Path.join(directory, "store.db")
      yield* createStore(filename)
      // The messages' table is small: its root page is its only leaf. Swapping its first two cell pointers puts two
      // rows out of order, which only a check of the page finds.
      const { page, size } = yield* rootPage(filename, "intersession_outbound_messages")
      const bytes = yield* Effect.promise(() => Fs.readFile(filename))
      const offset = (page - 1) * size
      assert.strictEqual(bytes[offset], 13, "a table leaf page")
      const pointers = bytes.subarray(offset + 8, offset + 12)
      yield* overwrite(filename, offset + 8, Uint8Array.of(pointers[2]!, pointers[3]!, pointers[0]!, pointers[1]!))
      const before = yield* filesOf(directory)
      const error = yield* refusedAs({ filename }, "Corrupt")
      yield* show("rows out of order", error.message)
      assert.include(error.message, "out of order")
      assert.deepStrictEqual(yield* filesOf(directory), before)
      // Without the check, the same store opens: the damage is in rows the opening does not read.
      const opened = yield* Layer.build(SqliteBackend.layer({ filename, checkIntegrity: false })).pipe(
        Effect.as("opened"),
        Effect.scoped,
        Effect.catchAll((error) => Effect.succeed(error._tag))
      )
      assert.strictEqual(opened, "opened")
    }))

  it.scopedLive("a store written by a newer version: NewerSchema, naming both versions", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const filename = Path.join(directory, "store.db")
      yield* createStore(filename)
      yield* withPlainClient(
        filename,
        (sql) => sql`INSERT INTO intersession_migrations (migration_id, name) VALUES (99, 'from_the_future')`
      )
      const before = yield* filesOf(directory)
      const error = yield* refusedAs({ filename }, "NewerSchema")
      yield* show("newer schema", error.message)
      assert.include(error.message, "its newest migration is 99_from_the_future")
      assert.include(error.message, "knows migrations up to 4_dead_letters")
      assert.deepStrictEqual(yield* filesOf(directory), before)
    }))

  it.scopedLive.skipIf(readOnlySkip !== undefined)(
    `a read-only file, and a store in a read-only directory: ReadOnly${
      readOnlySkip === undefined ? "" : ` (skipped: ${readOnlySkip})`
    }`,
    () =>
      Effect.gen(function*() {
        const directory = yield* tempDirectory
        yield* Effect.addFinalizer(() => Effect.ignore(Effect.promise(() => Fs.chmod(directory, 0o700))))
        const filename = Path.join(directory, "store.db")
        yield* createStore(filename)
        // A user other than the owner must reach the file (a child process as nobody, when this one is root).
        yield* chmod(directory, 0o755)

        yield* chmod(filename, 0o444)
        const before = yield* filesOf(directory)
        const file = yield* openAsUnprivileged(filename)
        yield* show(`read-only file${isRoot ? " (opened as uid 65534)" : ""}`, file.message)
        assert.strictEqual(file.tag, "StoreUnusableError", file.message)
        assert.include(file.message, "it cannot be written: the file is read-only")
        assert.deepStrictEqual(yield* filesOf(directory), before)

        yield* chmod(filename, 0o666)
        yield* chmod(directory, 0o555)
        const inDirectory = yield* openAsUnprivileged(filename)
        yield* show(`read-only directory${isRoot ? " (opened as uid 65534)" : ""}`, inDirectory.message)
        assert.strictEqual(inDirectory.tag, "StoreUnusableError", inDirectory.message)
        assert.include(inDirectory.message, "its directory is read-only")
        const fresh = yield* openAsUnprivileged(Path.join(directory, "new.db"))
        assert.strictEqual(fresh.tag, "StoreUnusableError", fresh.message)
        yield* chmod(directory, 0o755)
        assert.deepStrictEqual(yield* filesOf(directory), before)
      })
  )
})

describe("SQLite stores on a client of the application's", () => {
  it.scopedLive("a client that opened the file read-only: ReadOnly, from SQLite's own refusal of a write", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const filename = Path.join(directory, "store.db")
      yield* createStore(filename)
      const before = yield* filesOf(directory)
      // SQLITE_OPEN_READONLY: SQLite refuses every write, whoever runs the process; the store's probe finds it.
      const error = yield* SqliteClient.make({ filename, readonly: true, disableWAL: true }).pipe(
        Effect.flatMap((sql) => Effect.provideService(SqlBackend.make({ name: filename }), SqlClient.SqlClient, sql)),
        Effect.provide(Reactivity.layer),
        Effect.scoped,
        Effect.flip
      )
      if (!(error instanceof StoreUnusableError)) {
        return assert.fail(`expected StoreUnusableError, got ${error.message}`)
      }
      yield* show("read-only connection", error.message)
      assert.strictEqual(error.reason, "ReadOnly")
      assert.include(error.message, "SQLITE_READONLY")
      assert.deepStrictEqual(yield* filesOf(directory), before)
    }))
})

describe("the driver's reason in BackendError", () => {
  it.scopedLive("a full disk: SQLITE_FULL in the message, SQLite's error kept as the cause", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      // The application's own client, on which the test limits the database's size: a full disk, for SQLite.
      const sql = yield* SqliteClient.make({ filename: Path.join(directory, "app.db") }).pipe(
        Effect.provide(Reactivity.layer)
      )
      const backend = yield* SqlBackend.make().pipe(Effect.provideService(SqlClient.SqlClient, sql))
      assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text("fits") }], 1), [1])
      const pages = yield* sql.unsafe<{ page_count: number }>("PRAGMA page_count")
      yield* sql.unsafe(`PRAGMA max_page_count = ${pages[0]!.page_count}`)

      const error = yield* Effect.flip(backend.append([{ peer: A, lane: "x", payload: new Uint8Array(64 * 1024) }], 1))
      yield* show("full disk", error.message)
      assert.strictEqual(error.message, "Backend operation append failed: SQLITE_FULL: database or disk is full")
      assert.strictEqual(error.operation, "append")
      // The cause is SQLite's error as @effect/sql gave it, for code that inspects it.
      const driver = error.cause instanceof SqlError ? error.cause.cause : undefined
      assert.strictEqual(
        typeof driver === "object" && driver !== null && "code" in driver ? driver.code : undefined,
        "SQLITE_FULL"
      )

      // Room again: the store goes on where it was.
      yield* sql.unsafe("PRAGMA max_page_count = 1073741823")
      assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text("again") }], 1), [2])
    }))

  it("a message carries the first coded error along the cause chain, and looks through generic wrappers", () => {
    const driver = Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" })
    const wrapped = new SqlError({ cause: driver, message: "Failed to execute statement" })
    assert.strictEqual(
      new BackendError({ operation: "commitReceived", cause: wrapped }).message,
      "Backend operation commitReceived failed: SQLITE_FULL: database or disk is full"
    )
    // A code the message already gives is not repeated.
    const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" })
    assert.strictEqual(
      new BackendError({ operation: "connect", cause: refused }).message,
      "Backend operation connect failed: connect ECONNREFUSED 127.0.0.1:1"
    )
    // Without a code, the innermost message: not the wrapper's.
    assert.strictEqual(
      new BackendError({
        operation: "read",
        cause: new SqlError({ cause: new Error("no such table: x"), message: "Failed" })
      })
        .message,
      "Backend operation read failed: no such table: x"
    )
    assert.strictEqual(
      new BackendError({ operation: "open", cause: "plain text" }).message,
      "Backend operation open failed: plain text"
    )
  })
})

describe.skipIf(probe.url === undefined)(suiteName("PostgreSQL stores refused at start, with nothing written"), () => {
  /** The store's rows, table by table, as JSON: what a refused open must leave as it was. */
  const rowsOf = (prefix: string) =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const tables = yield* sql<{ tablename: string }>`
        SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND starts_with(tablename, ${prefix})
        ORDER BY tablename`
      const rows: Record<string, unknown> = {}
      for (const { tablename } of tables) {
        rows[tablename] = yield* sql.unsafe(`SELECT to_jsonb(t)::text AS row FROM "${tablename}" AS t ORDER BY 1`)
      }
      return rows
    })

  it.scopedLive("a server whose transactions are read-only: ReadOnly, and no table is created", () =>
    Effect.gen(function*() {
      const tablePrefix = yield* freshPrefix
      const option = "options=-c%20default_transaction_read_only%3Don"
      const readOnly = url.includes(testSessions)
        ? url.replace(testSessions, option)
        : `${url}${url.includes("?") ? "&" : "?"}${option}`
      const error = yield* Effect.flip(Effect.scoped(
        Layer.build(PostgresBackend.layer({ url: readOnly, tablePrefix })).pipe(
          Effect.catchTag("DriverMissingError", Effect.die)
        )
      ))
      if (!(error instanceof StoreUnusableError)) {
        return assert.fail(`expected StoreUnusableError, got ${error.message}`)
      }
      yield* show("PostgreSQL read-only", error.message)
      assert.strictEqual(error.reason, "ReadOnly")
      assert.deepStrictEqual(yield* rowsOf(tablePrefix), {})
    }).pipe(Effect.scoped, Effect.provide(adminLayer)))

  it.scopedLive("a store written by a newer version: NewerSchema, and its rows are as they were", () =>
    Effect.gen(function*() {
      const tablePrefix = yield* freshPrefix
      const first = yield* openScoped({ tablePrefix })
      yield* first.backend.append([{ peer: A, lane: "x", payload: text("kept") }], 1)
      yield* first.close
      const admin = yield* SqlClient.SqlClient
      yield* admin`INSERT INTO ${admin(`${tablePrefix}migrations`)} (migration_id, name) VALUES (99, 'from_the_future')`
      const before = yield* rowsOf(tablePrefix)
      const error = yield* Effect.flip(Effect.scoped(openScoped({ tablePrefix })))
      if (!(error instanceof StoreUnusableError)) {
        return assert.fail(`expected StoreUnusableError, got ${error.message}`)
      }
      yield* show("PostgreSQL newer schema", error.message)
      assert.strictEqual(error.reason, "NewerSchema")
      assert.include(error.message, "its newest migration is 99_from_the_future")
      assert.include(error.message, "knows migrations up to 4_dead_letters")
      assert.deepStrictEqual(yield* rowsOf(tablePrefix), before)
    }).pipe(Effect.scoped, Effect.provide(adminLayer)))

  it.scopedLive("the server's SQLSTATE and reason in BackendError", () =>
    Effect.gen(function*() {
      const tablePrefix = yield* freshPrefix
      const { backend } = yield* openScoped({ tablePrefix })
      const admin = yield* SqlClient.SqlClient
      yield* admin.unsafe(`CREATE FUNCTION "${tablePrefix}refuse"() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'lane % is closed', NEW.lane USING ERRCODE = 'check_violation'; END $$`)
      yield* admin.unsafe(`CREATE TRIGGER refuse BEFORE INSERT ON "${tablePrefix}outbound_messages"
        FOR EACH ROW EXECUTE FUNCTION "${tablePrefix}refuse"()`)
      const error = yield* Effect.flip(backend.append([{ peer: A, lane: "x", payload: text("m") }], 1))
      yield* show("PostgreSQL append", error.message)
      assert.strictEqual(error.message, "Backend operation append failed: 23514: lane x is closed")
      yield* admin.unsafe(`DROP FUNCTION "${tablePrefix}refuse"() CASCADE`)

      const unreachable = yield* Effect.flip(Effect.scoped(Layer.build(PostgresBackend.layer({
        url: "postgres://postgres@127.0.0.1:1/test",
        connectTimeout: Duration.seconds(2)
      }))))
      yield* show("PostgreSQL unreachable", unreachable.message)
      assert.match(unreachable.message, /^Backend operation connect failed: .*ECONNREFUSED/)
    }).pipe(Effect.scoped, Effect.provide(adminLayer)))
})
