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
import * as TMap from "effect/TMap"
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
      for (const [key, deadline] of yield* TMap.toArray(state.deadlines)) {
        if (deadline > now) continue
        yield* TMap.remove(state.deadlines, key)
        const stream = yield* State.getOrUndefined(state.outs, key)
        if (stream === undefined || Outbound.inFlight(stream) === 0) continue
        yield* TMap.set(state.outs, key, Outbound.rewind(stream))
        ready.push(key)
        if (backedOff.has(stream.peer)) continue
        backedOff.add(stream.peer)
        const peer = yield* env.peerLink(stream.peer)
        yield* TMap.set(state.peers, peer.peer, { ...peer, rtt: Rtt.backoff(peer.rtt, env.rttBounds) })
      }
      yield* State.addAll(state.outReady, ready)
    })

  /** The earliest deadline and the version it was read at; waits while no deadline is armed. */
  const earliest = STM.gen(function*() {
    const all = yield* TMap.values(state.deadlines)
    if (all.length === 0) return yield* STM.retry
    return [Math.min(...all), yield* TRef.get(state.deadlinesVersion)] as const
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
