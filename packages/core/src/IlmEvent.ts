/**
 * What the engine reports as it runs.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import type { RejectReason } from "./Frame.js"
import type { PeerId } from "./PeerId.js"

/**
 * Why a stream was re-synchronised:
 *
 * - `"peer-new-incarnation"`: the source started a new incarnation (its store was wiped or went back in time);
 *   the receiver adopted the new stream at its floor.
 * - `"peer-knows-newer-incarnation"`: the partner knows an incarnation of this peer that is not older than its
 *   own (its clock ran behind when the store was made); this peer moved past it.
 * - `"store-went-back"`: the partner has delivered seqs this store allocated in this run or has not allocated
 *   yet, so the store was restored from an older copy; this peer started a new incarnation for its pending messages.
 * - `"receiver-behind"`: the sender has acknowledgements for seqs this receiver has no record of delivering (its
 *   store was wiped or went back in time); the receiver jumped to the sender's floor.
 * - `"peer-lost-state"`: the partner's `Hello` has no record of a stream it acknowledged before (its store was
 *   wiped); it will adopt the stream at this peer's floor.
 *
 * @since 0.1.0
 * @category models
 */
export type ResyncReason =
  | "peer-new-incarnation"
  | "peer-knows-newer-incarnation"
  | "store-went-back"
  | "receiver-behind"
  | "peer-lost-state"

/**
 * Which way the messages of an event went: `"outbound"` from this peer to `peer`, `"inbound"` from `peer` to this
 * one.
 *
 * @since 0.3.0
 * @category models
 */
export type Direction = "outbound" | "inbound"

/**
 * @since 0.1.0
 * @category models
 */
export type IlmEvent = Data.TaggedEnum<{
  /** The peer is reachable and greeted: messages flow. */
  PeerConnected: { readonly peer: PeerId }
  /** The transport lost the peer; its messages wait. */
  PeerDisconnected: { readonly peer: PeerId }
  /** A stream with `peer` was re-synchronised; `lane` is absent when every lane with the peer was. */
  Resynchronised: {
    readonly peer: PeerId
    readonly lane: string | undefined
    readonly reason: ResyncReason
    readonly detail: string
  }
  /** A frame was refused and changed nothing. `from` is the transport-level peer. */
  FrameRejected: { readonly from: PeerId; readonly reason: RejectReason; readonly detail: string }
  /**
   * Messages expired before their delivery, and `count` of them left the stream. `"outbound"`: this peer's store
   * removed them unacknowledged (one delivered just before it expired, whose acknowledgement came too late, is
   * counted too). `"inbound"`: they were never handed to this peer's application, because their time ran out here
   * or their sender had removed them.
   */
  MessagesExpired: {
    readonly peer: PeerId
    readonly lane: string
    readonly direction: Direction
    readonly count: number
  }
  /** Messages purged by the application (`"outbound"`: this peer's; `"inbound"`: the sender's), never delivered. */
  MessagesPurged: {
    readonly peer: PeerId
    readonly lane: string
    readonly direction: Direction
    readonly count: number
  }
  /**
   * The lane's delivery policy gave up on a message (or its `Delivery` failed for good): it moved to this peer's
   * dead letters after `attempts` tries, and its stream went on. `error` is the last failure.
   */
  DeadLettered: {
    readonly peer: PeerId
    readonly lane: string
    readonly seq: number
    readonly attempts: number
    readonly error: unknown
  }
  /** The `Delivery` failed; the message stays pending and is retried after `retryIn` milliseconds. */
  DeliveryFailed: {
    readonly peer: PeerId
    readonly lane: string
    readonly seq: number
    readonly attempt: number
    readonly retryInMillis: number
    readonly error: unknown
  }
}>

/**
 * Constructors and matchers of {@link IlmEvent}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const IlmEvent = Data.taggedEnum<IlmEvent>()
