/**
 * The receiver process of `remote.ts`: one peer of a TCP cluster, counting what it receives.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { ageMicros, indexOf, percentile, Tally } from "../Result.js"
import { tcpPeer } from "./peers.js"
import type { Arguments, Report } from "./remote.js"

const { id, options, setup } = JSON.parse(process.argv[2] ?? "{}") as Arguments
const tally = new Tally(options.expected)
const timedFrom = options.timedFrom ?? 0
const latencies: Array<number> = []

const receive = (payload: Uint8Array) => {
  const index = indexOf(payload)
  if (index >= timedFrom) latencies.push(ageMicros(payload))
  tally.record(index)
}

const closed = new Promise<void>((resolve) => process.stdin.on("end", resolve).resume())
const stdinClosed = Effect.promise(() => closed)

await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
  yield* Layer.build(tcpPeer(setup, id, (message) => receive(message.payload), options.config))
  process.stdout.write("READY\n")
  yield* Effect.promise(() => tally.whenComplete()).pipe(Effect.raceFirst(stdinClosed))
  const report: Report = {
    delivered: tally.delivered,
    duplicated: tally.duplicated,
    reordered: tally.reordered,
    firstDeliveryAt: tally.firstDeliveryAt,
    latencyP50Micros: percentile(latencies, 0.5),
    latencyP99Micros: percentile(latencies, 0.99)
  }
  process.stdout.write(`DONE ${JSON.stringify(report)}\n`)
  yield* stdinClosed
})))
