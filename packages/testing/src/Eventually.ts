/**
 * Drives the `TestClock` until a condition holds.
 *
 * @since 0.1.0
 */
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
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
 * Checks `condition`; while it is false, moves the `TestClock` to the next pending sleep, but by at most `step`
 * (100 ms by default), up to `limit` of test time (5 minutes by default). No real time passes beyond letting
 * fibers run.
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
    const step = Duration.toMillis(options?.step ?? "100 millis")
    const limit = Duration.toMillis(options?.limit ?? "5 minutes")
    const start = yield* Clock.currentTimeMillis
    while (!(yield* condition)) {
      const now = yield* Clock.currentTimeMillis
      if (now - start >= limit) return yield* new NotReachedError({ what, after: Duration.millis(now - start) })
      const next = Chunk.reduce(yield* TestClock.sleeps(), Infinity, (min, at) => Math.min(min, at))
      yield* TestClock.adjust(Duration.millis(Math.min(step, Math.max(1, next - now))))
    }
  })
