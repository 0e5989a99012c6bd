/**
 * Scenario 5: latency at a low fixed rate over TCP + SQLite (synchronous NORMAL). One message leaves every
 * 1/rate seconds on a fixed schedule; its latency runs from just before it is handed to the engine (the payload's
 * clock, the machine's wall clock) to the receiving application's delivery in the receiver's process.
 */
import * as Effect from "effect/Effect"
import * as HashSet from "effect/HashSet"
import * as Stream from "effect/Stream"
import { payload, type Result, resultOf } from "../Result.js"
import { cluster, peerIds } from "./peers.js"
import { sendMany } from "./send.js"

export interface Options {
  /** Measured time; a warm-up of `warmupSeconds` at the same rate comes first. */
  readonly seconds: number
  /** The first sends pay for JIT compilation and SQLite's first pages: their latency is not counted. */
  readonly warmupSeconds: number
  readonly ratePerSecond: number
  readonly payloadBytes?: number
}

/** After the last send, how long to wait for stragglers before counting them lost. */
const graceMillis = 30_000

export const run = (options: Options): Promise<Result> =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const warmup = Math.round(options.warmupSeconds * options.ratePerSecond)
    const messages = warmup + Math.round(options.seconds * options.ratePerSecond)
    const intervalMillis = 1000 / options.ratePerSecond
    const payloadBytes = options.payloadBytes ?? 128
    const [senderId, receiverId] = peerIds(2, "peer-")
    const peers = yield* cluster({ _tag: "tcp-sqlite", synchronous: "NORMAL" }, [senderId!, receiverId!])
    // The receiver runs in a process of its own, as deployed: in one process the two peers would take turns on
    // one event loop, and each message would wait for the other peer's work.
    const receiver = yield* peers.startProcess(receiverId!, { expected: messages, timedFrom: warmup })
    const sender = yield* peers.start(senderId!, () => {})
    yield* Stream.runDrain(Stream.takeUntil(sender.peers.changes, (linked) => HashSet.size(linked) === 1))

    const start = performance.now()
    for (let i = 0; i < messages; i++) {
      // Each send is due at a fixed offset from the start, so a late wake-up shortens the next wait instead of
      // shifting every later send: the rate holds over the run.
      const wait = start + i * intervalMillis - performance.now()
      if (wait > 0) yield* Effect.sleep(wait)
      // Forked: a send that takes longer than the interval (a slow disk write) must not delay the next one. A
      // failed send is never delivered, so the tally counts it lost.
      yield* Effect.forkScoped(Effect.ignore(sendMany(sender, 1, () => receiverId!, () => payload(i, payloadBytes))))
    }
    const report = yield* receiver.done.pipe(Effect.timeout(graceMillis))
    yield* sender.drain("30 seconds").pipe(Effect.ignore)
    const seconds = (performance.now() - start) / 1000
    return resultOf(messages, [report], seconds, {
      latencyP50Millis: report.latencyP50Micros / 1000,
      latencyP99Millis: report.latencyP99Micros / 1000
    })
  })))
