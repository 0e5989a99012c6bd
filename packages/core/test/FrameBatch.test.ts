/**
 * The `Data` frames of one transmission, encoded together, are exactly the frames encoded one by one; so is a
 * `Skip` encoded from a transmission's header.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Frame from "@intersession/core/Frame"
import * as Incarnation from "@intersession/core/Incarnation"
import * as PeerId from "@intersession/core/PeerId"
import * as Either from "effect/Either"

describe("Data frames of one transmission", () => {
  it("are the frames encode gives one by one, in views on one buffer", () => {
    for (const [from, lane] of [["A", "default"], ["ünïcödé peer", "läne"]] as const) {
      const header = {
        from: PeerId.make(from),
        to: PeerId.make("B"),
        lane,
        incarnation: Incarnation.Incarnation.make(2 ** 40 + 7),
        session: 300,
        floor: 129
      }
      // Some with a time to live (0 included), some without; some with a trace context, with a ttl or without.
      const ttls = [undefined, 0, 127, undefined, 2 ** 40]
      const trace = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", sampled: true }
      const traces = [undefined, trace, undefined, { ...trace, sampled: false }, undefined]
      const messages = [0, 1, 127, 128, 70_000].map((size, i) => ({
        run: 5 + i * 1000,
        seq: 129 + i * 100,
        ...(ttls[i] === undefined ? {} : { ttl: ttls[i] }),
        ...(traces[i] === undefined ? {} : { trace: traces[i] }),
        payload: new Uint8Array(size).fill(i + 1)
      }))
      const frames = Frame.encodeData(header, messages)
      assert.strictEqual(frames.length, messages.length)
      frames.forEach((frame, i) => {
        const single = Frame.encode({ _tag: "Data", ...header, ...messages[i]! })
        assert.deepStrictEqual(Array.from(frame), Array.from(single))
        assert.strictEqual(frame.buffer, frames[0]!.buffer)
        const decoded = Frame.decode(frame, 1 << 20)
        assert.isTrue(Either.isRight(decoded) && decoded.right._tag === "Data" && decoded.right.ttl === ttls[i])
        assert.deepStrictEqual(
          Either.isRight(decoded) && decoded.right._tag === "Data" ? decoded.right.trace : 0,
          traces[i]
        )
      })
    }
  })

  it("a Skip encoded from the header is the Skip encode gives", () => {
    for (const [from, lane] of [["A", "default"], ["ünïcödé peer", "läne"]] as const) {
      const header = {
        from: PeerId.make(from),
        to: PeerId.make("B"),
        lane,
        incarnation: Incarnation.Incarnation.make(2 ** 40 + 7),
        session: 300,
        floor: 129
      }
      for (
        const skip of [
          { run: 5, seq: 129, last: 129, reason: "expired" as const },
          { run: 2 ** 33, seq: 200, last: 2 ** 50, reason: "purged" as const }
        ]
      ) {
        const single = Frame.encode(new Frame.Skip({ ...header, ...skip }))
        assert.deepStrictEqual(Array.from(Frame.encodeSkip(header, skip)), Array.from(single))
      }
    }
  })
})
