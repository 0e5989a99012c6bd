/**
 * The round-trip estimate and retransmission timeout, without the runtime.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Rtt from "../src/internal/engine/rtt.js"

const bounds: Rtt.RttBounds = { initial: 1000, min: 200, max: 60_000, backoff: 2 }

describe("round-trip estimate", () => {
  it("starts at the initial timeout, and the first sample sets it to three round trips within bounds", () => {
    const initial = Rtt.initial(bounds)
    assert.strictEqual(initial.rto, 1000)
    assert.isUndefined(initial.srtt)
    assert.strictEqual(Rtt.sample(initial, 100, bounds).rto, 300)
    assert.strictEqual(Rtt.sample(initial, 10, bounds).rto, 200)
    assert.strictEqual(Rtt.sample(initial, 100_000, bounds).rto, 60_000)
  })

  it("smooths later samples", () => {
    const first = Rtt.sample(Rtt.initial(bounds), 100, bounds)
    const second = Rtt.sample(first, 200, bounds)
    assert.strictEqual(second.srtt, 0.875 * 100 + 0.125 * 200)
    assert.strictEqual(second.rttvar, 0.75 * 50 + 0.25 * 100)
    assert.strictEqual(second.rto, Math.ceil(second.srtt! + 4 * second.rttvar))
  })

  it("backs off after an expiry up to the bound, and progress ends the back-off", () => {
    const measured = Rtt.sample(Rtt.initial(bounds), 100, bounds)
    const backedOff = Rtt.backoff(Rtt.backoff(measured, bounds), bounds)
    assert.strictEqual(backedOff.rto, 1200)
    assert.strictEqual(Rtt.progress(backedOff, bounds).rto, 300)
    let high = measured
    for (let i = 0; i < 20; i++) high = Rtt.backoff(high, bounds)
    assert.strictEqual(high.rto, 60_000)
    // Without a measurement, progress returns to the initial timeout.
    assert.strictEqual(Rtt.progress(Rtt.backoff(Rtt.initial(bounds), bounds), bounds).rto, 1000)
  })
})
