/**
 * The ack sender: sends the acknowledgements receivers queued, all waiting ones at once, one write per peer. With
 * an `ackDelay` it first waits that long, so that later deliveries coalesce into the same acknowledgement.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as STM from "effect/STM"
import * as TRef from "effect/TRef"
import * as Frame from "../../Frame.js"
import type { PeerId } from "../../PeerId.js"
import type { Env } from "./env.js"
import { yieldToEventLoop } from "./fairness.js"
import * as State from "./state.js"

export const make = (env: Env): Effect.Effect<never> => {
  const { config, state } = env
  const delayed = Duration.greaterThan(config.ackDelay, Duration.zero)
  const someQueued = STM.flatMap(TRef.get(state.acksToSend), (all) => STM.check(() => all.size > 0))
  return Effect.forever(Effect.gen(function*() {
    if (delayed) {
      yield* someQueued
      yield* Effect.sleep(config.ackDelay)
    }
    const acks = yield* State.takeAll(state.acksToSend, () => new Map())
    const byPeer = new Map<PeerId, Array<Uint8Array>>()
    for (const ack of acks.values()) {
      const frame = Frame.encode({
        _tag: "Ack",
        from: env.self,
        to: ack.peer,
        lane: ack.lane,
        incarnation: ack.incarnation,
        upTo: ack.upTo
      })
      let frames = byPeer.get(ack.peer)
      if (frames === undefined) byPeer.set(ack.peer, frames = [])
      for (let copy = 0; copy < ack.copies; copy++) frames.push(frame)
    }
    for (const [peer, frames] of byPeer) yield* env.sendFrames(peer, frames)
    yield* yieldToEventLoop
  }))
}
