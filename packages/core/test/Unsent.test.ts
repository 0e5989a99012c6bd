/**
 * The pump's store of fresh messages: bounded, never answering with a partial range, copies of what was stored.
 */
import { assert, describe, it } from "@effect/vitest"
import type { StoredMessage } from "@intersession/core/Backend"
import * as PeerId from "@intersession/core/PeerId"
import { Unsent } from "../src/internal/unsent.js"

const peer = PeerId.make("B")
const message = (seq: number, bytes = 4): StoredMessage => ({
  peer,
  lane: "default",
  seq,
  run: 1,
  payload: new Uint8Array(bytes).fill(seq)
})
const add = (unsent: Unsent, seqs: ReadonlyArray<number>) => {
  for (const seq of seqs) unsent.add("s", message(seq), seq, 1)
}
const seqs = (messages: ReadonlyArray<StoredMessage> | undefined) => messages?.map((m) => m.seq)

describe("Unsent", () => {
  it("gives back a whole range once, in order, and nothing after", () => {
    const unsent = new Unsent(8, 1024)
    add(unsent, [1, 2, 3, 4])
    assert.deepStrictEqual(seqs(unsent.take("s", 2, 3)), [2, 3])
    assert.isUndefined(unsent.take("s", 2, 3))
    assert.deepStrictEqual(seqs(unsent.take("s", 1, 1)), [1])
  })

  it("answers a range with a gap with nothing, so the caller reads the store", () => {
    const unsent = new Unsent(8, 1024)
    add(unsent, [1, 2, 4])
    assert.isUndefined(unsent.take("s", 1, 4))
    assert.isUndefined(unsent.take("s", 4, 4))
  })

  it("keeps at most its bound per stream and in bytes", () => {
    const perStream = new Unsent(2, 1024)
    add(perStream, [1, 2, 3])
    assert.deepStrictEqual(seqs(perStream.take("s", 1, 2)), [1, 2])
    assert.isUndefined(perStream.take("s", 3, 3))
    const bytes = new Unsent(8, 10)
    add(bytes, [1, 2, 3])
    assert.deepStrictEqual(seqs(bytes.take("s", 1, 2)), [1, 2])
    assert.isUndefined(bytes.take("s", 3, 3))
    // What was taken frees its room.
    add(bytes, [3, 4])
    assert.deepStrictEqual(seqs(bytes.take("s", 3, 4)), [3, 4])
  })

  it("holds copies: the sender may reuse its buffer once the message is stored", () => {
    const unsent = new Unsent(8, 1024)
    const stored = message(1)
    unsent.add("s", stored, 1, 1)
    stored.payload.fill(9)
    assert.deepStrictEqual(Array.from(unsent.take("s", 1, 1)![0]!.payload), [1, 1, 1, 1])
  })

  it("drops what was acknowledged", () => {
    const unsent = new Unsent(8, 1024)
    add(unsent, [1, 2, 3])
    unsent.drop("s", 2)
    assert.isUndefined(unsent.take("s", 1, 2))
    assert.deepStrictEqual(seqs(unsent.take("s", 3, 3)), [3])
  })
})
