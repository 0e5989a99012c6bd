import { assert, describe, it } from "@effect/vitest"
import * as Frame from "@intersession/core/Framing"

const bodies = [
  new Uint8Array(0),
  Uint8Array.of(0),
  Uint8Array.from({ length: 300 }, (_, i) => i & 0xff),
  Uint8Array.from({ length: 70_000 }, (_, i) => (i * 7) & 0xff)
]

const concat = (parts: ReadonlyArray<Uint8Array>) => {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0))
  let at = 0
  for (const part of parts) {
    out.set(part, at)
    at += part.length
  }
  return out
}

/** Feeds `bytes` in chunks of `size` and returns every frame (or the error) the decoder gives. */
const decodeInChunks = (bytes: Uint8Array, size: number, limit = 1 << 20) => {
  const decoder = new Frame.FrameDecoder(limit)
  const out: Array<Frame.Frame | Frame.FrameError> = []
  for (let at = 0; at < bytes.length; at += size) {
    decoder.push(bytes.subarray(at, at + size))
    for (let next = decoder.next(); next !== undefined; next = decoder.next()) {
      out.push(next)
      if (next instanceof Frame.FrameError) return out
    }
  }
  return out
}

describe("frames", () => {
  it("decode whatever the chunking, with exactly their bytes and type", () => {
    const wire = concat(Frame.encodeAll(Frame.FrameType.Data, bodies, 1 << 30))
    for (const size of [1, 2, 3, 4, 5, 7, 64, 1000, 65_536, wire.length]) {
      const frames = decodeInChunks(wire, size)
      assert.strictEqual(frames.length, bodies.length, `chunks of ${size}`)
      frames.forEach((frame, i) => {
        assert.notInstanceOf(frame, Frame.FrameError)
        if (frame instanceof Frame.FrameError) return
        assert.strictEqual(frame.type, Frame.FrameType.Data)
        assert.deepStrictEqual(Array.from(frame.body), Array.from(bodies[i]!), `frame ${i} in chunks of ${size}`)
      })
    }
  })

  it("a frame inside one chunk is a view on it; a split frame is copied", () => {
    const wire = Frame.encode(Frame.FrameType.Data, Uint8Array.of(1, 2, 3))
    const whole = decodeInChunks(wire, wire.length)[0] as Frame.Frame
    assert.strictEqual(whole.body.buffer, wire.buffer)
    const split = decodeInChunks(wire, 6)[0] as Frame.Frame
    assert.notStrictEqual(split.body.buffer, wire.buffer)
    assert.deepStrictEqual(Array.from(split.body), [1, 2, 3])
  })

  it("a header over the limit fails before the body arrives", () => {
    const decoder = new Frame.FrameDecoder(10)
    decoder.push(Frame.encode(Frame.FrameType.Data, new Uint8Array(11)).subarray(0, 4))
    const result = decoder.next()
    assert.instanceOf(result, Frame.FrameError)
    assert.strictEqual((result as Frame.FrameError).reason, "FrameTooLarge")
    // The decoder stays failed: nothing after the error is read as frames.
    decoder.push(Frame.encode(Frame.FrameType.Ping))
    assert.instanceOf(decoder.next(), Frame.FrameError)
  })

  it("a frame at the limit passes; a length of 0 is malformed", () => {
    assert.strictEqual(
      (decodeInChunks(Frame.encode(Frame.FrameType.Data, new Uint8Array(10)), 3, 10)[0] as Frame.Frame).body.length,
      10
    )
    const zero = decodeInChunks(Uint8Array.of(0, 0, 0, 0, 9), 5)[0]
    assert.instanceOf(zero, Frame.FrameError)
    assert.strictEqual((zero as Frame.FrameError).reason, "Malformed")
  })

  it("the limit can change between frames", () => {
    const decoder = new Frame.FrameDecoder(4)
    decoder.push(concat([Frame.encode(Frame.FrameType.Ready), Frame.encode(Frame.FrameType.Data, new Uint8Array(100))]))
    assert.strictEqual((decoder.next() as Frame.Frame).type, Frame.FrameType.Ready)
    decoder.limit = 100
    assert.strictEqual((decoder.next() as Frame.Frame).body.length, 100)
    assert.isUndefined(decoder.next())
  })

  it("encodeAll packs frames into buffers of at most maxBytes, a larger frame alone", () => {
    const buffers = Frame.encodeAll(Frame.FrameType.Data, [
      new Uint8Array(10),
      new Uint8Array(10),
      new Uint8Array(50),
      new Uint8Array(1)
    ], 40)
    assert.deepStrictEqual(buffers.map((buffer) => buffer.length), [30, 55, 6])
    const frames = decodeInChunks(concat(buffers), 1)
    assert.deepStrictEqual(frames.map((frame) => (frame as Frame.Frame).body.length), [10, 10, 50, 1])
  })
})
