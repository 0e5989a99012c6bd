/**
 * The engine's shared state: the STM cells its fibers read and write, each transaction once per batch. A fiber
 * with nothing to do waits in `STM.retry` on exactly the cells it needs.
 *
 * Per stream and per peer, the values are immutable records from the pure protocol modules (`outbound.ts`,
 * `inbound.ts`, `rtt.ts`); a transaction computes the next records and returns what happened, and its caller acts
 * on that (sends, stores, reports) once it has committed.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as STM from "effect/STM"
import * as TRef from "effect/TRef"
import type { Acknowledgement } from "../../Backend.js"
import type { Incarnation } from "../../Incarnation.js"
import type { Lane } from "../../Lane.js"
import type { PeerId } from "../../PeerId.js"
import type { StreamKey } from "../../StreamKey.js"
import { Cells } from "./cells.js"
import type { InStream } from "./inbound.js"
import type { OutStream } from "./outbound.js"
import type { Rtt } from "./rtt.js"

/** What this peer knows of a remote peer and its link to it. */
export interface PeerLink {
  readonly peer: PeerId
  /** The incarnation of this peer's outbound streams to `peer`. */
  readonly incarnation: Incarnation
  /** The transport reaches the peer. */
  readonly connected: boolean
  /** Fresh per connection (0 before the first): a `Hello` that echoes it reflects this connection. */
  readonly nonce: number
  /** The last nonce heard from the peer, echoed in this peer's `Hello`s. */
  readonly theirNonce: number
  /** Connected, and a fresh `Hello` arrived: data may flow. */
  readonly linked: boolean
  /** A fresh `Hello` of this run was checked: acknowledgements may be taken. */
  readonly verified: boolean
  /**
   * The session (`theirNonce`, `nonce`) whose `Hello`s were checked for lost state: only the first fresh one of a
   * session is. A later one may have been sent before acknowledgements this peer has already taken, so a lane it
   * does not list proves nothing; and a peer that lost its state starts a new session.
   */
  readonly checkedSession: string | undefined
  /** `ILM.forget` is at work on the peer: nothing is taken from it or sent to it until it is done. */
  readonly forgetting: boolean
  readonly rtt: Rtt
}

/**
 * An acknowledgement this peer owes a sender, and how many times to send it: more than once when frames wait past
 * a gap, so the sender sees repeated acknowledgements as it would had they arrived one by one.
 */
export interface AckToSend {
  readonly peer: PeerId
  readonly lane: Lane
  readonly incarnation: Incarnation
  readonly upTo: number
  readonly copies: number
}

/** The most copies of one acknowledgement sent together: the acknowledgement and the three repeats that make the sender resend a gap. */
export const maxCopies = 4

/** Queues acknowledgements; copies of one still queued add up when they acknowledge the same seq. */
export const queueAcks = (state: State, acks: ReadonlyArray<readonly [StreamKey, AckToSend]>): STM.STM<void> =>
  TRef.update(state.acksToSend, (queued) => {
    const next = new Map(queued)
    for (const [key, ack] of acks) {
      const earlier = next.get(key)
      const copies = earlier !== undefined && earlier.upTo === ack.upTo ? earlier.copies + ack.copies : ack.copies
      next.set(key, { ...ack, copies: Math.min(maxCopies, copies) })
    }
    return next
  })

export interface State {
  readonly peers: Cells<PeerId, PeerLink>
  readonly outs: Cells<StreamKey, OutStream>
  readonly ins: Cells<StreamKey, InStream>
  /** Outbound streams the pump should look at: new messages, an opened window, a resend. */
  readonly outReady: TRef.TRef<ReadonlySet<StreamKey>>
  /** Inbound streams whose next message may be deliverable. */
  readonly inReady: TRef.TRef<ReadonlySet<StreamKey>>
  readonly acksToSend: TRef.TRef<ReadonlyMap<StreamKey, AckToSend>>
  /** Acknowledged messages the store may forget. */
  readonly deletions: TRef.TRef<ReadonlyMap<StreamKey, Acknowledgement>>
  /** Bumped when a retransmission deadline is armed, so the timer wakes to look for an earlier one. */
  readonly deadlinesVersion: TRef.TRef<number>
  /** Stored and unacknowledged messages over all peers, for `drain`. */
  readonly pending: TRef.TRef<number>
  readonly closed: TRef.TRef<boolean>
}

export const make: Effect.Effect<State> = Effect.map(
  STM.commit(STM.all({
    outReady: TRef.make<ReadonlySet<StreamKey>>(new Set()),
    inReady: TRef.make<ReadonlySet<StreamKey>>(new Set()),
    acksToSend: TRef.make<ReadonlyMap<StreamKey, AckToSend>>(new Map()),
    deletions: TRef.make<ReadonlyMap<StreamKey, Acknowledgement>>(new Map()),
    deadlinesVersion: TRef.make(0),
    pending: TRef.make(0),
    closed: TRef.make(false)
  })),
  (cells) => ({
    ...cells,
    peers: new Cells<PeerId, PeerLink>(),
    outs: new Cells<StreamKey, OutStream>(),
    ins: new Cells<StreamKey, InStream>()
  })
)

/** Adds keys to a set cell, copying it only when one is new. */
export const addAll = <K>(cell: TRef.TRef<ReadonlySet<K>>, keys: Iterable<K>): STM.STM<void> =>
  TRef.update(cell, (set) => {
    let next: Set<K> | undefined
    for (const key of keys) {
      if ((next ?? set).has(key)) continue
      next ??= new Set(set)
      next.add(key)
    }
    return next ?? set
  })

/** Takes every entry of a set or map cell, waiting while it is empty. */
export const takeAll = <A extends { readonly size: number }>(cell: TRef.TRef<A>, empty: () => A): STM.STM<A> =>
  STM.flatMap(TRef.get(cell), (all) => all.size === 0 ? STM.retry : STM.as(TRef.set(cell, empty()), all))

/** Sets entries of a map cell, copying it once. */
export const setAll = <K, V>(cell: TRef.TRef<ReadonlyMap<K, V>>, entries: Iterable<readonly [K, V]>): STM.STM<void> =>
  TRef.update(cell, (map) => {
    const next = new Map(map)
    for (const [key, value] of entries) next.set(key, value)
    return next
  })

export const addPending = (state: State, delta: number): STM.STM<void> =>
  delta === 0 ? STM.void : TRef.update(state.pending, (n) => n + delta)

/** The outbound streams to one peer. */
export const streamsTo = (state: State, peer: PeerId): STM.STM<Array<OutStream>> =>
  STM.map(state.outs.values(), (all) => all.filter((stream) => stream.peer === peer))

/** The inbound streams from one peer. */
export const streamsFrom = (state: State, peer: PeerId): STM.STM<Array<InStream>> =>
  STM.map(state.ins.values(), (all) => all.filter((stream) => stream.peer === peer))
