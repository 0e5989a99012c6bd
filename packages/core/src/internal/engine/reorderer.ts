/**
 * The inbox reorderer: starts a delivery worker for each inbound stream whose next message has arrived, one worker
 * per stream at a time, so a stream's messages reach the application in order and one at a time while different
 * streams deliver concurrently.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as FiberMap from "effect/FiberMap"
import * as STM from "effect/STM"
import type { StreamKey } from "../../StreamKey.js"
import * as DeliveryWorker from "./deliveryWorker.js"
import type { Env } from "./env.js"
import * as State from "./state.js"

export const make = (env: Env, workers: FiberMap.FiberMap<StreamKey>): Effect.Effect<never> => {
  const { state } = env

  /** Marks the ready streams busy and returns them: each gets a worker. */
  const claim = STM.gen(function*() {
    const ready = yield* State.takeAll(state.inReady, () => new Set())
    const claimed: Array<StreamKey> = []
    for (const key of ready) {
      const stream = yield* state.ins.get(key)
      if (stream === undefined || stream.busy) continue
      yield* state.ins.set(key, { ...stream, busy: true })
      claimed.push(key)
    }
    return claimed
  })

  return Effect.forever(
    Effect.flatMap(
      claim,
      (keys) =>
        Effect.forEach(keys, (key) => FiberMap.run(workers, key, DeliveryWorker.make(env, key)), { discard: true })
    )
  )
}
