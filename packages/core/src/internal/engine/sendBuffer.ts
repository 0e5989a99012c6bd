/**
 * Messages of outbound streams kept in memory between their append and their acknowledgement, so the pump sends
 * and resends them without reading them back from the store. Each append batch is one segment: its payloads
 * copied end to end into one slab, with their offsets, so a batch costs two allocations however many messages it
 * holds. Bounded in bytes over all streams: a batch that does not fit is not kept, and the pump reads it back from
 * the store when its turn comes, so a backlog stays in the store. A seq and its run name one message for the whole
 * engine run, so a kept message is never stale.
 *
 * Plain mutable state, used only between transactions by the fibers of one engine.
 *
 * @internal
 */
import type { StoredMessage } from "../../Backend.js"
import type { Lane } from "../../Lane.js"
import type { PeerId } from "../../PeerId.js"
import type { StreamKey } from "../../StreamKey.js"

/** Bytes a kept message costs besides its payload (its offset and its share of the segment). */
const overhead = 16

/** Consecutive seqs of one run, from `first`; messages before `start` are released. */
interface Segment {
  readonly first: number
  readonly run: number
  readonly slab: Uint8Array
  /** `offsets[i] … offsets[i+1]` is message `first + i` in `slab`. */
  readonly offsets: Uint32Array
  start: number
  bytes: number
}

/** Copies payloads end to end into one slab, as one segment's storage. */
export const pack = (
  payloads: ReadonlyArray<Uint8Array>
): { readonly slab: Uint8Array; readonly offsets: Uint32Array } => {
  const offsets = new Uint32Array(payloads.length + 1)
  let size = 0
  for (let i = 0; i < payloads.length; i++) {
    offsets[i] = size
    size += payloads[i]!.length
  }
  offsets[payloads.length] = size
  const slab = new Uint8Array(size)
  for (let i = 0; i < payloads.length; i++) slab.set(payloads[i]!, offsets[i]!)
  return { slab, offsets }
}

/** The payload of message `i` of a packed slab, as a view on it. */
export const payloadAt = (packed: { readonly slab: Uint8Array; readonly offsets: Uint32Array }, i: number) =>
  packed.slab.subarray(packed.offsets[i]!, packed.offsets[i + 1]!)

const sizeOf = (segment: Segment, from: number, to: number) =>
  segment.offsets[to]! - segment.offsets[from]! + (to - from) * overhead

export class SendBuffer {
  private readonly streams = new Map<StreamKey, Array<Segment>>()
  private used = 0

  constructor(private readonly maxBytes: number) {}

  /** Bytes kept now, over all streams. */
  get bytes(): number {
    return this.used
  }

  /** Keeps seqs `first …` of `run`, packed, if they fit. */
  add(
    key: StreamKey,
    first: number,
    run: number,
    packed: { readonly slab: Uint8Array; readonly offsets: Uint32Array }
  ) {
    const count = packed.offsets.length - 1
    if (count === 0) return
    const segment: Segment = { first, run, slab: packed.slab, offsets: packed.offsets, start: 0, bytes: 0 }
    segment.bytes = sizeOf(segment, 0, count)
    if (this.used + segment.bytes > this.maxBytes) return
    let list = this.streams.get(key)
    if (list === undefined) this.streams.set(key, list = [])
    // Segments stay in seq order; appends come in order, reads back from the store fill holes.
    let at = list.length
    while (at > 0 && list[at - 1]!.first > first) at--
    list.splice(at, 0, segment)
    this.used += segment.bytes
  }

  /** Keeps messages read back from the store (consecutive seqs), one segment per run, if they fit. */
  addStored(key: StreamKey, messages: ReadonlyArray<StoredMessage>) {
    let start = 0
    for (let i = 1; i <= messages.length; i++) {
      if (i < messages.length && messages[i]!.run === messages[start]!.run) continue
      const slice = messages.slice(start, i)
      this.add(key, slice[0]!.seq, slice[0]!.run, pack(slice.map((message) => message.payload)))
      start = i
    }
  }

  /** Seqs `from … to` of a stream, in order, if every one is kept. */
  get(key: StreamKey, peer: PeerId, lane: Lane, from: number, to: number): Array<StoredMessage> | undefined {
    const list = this.streams.get(key)
    if (list === undefined) return undefined
    const found: Array<StoredMessage> = []
    let seq = from
    for (const segment of list) {
      const end = segment.first + segment.offsets.length - 2
      if (end < seq) continue
      const index = seq - segment.first
      if (index < segment.start) return undefined
      for (let i = index; i <= end - segment.first && seq <= to; i++, seq++) {
        found.push({ peer, lane, seq, run: segment.run, payload: payloadAt(segment, i) })
      }
      if (seq > to) return found
    }
    return undefined
  }

  /** Forgets seqs up to `upTo` of a stream: they are acknowledged. */
  release(key: StreamKey, upTo: number) {
    const list = this.streams.get(key)
    if (list === undefined) return
    let drop = 0
    for (const segment of list) {
      const count = segment.offsets.length - 1
      const keep = Math.min(count, Math.max(segment.start, upTo - segment.first + 1))
      if (keep === segment.start) break
      const freed = sizeOf(segment, segment.start, keep)
      segment.start = keep
      segment.bytes -= freed
      this.used -= freed
      if (keep === count) drop++
      else break
    }
    if (drop === list.length) this.streams.delete(key)
    else if (drop > 0) list.splice(0, drop)
  }

  /** Forgets a whole stream. */
  forget(key: StreamKey) {
    for (const segment of this.streams.get(key) ?? []) this.used -= segment.bytes
    this.streams.delete(key)
  }
}
