/**
 * The retransmission timer: sleeps until the earliest deadline of a stream with messages in flight; when one
 * passes without progress, the stream resends from its first unacknowledged seq and its peer's timeout backs off.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as STM from "effect/STM"
import * as TRef from "effect/TRef"
import type { PeerId } from "../../PeerId.js"
import type { StreamKey } from "../../StreamKey.js"
import type { Env } from "./env.js"
import * as Outbound from "./outbound.js"
import * as Rtt from "./rtt.js"
import * as State from "./state.js"

export const make = (env: Env): Effect.Effect<never> => {
  const { state } = env

  const expire = (now: number) =>
    STM.gen(function*() {
      const backedOff = new Set<PeerId>()
      const ready: Array<StreamKey> = []
      for (const stream of yield* state.outs.values()) {
        if (stream.deadline === undefined || stream.deadline > now) continue
        if (Outbound.inFlight(stream) === 0) {
          yield* state.outs.set(stream.key, { ...stream, deadline: undefined })
          continue
        }
        yield* state.outs.set(stream.key, Outbound.restart(stream))
        ready.push(stream.key)
        if (backedOff.has(stream.peer)) continue
        backedOff.add(stream.peer)
        const peer = yield* env.peerLink(stream.peer)
        yield* state.peers.set(peer.peer, { ...peer, rtt: Rtt.backoff(peer.rtt, env.rttBounds) })
      }
      yield* State.addAll(state.outReady, ready)
    })

  /**
   * The earliest deadline and the version it was read at; waits while no deadline is armed. The version is read
   * first: streams made after this transaction ran have cells it did not read, and arming one bumps the version.
   */
  const earliest = STM.gen(function*() {
    const version = yield* TRef.get(state.deadlinesVersion)
    let first = Infinity
    for (const stream of yield* state.outs.values()) {
      if (stream.deadline !== undefined && stream.deadline < first) first = stream.deadline
    }
    if (first === Infinity) return yield* STM.retry
    return [first, version] as const
  })

  return Effect.forever(Effect.gen(function*() {
    const [deadline, version] = yield* earliest
    const now = yield* Clock.currentTimeMillis
    if (deadline > now) {
      // Sleep until the earliest deadline, or until a stream is armed that may expire sooner.
      yield* Effect.raceFirst(
        Effect.sleep(Duration.millis(Math.max(1, Math.ceil(deadline - now)))),
        STM.flatMap(TRef.get(state.deadlinesVersion), (current) => STM.check(() => current !== version))
      )
      return
    }
    yield* expire(now)
  }))
}
