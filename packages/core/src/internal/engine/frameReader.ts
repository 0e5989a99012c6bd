/**
 * The frame reader: the one place inbound bytes are decoded. It checks each frame against the transport-level
 * peer it came from, hands `Hello`s to the greeting in order, and takes the `Data`, `Skip` and `Ack` frames between them
 * in one transaction per batch. When the network's inbound stream ends, so does the reader, and the engine with it.
 *
 * @internal
 */
import type * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as STM from "effect/STM"
import * as Stream from "effect/Stream"
import * as Frame from "../../Frame.js"
import type { Inbound } from "../../Network.js"
import * as StreamKey from "../../StreamKey.js"
import type { Env } from "./env.js"
import { yieldToEventLoop } from "./fairness.js"
import type { Greeting } from "./greeting.js"
import * as Receive from "./receive.js"
import * as Report from "./report.js"

export const make = (env: Env, greeting: Greeting): Effect.Effect<void> => {
  const take = (batch: Array<Frame.Data | Frame.Skip | Frame.Ack>) =>
    batch.length === 0 ? Effect.void : Effect.gen(function*() {
      yield* env.state.ins.ensure(inboundKeys(batch))
      const now = yield* Clock.currentTimeMillis
      const report = Report.make()
      const effects = yield* STM.commit(Receive.apply(env, batch.splice(0), now, report))
      yield* Receive.release(env, effects)
      yield* env.publish(report)
      for (const peer of report.unknownSessions) yield* greeting.ask(peer)
    })

  const handle = (chunk: Chunk.Chunk<Inbound>) =>
    Effect.gen(function*() {
      const batch: Array<Frame.Data | Frame.Skip | Frame.Ack> = []
      const report = Report.make()
      for (const inbound of chunk) {
        const decoded = Frame.decodeRecord(inbound.frame, env.config.maxPayloadBytes)
        if (Either.isLeft(decoded)) {
          Report.reject(report, inbound.from, decoded.left.reason, decoded.left.detail)
          continue
        }
        const frame = decoded.right
        if (frame.from !== inbound.from) {
          Report.reject(report, inbound.from, "spoofed-source", `frame claims source ${frame.from}`)
        } else if (frame.to !== env.self) {
          Report.reject(report, inbound.from, "wrong-destination", `frame addressed to ${frame.to}`)
        } else if (frame._tag === "Hello") {
          yield* take(batch)
          yield* greeting.receive(frame)
        } else {
          batch.push(frame)
        }
      }
      yield* take(batch)
      yield* env.publish(report)
      yield* yieldToEventLoop
    })

  return Stream.runForEachChunk(env.network.inbound, handle)
}

/** The inbound streams a batch carries data of, each once. */
const inboundKeys = (batch: ReadonlyArray<Frame.Data | Frame.Skip | Frame.Ack>): Set<StreamKey.StreamKey> => {
  const keys = new Set<StreamKey.StreamKey>()
  let last: Frame.Data | Frame.Skip | undefined
  for (const frame of batch) {
    if (frame._tag === "Ack" || (last !== undefined && last.from === frame.from && last.lane === frame.lane)) continue
    keys.add(StreamKey.make(frame.from, frame.lane))
    last = frame
  }
  return keys
}
