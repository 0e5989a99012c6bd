/**
 * One peer of `intersession demo`: TCP, a SQLite file, and an application table that the delivery writes in the
 * engine's own transaction. It sends `count` numbered messages to its partner, resuming after a kill from what its
 * store says it accepted, and prints its progress as one JSON line every 100 ms for the demo to read.
 *
 * @internal
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import type { PeerId } from "@intersession/core/PeerId"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as HashSet from "effect/HashSet"
import * as Layer from "effect/Layer"
import type * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as SqliteBackend from "../SqliteBackend.js"
import * as TcpNetwork from "../TcpNetwork.js"

/** @internal */
export interface Options {
  readonly id: PeerId
  readonly listen: TcpNetwork.Address
  readonly partner: PeerId
  readonly partnerAddress: TcpNetwork.Address
  readonly db: string
  readonly key: Redacted.Redacted<string>
  readonly count: number
}

/** What a demo peer prints, one JSON object per line. */
export interface Progress {
  readonly id: string
  /** Messages its store accepted for the partner. */
  readonly sent: number
  /** Messages of the partner its application table holds. */
  readonly received: number
  /** Its messages not yet acknowledged. */
  readonly pending: number
  readonly connected: boolean
}

/** The application's own table, written by the delivery in the same transaction as the engine's receive state. */
export const receivedTable = "demo_received"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** A delivery that records each message in {@link receivedTable}: the application's effect, exactly once. */
const recordingDelivery = Layer.effect(
  Delivery.Delivery,
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE IF NOT EXISTS ${
      sql(receivedTable)
    } (source TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL)`
    return Delivery.Delivery.of({
      deliver: (message) =>
        sql`INSERT INTO ${sql(receivedTable)} (source, seq, body) VALUES (${message.source}, ${message.seq}, ${
          decoder.decode(message.payload)
        })`.pipe(
          Effect.asVoid,
          Effect.mapError((cause) => new Delivery.DeliveryError({ reason: "could not record the message", cause }))
        )
    })
  })
)

/** @internal */
export const run = (options: Options) =>
  Effect.gen(function*() {
    const ilm = yield* ILM.ILM
    const sql = yield* SqlClient.SqlClient
    const stats = yield* ilm.stats
    const stream = stats.outbound.find((out) => out.peer === options.partner)
    let sent = stream?.lastSeq ?? 0

    const report = Effect.gen(function*() {
      const rows = yield* sql<{ readonly n: number }>`SELECT COUNT(*) AS n FROM ${sql(receivedTable)}`
      const current = yield* ilm.stats
      const progress: Progress = {
        id: options.id,
        sent,
        received: rows[0]?.n ?? 0,
        pending: current.outbound.reduce((sum, out) => sum + out.pending, 0),
        connected: HashSet.has(yield* ilm.peers.get, options.partner)
      }
      yield* Console.log(JSON.stringify(progress))
    })
    yield* Effect.forkScoped(Effect.repeat(Effect.ignore(report), Schedule.spaced("100 millis")))

    while (sent < options.count) {
      yield* ilm.send(options.partner, encoder.encode(String(sent + 1)))
      sent++
    }
    return yield* Effect.never
  }).pipe(
    Effect.provide(
      ILM.layer({ helloInitial: "200 millis", helloMax: "1 second", retransmitInitial: "300 millis" }).pipe(
        Layer.provideMerge(recordingDelivery),
        Layer.provide(TcpNetwork.layer({
          peer: options.id,
          listen: options.listen,
          peers: new Map([[options.partner, options.partnerAddress]]),
          key: options.key,
          reconnectBase: "50 millis",
          reconnectMax: "500 millis"
        })),
        Layer.provideMerge(SqliteBackend.layer({ filename: options.db }))
      )
    ),
    Effect.scoped
  )
