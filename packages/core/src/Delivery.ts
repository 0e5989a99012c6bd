/**
 * Where received messages go.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import type { Message } from "./Message.js"

/**
 * The application could not take a message now. The engine keeps the message, retries it on the configured
 * schedule and does not acknowledge it, so the sender keeps it too.
 *
 * @since 0.1.0
 * @category errors
 */
export class DeliveryError extends Data.TaggedError("DeliveryError")<{
  readonly reason: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return `Delivery failed: ${this.reason}`
  }
}

/**
 * Hands a received message to the application. When `deliver` succeeds the message counts as delivered and is
 * acknowledged to its sender; a failure keeps it pending. Messages of one stream arrive one at a time in order;
 * different streams may be delivered concurrently.
 *
 * @since 0.1.0
 * @category tags
 */
export class Delivery extends Context.Tag("@intersession/core/Delivery")<Delivery, {
  readonly deliver: (message: Message) => Effect.Effect<void, DeliveryError>
}>() {}

/**
 * A `Delivery` that offers each message to a queue. A bounded queue slows the senders down when the application
 * falls behind; a shut-down queue makes delivery fail, so messages stay pending.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromQueue = (queue: Queue.Enqueue<Message>): Delivery["Type"] =>
  Delivery.of({
    deliver: (message) =>
      Effect.flatMap(
        queue.isShutdown,
        (shutdown) =>
          shutdown
            ? Effect.fail(new DeliveryError({ reason: "the delivery queue is shut down" }))
            : Effect.asVoid(Queue.offer(queue, message))
      )
  })

/**
 * Provides a `Delivery` that offers to the given queue.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerQueue = (queue: Queue.Enqueue<Message>): Layer.Layer<Delivery> =>
  Layer.succeed(Delivery, fromQueue(queue))

/**
 * The received messages of a {@link layerInbox}, to consume as a stream or one at a time.
 *
 * @since 0.1.0
 * @category tags
 */
export class Inbox extends Context.Tag("@intersession/core/Delivery/Inbox")<Inbox, {
  readonly messages: Stream.Stream<Message>
  readonly take: Effect.Effect<Message>
}>() {}

/**
 * Provides a `Delivery` and the `Inbox` it fills: the ready way to consume received messages. `capacity` bounds
 * what waits in memory (1,024 by default); when it is full, acknowledgements wait, and so do the senders.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerInbox = (options?: { readonly capacity?: number | undefined }): Layer.Layer<Delivery | Inbox> =>
  Layer.scopedContext(
    Effect.map(
      Effect.acquireRelease(Queue.bounded<Message>(options?.capacity ?? 1024), Queue.shutdown),
      (queue) =>
        Context.make(Delivery, fromQueue(queue)).pipe(
          Context.add(Inbox, Inbox.of({ messages: Stream.fromQueue(queue), take: Queue.take(queue) }))
        )
    )
  )
