/**
 * The engine's Effect metrics. Counters are tagged with the remote peer (`peer`), and rejected frames also with
 * the reason (`reason`).
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
 * Outbound messages stored and not yet acknowledged.
 *
 * @since 0.1.0
 * @category metrics
 */
export const pending = Metric.gauge("intersession_messages_pending", {
  description: "Outbound messages stored and not yet acknowledged"
})
