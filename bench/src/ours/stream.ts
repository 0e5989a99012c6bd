/**
 * One sender streaming to one or more receivers: the throughput cases (scenarios 1–4 and 8–10).
 */
import * as Effect from "effect/Effect"
import * as HashSet from "effect/HashSet"
import * as Stream from "effect/Stream"
import { type Counts, indexOf, payload, type Result, resultOf, Tally } from "../Result.js"
import { cluster, peerIds, type Transport } from "./peers.js"
import { sendMany, type SendOptions } from "./send.js"

export interface Options {
  readonly transport: Transport
  /** Messages to each receiver. */
  readonly messages: number
  readonly payloadBytes: number
  readonly receivers?: number | undefined
  readonly window?: number | undefined
  readonly send?: SendOptions | undefined
  /** Each receiver in a process of its own (TCP only), as deployed: the sender and the receivers share no CPU. */
  readonly receiverProcesses?: boolean | undefined
  /** Report when the first message was delivered and when the send loop returned, from the first send. */
  readonly timeFirstDelivery?: boolean | undefined
}

export const run = (options: Options): Promise<Result> =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const receivers = options.receivers ?? 1
    const [senderId, ...receiverIds] = peerIds(receivers + 1, "peer-")
    const config = options.window === undefined ? {} : { window: options.window }
    const peers = yield* cluster(options.transport, [senderId!, ...receiverIds])
    // Each receiver, here or in a process of its own, with what it counted once it has every message.
    const receiving: Array<Effect.Effect<Counts>> = []
    for (const id of receiverIds) {
      if (options.receiverProcesses === true) {
        receiving.push((yield* peers.startProcess(id, { expected: options.messages, config })).done)
      } else {
        const tally = new Tally(options.messages)
        yield* peers.start(id, (message) => tally.record(indexOf(message.payload)), config)
        receiving.push(Effect.as(Effect.promise(() => tally.whenComplete()), tally))
      }
    }
    const sender = yield* peers.start(senderId!, () => {}, config)
    // Wait until the sender is linked to every receiver, so the clock measures messaging, not connecting.
    yield* Stream.runDrain(Stream.takeUntil(sender.peers.changes, (linked) => HashSet.size(linked) === receivers))
    const start = performance.now()
    const total = options.messages * receivers
    yield* sendMany(
      sender,
      total,
      (i) => receiverIds[i % receivers]!,
      (i) => payload(Math.floor(i / receivers), options.payloadBytes),
      options.send
    )
    const sendLoopMillis = performance.now() - start
    const counts = yield* Effect.all(receiving)
    yield* sender.drain("10 minutes")
    const seconds = (performance.now() - start) / 1000
    // Deliveries are stamped on the wall clock (`Result.wallClockMillis`), the one clock a receiver process shares.
    const firstAt = Math.min(...counts.map((count) => count.firstDeliveryAt ?? Number.NaN))
    const firstDeliveryMillis = firstAt - (performance.timeOrigin + start)
    return resultOf(
      total,
      counts,
      seconds,
      options.timeFirstDelivery === true ? { firstDeliveryMillis, sendLoopMillis } : {}
    )
  })))
