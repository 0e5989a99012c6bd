/**
 * Deterministic virtual time for long simulations.
 *
 * `TestClock.adjust` waits for the test's fibers to settle with real timers, about 3.6 ms of real time per timer
 * it fires, which is right for a test and too slow for thousands of simulated schedules. {@link run} instead runs
 * an effect on a `ControlledScheduler` and a virtual `Clock`: it steps every runnable fiber until none is left,
 * then jumps the clock to the next sleep. Same seed, same program, same run — and idle time costs nothing.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scheduler from "effect/Scheduler"

interface Sleeper {
  readonly at: number
  readonly order: number
  readonly wake: () => void
}

/**
 * A clock that only moves when {@link run} moves it.
 *
 * @since 0.1.0
 * @category models
 */
export class VirtualClock implements Clock.Clock {
  /**
   * @since 0.1.0
   */
  readonly [Clock.ClockTypeId]: Clock.ClockTypeId = Clock.ClockTypeId
  private sleepers: Array<Sleeper> = []
  private order = 0

  constructor(private now: number) {}

  /**
   * The virtual time, in milliseconds.
   *
   * @since 0.1.0
   */
  unsafeCurrentTimeMillis(): number {
    return this.now
  }

  /**
   * The virtual time, in nanoseconds.
   *
   * @since 0.1.0
   */
  unsafeCurrentTimeNanos(): bigint {
    return BigInt(this.now) * 1_000_000n
  }

  /**
   * @since 0.1.0
   */
  readonly currentTimeMillis: Effect.Effect<number> = Effect.sync(() => this.now)

  /**
   * @since 0.1.0
   */
  readonly currentTimeNanos: Effect.Effect<bigint> = Effect.sync(() => this.unsafeCurrentTimeNanos())

  /**
   * Waits until {@link run} moves the clock `duration` past now.
   *
   * @since 0.1.0
   */
  sleep(duration: Duration.Duration): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      const sleeper: Sleeper = {
        at: this.now + Math.max(0, Duration.toMillis(duration)),
        order: this.order++,
        wake: () => resume(Effect.void)
      }
      this.sleepers.push(sleeper)
      return Effect.sync(() => {
        this.sleepers = this.sleepers.filter((other) => other !== sleeper)
      })
    })
  }

  /** The instant of the earliest pending sleep. */
  get next(): number | undefined {
    let next: number | undefined
    for (const sleeper of this.sleepers) if (next === undefined || sleeper.at < next) next = sleeper.at
    return next
  }

  /**
   * Moves to `instant` and wakes every sleep due by then, earliest first.
   *
   * @since 0.1.0
   */
  advanceTo(instant: number): void {
    this.now = Math.max(this.now, instant)
    const due = this.sleepers.filter((sleeper) => sleeper.at <= this.now)
    this.sleepers = this.sleepers.filter((sleeper) => sleeper.at > this.now)
    due.sort((a, b) => a.at - b.at || a.order - b.order)
    for (const sleeper of due) sleeper.wake()
  }
}

/**
 * The run did not finish: its fibers all waited with no sleep pending (`"stuck"`), or virtual time passed the
 * limit (`"timeout"`), or it never stopped running without time moving (`"livelock"`).
 *
 * @since 0.1.0
 * @category errors
 */
export class VirtualTimeError extends Data.TaggedError("VirtualTimeError")<{
  readonly reason: "stuck" | "timeout" | "livelock"
  readonly atMillis: number
}> {
  override get message(): string {
    return `Virtual run ${this.reason} at ${this.atMillis} ms of virtual time`
  }
}

/**
 * Runs an effect to its end in virtual time, starting at `startMillis` (0 by default), and gives up after
 * `limit` of virtual time. The effect must do no real I/O: everything it waits for must be another of its fibers
 * or the clock.
 *
 * @since 0.1.0
 * @category running
 */
export const run = <A, E>(
  effect: Effect.Effect<A, E>,
  options?: {
    readonly limit?: Duration.DurationInput | undefined
    readonly startMillis?: number | undefined
  }
): Effect.Effect<A, E | VirtualTimeError> =>
  Effect.flatten(Effect.promise(() =>
    new Promise<Exit.Exit<A, E | VirtualTimeError>>((resolve) => {
      // Drive from a macrotask, outside any fiber's run loop.
      setImmediate(() => {
        const clock = new VirtualClock(options?.startMillis ?? 0)
        const limit = clock.unsafeCurrentTimeMillis() + Duration.toMillis(options?.limit ?? "1 hour")
        const scheduler = new Scheduler.ControlledScheduler()
        const fiber = Effect.runFork(Effect.withClock(effect, clock), { scheduler })
        const fail = (reason: VirtualTimeError["reason"]) => {
          const error = new VirtualTimeError({ reason, atMillis: clock.unsafeCurrentTimeMillis() })
          Effect.runFork(fiber.interruptAsFork(fiber.id()), { scheduler })
          for (let i = 0; i < 1_000 && scheduler.tasks.buckets.length > 0; i++) scheduler.step()
          resolve(Exit.fail(error))
        }
        // Yield to the event loop now and then, so a long run never starves the host's timers.
        let steps = 0
        const drive = () => {
          for (let slice = 0; slice < 1_000; slice++) {
            while (scheduler.tasks.buckets.length > 0) {
              scheduler.step()
              if (++steps > 1_000_000) return fail("livelock")
            }
            steps = 0
            const exit = fiber.unsafePoll()
            if (exit !== null) return resolve(exit)
            const next = clock.next
            if (next === undefined) return fail("stuck")
            if (next > limit) return fail("timeout")
            clock.advanceTo(next)
          }
          setImmediate(drive)
        }
        drive()
      })
    })
  ))

/**
 * Sleeps in virtual time until `condition` holds, checking every `interval` (100 ms by default).
 *
 * @since 0.1.0
 * @category combinators
 */
export const waitUntil = <E, R>(
  condition: Effect.Effect<boolean, E, R>,
  interval: Duration.DurationInput = "100 millis"
): Effect.Effect<void, E, R> =>
  Effect.gen(function*() {
    while (!(yield* condition)) yield* Effect.sleep(interval)
  })
