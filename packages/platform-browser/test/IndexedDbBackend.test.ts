/**
 * IndexedDbBackend in a real Chromium (vitest's browser mode): the conformance suite, where each reopening of a
 * store closes its database and opens it again and each fresh store is a new database; then what only this store
 * does: ownership through a Web Lock, strict durability, its schema, its options and its errors.
 */
import { assert, describe, it } from "@effect/vitest"
import { Backend, BackendError, StoreLostError } from "@intersession/core/Backend"
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as Incarnation from "@intersession/core/Incarnation"
import * as PeerId from "@intersession/core/PeerId"
import * as BackendSuite from "@intersession/testing/BackendSuite"
import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import * as IndexedDbBackend from "../src/IndexedDbBackend.js"
import * as Database from "../src/internal/idbDatabase.js"
import type { Command, Report } from "./OwnerWorker.js"

/** A database name nobody used, deleted when the scope closes. */
const freshDatabase = Effect.acquireRelease(
  Effect.sync(() => `intersession-test-${crypto.randomUUID()}`),
  (name) => Effect.promise(() => Database.remove(indexedDB, name))
)

const openBackend = (options: IndexedDbBackend.Options) =>
  Effect.map(Layer.build(IndexedDbBackend.layer(options)), Context.get(Backend))

const fixture = Layer.succeed(
  BackendSuite.BackendFixture,
  BackendSuite.BackendFixture.of({
    makeStore: Effect.map(freshDatabase, (databaseName) => ({
      // Valid options, in a browser that has IndexedDB, on a new database: anything else is a broken test machine.
      open: openBackend({ databaseName }).pipe(
        Effect.catchTags({
          IndexedDbOptionsError: Effect.die,
          IndexedDbUnsupportedError: Effect.die,
          StoreUnusableError: Effect.die
        })
      )
    }))
  })
)

BackendSuite.backendSuite("IndexedDbBackend", fixture)

const A = PeerId.make("A")
const text = (value: string) => new TextEncoder().encode(value)
const texts = (messages: ReadonlyArray<{ readonly payload: Uint8Array }>) =>
  messages.map((message) => new TextDecoder().decode(message.payload))

/** Runs a raw IndexedDB request of the test to its end. */
const settle = <A>(request: IDBRequest<A>) => Effect.promise(() => Database.request(request))

/** Opens a database with the raw API, at `version` (with `upgrade` run when it is created), for the scope. */
const rawDatabase = (name: string, version?: number, upgrade: (db: IDBDatabase) => void = () => {}) =>
  Effect.acquireRelease(
    Effect.promise(() => {
      const request = indexedDB.open(name, version)
      request.onupgradeneeded = () => upgrade(request.result)
      return Database.request(request)
    }),
    (db) => Effect.sync(() => db.close())
  )

/** The requests for the lock `name` that the origin's lock manager holds and keeps waiting. */
const lockState = (name: string) =>
  Effect.map(Effect.promise(() => navigator.locks.query()), (snapshot) => ({
    held: (snapshot.held ?? []).filter((lock) => lock.name === name).length,
    pending: (snapshot.pending ?? []).filter((lock) => lock.name === name).length
  }))

/** Asks the lock manager again until `done` holds of the lock `name` (each question is a round trip, not a sleep). */
const untilLock = (name: string, done: (state: { held: number; pending: number }) => boolean) =>
  Effect.repeat(lockState(name), { until: done })

/** Replaces `key` of `target` for the scope, as a browser without it would have it. */
const withoutProperty = (target: object, key: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const own = Object.getOwnPropertyDescriptor(target, key)
      Object.defineProperty(target, key, { value: undefined, configurable: true, writable: true })
      return own
    }),
    (own) =>
      Effect.sync(() => {
        if (own === undefined) Reflect.deleteProperty(target, key)
        else Object.defineProperty(target, key, own)
      })
  )

describe("IndexedDbBackend under an engine", () => {
  it.scopedLive("what is sent while the peer is away waits in IndexedDB across a restart, then arrives in order", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const alice = PeerId.make("alice")
      const bob = PeerId.make("bob")
      const peer = (id: PeerId.PeerId, databaseName: string) =>
        ILM.layer().pipe(
          Layer.provideMerge(Delivery.layerInbox()),
          Layer.provide(hub.layer(id)),
          Layer.provide(IndexedDbBackend.layer({ databaseName }))
        )
      const aliceStore = yield* freshDatabase
      const bobStore = yield* freshDatabase
      const sent = Array.from({ length: 20 }, (_, i) => `m${i + 1}`)
      // alice's first run stores everything for bob, who is away, and stops.
      yield* Effect.scoped(Effect.gen(function*() {
        const ilm = Context.get(yield* Layer.build(peer(alice, aliceStore)), ILM.ILM)
        for (const message of sent) yield* ilm.send(bob, text(message))
      }))
      // Her next run has them still, and bob gets them all, once each, in order.
      yield* Layer.build(peer(alice, aliceStore))
      const inbox = Context.get(yield* Layer.build(peer(bob, bobStore)), Delivery.Inbox)
      const received = yield* Effect.forEach(sent, () => inbox.take)
      assert.deepStrictEqual(texts(received), sent)
      assert.deepStrictEqual(received.map((message) => message.source), sent.map(() => alice))
    }))
})

describe("IndexedDbBackend records", () => {
  const openStore = (databaseName: string) =>
    Effect.map(Layer.build(IndexedDbBackend.layer({ databaseName })), (context) => ({
      backend: Context.get(context, Backend),
      records: Context.get(context, IndexedDbBackend.Records)
    }))
  const state = (delivered: number) => ({
    peer: A,
    lane: "x",
    incarnation: Incarnation.Incarnation.make(1),
    delivered,
    runs: []
  })
  const delivered = (backend: Backend["Type"]) =>
    Effect.map(backend.received, (states) => states.map((received) => received.delivered))

  it.scoped("outside a transaction a record is written at once; a bad key or value fails the call", () =>
    Effect.gen(function*() {
      const { records } = yield* openStore(yield* freshDatabase)
      yield* records.put(["b", 2], { text: "two" })
      yield* records.put(["a", 1], "one")
      assert.deepStrictEqual(yield* records.get(["b", 2]), { text: "two" })
      assert.deepStrictEqual(yield* records.list(), [{ key: ["a", 1], value: "one" }, {
        key: ["b", 2],
        value: { text: "two" }
      }])
      yield* records.remove(["a", 1])
      assert.deepStrictEqual((yield* records.list()).map((record) => record.key), [["b", 2]])
      assert.isUndefined(yield* records.get(["a", 1]))
      const badKey = yield* Effect.flip(records.put({ not: "a key" } as unknown as IDBValidKey, 1))
      assert.strictEqual(badKey.reason, "InvalidKey")
      const badValue = yield* Effect.flip(records.put("f", () => 1))
      assert.strictEqual(badValue.reason, "InvalidValue")
    }))

  it.scoped("records put in a transaction commit with its receive state, or neither does", () =>
    Effect.gen(function*() {
      const { backend, records } = yield* openStore(yield* freshDatabase)
      const failure = { reason: "the page went away" } as const
      // Failed after the receive state was given: neither the record nor the state is kept.
      const error = yield* Effect.flip(backend.withTransaction(Effect.gen(function*() {
        yield* records.put(1, "first")
        yield* backend.commitReceived([state(1)])
        // Not yet written: it waits for the end of the transaction.
        assert.isUndefined(yield* records.get(1))
        return yield* Effect.fail(failure)
      })))
      assert.strictEqual(error, failure)
      assert.deepStrictEqual({ records: yield* records.list(), delivered: yield* delivered(backend) }, {
        records: [],
        delivered: []
      })
      // Succeeded: both are kept.
      yield* backend.withTransaction(Effect.zipRight(records.put(1, "first"), backend.commitReceived([state(1)])))
      assert.deepStrictEqual({ records: yield* records.list(), delivered: yield* delivered(backend) }, {
        records: [{ key: 1, value: "first" }],
        delivered: [1]
      })
      // Without records, the store is as before: its writes are kept even when the transaction fails.
      yield* Effect.flip(
        backend.withTransaction(Effect.zipRight(backend.commitReceived([state(2)]), Effect.fail(failure)))
      )
      assert.deepStrictEqual(yield* delivered(backend), [2])
    }))

  it.scoped("a nested transaction that fails drops its own records only", () =>
    Effect.gen(function*() {
      const { backend, records } = yield* openStore(yield* freshDatabase)
      yield* backend.withTransaction(Effect.gen(function*() {
        yield* backend.withTransaction(records.put(1, "delivered"))
        yield* Effect.flip(backend.withTransaction(Effect.zipRight(records.put(2, "failed"), Effect.fail("no"))))
        yield* backend.withTransaction(records.put(3, "delivered"))
        yield* backend.commitReceived([state(3)])
      }))
      assert.deepStrictEqual((yield* records.list()).map((record) => record.key), [1, 3])
      assert.deepStrictEqual(yield* delivered(backend), [3])
    }))

  it.scopedLive("an application that records each message it is given through the engine keeps each once, in order", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const alice = PeerId.make("alice")
      const bob = PeerId.make("bob")
      const bobStore = yield* freshDatabase
      let failOnce = true
      const recording = Layer.effect(
        Delivery.Delivery,
        Effect.map(IndexedDbBackend.Records, (records) =>
          Delivery.Delivery.of({
            deliver: (message) =>
              Effect.gen(function*() {
                yield* records.put(
                  [message.source, message.lane, message.seq],
                  new TextDecoder().decode(message.payload)
                )
                // The record of seq 7 is put, then its delivery fails once: that record must not stay.
                if (message.seq === 7 && failOnce) {
                  failOnce = false
                  return yield* new Delivery.DeliveryError({ reason: "not now" })
                }
              }).pipe(
                Effect.mapError((error) =>
                  error instanceof Delivery.DeliveryError
                    ? error
                    : new Delivery.DeliveryError({ reason: error.message })
                )
              )
          }))
      )
      const sender = Context.get(
        yield* Layer.build(
          ILM.layer().pipe(
            Layer.provide(hub.layer(alice)),
            Layer.provide(IndexedDbBackend.layer({ databaseName: yield* freshDatabase })),
            Layer.provide(Layer.succeed(Delivery.Delivery, Delivery.Delivery.of({ deliver: () => Effect.void })))
          )
        ),
        ILM.ILM
      )
      const receiver = yield* Layer.build(
        ILM.layer({ deliveryRetryInitial: "10 millis" }).pipe(
          Layer.provideMerge(recording),
          Layer.provideMerge(IndexedDbBackend.layer({ databaseName: bobStore })),
          Layer.provide(hub.layer(bob))
        )
      )
      const sent = Array.from({ length: 30 }, (_, i) => `m${i + 1}`)
      yield* sender.sendAll(bob, sent.map(text))
      yield* sender.drain("10 seconds")
      const list = yield* Context.get(receiver, IndexedDbBackend.Records).list()
      assert.deepStrictEqual(list.map((record) => record.value), sent)
      assert.deepStrictEqual(list.map((record) => record.key), sent.map((_, i) => [alice, "default", i + 1]))
    }))
})

describe("IndexedDbBackend ownership", () => {
  it.scoped("with waitForLock a second owner waits for the lock and gets the store once the first scope closes", () =>
    Effect.gen(function*() {
      const databaseName = yield* freshDatabase
      const lock = IndexedDbBackend.lockName(databaseName)
      const firstScope = yield* Scope.make()
      const first = yield* Scope.extend(openBackend({ databaseName }), firstScope)
      yield* first.append([{ peer: A, lane: "x", payload: text("before") }], 1)
      assert.deepStrictEqual(yield* lockState(lock), { held: 1, pending: 0 })

      const refused = yield* Effect.flip(Effect.scoped(openBackend({ databaseName })))
      assert.strictEqual(refused._tag, "StoreLockedError")
      const waiting = yield* Effect.fork(openBackend({ databaseName, waitForLock: true }))
      yield* untilLock(lock, (state) => state.pending === 1)
      assert.isTrue(Option.isNone(yield* Fiber.poll(waiting)), "it waits while the first owner lives")
      // The first owner goes on meanwhile.
      assert.deepStrictEqual(yield* first.append([{ peer: A, lane: "x", payload: text("meanwhile") }], 1), [2])

      yield* Scope.close(firstScope, Exit.void)
      const second = yield* Fiber.join(waiting)
      assert.strictEqual(second.incarnation, first.incarnation)
      assert.deepStrictEqual(texts(yield* second.read(A, "x", 1, 10)), ["before", "meanwhile"])
      assert.deepStrictEqual(yield* lockState(lock), { held: 1, pending: 0 })
    }))

  it.scoped("interrupting an owner that waits for the lock withdraws its request", () =>
    Effect.gen(function*() {
      const databaseName = yield* freshDatabase
      const lock = IndexedDbBackend.lockName(databaseName)
      const firstScope = yield* Scope.make()
      yield* Scope.extend(openBackend({ databaseName }), firstScope)
      const waiting = yield* Effect.fork(openBackend({ databaseName, waitForLock: true }))
      yield* untilLock(lock, (state) => state.pending === 1)
      yield* Fiber.interrupt(waiting)
      yield* untilLock(lock, (state) => state.pending === 0)
      yield* Scope.close(firstScope, Exit.void)
      assert.deepStrictEqual(yield* lockState(lock), { held: 0, pending: 0 }, "nobody took the lock after all")
      yield* openBackend({ databaseName })
    }))

  it.scoped("a stolen lock loses the store: lost fails, and so does every operation", () =>
    Effect.gen(function*() {
      const databaseName = yield* freshDatabase
      const backend = yield* openBackend({ databaseName })
      yield* backend.append([{ peer: A, lane: "x", payload: text("a") }], 1)
      // Other code of the origin takes the lock by force, and keeps it for a moment.
      yield* Effect.promise(() =>
        navigator.locks.request(IndexedDbBackend.lockName(databaseName), { steal: true }, () => undefined)
      )
      const lost = yield* Effect.flip(backend.lost!)
      assert.instanceOf(lost, StoreLostError)
      assert.strictEqual(lost.reason, "TakenOver")
      const error = yield* Effect.flip(backend.append([{ peer: A, lane: "x", payload: text("b") }], 1))
      assert.instanceOf(error, BackendError)
      assert.strictEqual(error.cause, lost)
      assert.include(error.message, "no longer owns store")
      // Its connection is closed: deleting the database is not blocked by it.
      yield* Effect.promise(() => Database.remove(indexedDB, databaseName))
    }))

  it.scoped("deleting the database under the engine closes its connection and loses the store", () =>
    Effect.gen(function*() {
      const databaseName = yield* freshDatabase
      const backend = yield* openBackend({ databaseName })
      yield* backend.append([{ peer: A, lane: "x", payload: text("a") }], 1)
      yield* Effect.promise(() => Database.remove(indexedDB, databaseName))
      const lost = yield* Effect.flip(backend.lost!)
      assert.strictEqual(lost.reason, "LockLost")
      const error = yield* Effect.flip(backend.read(A, "x", 1, 10))
      assert.strictEqual(error.operation, "read")
      assert.strictEqual(error.cause, lost)
    }))
})

/** A worker that opens stores on command (see OwnerWorker.ts), terminated when the scope closes. */
const ownerWorker = Effect.gen(function*() {
  const reports = yield* Queue.unbounded<Report>()
  const worker = yield* Effect.acquireRelease(
    Effect.sync(() => new Worker(new URL("./OwnerWorker.ts", import.meta.url), { type: "module" })),
    (worker) => Effect.sync(() => worker.terminate())
  )
  worker.onmessage = (event: MessageEvent<Report>) => Queue.unsafeOffer(reports, event.data)
  return {
    send: (command: Command) => Effect.sync(() => worker.postMessage(command)),
    next: Queue.take(reports),
    terminate: Effect.sync(() => worker.terminate())
  }
})

describe("IndexedDbBackend across contexts", () => {
  it.scoped("an engine in a worker is refused while the page owns the store, or waits for it with waitForLock", () =>
    Effect.gen(function*() {
      const databaseName = yield* freshDatabase
      const lock = IndexedDbBackend.lockName(databaseName)
      const worker = yield* ownerWorker
      const pageScope = yield* Scope.make()
      const page = yield* Scope.extend(openBackend({ databaseName }), pageScope)

      yield* worker.send({ databaseName })
      assert.deepStrictEqual(yield* worker.next, { result: "failed", tag: "StoreLockedError" })
      yield* worker.send({ databaseName, waitForLock: true })
      yield* untilLock(lock, (state) => state.pending === 1)
      yield* Scope.close(pageScope, Exit.void)
      assert.deepStrictEqual(yield* worker.next, { result: "opened", incarnation: page.incarnation })

      // Now the worker owns it, until it closes the store.
      const refused = yield* Effect.flip(Effect.scoped(openBackend({ databaseName })))
      assert.strictEqual(refused._tag, "StoreLockedError")
      yield* worker.send("close")
      assert.deepStrictEqual(yield* worker.next, { result: "closed" })
      yield* Effect.scoped(openBackend({ databaseName }))
    }))

  it.scoped("a context that ends while it owns a store, as a crashed tab would, frees it", () =>
    Effect.gen(function*() {
      const databaseName = yield* freshDatabase
      const worker = yield* ownerWorker
      yield* worker.send({ databaseName })
      assert.strictEqual((yield* worker.next).result, "opened")
      yield* worker.terminate
      yield* untilLock(IndexedDbBackend.lockName(databaseName), (state) => state.held === 0)
      const backend = yield* openBackend({ databaseName })
      assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text("after") }], 1), [1])
    }))
})

interface Recorded {
  readonly database: string
  readonly mode: IDBTransactionMode
  readonly durability: IDBTransactionDurability
}

/** Records the transactions opened on any database for the scope. */
const recordTransactions = Effect.acquireRelease(
  Effect.sync(() => {
    const recorded: Array<Recorded> = []
    const original = IDBDatabase.prototype.transaction
    Object.defineProperty(IDBDatabase.prototype, "transaction", {
      configurable: true,
      writable: true,
      value(this: IDBDatabase, ...args: Parameters<IDBDatabase["transaction"]>) {
        const transaction = original.apply(this, args)
        recorded.push({ database: this.name, mode: transaction.mode, durability: transaction.durability })
        return transaction
      }
    })
    return { recorded, original }
  }),
  ({ original }) =>
    Effect.sync(() =>
      Object.defineProperty(IDBDatabase.prototype, "transaction", {
        configurable: true,
        writable: true,
        value: original
      })
    )
)

describe("IndexedDbBackend durability", () => {
  it.scoped("each write is one transaction of strict durability, however many messages it carries", () =>
    Effect.gen(function*() {
      const databaseName = yield* freshDatabase
      const { recorded } = yield* recordTransactions
      const backend = yield* openBackend({ databaseName })
      const of = (effect: Effect.Effect<unknown, unknown>) =>
        Effect.gen(function*() {
          const before = recorded.length
          yield* effect
          return recorded.slice(before).filter((transaction) => transaction.database === databaseName)
            .map(({ durability, mode }) => `${mode} ${durability}`)
        })
      const write = ["readwrite strict"]
      const messages = Array.from({ length: 1000 }, (_, i) => ({
        peer: A,
        lane: "x",
        payload: text(`m${i}`),
        expiresAt: i < 10 ? 1 : undefined
      }))
      assert.deepStrictEqual(yield* of(backend.append(messages, 1)), write, "append of 1,000")
      assert.deepStrictEqual(yield* of(backend.acknowledge([{ peer: A, lane: "x", upTo: 5 }])), write)
      // A sweep reads first, and writes only when something is due.
      assert.deepStrictEqual(yield* of(backend.expire(0, 100)), ["readonly default"], "nothing due")
      assert.deepStrictEqual(yield* of(backend.expire(1, 100)), ["readonly default", ...write], "five due")
      assert.deepStrictEqual(yield* of(backend.purge(A, undefined)), write)
      assert.deepStrictEqual(yield* of(backend.setIncarnation(A, backend.incarnation)), write)
      const letters = Array.from({ length: 100 }, (_, i) => ({
        peer: A,
        lane: "x",
        incarnation: backend.incarnation,
        seq: i + 1,
        payload: text("refused"),
        error: "refused",
        attempts: 3,
        deadLetteredAt: 1
      }))
      const state = { peer: A, lane: "x", incarnation: backend.incarnation, delivered: 100, runs: [] }
      assert.deepStrictEqual(yield* of(backend.commitReceived([state], letters)), write, "100 dead letters")
      const ids = (yield* backend.deadLetters({ limit: 1000 })).map((letter) => letter.id)
      assert.deepStrictEqual(yield* of(backend.requestReplay(ids, true)), write)
      assert.deepStrictEqual(yield* of(backend.removeDeadLetters(ids)), write)
      assert.deepStrictEqual(yield* of(backend.forget(A, backend.incarnation)), write)
      assert.deepStrictEqual(yield* of(backend.read(A, "x", 1, 10)), ["readonly default"])
      assert.isTrue(recorded.some((transaction) => transaction.database === databaseName))
    }))
})

describe("IndexedDbBackend schema", () => {
  it.scoped("version 1 has the documented object stores, keys and index", () =>
    Effect.gen(function*() {
      const databaseName = yield* freshDatabase
      yield* Effect.scoped(openBackend({ databaseName }))
      const db = yield* rawDatabase(databaseName)
      assert.strictEqual(db.version, 1)
      assert.deepStrictEqual(Array.from(db.objectStoreNames), [
        "batches",
        "deadLetters",
        "dropped",
        "incarnations",
        "meta",
        "received",
        "records",
        "streams"
      ])
      const transaction = db.transaction(Array.from(db.objectStoreNames), "readonly")
      const keys = Object.fromEntries(
        Array.from(db.objectStoreNames, (name) => [name, transaction.objectStore(name).keyPath])
      )
      assert.deepStrictEqual(keys, {
        batches: ["peer", "lane", "from"],
        deadLetters: "id",
        dropped: ["peer", "lane", "from"],
        incarnations: "peer",
        meta: null,
        received: ["peer", "lane"],
        records: null,
        streams: ["peer", "lane"]
      })
      assert.isTrue(transaction.objectStore("deadLetters").autoIncrement)
      const batches = transaction.objectStore("batches")
      assert.deepStrictEqual(Array.from(batches.indexNames), ["nextExpiry"])
      assert.strictEqual(batches.index("nextExpiry").keyPath, "nextExpiry")
      const meta = yield* settle(transaction.objectStore("meta").get("store"))
      assert.isNumber(meta.incarnation)
    }))

  it.scoped("a database of a newer version is refused with StoreUnusableError, and left as it was", () =>
    Effect.gen(function*() {
      const databaseName = yield* freshDatabase
      yield* Effect.scoped(rawDatabase(databaseName, 2, (db) => db.createObjectStore("future")))
      const error = yield* Effect.flip(Effect.scoped(openBackend({ databaseName })))
      assert.strictEqual(error._tag, "StoreUnusableError")
      if (error._tag !== "StoreUnusableError") return
      assert.strictEqual(error.reason, "NewerSchema")
      assert.instanceOf(error.cause, IndexedDbBackend.IndexedDbError)
      assert.include(error.message, "schema version is above 1")
      const db = yield* rawDatabase(databaseName)
      assert.strictEqual(db.version, 2)
      assert.deepStrictEqual(Array.from(db.objectStoreNames), ["future"])
    }))

  it.scoped("a database of another application is refused with StoreUnusableError, and left as it was", () =>
    Effect.gen(function*() {
      const databaseName = yield* freshDatabase
      yield* Effect.scoped(rawDatabase(databaseName, 1, (db) => db.createObjectStore("notes")))
      for (const attempt of [1, 2]) {
        const error = yield* Effect.flip(Effect.scoped(openBackend({ databaseName })))
        // The second attempt is refused for the same reason: the first released the lock.
        assert.strictEqual(error._tag, "StoreUnusableError", `attempt ${attempt}`)
        if (error._tag === "StoreUnusableError") assert.strictEqual(error.reason, "NotADatabase")
      }
      const db = yield* rawDatabase(databaseName)
      assert.deepStrictEqual(Array.from(db.objectStoreNames), ["notes"])
    }))
})

describe("IndexedDbBackend options and environment", () => {
  it.scoped("invalid options fail with OptionsError before anything is opened", () =>
    Effect.gen(function*() {
      const empty = yield* Effect.flip(IndexedDbBackend.make({ databaseName: "" }))
      assert.strictEqual(empty._tag, "IndexedDbOptionsError")
      assert.strictEqual(
        empty.message,
        `Invalid IndexedDbBackend option databaseName: must be a non-empty string, got ""`
      )
      // As plain JavaScript, or data read from elsewhere, could pass them.
      const options: unknown = { databaseName: 42, waitForLock: "yes" }
      const name = yield* Effect.flip(IndexedDbBackend.make(options as IndexedDbBackend.Options))
      assert.strictEqual(
        name.message,
        "Invalid IndexedDbBackend option databaseName: must be a non-empty string, got 42"
      )
      const wait: unknown = { waitForLock: "yes" }
      const waitError = yield* Effect.flip(IndexedDbBackend.make(wait as IndexedDbBackend.Options))
      assert.strictEqual(waitError.message, `Invalid IndexedDbBackend option waitForLock: must be a boolean, got "yes"`)
      assert.deepStrictEqual(yield* lockState(IndexedDbBackend.lockName("")), { held: 0, pending: 0 })
    }))

  it.scoped("without the Web Locks API the layer fails with UnsupportedError", () =>
    Effect.gen(function*() {
      yield* withoutProperty(navigator, "locks")
      const error = yield* Effect.flip(Layer.build(IndexedDbBackend.layer()))
      assert.strictEqual(error._tag, "IndexedDbUnsupportedError")
      if (error._tag === "IndexedDbUnsupportedError") assert.strictEqual(error.api, "Web Locks")
      assert.include(error.message, "navigator.locks")
    }))

  it.scoped("without IndexedDB the layer fails with UnsupportedError", () =>
    Effect.gen(function*() {
      yield* withoutProperty(globalThis, "indexedDB")
      const error = yield* Effect.flip(Layer.build(IndexedDbBackend.layer()))
      assert.strictEqual(error._tag, "IndexedDbUnsupportedError")
      if (error._tag === "IndexedDbUnsupportedError") assert.strictEqual(error.api, "IndexedDB")
    }))
})

/** A storage bucket (the Storage Buckets API, which TypeScript's DOM types lack): its own quota and IndexedDB. */
interface StorageBucket {
  readonly indexedDB: IDBFactory
}

interface StorageBucketManager {
  readonly open: (name: string, options: { readonly quota: number }) => Promise<StorageBucket>
  readonly delete: (name: string) => Promise<void>
}

/**
 * A new storage bucket of `quota` bytes whose IndexedDB stands in for the page's own for the scope: its quota is its
 * own, so filling it leaves every other test of the origin alone.
 */
const smallBucket = (quota: number) =>
  Effect.gen(function*() {
    const buckets: StorageBucketManager = Reflect.get(navigator, "storageBuckets")
    const name = `quota-${crypto.randomUUID()}`
    const bucket = yield* Effect.acquireRelease(
      Effect.promise(() => buckets.open(name, { quota })),
      () => Effect.promise(() => buckets.delete(name))
    )
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        const own = Object.getOwnPropertyDescriptor(globalThis, "indexedDB")
        Object.defineProperty(globalThis, "indexedDB", { value: bucket.indexedDB, configurable: true, writable: true })
        return own
      }),
      (own) =>
        Effect.sync(() => {
          if (own === undefined) Reflect.deleteProperty(globalThis, "indexedDB")
          else Object.defineProperty(globalThis, "indexedDB", own)
        })
    )
  })

describe("IndexedDbBackend errors", () => {
  it.scoped("a full quota fails the write with a BackendError caused by IndexedDbError, and nothing of it is kept", () =>
    Effect.gen(function*() {
      yield* smallBucket(1024 * 1024)
      const backend = yield* openBackend({ databaseName: "quota" })
      yield* backend.append([{ peer: A, lane: "x", payload: text("kept") }], 1)
      // 3 MiB in one append of 200 messages, of random bytes (Chromium compresses what it stores: a pattern would fit).
      const batch = Array.from({ length: 200 }, () => ({
        peer: A,
        lane: "x",
        payload: crypto.getRandomValues(new Uint8Array(16 * 1024))
      }))
      const error = yield* Effect.flip(backend.append(batch, 1))
      assert.strictEqual(error.operation, "append")
      assert.instanceOf(error.cause, IndexedDbBackend.IndexedDbError)
      if (!(error.cause instanceof IndexedDbBackend.IndexedDbError)) return
      assert.strictEqual(error.cause.reason, "QuotaExceeded")
      assert.strictEqual(
        error.message,
        "Backend operation append failed: IndexedDB database quota: its storage quota is used up (QuotaExceededError)"
      )
      // Nothing of the failed append was kept: the stream is as it was, and the store reads on. (Whether a small write
      // fits right after is the browser's business: Chromium may count the aborted write's space for a while.)
      assert.deepStrictEqual(texts(yield* backend.read(A, "x", 1, 1000)), ["kept"])
      assert.deepStrictEqual(
        (yield* backend.outbound).streams.map(({ firstPending, nextSeq }) => [firstPending, nextSeq]),
        [
          [1, 2]
        ]
      )
    }))
})
