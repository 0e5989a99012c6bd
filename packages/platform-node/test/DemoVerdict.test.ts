/**
 * The demo's judgement, with no process: which kills landed mid-transfer, and when a run fails (a broken promise, or
 * kills of which none landed while messages were in flight).
 */
import { assert, describe, it } from "@effect/vitest"
import { DemoFailedError, formatReport } from "../src/Cli.js"
import * as Demo from "../src/internal/demo.js"

/** A kill of A after each peer sent 100 messages and each delivered 100: nothing in flight. */
const settled: Demo.Kill = {
  victim: "A",
  other: "B",
  victimSent: 100,
  otherSent: 100,
  victimReceived: 100,
  otherReceivedBefore: 100,
  otherReceivedAfter: 100
}

const clean = (from: string, to: string): Demo.Direction => ({
  from,
  to,
  sent: 50,
  delivered: 50,
  lost: 0,
  duplicated: 0,
  outOfOrder: 0
})

describe("the demo's verdict", () => {
  it("a kill with messages to the victim not yet delivered landed mid-transfer", () => {
    const kill = { ...settled, otherSent: 104, victimReceived: 101 }
    assert.deepStrictEqual(Demo.inFlight(kill), { toVictim: 3, fromVictim: 0 })
    assert.isTrue(Demo.landedMidTransfer(kill))
  })

  it("a kill with messages from the victim not yet delivered landed mid-transfer", () => {
    const kill = { ...settled, victimSent: 120, otherReceivedBefore: 90, otherReceivedAfter: 110 }
    assert.deepStrictEqual(Demo.inFlight(kill), { toVictim: 0, fromVictim: 10 })
    assert.isTrue(Demo.landedMidTransfer(kill))
  })

  it("a kill with everything sent delivered did not", () => {
    assert.deepStrictEqual(Demo.inFlight(settled), { toVictim: 0, fromVictim: 0 })
    assert.isFalse(Demo.landedMidTransfer(settled))
  })

  it("a kill before the transfer started did not, even with messages accepted for the victim", () => {
    const kill = { ...settled, victimSent: 0, otherSent: 40, victimReceived: 0, otherReceivedBefore: 0 }
    assert.strictEqual(Demo.inFlight(kill).toVictim, 40)
    assert.isFalse(Demo.landedMidTransfer(kill))
    // As soon as the victim had sent one message, the transfer had started.
    assert.isTrue(Demo.landedMidTransfer({ ...kill, victimSent: 1 }))
  })

  it("a kill the other's later report cannot tell from a settled one did not: the bounds never guess", () => {
    // The victim had sent 130; the other had delivered 120 before the kill and 130 by its first report after it.
    // Those 10 may all have been delivered before the kill.
    const kill = { ...settled, victimSent: 130, otherReceivedBefore: 120, otherReceivedAfter: 130 }
    assert.deepStrictEqual(Demo.inFlight(kill), { toVictim: 0, fromVictim: 0 })
    assert.isFalse(Demo.landedMidTransfer(kill))
  })

  it("a run passes when every promise held and a kill landed mid-transfer", () => {
    const directions = [clean("A", "B"), clean("B", "A")]
    assert.deepStrictEqual(Demo.verdict({ messages: 50, kills: 3 }, directions, 1), [])
    assert.deepStrictEqual(Demo.verdict({ messages: 50, kills: 0 }, directions, 0), [])
  })

  it("a run with kills fails when none landed mid-transfer, even with every promise held", () => {
    const directions = [clean("A", "B"), clean("B", "A")]
    assert.deepStrictEqual(Demo.verdict({ messages: 50, kills: 3 }, directions, 0), [
      "no kill landed mid-transfer (0 of 3), so the kills proved nothing"
    ])
  })

  it("a run fails with each broken promise, per direction", () => {
    const directions = [{ ...clean("A", "B"), lost: 2, duplicated: 1 }, { ...clean("B", "A"), sent: 49, outOfOrder: 3 }]
    assert.deepStrictEqual(Demo.verdict({ messages: 50, kills: 3 }, directions, 2), [
      "A→B: 2 lost, 1 duplicated",
      "B→A: 49 of 50 sent, 3 out of order"
    ])
  })

  it("the report prints the kills mid-transfer, and a failure says why", () => {
    const landed = { ...settled, otherSent: 104, victimReceived: 101 }
    const base = {
      directions: [clean("A", "B"), clean("B", "A")],
      kills: 2,
      restarts: { A: 2, B: 0 },
      elapsedMillis: 20_000,
      messagesPerSecond: 5
    }
    const passed: Demo.Report = {
      ...base,
      killLog: [{ ...settled, midTransfer: false }, { ...landed, midTransfer: true }],
      killsMidTransfer: 1,
      failures: [],
      ok: true
    }
    const text = formatReport(passed)
    assert.include(text, "kills mid-transfer: 1 of 2 (messages in flight at each, at least: 0 3)")
    assert.include(text, "every promise held through kills mid-transfer")

    const failures = Demo.verdict({ messages: 50, kills: 2 }, base.directions, 0)
    const failed: Demo.Report = {
      ...base,
      killLog: [{ ...settled, midTransfer: false }, { ...settled, midTransfer: false }],
      killsMidTransfer: 0,
      failures,
      ok: false
    }
    assert.include(formatReport(failed), "kills mid-transfer: 0 of 2 (messages in flight at each, at least: 0 0)")
    assert.include(formatReport(failed), "FAILED: no kill landed mid-transfer (0 of 2)")
    assert.strictEqual(
      new DemoFailedError({ report: failed }).message,
      "The demo failed: no kill landed mid-transfer (0 of 2), so the kills proved nothing"
    )
  })
})
