/**
 * The IndexedDB database of a store: its schema (version 1), opening it, and running one transaction over it.
 *
 * This is promise code on purpose: a transaction commits by itself once no request of it is pending when control
 * returns to the event loop, so the work of one transaction must issue its requests from their callbacks or from
 * the microtasks after them, never from a fiber that may yield to the event loop in between.
 *
 * @internal
 */
import type * as BackendTypes from "@intersession/core/Backend"
import type { Incarnation } from "@intersession/core/Incarnation"
import type { Lane } from "@intersession/core/Lane"
import type { PeerId } from "@intersession/core/PeerId"

/** The schema version this module creates and reads. */
export const version = 1

/** The object stores of the schema (see the module documentation of `IndexedDbBackend`). */
export const stores = {
  meta: "meta",
  streams: "streams",
  batches: "batches",
  dropped: "dropped",
  incarnations: "incarnations",
  received: "received",
  deadLetters: "deadLetters",
  records: "records"
} as const

/** The index of `batches` over `nextExpiry`: only the batches that hold a message that expires are in it. */
export const expiryIndex = "nextExpiry"

/** The key of the one record of `meta`. */
export const metaKey = "store"

/** The record of `meta`: the store's incarnation. */
export interface MetaRecord {
  readonly incarnation: Incarnation
}

/**
 * An outbound stream, by `[peer, lane]`. Its seqs above `acknowledged` and below `nextSeq` are each stored (in
 * `batches`) or dropped (in `dropped`); `runs` gives the run of each of them, a start per change of run.
 */
export interface StreamRecord {
  readonly peer: PeerId
  readonly lane: Lane
  readonly nextSeq: number
  readonly acknowledged: number
  readonly runs: ReadonlyArray<BackendTypes.RunStart>
}

/**
 * The outbound messages of one stream that one `append` stored, by `[peer, lane, from]`: seqs `from … to`, all of
 * run `run`. One record per batch rather than per message, since IndexedDB's cost is per record written.
 * `payloads[i]` is seq `from + i`'s, or `null` once it expired; seqs up to the stream's acknowledgement are gone
 * whatever the batch still holds. `expiresAt` is there when a message of the batch expires (`null` for those that do
 * not), and `nextExpiry` is the earliest expiry of those still stored, absent when there is none: then the batch is
 * not in the expiry index.
 */
export interface BatchRecord {
  readonly peer: PeerId
  readonly lane: Lane
  readonly from: number
  readonly to: number
  readonly run: number
  readonly payloads: ReadonlyArray<Uint8Array | null>
  readonly expiresAt?: ReadonlyArray<number | null>
  readonly nextExpiry?: number
}

/** Dropped seqs `from … to` of one run, by `[peer, lane, from]`. */
export interface DroppedRecord extends BackendTypes.DroppedRange {
  readonly peer: PeerId
  readonly lane: Lane
}

/** A per-peer incarnation, by `peer`. */
export type IncarnationRecord = BackendTypes.PeerIncarnation

/** The receive state of an inbound stream, by `[peer, lane]`. */
export type ReceivedRecord = BackendTypes.ReceiveState

/** Creates the object stores and indexes of the versions above `oldVersion`. */
const upgrade = (db: IDBDatabase, oldVersion: number): void => {
  if (oldVersion < 1) {
    db.createObjectStore(stores.meta)
    db.createObjectStore(stores.streams, { keyPath: ["peer", "lane"] })
    // A batch without `nextExpiry` has no key in the index: a sweep looks only at batches with messages that expire.
    db.createObjectStore(stores.batches, { keyPath: ["peer", "lane", "from"] }).createIndex(expiryIndex, "nextExpiry")
    db.createObjectStore(stores.dropped, { keyPath: ["peer", "lane", "from"] })
    db.createObjectStore(stores.incarnations, { keyPath: "peer" })
    db.createObjectStore(stores.received, { keyPath: ["peer", "lane"] })
    // The key generator only grows, even past deleted records: ids are never reused.
    db.createObjectStore(stores.deadLetters, { keyPath: "id", autoIncrement: true })
    // The application's own records, by the keys it gives.
    db.createObjectStore(stores.records)
  }
}

/** The object stores the schema lacks: none for a store of this library. */
export const missingStores = (db: IDBDatabase): ReadonlyArray<string> =>
  Object.values(stores).filter((name) => !db.objectStoreNames.contains(name))

/**
 * Opens the database `name` at this schema version, creating or upgrading its schema. Resolves with `"blocked"` when
 * another connection to it keeps an upgrade from starting: the request is then abandoned (an upgrade that starts
 * later is aborted, and a connection that opens later is closed). Rejects with the browser's error (a `VersionError`
 * for a database of a newer version, say).
 */
export const open = (factory: IDBFactory, name: string): Promise<IDBDatabase | "blocked"> =>
  new Promise((resolve, reject) => {
    const request = factory.open(name, version)
    let abandoned = false
    request.onupgradeneeded = (event) => {
      if (abandoned) request.transaction?.abort()
      else upgrade(request.result, event.oldVersion)
    }
    request.onblocked = () => {
      abandoned = true
      resolve("blocked")
    }
    request.onsuccess = () => {
      if (abandoned) request.result.close()
      else resolve(request.result)
    }
    request.onerror = () => reject(request.error)
  })

/** Deletes the database `name`; resolves once it is gone, and rejects with the browser's error. */
export const remove = (factory: IDBFactory, name: string): Promise<void> =>
  new Promise((resolve, reject) => {
    const request = factory.deleteDatabase(name)
    request.onsuccess = () => resolve()
    request.onerror = () => reject(request.error)
  })

/** The result of a request, once it succeeds; its error otherwise. */
export const request = <A>(request: IDBRequest<A>): Promise<A> =>
  new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result)
    request.onerror = () => reject(request.error)
  })

/**
 * Walks a cursor: `f` gets each value in turn, and says whether to go on. Resolves once it says no or the cursor
 * ends.
 */
export const walk = <A>(request: IDBRequest<IDBCursorWithValue | null>, f: (value: A) => boolean): Promise<void> =>
  new Promise((resolve, reject) => {
    request.onsuccess = () => {
      const cursor = request.result
      if (cursor !== null && f(cursor.value as A)) cursor.continue()
      else resolve()
    }
    request.onerror = () => reject(request.error)
  })

/** Aborts a transaction that may have ended already (aborting it then throws, and changes nothing). */
const abort = (transaction: IDBTransaction): void => {
  try {
    transaction.abort()
  } catch {
    // It committed or aborted already.
  }
}

/**
 * Runs `body` in one transaction over `names`, and resolves with its value once the transaction has committed. A
 * write commits with strict durability: IndexedDB reports it complete only once it is flushed to disk (Chromium's
 * default, relaxed, may lose the last commits to an operating system crash or a power loss).
 *
 * If `body` fails, or a request of it, the transaction is aborted and nothing of it is kept; the promise rejects with
 * that error, or with the transaction's own (a `QuotaExceededError` at commit, say).
 */
export const transact = <A>(
  db: IDBDatabase,
  names: ReadonlyArray<string>,
  mode: IDBTransactionMode,
  body: (transaction: IDBTransaction) => Promise<A>
): Promise<A> =>
  new Promise((resolve, reject) => {
    const transaction = mode === "readwrite"
      ? db.transaction(Array.from(names), mode, { durability: "strict" })
      : db.transaction(Array.from(names), mode)
    let done: { readonly value: A } | undefined
    let failure: unknown
    transaction.oncomplete = () => {
      if (done !== undefined) resolve(done.value)
      else reject(failure ?? new Error("the transaction committed before its work was done"))
    }
    transaction.onabort = () => reject(failure ?? transaction.error ?? new Error("the transaction was aborted"))
    body(transaction).then(
      (value) => {
        done = { value }
      },
      (error: unknown) => {
        failure = error
        abort(transaction)
      }
    )
  })
