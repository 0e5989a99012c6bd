/**
 * The outbound window of one stream, as plain data and pure functions: what to send next, what an acknowledgement
 * does, when to resend.
 *
 * Per stream, `acked < nextToSend <= allocated + 1`: seqs `acked+1 … nextToSend-1` are in flight, `nextToSend …
 * allocated` wait for the window. Only the pump moves `nextToSend` up; acknowledgements, timeouts, a fast
 * retransmit and a new link move it back to `acked + 1`, which resends from the first unacknowledged seq.
 *
 * @internal
 */
import type { RunStart } from "../../Backend.js"
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
  flightBytes: 0
})

/** A stream as the store left it: `firstPending … nextSeq - 1` pending, nothing in flight. */
export const restore = (
  key: StreamKey,
  stored: { readonly peer: PeerId; readonly lane: Lane; readonly firstPending: number; readonly nextSeq: number },
  runs: ReadonlyArray<RunStart>
): OutStream => ({
  ...make(key, stored.peer, stored.lane),
  runs,
  allocated: stored.nextSeq - 1,
  acked: stored.firstPending - 1,
  nextToSend: stored.firstPending,
  highestSent: stored.firstPending - 1
})

/** Seqs `first … last` were stored by `run`. */
export const allocate = (stream: OutStream, run: number, first: number, last: number): OutStream => ({
  ...stream,
  runs: Runs.extend(stream.runs, run, first),
  allocated: Math.max(stream.allocated, last)
})

export const pending = (stream: OutStream): number => stream.allocated - stream.acked

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

/**
 * How many of the next messages, of these payload sizes, the window's byte bound lets out: at least one when
 * nothing is in flight, so a message larger than the bound still goes.
 */
export const fitting = (stream: OutStream, sizes: ReadonlyArray<number>, windowBytes: number): number => {
  let bytes = stream.flightBytes
  let count = 0
  while (
    count < sizes.length && (bytes + sizes[count]! <= windowBytes || (count === 0 && stream.flight.length === 0))
  ) {
    bytes += sizes[count++]!
  }
  return count
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
 * - `"acked"`: the stream moved; `sample` is a measured round trip when the probe was covered;
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
    return {
      _tag: "acked",
      count: upTo - stream.acked,
      sample: sampled ? now - probe.at : undefined,
      stream: {
        ...stream,
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
