/**
 * Runs a peer's engine in a scope of its own, so a test can stop it (a crash: no drain), start it again on the
 * same store (a restart) and read everything its application received across runs.
 *
 * @since 0.1.0
 */
import { Delivery, DeliveryError } from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import type * as IlmConfig from "@intersession/core/IlmConfig"
import type { Message } from "@intersession/core/Message"
import type { PeerId } from "@intersession/core/PeerId"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as InMemoryBackend from "./InMemoryBackend.js"
import type * as InMemoryNetwork from "./InMemoryNetwork.js"

/**
 * Records what a peer's application received, across engine runs, and can be told to refuse deliveries.
 *
 * @since 0.1.0
 * @category models
 */
export interface Recorder {
  readonly delivery: Delivery["Type"]
  readonly messages: Effect.Effect<ReadonlyArray<Message>>
  /** When each of `messages` was received, in milliseconds of the engine's `Clock`. */
  readonly receivedAt: Effect.Effect<ReadonlyArray<number>>
  /** How many deliveries were attempted, failed ones included. */
  readonly attempts: Effect.Effect<number>
  /**
   * Refuses every delivery (`true`), none (`false`), or those the predicate picks; a predicate that answers
   * `"permanent"` refuses for good (`DeliveryError` with `permanent`), which sends the message to dead letters.
   */
  readonly setFailing: (failing: boolean | ((message: Message) => boolean | "permanent")) => Effect.Effect<void>
  /** Forgets what was received, as a reinstalled application would. */
  readonly clear: Effect.Effect<void>
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const makeRecorder: Effect.Effect<Recorder> = Effect.sync(() => {
  let messages: Array<Message> = []
  let receivedAt: Array<number> = []
  let failing: (message: Message) => boolean | "permanent" = () => false
  let attempts = 0
  return {
    delivery: Delivery.of({
      deliver: (message) =>
        Effect.clockWith((clock) => {
          attempts++
          const fails = failing(message)
          if (fails !== false) {
            return Effect.fail(
              new DeliveryError({ reason: "the recorder was told to fail", permanent: fails === "permanent" })
            )
          }
          messages.push(message)
          receivedAt.push(clock.unsafeCurrentTimeMillis())
          return Effect.void
        })
    }),
    messages: Effect.sync(() => messages.slice()),
    receivedAt: Effect.sync(() => receivedAt.slice()),
    attempts: Effect.sync(() => attempts),
    setFailing: (value) =>
      Effect.sync(() => {
        failing = typeof value === "function" ? value : () => value
      }),
    clear: Effect.sync(() => {
      messages = []
      receivedAt = []
    })
  }
})

/**
 * A running engine and the means to stop it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Running {
  readonly id: PeerId
  readonly ilm: ILM.ILM["Type"]
  /** Closes the engine's scope without draining: what a crash leaves behind. */
  readonly stop: Effect.Effect<void>
}

/**
 * What a peer is made of: its id, its store and its application.
 *
 * @since 0.1.0
 * @category models
 */
export interface Peer {
  readonly id: PeerId
  readonly store: InMemoryBackend.Store
  readonly recorder: Recorder
}

/**
 * Makes a peer with a fresh store and recorder.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (id: PeerId): Effect.Effect<Peer> =>
  Effect.zipWith(InMemoryBackend.makeStore(id), makeRecorder, (store, recorder) => ({ id, store, recorder }))

/**
 * Starts the peer's engine on a hub. The engine lives until `stop` or until the enclosing scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const start = (
  hub: InMemoryNetwork.Hub,
  peer: Peer,
  config?: IlmConfig.Options
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const layer = ILM.layer(config).pipe(
      Layer.provide(hub.layer(peer.id)),
      Layer.provide(InMemoryBackend.layer(peer.store)),
      Layer.provide(Layer.succeed(Delivery, peer.recorder.delivery))
    )
    const context = yield* Layer.buildWithScope(layer, scope).pipe(
      Effect.onError(() => Scope.close(scope, Exit.void))
    )
    return { id: peer.id, ilm: Context.get(context, ILM.ILM), stop: Scope.close(scope, Exit.void) } satisfies Running
  })
