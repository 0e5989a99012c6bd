/**
 * The send buffer: fresh messages kept between their append and their acknowledgement.
 */
import { assert, describe, it } from "@effect/vitest"
import { maxTraced, SendBuffer } from "../src/internal/engine/sendBuffer.js"
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
    buffer.add(key, 1, 9, bytes(1, 2, 3), undefined)
    buffer.add(key, 4, 9, bytes(4, 5), undefined)
    assert.deepStrictEqual(get(buffer, 2, 5), [[2, 9, 2], [3, 9, 3], [4, 9, 4], [5, 9, 5]])
    assert.isUndefined(get(buffer, 5, 6))
    assert.isUndefined(buffer.get(StreamKey.make(B, "other"), B, "other", 1, 1))
  })

  it("copies payloads, so a sender may reuse its buffers", () => {
    const payload = Uint8Array.of(1, 2, 3)
    const buffer = new SendBuffer(1 << 20)
    buffer.add(key, 1, 9, [payload], undefined)
    payload.fill(0)
    assert.deepStrictEqual(Array.from(buffer.get(key, B, Lane.defaultLane, 1, 1)![0]!.payload), [1, 2, 3])
  })

  it("forgets acknowledged seqs and frees their bytes", () => {
    const buffer = new SendBuffer(1 << 20)
    buffer.add(key, 1, 9, bytes(1, 2, 3), undefined)
    buffer.add(key, 4, 9, bytes(4, 5), undefined)
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
    buffer.add(key, 1, 9, [new Uint8Array(40)], undefined)
    assert.isFalse(buffer.fits([new Uint8Array(80)]))
    buffer.add(key, 2, 9, [new Uint8Array(80)], undefined)
    assert.isDefined(get(buffer, 1, 1))
    assert.isUndefined(get(buffer, 2, 2))
    buffer.addStored(key, [
      { peer: B, lane: Lane.defaultLane, seq: 2, run: 8, payload: Uint8Array.of(7) },
      { peer: B, lane: Lane.defaultLane, seq: 3, run: 9, payload: Uint8Array.of(8) }
    ])
    assert.deepStrictEqual(get(buffer, 1, 3)?.map(([seq, run]) => [seq, run]), [[1, 9], [2, 8], [3, 9]])
    assert.isAtMost(buffer.bytes, 120)
  })

  it("keeps each message's expiry, and gives none back for a message that never expires", () => {
    const buffer = new SendBuffer(1 << 20)
    buffer.add(key, 1, 9, bytes(1, 2), 5000)
    buffer.add(key, 3, 9, bytes(3), undefined)
    const messages = buffer.get(key, B, Lane.defaultLane, 1, 3)!
    assert.deepStrictEqual(messages.map((message) => message.expiresAt), [5000, 5000, undefined])
    assert.isFalse("expiresAt" in messages[2]!, "no expiresAt key for a message that never expires")
    // An expiry of 0 is an expiry.
    buffer.add(key, 4, 9, bytes(4), 0)
    assert.strictEqual(buffer.get(key, B, Lane.defaultLane, 4, 4)![0]!.expiresAt, 0)
  })

  it("keeps messages read back with holes as stretches, and gives back none across a hole", () => {
    const buffer = new SendBuffer(1 << 20)
    const stored = (seq: number, run = 9, expiresAt?: number) => ({
      peer: B,
      lane: Lane.defaultLane,
      seq,
      run,
      payload: Uint8Array.of(seq, seq),
      ...(expiresAt === undefined ? {} : { expiresAt })
    })
    // Seq 3 and 6 were dropped; 7 … 9 change expiry once, and run once.
    buffer.addStored(key, [
      stored(1),
      stored(2),
      stored(4),
      stored(5),
      stored(7, 9, 100),
      stored(8, 9, 100),
      stored(9, 9, 200),
      stored(10, 11, 200)
    ])
    assert.deepStrictEqual(get(buffer, 1, 2), [[1, 9, 1], [2, 9, 2]])
    assert.deepStrictEqual(get(buffer, 4, 5), [[4, 9, 4], [5, 9, 5]])
    assert.deepStrictEqual(get(buffer, 7, 10), [[7, 9, 7], [8, 9, 8], [9, 9, 9], [10, 11, 10]])
    assert.deepStrictEqual(
      buffer.get(key, B, Lane.defaultLane, 7, 10)!.map((message) => message.expiresAt),
      [100, 100, 200, 200]
    )
    // Not one message of seq 3 or 6 is made up from its neighbours.
    assert.isUndefined(get(buffer, 3, 3))
    assert.isUndefined(get(buffer, 6, 6))
    assert.isUndefined(get(buffer, 1, 5))
    assert.isUndefined(get(buffer, 5, 7))
    assert.isUndefined(get(buffer, 2, 4))
    // An acknowledgement past a hole frees what it covers and keeps the rest.
    const full = buffer.bytes
    buffer.release(key, 3)
    assert.isBelow(buffer.bytes, full)
    assert.isUndefined(get(buffer, 2, 2))
    assert.deepStrictEqual(get(buffer, 4, 5), [[4, 9, 4], [5, 9, 5]])
    buffer.release(key, 6)
    assert.deepStrictEqual(get(buffer, 7, 7), [[7, 9, 7]])
    buffer.release(key, 10)
    assert.strictEqual(buffer.bytes, 0)
  })

  it("a hole at the start of a read back, and a single message between holes", () => {
    const buffer = new SendBuffer(1 << 20)
    const stored = (seq: number) => ({ peer: B, lane: Lane.defaultLane, seq, run: 9, payload: Uint8Array.of(seq) })
    buffer.addStored(key, [stored(3), stored(5), stored(7), stored(8)])
    assert.deepStrictEqual(get(buffer, 3, 3), [[3, 9, 3]])
    assert.deepStrictEqual(get(buffer, 5, 5), [[5, 9, 5]])
    assert.deepStrictEqual(get(buffer, 7, 8), [[7, 9, 7], [8, 9, 8]])
    assert.isUndefined(get(buffer, 1, 3))
    assert.isUndefined(get(buffer, 4, 4))
    buffer.addStored(key, [])
    assert.deepStrictEqual(get(buffer, 7, 8), [[7, 9, 7], [8, 9, 8]])
  })

  it("a read back spanning a dropped seq keeps no second copy of the messages it holds already", () => {
    const buffer = new SendBuffer(1 << 20)
    const read = [1, 2, 4, 5].map((seq) => ({
      peer: B,
      lane: Lane.defaultLane,
      seq,
      run: 9,
      payload: new Uint8Array(100)
    }))
    buffer.addStored(key, read)
    const once = buffer.bytes
    // Seq 3 was dropped: the pump's request misses the buffer, and it reads the same messages back again.
    assert.isUndefined(buffer.get(key, B, Lane.defaultLane, 1, 5))
    buffer.addStored(key, read)
    assert.strictEqual(buffer.bytes, once)
    assert.deepStrictEqual(get(buffer, 4, 5), [[4, 9, 0], [5, 9, 0]])
  })

  it("keeps the trace context of each traced call until acknowledged, for messages it keeps or not", () => {
    const buffer = new SendBuffer(1 << 20)
    const one = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", sampled: true }
    const two = { ...one, spanId: "00f067aa0ba902b8" }
    const traces = (messages: ReadonlyArray<{ readonly trace?: unknown }> | undefined) =>
      messages?.map((message) => message.trace)
    buffer.add(key, 1, 9, bytes(1, 2), undefined)
    buffer.trace(key, 1, 9, 2, one)
    buffer.add(key, 3, 9, bytes(3), undefined)
    buffer.trace(key, 4, 9, 2, two)
    assert.deepStrictEqual(traces(buffer.get(key, B, Lane.defaultLane, 1, 3)), [one, one, undefined])
    assert.isFalse("trace" in buffer.get(key, B, Lane.defaultLane, 3, 3)![0]!, "no trace key when there is none")
    // Seqs 4 and 5 were not kept (their peer was away): read back from the store, they still carry theirs, but a
    // message of another run (read after a restart) does not.
    const stored = (seq: number, run: number) => ({
      peer: B,
      lane: Lane.defaultLane,
      seq,
      run,
      payload: bytes(seq)[0]!
    })
    assert.deepStrictEqual(traces(buffer.withTraces(key, [stored(4, 9), stored(5, 9), stored(6, 9)])), [
      two,
      two,
      undefined
    ])
    assert.deepStrictEqual(traces(buffer.withTraces(key, [stored(4, 8)])), [undefined])
    // An acknowledgement frees the contexts of calls it covers entirely.
    buffer.release(key, 4)
    assert.deepStrictEqual(traces(buffer.withTraces(key, [stored(5, 9)])), [two])
    buffer.release(key, 5)
    assert.deepStrictEqual(traces(buffer.withTraces(key, [stored(5, 9)])), [undefined])
  })

  it("keeps at most maxTraced calls' trace contexts, and takes new ones once acknowledgements free room", () => {
    const buffer = new SendBuffer(1 << 20)
    const context = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", sampled: true }
    for (let seq = 1; seq <= maxTraced + 1; seq++) buffer.trace(key, seq, 9, 1, context)
    const at = (seq: number) =>
      buffer.withTraces(key, [{ peer: B, lane: Lane.defaultLane, seq, run: 9, payload: new Uint8Array(0) }])[0]!.trace
    assert.deepStrictEqual(at(maxTraced), context)
    assert.isUndefined(at(maxTraced + 1), "one call too many carries none")
    buffer.release(key, 1)
    buffer.trace(key, maxTraced + 2, 9, 1, context)
    assert.deepStrictEqual(at(maxTraced + 2), context)
    buffer.forget(key)
    assert.isUndefined(at(maxTraced + 2))
  })

  it("forgets a whole stream", () => {
    const buffer = new SendBuffer(1 << 20)
    buffer.add(key, 1, 9, bytes(1, 2), undefined)
    buffer.forget(key)
    assert.strictEqual(buffer.bytes, 0)
    assert.isUndefined(get(buffer, 1, 1))
  })
})
