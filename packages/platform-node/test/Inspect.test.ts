/**
 * `intersession inspect` and `intersession dead-letters`, run in process through `Cli.run`, on real SQLite and
 * PostgreSQL stores that the backend layer (or an engine) filled: one suite, run on both.
 *
 * The stores hold messages to peers that never come, so they stay pending; `stored_at` and the dead letters' times
 * are moved back by hours, so the ages printed are known.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as FileSystem from "@effect/platform/FileSystem"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Backend } from "@intersession/core/Backend"
import type * as BackendTypes from "@intersession/core/Backend"
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as Incarnation from "@intersession/core/Incarnation"
import type * as Lane from "@intersession/core/Lane"
import * as PeerId from "@intersession/core/PeerId"
import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { createHash } from "node:crypto"
import { existsSync, readFileSync, writeFileSync } from "node:fs"
import * as PostgresBackend from "../src/PostgresBackend.js"
import * as SqliteBackend from "../src/SqliteBackend.js"
import { runInProcess as runCli } from "./CliKit.js"
import { adminLayer, freshPrefix, probe, suiteName } from "./PgTestKit.js"
import { buildScoped, script, spawnScript } from "./SqlTestKit.js"

const A = PeerId.make("A")
const B = PeerId.make("B")
const C = PeerId.make("C")
const Z = PeerId.make("Z")
const lane = (name: string): Lane.Lane => name
const hour = 3_600_000

/** The output of a command that must succeed. */
const succeeds = (...args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const { exit, stderr, stdout } = yield* runCli(...args)
    assert.isTrue(Exit.isSuccess(exit), `${args.join(" ")}: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`)
    assert.strictEqual(stderr, "")
    return stdout
  })

/** The typed error of a command that must fail, with its tag, reason and message. */
const fails = (...args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const { exit } = yield* runCli(...args)
    assert.isTrue(Exit.isFailure(exit), `${args.join(" ")} should fail`)
    const error = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
    assert.isTrue(Option.isSome(error), `${args.join(" ")}: a typed failure`)
    const value = Option.getOrThrow(error)
    return {
      tag: typeof value === "object" && value !== null && "_tag" in value ? String(value._tag) : "",
      reason: typeof value === "object" && value !== null && "reason" in value ? String(value.reason) : "",
      message: value instanceof Error ? value.message : String(value)
    }
  })

/** The rows of a printed table whose first cells are these. */
const row = (output: string, ...cells: ReadonlyArray<string | number>) => {
  const found = output.split("\n").find((line) => {
    const parts = line.trim().split(/\s{2,}/)
    return cells.every((cell, i) => parts[i] === String(cell))
  })
  assert.isDefined(found, `a row ${cells.join(" | ")} in\n${output}`)
  return (found ?? "").trim().split(/\s{2,}/)
}

interface InspectJson {
  readonly store: string
  readonly migration: string
  readonly incarnation: number | null
  readonly peerIncarnations: ReadonlyArray<{ readonly peer: string; readonly incarnation: number }>
  readonly inbound: ReadonlyArray<{ peer: string; lane: string; incarnation: number; delivered: number }>
  readonly outbound: ReadonlyArray<{
    peer: string
    lane: string
    pending: number
    bytes: number
    oldestAgeMillis: number | null
    undated: number
    nextSeq: number
    firstPending: number
    lowestStored: number | null
    oldestStoredAt: number | null
    dropped: ReadonlyArray<{ from: number; to: number; reason: string }>
  }>
  readonly deadLetters:
    | ReadonlyArray<{
      peer: string
      lane: string
      count: number
      bytes: number
      oldestAgeMillis: number
      replayRequested: number
    }>
    | null
}

interface DeadLetterJson {
  readonly id: number
  readonly peer: string
  readonly lane: string
  readonly seq: number
  readonly attempts: number
  readonly error: string
  readonly payloadBytes: number
  readonly payload: string
  readonly replayRequested: boolean
}

const text = (value: string) => new TextEncoder().encode(value)
const bytes = (length: number) => new Uint8Array(length).fill(7)

/** A store's kit: how to make a fresh one, name it on the command line, and open it. */
interface Kit {
  readonly name: string
  /** A fresh store for the scope: its command-line arguments, and its backend layer. */
  readonly fresh: Effect.Effect<
    {
      readonly args: ReadonlyArray<string>
      readonly layer: Layer.Layer<Backend | SqlClient.SqlClient, unknown>
      /** The table of this store with this suffix. */
      readonly table: (suffix: string) => string
    },
    never,
    Scope.Scope
  >
  /** Whether inspect reads the store while an engine runs on it (PostgreSQL), or is refused (SQLite). */
  readonly readsWhileRunning: boolean
}

/**
 * Fills a store: stream B/default with 4 pending of 101–104 bytes (seq 1 acknowledged), stored 2 hours ago; C/orders
 * with 3 purged seqs and 1 pending message of 10 bytes whose `stored_at` is NULL (as a version before 0.3 left it);
 * C's incarnation 42; the receive state of B/default; and dead letters: 2 of B/default (64 and 36 bytes), 3 hours
 * old, and 1 of C/audit (7 bytes).
 */
const fill = (backend: Backend["Type"], sql: SqlClient.SqlClient, table: (suffix: string) => string) =>
  Effect.gen(function*() {
    yield* backend.append(
      Array.from({ length: 5 }, (_, i) => ({ peer: B, lane: lane("default"), payload: bytes(100 + i) })),
      1
    )
    yield* backend.acknowledge([{ peer: B, lane: lane("default"), upTo: 1 }])
    yield* backend.append(Array.from({ length: 3 }, () => ({ peer: C, lane: lane("orders"), payload: bytes(2000) })), 1)
    yield* backend.purge(C, lane("orders"))
    yield* backend.append([{ peer: C, lane: lane("orders"), payload: bytes(10) }], 1)
    yield* backend.setIncarnation(C, Incarnation.Incarnation.make(42))
    const incarnation = Incarnation.Incarnation.make(77)
    const now = Date.now()
    const letters: ReadonlyArray<BackendTypes.NewDeadLetter> = [
      {
        peer: B,
        lane: lane("default"),
        incarnation,
        seq: 9,
        payload: text("x".repeat(64)),
        error: "boom: the database said no",
        attempts: 5,
        deadLetteredAt: now - 3 * hour
      },
      {
        peer: B,
        lane: lane("default"),
        incarnation,
        seq: 11,
        payload: bytes(36),
        error: "no such account\nat line 2",
        attempts: 3,
        deadLetteredAt: now - hour
      },
      {
        peer: C,
        lane: lane("audit"),
        incarnation,
        seq: 3,
        payload: bytes(7),
        error: "refused",
        attempts: 1,
        deadLetteredAt: now - 60_000
      }
    ]
    yield* backend.commitReceived(
      [{ peer: B, lane: lane("default"), incarnation, delivered: 12, runs: [{ run: 1, from: 1 }] }],
      letters
    )
    const messages = sql(table("outbound_messages"))
    yield* sql`UPDATE ${messages} SET stored_at = stored_at - ${2 * hour} WHERE peer = ${B}`
    yield* sql`UPDATE ${messages} SET stored_at = NULL WHERE peer = ${C}`
  })

/** Builds the store's layer for the effect, and fills the store. */
const filled = (store: Effect.Effect.Success<Kit["fresh"]>) =>
  Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(store.layer)
    yield* fill(Context.get(context, Backend), Context.get(context, SqlClient.SqlClient), store.table)
  }))

/** An engine on the store, as peer A, with an inbox, for the scope; nobody else is on its network. */
const engine = (layer: Layer.Layer<Backend | SqlClient.SqlClient, unknown>) =>
  Effect.gen(function*() {
    const hub = yield* InMemoryNetwork.make()
    const { close, context } = yield* buildScoped(
      ILM.layer().pipe(
        Layer.provideMerge(Delivery.layerInbox()),
        Layer.provide(hub.layer(A)),
        Layer.provide(layer)
      )
    )
    return { ilm: Context.get(context, ILM.ILM), inbox: Context.get(context, Delivery.Inbox), close }
  })

const suite = (kit: Kit) => {
  it.scopedLive("inspect prints each stream's pending count, oldest age, bytes, seqs and dropped ranges, the incarnations, the receive states and the dead letters", () =>
    Effect.gen(function*() {
      const store = yield* kit.fresh
      yield* filled(store)
      const output = yield* succeeds("inspect", ...store.args)
      assert.include(output, "schema 4_dead_letters")
      assert.match(output, /incarnation \d+/)
      assert.deepStrictEqual(row(output, "C"), ["C", "42"])
      assert.deepStrictEqual(row(output, "B", "default", "77"), ["B", "default", "77", "12"])
      // peer, lane, pending, oldest, bytes, next seq, first pending, dropped
      assert.deepStrictEqual(row(output, "B", "default", "4"), ["B", "default", "4", "2.0 h", "410 B", "6", "2", "0"])
      assert.deepStrictEqual(row(output, "C", "orders"), ["C", "orders", "1", "unknown", "10 B", "5", "1", "3"])
      assert.include(output, "C [orders]: seqs 1–3 purged")
      assert.include(output, "\"unknown\": 1 pending message was stored by a version older than 0.3")
      // peer, lane, count, oldest, bytes, marked for replay
      assert.deepStrictEqual(row(output, "B", "default", "2"), ["B", "default", "2", "3.0 h", "100 B", "0"])
      assert.deepStrictEqual(row(output, "C", "audit"), ["C", "audit", "1", "1.0 min", "7 B", "0"])

      const json = JSON.parse(yield* succeeds("inspect", ...store.args, "--json")) as InspectJson
      assert.strictEqual(json.migration, "4_dead_letters")
      assert.isNumber(json.incarnation)
      assert.deepStrictEqual(json.peerIncarnations, [{ peer: "C", incarnation: 42 }])
      assert.deepStrictEqual(json.inbound, [{ peer: "B", lane: "default", incarnation: 77, delivered: 12 }])
      const [toB, toC] = json.outbound
      assert.deepStrictEqual(
        { ...toB, oldestAgeMillis: undefined },
        {
          peer: "B",
          lane: "default",
          pending: 4,
          bytes: 410,
          oldestAgeMillis: undefined,
          undated: 0,
          nextSeq: 6,
          firstPending: 2,
          dropped: [],
          lowestStored: 2,
          oldestStoredAt: toB?.oldestStoredAt
        }
      )
      assert.isAtLeast(toB?.oldestAgeMillis ?? 0, 2 * hour)
      assert.isBelow(toB?.oldestAgeMillis ?? 0, 2 * hour + 60_000)
      assert.strictEqual(toC?.oldestAgeMillis, null)
      assert.strictEqual(toC?.undated, 1)
      assert.deepStrictEqual(toC?.dropped.map(({ from, reason, to }) => ({ from, to, reason })), [
        { from: 1, to: 3, reason: "purged" }
      ])
      assert.deepStrictEqual(json.deadLetters?.map(({ bytes, count, lane, peer }) => ({ peer, lane, count, bytes })), [
        { peer: "B", lane: "default", count: 2, bytes: 100 },
        { peer: "C", lane: "audit", count: 1, bytes: 7 }
      ])
      assert.isAtLeast(json.deadLetters?.[0]?.oldestAgeMillis ?? 0, 3 * hour)
    }))

  it.scopedLive("a store at migration 3 has no table of dead letters: inspect says so, and --json gives null", () =>
    Effect.gen(function*() {
      const store = yield* kit.fresh
      yield* filled(store)
      yield* Effect.scoped(Effect.gen(function*() {
        const sql = Context.get(yield* Layer.build(store.layer), SqlClient.SqlClient)
        yield* sql`DROP TABLE ${sql(store.table("dead_letters"))}`
        yield* sql`DELETE FROM ${sql(store.table("migrations"))} WHERE migration_id = 4`
      }))
      const output = yield* succeeds("inspect", ...store.args)
      assert.include(output, "schema 3_expiry")
      assert.include(output, "none (the store has no table of dead letters")
      assert.deepStrictEqual(row(output, "B", "default", "4"), ["B", "default", "4", "2.0 h", "410 B", "6", "2", "0"])
      const json = JSON.parse(yield* succeeds("inspect", ...store.args, "--json")) as InspectJson
      assert.strictEqual(json.deadLetters, null)
    }))

  it.scopedLive("a store written by a newer version is refused with a typed error naming its migration", () =>
    Effect.gen(function*() {
      const store = yield* kit.fresh
      yield* filled(store)
      yield* Effect.scoped(Effect.gen(function*() {
        const sql = Context.get(yield* Layer.build(store.layer), SqlClient.SqlClient)
        yield* sql`INSERT INTO ${sql(store.table("migrations"))} (migration_id, name) VALUES (99, 'future')`
      }))
      for (const command of [["inspect"], ["dead-letters", "list"]]) {
        const error = yield* fails(...command, ...store.args)
        assert.strictEqual(error.tag, "StoreAccessError")
        assert.strictEqual(error.reason, "NewerSchema")
        assert.include(error.message, "a newer version of @intersession wrote it")
        assert.include(error.message, "99_future")
        assert.include(error.message, "4_dead_letters")
      }
    }))

  it.scopedLive("tables of another prefix are not a store: the error names the prefixes the database holds", () =>
    Effect.gen(function*() {
      const store = yield* kit.fresh
      yield* filled(store)
      const args = [...store.args.slice(0, 1), "--table-prefix", "nothing_here_"]
      const error = yield* fails("inspect", ...args)
      assert.strictEqual(error.tag, "StoreAccessError")
      assert.strictEqual(error.reason, "NotAStore")
      assert.include(error.message, "it is not an intersession store")
      assert.include(error.message, "pass --table-prefix")
      // The test database of PostgreSQL holds the stores of other tests too, more than the message names.
      if (kit.name === "SQLite") assert.include(error.message, `holds the store of table prefix ${store.table("")}`)
      const deadLetters = yield* fails("dead-letters", "purge", ...args, "--all")
      assert.strictEqual(deadLetters.reason, "NotAStore")
    }))

  it.scopedLive(
    kit.readsWhileRunning
      ? "while an engine runs, inspect reads a consistent snapshot of its store"
      : "while an engine runs, inspect fails at once saying that the engine holds the store",
    () =>
      Effect.gen(function*() {
        const store = yield* kit.fresh
        const running = yield* engine(store.layer)
        yield* running.ilm.sendAll(Z, [text("one"), text("two"), text("three")])
        const started = Date.now()
        if (kit.readsWhileRunning) {
          const json = JSON.parse(yield* succeeds("inspect", ...store.args, "--json")) as InspectJson
          assert.deepStrictEqual(
            json.outbound.map(({ bytes, lane, peer, pending }) => ({ peer, lane, pending, bytes })),
            [
              { peer: "Z", lane: "default", pending: 3, bytes: 11 }
            ]
          )
          assert.isAtMost(json.outbound[0]?.oldestAgeMillis ?? Infinity, 60_000)
        } else {
          const error = yield* fails("inspect", ...store.args)
          assert.isBelow(Date.now() - started, 2000, "no waiting for the lock")
          assert.strictEqual(error.reason, "InUse")
          assert.include(error.message, "a running engine owns it")
          assert.include(error.message, "stop the engine")
        }
        // The engine was not disturbed: it still stores and reads.
        yield* running.ilm.send(Z, text("four"))
        yield* running.close
        const json = JSON.parse(yield* succeeds("inspect", ...store.args, "--json")) as InspectJson
        assert.deepStrictEqual(json.outbound.map(({ pending }) => pending), [4])
      })
  )

  it.scopedLive("dead-letters lists, marks for replay and purges a stopped store's dead letters, and the next engine delivers the marked ones", () =>
    Effect.gen(function*() {
      const store = yield* kit.fresh
      yield* filled(store)
      const listed = yield* succeeds("dead-letters", "list", ...store.args)
      // id, peer, lane, seq, attempts, dead-lettered at, payload, replay, error
      const first = row(listed, "1", "B", "default", "9", "5")
      assert.strictEqual(first[6], "64 B")
      assert.strictEqual(first[7], "boom: the database said no")
      assert.match(first[5] ?? "", /^\d{4}-\d\d-\d\dT/)
      // An error on one line.
      assert.strictEqual(row(listed, "2", "B", "default", "11")[7], "no such account at line 2")
      row(listed, "3", "C", "audit", "3", "1")

      const json = JSON.parse(yield* succeeds("dead-letters", "list", ...store.args, "--peer", "B", "--json")) as Array<
        DeadLetterJson
      >
      assert.deepStrictEqual(
        json.map(({ id, payloadBytes, replayRequested, seq }) => ({ id, seq, payloadBytes, replayRequested })),
        [
          { id: 1, seq: 9, payloadBytes: 64, replayRequested: false },
          { id: 2, seq: 11, payloadBytes: 36, replayRequested: false }
        ]
      )
      assert.strictEqual(Buffer.from(json[0]?.payload ?? "", "base64").toString(), "x".repeat(64))
      const limited = JSON.parse(
        yield* succeeds("dead-letters", "list", ...store.args, "--limit", "1", "--json")
      ) as Array<
        DeadLetterJson
      >
      assert.deepStrictEqual(limited.map(({ id }) => id), [1])

      assert.include(
        yield* succeeds("dead-letters", "replay", ...store.args, "--id", "1"),
        "Marked 1 dead letter for replay"
      )
      const marked = JSON.parse(yield* succeeds("dead-letters", "list", ...store.args, "--json")) as Array<
        DeadLetterJson
      >
      assert.deepStrictEqual(marked.map(({ id, replayRequested }) => [id, replayRequested]), [[1, true], [2, false], [
        3,
        false
      ]])
      assert.strictEqual(row(yield* succeeds("dead-letters", "list", ...store.args), "1")[7], "marked")
      const inspected = yield* succeeds("inspect", ...store.args)
      assert.deepStrictEqual(row(inspected, "B", "default", "2"), ["B", "default", "2", "3.0 h", "100 B", "1"])

      // Purging needs a selection; then it deletes what the selection names only.
      const unselected = yield* runCli("dead-letters", "purge", ...store.args)
      assert.isTrue(Exit.isFailure(unselected.exit))
      assert.include(unselected.stderr, "select some with --peer, --lane or --id, or all with --all")
      assert.include(
        yield* succeeds("dead-letters", "purge", ...store.args, "--peer", "C", "--lane", "audit"),
        "Purged 1 dead letter"
      )
      assert.include(yield* succeeds("dead-letters", "purge", ...store.args, "--peer", "C"), "Purged 0 dead letters")

      // The next engine delivers the marked dead letter, and it leaves the store; the unmarked one stays.
      const next = yield* engine(store.layer)
      const delivered = yield* next.inbox.take.pipe(Effect.timeout("20 seconds"))
      assert.deepStrictEqual(
        { source: delivered.source, lane: delivered.lane, seq: delivered.seq },
        { source: B, lane: lane("default"), seq: 9 }
      )
      assert.strictEqual(new TextDecoder().decode(delivered.payload), "x".repeat(64))
      // The replay removes it in the transaction that delivers it, which may commit just after the inbox has it.
      yield* Effect.iterate(1, {
        while: (left) => left > 0,
        body: () =>
          Effect.flatMap(
            Effect.sleep("20 millis"),
            () =>
              Effect.map(next.ilm.deadLetters.list({}), (letters) => letters.filter((letter) => letter.id === 1).length)
          )
      }).pipe(Effect.timeout("20 seconds"))
      yield* next.close
      const left = JSON.parse(yield* succeeds("dead-letters", "list", ...store.args, "--json")) as Array<DeadLetterJson>
      assert.deepStrictEqual(left.map(({ id }) => id), [2])
      assert.include(yield* succeeds("dead-letters", "purge", ...store.args, "--all"), "Purged 1 dead letter")
      assert.strictEqual(yield* succeeds("dead-letters", "list", ...store.args), "No dead letters")
    }))

  it.scopedLive("dead-letters refuses a store an engine runs on, saying so", () =>
    Effect.gen(function*() {
      const store = yield* kit.fresh
      const running = yield* engine(store.layer)
      for (const command of [["list"], ["replay"], ["purge", "--all"]]) {
        const error = yield* fails("dead-letters", ...command, ...store.args)
        assert.strictEqual(error.reason, "InUse", command.join(" "))
        assert.include(error.message, "a running engine owns it: dead-letters works on a stopped store")
      }
      yield* running.close
      assert.strictEqual(yield* succeeds("dead-letters", "list", ...store.args), "No dead letters")
    }))
}

const sqliteKit: Kit = {
  name: "SQLite",
  fresh: Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const directory = yield* fs.makeTempDirectoryScoped({ prefix: "inspect-" })
    const filename = `${directory}/store.db`
    return {
      args: [filename],
      layer: SqliteBackend.layer({ filename, checkIntegrity: false }),
      table: (suffix: string) => `intersession_${suffix}`
    }
  }).pipe(Effect.provide(NodeContext.layer), Effect.orDie),
  readsWhileRunning: false
}

const postgresKit: Kit = {
  name: "PostgreSQL",
  fresh: Effect.gen(function*() {
    // The admin client drops the store's tables when the test's scope closes: it lives as long.
    const tablePrefix = yield* Effect.provide(freshPrefix, yield* Layer.build(adminLayer))
    const url = probe.url ?? ""
    return {
      args: [url, "--table-prefix", tablePrefix],
      layer: PostgresBackend.layer({ url, tablePrefix, maxConnections: 4 }),
      table: (suffix: string) => `${tablePrefix}${suffix}`
    }
  }).pipe(Effect.orDie),
  readsWhileRunning: true
}

describe("inspect and dead-letters on SQLite", () => {
  suite(sqliteKit)

  const hash = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex")

  it.scopedLive("inspect leaves a stopped store's file as it was, byte for byte", () =>
    Effect.gen(function*() {
      const store = yield* sqliteKit.fresh
      yield* filled(store)
      const file = store.args[0]!
      assert.isFalse(existsSync(`${file}-wal`), "a stopped store has no -wal file")
      const before = hash(file)
      yield* succeeds("inspect", file)
      yield* succeeds("inspect", file, "--json")
      assert.strictEqual(hash(file), before)
      // An engine opens the store as before.
      const running = yield* engine(store.layer)
      assert.strictEqual((yield* running.ilm.stats).outbound.length, 2)
      yield* running.close
    }))

  it.scopedLive("a missing file is an error, and inspect and dead-letters create nothing", () =>
    Effect.gen(function*() {
      const store = yield* sqliteKit.fresh
      const file = store.args[0]!
      for (const command of [["inspect"], ["dead-letters", "list"], ["dead-letters", "purge", "--all"]]) {
        const error = yield* fails(...command, file)
        assert.strictEqual(error.reason, "NotFound", command.join(" "))
        assert.strictEqual(error.message, `Store ${file}: there is no such file`)
        assert.isFalse(existsSync(file), command.join(" "))
      }
    }))

  it.scopedLive("a file that is not a database, or a database without a store, is refused", () =>
    Effect.gen(function*() {
      const store = yield* sqliteKit.fresh
      const file = store.args[0]!
      writeFileSync(file, "not a database, only text that is long enough to be read as a header.".repeat(20))
      const before = hash(file)
      const error = yield* fails("inspect", file)
      assert.strictEqual(error.reason, "NotADatabase")
      assert.include(error.message, "it is not a SQLite database")
      const deadLetters = yield* fails("dead-letters", "list", file)
      assert.strictEqual(deadLetters.reason, "NotADatabase")
      assert.strictEqual(hash(file), before)
    }))

  it.scopedLive("an engine in another process: inspect is refused while it runs, and after kill -9 reads what its -wal file holds, changing neither file", () =>
    Effect.gen(function*() {
      const store = yield* sqliteKit.fresh
      const file = store.args[0]!
      const child = yield* spawnScript(script("InspectChild.ts"), [file, "5"])
      assert.strictEqual((yield* child.next).result, "ready")
      const refused = yield* fails("inspect", file)
      assert.strictEqual(refused.reason, "InUse")
      assert.include(refused.message, "locked exclusively while it runs")
      const deadLetters = yield* fails("dead-letters", "list", file)
      assert.strictEqual(deadLetters.reason, "InUse")

      yield* child.kill
      assert.isTrue(existsSync(`${file}-wal`), "the killed engine left its -wal file")
      const before = [hash(file), hash(`${file}-wal`)]
      const json = JSON.parse(yield* succeeds("inspect", file, "--json")) as InspectJson
      assert.deepStrictEqual(json.outbound.map(({ bytes, lane, pending, peer }) => ({ peer, lane, pending, bytes })), [
        { peer: "Z", lane: "default", pending: 5, bytes: 5 * "message 1".length }
      ])
      assert.deepStrictEqual([hash(file), hash(`${file}-wal`)], before)
      // The next engine recovers the store as it would have without inspect.
      const running = yield* engine(store.layer)
      assert.deepStrictEqual((yield* running.ilm.stats).outbound.map(({ pending }) => pending), [5])
      yield* running.close
    }))
})

describe.skipIf(probe.url === undefined)(suiteName("inspect and dead-letters on PostgreSQL"), () => {
  suite(postgresKit)

  it.scopedLive("a PostgreSQL URL's password is never printed", () =>
    Effect.gen(function*() {
      const url = new URL(probe.url ?? "")
      url.password = "hunter2-secret"
      const error = yield* fails("inspect", url.toString(), "--table-prefix", "absent_store_")
      assert.notInclude(error.message, "hunter2-secret")
    }))
})

describe("inspect and dead-letters in the help", () => {
  it.effect("the program's help gives their usage; dead-letters list --help gives its own, under the program's name", () =>
    Effect.gen(function*() {
      const help = yield* succeeds("--help")
      const usage = help.split("\n").filter((line) => line.startsWith("$ "))
      assert.isTrue(
        usage.some((line) => line.startsWith("$ intersession inspect [--table-prefix text] [--json] <store>"))
      )
      for (const command of ["list", "replay", "purge"]) {
        assert.isTrue(usage.some((line) => line.startsWith(`$ intersession dead-letters ${command} `)), help)
      }
      assert.include(help, "What a store holds")
      const list = yield* succeeds("dead-letters", "list", "--help")
      assert.isTrue(list.split("\n").some((line) => line.startsWith("$ intersession dead-letters list ")), list)
      assert.include(list, "at most this many, lowest id first")
      const inspect = yield* succeeds("inspect", "--help")
      assert.include(inspect, "the store: a SQLite file, or a postgres:// URL")
    }))
})
