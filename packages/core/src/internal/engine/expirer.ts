/**
 * The expirer: every `expiryCheckInterval`, asks the store to remove the messages whose time to live ran out, in
 * batches, and moves their streams past them (`drops`). A receiver never delivers an expired message whatever this
 * fiber does: it bounds how long one stays stored. A failing store is tried again at the next check.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Drops from "./drops.js"
import type { Env } from "./env.js"
import { yieldToEventLoop } from "./fairness.js"

export const make = (env: Env): Effect.Effect<never> => {
  const { backend, config } = env

  /** Removes one batch; whether the store may hold more that are due. */
  const removeBatch = Effect.gen(function*() {
    const removed = yield* backend.expire(yield* Clock.currentTimeMillis, config.maxBatch)
    yield* Drops.apply(env, removed, "expired")
    let count = 0
    for (const entry of removed) for (const range of entry.seqs) count += range.to - range.from + 1
    return count >= config.maxBatch
  })

  const sweep = Effect.gen(function*() {
    while (yield* removeBatch) yield* yieldToEventLoop
  }).pipe(Effect.catchAll((error) => Effect.logWarning("Could not remove expired messages", error)))

  return Effect.forever(Effect.zipRight(Effect.sleep(config.expiryCheckInterval), sweep))
}
