/**
 * Messages the store removed without their delivery — expired, or purged by the application — leave their streams:
 * they are no longer pending, their room in the outbox is free, the pump sends `Skip`s for them so the receiver
 * moves past them, and it is reported.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as PubSub from "effect/PubSub"
import * as STM from "effect/STM"
import type { DroppedMessages } from "../../Backend.js"
import type { SkipReason } from "../../Frame.js"
import { IlmEvent } from "../../IlmEvent.js"
import * as Metrics from "../../IlmMetrics.js"
import * as StreamKey from "../../StreamKey.js"
import type { Env } from "./env.js"
import { add } from "./metricTags.js"
import * as Outbound from "./outbound.js"
import * as State from "./state.js"

/** Records what the store removed, for `reason`; returns how many pending messages left their streams. */
export const apply = (
  env: Env,
  removed: ReadonlyArray<DroppedMessages>,
  reason: SkipReason
): Effect.Effect<number> =>
  removed.length === 0 ? Effect.succeed(0) : Effect.gen(function*() {
    const { state } = env
    const keys = removed.map((entry) => StreamKey.make(entry.peer, entry.lane))
    yield* state.outs.ensure(keys)
    yield* state.peers.ensure(removed.map((entry) => entry.peer))
    const counts = yield* STM.gen(function*() {
      const counts: Array<readonly [DroppedMessages, number]> = []
      const ready: Array<StreamKey.StreamKey> = []
      let total = 0
      for (const [i, entry] of removed.entries()) {
        const key = keys[i]!
        // A stream this run has not recorded yet: its append is being recorded, and will find the drop here.
        const current = (yield* state.outs.get(key)) ?? Outbound.make(key, entry.peer, entry.lane)
        const { count, stream } = Outbound.drop(current, entry.seqs, reason)
        if (stream === current) continue
        yield* state.outs.set(key, stream)
        if ((yield* env.peerLink(entry.peer)).linked) ready.push(key)
        counts.push([entry, count])
        total += count
      }
      yield* State.addPending(state, -total)
      if (ready.length > 0) yield* State.addAll(state.outReady, ready)
      return counts
    }).pipe(STM.commit)
    let total = 0
    for (const [entry, count] of counts) {
      if (count === 0) continue
      total += count
      yield* env.outbox.release(entry.peer, count)
      const event = { peer: entry.peer, lane: entry.lane, direction: "outbound", count } as const
      yield* PubSub.publish(
        env.events,
        reason === "expired" ? IlmEvent.MessagesExpired(event) : IlmEvent.MessagesPurged(event)
      )
      yield* add(
        reason === "expired" ? Metrics.expired : Metrics.purged,
        count,
        env.metricTags.stream(entry.peer, entry.lane, "outbound")
      )
    }
    if (total > 0) Metrics.pending.unsafeUpdate(env.outbox.total(), env.metricTags.engine)
    return total
  })
