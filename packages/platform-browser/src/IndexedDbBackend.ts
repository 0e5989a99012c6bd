/**
 * A `Backend` kept in the browser's IndexedDB, for an engine that runs in a page or a worker: what `send` stored
 * survives reloads, closed tabs and browser restarts.
 *
 * **One owner per store.** A store is the IndexedDB database `databaseName` of the page's origin. The layer owns it
 * through an exclusive Web Lock named by {@link lockName}, held for as long as the layer's scope is open: the lock is
 * the origin's, so every tab, worker and frame of it asks for the same one. While another one owns the store, the
 * layer fails at once with `StoreLockedError`, or, with `waitForLock: true`, waits until the lock is free (the
 * other scope closed, or its tab was closed or crashed) and then opens the store. The browser releases the lock of
 * a context that ends, so a crashed tab never keeps the store. The lock cannot lapse while the layer runs; if
 * other code steals it (`navigator.locks.request` with `steal: true`), or the database connection is closed under
 * the engine (the site's data was cleared, or other code deletes the database), every later operation fails with a
 * `BackendError` caused by `StoreLostError`, and `lost` fails with it, which stops the engine.
 *
 * **Durability.** Each Backend call is one IndexedDB transaction, whatever number of messages it carries, and each
 * write commits with `durability: "strict"`: it completes only once it is flushed to disk (Chromium's default,
 * relaxed, may lose the last commits to an operating system crash or a power loss). So `send` returns once its
 * message is on disk.
 *
 * **Exactly once, with the application's records.** IndexedDB keeps no transaction open across an asynchronous step
 * of the application, so the backend is not transactional in the engine's sense: a delivery's other effects happen
 * again if the page goes away between the delivery and the commit of its receive state. What the application keeps
 * of a message in the store's {@link Records}, though, is written in the same transaction as that commit: it is kept
 * exactly once. Inside `withTransaction`, the records written wait for its end, and the engine's writes of that
 * transaction (the receive state, dead letters, acknowledgements) join them; without records, each write is its own
 * transaction at once.
 *
 * **Schema** (version 1, created by `onupgradeneeded`):
 *
 * | object store | key | holds |
 * | --- | --- | --- |
 * | `meta` | `"store"` | the store's incarnation |
 * | `streams` | `[peer, lane]` | per outbound stream: the next seq, the last acknowledged seq, the runs of its seqs |
 * | `batches` | `[peer, lane, from]` | the stored outbound messages, a record per stream and `append` (IndexedDB's cost is per record): seqs `from … to`, their run, payloads and expiries; index `nextExpiry` over the batches with messages that expire |
 * | `dropped` | `[peer, lane, from]` | seqs removed by `expire` or `purge` (`from`, `to`, run and reason) until acknowledged |
 * | `incarnations` | `peer` | the incarnation this store uses toward a peer |
 * | `received` | `[peer, lane]` | the receive state of each inbound stream |
 * | `deadLetters` | `id` (a key generator) | the dead letters, with their replay mark |
 * | `records` | the application's keys | the application's records ({@link Records}) |
 *
 * A database of a newer schema version is refused with `StoreUnusableError` (`NewerSchema`), and one that lacks
 * these object stores (another application's) with `StoreUnusableError` (`NotADatabase`); nothing is written to
 * either. IndexedDB's failures are `IndexedDbError`s: the cause of the `BackendError` of the operation that met them
 * (`QuotaExceeded` when the origin's storage quota is used up).
 *
 * @since 0.3.0
 */
import {
  Backend,
  BackendError,
  type BackendOperation,
  StoreLockedError,
  StoreLostError,
  StoreUnusableError
} from "@intersession/core/Backend"
import * as Incarnation from "@intersession/core/Incarnation"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Store from "./internal/idbBackend.js"
import * as Database from "./internal/idbDatabase.js"
import * as WebLock from "./internal/webLock.js"

/**
 * Options of an IndexedDB store.
 *
 * - `databaseName`: the IndexedDB database of the store (`"intersession"` by default); one per engine of an origin.
 * - `waitForLock`: while another tab or worker owns the store, wait until it is free instead of failing at once with
 *   `StoreLockedError` (`false` by default). Interrupting the layer's construction gives up waiting.
 *
 * @since 0.3.0
 * @category models
 */
export interface Options {
  readonly databaseName?: string | undefined
  readonly waitForLock?: boolean | undefined
}

/**
 * The defaults of the options.
 *
 * @since 0.3.0
 * @category constants
 */
export const defaults: { readonly databaseName: string; readonly waitForLock: boolean } = {
  databaseName: "intersession",
  waitForLock: false
}

/**
 * The name of the Web Lock that the owner of the store `databaseName` holds: `navigator.locks.query()` lists it
 * while an engine runs on the store.
 *
 * @since 0.3.0
 * @category constants
 */
export const lockName = (databaseName: string): string =>
  `@intersession/platform-browser/IndexedDbBackend/${databaseName}`

/**
 * An option is not valid: `option` names it and `detail` says what it must be.
 *
 * @since 0.3.0
 * @category errors
 */
export class OptionsError extends Data.TaggedError("IndexedDbOptionsError")<{
  readonly option: keyof Options
  readonly detail: string
}> {
  override get message(): string {
    return `Invalid IndexedDbBackend option ${this.option}: ${this.detail}`
  }
}

/**
 * This environment lacks an API the store needs: IndexedDB (`indexedDB`), or the Web Locks API (`navigator.locks`),
 * which browsers offer in secure contexts only (pages served over https or from localhost).
 *
 * @since 0.3.0
 * @category errors
 */
export class UnsupportedError extends Data.TaggedError("IndexedDbUnsupportedError")<{
  readonly api: "IndexedDB" | "Web Locks"
}> {
  override get message(): string {
    const where = this.api === "IndexedDB" ? "indexedDB" : "navigator.locks, in secure contexts only"
    return `IndexedDbBackend needs the ${this.api} API (${where}), which this environment lacks: run it in a ` +
      "browser page or worker served over https or from localhost"
  }
}

/**
 * An IndexedDB request or transaction of the store failed:
 *
 * - `Blocked`: opening the database needs an upgrade, and another connection to it (a tab that runs an older
 *   version of the application, say) neither closes nor lets it start;
 * - `QuotaExceeded`: the storage quota of the origin (or of the storage bucket) is used up (the browser's
 *   `QuotaExceededError`);
 * - `VersionError`: the database has a newer schema version than this library knows;
 * - `Failed`: any other failure; `cause` is the browser's error.
 *
 * It is the `cause` of the `BackendError` (or `StoreUnusableError`) of the operation that failed.
 *
 * @since 0.3.0
 * @category errors
 */
export class IndexedDbError extends Data.TaggedError("IndexedDbError")<{
  readonly database: string
  readonly reason: "Blocked" | "QuotaExceeded" | "VersionError" | "Failed"
  readonly cause?: unknown
}> {
  override get message(): string {
    const what = {
      Blocked: "opening it is blocked by another connection to it that does not close",
      QuotaExceeded: "its storage quota is used up",
      VersionError: "its schema version is newer than this version of @intersession/platform-browser knows",
      Failed: "a request failed"
    }[this.reason]
    const cause = this.cause instanceof Error || this.cause instanceof DOMException
      ? ` (${this.cause.name}${this.cause.message === "" ? "" : `: ${this.cause.message}`})`
      : this.cause === undefined
      ? ""
      : ` (${String(this.cause)})`
    return `IndexedDB database ${this.database}: ${what}${cause}`
  }
}

/**
 * A request on the application's records failed: its key is not an IndexedDB key (`InvalidKey`), its value cannot be
 * stored (`InvalidValue`: not structured-cloneable, a function, say), the store is lost (`Lost`, `cause` the
 * `StoreLostError`), or IndexedDB failed (`Failed`, `cause` the `IndexedDbError`).
 *
 * @since 0.3.0
 * @category errors
 */
export class RecordsError extends Data.TaggedError("IndexedDbRecordsError")<{
  readonly operation: "put" | "remove" | "get" | "list"
  readonly reason: "InvalidKey" | "InvalidValue" | "Lost" | "Failed"
  readonly cause?: unknown
}> {
  override get message(): string {
    const cause = this.cause instanceof Error || this.cause instanceof DOMException ? `: ${this.cause.message}` : ""
    return `IndexedDbBackend records: ${this.operation} failed (${this.reason})${cause}`
  }
}

/**
 * The application's own records, kept in the store's database (object store `records`, by the keys the application
 * gives). A `put` or `remove` made while a message is delivered (inside the engine's `withTransaction`) is not
 * written at once: it commits in one IndexedDB transaction with the receive state of the messages delivered, when
 * the engine commits it. So a reload, a crash or a closed tab can neither lose a record of a delivered message nor
 * write it twice: the message is delivered again exactly when its records were not kept. A delivery that fails drops
 * its records. Elsewhere they are written at once. `get` and `list` read what is committed: not what the current
 * delivery has put.
 *
 * @since 0.3.0
 * @category tags
 */
export class Records extends Context.Tag("@intersession/platform-browser/IndexedDbBackend/Records")<Records, {
  readonly put: (key: IDBValidKey, value: unknown) => Effect.Effect<void, RecordsError>
  readonly remove: (key: IDBValidKey) => Effect.Effect<void, RecordsError>
  /** The value under `key`, or `undefined`. */
  readonly get: (key: IDBValidKey) => Effect.Effect<unknown, RecordsError>
  /** The records whose keys are in `range` (every record without it), in key order. */
  readonly list: (
    range?: IDBKeyRange
  ) => Effect.Effect<ReadonlyArray<{ readonly key: IDBValidKey; readonly value: unknown }>, RecordsError>
}>() {}

/**
 * An IndexedDB store: its `Backend`, and the application's records.
 *
 * @since 0.3.0
 * @category models
 */
export interface IndexedDbStore {
  readonly backend: Backend["Type"]
  readonly records: Records["Type"]
}

/** A failure of IndexedDB as the store's error, by the name the browser gives it. */
const indexedDbError = (database: string, cause: unknown): IndexedDbError => {
  const name = typeof cause === "object" && cause !== null && "name" in cause ? cause.name : undefined
  const reason = name === "QuotaExceededError" ? "QuotaExceeded" : name === "VersionError" ? "VersionError" : "Failed"
  return new IndexedDbError({ database, reason, cause })
}

const validate = (options: Options): Effect.Effect<typeof defaults, OptionsError> => {
  const databaseName = options.databaseName ?? defaults.databaseName
  const waitForLock = options.waitForLock ?? defaults.waitForLock
  const shown = (value: unknown) => JSON.stringify(value) ?? String(value)
  if (typeof databaseName !== "string" || databaseName === "") {
    return Effect.fail(
      new OptionsError({ option: "databaseName", detail: `must be a non-empty string, got ${shown(databaseName)}` })
    )
  }
  if (typeof waitForLock !== "boolean") {
    return Effect.fail(
      new OptionsError({ option: "waitForLock", detail: `must be a boolean, got ${shown(waitForLock)}` })
    )
  }
  return Effect.succeed({ databaseName, waitForLock })
}

/**
 * Takes the store's Web Lock: `undefined` when it does not wait and another context holds the lock. Waiting is
 * interruptible: an interrupted request is withdrawn, and a lock granted meanwhile is released at once.
 */
const takeLock = (locks: LockManager, name: string, wait: boolean, onStolen: (cause: unknown) => void) =>
  Effect.async<WebLock.HeldLock | undefined, BackendError>((resume) => {
    const controller = new AbortController()
    let interrupted = false
    WebLock.request(locks, name, { wait, signal: controller.signal, onStolen }).then(
      (held) => {
        if (interrupted) void held?.release()
        else resume(Effect.succeed(held))
      },
      (cause: unknown) => {
        if (!interrupted) resume(Effect.fail(new BackendError({ operation: "open", cause })))
      }
    )
    return Effect.sync(() => {
      interrupted = true
      controller.abort()
    })
  })

/** Opens the database, closed again when the scope closes. */
const openDatabase = (factory: IDBFactory, database: string) =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () => Database.open(factory, database),
      catch: (cause): StoreUnusableError | BackendError => {
        const error = indexedDbError(database, cause)
        return error.reason === "VersionError"
          ? new StoreUnusableError({
            store: database,
            reason: "NewerSchema",
            detail: `its schema version is above ${Database.version}, the newest this version knows; upgrade ` +
              "@intersession/platform-browser to open it",
            cause: error
          })
          : new BackendError({ operation: "open", cause: error })
      }
    }),
    (db) =>
      Effect.sync(() => {
        if (db !== "blocked") db.close()
      })
  ).pipe(
    Effect.flatMap((db) =>
      db === "blocked"
        ? Effect.fail(
          new BackendError({ operation: "open", cause: new IndexedDbError({ database, reason: "Blocked" }) })
        )
        : Effect.succeed(db)
    )
  )

/**
 * The writes of a `withTransaction` that wait for its end: the application's records, and the store's writes that
 * join them. Per database, so that a transaction of one store never takes another store's writes.
 */
interface Pending {
  readonly db: IDBDatabase
  readonly works: Array<Store.Work<unknown>>
}

const pendingWrites = FiberRef.unsafeMake<Pending | undefined>(undefined)

/** What the backend knows of its ownership of the store: why it lost it, once it has, and its connection. */
interface Ownership {
  lost: StoreLostError | undefined
  db: IDBDatabase | undefined
}

const invalidTime = (operation: BackendOperation, name: string, value: number) =>
  new BackendError({
    operation,
    cause: new Error(`${name} must be a time in milliseconds since the epoch, got ${value}`)
  })

/**
 * Opens the store and gives its `Backend`, owning the store until the scope closes (see the module's
 * documentation). Fails with `OptionsError` for an invalid option, with `UnsupportedError` where IndexedDB or the
 * Web Locks API is missing, with `StoreLockedError` while another owner lives (unless `waitForLock`), with
 * `StoreUnusableError` for a database of a newer schema version or of another application, and with `BackendError`
 * when the database cannot be opened (its cause an `IndexedDbError`).
 *
 * @since 0.3.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<
  IndexedDbStore,
  OptionsError | UnsupportedError | StoreLockedError | StoreUnusableError | BackendError,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const { databaseName, waitForLock } = yield* validate(options)
    const factory: IDBFactory | undefined = globalThis.indexedDB
    if (factory === undefined) return yield* new UnsupportedError({ api: "IndexedDB" })
    const locks: LockManager | undefined = globalThis.navigator?.locks
    if (locks === undefined) return yield* new UnsupportedError({ api: "Web Locks" })

    // Once lost, the store stays lost: every operation fails with why, and `lost` fails with it.
    const ownership: Ownership = { lost: undefined, db: undefined }
    const lostSignal = yield* Deferred.make<never, StoreLostError>()
    const lose = (reason: StoreLostError["reason"], cause: unknown) => {
      if (ownership.lost !== undefined) return
      ownership.lost = new StoreLostError({ store: databaseName, reason, cause })
      Deferred.unsafeDone(lostSignal, Exit.fail(ownership.lost))
      // A connection left open would block whoever deletes or upgrades the database now.
      ownership.db?.close()
    }

    // The lock first, and released last: nothing is read or written before the store is owned.
    yield* Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(
        restore(takeLock(locks, lockName(databaseName), waitForLock, (cause) => lose("TakenOver", cause))),
        (held) =>
          held === undefined
            ? Effect.fail(new StoreLockedError({ store: databaseName }))
            : Effect.addFinalizer(() => Effect.promise(held.release))
      )
    )
    const db = yield* openDatabase(factory, databaseName)
    ownership.db = db
    const missing = Database.missingStores(db)
    if (missing.length > 0) {
      return yield* new StoreUnusableError({
        store: databaseName,
        reason: "NotADatabase",
        detail: `the IndexedDB database has no object store ${missing.join(", ")}: another application made it`
      })
    }
    db.onversionchange = () =>
      lose("LockLost", new Error("other code asked to delete or upgrade the database: its connection was closed"))
    db.onclose = () =>
      lose("LockLost", new Error("the browser closed the database connection (the site's data was cleared, say)"))

    /** Runs one operation's transaction; a failure is the operation's `BackendError`, caused by why. */
    const run = <A>(operation: BackendOperation, f: () => Promise<A>): Effect.Effect<A, BackendError> =>
      Effect.suspend(() =>
        ownership.lost !== undefined
          ? Effect.fail(new BackendError({ operation, cause: ownership.lost }))
          : Effect.tryPromise({
            try: f,
            catch: (cause) =>
              new BackendError({ operation, cause: ownership.lost ?? indexedDbError(databaseName, cause) })
          })
      )

    /**
     * Runs a write in a transaction of its own; inside a `withTransaction` that holds the application's records, it
     * joins them instead, and `deferred` gives its result until they commit together.
     */
    const write = <A>(
      operation: BackendOperation,
      work: Store.Work<A>,
      deferred: Effect.Effect<A, BackendError>
    ): Effect.Effect<A, BackendError> =>
      Effect.flatMap(FiberRef.get(pendingWrites), (pending) => {
        if (pending === undefined || pending.db !== db || pending.works.length === 0) {
          return run(operation, () => Store.perform(db, work))
        }
        return Effect.tap(deferred, () => Effect.sync(() => pending.works.push(work)))
      })

    const incarnation = yield* Effect.flatMap(
      Incarnation.make,
      (fresh) => run("open", () => Store.initialize(db, fresh))
    )

    /** A request on the records, as `RecordsError`. */
    const onRecords = <A>(operation: RecordsError["operation"], f: () => Promise<A>) =>
      Effect.mapError(
        run("withTransaction", f),
        (error) =>
          ownership.lost !== undefined
            ? new RecordsError({ operation, reason: "Lost", cause: ownership.lost })
            : new RecordsError({ operation, reason: "Failed", cause: error.cause })
      )

    /**
     * A write of the records: checked at once (a bad key or value must fail the application's call, not the commit
     * of a delivery), then joined to the pending writes of the `withTransaction` it runs in, or written now.
     */
    const recordWrite = (operation: "put" | "remove", key: IDBValidKey, value: unknown, work: Store.Work<void>) =>
      Effect.suspend(() => {
        try {
          factory.cmp(key, key)
        } catch (cause) {
          return Effect.fail(new RecordsError({ operation, reason: "InvalidKey", cause }))
        }
        if (operation === "put") {
          try {
            structuredClone(value)
          } catch (cause) {
            return Effect.fail(new RecordsError({ operation, reason: "InvalidValue", cause }))
          }
        }
        return Effect.flatMap(FiberRef.get(pendingWrites), (pending) => {
          if (pending === undefined || pending.db !== db) return onRecords(operation, () => Store.perform(db, work))
          pending.works.push(work)
          return Effect.void
        })
      })

    const records = Records.of({
      put: (key, value) => recordWrite("put", key, value, Store.putRecord(key, value)),
      remove: (key) => recordWrite("remove", key, undefined, Store.removeRecord(key)),
      get: (key) => onRecords("get", () => Store.getRecord(db, key)),
      list: (range) => onRecords("list", () => Store.listRecords(db, range))
    })

    const backend = Backend.of({
      incarnation,
      transactional: false,
      outbound: run("outbound", () => Store.outbound(db)),
      append: (messages, runId) => {
        if (messages.length === 0) return Effect.succeed([])
        // NaN is no key: such a message would never expire.
        if (messages.some(({ expiresAt }) => expiresAt !== undefined && Number.isNaN(expiresAt))) {
          return Effect.fail(invalidTime("append", "expiresAt", NaN))
        }
        return run("append", () => Store.append(db, messages, runId))
      },
      read: (peer, lane, fromSeq, limit) => run("read", () => Store.read(db, peer, lane, fromSeq, limit)),
      acknowledge: (acks) =>
        acks.length === 0 ? Effect.void : write("acknowledge", Store.acknowledge(acks), Effect.void),
      // A read first: a sweep with nothing due, the usual one, writes nothing.
      expire: (now, limit) => {
        if (Number.isNaN(now)) return Effect.fail(invalidTime("expire", "now", now))
        if (!(limit >= 1)) return Effect.succeed([])
        return Effect.flatMap(
          run("expire", () => Store.anyDue(db, now)),
          (due) => due ? run("expire", () => Store.expire(db, now, limit)) : Effect.succeed([])
        )
      },
      purge: (peer, lane) => run("purge", () => Store.purge(db, peer, lane)),
      setIncarnation: (peer, next) => write("setIncarnation", Store.setIncarnation(peer, next), Effect.void),
      forget: (peer, next) => run("forget", () => Store.forget(db, peer, next)),
      received: run("received", () => Store.received(db)),
      commitReceived: (states, letters = []) =>
        states.length === 0 && letters.length === 0
          ? Effect.void
          : write("commitReceived", Store.commitReceived(states, letters), Effect.void),
      deadLetters: (query) => run("deadLetters", () => Store.deadLetters(db, query)),
      removeDeadLetters: (ids) =>
        ids.length === 0 ? Effect.succeed(0) : write(
          "removeDeadLetters",
          Store.removeDeadLetters(ids),
          // Joining the application's records, it commits later: the count is of the letters there are now.
          Effect.map(
            run("removeDeadLetters", () => Store.deadLetters(db, { ids, limit: ids.length })),
            (letters) => letters.length
          )
        ),
      requestReplay: (ids, requested) =>
        ids.length === 0
          ? Effect.succeed(0)
          : run("requestReplay", () => Store.perform(db, Store.requestReplay(ids, requested))),
      withTransaction: (effect) =>
        Effect.flatMap(FiberRef.get(pendingWrites), (outer) => {
          const pending: Pending = { db, works: [] }
          const scoped = Effect.locally(effect, pendingWrites, pending)
          if (outer !== undefined && outer.db === db) {
            // Nested: its records join the enclosing transaction's if it succeeds, and are dropped if it fails.
            return Effect.tap(scoped, () => Effect.sync(() => outer.works.push(...pending.works)))
          }
          return Effect.flatMap(scoped, (value) =>
            pending.works.length === 0
              ? Effect.succeed(value)
              : Effect.as(run("withTransaction", () => Store.performAll(db, pending.works)), value))
        }),
      lost: Deferred.await(lostSignal)
    })
    return { backend, records }
  })

/**
 * A `Backend` on the IndexedDB store `databaseName` of the page's origin, owned through a Web Lock while the layer
 * lives (see the module's documentation and {@link make} for how it fails).
 *
 * @example
 * ```ts
 * import * as Backend from "@intersession/core/Backend"
 * import * as IndexedDbBackend from "@intersession/platform-browser/IndexedDbBackend"
 * import * as Effect from "effect/Effect"
 *
 * // A second tab that opens the same store waits here until the first one closes, instead of failing with
 * // StoreLockedError.
 * const store = IndexedDbBackend.layer({ databaseName: "chat", waitForLock: true })
 *
 * const program = Effect.gen(function*() {
 *   const backend = yield* Backend.Backend
 *   const { streams } = yield* backend.outbound
 *   console.log(`${streams.length} outbound streams`)
 * })
 *
 * Effect.runPromise(
 *   program.pipe(
 *     Effect.provide(store),
 *     // Outside a browser (in Node, say) there is no IndexedDB, and the layer says so.
 *     Effect.catchTag("IndexedDbUnsupportedError", (error) => Effect.log(error.message))
 *   )
 * )
 * ```
 *
 * @since 0.3.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<
  Backend | Records,
  OptionsError | UnsupportedError | StoreLockedError | StoreUnusableError | BackendError
> =>
  Layer.scopedContext(
    Effect.map(make(options), ({ backend, records }) =>
      Context.make(Backend, backend).pipe(Context.add(Records, records)))
  )
