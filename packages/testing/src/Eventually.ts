/**
 * Drives the `TestClock` until a condition holds.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as TestClock from "effect/TestClock"

/**
 * The condition still did not hold after the time limit.
 *
 * @since 0.1.0
 * @category errors
 */
export class NotReachedError extends Data.TaggedError("NotReachedError")<{
  readonly what: string
  readonly after: Duration.Duration
}> {
  override get message(): string {
    return `Not reached after ${Duration.format(this.after)} of test time: ${this.what}`
  }
}

/**
 * Checks `condition`; while it is false, moves the `TestClock` forward by `step` (10 ms by default), up to `limit`
 * of test time (5 minutes by default). No real time passes beyond letting fibers run.
 *
 * @since 0.1.0
 * @category combinators
 */
export const eventually = <E, R>(
  what: string,
  condition: Effect.Effect<boolean, E, R>,
  options?: { readonly step?: Duration.DurationInput | undefined; readonly limit?: Duration.DurationInput | undefined }
): Effect.Effect<void, E | NotReachedError, R> =>
  Effect.gen(function*() {
    const step = Duration.decode(options?.step ?? "10 millis")
    const limit = Duration.decode(options?.limit ?? "5 minutes")
    let waited = Duration.zero
    while (!(yield* condition)) {
      if (Duration.greaterThanOrEqualTo(waited, limit)) return yield* new NotReachedError({ what, after: waited })
      yield* TestClock.adjust(step)
      waited = Duration.sum(waited, step)
    }
  })
