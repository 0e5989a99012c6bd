/**
 * Work the engine owes the store is retried until the store answers again: 50 ms, doubling, at most every 10 s. A
 * store this engine no longer owns never will: its error ends the fiber, and with it the engine.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import { type BackendError, isStoreLost } from "../../Backend.js"

export const retryBackend = <A>(what: string, effect: Effect.Effect<A, BackendError>): Effect.Effect<A> =>
  Effect.retry(
    effect,
    Schedule.exponential("50 millis").pipe(
      Schedule.union(Schedule.spaced("10 seconds")),
      Schedule.tapInput((error: BackendError) => Effect.logWarning(`Could not ${what}; retrying`, error)),
      Schedule.whileInput((error: BackendError) => !isStoreLost(error))
    )
  ).pipe(Effect.orDie)
