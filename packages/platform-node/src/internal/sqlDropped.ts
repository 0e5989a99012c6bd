/**
 * Dropped seqs of the SQL store: the messages `expire` and `purge` removed without an acknowledgement, kept as ranges
 * of one run and one reason each (the table `<prefix>outbound_dropped`, see `3_expiry`) until an acknowledgement
 * covers them.
 *
 * This module holds what the store computes over them outside SQL: the ranges of the seqs an operation removed, the
 * ranges and runs `outbound` reports, and which streams have dropped ranges at all, so that acknowledgements of the
 * others never look at them.
 *
 * @internal
 */
import type * as BackendTypes from "@intersession/core/Backend"
import type { Lane } from "@intersession/core/Lane"
import type { PeerId } from "@intersession/core/PeerId"
import * as StreamKey from "@intersession/core/StreamKey"

/** A dropped range of one stream. @internal */
export interface StreamRange extends BackendTypes.RunRange {
  readonly peer: PeerId
  readonly lane: Lane
}

/** A removed message: its stream, seq and run. @internal */
export interface RemovedSeq {
  readonly peer: PeerId
  readonly lane: Lane
  readonly seq: number
  readonly run: number
}

/**
 * Streams in key order: concurrent writers (PostgreSQL's connections) lock them in the same order, and `expire` and
 * `purge` report them in it.
 *
 * @internal
 */
export const byStream = (
  a: { readonly peer: string; readonly lane: string },
  b: { readonly peer: string; readonly lane: string }
) => a.peer < b.peer ? -1 : a.peer > b.peer ? 1 : a.lane < b.lane ? -1 : a.lane > b.lane ? 1 : 0

/**
 * The seqs removed by one operation as ranges: per stream in seq order, each as long as it can be while its seqs
 * follow each other and one run allocated them all.
 *
 * @internal
 */
export const rangesOf = (removed: ReadonlyArray<RemovedSeq>): Array<StreamRange> => {
  const sorted = removed.slice().sort((a, b) => byStream(a, b) || a.seq - b.seq)
  const ranges: Array<StreamRange> = []
  let last: { peer: PeerId; lane: Lane; from: number; to: number; run: number } | undefined
  for (const { lane, peer, run, seq } of sorted) {
    if (last !== undefined && last.peer === peer && last.lane === lane && last.run === run && last.to + 1 === seq) {
      last.to = seq
    } else {
      last = { peer, lane, from: seq, to: seq, run }
      ranges.push(last)
    }
  }
  return ranges
}

/**
 * Ranges as `expire` and `purge` return them: per stream, in stream order, with the stream's ranges in seq order.
 *
 * @internal
 */
export const perStream = (ranges: ReadonlyArray<StreamRange>): Array<BackendTypes.DroppedMessages> => {
  const sorted = ranges.slice().sort((a, b) => byStream(a, b) || a.from - b.from)
  const streams: Array<{ peer: PeerId; lane: Lane; seqs: Array<BackendTypes.RunRange> }> = []
  for (const { from, lane, peer, run, to } of sorted) {
    const last = streams[streams.length - 1]
    if (last !== undefined && last.peer === peer && last.lane === lane) last.seqs.push({ from, to, run })
    else streams.push({ peer, lane, seqs: [{ from, to, run }] })
  }
  return streams
}

/**
 * A stream's dropped ranges as `outbound` reports them, from its stored ranges in seq order: the seqs from
 * `unacknowledged` on only (an acknowledgement covers the ones below it, whether or not it deleted their rows), and
 * ranges that continue each other with the same run and the same reason (written by different operations) joined.
 *
 * @internal
 */
export const pendingRanges = (
  stored: ReadonlyArray<BackendTypes.DroppedRange>,
  unacknowledged: number
): Array<BackendTypes.DroppedRange> => {
  const ranges: Array<{ from: number; to: number; run: number; reason: BackendTypes.DropReason }> = []
  for (const range of stored) {
    if (range.to < unacknowledged) continue
    const from = Math.max(range.from, unacknowledged)
    const last = ranges[ranges.length - 1]
    if (last !== undefined && last.run === range.run && last.reason === range.reason && last.to + 1 === from) {
      last.to = range.to
    } else ranges.push({ from, to: range.to, run: range.run, reason: range.reason })
  }
  return ranges
}

/** The run of the stored seq `seq`: that of the last run start at or before it, if there is one. */
const storedRunAt = (starts: ReadonlyArray<BackendTypes.RunStart>, seq: number): number | undefined => {
  let low = 0
  let high = starts.length
  while (low < high) {
    const middle = (low + high) >>> 1
    if (starts[middle]!.from <= seq) low = middle + 1
    else high = middle
  }
  return low === 0 ? undefined : starts[low - 1]!.run
}

/**
 * The runs of a stream's stored and dropped seqs together, each with its lowest seq, in seq order, from the run
 * starts of its stored seqs alone (where the run changes from the stored seq before) and its dropped ranges.
 *
 * Above its last acknowledgement, a stream's seqs are exactly its stored and its dropped ones: so after a dropped
 * range, the next seq is a stored one unless the next range starts there, and its run is that of the stored seqs
 * around it.
 *
 * @internal
 */
export const runsOf = (
  stored: ReadonlyArray<BackendTypes.RunStart>,
  dropped: ReadonlyArray<BackendTypes.RunRange>,
  nextSeq: number
): ReadonlyArray<BackendTypes.RunStart> => {
  if (dropped.length === 0) return stored
  const starts: Array<BackendTypes.RunStart> = stored.slice()
  for (const [i, range] of dropped.entries()) {
    starts.push({ run: range.run, from: range.from })
    const after = range.to + 1
    if (after >= nextSeq || dropped[i + 1]?.from === after) continue
    const run = storedRunAt(stored, after)
    if (run !== undefined) starts.push({ run, from: after })
  }
  starts.sort((a, b) => a.from - b.from)
  const runs: Array<BackendTypes.RunStart> = []
  for (const start of starts) {
    if (runs[runs.length - 1]?.run !== start.run) runs.push(start)
  }
  return runs
}

/**
 * The streams that may have dropped ranges in the store, with the highest dropped seq of each: the backend owns its
 * store, so only its own `expire` and `purge` add ranges. An acknowledgement deletes dropped ranges only for these
 * streams, and costs nothing more for the others.
 *
 * It may name a stream whose ranges are gone (a transaction that added them rolled back), never miss one that has
 * some: a stream is added before its ranges are written, and removed only once an acknowledgement that deleted all
 * of them has committed.
 *
 * @internal
 */
export class DroppedStreams {
  private readonly highest = new Map<StreamKey.StreamKey, number>()

  get size(): number {
    return this.highest.size
  }

  has(key: StreamKey.StreamKey): boolean {
    return this.highest.has(key)
  }

  /** Ranges up to `to` are about to be written for the stream. */
  add(peer: string, lane: string, to: number): void {
    const key = StreamKey.make(peer, lane)
    const seen = this.highest.get(key)
    if (seen === undefined || to > seen) this.highest.set(key, to)
  }

  /** An acknowledgement of the stream up to `upTo`, which deleted its dropped ranges up to it, has committed. */
  acknowledged(key: StreamKey.StreamKey, upTo: number): void {
    const seen = this.highest.get(key)
    if (seen !== undefined && seen <= upTo) this.highest.delete(key)
  }
}
