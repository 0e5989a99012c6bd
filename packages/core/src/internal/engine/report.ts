/**
 * What a transaction wants reported once it has committed: events, refused frames and counts. Transactions fill a
 * `Report`; their caller publishes it, so nothing observable happens inside a transaction.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as PubSub from "effect/PubSub"
import type * as Frame from "../../Frame.js"
import { IlmEvent } from "../../IlmEvent.js"
import * as Metrics from "../../IlmMetrics.js"
import type { Lane } from "../../Lane.js"
import type { PeerId } from "../../PeerId.js"
import * as StreamKey from "../../StreamKey.js"
import type { Jump } from "./inbound.js"
import { add, type MetricTags } from "./metricTags.js"

/** What a batch did to one stream, for its metrics. */
interface StreamCounts {
  readonly peer: PeerId
  readonly lane: Lane
  /** Outbound messages acknowledged. */
  acked: number
  /** Inbound duplicates dropped. */
  duplicates: number
}

export interface Report {
  readonly events: Array<IlmEvent>
  readonly rejected: Array<{ readonly from: PeerId; readonly reason: Frame.RejectReason }>
  /** Peers that sent data of a session this peer has not heard a `Hello` of: they are asked for one. */
  readonly unknownSessions: Set<PeerId>
  readonly streams: Map<StreamKey.StreamKey, StreamCounts>
}

export const make = (): Report => ({ events: [], rejected: [], unknownSessions: new Set(), streams: new Map() })

/** Counts what happened to a stream. */
export const count = (
  report: Report,
  peer: PeerId,
  lane: Lane,
  what: "acked" | "duplicates",
  amount: number
): void => {
  if (amount === 0) return
  const key = StreamKey.make(peer, lane)
  let counts = report.streams.get(key)
  if (counts === undefined) report.streams.set(key, counts = { peer, lane, acked: 0, duplicates: 0 })
  counts[what] += amount
}

export const reject = (report: Report, from: PeerId, reason: Frame.RejectReason, detail: string): void => {
  report.rejected.push({ from, reason })
  report.events.push(IlmEvent.FrameRejected({ from, reason, detail }))
}

export const jumped = (report: Report, peer: PeerId, lane: string, jumps: ReadonlyArray<Jump>): void => {
  for (const jump of jumps) report.events.push(IlmEvent.Resynchronised({ peer, lane, ...jump }))
}

export const isEmpty = (report: Report): boolean => report.events.length === 0 && report.streams.size === 0

/** Publishes the events and updates the metrics; `pending` is read only when something was acknowledged. */
export const publish = (
  report: Report,
  events: PubSub.PubSub<IlmEvent>,
  pending: Effect.Effect<number>,
  tags: MetricTags
): Effect.Effect<void> =>
  isEmpty(report) ? Effect.void : Effect.gen(function*() {
    if (report.events.length > 0) yield* PubSub.publishAll(events, report.events)
    for (const rejected of report.rejected) {
      yield* add(Metrics.framesRejected, 1, tags.reason(rejected.from, rejected.reason))
    }
    let acked = false
    for (const counts of report.streams.values()) {
      const streamTags = tags.stream(counts.peer, counts.lane)
      yield* add(Metrics.duplicatesDropped, counts.duplicates, streamTags)
      yield* add(Metrics.acked, counts.acked, streamTags)
      acked ||= counts.acked > 0
    }
    if (acked) yield* Metric.set(Metric.taggedWithLabels(Metrics.pending, tags.engine), yield* pending)
  })
