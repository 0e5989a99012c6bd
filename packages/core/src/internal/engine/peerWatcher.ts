/**
 * The peer watcher: follows the network's set of reachable peers and tells the greeting who came and who went.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as HashSet from "effect/HashSet"
import * as Stream from "effect/Stream"
import type { PeerId } from "../../PeerId.js"
import type { Env } from "./env.js"
import type { Greeting } from "./greeting.js"

export const make = (env: Env, greeting: Greeting): Effect.Effect<void> =>
  Effect.suspend(() => {
    let known = HashSet.empty<PeerId>()
    return Stream.runForEach(env.network.connected.changes, (current) =>
      Effect.gen(function*() {
        for (const peer of HashSet.difference(known, current)) yield* greeting.disconnect(peer)
        for (const peer of HashSet.difference(current, known)) {
          if (peer !== env.self) yield* greeting.connect(peer)
        }
        known = current
      }))
  })
