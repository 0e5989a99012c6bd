/**
 * The transport the engine runs on.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as Effect from "effect/Effect"
import type * as HashSet from "effect/HashSet"
import type * as Stream from "effect/Stream"
import type * as Subscribable from "effect/Subscribable"
import type { PeerId } from "./PeerId.js"

/**
 * A frame that arrived, with the transport-level peer it came from. `from` is what the transport vouches for
 * (an authenticated connection, say), never what the frame claims.
 *
 * @since 0.1.0
 * @category models
 */
export interface Inbound {
  readonly from: PeerId
  readonly frame: Uint8Array
}

/**
 * A network could not take frames for a peer. The engine treats it like a lost frame and sends again later.
 *
 * @since 0.1.0
 * @category errors
 */
export class NetworkError extends Data.TaggedError("NetworkError")<{
  readonly peer: PeerId
  readonly reason: "Unreachable" | "Closed" | "Io"
  readonly cause?: unknown
}> {
  override get message(): string {
    return `Cannot send to peer ${this.peer}: ${this.reason}`
  }
}

/**
 * Moves opaque frames between peers. It may drop, duplicate, reorder or delay frames: the engine does not care.
 *
 * - `send` hands the frames to the transport in one write where it can; it need not wait for them to arrive.
 * - `inbound` is consumed by exactly one engine.
 * - `connected` holds the peers this one can reach now; the engine greets each peer that appears in it.
 *
 * @since 0.1.0
 * @category tags
 */
export class Network extends Context.Tag("@intersession/core/Network")<Network, {
  readonly localPeer: PeerId
  readonly send: (to: PeerId, frames: ReadonlyArray<Uint8Array>) => Effect.Effect<void, NetworkError>
  readonly inbound: Stream.Stream<Inbound>
  readonly connected: Subscribable.Subscribable<HashSet.HashSet<PeerId>>
}>() {}
