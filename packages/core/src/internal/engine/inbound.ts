/**
 * One inbound stream, as plain data and pure functions: which `Data` frames it takes, its reorder buffer, and
 * what delivering moves.
 *
 * A stream keeps `(incarnation, delivered)`: every seq up to `delivered` of that source incarnation reached the
 * application, expired, or was skipped. Frames above it wait in `buffer`, in seq order, bounded by the window in
 * messages and in bytes; the next seq is always taken, so a stream never stalls on the byte bound.
 *
 * A `Skip` covers seqs `seq … last` that the sender removed: it waits in the buffer like a message, and supersedes
 * any message it covers (the sender removed that one after sending it). A message with a time to live carries its
 * `deadline` on this peer's clock, set when it arrived.
 *
 * @internal
 */
import type { RunStart } from "../../Backend.js"
import type * as Frame from "../../Frame.js"
import type { Incarnation } from "../../Incarnation.js"
import type { Lane } from "../../Lane.js"
import type { PeerId } from "../../PeerId.js"
import type { StreamKey } from "../../StreamKey.js"

/** A message, with when it expires on this peer's clock if it does. */
export type Message = Frame.Data & { readonly deadline?: number | undefined }

/** What waits in the reorder buffer. */
export type Item = Message | Frame.Skip

/** The last seq an item covers. */
export const lastOf = (item: Item): number => item._tag === "Skip" ? item.last : item.seq

const bytesOfItem = (item: Item): number => item._tag === "Skip" ? 0 : item.payload.length

export interface InStream {
  readonly key: StreamKey
  readonly peer: PeerId
  readonly lane: Lane
  readonly incarnation: Incarnation
  readonly delivered: number
  /**
   * The source runs of the last seqs delivered; after adopting a floor, only those of an incarnation it replaced
   * (see {@link carried}).
   */
  readonly runs: ReadonlyArray<RunStart>
  /** Items above `delivered`, in seq order, no seq covered twice. */
  readonly buffer: ReadonlyArray<Item>
  readonly bufferedBytes: number
  /** A delivery worker owns the stream's next messages. */
  readonly busy: boolean
  /** Messages that expired, here or at the sender, in this run. */
  readonly expired: number
  /** Messages the sender purged, in this run. */
  readonly purged: number
  /** Messages moved to dead letters, in this run. */
  readonly deadLettered: number
}

export interface Limits {
  readonly window: number
  readonly windowBytes: number
}

/** Why a stream jumped, for the `Resynchronised` event it reports. */
export interface Jump {
  readonly reason: "peer-new-incarnation" | "receiver-behind"
  readonly detail: string
}

/**
 * What taking frames did: the stream (`undefined` only when it is new and no frame was taken), how many frames
 * were duplicates, and whether the sender should hear the acknowledgement again: after a duplicate, or a frame
 * past a gap (the next seq to deliver is missing).
 */
export interface Accepted {
  readonly stream: InStream | undefined
  readonly duplicates: number
  readonly repeatAck: boolean
  readonly jumps: ReadonlyArray<Jump>
  /** Frames of an older incarnation than the stream's: refused. */
  readonly stale: ReadonlyArray<Item>
}

/** What a stream counts in a run. */
export type Counts = Pick<InStream, "expired" | "purged" | "deadLettered">

const noCounts: Counts = { expired: 0, purged: 0, deadLettered: 0 }

export const restore = (key: StreamKey, state: {
  readonly peer: PeerId
  readonly lane: Lane
  readonly incarnation: Incarnation
  readonly delivered: number
  readonly runs: ReadonlyArray<RunStart>
}): InStream => ({ key, ...state, buffer: [], bufferedBytes: 0, busy: false, ...noCounts })

/** The stream adopted at `floor`: everything below it counts as delivered by an earlier life of this receiver. */
const adopt = (key: StreamKey, data: Item, busy: boolean, counts: Counts): InStream => ({
  key,
  peer: data.from,
  lane: data.lane,
  incarnation: data.incarnation,
  delivered: data.floor - 1,
  runs: [],
  buffer: [],
  bufferedBytes: 0,
  busy,
  expired: counts.expired,
  purged: counts.purged,
  deadLettered: counts.deadLettered
})

/**
 * The runs of the seqs below `floor`, from the record of the incarnation a newer one replaces, when it covers them
 * all; none otherwise. A source keeps its seqs when it moves to a new incarnation (protocol.md §3, rule 8), so these
 * still name the messages this receiver delivered, and a copy of the source's store restored to the older
 * incarnation finds in them that its pending messages were delivered already: without them it would send them again.
 */
const carried = (replaced: InStream, floor: number): ReadonlyArray<RunStart> =>
  replaced.delivered >= floor - 1 ? replaced.runs.filter((entry) => entry.from < floor) : []

/** The part of a skip above `delivered`, or the item as it is. */
const above = (item: Item, delivered: number): Item =>
  item._tag === "Skip" && item.seq <= delivered ? { ...item, seq: delivered + 1 } : item

/** Takes `Data` and `Skip` frames of one stream, in arrival order (`current` is `undefined` when the stream is new). */
export const accept = (
  key: StreamKey,
  current: InStream | undefined,
  frames: ReadonlyArray<Item>,
  limits: Limits
): Accepted => {
  const jumps: Array<Jump> = []
  const stale: Array<Item> = []
  let duplicates = 0
  let repeatAck = false
  let stream = current
  // The buffer is copied once, on the first frame that changes it.
  let buffer: Array<Item> | undefined
  let bufferedBytes = current?.bufferedBytes ?? 0
  const base = () => (buffer ??= stream === undefined ? [] : stream.buffer.slice())
  for (const frame of frames) {
    if (stream === undefined) {
      stream = adopt(key, frame, false, noCounts)
      if (frame.floor > 1) {
        jumps.push({
          reason: "receiver-behind",
          detail: `no record of this stream; adopted it at the sender's floor, seq ${frame.floor}`
        })
      }
    } else if (frame.incarnation < stream.incarnation) {
      stale.push(frame)
      continue
    } else if (frame.incarnation > stream.incarnation) {
      jumps.push({
        reason: "peer-new-incarnation",
        detail: `incarnation ${stream.incarnation} replaced by ${frame.incarnation}, adopted at seq ${frame.floor}`
      })
      stream = { ...adopt(key, frame, stream.busy, stream), runs: carried(stream, frame.floor) }
      buffer = []
      bufferedBytes = 0
    } else if (frame.floor - 1 > stream.delivered && !stream.busy) {
      jumps.push({
        reason: "receiver-behind",
        detail: `delivered ${stream.delivered}, sender acknowledged up to ${frame.floor - 1}`
      })
      const kept = base().filter((item) => lastOf(item) >= frame.floor).map((item) => above(item, frame.floor - 1))
      buffer = kept
      bufferedBytes = bytesOf(kept)
      stream = { ...stream, delivered: frame.floor - 1, runs: [] }
    }
    if (lastOf(frame) <= stream.delivered) {
      duplicates++
      repeatAck = true
      continue
    }
    const item = above(frame, stream.delivered)
    const next = stream.delivered + 1
    if (item.seq > stream.delivered + limits.window) continue
    const list = buffer ?? stream.buffer
    const at = insertionPoint(list, item.seq)
    if (item._tag !== "Skip") {
      // A message some buffered item covers already: a duplicate, or one its sender has since skipped.
      const before = list[at - 1]
      if (list[at]?.seq === item.seq || (before !== undefined && lastOf(before) >= item.seq)) {
        duplicates++
        repeatAck = true
        continue
      }
      if (item.seq !== next && bufferedBytes + item.payload.length > limits.windowBytes) continue
    }
    // Past a gap (the next seq to deliver is missing): repeat the last acknowledgement so the sender can resend the
    // gap at once. Frames queued behind a next seq that is here, waiting for its delivery, are no sign of loss.
    if (item.seq > next && list[0]?.seq !== next) repeatAck = true
    const target = base()
    if (item._tag === "Skip") {
      const inserted = insertSkip(target, item)
      bufferedBytes += inserted.bytes
      // Every seq of it waits in a buffered skip already: a duplicate.
      if (!inserted.changed) {
        duplicates++
        repeatAck = true
      }
    } else {
      target.splice(at, 0, item)
      bufferedBytes += item.payload.length
    }
  }
  if (stream !== undefined && buffer !== undefined) stream = { ...stream, buffer, bufferedBytes }
  return { stream, duplicates, repeatAck, jumps, stale }
}

/**
 * Puts a skip in the buffer: it replaces the messages it covers, and the parts of it that buffered skips cover
 * already are left out. Returns the change in buffered bytes, and whether the buffer changed.
 */
const insertSkip = (buffer: Array<Item>, skip: Frame.Skip): { readonly bytes: number; readonly changed: boolean } => {
  let bytes = 0
  let changed = false
  let seq = skip.seq
  let at = insertionPoint(buffer, seq)
  // A buffered skip that starts below this one and reaches into it.
  const before = buffer[at - 1]
  if (before !== undefined && lastOf(before) >= seq) seq = lastOf(before) + 1
  while (seq <= skip.last) {
    const item = buffer[at]
    if (item !== undefined && item.seq <= skip.last && item._tag !== "Skip") {
      bytes -= item.payload.length
      buffer.splice(at, 1)
      changed = true
      continue
    }
    const end = item === undefined || item.seq > skip.last ? skip.last : item.seq - 1
    if (end >= seq) {
      buffer.splice(at++, 0, { ...skip, seq, last: end })
      changed = true
    }
    if (item === undefined || item.seq > skip.last) break
    seq = lastOf(item) + 1
    at++
  }
  return { bytes, changed }
}

const bytesOf = (items: ReadonlyArray<Item>) => items.reduce((sum, item) => sum + bytesOfItem(item), 0)

/** The index of the first item with a seq not below `seq` (binary search; appends are the usual case). */
const insertionPoint = (buffer: ReadonlyArray<Item>, seq: number): number => {
  const last = buffer[buffer.length - 1]
  if (last === undefined || last.seq < seq) return buffer.length
  let low = 0
  let high = buffer.length
  while (low < high) {
    const middle = (low + high) >>> 1
    if (buffer[middle]!.seq < seq) low = middle + 1
    else high = middle
  }
  return low
}

/**
 * How many buffered frames wait past a gap: all of them when the next seq to deliver is missing, else none. Each
 * would have made the sender hear the acknowledgement again had it arrived alone, as TCP's receivers do; the
 * engine sends that many repeats at once, so that batching keeps fast retransmit working.
 */
export const pastGap = (stream: InStream): number =>
  stream.buffer.length > 0 && stream.buffer[0]!.seq !== stream.delivered + 1 ? stream.buffer.length : 0

/** The items that can be delivered now: consecutive from `delivered + 1`, at most `max`. */
export const deliverable = (stream: InStream, max: number): ReadonlyArray<Item> => {
  let count = 0
  let next = stream.delivered + 1
  while (count < max && count < stream.buffer.length && stream.buffer[count]!.seq === next) {
    next = lastOf(stream.buffer[count++]!) + 1
  }
  return count === stream.buffer.length ? stream.buffer : stream.buffer.slice(0, count)
}

/**
 * The stream once seqs up to `lastOk` of `incarnation` are delivered (or expired, or skipped) and stored, with
 * `runs` their source runs; `undefined` when the stream moved on meanwhile (a new incarnation, or a jump past them).
 */
export const delivered = (
  stream: InStream,
  incarnation: Incarnation,
  lastOk: number,
  runs: ReadonlyArray<RunStart>,
  counts: Counts
): InStream | undefined => {
  if (stream.incarnation !== incarnation || lastOk <= stream.delivered) return undefined
  let drop = 0
  let bytes = stream.bufferedBytes
  while (drop < stream.buffer.length && lastOf(stream.buffer[drop]!) <= lastOk) {
    bytes -= bytesOfItem(stream.buffer[drop++]!)
  }
  const buffer = stream.buffer.slice(drop)
  // A skip the delivery covered part of: what is left of it.
  if (buffer.length > 0) buffer[0] = above(buffer[0]!, lastOk)
  return {
    ...stream,
    delivered: lastOk,
    runs,
    buffer,
    bufferedBytes: bytes,
    expired: stream.expired + counts.expired,
    purged: stream.purged + counts.purged,
    deadLettered: stream.deadLettered + counts.deadLettered
  }
}

/** A new session of the sender: what it sent before is history, and its buffered frames are dropped. */
export const clear = (stream: InStream): InStream =>
  stream.buffer.length === 0 ? stream : { ...stream, buffer: [], bufferedBytes: 0 }
