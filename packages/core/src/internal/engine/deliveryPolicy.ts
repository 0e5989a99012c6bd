/**
 * A lane's delivery policy at work: after each failed delivery of a message, whether to try it again and after how
 * long, or to give up on it (it then moves to dead letters). The attempts of one message are counted while it keeps
 * failing; a success, or a different message, starts again.
 *
 * Without a `backoff`, the waits double from `deliveryRetryInitial` up to `deliveryRetryMax`; with one, the
 * schedule is stepped with each failure and its end gives up too.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as Intervals from "effect/ScheduleIntervals"
import type { DeliveryError, DeliveryPolicy } from "../../Delivery.js"
import type { IlmConfig } from "../../IlmConfig.js"

/** Try again after `delayMillis`: `attempt` deliveries have failed. */
export interface Retry {
  readonly _tag: "Retry"
  readonly attempt: number
  readonly delayMillis: number
}

/** What to do after a failure: retry, or give up after `attempt` deliveries. */
export type Decision = Retry | { readonly _tag: "GiveUp"; readonly attempt: number }

/** The default wait after `attempt` failures: `deliveryRetryInitial`, doubled per failure up to `deliveryRetryMax`. */
export const doubling = (config: IlmConfig, attempt: number): Retry => ({
  _tag: "Retry",
  attempt,
  delayMillis: Duration.toMillis(Duration.min(
    Duration.times(config.deliveryRetryInitial, 2 ** Math.min(attempt - 1, 30)),
    config.deliveryRetryMax
  ))
})

/** The failing message, identified by its seq and run, and where its retries stand. */
interface Failing {
  readonly seq: number
  readonly run: number
  readonly attempt: number
  readonly scheduleState: unknown
}

export interface Tracker {
  /** Records a failed delivery of the message `seq` of `run` at `now`, and decides. */
  readonly failed: (seq: number, run: number, error: DeliveryError, now: number) => Effect.Effect<Decision>
  /** The failing message succeeded, or left: the next failure starts a new count. */
  readonly reset: () => void
}

export const policyOf = (config: IlmConfig, lane: string): DeliveryPolicy =>
  Object.hasOwn(config.lanePolicies, lane) ? config.lanePolicies[lane]! : config.deliveryPolicy

export const make = (config: IlmConfig, policy: DeliveryPolicy): Tracker => {
  let failing: Failing | undefined
  const { attempts, backoff } = policy

  const failed = (seq: number, run: number, error: DeliveryError, now: number): Effect.Effect<Decision> => {
    const previous = failing !== undefined && failing.seq === seq && failing.run === run ? failing : undefined
    const attempt = previous === undefined ? 1 : previous.attempt + 1
    const giveUp = (): Effect.Effect<Decision> => {
      failing = undefined
      return Effect.succeed({ _tag: "GiveUp", attempt })
    }
    if (error.permanent === true || (attempts !== undefined && attempt >= attempts)) return giveUp()
    if (backoff === undefined) {
      failing = { seq, run, attempt, scheduleState: undefined }
      return Effect.succeed(doubling(config, attempt))
    }
    return Effect.flatMap(
      backoff.step(now, error, previous === undefined ? backoff.initial : previous.scheduleState),
      ([scheduleState, , decision]) => {
        if (ScheduleDecision.isDone(decision)) return giveUp()
        failing = { seq, run, attempt, scheduleState }
        const delayMillis = Math.max(0, Intervals.start(decision.intervals) - now)
        return Effect.succeed<Decision>({ _tag: "Retry", attempt, delayMillis })
      }
    )
  }

  return {
    failed,
    reset: () => {
      failing = undefined
    }
  }
}
