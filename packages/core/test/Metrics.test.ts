/**
 * The engine's metrics are tagged per engine (`local`) and per stream (`peer`, `lane`), so two engines in one
 * process keep separate series.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Metrics from "@intersession/core/IlmMetrics"
import * as PeerId from "@intersession/core/PeerId"
import { InMemoryNetwork, TestPeer } from "@intersession/testing"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricLabel from "effect/MetricLabel"
import * as TestClock from "effect/TestClock"
import { awaitAcknowledged, awaitReceived, text } from "./helpers.js"

// Ids no other test uses: metrics are global to the process.
const left = PeerId.make("metrics-left")
const right = PeerId.make("metrics-right")
const third = PeerId.make("metrics-third")

const series = <Type, In, Out>(metric: Metric.Metric<Type, In, Out>, tags: Record<string, string>) =>
  Metric.value(
    Metric.taggedWithLabels(metric, Object.entries(tags).map(([key, value]) => MetricLabel.make(key, value)))
  )

const count = (metric: Metric.Metric.Counter<number>, tags: Record<string, string>) =>
  Effect.map(series(metric, tags), (state) => state.count)

describe("metrics", () => {
  it.scoped("counters are tagged with the local peer, the remote peer and the lane", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const l = yield* TestPeer.make(left)
      const r = yield* TestPeer.make(right)
      const t = yield* TestPeer.make(third)
      const rl = yield* TestPeer.start(hub, l)
      yield* TestPeer.start(hub, r)
      const rt = yield* TestPeer.start(hub, t)
      yield* rl.ilm.sendAll(right, [text("1"), text("2"), text("3")], { lane: "orders" })
      yield* rt.ilm.send(right, text("4"), { lane: "orders" })
      yield* rl.ilm.send(right, text("x"), { lane: "other", timeToLive: "1 second" })
      yield* awaitReceived(r, 5)
      yield* awaitAcknowledged(l)
      yield* awaitAcknowledged(t)

      assert.strictEqual(yield* count(Metrics.sent, { local: left, peer: right, lane: "orders" }), 3)
      assert.strictEqual(yield* count(Metrics.sent, { local: third, peer: right, lane: "orders" }), 1)
      assert.strictEqual(yield* count(Metrics.sent, { local: left, peer: right, lane: "other" }), 1)
      assert.strictEqual(yield* count(Metrics.acked, { local: left, peer: right, lane: "orders" }), 3)
      assert.strictEqual(yield* count(Metrics.delivered, { local: right, peer: left, lane: "orders" }), 3)
      assert.strictEqual(yield* count(Metrics.delivered, { local: right, peer: third, lane: "orders" }), 1)
      // Each engine's pending gauge is its own.
      assert.strictEqual((yield* series(Metrics.pending, { local: left })).value, 0)

      yield* rl.ilm.send(PeerId.make("metrics-absent"), text("lost cause"), { timeToLive: "1 second" })
      assert.strictEqual((yield* series(Metrics.pending, { local: left })).value, 1)
      yield* TestClock.adjust("3 seconds")
      const expired = { local: left, peer: "metrics-absent", lane: "default", direction: "outbound" }
      assert.strictEqual(yield* count(Metrics.expired, expired), 1)
      assert.strictEqual((yield* series(Metrics.pending, { local: left })).value, 0)
    }))
})
