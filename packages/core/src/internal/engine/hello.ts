/**
 * `Hello` planning, as pure functions: what a peer tells its partner about the streams it receives, and what a
 * fresh `Hello` from the partner means for this peer's outbound streams — acknowledgements, and whether this
 * peer's store went back in time and needs a new incarnation (protocol.md §3, rules 5, 7 and 8).
 *
 * @internal
 */
import type * as Frame from "../../Frame.js"
import type { ResyncReason } from "../../IlmEvent.js"
import type { Incarnation } from "../../Incarnation.js"
import * as Runs from "../runs.js"
import type { InStream } from "./inbound.js"
import type { OutStream } from "./outbound.js"

/** What this peer has delivered of each stream it receives from the partner, for its `Hello`. */
export const laneStates = (streams: ReadonlyArray<InStream>): Array<typeof Frame.LaneState.Type> =>
  streams.map((stream) => ({
    lane: stream.lane,
    incarnation: stream.incarnation,
    delivered: stream.delivered,
    runs: stream.runs
  }))

export interface Resync {
  readonly reason: ResyncReason
  readonly detail: string
  /** The new incarnation must be newer than this one. */
  readonly after: number
}

export interface Plan {
  /** Acknowledgements the `Hello` carries, per outbound stream. */
  readonly acks: ReadonlyArray<{ readonly stream: OutStream; readonly upTo: number }>
  /** Set when this peer must move to a new incarnation before it links. */
  readonly resync: Resync | undefined
  /** Streams the partner acknowledged before and has no record of now: its store was wiped. */
  readonly forgotten: ReadonlyArray<OutStream>
}

/** Reads a fresh `Hello` against this peer's outbound streams to its sender, which run under `incarnation`. */
export const plan = (
  hello: Frame.Hello,
  incarnation: Incarnation,
  streams: ReadonlyArray<OutStream>
): Plan => {
  const acks: Array<{ readonly stream: OutStream; readonly upTo: number }> = []
  let resync: Resync | undefined
  const known = hello.lanes.reduce((max, lane) => Math.max(max, lane.incarnation), 0)
  if (known > incarnation) {
    resync = {
      reason: "peer-knows-newer-incarnation",
      detail: `peer knows incarnation ${known}, this peer runs ${incarnation}`,
      after: known
    }
  }
  const listed = new Set(hello.lanes.map((lane) => lane.lane))
  const forgotten = streams.filter((stream) => stream.acked > 0 && !listed.has(stream.lane))
  const byLane = new Map(streams.map((stream) => [stream.lane, stream]))
  // What the peer delivered counts as acknowledged only as far as its record of the stream shares this store's
  // history, seq by seq and run by run. Beyond that it delivered messages this store no longer has, and reusing
  // their seqs would lose new ones: the store went back in time.
  // A record of a newer incarnation is read the same way: this store is a copy restored from before it, seqs keep
  // their numbers when a store moves on, so a seq and its run still name one message (a `forget` that numbered
  // seqs anew in the same run came after what the copy holds had left the stream). Not one of an older
  // incarnation: after a `forget` this one's seqs start again at 1 and may match it with new messages.
  for (const lane of hello.lanes) {
    if (lane.incarnation < incarnation) continue
    const stream = byLane.get(lane.lane)
    const acked = stream?.acked ?? 0
    if (lane.delivered <= acked) continue
    const shared = stream === undefined
      ? acked
      : Runs.sharedUpTo(stream.runs, lane.runs, acked + 1, Math.min(lane.delivered, stream.allocated))
    if (stream !== undefined && shared > acked) acks.push({ stream, upTo: shared })
    if (shared < lane.delivered) {
      resync ??= {
        reason: "store-went-back",
        detail:
          `peer delivered seq ${lane.delivered} in lane ${lane.lane}; this store shares that history up to ${shared}`,
        after: Math.max(known, incarnation)
      }
    }
  }
  return { acks, resync, forgotten }
}
