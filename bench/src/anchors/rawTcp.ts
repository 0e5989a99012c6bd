/**
 * Anchor: raw TCP on loopback with length-prefixed frames (4-byte big-endian length + body), server and client in
 * this process. "pipelined" measures the wire alone: every frame written without waiting, done when the server has
 * them all. "acked" adds what a reliable protocol needs at least: one ack per message (its 4-byte index) and at most
 * `window` messages unacknowledged.
 */
import * as Net from "node:net"
import { indexOf, payload, type Result, Tally } from "../Result.js"
import { Watch } from "./harness.js"

export interface Options {
  readonly messages: number
  readonly payloadBytes: number
  readonly mode: "pipelined" | "acked"
  readonly window?: number
}

/** Writes go out in batches of about this many bytes: one syscall for many small frames. */
const batchBytes = 64 * 1024
/** Bodies at least this large are written as they are, not copied into a batch. */
const largeBytes = 8 * 1024

/** Collects frames into one buffer per batch, so a burst of small frames costs one `write`. */
class Batcher {
  private buffer = Buffer.allocUnsafe(batchBytes)
  private used = 0

  constructor(private readonly socket: Net.Socket) {}

  /** Room for `bytes` more, flushing first if needed; returns false when the socket asked us to wait. */
  private reserve(bytes: number): boolean {
    if (this.used + bytes <= this.buffer.length) return true
    const ok = this.flush()
    if (bytes > this.buffer.length) this.buffer = Buffer.allocUnsafe(bytes)
    return ok
  }

  /** Appends a length-prefixed frame; false when the socket's buffer is full (wait for 'drain'). */
  frame(body: Uint8Array): boolean {
    if (body.length >= largeBytes) {
      // Copying a large body into the batch costs more than the extra write; cork makes it one writev anyway.
      this.socket.cork()
      this.flush()
      const header = Buffer.allocUnsafe(4)
      header.writeUInt32BE(body.length)
      this.socket.write(header)
      const ok = this.socket.write(body)
      process.nextTick(() => this.socket.uncork())
      return ok
    }
    const ok = this.reserve(4 + body.length)
    this.buffer.writeUInt32BE(body.length, this.used)
    this.buffer.set(body, this.used + 4)
    this.used += 4 + body.length
    return ok
  }

  /** Appends a bare 4-byte value (acks have a fixed size, so they need no length prefix). */
  uint32(value: number): void {
    this.reserve(4)
    this.buffer.writeUInt32BE(value, this.used)
    this.used += 4
  }

  flush(): boolean {
    if (this.used === 0) return true
    // The socket keeps the slice until it is written, so the next batch needs a fresh buffer.
    const ok = this.socket.write(this.buffer.subarray(0, this.used))
    this.buffer = Buffer.allocUnsafe(Math.max(batchBytes, this.buffer.length))
    this.used = 0
    return ok
  }
}

/**
 * Splits a byte stream into units: length-prefixed frames (bodies passed on), or fixed-size units of `fixedBytes`.
 * Chunks are only joined once a whole unit is there, so a large frame spread over many chunks is copied once.
 */
class Reader {
  private parts: Array<Buffer> = []
  private size = 0
  /** Bytes needed before the next unit can be parsed. */
  private need: number

  constructor(
    private readonly lengthPrefixed: boolean,
    private readonly fixedBytes: number,
    private readonly onUnit: (body: Buffer) => void
  ) {
    this.need = lengthPrefixed ? 4 : fixedBytes
  }

  push(chunk: Buffer): void {
    this.parts.push(chunk)
    this.size += chunk.length
    if (this.size < this.need) return
    const data = this.parts.length === 1 ? chunk : Buffer.concat(this.parts, this.size)
    let offset = 0
    for (;;) {
      const available = data.length - offset
      if (this.lengthPrefixed) {
        if (available < 4) break
        const length = data.readUInt32BE(offset)
        if (available < 4 + length) {
          this.need = 4 + length
          break
        }
        this.onUnit(data.subarray(offset + 4, offset + 4 + length))
        offset += 4 + length
      } else {
        if (available < this.fixedBytes) break
        this.onUnit(data.subarray(offset, offset + this.fixedBytes))
        offset += this.fixedBytes
      }
      this.need = this.lengthPrefixed ? 4 : this.fixedBytes
    }
    this.parts = offset === data.length ? [] : [data.subarray(offset)]
    this.size = data.length - offset
  }
}

const listen = (server: Net.Server): Promise<number> =>
  new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      resolve(typeof address === "object" && address !== null ? address.port : 0)
    })
  })

export const run = async (options: Options): Promise<Result> => {
  const { messages, payloadBytes, mode } = options
  const window = options.window ?? 64
  const acked = mode === "acked"
  const tally = new Tally(messages)
  // Set once the client connects; the clock starts at the first send, after connecting.
  // Set once the run starts; frames before that are the set-up's.
  const running: { watch?: Watch } = {}

  const server = Net.createServer((socket) => {
    socket.setNoDelay(true)
    const acks = new Batcher(socket)
    const reader = new Reader(true, 0, (body) => {
      const index = indexOf(body)
      running.watch?.delivered(index, body)
      if (acked) acks.uint32(index)
    })
    // Acks for everything in one chunk leave in one write.
    socket.on("data", (chunk: Buffer) => {
      reader.push(chunk)
      acks.flush()
    })
    socket.on("error", () => {})
  })
  const port = await listen(server)
  const client = Net.connect(port, "127.0.0.1")
  client.setNoDelay(true)
  await new Promise<void>((resolve, reject) => client.once("connect", resolve).once("error", reject))
  client.on("error", () => {})

  const out = new Batcher(client)
  const current = new Watch(tally, acked ? messages : 0)
  running.watch = current
  let next = 0

  if (acked) {
    let inFlight = 0
    const fill = (): void => {
      while (inFlight < window && next < messages) {
        inFlight++
        out.frame(payload(next++, payloadBytes))
      }
      out.flush()
    }
    const acks = new Reader(false, 4, () => {
      inFlight--
      current.ack()
    })
    // Refill once per chunk of acks, so the frames they let go share a write. The window bounds what is in
    // flight, so the socket's buffer cannot grow beyond it and needs no 'drain' handling.
    client.on("data", (chunk: Buffer) => {
      acks.push(chunk)
      fill()
    })
    fill()
  } else {
    const pump = (): void => {
      while (next < messages) {
        if (!out.frame(payload(next++, payloadBytes))) {
          client.once("drain", pump)
          return
        }
      }
      out.flush()
    }
    pump()
  }

  await current.finished
  const result = current.result()
  client.destroy()
  server.close()
  return result
}
