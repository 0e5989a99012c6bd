/**
 * Messages of outbound streams kept in memory between their append and their acknowledgement, so the pump sends
 * and resends them without reading them back from the store. Each append batch is one segment of consecutive seqs,
 * its payloads copied end to end into one region of a shared {@link Slab}, with their offsets: a kept message costs
 * no object of its own. Bounded in bytes over all streams: a batch that does not fit is not kept, and the pump
 * reads it back from the store when its turn comes, so a backlog stays in the store (the appender keeps nothing for
 * a peer that is not linked). A seq and its run name one message for the whole engine run, so a kept message is
 * never stale.
 *
 * It also keeps the trace context of messages sent inside a span (`Frame.TraceContext`), one entry per `send` or
 * `sendAll` call, until they are acknowledged, whether their payloads are kept or not: the store has no column for
 * it. So a message read back from the store still carries it, but one resent by a later run (after a restart) does
 * not; nor does one sent while `maxTraced` calls' contexts are kept.
 *
 * Plain mutable state, used only between transactions by the fibers of one engine.
 *
 * @internal
 */
import type { StoredMessage } from "../../Backend.js"
import type { TraceContext } from "../../Frame.js"
import type { Lane } from "../../Lane.js"
import type { PeerId } from "../../PeerId.js"
import type { StreamKey } from "../../StreamKey.js"
import { Slab } from "./slab.js"

/** Bytes a kept message costs besides its payload: its offset, and its share of the segment. */
const overhead = 16

/** Consecutive seqs of one run, from `first`; message `i` is `region[offsets[i] … offsets[i+1]]`. */
interface Segment {
  readonly first: number
  readonly run: number
  readonly region: Uint8Array
  readonly offsets: Uint32Array
  /** When the segment's messages expire (ms since the epoch), if they do. */
  readonly expiresAt: number | undefined
  /** Messages before this index are released. */
  start: number
  bytes: number
}

const count = (segment: Segment) => segment.offsets.length - 1

/** Seqs `first … last` of one run, sent by one call inside the span `trace`. */
interface Traced {
  readonly first: number
  readonly last: number
  readonly run: number
  readonly trace: TraceContext
}

/** The most calls whose trace context is kept at once, over all streams: about a hundred bytes each. */
export const maxTraced = 4096

/** A pending message, with the trace context it was sent in, if it was sent in a span. */
export type KeptMessage = StoredMessage & { readonly trace?: TraceContext | undefined }

/** The bytes that messages `from … to - 1` of a segment cost. */
const sizeOf = (segment: Segment, from: number, to: number) =>
  segment.offsets[to]! - segment.offsets[from]! + (to - from) * overhead

const payloadsSize = (payloads: ReadonlyArray<Uint8Array>) => {
  let bytes = payloads.length * overhead
  for (const payload of payloads) bytes += payload.length
  return bytes
}

export class SendBuffer {
  private readonly streams = new Map<StreamKey, Array<Segment>>()
  private readonly slab = new Slab()
  private used = 0
  /** Per stream, in seq order. */
  private readonly traced = new Map<StreamKey, Array<Traced>>()
  private tracedCount = 0

  constructor(private readonly maxBytes: number) {}

  /** Bytes kept now, over all streams. */
  get bytes(): number {
    return this.used
  }

  /** Whether messages of these sizes would be kept. */
  fits(payloads: ReadonlyArray<Uint8Array>): boolean {
    return this.used + payloadsSize(payloads) <= this.maxBytes
  }

  /** Keeps a copy of seqs `first …` of `run`, expiring at `expiresAt` if they do, if they fit. */
  add(
    key: StreamKey,
    first: number,
    run: number,
    payloads: ReadonlyArray<Uint8Array>,
    expiresAt: number | undefined
  ): void {
    if (payloads.length === 0 || !this.fits(payloads)) return
    const offsets = new Uint32Array(payloads.length + 1)
    let size = 0
    for (let i = 0; i < payloads.length; i++) {
      offsets[i] = size
      size += payloads[i]!.length
    }
    offsets[payloads.length] = size
    const region = this.slab.alloc(size)
    for (let i = 0; i < payloads.length; i++) region.set(payloads[i]!, offsets[i]!)
    const segment: Segment = { first, run, region, offsets, expiresAt, start: 0, bytes: 0 }
    segment.bytes = sizeOf(segment, 0, payloads.length)
    let list = this.streams.get(key)
    if (list === undefined) this.streams.set(key, list = [])
    // Segments stay in seq order; appends come in order, reads back from the store fill holes.
    let at = list.length
    while (at > 0 && list[at - 1]!.first > first) at--
    list.splice(at, 0, segment)
    this.used += segment.bytes
  }

  /**
   * Keeps messages read back from the store, if they fit: one segment per stretch of consecutive seqs of one run
   * and one expiry (dropped seqs leave holes between stretches).
   */
  addStored(key: StreamKey, read: ReadonlyArray<StoredMessage>) {
    // A read spanning a dropped seq misses the buffer although it holds the messages around it: keep them once.
    const messages = read.filter((message) => !this.holds(key, message.seq))
    let start = 0
    for (let i = 1; i <= messages.length; i++) {
      const first = messages[start]!
      const next = messages[i]
      if (
        next !== undefined && next.run === first.run && next.seq === first.seq + (i - start) &&
        next.expiresAt === first.expiresAt
      ) continue
      this.add(key, first.seq, first.run, messages.slice(start, i).map((message) => message.payload), first.expiresAt)
      start = i
    }
  }

  /** Keeps the trace context of seqs `first … first + count - 1` of `run`, unless `maxTraced` are kept. */
  trace(key: StreamKey, first: number, run: number, count: number, trace: TraceContext): void {
    if (count === 0 || this.tracedCount >= maxTraced) return
    let list = this.traced.get(key)
    if (list === undefined) this.traced.set(key, list = [])
    // Appends come in seq order.
    list.push({ first, last: first + count - 1, run, trace })
    this.tracedCount++
  }

  /** Messages of a stream in seq order, each with the trace context it was sent in, if one is kept. */
  withTraces(key: StreamKey, messages: Array<KeptMessage>): Array<KeptMessage> {
    const list = this.traced.get(key)
    if (list === undefined) return messages
    let at = 0
    for (let i = 0; i < messages.length; i++) {
      const message = messages[i]!
      while (at < list.length && list[at]!.last < message.seq) at++
      if (at === list.length) break
      const entry = list[at]!
      if (entry.first <= message.seq && entry.run === message.run) messages[i] = { ...message, trace: entry.trace }
    }
    return messages
  }

  /** Whether a seq of a stream is kept. */
  private holds(key: StreamKey, seq: number): boolean {
    const list = this.streams.get(key)
    if (list === undefined) return false
    // The last segment that starts at or before `seq` (segments are in seq order).
    let low = 0
    let high = list.length - 1
    while (low < high) {
      const middle = (low + high + 1) >>> 1
      if (list[middle]!.first <= seq) low = middle
      else high = middle - 1
    }
    const segment = list[low]!
    const index = seq - segment.first
    return index >= segment.start && index < count(segment)
  }

  /** Seqs `from … to` of a stream, in order, if every one is kept. */
  get(key: StreamKey, peer: PeerId, lane: Lane, from: number, to: number): Array<KeptMessage> | undefined {
    const list = this.streams.get(key)
    if (list === undefined) return undefined
    const found: Array<StoredMessage> = []
    let seq = from
    for (const segment of list) {
      const end = segment.first + count(segment) - 1
      if (end < seq) continue
      const index = seq - segment.first
      if (index < segment.start) return undefined
      const { offsets, region } = segment
      for (let i = index; i < offsets.length - 1 && seq <= to; i++, seq++) {
        const payload = region.subarray(offsets[i]!, offsets[i + 1]!)
        found.push(
          segment.expiresAt === undefined
            ? { peer, lane, seq, run: segment.run, payload }
            : { peer, lane, seq, run: segment.run, payload, expiresAt: segment.expiresAt }
        )
      }
      if (seq > to) return this.withTraces(key, found)
    }
    return undefined
  }

  /** Forgets seqs up to `upTo` of a stream: they are acknowledged. */
  release(key: StreamKey, upTo: number) {
    const traced = this.traced.get(key)
    if (traced !== undefined) {
      let done = 0
      while (done < traced.length && traced[done]!.last <= upTo) done++
      this.tracedCount -= done
      if (done === traced.length) this.traced.delete(key)
      else if (done > 0) traced.splice(0, done)
    }
    const list = this.streams.get(key)
    if (list === undefined) return
    let drop = 0
    for (const segment of list) {
      const keep = Math.min(count(segment), Math.max(segment.start, upTo - segment.first + 1))
      if (keep === segment.start) break
      const freed = sizeOf(segment, segment.start, keep)
      segment.start = keep
      segment.bytes -= freed
      this.used -= freed
      if (keep === count(segment)) drop++
      else break
    }
    if (drop === list.length) this.streams.delete(key)
    else if (drop > 0) list.splice(0, drop)
  }

  /** Forgets a whole stream. */
  forget(key: StreamKey) {
    for (const segment of this.streams.get(key) ?? []) this.used -= segment.bytes
    this.streams.delete(key)
    this.tracedCount -= this.traced.get(key)?.length ?? 0
    this.traced.delete(key)
  }
}
