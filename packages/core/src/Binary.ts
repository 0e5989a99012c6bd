/**
 * The binary layout every byte format of the library uses: the wire frames, and a transport's handshake.
 * Integers are unsigned LEB128 varints up to 2^53; strings and byte strings are a varint length followed by their
 * bytes (strings in UTF-8).
 *
 * @since 0.2.0
 */

const encoder = new TextEncoder()
const decoder = new TextDecoder("utf-8", { fatal: true })

/**
 * The size of an integer field: the bytes its varint takes.
 *
 * @since 0.2.0
 * @category sizes
 */
export const uintSize = (value: number): number => {
  let size = 1
  for (let rest = value; rest >= 0x80; rest = Math.floor(rest / 0x80)) size++
  return size
}

/**
 * Writes fields in order into one growing buffer.
 *
 * @since 0.2.0
 * @category writing
 */
export class Writer {
  private buffer: Uint8Array
  /**
   * The number of bytes written so far.
   *
   * @since 0.2.0
   */
  offset = 0

  /** `initialSize` is a hint: a frame of known size is written with no copy at all. */
  constructor(initialSize = 128) {
    this.buffer = new Uint8Array(initialSize)
  }

  /** @internal */
  private ensure(extra: number): void {
    const needed = this.offset + extra
    if (needed <= this.buffer.length) return
    let size = this.buffer.length * 2
    while (size < needed) size *= 2
    const next = new Uint8Array(size)
    next.set(this.buffer.subarray(0, this.offset))
    this.buffer = next
  }

  /**
   * Writes one byte.
   *
   * @since 0.2.0
   */
  byte(value: number): void {
    this.ensure(1)
    this.buffer[this.offset++] = value
  }

  /**
   * Writes an integer field (a varint).
   *
   * @since 0.2.0
   */
  uint(value: number): void {
    this.ensure(8)
    let rest = value
    while (rest >= 0x80) {
      this.buffer[this.offset++] = (rest % 0x80) | 0x80
      rest = Math.floor(rest / 0x80)
    }
    this.buffer[this.offset++] = rest
  }

  /**
   * Writes a byte string: its length, then its bytes.
   *
   * @since 0.2.0
   */
  bytes(value: Uint8Array): void {
    this.uint(value.length)
    this.raw(value)
  }

  /**
   * Bytes of a size both sides know (a nonce, a MAC), with no length before them.
   *
   * @since 0.2.0
   */
  raw(value: Uint8Array): void {
    this.ensure(value.length)
    this.buffer.set(value, this.offset)
    this.offset += value.length
  }

  /**
   * Writes a string field: its length in UTF-8 bytes, then those bytes.
   *
   * @since 0.2.0
   */
  string(value: string): void {
    // Ids are mostly ASCII: write them directly and fall back to the encoder for anything else.
    const length = value.length
    this.ensure(length + 8)
    const start = this.offset
    this.uint(length)
    const bodyStart = this.offset
    for (let i = 0; i < length; i++) {
      const code = value.charCodeAt(i)
      if (code >= 0x80) {
        this.offset = start
        this.bytes(encoder.encode(value))
        return
      }
      this.buffer[bodyStart + i] = code
    }
    this.offset = bodyStart + length
  }

  /**
   * The bytes written, without the unused end of the buffer.
   *
   * @since 0.2.0
   */
  finish(): Uint8Array {
    return this.offset === this.buffer.length ? this.buffer : this.buffer.slice(0, this.offset)
  }
}

/**
 * The size of a string field holding `value` if it is ASCII (the usual case), a lower bound otherwise.
 *
 * @since 0.2.0
 * @category sizes
 */
export const stringSize = (value: string): number => uintSize(value.length) + value.length

/**
 * Why bytes could not be read: returned, never thrown.
 *
 * @since 0.2.0
 * @category reading
 */
export class ReadError {
  constructor(readonly detail: string) {}
}

/**
 * Reads fields in order; every method returns a `ReadError` instead of throwing when the input ends early or a
 * field is out of range, so hostile bytes never become a defect.
 *
 * @since 0.2.0
 * @category reading
 */
export class Reader {
  /**
   * The position of the next field in `input`.
   *
   * @since 0.2.0
   */
  offset = 0
  constructor(readonly input: Uint8Array) {}

  get remaining(): number {
    return this.input.length - this.offset
  }

  /**
   * Reads one byte.
   *
   * @since 0.2.0
   */
  byte(): number | ReadError {
    if (this.offset >= this.input.length) return new ReadError("frame ends early")
    return this.input[this.offset++]!
  }

  /**
   * Reads an integer field (a varint of at most 8 bytes, up to 2^53).
   *
   * @since 0.2.0
   */
  uint(): number | ReadError {
    let result = 0
    let scale = 1
    for (let i = 0; i < 8; i++) {
      if (this.offset >= this.input.length) return new ReadError("frame ends inside an integer")
      const byte = this.input[this.offset++]!
      result += (byte & 0x7f) * scale
      if (byte < 0x80) {
        return result <= Number.MAX_SAFE_INTEGER ? result : new ReadError("integer beyond 2^53")
      }
      scale *= 0x80
    }
    return new ReadError("integer longer than 8 bytes")
  }

  /**
   * Reads a byte string, as a view on the input.
   *
   * @since 0.2.0
   */
  bytes(): Uint8Array | ReadError {
    const length = this.uint()
    if (length instanceof ReadError) return length
    return this.raw(length)
  }

  /**
   * `size` bytes with no length before them, as a view on the input.
   *
   * @since 0.2.0
   */
  raw(size: number): Uint8Array | ReadError {
    if (size > this.remaining) return new ReadError(`a field of ${size} bytes exceeds the frame`)
    const value = this.input.subarray(this.offset, this.offset + size)
    this.offset += size
    return value
  }

  /**
   * Reads a string of at most `maxBytes` bytes of UTF-8; ids and lanes are short, so longer is malformed.
   *
   * @since 0.2.0
   */
  string(maxBytes: number): string | ReadError {
    const bytes = this.bytes()
    if (bytes instanceof ReadError) return bytes
    if (bytes.length > maxBytes) return new ReadError(`a string field of ${bytes.length} bytes exceeds ${maxBytes}`)
    return recentStrings.get(bytes) ?? recentStrings.remember(bytes, decodeString(bytes))
  }
}

/**
 * The few strings seen last, by their bytes. Every frame repeats the same peer ids and lanes: comparing a few bytes
 * is much cheaper than building the string again.
 */
class RecentStrings {
  private readonly entries: Array<{ readonly bytes: Uint8Array; readonly value: string }> = []

  constructor(private readonly capacity: number) {}

  get(bytes: Uint8Array): string | undefined {
    for (const entry of this.entries) {
      if (sameBytes(entry.bytes, bytes)) return entry.value
    }
    return undefined
  }

  remember(bytes: Uint8Array, value: string | ReadError): string | ReadError {
    if (value instanceof ReadError || bytes.length > 64) return value
    if (this.entries.length === this.capacity) this.entries.pop()
    // A copy: the frame's bytes belong to a buffer that will be reused.
    this.entries.unshift({ bytes: bytes.slice(), value })
    return value
  }
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

const recentStrings = new RecentStrings(8)

const decodeString = (bytes: Uint8Array): string | ReadError => {
  let ascii = ""
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]!
    if (byte >= 0x80) {
      try {
        return decoder.decode(bytes)
      } catch {
        return new ReadError("a string is not valid UTF-8")
      }
    }
    ascii += String.fromCharCode(byte)
  }
  return ascii
}
