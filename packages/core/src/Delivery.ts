/**
 * Where received messages go. `layerInbox` and `layerQueue` are the ready ways to consume them; the example is a
 * `Delivery` of the application's own.
 *
 * @example
 * ```ts
 * import * as Delivery from "@intersession/core/Delivery"
 * import * as ILM from "@intersession/core/ILM"
 * import * as PeerId from "@intersession/core/PeerId"
 * import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
 * import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
 * import * as Context from "effect/Context"
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 * import * as Ref from "effect/Ref"
 *
 * // A Delivery of your own. Success hands the message over for good: it is acknowledged and its sender drops it.
 * // A DeliveryError keeps it pending: the engine retries it with back-off, and nothing later in its stream
 * // overtakes it.
 * const ledgerDelivery = (ledger: Ref.Ref<ReadonlyArray<string>>, open: Ref.Ref<boolean>) =>
 *   Layer.succeed(
 *     Delivery.Delivery,
 *     Delivery.Delivery.of({
 *       deliver: (message) =>
 *         Effect.if(Ref.get(open), {
 *           onTrue: () => Ref.update(ledger, (entries) => [...entries, new TextDecoder().decode(message.payload)]),
 *           onFalse: () => Effect.fail(new Delivery.DeliveryError({ reason: "the ledger is closed" }))
 *         })
 *     })
 *   )
 *
 * const program = Effect.gen(function*() {
 *   const hub = yield* InMemoryNetwork.make()
 *   const peer = (id: string, delivery: Layer.Layer<Delivery.Delivery>) =>
 *     Effect.map(
 *       Layer.build(
 *         ILM.layer().pipe(
 *           Layer.provide(delivery),
 *           Layer.provide(hub.layer(PeerId.make(id))),
 *           Layer.provide(InMemoryBackend.layerFresh)
 *         )
 *       ),
 *       Context.get(ILM.ILM)
 *     )
 *   const ledger = yield* Ref.make<ReadonlyArray<string>>([])
 *   const open = yield* Ref.make(false)
 *   const alice = yield* peer("alice", Delivery.layerInbox())
 *   yield* peer("bank", ledgerDelivery(ledger, open))
 *
 *   yield* alice.send(PeerId.make("bank"), new TextEncoder().encode("amount: 10"))
 *   yield* Effect.sleep("300 millis") // the bank refuses it meanwhile
 *   yield* Ref.set(open, true)
 *   yield* alice.drain("10 seconds") // a retry delivered it, and the bank acknowledged it
 *   console.log(yield* Ref.get(ledger)) // [ 'amount: 10' ]
 * })
 *
 * Effect.runPromise(Effect.scoped(program))
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import type * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import type { Message } from "./Message.js"

/**
 * The application could not take a message. The engine keeps the message, retries it as the lane's
 * {@link DeliveryPolicy} says and does not acknowledge it, so the sender keeps it too. When the policy gives up, the
 * message moves to the receiver's dead letters and its stream goes on.
 *
 * `permanent: true` says that trying again cannot help (the payload does not decode, say): the message moves to the
 * dead letters at once, whatever the policy.
 *
 * @since 0.1.0
 * @category errors
 */
export class DeliveryError extends Data.TaggedError("DeliveryError")<{
  readonly reason: string
  readonly cause?: unknown
  readonly permanent?: boolean | undefined
}> {
  override get message(): string {
    return `Delivery failed${this.permanent === true ? " for good" : ""}: ${this.reason}`
  }
}

/**
 * How a lane's failed deliveries are retried: `backoff` gives the waits between attempts (by default they double
 * from the engine's `deliveryRetryInitial` up to its `deliveryRetryMax`), fed with each failure; `attempts` bounds
 * how many deliveries are tried in all (at least 1). When either runs out, the message moves to the receiver's dead
 * letters (`DeadLettered` reports it) and the lane goes on. With neither bound (the default), retries go on until
 * the delivery succeeds, and a message that always fails holds its lane.
 *
 * Attempts are counted while the engine runs: a restart starts the count again.
 *
 * @example
 * ```ts
 * import * as IlmConfig from "@intersession/core/IlmConfig"
 * import * as Schedule from "effect/Schedule"
 *
 * const config = IlmConfig.make({
 *   lanePolicies: {
 *     // Five attempts, 1, 2, 4 and 8 seconds apart, then dead letters.
 *     payments: { attempts: 5, backoff: Schedule.exponential("1 second") },
 *     // Retries every minute for an hour, then dead letters.
 *     audit: { backoff: Schedule.spaced("1 minute").pipe(Schedule.upTo("1 hour")) }
 *   }
 * })
 * console.log(config._tag) // Right
 * ```
 *
 * @since 0.3.0
 * @category models
 */
export interface DeliveryPolicy {
  readonly attempts?: number | undefined
  readonly backoff?: Schedule.Schedule<unknown, DeliveryError> | undefined
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
 * @example
 * ```ts
 * import * as Delivery from "@intersession/core/Delivery"
 * import * as ILM from "@intersession/core/ILM"
 * import type * as Message from "@intersession/core/Message"
 * import * as PeerId from "@intersession/core/PeerId"
 * import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
 * import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
 * import * as Context from "effect/Context"
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 * import * as Queue from "effect/Queue"
 *
 * const program = Effect.gen(function*() {
 *   // The application's own queue: a bounded one slows the senders down when the application falls behind.
 *   const received = yield* Queue.bounded<Message.Message>(100)
 *   const hub = yield* InMemoryNetwork.make()
 *   const peer = (id: string, delivery: Layer.Layer<Delivery.Delivery>) =>
 *     Effect.map(
 *       Layer.build(
 *         ILM.layer().pipe(
 *           Layer.provide(delivery),
 *           Layer.provide(hub.layer(PeerId.make(id))),
 *           Layer.provide(InMemoryBackend.layerFresh)
 *         )
 *       ),
 *       Context.get(ILM.ILM)
 *     )
 *
 *   const alice = yield* peer("alice", Delivery.layerInbox())
 *   yield* peer("bob", Delivery.layerQueue(received))
 *   yield* alice.send(PeerId.make("bob"), new TextEncoder().encode("queued"))
 *   const message = yield* Queue.take(received)
 *   console.log(new TextDecoder().decode(message.payload)) // queued
 * })
 *
 * Effect.runPromise(Effect.scoped(program))
 * ```
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
 * @example
 * ```ts
 * import * as Delivery from "@intersession/core/Delivery"
 * import * as ILM from "@intersession/core/ILM"
 * import * as PeerId from "@intersession/core/PeerId"
 * import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
 * import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
 * import * as Console from "effect/Console"
 * import * as Context from "effect/Context"
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 * import * as Stream from "effect/Stream"
 *
 * const peer = (hub: InMemoryNetwork.Hub, id: string) =>
 *   Layer.build(
 *     ILM.layer().pipe(
 *       // `provideMerge` keeps the `Inbox` in the peer's context, next to `ILM`.
 *       Layer.provideMerge(Delivery.layerInbox({ capacity: 256 })),
 *       Layer.provide(hub.layer(PeerId.make(id))),
 *       Layer.provide(InMemoryBackend.layerFresh)
 *     )
 *   )
 *
 * const program = Effect.gen(function*() {
 *   const hub = yield* InMemoryNetwork.make()
 *   const alice = Context.get(yield* peer(hub, "alice"), ILM.ILM)
 *   const inbox = Context.get(yield* peer(hub, "bob"), Delivery.Inbox)
 *   for (const word of ["one", "two", "three"]) {
 *     yield* alice.send(PeerId.make("bob"), new TextEncoder().encode(word))
 *   }
 *
 *   // One at a time with `take`, or as a stream with `messages`.
 *   const first = yield* inbox.take
 *   console.log(new TextDecoder().decode(first.payload)) // one
 *   yield* inbox.messages.pipe(
 *     Stream.take(2),
 *     Stream.runForEach((message) => Console.log(`seq ${message.seq}: ${new TextDecoder().decode(message.payload)}`))
 *   )
 *   // seq 2: two
 *   // seq 3: three
 * })
 *
 * Effect.runPromise(Effect.scoped(program))
 * ```
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
