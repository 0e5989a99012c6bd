/**
 * A receiving application that writes every message it is given to a table of its own, through the same
 * `SqlClient` as its SQLite store, with hooks to make it fail, stop or crash at each step of a delivery. Used by
 * SqlDelivery.test.ts in this process and by SqlDeliveryChild.ts in a child process that is killed for real.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Backend, type BackendError, type ReceiveState } from "@intersession/core/Backend"
import { Delivery, DeliveryError } from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import type * as IlmConfig from "@intersession/core/IlmConfig"
import type { Message } from "@intersession/core/Message"
import * as PeerId from "@intersession/core/PeerId"
import type * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqliteBackend from "../src/SqliteBackend.js"

export const A = PeerId.make("A")
export const B = PeerId.make("B")

/** Small timeouts, so that retries and restarts take milliseconds on the live clock. */
export const config: IlmConfig.Options = {
  helloInitial: "50 millis",
  helloMax: "200 millis",
  retransmitInitial: "100 millis",
  retransmitMin: "50 millis",
  retransmitMax: "500 millis",
  deliveryRetryInitial: "5 millis",
  deliveryRetryMax: "50 millis"
}

/** The receiver delivers a few messages per transaction, so faults land between batches as well as inside them. */
export const receiverConfig: IlmConfig.Options = { ...config, maxBatch: 3 }

/** A receiver that takes whatever arrived in one batch (up to the default of 1,024 messages). */
export const batchReceiverConfig: IlmConfig.Options = config

export const body = (i: number) => `m${i}`
export const bodies = (count: number) => Array.from({ length: count }, (_, i) => body(i + 1))
const encoder = new TextEncoder()
const decoder = new TextDecoder()
export const payload = (i: number) => encoder.encode(body(i))

/** Where a fault can strike during a delivery. */
export interface Faults {
  /** Inside `deliver`, after the application's insert. */
  readonly afterInsert: (message: Message) => Effect.Effect<void, DeliveryError>
  /** Inside the delivery transaction, after the receive-state statement and before COMMIT. */
  readonly afterReceiveState: (states: ReadonlyArray<ReceiveState>) => Effect.Effect<void, BackendError>
  /** After a transaction of the receiver committed. */
  readonly afterTransaction: Effect.Effect<void>
}

export const noFaults: Faults = {
  afterInsert: () => Effect.void,
  afterReceiveState: () => Effect.void,
  afterTransaction: Effect.void
}

const createAppTable = (sql: SqlClient.SqlClient) =>
  sql`CREATE TABLE IF NOT EXISTS app_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL
  )`

/** The application's rows, in insertion order. Duplicates would show: nothing in the table prevents them. */
export const appRows = Effect.flatMap(
  SqlClient.SqlClient,
  (sql) =>
    Effect.zipRight(
      createAppTable(sql),
      sql<{ body: string }>`SELECT body FROM app_messages ORDER BY id`
    )
).pipe(Effect.map((rows) => rows.map((row) => row.body)))

/** The receive state of the stream from A, as the store committed it. */
export const deliveredFromA = Effect.map(
  Effect.flatMap(Backend, (backend) => backend.received),
  (states) => states.find((state) => state.peer === A)?.delivered ?? 0
)

/** The application: one insert per message, through the store's own `SqlClient`. */
const appDelivery = (faults: Faults) =>
  Layer.effect(
    Delivery,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* Effect.orDie(createAppTable(sql))
      return Delivery.of({
        deliver: (message) =>
          sql`INSERT INTO app_messages (source, seq, body)
            VALUES (${message.source}, ${message.seq}, ${decoder.decode(message.payload)})`.pipe(
            Effect.mapError((cause) => new DeliveryError({ reason: "the application's insert failed", cause })),
            Effect.zipRight(faults.afterInsert(message))
          )
      })
    })
  )

/** The store's backend with the fault hooks around the receive-state commit and each transaction. */
const faultyBackend = (faults: Faults) =>
  Layer.effect(
    Backend,
    Effect.map(Backend, (backend) =>
      Backend.of({
        ...backend,
        commitReceived: (states) => Effect.zipRight(backend.commitReceived(states), faults.afterReceiveState(states)),
        withTransaction: (effect) => Effect.tap(backend.withTransaction(effect), () => faults.afterTransaction)
      }))
  )

/**
 * The receiver B: the engine on the SQLite store at `filename`, whose application writes to that store's database.
 * The built context has the store's `SqlClient` and `Backend` too.
 */
export const receiverLayer = (
  hub: InMemoryNetwork.Hub,
  filename: string,
  faults: Faults,
  options: IlmConfig.Options = receiverConfig
) =>
  ILM.layer(options).pipe(
    Layer.provide(Layer.mergeAll(hub.layer(B), faultyBackend(faults), appDelivery(faults))),
    Layer.provideMerge(SqliteBackend.layer({ filename }))
  )

/** The sender A: the engine on the SQLite store at `filename`; it receives nothing. */
export const senderLayer = (hub: InMemoryNetwork.Hub, filename: string) =>
  ILM.layer(config).pipe(
    Layer.provide(hub.layer(A)),
    Layer.provide(SqliteBackend.layer({ filename })),
    Layer.provide(Layer.succeed(Delivery, Delivery.of({ deliver: () => Effect.void })))
  )

/** Messages stored and not yet acknowledged by the engine's destinations. */
export const pending = (ilm: ILM.ILM["Type"]) =>
  Effect.map(ilm.stats, (stats) => stats.outbound.reduce((sum, stream) => sum + stream.pending, 0))
