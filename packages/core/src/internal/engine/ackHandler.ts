/**
 * The ack handler: removes acknowledged messages from the store, in batches. An acknowledged message is in no
 * hurry to leave (after a crash, the peer's `Hello` acknowledges it again), so the handler pauses between batches:
 * at a low rate each message would otherwise cost a store transaction. A failing store is retried until it
 * answers again; acknowledgements that arrive meanwhile go in the next call.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { Env } from "./env.js"
import { retryBackend } from "./retryBackend.js"
import * as State from "./state.js"

/** The pause between two deletions of acknowledged messages. */
const pause = Duration.millis(10)

export const make = (env: Env): Effect.Effect<never> =>
  Effect.forever(
    Effect.flatMap(State.takeAll(env.state.deletions, () => new Map()), (deletions) =>
      Effect.zipRight(
        retryBackend("delete acknowledged messages", env.backend.acknowledge(Array.from(deletions.values()))),
        Effect.sleep(pause)
      ))
  )
