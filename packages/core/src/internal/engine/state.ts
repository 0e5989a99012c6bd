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
import type * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as STM from "effect/STM"
import * as TMap from "effect/TMap"
import * as TRef from "effect/TRef"
import type { Acknowledgement } from "../../Backend.js"
import type { Incarnation } from "../../Incarnation.js"
import type { Lane } from "../../Lane.js"
import type { PeerId } from "../../PeerId.js"
import type { StreamKey } from "../../StreamKey.js"
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
  readonly rtt: Rtt
}

/**
 * An acknowledgement this peer owes a sender, and how many times to send it: more than once when frames arrived
 * past a gap, so the sender sees repeated acknowledgements as it would had they arrived one by one.
 */
export interface AckToSend {
  readonly peer: PeerId
  readonly lane: Lane
  readonly incarnation: Incarnation
  readonly upTo: number
  readonly copies: number
}

/** The most copies of one acknowledgement sent together: three repeats make the sender resend a gap. */
export const maxCopies = 3

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
  readonly peers: TMap.TMap<PeerId, PeerLink>
  readonly outs: TMap.TMap<StreamKey, OutStream>
  readonly ins: TMap.TMap<StreamKey, InStream>
  /** Outbound streams the pump should look at: new messages, an opened window, a resend. */
  readonly outReady: TRef.TRef<ReadonlySet<StreamKey>>
  /** Inbound streams whose next message may be deliverable. */
  readonly inReady: TRef.TRef<ReadonlySet<StreamKey>>
  readonly acksToSend: TRef.TRef<ReadonlyMap<StreamKey, AckToSend>>
  /** Acknowledged messages the store may forget. */
  readonly deletions: TRef.TRef<ReadonlyMap<StreamKey, Acknowledgement>>
  /** Retransmission deadlines of streams with messages in flight. */
  readonly deadlines: TMap.TMap<StreamKey, number>
  /** Bumped when a deadline is armed, so the timer wakes to look for an earlier one. */
  readonly deadlinesVersion: TRef.TRef<number>
  /** Stored and unacknowledged messages per destination, sends in progress included. */
  readonly pendingByPeer: TMap.TMap<PeerId, number>
  readonly closed: TRef.TRef<boolean>
}

export const make: Effect.Effect<State> = STM.commit(STM.all({
  peers: TMap.empty<PeerId, PeerLink>(),
  outs: TMap.empty<StreamKey, OutStream>(),
  ins: TMap.empty<StreamKey, InStream>(),
  outReady: TRef.make<ReadonlySet<StreamKey>>(new Set()),
  inReady: TRef.make<ReadonlySet<StreamKey>>(new Set()),
  acksToSend: TRef.make<ReadonlyMap<StreamKey, AckToSend>>(new Map()),
  deletions: TRef.make<ReadonlyMap<StreamKey, Acknowledgement>>(new Map()),
  deadlines: TMap.empty<StreamKey, number>(),
  deadlinesVersion: TRef.make(0),
  pendingByPeer: TMap.empty<PeerId, number>(),
  closed: TRef.make(false)
}))

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

export const addPending = (state: State, peer: PeerId, delta: number): STM.STM<void> =>
  TMap.merge(state.pendingByPeer, peer, delta, (a, b) => a + b)

export const totalPending = (state: State): STM.STM<number> =>
  STM.map(TMap.values(state.pendingByPeer), (values) => values.reduce((sum, n) => sum + n, 0))

/** The outbound streams to one peer. */
export const streamsTo = (state: State, peer: PeerId): STM.STM<Array<OutStream>> =>
  STM.map(TMap.values(state.outs), (all) => all.filter((stream) => stream.peer === peer))

/** The inbound streams from one peer. */
export const streamsFrom = (state: State, peer: PeerId): STM.STM<Array<InStream>> =>
  STM.map(TMap.values(state.ins), (all) => all.filter((stream) => stream.peer === peer))

export const getOrUndefined = <K, V>(map: TMap.TMap<K, V>, key: K): STM.STM<V | undefined> =>
  STM.map(TMap.get(map, key), Option.getOrUndefined)
