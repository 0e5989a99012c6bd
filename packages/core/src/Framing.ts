/**
 * The length-prefixed framing of the stream networks (TCP and WebSocket between Node peers, and a browser's
 * WebSocket client): shared here so that every platform reads and writes the same bytes.
 *
 * A frame on the wire is a 4-byte big-endian length `n`, then `n` bytes: one type byte and `n - 1` bytes of body.
 * The same byte stream runs over a TCP connection and over the binary messages of a WebSocket (one `send` is one
 * message holding whole frames), so one decoder serves both. Once a link is protected, the stream holds sealed
 * records instead, each a 4-byte length and that many bytes, which the decoder reads with `unit: "record"`.
 *
 * This is the layout for network implementations; an application never needs it.
 *
 * @since 0.3.0
 */
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"

/**
 * The size of a frame's length header.
 *
 * @since 0.3.0
 */
export const headerSize = 4

/** The largest length a 4-byte header can state. */
const maxLength = 0xffff_ffff

/**
 * Frame types. Handshake frames come first on every connection; `Data` and `Ping` only after it.
 *
 * @since 0.3.0
 */
export const FrameType = {
  Hello: 0x01,
  Challenge: 0x02,
  Proof: 0x03,
  Ready: 0x04,
  Verdict: 0x05,
  ClientHello: 0x06,
  ServerHello: 0x07,
  Credentials: 0x08,
  Welcome: 0x09,
  Refused: 0x0a,
  Data: 0x10,
  Ping: 0x11
} as const

/**
 * @since 0.3.0
 */
export type FrameType = (typeof FrameType)[keyof typeof FrameType]

/**
 * One frame: its type byte and its body.
 *
 * @since 0.3.0
 */
export interface Frame {
  readonly type: number
  readonly body: Uint8Array
}

/**
 * Why a byte stream cannot be read as frames. The connection that carried it is closed.
 *
 * @since 0.3.0
 */
export class FrameError extends Data.TaggedError("FrameError")<{
  readonly reason: "FrameTooLarge" | "Malformed"
  readonly detail: string
}> {
  override get message(): string {
    return `${this.reason}: ${this.detail}`
  }
}

/**
 * Reads frames from a byte stream that arrives in chunks of any size. A frame that sits inside one chunk is
 * returned as a view on it; a frame split across chunks is copied once into a buffer of its exact size.
 *
 * `limit` is the largest body accepted, checked against the header as soon as it is read, so an oversized frame is
 * refused before its body arrives. It can change between frames (a small limit until the handshake is done).
 *
 * With `unit: "record"` it reads the sealed records of a protected link (`linkCipher.ts`) instead: the same 4-byte
 * length, then that many bytes, returned whole by `nextContent`; `limit` is then the largest length accepted, and a
 * record of length 0 is left for authentication to refuse.
 *
 * @since 0.3.0
 */
export class FrameDecoder {
  private readonly chunks: Array<Uint8Array> = []
  /** Read position in `chunks[0]`. */
  private offset = 0
  private buffered = 0
  private readonly header = new Uint8Array(headerSize)
  private headerFill = 0
  /** The frame being assembled from several chunks, with the bytes filled so far. */
  private partial: Uint8Array | undefined = undefined
  private partialFill = 0
  private failed: FrameError | undefined = undefined

  /**
   * `limit`: the largest body (or, reading records, the largest record) accepted.
   */
  constructor(public limit: number, private readonly unit: "frame" | "record" = "frame") {}

  /**
   * Adds bytes as they arrive.
   *
   * @since 0.3.0
   */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0 || this.failed !== undefined) return
    this.chunks.push(chunk)
    this.buffered += chunk.length
  }

  /**
   * Bytes received but not yet returned as frames.
   *
   * @since 0.3.0
   */
  get pending(): number {
    return this.buffered + this.headerFill + this.partialFill
  }

  /**
   * The next complete frame, `undefined` when more bytes are needed, or the error that ends the stream.
   *
   * @since 0.3.0
   */
  next(): Frame | FrameError | undefined {
    const content = this.nextContent()
    return content instanceof Uint8Array ? toFrame(content) : content
  }

  /**
   * The next complete frame as its content (type byte and body, as one view), `undefined` when more bytes are
   * needed, or the error that ends the stream.
   *
   * @since 0.3.0
   */
  nextContent(): Uint8Array | FrameError | undefined {
    if (this.failed !== undefined) return this.failed
    if (this.partial === undefined) {
      while (this.headerFill < headerSize) {
        if (this.buffered === 0) return undefined
        this.header[this.headerFill++] = this.readByte()
      }
      const length = readUint32(this.header, 0)
      if (this.unit === "record") {
        if (length > this.limit) {
          return this.fail("FrameTooLarge", `a record of ${length} bytes exceeds the limit of ${this.limit} bytes`)
        }
      } else {
        if (length === 0) return this.fail("Malformed", "a frame of length 0 has no type byte")
        if (length - 1 > this.limit) {
          return this.fail("FrameTooLarge", `a frame of ${length - 1} bytes exceeds the limit of ${this.limit} bytes`)
        }
      }
      const first = this.chunks[0]
      if (first !== undefined && first.length - this.offset >= length) {
        // The whole frame is in the first chunk: hand out a view, no copy.
        const view = first.subarray(this.offset, this.offset + length)
        this.consume(length)
        this.headerFill = 0
        return view
      }
      this.partial = new Uint8Array(length)
      this.partialFill = 0
    }
    const target = this.partial
    while (this.partialFill < target.length) {
      const first = this.chunks[0]
      if (first === undefined) return undefined
      const take = Math.min(first.length - this.offset, target.length - this.partialFill)
      target.set(first.subarray(this.offset, this.offset + take), this.partialFill)
      this.partialFill += take
      this.consume(take)
    }
    this.partial = undefined
    this.partialFill = 0
    this.headerFill = 0
    return target
  }

  /**
   * Takes every byte received but not yet returned, in order (a header or frame begun included), and leaves the
   * decoder empty: what follows the last plain frame of a link that starts reading records.
   *
   * @since 0.3.0
   */
  drain(): Array<Uint8Array> {
    if (this.failed !== undefined) return []
    const out: Array<Uint8Array> = []
    if (this.headerFill > 0) out.push(this.header.slice(0, this.headerFill))
    if (this.partial !== undefined && this.partialFill > 0) out.push(this.partial.subarray(0, this.partialFill))
    for (const [i, chunk] of this.chunks.entries()) out.push(i === 0 ? chunk.subarray(this.offset) : chunk)
    this.chunks.length = 0
    this.offset = 0
    this.buffered = 0
    this.headerFill = 0
    this.partial = undefined
    this.partialFill = 0
    return out.filter((bytes) => bytes.length > 0)
  }

  /**
   * Takes one byte of the first chunk.
   *
   * @since 0.3.0
   */
  private readByte(): number {
    const first = this.chunks[0]!
    const value = first[this.offset]!
    this.consume(1)
    return value
  }

  /**
   * Moves past `count` bytes of the first chunk.
   *
   * @since 0.3.0
   */
  private consume(count: number): void {
    this.offset += count
    this.buffered -= count
    if (this.offset >= this.chunks[0]!.length) {
      this.chunks.shift()
      this.offset = 0
    }
  }

  /**
   * Ends the stream with an error, and lets go of what it held.
   *
   * @since 0.3.0
   */
  private fail(reason: FrameError["reason"], detail: string): FrameError {
    this.failed = new FrameError({ reason, detail })
    this.chunks.length = 0
    this.buffered = 0
    this.partial = undefined
    return this.failed
  }
}

/**
 * A frame's content (type byte and body) as a frame.
 *
 * @since 0.3.0
 */
export const toFrame = (bytes: Uint8Array): Frame => ({ type: bytes[0]!, body: bytes.subarray(1) })

const readUint32 = (bytes: Uint8Array, at: number): number =>
  ((bytes[at]! << 24) >>> 0) + (bytes[at + 1]! << 16) + (bytes[at + 2]! << 8) + bytes[at + 3]!

const writeHeader = (target: Uint8Array, at: number, type: number, bodyLength: number): void => {
  const length = bodyLength + 1
  target[at] = (length >>> 24) & 0xff
  target[at + 1] = (length >>> 16) & 0xff
  target[at + 2] = (length >>> 8) & 0xff
  target[at + 3] = length & 0xff
  target[at + headerSize] = type
}

/**
 * The bytes on the wire for one frame of `type`.
 *
 * @since 0.3.0
 */
export const encode = (type: number, body: Uint8Array = new Uint8Array(0)): Uint8Array => {
  const out = new Uint8Array(headerSize + 1 + body.length)
  writeHeader(out, 0, type, body.length)
  out.set(body, headerSize + 1)
  return out
}

/**
 * The bytes on the wire for frames of `type` sent together, in as few buffers as possible: each buffer holds up to
 * `maxBytes` (more only for a single frame larger than that), so one `send` is usually one socket write (and, on a
 * protected link, one sealed record).
 *
 * @since 0.3.0
 */
export const encodeAll = (
  type: number,
  bodies: ReadonlyArray<Uint8Array>,
  maxBytes: number
): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  let start = 0
  while (start < bodies.length) {
    let end = start
    let size = 0
    while (end < bodies.length) {
      const next = headerSize + 1 + bodies[end]!.length
      if (end > start && size + next > maxBytes) break
      size += next
      end++
    }
    const buffer = new Uint8Array(size)
    let at = 0
    for (let i = start; i < end; i++) {
      const body = bodies[i]!
      writeHeader(buffer, at, type, body.length)
      buffer.set(body, at + headerSize + 1)
      at += headerSize + 1 + body.length
    }
    out.push(buffer)
    start = end
  }
  return out
}

/**
 * The largest body a frame header can describe.
 *
 * @since 0.3.0
 */
export const maxBodyLimit = maxLength - 1

/**
 * The size of the AES-GCM tag that ends a sealed record.
 *
 * @since 0.3.0
 */
export const tagSize = 16

/**
 * The 96-bit AES-GCM nonce of a direction's record number `counter` (counted from 0, not sent): 4 zero bytes, then
 * the counter as 8 bytes big-endian. The counter stays below 2^53.
 *
 * @since 0.3.0
 */
export const recordNonce = (counter: number): Uint8Array => {
  const nonce = new Uint8Array(12)
  const high = Math.floor(counter / 0x1_0000_0000)
  const low = counter >>> 0
  nonce[4] = (high >>> 24) & 0xff
  nonce[5] = (high >>> 16) & 0xff
  nonce[6] = (high >>> 8) & 0xff
  nonce[7] = high & 0xff
  nonce[8] = (low >>> 24) & 0xff
  nonce[9] = (low >>> 16) & 0xff
  nonce[10] = (low >>> 8) & 0xff
  nonce[11] = low & 0xff
  return nonce
}

/**
 * The keep-alive rule of the stream networks: fails with `onIdle()` once no byte at all has arrived for `idleTimeout`
 * (`received` counts the bytes so far; a frame still arriving counts), checking four times per timeout, so silence is
 * found between 1 and 1.25 timeouts after it began. Each side sends a `Ping` often enough for the other never to.
 *
 * @since 0.3.0
 */
export const watchIdle = <E>(
  received: () => number,
  idleTimeout: Duration.Duration,
  onIdle: () => E
): Effect.Effect<never, E> =>
  Effect.gen(function*() {
    const idle = Duration.toMillis(idleTimeout)
    const step = Duration.millis(Math.max(1, Math.floor(idle / 4)))
    let seen = received()
    let since = yield* Clock.currentTimeMillis
    while (true) {
      yield* Effect.sleep(step)
      const now = yield* Clock.currentTimeMillis
      const count = received()
      if (count !== seen) {
        seen = count
        since = now
      } else if (now - since >= idle) {
        return yield* Effect.fail(onIdle())
      }
    }
  })
