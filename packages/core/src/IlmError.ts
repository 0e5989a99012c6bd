/**
 * The errors a caller of the engine can meet. Each says what went wrong and what to do about it.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import type { MessageId } from "./Message.js"
import type { PeerId } from "./PeerId.js"

/**
 * `send` was asked to send a message to the local peer itself.
 *
 * @since 0.1.0
 * @category errors
 */
export class SendToSelfError extends Data.TaggedError("SendToSelfError")<{
  readonly peer: PeerId
}> {
  override get message(): string {
    return `Peer ${this.peer} cannot send a message to itself; deliver it locally instead`
  }
}

/**
 * `ILM.forget` was given the engine's own peer: a peer holds no streams with itself. To start over, wipe its store.
 *
 * @since 0.3.0
 * @category errors
 */
export class ForgetSelfError extends Data.TaggedError("ForgetSelfError")<{
  readonly peer: PeerId
}> {
  override get message(): string {
    return `Peer ${this.peer} cannot forget itself; to start over, stop it and wipe its store`
  }
}

/**
 * A payload is larger than the configured `maxPayloadBytes`.
 *
 * @since 0.1.0
 * @category errors
 */
export class PayloadTooLargeError extends Data.TaggedError("PayloadTooLargeError")<{
  readonly size: number
  readonly maxPayloadBytes: number
}> {
  override get message(): string {
    return `A payload of ${this.size} bytes exceeds the limit of ${this.maxPayloadBytes} bytes; ` +
      `split it or raise maxPayloadBytes on both peers`
  }
}

/**
 * A lane name is empty or longer than 255 characters.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidLaneError extends Data.TaggedError("InvalidLaneError")<{
  readonly lane: string
}> {
  override get message(): string {
    return `Lane ${JSON.stringify(this.lane.slice(0, 40))} is not valid: use 1 to 255 characters`
  }
}

/**
 * The outbox for a peer holds `maxPendingPerPeer` unacknowledged messages and the policy is `"fail"`.
 *
 * @since 0.1.0
 * @category errors
 */
export class OutboxFullError extends Data.TaggedError("OutboxFullError")<{
  readonly peer: PeerId
  readonly maxPendingPerPeer: number
}> {
  override get message(): string {
    return `The outbox for peer ${this.peer} is full (${this.maxPendingPerPeer} unacknowledged messages); ` +
      `retry once it acknowledges, or use the "wait" policy`
  }
}

/**
 * The engine has stopped and accepts nothing more: its scope closed, or one of its fibers ended, failed or died,
 * which stops the whole engine. Then `reason` says which fiber and how, and `cause` holds its `Cause`.
 *
 * @since 0.1.0
 * @category errors
 */
export class EngineClosedError extends Data.TaggedError("EngineClosedError")<{
  readonly peer: PeerId
  /** Why the engine stopped, when it did not stop by closing its scope. */
  readonly reason?: string | undefined
  /** The `Cause` of the fiber that stopped the engine, when it failed or died. */
  readonly cause?: unknown
}> {
  override get message(): string {
    return this.reason === undefined
      ? `The engine of peer ${this.peer} has stopped; start a new one on the same backend to continue`
      : `The engine of peer ${this.peer} stopped: ${this.reason}; start a new one on the same backend to continue`
  }
}

/**
 * What one outbound stream still holds when `drain` gives up.
 *
 * @since 0.1.0
 * @category models
 */
export interface PendingStream {
  readonly peer: PeerId
  readonly lane: string
  readonly pending: number
}

/**
 * `drain` timed out before every sent message was acknowledged. Nothing is lost: the messages stay stored.
 *
 * @since 0.1.0
 * @category errors
 */
export class DrainTimeoutError extends Data.TaggedError("DrainTimeoutError")<{
  readonly pending: ReadonlyArray<PendingStream>
}> {
  override get message(): string {
    const total = this.pending.reduce((sum, stream) => sum + stream.pending, 0)
    const streams = this.pending.map((stream) => `${stream.peer}/${stream.lane}: ${stream.pending}`).join(", ")
    return `Drain timed out with ${total} unacknowledged message(s) (${streams}); they stay stored and will be sent`
  }
}

/**
 * A time to live that is not a positive, finite duration: `timeToLive` must be above zero (a message that may not
 * live at all is better not sent).
 *
 * @since 0.3.0
 * @category errors
 */
export class InvalidTimeToLiveError extends Data.TaggedError("InvalidTimeToLiveError")<{
  readonly timeToLive: unknown
}> {
  override get message(): string {
    const shown = typeof this.timeToLive === "object" && this.timeToLive !== null
      ? String(this.timeToLive)
      : JSON.stringify(this.timeToLive) ?? String(this.timeToLive)
    return `timeToLive ${shown} is not valid: use a positive, finite duration such as "30 seconds" or 30000 (ms)`
  }
}

/**
 * `sendAndAwait`'s message left its stream without being delivered: its time to live ran out (`"expired"`) or the
 * application purged it (`"purged"`).
 *
 * @since 0.3.0
 * @category errors
 */
export class MessageDroppedError extends Data.TaggedError("MessageDroppedError")<{
  readonly id: MessageId
  readonly reason: "expired" | "purged"
}> {
  override get message(): string {
    return `Message ${this.id.destination}/${this.id.lane} #${this.id.seq} was ${this.reason} before its delivery`
  }
}
