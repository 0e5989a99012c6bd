/**
 * Messages as the application sees them.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import { SeqOrZero } from "./Frame.js"
import { Incarnation } from "./Incarnation.js"
import { Lane } from "./Lane.js"
import { PeerId } from "./PeerId.js"

/**
 * A message delivered to the destination's `Delivery`: who sent it to whom, in which lane, its place in the
 * stream (`seq` under the source's `incarnation`) and the payload bytes exactly as sent.
 *
 * @since 0.1.0
 * @category models
 */
export class Message extends Schema.Class<Message>("@intersession/core/Message")({
  source: PeerId,
  destination: PeerId,
  lane: Lane,
  incarnation: Incarnation,
  seq: SeqOrZero,
  payload: Schema.Uint8ArrayFromSelf
}) {}

/**
 * What `send` returns: the stream a message went into and its seq there. `incarnation` is the one the message was
 * stored under; if the store is later found to have gone back in time, pending messages move to a newer one and
 * keep their seq.
 *
 * @since 0.1.0
 * @category models
 */
export class MessageId extends Schema.Class<MessageId>("@intersession/core/MessageId")({
  destination: PeerId,
  lane: Lane,
  incarnation: Incarnation,
  seq: SeqOrZero
}) {}
