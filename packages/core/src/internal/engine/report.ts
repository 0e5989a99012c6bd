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
import type { PeerId } from "../../PeerId.js"
import type { Jump } from "./inbound.js"

export interface Report {
  readonly events: Array<IlmEvent>
  readonly rejected: Array<{ readonly from: PeerId; readonly reason: Frame.RejectReason }>
  /** Peers that sent data of a session this peer has not heard a `Hello` of: they are asked for one. */
  readonly unknownSessions: Set<PeerId>
  duplicates: number
  acked: number
}

export const make = (): Report => ({ events: [], rejected: [], unknownSessions: new Set(), duplicates: 0, acked: 0 })

export const reject = (report: Report, from: PeerId, reason: Frame.RejectReason, detail: string): void => {
  report.rejected.push({ from, reason })
  report.events.push(IlmEvent.FrameRejected({ from, reason, detail }))
}

export const jumped = (report: Report, peer: PeerId, lane: string, jumps: ReadonlyArray<Jump>): void => {
  for (const jump of jumps) report.events.push(IlmEvent.Resynchronised({ peer, lane, ...jump }))
}

export const isEmpty = (report: Report): boolean =>
  report.events.length === 0 && report.duplicates === 0 && report.acked === 0

/** Publishes the events and updates the metrics; `pending` is read only when something was acknowledged. */
export const publish = (
  report: Report,
  events: PubSub.PubSub<IlmEvent>,
  pending: Effect.Effect<number>
): Effect.Effect<void> =>
  isEmpty(report) ? Effect.void : Effect.gen(function*() {
    if (report.events.length > 0) yield* PubSub.publishAll(events, report.events)
    for (const rejected of report.rejected) {
      yield* Metric.increment(
        Metric.tagged(Metric.tagged(Metrics.framesRejected, "peer", rejected.from), "reason", rejected.reason)
      )
    }
    if (report.duplicates > 0) yield* Metric.incrementBy(Metrics.duplicatesDropped, report.duplicates)
    if (report.acked > 0) {
      yield* Metric.incrementBy(Metrics.acked, report.acked)
      yield* Metric.set(Metrics.pending, yield* pending)
    }
  })
