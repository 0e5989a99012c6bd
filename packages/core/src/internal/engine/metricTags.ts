/**
 * The tags of the engine's metrics. Every series is tagged with the local peer (`local`), so that engines in one
 * process keep separate series; a stream's also with the remote peer (`peer`) and the lane (`lane`), and some with
 * `direction` or `reason`. Each tag list is made once and reused: Effect keeps a metric's series per tag list
 * object, so an update with a known list finds its series without building and hashing a key.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Metric from "effect/Metric"
import * as MetricLabel from "effect/MetricLabel"
import type { Direction } from "../../IlmEvent.js"
import type { PeerId } from "../../PeerId.js"

export type Tags = ReadonlyArray<MetricLabel.MetricLabel>

export class MetricTags {
  /** The engine's own series: `local` only. */
  readonly engine: Tags
  private readonly lists = new Map<string, Tags>()

  constructor(local: PeerId) {
    this.engine = [MetricLabel.make("local", local)]
  }

  /** A stream's series, or its series for one direction. */
  stream(peer: PeerId, lane: string, direction?: Direction): Tags {
    const name = `${direction ?? ""}\u0000${peer}\u0000${lane}`
    return this.cached(name, () => [
      ...this.engine,
      MetricLabel.make("peer", peer),
      MetricLabel.make("lane", lane),
      ...(direction === undefined ? [] : [MetricLabel.make("direction", direction)])
    ])
  }

  /** A remote peer's series for one reason (a refused frame's). */
  reason(peer: PeerId, reason: string): Tags {
    return this.cached(`\u0001${peer}\u0000${reason}`, () => [
      ...this.engine,
      MetricLabel.make("peer", peer),
      MetricLabel.make("reason", reason)
    ])
  }

  private cached(name: string, make: () => Tags): Tags {
    let tags = this.lists.get(name)
    if (tags === undefined) this.lists.set(name, tags = make())
    return tags
  }
}

/** Adds `amount` to a counter's series of these tags. */
export const add = (metric: Metric.Metric.Counter<number>, amount: number, tags: Tags): Effect.Effect<void> =>
  amount === 0 ? Effect.void : Effect.sync(() => metric.unsafeUpdate(amount, tags))
