/**
 * One peer of `intersession demo`: TCP, a SQLite file, and an application table that the delivery writes in the
 * engine's own transaction. It sends `count` numbered messages to its partner, resuming after a kill from what its
 * store says it accepted, with at most `window` of them unacknowledged at once. It prints one JSON line when it
 * starts ({@link Started}) and its progress ({@link Progress}) every 50 ms and after each batch, for the demo to read.
 *
 * @internal
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import type { PeerId } from "@intersession/core/PeerId"
import * as Clock from "effect/Clock"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as HashSet from "effect/HashSet"
import * as Layer from "effect/Layer"
import type * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
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
  /** At most this many of its messages stored and not yet acknowledged (at least 1); it sends a tenth at a time. */
  readonly window: number
}

/**
 * The window of the demo: enough messages in flight to keep both links busy, few enough that sending lasts as long as
 * the transfer instead of racing ahead of it, so that there is something in flight to kill a peer in until the end.
 */
export const defaultWindow = 100

/** How often a demo peer prints its {@link Progress}. */
const reportInterval = "50 millis"

/** What a demo peer prints every 50 ms, and after each batch it sends. */
export const Progress = Schema.TaggedStruct("Progress", {
  id: Schema.String,
  /** Messages its store accepted for the partner (a count, and the highest body sent). */
  sent: Schema.Number,
  /** Of those, how many the partner acknowledged: every one up to this was delivered there. */
  acknowledged: Schema.Number,
  /** Messages of the partner its application table holds. */
  received: Schema.Number,
  connected: Schema.Boolean,
  /**
   * The wall clock when the report began, before any count was read (milliseconds since the epoch, the clock every
   * process of the machine reads): each count is at least what it was at that moment.
   */
  at: Schema.Number
}).annotations({ identifier: "DemoPeer/Progress" })

/** @internal */
export type Progress = typeof Progress.Type

/**
 * What a demo peer prints first, before it sends: what its store had accepted for the partner and what its
 * application table holds of the partner's messages, the latter counted before its engine started. After a kill,
 * both are exactly what the killed process had when it died.
 */
export const Started = Schema.TaggedStruct("Started", {
  id: Schema.String,
  sent: Schema.Number,
  received: Schema.Number
}).annotations({ identifier: "DemoPeer/Started" })

/** @internal */
export type Started = typeof Started.Type

/** A line a demo peer prints. */
export const Line = Schema.Union(Progress, Started)

const encodeLine = Schema.encodeSync(Schema.parseJson(Line))

/** The application's own table, written by the delivery in the same transaction as the engine's receive state. */
export const receivedTable = "demo_received"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** The messages of `source` the application table holds. */
const countReceived = (sql: SqlClient.SqlClient, source: PeerId) =>
  Effect.map(
    sql<{ readonly n: number }>`SELECT COUNT(*) AS n FROM ${sql(receivedTable)} WHERE source = ${source}`,
    (rows) => rows[0]?.n ?? 0
  )

/** A delivery that records each message in {@link receivedTable}: the application's effect, exactly once. */
const recordingDelivery = Layer.effect(
  Delivery.Delivery,
  Effect.map(SqlClient.SqlClient, (sql) =>
    Delivery.Delivery.of({
      deliver: (message) =>
        sql`INSERT INTO ${sql(receivedTable)} (source, seq, body) VALUES (${message.source}, ${message.seq}, ${
          decoder.decode(message.payload)
        })`.pipe(
          Effect.asVoid,
          Effect.mapError((cause) => new Delivery.DeliveryError({ reason: "could not record the message", cause }))
        )
    }))
)

/** @internal */
export const run = (options: Options) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE IF NOT EXISTS ${
      sql(receivedTable)
    } (source TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL)`
    // Counted before the engine starts, when nothing can be delivered yet.
    const receivedAtStart = yield* countReceived(sql, options.partner)

    yield* Effect.gen(function*() {
      const ilm = yield* ILM.ILM
      const toPartner = Effect.map(ilm.stats, (stats) => stats.outbound.filter((out) => out.peer === options.partner))
      let sent = (yield* toPartner).reduce((sum, out) => sum + out.lastSeq, 0)
      yield* Console.log(encodeLine({ _tag: "Started", id: options.id, sent, received: receivedAtStart }))

      const report = Effect.gen(function*() {
        const at = yield* Clock.currentTimeMillis
        const received = yield* countReceived(sql, options.partner)
        const streams = yield* toPartner
        const progress: Progress = {
          _tag: "Progress",
          id: options.id,
          sent,
          acknowledged: streams.reduce((sum, out) => sum + out.ackedUpTo, 0),
          received,
          connected: HashSet.has(yield* ilm.peers.get, options.partner),
          at
        }
        yield* Console.log(encodeLine(progress))
      })
      yield* Effect.forkScoped(Effect.repeat(Effect.ignore(report), Schedule.spaced(reportInterval)))

      // A window of `window` messages, sent in batches of a tenth of it: whenever a batch fits among the messages
      // not yet acknowledged, it goes in one `sendAll` and the peer reports at once; else it waits for
      // acknowledgements. Sending lasts as long as the transfer, and the demo hears of each batch as it is accepted.
      const batch = Math.ceil(options.window / 10)
      const unacknowledged = Effect.map(toPartner, (streams) => streams.reduce((sum, out) => sum + out.pending, 0))
      while (sent < options.count) {
        const size = Math.min(batch, options.count - sent)
        if ((yield* unacknowledged) + size > options.window) {
          yield* Effect.sleep("5 millis")
          continue
        }
        const first = sent + 1
        yield* ilm.sendAll(options.partner, Array.from({ length: size }, (_, i) => encoder.encode(String(first + i))))
        sent += size
        yield* Effect.ignore(report)
      }
      return yield* Effect.never
    }).pipe(
      Effect.provide(
        ILM.layer({ helloInitial: "200 millis", helloMax: "1 second", retransmitInitial: "300 millis" }).pipe(
          Layer.provide(recordingDelivery),
          Layer.provide(TcpNetwork.layer({
            peer: options.id,
            listen: options.listen,
            peers: new Map([[options.partner, options.partnerAddress]]),
            key: options.key,
            reconnectBase: "50 millis",
            reconnectMax: "500 millis"
          }))
        )
      )
    )
  }).pipe(
    Effect.provide(SqliteBackend.layer({ filename: options.db })),
    Effect.scoped
  )
