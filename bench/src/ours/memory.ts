/**
 * Scenario 7: memory of a sender holding a large backlog. The sender runs alone on TCP + SQLite (synchronous
 * NORMAL) and stores `messages` for a peer that never starts; the result is the process's peak RSS once all are
 * stored, and how fast they were stored. Nothing is delivered here, so the tally is not used: a message counts
 * as lost only if its send failed.
 */
import * as Effect from "effect/Effect"
import { payload, peakRssMiB, type Result } from "../Result.js"
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
    const [senderId, absentId] = peerIds(2, "peer-")
    const peers = yield* cluster({ _tag: "tcp-sqlite", synchronous: "NORMAL" }, [senderId!, absentId!])
    // Room for the whole backlog: the default limit would make `send` wait for an ack that never comes.
    const sender = yield* peers.start(senderId!, () => {}, { maxPendingPerPeer: messages + 1 })
    // The baseline (Node, the loaded modules, Effect, SQLite), to tell what the backlog itself costs.
    const rssBeforeMiB = process.memoryUsage().rss / 2 ** 20
    const start = performance.now()
    const stored = yield* sendMany(sender, messages, () => absentId!, (i) => payload(i, payloadBytes)).pipe(
      Effect.as(messages),
      // The whole run fails together; counting every message lost is the honest tally for a failure.
      Effect.catchAll(() => Effect.succeed(0))
    )
    const seconds = (performance.now() - start) / 1000
    return {
      messages,
      delivered: stored,
      lost: messages - stored,
      duplicated: 0,
      reordered: 0,
      seconds,
      perSecond: stored / seconds,
      peakRssMiB: peakRssMiB(),
      rssBeforeMiB
    }
  })))
