/**
 * A delivery worker: hands one inbound stream's deliverable messages to the application, a batch at a time, and
 * records what it delivered.
 *
 * A batch runs in one store transaction that also commits the stream's receive state, and each delivery in it runs
 * in a nested transaction (a savepoint where the store opens one only if the delivery writes): so a failing
 * delivery undoes only its own writes, the ones before it commit, and the application never sees a message twice.
 * A batch is never replayed: replaying would run the `Delivery` again for messages whose effects may lie outside
 * the store (a queue, a request), delivering them twice. Only a delivery itself can be interrupted; the commit and
 * the in-memory record of what was delivered always happen together.
 *
 * A failed delivery is retried as the lane's delivery policy says. When the policy gives up, the message becomes a
 * dead letter: it is stored with the batch's commit, in the same transaction that moves the stream past it, so it is
 * never both a dead letter and delivered again, nor lost.
 *
 * When traced, a batch is an `intersession.deliver` span, and the delivery of a message that carries its sender's
 * trace context an `intersession.deliver.message` span inside it, linked to the span the message was sent in
 * (`spans.ts`).
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as STM from "effect/STM"
import type { NewDeadLetter, RunStart } from "../../Backend.js"
import { DeliveryError } from "../../Delivery.js"
import * as Frame from "../../Frame.js"
import { IlmEvent } from "../../IlmEvent.js"
import * as Metrics from "../../IlmMetrics.js"
import type { Incarnation } from "../../Incarnation.js"
import type { StreamKey } from "../../StreamKey.js"
import * as Runs from "../runs.js"
import * as DeliveryPolicy from "./deliveryPolicy.js"
import type { Env } from "./env.js"
import { yieldToEventLoop } from "./fairness.js"
import * as Inbound from "./inbound.js"
import { message } from "./messages.js"
import { add } from "./metricTags.js"
import * as Receive from "./receive.js"
import { retryBackend } from "./retryBackend.js"
import * as Spans from "./spans.js"

interface Batch {
  readonly stream: Inbound.InStream
  readonly frames: ReadonlyArray<Inbound.Item>
}

interface Outcome {
  /** The last seq delivered (or expired, skipped or dead-lettered) and committed; `first - 1` when none. */
  readonly lastOk: number
  readonly runs: ReadonlyArray<RunStart>
  /** Of the seqs up to `lastOk`: how many reached the application, expired, or were purged by the sender. */
  readonly counts: Counts
  /** The messages up to `lastOk` that the policy gave up on, now stored as dead letters. */
  readonly deadLetters: ReadonlyArray<NewDeadLetter>
  /** Why the message after `lastOk` was not delivered, and when to try it again. */
  readonly failure: Failure | undefined
}

interface Failure {
  readonly cause: Cause.Cause<unknown>
  /** When to try again; `undefined` when the delivery was interrupted (the engine is stopping). */
  readonly retry: DeliveryPolicy.Retry | undefined
}

interface Counts {
  delivered: number
  expired: number
  purged: number
  deadLettered: number
}

const noCounts = (): Counts => ({ delivered: 0, expired: 0, purged: 0, deadLettered: 0 })

/** The failure of a delivery as the policy sees it: its `DeliveryError`, or one that says the delivery died. */
const deliveryError = (cause: Cause.Cause<unknown>): DeliveryError =>
  Option.match(Cause.failureOption(cause), {
    onSome: (error) =>
      error instanceof DeliveryError ? error : new DeliveryError({ reason: String(error), cause: error }),
    onNone: () => new DeliveryError({ reason: `the delivery died: ${Cause.squash(cause)}`, cause: Cause.squash(cause) })
  })

export const make = (env: Env, key: StreamKey): Effect.Effect<void> => {
  const { backend, config, state } = env
  /** Made with the first batch, which names the stream's lane. */
  let policy: DeliveryPolicy.Tracker | undefined

  /** The next deliverable messages; none left ends the worker's turn. */
  const takeBatch = STM.gen(function*() {
    const stream = yield* state.ins.get(key)
    if (stream === undefined) return undefined
    const frames = Inbound.deliverable(stream, config.maxBatch)
    if (frames.length > 0) return { stream, frames } satisfies Batch
    yield* state.ins.set(key, { ...stream, busy: false })
    return undefined
  })

  /** Moves the stream's delivered seq once the store has it, and queues the acknowledgement. */
  const record = (incarnation: Incarnation, lastOk: number, runs: ReadonlyArray<RunStart>, counts: Counts) =>
    STM.gen(function*() {
      const stream = yield* state.ins.get(key)
      const next = stream === undefined ? undefined : Inbound.delivered(stream, incarnation, lastOk, runs, counts)
      if (next === undefined) return
      yield* state.ins.set(key, next)
      const effects = Receive.emptyEffects()
      Receive.queueAck(effects, next)
      yield* Receive.flush(env, effects)
    })

  /** Reports what a batch delivered, and what of it expired, was purged by the sender or became a dead letter. */
  const report = (stream: Inbound.InStream, counts: Counts, deadLetters: ReadonlyArray<NewDeadLetter>) =>
    Effect.gen(function*() {
      const { lane, peer } = stream
      yield* add(Metrics.delivered, counts.delivered, env.metricTags.stream(peer, lane))
      for (const letter of deadLetters) {
        yield* PubSub.publish(
          env.events,
          IlmEvent.DeadLettered({ peer, lane, seq: letter.seq, attempts: letter.attempts, error: letter.error })
        )
        yield* Effect.logWarning(
          `Delivery of ${peer}/${lane} seq ${letter.seq} gave up after ${letter.attempts} attempts; it is a dead letter`,
          letter.error
        )
      }
      yield* add(Metrics.deadLettered, counts.deadLettered, env.metricTags.stream(peer, lane))
      if (counts.expired + counts.purged === 0) return
      const tags = env.metricTags.stream(peer, lane, "inbound")
      if (counts.expired > 0) {
        yield* PubSub.publish(
          env.events,
          IlmEvent.MessagesExpired({ peer, lane, direction: "inbound", count: counts.expired })
        )
        yield* add(Metrics.expired, counts.expired, tags)
      }
      if (counts.purged > 0) {
        yield* PubSub.publish(
          env.events,
          IlmEvent.MessagesPurged({ peer, lane, direction: "inbound", count: counts.purged })
        )
        yield* add(Metrics.purged, counts.purged, tags)
      }
    })

  const deliver = ({ frames, stream }: Batch) =>
    Effect.uninterruptibleMask((restore) => {
      const first = frames[0]!.seq
      const batch = backend.withTransaction(Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        let lastOk = first - 1
        let runs = stream.runs
        let failure: Failure | undefined
        const counts = noCounts()
        const deadLetters: Array<NewDeadLetter> = []
        for (const item of frames) {
          if (item._tag === "Skip") {
            counts[item.reason] += item.last - item.seq + 1
          } else if (item.deadline !== undefined && item.deadline <= now) {
            // Its time ran out on this peer's clock: it never reaches the application.
            counts.expired++
          } else {
            const delivered = message({
              source: stream.peer,
              destination: env.self,
              lane: stream.lane,
              incarnation: stream.incarnation,
              seq: item.seq,
              payload: item.payload
            })
            const delivery = backend.withTransaction(env.delivery.deliver(delivered))
            const trace = item.trace
            const exit = yield* Effect.exit(restore(
              trace === undefined ? delivery : Spans.withSpan(delivery, "intersession.deliver.message", () => ({
                kind: "consumer",
                links: [Spans.linkTo(trace)],
                attributes: {
                  "intersession.local_peer": env.self,
                  "intersession.peer": stream.peer,
                  "intersession.lane": stream.lane,
                  "intersession.seq": item.seq
                }
              }))
            ))
            if (Exit.isSuccess(exit)) {
              policy?.reset()
              counts.delivered++
            } else {
              // Interrupted: the engine is stopping, and this was no attempt. What was delivered is committed.
              if (Cause.isInterruptedOnly(exit.cause)) {
                failure = { cause: exit.cause, retry: undefined }
                break
              }
              const error = deliveryError(exit.cause)
              policy ??= DeliveryPolicy.make(config, DeliveryPolicy.policyOf(config, stream.lane))
              const retry = yield* policy.failed(item.seq, item.run, error, now)
              if (retry._tag === "Retry") {
                failure = { cause: exit.cause, retry }
                break
              }
              deadLetters.push({
                peer: stream.peer,
                lane: stream.lane,
                incarnation: stream.incarnation,
                seq: item.seq,
                payload: item.payload,
                error: error.message,
                attempts: retry.attempt,
                deadLetteredAt: now
              })
              counts.deadLettered++
            }
          }
          lastOk = Inbound.lastOf(item)
          runs = Runs.extend(runs, item.run, item.seq, Frame.maxRuns)
        }
        if (lastOk >= first) {
          const commit = backend.commitReceived([{
            peer: stream.peer,
            lane: stream.lane,
            incarnation: stream.incarnation,
            delivered: lastOk,
            runs
          }], deadLetters)
          // A transactional store rolls the deliveries back with a failed commit: fail, and deliver them again.
          // Elsewhere the deliveries stand, so only the commit is retried: delivering again would duplicate them.
          if (backend.transactional) yield* commit
          else yield* retryBackend("record a delivery", commit)
        }
        return { lastOk, runs, counts, deadLetters, failure } satisfies Outcome
      }))
      return Spans.withSpan(batch, "intersession.deliver", () => ({
        root: true,
        kind: "consumer",
        attributes: {
          "intersession.local_peer": env.self,
          "intersession.peer": stream.peer,
          "intersession.lane": stream.lane,
          "intersession.seq.first": first,
          "intersession.seq.last": Inbound.lastOf(frames[frames.length - 1]!),
          "intersession.messages": frames.filter((item) => item._tag === "Data").length
        }
      })).pipe(
        Effect.tap(({ counts, deadLetters, lastOk, runs }) =>
          lastOk >= first
            ? Effect.zipRight(record(stream.incarnation, lastOk, runs, counts), report(stream, counts, deadLetters))
            : Effect.void
        )
      )
    })

  const reportFailure = (batch: Batch, seq: number, cause: Cause.Cause<unknown>, retry: DeliveryPolicy.Retry) =>
    Effect.gen(function*() {
      const { attempt, delayMillis } = retry
      yield* PubSub.publish(
        env.events,
        IlmEvent.DeliveryFailed({
          peer: batch.stream.peer,
          lane: batch.stream.lane,
          seq,
          attempt,
          retryInMillis: delayMillis,
          error: Cause.squash(cause)
        })
      )
      yield* Effect.logWarning(
        `Delivery of ${batch.stream.peer}/${batch.stream.lane} seq ${seq} failed; retrying`,
        cause
      )
      yield* Effect.sleep(delayMillis)
    })

  /**
   * A batch that failed as a whole (its commit did, on a transactional store): nothing of it counts, and it is
   * delivered again after a wait that doubles while its commits keep failing.
   */
  let commitFailures = 0
  const failedBatch = (batch: Batch, cause: Cause.Cause<unknown>): Outcome => ({
    lastOk: batch.frames[0]!.seq - 1,
    runs: batch.stream.runs,
    counts: noCounts(),
    deadLetters: [],
    failure: {
      cause,
      retry: Cause.isInterruptedOnly(cause) ? undefined : DeliveryPolicy.doubling(config, ++commitFailures)
    }
  })

  return Effect.gen(function*() {
    while (true) {
      const batch = yield* takeBatch
      if (batch === undefined) return
      const exit = yield* Effect.exit(deliver(batch))
      const outcome = Exit.isSuccess(exit) ? exit.value : failedBatch(batch, exit.cause)
      if (outcome.failure === undefined) {
        commitFailures = 0
        // The acknowledgement is queued: let the ack sender send it before the next batch is delivered (a SQL
        // store's commit never waits, and this worker would keep it from running).
        yield* Effect.yieldNow()
        yield* yieldToEventLoop
        continue
      }
      const { cause, retry } = outcome.failure
      if (retry === undefined) return yield* Effect.interrupt
      yield* reportFailure(batch, outcome.lastOk + 1, cause, retry)
    }
  })
}
