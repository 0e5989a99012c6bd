/**
 * Stream keys: one string per (peer, lane), the key every map of streams uses, in the engine and in the stores.
 *
 * @since 0.2.0
 */
import * as Brand from "effect/Brand"

/**
 * The key of the stream with a peer in a lane. The peer's length comes first, so ("ab", "c") and ("a", "bc") get
 * different keys.
 *
 * @since 0.2.0
 * @category models
 */
export type StreamKey = string & Brand.Brand<"@intersession/core/StreamKey">

const nominal = Brand.nominal<StreamKey>()

/**
 * The key of the stream with `peer` in `lane`.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (peer: string, lane: string): StreamKey => nominal(`${peer.length}:${peer}${lane}`)
