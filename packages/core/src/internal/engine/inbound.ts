/**
 * One inbound stream, as plain data and pure functions: which `Data` frames it takes, its reorder buffer, and
 * what delivering moves.
 *
 * A stream keeps `(incarnation, delivered)`: every seq up to `delivered` of that source incarnation reached the
 * application. Frames above it wait in `buffer`, in seq order, bounded by the window in messages and in bytes; the
 * next seq is always taken, so a stream never stalls on the byte bound.
 *
 * @internal
 */
import type { RunStart } from "../../Backend.js"
import type * as Frame from "../../Frame.js"
import type { Incarnation } from "../../Incarnation.js"
import type { Lane } from "../../Lane.js"
import type { PeerId } from "../../PeerId.js"
import type { StreamKey } from "../../StreamKey.js"

export interface InStream {
  readonly key: StreamKey
  readonly peer: PeerId
  readonly lane: Lane
  readonly incarnation: Incarnation
  readonly delivered: number
  /** The source runs of the last seqs delivered; empty after adopting a floor. */
  readonly runs: ReadonlyArray<RunStart>
  /** Frames above `delivered`, in seq order, no seq twice. */
  readonly buffer: ReadonlyArray<Frame.Data>
  readonly bufferedBytes: number
  /** A delivery worker owns the stream's next messages. */
  readonly busy: boolean
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
  readonly stale: ReadonlyArray<Frame.Data>
}

export const restore = (key: StreamKey, state: {
  readonly peer: PeerId
  readonly lane: Lane
  readonly incarnation: Incarnation
  readonly delivered: number
  readonly runs: ReadonlyArray<RunStart>
}): InStream => ({ key, ...state, buffer: [], bufferedBytes: 0, busy: false })

/** The stream adopted at `floor`: everything below it counts as delivered by an earlier life of this receiver. */
const adopt = (key: StreamKey, data: Frame.Data, busy: boolean): InStream => ({
  key,
  peer: data.from,
  lane: data.lane,
  incarnation: data.incarnation,
  delivered: data.floor - 1,
  runs: [],
  buffer: [],
  bufferedBytes: 0,
  busy
})

/** Takes `Data` frames of one stream, in arrival order (`current` is `undefined` when the stream is new). */
export const accept = (
  key: StreamKey,
  current: InStream | undefined,
  frames: ReadonlyArray<Frame.Data>,
  limits: Limits
): Accepted => {
  const jumps: Array<Jump> = []
  const stale: Array<Frame.Data> = []
  let duplicates = 0
  let repeatAck = false
  let stream = current
  // The buffer is copied once, on the first frame that changes it.
  let buffer: Array<Frame.Data> | undefined
  let bufferedBytes = current?.bufferedBytes ?? 0
  const base = () => (buffer ??= stream === undefined ? [] : stream.buffer.slice())
  for (const data of frames) {
    if (stream === undefined) {
      stream = adopt(key, data, false)
      if (data.floor > 1) {
        jumps.push({
          reason: "receiver-behind",
          detail: `no record of this stream; adopted it at the sender's floor, seq ${data.floor}`
        })
      }
    } else if (data.incarnation < stream.incarnation) {
      stale.push(data)
      continue
    } else if (data.incarnation > stream.incarnation) {
      jumps.push({
        reason: "peer-new-incarnation",
        detail: `incarnation ${stream.incarnation} replaced by ${data.incarnation}, adopted at seq ${data.floor}`
      })
      stream = adopt(key, data, stream.busy)
      buffer = []
      bufferedBytes = 0
    } else if (data.floor - 1 > stream.delivered && !stream.busy) {
      jumps.push({
        reason: "receiver-behind",
        detail: `delivered ${stream.delivered}, sender acknowledged up to ${data.floor - 1}`
      })
      const kept = base().filter((frame) => frame.seq >= data.floor)
      buffer = kept
      bufferedBytes = bytesOf(kept)
      stream = { ...stream, delivered: data.floor - 1, runs: [] }
    }
    const list = buffer ?? stream.buffer
    const at = insertionPoint(list, data.seq)
    if (data.seq <= stream.delivered || list[at]?.seq === data.seq) {
      duplicates++
      repeatAck = true
      continue
    }
    const next = stream.delivered + 1
    if (data.seq > stream.delivered + limits.window) continue
    if (data.seq !== next && bufferedBytes + data.payload.length > limits.windowBytes) continue
    // Past a gap (the next seq to deliver is missing): repeat the last acknowledgement so the sender can resend the
    // gap at once. Frames queued behind a next seq that is here, waiting for its delivery, are no sign of loss.
    if (data.seq > next && list[0]?.seq !== next) repeatAck = true
    const target = base()
    if (at === target.length) target.push(data)
    else target.splice(at, 0, data)
    bufferedBytes += data.payload.length
  }
  if (stream !== undefined && buffer !== undefined) stream = { ...stream, buffer, bufferedBytes }
  return { stream, duplicates, repeatAck, jumps, stale }
}

const bytesOf = (frames: ReadonlyArray<Frame.Data>) => frames.reduce((sum, frame) => sum + frame.payload.length, 0)

/** The index of the first frame with a seq not below `seq` (binary search; appends are the usual case). */
const insertionPoint = (buffer: ReadonlyArray<Frame.Data>, seq: number): number => {
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

/** The frames that can be delivered now: consecutive from `delivered + 1`, at most `max`. */
export const deliverable = (stream: InStream, max: number): ReadonlyArray<Frame.Data> => {
  let count = 0
  while (count < max && count < stream.buffer.length && stream.buffer[count]!.seq === stream.delivered + 1 + count) {
    count++
  }
  return count === stream.buffer.length ? stream.buffer : stream.buffer.slice(0, count)
}

/**
 * The stream once seqs up to `lastOk` of `incarnation` are delivered and stored, with `runs` their source runs;
 * `undefined` when the stream moved on meanwhile (a new incarnation, or a jump past them).
 */
export const delivered = (
  stream: InStream,
  incarnation: Incarnation,
  lastOk: number,
  runs: ReadonlyArray<RunStart>
): InStream | undefined => {
  if (stream.incarnation !== incarnation || lastOk <= stream.delivered) return undefined
  let drop = 0
  let bytes = stream.bufferedBytes
  while (drop < stream.buffer.length && stream.buffer[drop]!.seq <= lastOk) {
    bytes -= stream.buffer[drop++]!.payload.length
  }
  return { ...stream, delivered: lastOk, runs, buffer: stream.buffer.slice(drop), bufferedBytes: bytes }
}

/** A new session of the sender: what it sent before is history, and its buffered frames are dropped. */
export const clear = (stream: InStream): InStream =>
  stream.buffer.length === 0 ? stream : { ...stream, buffer: [], bufferedBytes: 0 }
