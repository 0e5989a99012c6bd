/**
 * The send buffer: fresh messages kept between their append and their acknowledgement.
 */
import { assert, describe, it } from "@effect/vitest"
import { SendBuffer } from "../src/internal/engine/sendBuffer.js"
import * as Lane from "../src/Lane.js"
import * as StreamKey from "../src/StreamKey.js"
import { B } from "./helpers.js"

const key = StreamKey.make(B, Lane.defaultLane)
const bytes = (...values: Array<number>) => values.map((value) => Uint8Array.of(value, value))
const get = (buffer: SendBuffer, from: number, to: number) =>
  buffer.get(key, B, Lane.defaultLane, from, to)?.map((message) => [message.seq, message.run, message.payload[0]])

describe("send buffer", () => {
  it("gives back kept seqs across batches, and nothing when one is missing", () => {
    const buffer = new SendBuffer(1 << 20)
    buffer.add(key, 1, 9, bytes(1, 2, 3))
    buffer.add(key, 4, 9, bytes(4, 5))
    assert.deepStrictEqual(get(buffer, 2, 5), [[2, 9, 2], [3, 9, 3], [4, 9, 4], [5, 9, 5]])
    assert.isUndefined(get(buffer, 5, 6))
    assert.isUndefined(buffer.get(StreamKey.make(B, "other"), B, "other", 1, 1))
  })

  it("copies payloads, so a sender may reuse its buffers", () => {
    const payload = Uint8Array.of(1, 2, 3)
    const buffer = new SendBuffer(1 << 20)
    buffer.add(key, 1, 9, [payload])
    payload.fill(0)
    assert.deepStrictEqual(Array.from(buffer.get(key, B, Lane.defaultLane, 1, 1)![0]!.payload), [1, 2, 3])
  })

  it("forgets acknowledged seqs and frees their bytes", () => {
    const buffer = new SendBuffer(1 << 20)
    buffer.add(key, 1, 9, bytes(1, 2, 3))
    buffer.add(key, 4, 9, bytes(4, 5))
    const full = buffer.bytes
    buffer.release(key, 2)
    assert.isUndefined(get(buffer, 2, 3))
    assert.deepStrictEqual(get(buffer, 3, 5), [[3, 9, 3], [4, 9, 4], [5, 9, 5]])
    assert.isBelow(buffer.bytes, full)
    buffer.release(key, 5)
    assert.strictEqual(buffer.bytes, 0)
  })

  it("keeps nothing beyond its byte bound, and fills holes from the store", () => {
    const buffer = new SendBuffer(120)
    buffer.add(key, 1, 9, [new Uint8Array(40)])
    assert.isFalse(buffer.fits([new Uint8Array(80)]))
    buffer.add(key, 2, 9, [new Uint8Array(80)])
    assert.isDefined(get(buffer, 1, 1))
    assert.isUndefined(get(buffer, 2, 2))
    buffer.addStored(key, [
      { peer: B, lane: Lane.defaultLane, seq: 2, run: 8, payload: Uint8Array.of(7) },
      { peer: B, lane: Lane.defaultLane, seq: 3, run: 9, payload: Uint8Array.of(8) }
    ])
    assert.deepStrictEqual(get(buffer, 1, 3)?.map(([seq, run]) => [seq, run]), [[1, 9], [2, 8], [3, 9]])
    assert.isAtMost(buffer.bytes, 120)
  })

  it("forgets a whole stream", () => {
    const buffer = new SendBuffer(1 << 20)
    buffer.add(key, 1, 9, bytes(1, 2))
    buffer.forget(key)
    assert.strictEqual(buffer.bytes, 0)
    assert.isUndefined(get(buffer, 1, 1))
  })
})
