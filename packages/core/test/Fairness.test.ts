/**
 * Fairness on the real clock: a send loop that keeps the sender busy must not keep its timers from firing.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Frame from "@intersession/core/Frame"
import { InMemoryNetwork, TestPeer } from "@intersession/testing"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as HashSet from "effect/HashSet"
import * as Stream from "effect/Stream"
import { A, B, text } from "./helpers.js"

const decode = (frame: Uint8Array) => {
  const decoded = Frame.decode(frame, Number.MAX_SAFE_INTEGER)
  return Either.isRight(decoded) ? decoded.right : undefined
}

describe("fairness", () => {
  it.scopedLive("a retransmission timer fires while a send loop keeps the sender busy", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      // The first transmission of the one message in lane "lossy" is lost, and nothing follows it in its lane:
      // only the retransmission timer can bring it back.
      let lost = false
      yield* hub.setFaults({
        dropWhen: (bytes) => {
          const frame = decode(bytes)
          return frame?._tag === "Data" && frame.lane === "lossy" && !lost && (lost = true)
        }
      })
      const config = { retransmitInitial: "30 millis", retransmitMin: "30 millis", retransmitMax: "1 second" } as const
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a, config)
      yield* TestPeer.start(hub, b, config)
      yield* Stream.runDrain(Stream.takeUntil(ra.ilm.peers.changes, (peers) => HashSet.has(peers, B)))
      // A 10 ms timer of the application's, beside the engine's.
      let ticks = 0
      yield* Effect.forkScoped(Effect.forever(Effect.zipRight(Effect.sleep("10 millis"), Effect.sync(() => ticks++))))
      yield* ra.ilm.send(B, text("lost once"), { lane: "lossy" })
      // One awaited send at a time, as an application's loop would (the sender never waits for I/O): for a second,
      // and for 100 sends at least, however loaded the machine.
      const payload = new Uint8Array(64)
      const started = performance.now()
      let sent = 0
      while (performance.now() - started < 1000 || sent < 100) {
        yield* ra.ilm.send(B, payload)
        sent++
      }
      const lossy = (yield* ra.ilm.stats).outbound.find((stream) => stream.lane === "lossy")!
      const ticked = ticks
      assert.isTrue(lost)
      assert.isAbove(ticked, 5, "the application's timer ticked while the loop ran")
      assert.strictEqual(lossy.retransmitted, 1, "the retransmission timer resent the lost message while the loop ran")
      assert.strictEqual(lossy.ackedUpTo, 1, "and the receiver acknowledged it")
      yield* ra.ilm.drain("30 seconds")
      const received = (yield* b.recorder.messages).filter((message) => message.lane === "default")
      assert.strictEqual(received.length, sent)
      assert.isTrue(received.every((message, i) => message.seq === i + 1))
    }), 60_000)
})
