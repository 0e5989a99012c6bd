/**
 * Scenario 6: a backlog for a peer that is not running. The sender stores every message for it first (TCP +
 * SQLite NORMAL); then the receiver starts, and the clock runs from its start until it has every message and the
 * sender has every acknowledgement. Compared with scenario 2, this shows whether a backlog drains at the
 * steady-state rate.
 */
import * as Effect from "effect/Effect"
import { indexOf, payload, type Result, resultOf, Tally } from "../Result.js"
import { cluster, peerIds } from "./peers.js"
import { sendMany } from "./send.js"

export interface Options {
  readonly messages: number
  readonly payloadBytes?: number
}

export const run = (options: Options): Promise<Result> =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const { messages } = options
    const payloadBytes = options.payloadBytes ?? 128
    const [senderId, receiverId] = peerIds(2, "peer-")
    const peers = yield* cluster({ _tag: "tcp-sqlite", synchronous: "NORMAL" }, [senderId!, receiverId!])
    const sender = yield* peers.start(senderId!, () => {})
    // Resolves once every message is stored: the backlog is complete before the receiver exists.
    const storing = performance.now()
    yield* sendMany(sender, messages, () => receiverId!, (i) => payload(i, payloadBytes))
    const storeSeconds = (performance.now() - storing) / 1000

    const tally = new Tally(messages)
    const start = performance.now()
    yield* peers.start(receiverId!, (message) => tally.record(indexOf(message.payload)))
    yield* Effect.promise(() => tally.whenComplete())
    yield* sender.drain("10 minutes")
    const seconds = (performance.now() - start) / 1000
    process.stderr.write(
      `backlog: stored ${messages} in ${storeSeconds.toFixed(2)} s, drained in ${seconds.toFixed(2)} s\n`
    )
    return resultOf(messages, [tally], seconds)
  })))
