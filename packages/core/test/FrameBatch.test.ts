/**
 * The `Data` frames of one transmission, encoded together, are exactly the frames encoded one by one.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Frame from "@intersession/core/Frame"
import * as Incarnation from "@intersession/core/Incarnation"
import * as PeerId from "@intersession/core/PeerId"

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
      const messages = [0, 1, 127, 128, 70_000].map((size, i) => ({
        run: 5 + i * 1000,
        seq: 129 + i * 100,
        payload: new Uint8Array(size).fill(i + 1)
      }))
      const frames = Frame.encodeData(header, messages)
      assert.strictEqual(frames.length, messages.length)
      frames.forEach((frame, i) => {
        const single = Frame.encode({ _tag: "Data", ...header, ...messages[i]! })
        assert.deepStrictEqual(Array.from(frame), Array.from(single))
        assert.strictEqual(frame.buffer, frames[0]!.buffer)
      })
    }
  })
})
