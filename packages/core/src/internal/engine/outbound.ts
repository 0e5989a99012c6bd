/**
 * The outbound window of one stream, as plain data and pure functions: what to send next, what an acknowledgement
 * does, when to resend.
 *
 * Per stream, `acked < nextToSend <= allocated + 1`: seqs `acked+1 … nextToSend-1` are in flight, `nextToSend …
 * allocated` wait for the window. Only the pump moves `nextToSend` up; acknowledgements, timeouts, a fast
 * retransmit and a new link move it back to `acked + 1`, which resends from the first unacknowledged seq.
 *
 * Seqs the store removed without an acknowledgement (expired or purged) stay in the stream as `dropped` ranges
 * until an acknowledgement covers them: the pump sends them as `Skip` frames, so the receiver moves past them
 * instead of waiting for them. They are no longer pending.
 *
 * @internal
 */
import type { DroppedRange, RunRange, RunStart } from "../../Backend.js"
import type { SkipReason } from "../../Frame.js"
import type { Lane } from "../../Lane.js"
import type { PeerId } from "../../PeerId.js"
import type { StreamKey } from "../../StreamKey.js"
import * as Runs from "../runs.js"

export interface OutStream {
  readonly key: StreamKey
  readonly peer: PeerId
  readonly lane: Lane
  /** The runs that allocated the pending seqs. */
  readonly runs: ReadonlyArray<RunStart>
  readonly allocated: number
  readonly acked: number
  readonly nextToSend: number
  /** The highest seq transmitted in this run: anything at or below it is a retransmission. */
  readonly highestSent: number
  /** The seq timed for a round-trip sample (Karn: never a retransmitted one). */
  readonly probe: Probe | undefined
  /** Data frames sent again in this run. */
  readonly retransmitted: number
  /** Acknowledgements in a row that repeated `acked` while messages were in flight. */
  readonly duplicateAcks: number
  /** The `acked` at the last fast retransmit: one per gap. */
  readonly fastRetransmitAt: number
  /** When the first unacknowledged seq is resent if no acknowledgement moves the stream: set while in flight. */
  readonly deadline: number | undefined
  /** Payload bytes of each transmission in flight (up to seq `to`), for the window's byte bound. */
  readonly flight: ReadonlyArray<{ readonly to: number; readonly bytes: number }>
  readonly flightBytes: number
  /** Seqs above `acked` that the store removed without an acknowledgement, in seq order. */
  readonly dropped: ReadonlyArray<Dropped>
  /** How many seqs `dropped` holds. */
  readonly droppedCount: number
  /** Messages that expired in the store, in this run. */
  readonly expired: number
  /** Messages the application purged, in this run. */
  readonly purged: number
}

/** Seqs of one run that the store removed, and why. */
export interface Dropped extends RunRange {
  readonly reason: SkipReason
}

export interface Probe {
  readonly seq: number
  readonly at: number
}

export const make = (key: StreamKey, peer: PeerId, lane: Lane): OutStream => ({
  key,
  peer,
  lane,
  runs: [],
  allocated: 0,
  acked: 0,
  nextToSend: 1,
  highestSent: 0,
  probe: undefined,
  retransmitted: 0,
  duplicateAcks: 0,
  fastRetransmitAt: -1,
  deadline: undefined,
  flight: [],
  flightBytes: 0,
  dropped: [],
  droppedCount: 0,
  expired: 0,
  purged: 0
})

/**
 * A stream as the store left it: stored messages from `firstPending` and dropped seqs above the last
 * acknowledgement, each range skipped for the reason the store kept with it, nothing in flight.
 */
export const restore = (
  key: StreamKey,
  stored: {
    readonly peer: PeerId
    readonly lane: Lane
    readonly firstPending: number
    readonly nextSeq: number
    readonly runs: ReadonlyArray<RunStart>
    readonly dropped: ReadonlyArray<DroppedRange>
  }
): OutStream => {
  const acked = Math.min(stored.firstPending, stored.dropped[0]?.from ?? stored.firstPending) - 1
  return {
    ...make(key, stored.peer, stored.lane),
    runs: stored.runs,
    allocated: stored.nextSeq - 1,
    acked,
    nextToSend: acked + 1,
    highestSent: acked,
    dropped: stored.dropped.map(({ from, reason, run, to }) => ({ run, from, to, reason })),
    droppedCount: countOf(stored.dropped)
  }
}

const countOf = (ranges: ReadonlyArray<RunRange>) => ranges.reduce((sum, range) => sum + range.to - range.from + 1, 0)

/**
 * Records seqs the store removed, for `reason`; returns the stream and how many of them were still pending (the
 * store may remove a message acknowledged a moment ago, before its deletion reached it: that one was delivered).
 */
export const drop = (
  stream: OutStream,
  ranges: ReadonlyArray<RunRange>,
  reason: SkipReason
): { readonly stream: OutStream; readonly count: number } => {
  const added: Array<Dropped> = []
  for (const range of ranges) {
    const from = Math.max(range.from, stream.acked + 1)
    if (from <= range.to) added.push({ run: range.run, from, to: range.to, reason })
  }
  if (added.length === 0) return { stream, count: 0 }
  const count = countOf(added)
  const dropped = [...stream.dropped, ...added].sort((a, b) => a.from - b.from)
  return {
    stream: {
      ...stream,
      dropped,
      droppedCount: stream.droppedCount + count,
      expired: stream.expired + (reason === "expired" ? count : 0),
      purged: stream.purged + (reason === "purged" ? count : 0)
    },
    count
  }
}

/** The dropped range holding `seq`, if one does. */
export const droppedAt = (stream: OutStream, seq: number): Dropped | undefined => {
  for (const range of stream.dropped) {
    if (range.from > seq) return undefined
    if (range.to >= seq) return range
  }
  return undefined
}

/** The dropped ranges above `upTo`, and how many seqs the others held. */
const pruneDropped = (stream: OutStream, upTo: number) => {
  if (stream.dropped.length === 0 || stream.dropped[0]!.from > upTo) return { dropped: stream.dropped, count: 0 }
  const dropped: Array<Dropped> = []
  let count = 0
  for (const range of stream.dropped) {
    if (range.to <= upTo) count += range.to - range.from + 1
    else if (range.from <= upTo) {
      count += upTo - range.from + 1
      dropped.push({ ...range, from: upTo + 1 })
    } else dropped.push(range)
  }
  return { dropped, count }
}

/** Seqs `first … last` were stored by `run`. */
export const allocate = (stream: OutStream, run: number, first: number, last: number): OutStream => ({
  ...stream,
  runs: Runs.extend(stream.runs, run, first),
  allocated: Math.max(stream.allocated, last)
})

export const pending = (stream: OutStream): number => Math.max(0, stream.allocated - stream.acked - stream.droppedCount)

export const inFlight = (stream: OutStream): number => stream.nextToSend - 1 - stream.acked

/**
 * The seqs the window lets out now, at most `maxBatch` of them: `from … to`, or `undefined` when none. `more` says
 * whether the window would let out more after them.
 */
export const sendable = (
  stream: OutStream,
  window: number,
  maxBatch: number
): { readonly from: number; readonly to: number; readonly more: boolean } | undefined => {
  const limit = Math.min(stream.allocated, stream.acked + window)
  const to = Math.min(limit, stream.nextToSend + maxBatch - 1)
  if (stream.nextToSend > to) return undefined
  return { from: stream.nextToSend, to, more: to < limit }
}

/** `from … to`, of `bytes` payload bytes, went out at `now`; returns the stream and how many were resent. */
export const sent = (
  stream: OutStream,
  from: number,
  to: number,
  bytes: number,
  now: number
): { readonly stream: OutStream; readonly retransmits: number } => {
  const retransmits = Math.max(0, Math.min(to, stream.highestSent) - from + 1)
  return {
    stream: {
      ...stream,
      nextToSend: to + 1,
      highestSent: Math.max(stream.highestSent, to),
      probe: stream.probe ?? (to > stream.highestSent ? { seq: to, at: now } : undefined),
      retransmitted: stream.retransmitted + retransmits,
      flight: [...stream.flight, { to, bytes }],
      flightBytes: stream.flightBytes + bytes
    },
    retransmits
  }
}

/** Resend from the first unacknowledged seq, and take no round-trip sample from what was in flight. */
export const rewind = (stream: OutStream): OutStream =>
  stream.nextToSend === stream.acked + 1 && stream.probe === undefined && stream.flight.length === 0
    ? stream
    : { ...stream, nextToSend: stream.acked + 1, probe: undefined, flight: [], flightBytes: 0 }

/** Arms the retransmission deadline at `at` unless it is armed already. */
export const arm = (stream: OutStream, at: number): OutStream =>
  stream.deadline === undefined ? { ...stream, deadline: at } : stream

/** Resends from the first unacknowledged seq now, with no deadline until the pump sends again. */
export const restart = (stream: OutStream): OutStream => ({ ...rewind(stream), deadline: undefined })

/** Drops the transmissions acknowledged up to `upTo` from the flight. */
const land = (stream: OutStream, upTo: number): Pick<OutStream, "flight" | "flightBytes"> => {
  let drop = 0
  let bytes = stream.flightBytes
  while (drop < stream.flight.length && stream.flight[drop]!.to <= upTo) bytes -= stream.flight[drop++]!.bytes
  return { flight: drop === 0 ? stream.flight : stream.flight.slice(drop), flightBytes: bytes }
}

/**
 * What an acknowledgement up to `upTo` does:
 * - `"acked"`: the stream moved; `count` messages were delivered (the dropped seqs it covers are not counted);
 *   `sample` is a measured round trip when the probe was covered;
 * - `"duplicate"`: it repeats `acked` while messages are in flight; the third in a row asks for a fast retransmit
 *   (`rewound`), once per gap;
 * - `"stale"`: it changes nothing.
 */
export type AckOutcome =
  | { readonly _tag: "acked"; readonly stream: OutStream; readonly count: number; readonly sample: number | undefined }
  | { readonly _tag: "duplicate"; readonly stream: OutStream; readonly rewound: boolean }
  | { readonly _tag: "stale" }

export const acknowledge = (stream: OutStream, upTo: number, now: number): AckOutcome => {
  if (upTo > stream.acked) {
    const probe = stream.probe
    const sampled = probe !== undefined && probe.seq <= upTo
    const pruned = pruneDropped(stream, upTo)
    return {
      _tag: "acked",
      count: upTo - stream.acked - pruned.count,
      sample: sampled ? now - probe.at : undefined,
      stream: {
        ...stream,
        dropped: pruned.dropped,
        droppedCount: stream.droppedCount - pruned.count,
        runs: Runs.prune(stream.runs, upTo + 1),
        acked: upTo,
        nextToSend: Math.max(stream.nextToSend, upTo + 1),
        probe: sampled ? undefined : probe,
        duplicateAcks: 0,
        ...land(stream, upTo)
      }
    }
  }
  if (upTo < stream.acked || inFlight(stream) === 0 || stream.fastRetransmitAt === stream.acked) {
    return { _tag: "stale" }
  }
  const duplicateAcks = stream.duplicateAcks + 1
  if (duplicateAcks < 3) return { _tag: "duplicate", stream: { ...stream, duplicateAcks }, rewound: false }
  return {
    _tag: "duplicate",
    rewound: true,
    stream: { ...rewind(stream), duplicateAcks: 0, fastRetransmitAt: stream.acked }
  }
}
