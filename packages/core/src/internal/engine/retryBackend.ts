/**
 * Work the engine owes the store is retried until the store answers again: 50 ms, doubling, at most every 10 s.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type { BackendError } from "../../Backend.js"

export const retryBackend = <A>(what: string, effect: Effect.Effect<A, BackendError>): Effect.Effect<A> =>
  Effect.retry(
    effect,
    Schedule.exponential("50 millis").pipe(
      Schedule.union(Schedule.spaced("10 seconds")),
      Schedule.tapInput((error: BackendError) => Effect.logWarning(`Could not ${what}; retrying`, error))
    )
  ).pipe(Effect.orDie)
