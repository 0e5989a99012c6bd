/**
 * The engine's Effect metrics. Every series is tagged with the engine's own peer (`local`), so engines in one
 * process keep separate series. The message counters are tagged per stream, with the remote peer (`peer`) and the
 * lane (`lane`); `expired` and `purged` also with `direction` (`outbound` or `inbound`); rejected frames with the
 * remote peer and the `reason`. `pending` is one gauge per engine.
 *
 * @since 0.1.0
 */
import * as Metric from "effect/Metric"

/**
 * Messages accepted by `send` (stored durably).
 *
 * @since 0.1.0
 * @category metrics
 */
export const sent = Metric.counter("intersession_messages_sent", {
  description: "Messages accepted by send and stored",
  incremental: true
})

/**
 * Messages handed to the local `Delivery` successfully.
 *
 * @since 0.1.0
 * @category metrics
 */
export const delivered = Metric.counter("intersession_messages_delivered", {
  description: "Messages delivered to the application",
  incremental: true
})

/**
 * Outbound messages acknowledged by their destination.
 *
 * @since 0.1.0
 * @category metrics
 */
export const acked = Metric.counter("intersession_messages_acked", {
  description: "Outbound messages acknowledged by the destination",
  incremental: true
})

/**
 * `Data` frames sent again after a timeout or a `Hello`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const retransmitted = Metric.counter("intersession_frames_retransmitted", {
  description: "Data frames sent again",
  incremental: true
})

/**
 * Inbound messages dropped because they were already delivered or buffered.
 *
 * @since 0.1.0
 * @category metrics
 */
export const duplicatesDropped = Metric.counter("intersession_duplicates_dropped", {
  description: "Inbound duplicate messages dropped",
  incremental: true
})

/**
 * Inbound frames refused, tagged by `reason`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const framesRejected = Metric.counter("intersession_frames_rejected", {
  description: "Inbound frames refused, by reason",
  incremental: true
})

/**
 * Messages that expired before their delivery, tagged by `direction` (`outbound`: removed from this peer's store;
 * `inbound`: never handed to this peer's application).
 *
 * @since 0.3.0
 * @category metrics
 */
export const expired = Metric.counter("intersession_messages_expired", {
  description: "Messages that expired before their delivery, by direction",
  incremental: true
})

/**
 * Messages purged by an application before their delivery, tagged by `direction`.
 *
 * @since 0.3.0
 * @category metrics
 */
export const purged = Metric.counter("intersession_messages_purged", {
  description: "Messages purged before their delivery, by direction",
  incremental: true
})

/**
 * Inbound messages this peer gave up delivering, moved to its dead letters.
 *
 * @since 0.3.0
 * @category metrics
 */
export const deadLettered = Metric.counter("intersession_messages_dead_lettered", {
  description: "Inbound messages moved to dead letters",
  incremental: true
})

/**
 * Outbound messages stored and not yet acknowledged, over every stream of the engine (tagged `local` only).
 *
 * @since 0.1.0
 * @category metrics
 */
export const pending = Metric.gauge("intersession_messages_pending", {
  description: "Outbound messages stored and not yet acknowledged"
})
