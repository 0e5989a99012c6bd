import { assert, describe, it } from "@effect/vitest"
import {
  Backend,
  type BackendError,
  type DroppedMessages,
  type DropReason,
  type OutboundStream
} from "@intersession/core/Backend"
import * as PeerId from "@intersession/core/PeerId"
import { InMemoryBackend } from "@intersession/testing"
import * as BackendSuite from "@intersession/testing/BackendSuite"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"

const fixture = Layer.succeed(
  BackendSuite.BackendFixture,
  BackendSuite.BackendFixture.of({
    makeStore: Effect.map(InMemoryBackend.makeStore(), (store) => ({
      open: Effect.map(Layer.build(InMemoryBackend.layer(store)), Context.get(Backend))
    }))
  })
)

BackendSuite.backendSuite("InMemoryBackend", fixture)

const A = PeerId.make("A")
const B = PeerId.make("B")
const run = 7
const text = (value: string) => new TextEncoder().encode(value)
const decoded = (messages: ReadonlyArray<{ readonly payload: Uint8Array }>) =>
  messages.map((message) => new TextDecoder().decode(message.payload))

/** How many seqs `expire` or `purge` reported. */
const countOf = (dropped: ReadonlyArray<DroppedMessages>): number =>
  dropped.reduce((sum, stream) => sum + stream.seqs.reduce((n, { from, to }) => n + to - from + 1, 0), 0)

const open = (store: InMemoryBackend.Store) =>
  Effect.map(Layer.build(InMemoryBackend.layer(store)), Context.get(Backend))

describe("InMemoryBackend controls", () => {
  it.scoped("wipe forgets everything, and the next open starts a newer incarnation", () =>
    Effect.gen(function*() {
      const store = yield* InMemoryBackend.makeStore()
      assert.isUndefined(yield* store.incarnation)
      const before = yield* Effect.scoped(Effect.gen(function*() {
        const backend = yield* open(store)
        yield* backend.append([{ peer: A, lane: "x", payload: text("a1") }, {
          peer: A,
          lane: "x",
          payload: text("a2")
        }], run)
        yield* backend.setIncarnation(B, backend.incarnation)
        yield* backend.commitReceived([{
          peer: B,
          lane: "x",
          incarnation: backend.incarnation,
          delivered: 3,
          runs: []
        }])
        return backend.incarnation
      }))
      assert.strictEqual(yield* store.incarnation, before)
      assert.strictEqual(yield* store.pendingCount, 2)
      yield* store.wipe
      assert.isUndefined(yield* store.incarnation)
      assert.strictEqual(yield* store.pendingCount, 0)
      yield* TestClock.adjust("1 second")
      const backend = yield* open(store)
      assert.isAbove(backend.incarnation, before)
      assert.strictEqual(yield* store.incarnation, backend.incarnation)
      assert.deepStrictEqual(yield* backend.outbound, { streams: [], incarnations: [] })
      assert.deepStrictEqual(yield* backend.received, [])
      assert.deepStrictEqual(yield* backend.read(A, "x", 1, 10), [])
      assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text("new") }], run), [1])
    }))

  it.scoped("restore brings back a snapshot's content, even after later writes", () =>
    Effect.gen(function*() {
      const store = yield* InMemoryBackend.makeStore()
      const snapshot = yield* Effect.scoped(Effect.gen(function*() {
        const backend = yield* open(store)
        yield* backend.append([1, 2, 3].map((i) => ({ peer: A, lane: "x", payload: text(`m${i}`) })), run)
        yield* backend.commitReceived([{
          peer: B,
          lane: "x",
          incarnation: backend.incarnation,
          delivered: 1,
          runs: []
        }])
        const snapshot = yield* store.snapshot
        // Writes after the snapshot do not reach it.
        yield* backend.acknowledge([{ peer: A, lane: "x", upTo: 3 }])
        yield* backend.append([{ peer: A, lane: "x", payload: text("m4") }], run)
        yield* backend.commitReceived([{
          peer: B,
          lane: "x",
          incarnation: backend.incarnation,
          delivered: 9,
          runs: []
        }])
        return snapshot
      }))
      for (const round of [1, 2]) {
        yield* store.restore(snapshot)
        yield* Effect.scoped(Effect.gen(function*() {
          const backend = yield* open(store)
          const outbound = yield* backend.outbound
          assert.deepStrictEqual(
            outbound.streams,
            [{ peer: A, lane: "x", firstPending: 1, nextSeq: 4, runs: [{ run, from: 1 }], dropped: [] }],
            `round ${round}`
          )
          assert.deepStrictEqual(decoded(yield* backend.read(A, "x", 1, 10)), ["m1", "m2", "m3"])
          assert.deepStrictEqual((yield* backend.received).map((state) => state.delivered), [1])
          // Writing to the restored store leaves the snapshot as it was, for the next round.
          assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text("m4'") }], run), [4])
          yield* backend.acknowledge([{ peer: A, lane: "x", upTo: 2 }])
        }))
      }
    }))

  it.scoped("failNext makes the next operations fail with BackendError, then the store recovers", () =>
    Effect.gen(function*() {
      const store = yield* InMemoryBackend.makeStore()
      const backend = yield* open(store)
      yield* backend.append([{ peer: A, lane: "x", payload: text("kept") }], run)
      yield* store.failNext(2)
      const first = yield* Effect.flip(backend.append([{ peer: A, lane: "x", payload: text("refused") }], run))
      assert.strictEqual(first._tag, "BackendError")
      assert.strictEqual(first.operation, "append")
      assert.include(first.message, "append")
      const second = yield* Effect.flip(backend.read(A, "x", 1, 10))
      assert.strictEqual(second.operation, "read")
      assert.deepStrictEqual(decoded(yield* backend.read(A, "x", 1, 10)), ["kept"])
      assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text("next") }], run), [2])
    }))

  it.scoped("setFailing makes every operation fail until it is turned off", () =>
    Effect.gen(function*() {
      const store = yield* InMemoryBackend.makeStore()
      const backend = yield* open(store)
      yield* backend.append([{ peer: A, lane: "x", payload: text("kept"), expiresAt: 0 }], run)
      yield* store.setFailing(true)
      const operations = [
        ["outbound", backend.outbound],
        ["append", backend.append([{ peer: A, lane: "x", payload: text("refused") }], run)],
        ["read", backend.read(A, "x", 1, 10)],
        ["acknowledge", backend.acknowledge([{ peer: A, lane: "x", upTo: 1 }])],
        ["expire", backend.expire(Number.MAX_SAFE_INTEGER, 10)],
        ["purge", backend.purge(A, undefined)],
        ["setIncarnation", backend.setIncarnation(B, backend.incarnation)],
        ["received", backend.received],
        [
          "commitReceived",
          backend.commitReceived([{ peer: B, lane: "x", incarnation: backend.incarnation, delivered: 1, runs: [] }])
        ]
      ] as const
      for (let round = 0; round < 2; round++) {
        for (const [name, operation] of operations) {
          const error = yield* Effect.flip<unknown, BackendError, never>(operation)
          assert.strictEqual(error._tag, "BackendError")
          assert.strictEqual(error.operation, name)
        }
      }
      yield* store.setFailing(false)
      assert.deepStrictEqual(decoded(yield* backend.read(A, "x", 1, 10)), ["kept"])
      assert.deepStrictEqual(yield* backend.append([{ peer: A, lane: "x", payload: text("next") }], run), [2])
      assert.deepStrictEqual(yield* backend.received, [])
    }))
})

describe("InMemoryBackend expiry and purge", () => {
  it.scoped("a snapshot keeps dropped seqs, their reasons and expiries; expiring or purging after it does not reach it", () =>
    Effect.gen(function*() {
      const store = yield* InMemoryBackend.makeStore()
      const expected: Array<OutboundStream> = [{
        peer: A,
        lane: "x",
        firstPending: 1,
        nextSeq: 5,
        runs: [{ run, from: 1 }],
        dropped: [{ from: 2, to: 2, run, reason: "expired" }]
      }, {
        peer: A,
        lane: "y",
        firstPending: 2,
        nextSeq: 2,
        runs: [{ run, from: 1 }],
        dropped: [{ from: 1, to: 1, run, reason: "purged" }]
      }]
      const snapshot = yield* Effect.scoped(Effect.gen(function*() {
        const backend = yield* open(store)
        yield* backend.append([
          { peer: A, lane: "x", payload: text("m1"), expiresAt: 200 },
          { peer: A, lane: "x", payload: text("m2"), expiresAt: 100 },
          { peer: A, lane: "x", payload: text("m3") },
          { peer: A, lane: "x", payload: text("m4"), expiresAt: 300 },
          { peer: A, lane: "y", payload: text("y1") }
        ], run)
        assert.strictEqual(countOf(yield* backend.expire(100, 10)), 1)
        assert.strictEqual(countOf(yield* backend.purge(A, "y")), 1)
        const snapshot = yield* store.snapshot
        // Writes after the snapshot, into the same segment of messages, do not reach it.
        assert.strictEqual(countOf(yield* backend.expire(200, 10)), 1)
        assert.strictEqual(countOf(yield* backend.purge(A, "x")), 2)
        assert.strictEqual(yield* store.pendingCount, 0)
        return snapshot
      }))
      for (const round of [1, 2]) {
        yield* store.restore(snapshot)
        assert.strictEqual(yield* store.pendingCount, 3, `round ${round}`)
        yield* Effect.scoped(Effect.gen(function*() {
          const backend = yield* open(store)
          assert.deepStrictEqual((yield* backend.outbound).streams, expected, `round ${round}`)
          const stored = yield* backend.read(A, "x", 1, 10)
          assert.deepStrictEqual(decoded(stored), ["m1", "m3", "m4"])
          assert.deepStrictEqual(stored.map((message) => message.expiresAt), [200, undefined, 300])
          assert.deepStrictEqual(yield* backend.expire(300, 10), [{
            peer: A,
            lane: "x",
            seqs: [{ from: 1, to: 1, run }, { from: 4, to: 4, run }]
          }])
        }))
      }
    }))

  it.scoped("pendingCount counts stored messages only; heldFor has a lane once an acknowledgement covers a seq", () =>
    Effect.gen(function*() {
      const store = yield* InMemoryBackend.makeStore()
      const backend = yield* open(store)
      yield* backend.append([1, 2, 3].map((i) => ({ peer: A, lane: "x", payload: text(`m${i}`), expiresAt: i })), run)
      yield* backend.append([{ peer: A, lane: "y", payload: text("y1") }], run)
      assert.strictEqual(yield* store.pendingCount, 4)
      yield* backend.expire(1, 10)
      yield* backend.purge(A, "y")
      assert.strictEqual(yield* store.pendingCount, 2)
      // Dropped seqs are not acknowledged ones: the peer has seen nothing yet.
      assert.deepStrictEqual((yield* store.heldFor(A)).acknowledged, [])
      yield* backend.acknowledge([{ peer: A, lane: "y", upTo: 1 }])
      assert.deepStrictEqual((yield* store.heldFor(A)).acknowledged, ["y"])
      yield* backend.acknowledge([{ peer: A, lane: "x", upTo: 2 }])
      assert.strictEqual(yield* store.pendingCount, 1)
      assert.deepStrictEqual((yield* store.heldFor(A)).acknowledged, ["x", "y"])
    }))

  it.scoped("sweeps with nothing due remove nothing from a million pending messages, and a due one is found", () =>
    Effect.gen(function*() {
      const backend = yield* open(yield* InMemoryBackend.makeStore())
      const payload = new Uint8Array(8)
      for (let i = 0; i < 10; i++) {
        yield* backend.append(Array.from({ length: 100_000 }, () => ({ peer: A, lane: "x", payload })), run)
      }
      // One message that expires much later, so that the stream has something to look at.
      yield* backend.append([{ peer: A, lane: "x", payload, expiresAt: 1_000_000 }], run)
      yield* backend.append(Array.from({ length: 100_000 }, () => ({ peer: B, lane: "x", payload })), run)
      // Its cost is the benchmark's business, not a test's: here, that nothing is removed before it is due.
      for (let sweep = 0; sweep < 1000; sweep++) assert.deepStrictEqual(yield* backend.expire(sweep, 1000), [])
      assert.deepStrictEqual(yield* backend.expire(1_000_000, 1000), [{
        peer: A,
        lane: "x",
        seqs: [{ from: 1_000_001, to: 1_000_001, run }]
      }])
    }))

  it.scoped("a long random mix of operations agrees with a plain model of the contract", () =>
    Effect.gen(function*() {
      const store = yield* InMemoryBackend.makeStore()
      const backend = yield* open(store)
      let state = 12345
      const random = (n: number) => {
        state = (state * 1103515245 + 12345) % 2147483648
        return state % n
      }
      const streams = [[A, "x"], [A, "y"], [B, "x"]] as const
      interface Model {
        readonly stored: Map<number, { readonly run: number; readonly expiresAt: number | undefined }>
        readonly dropped: Map<number, { readonly run: number; readonly reason: DropReason }>
        readonly runs: Map<number, number>
        nextSeq: number
        acknowledged: number
      }
      const models = streams.map((): Model => ({
        stored: new Map(),
        dropped: new Map(),
        runs: new Map(),
        nextSeq: 1,
        acknowledged: 0
      }))
      const modelOf = (peer: string, lane: string) => models[streams.findIndex(([p, l]) => p === peer && l === lane)]!
      const dropInModel = (dropped: ReadonlyArray<DroppedMessages>, reason: DropReason) => {
        for (const { lane, peer, seqs } of dropped) {
          const model = modelOf(peer, lane)
          for (const { from, run, to } of seqs) {
            for (let seq = from; seq <= to; seq++) {
              assert.strictEqual(model.stored.get(seq)?.run, run, `${peer}/${lane} ${seq} was stored with run ${run}`)
              model.stored.delete(seq)
              model.dropped.set(seq, { run, reason })
            }
          }
        }
      }
      for (let step = 0; step < 1500; step++) {
        const which = random(streams.length)
        const [peer, lane] = streams[which]!
        const model = models[which]!
        const operation = random(10)
        if (operation < 4) {
          const runOfAppend = 1 + random(2)
          const count = 1 + random(5)
          const messages = Array.from({ length: count }, () => {
            const expiresAt = random(3) === 0 ? undefined : random(40)
            return { peer, lane, payload: text(`${step}`), expiresAt }
          })
          yield* backend.append(messages, runOfAppend)
          for (const { expiresAt } of messages) {
            model.runs.set(model.nextSeq, runOfAppend)
            model.stored.set(model.nextSeq++, { run: runOfAppend, expiresAt })
          }
        } else if (operation < 6) {
          // Now and then everything so far, as a peer that catches up; else a few seqs more, or fewer than before.
          const upTo = random(4) === 0 ? model.nextSeq - 1 + random(3) : model.acknowledged - 2 + random(8)
          yield* backend.acknowledge([{ peer, lane, upTo }])
          model.acknowledged = Math.max(model.acknowledged, Math.min(upTo, model.nextSeq - 1))
          for (const seq of [...model.stored.keys(), ...model.dropped.keys()]) {
            if (seq <= model.acknowledged) {
              model.stored.delete(seq)
              model.dropped.delete(seq)
            }
          }
        } else if (operation < 9) {
          const now = random(40)
          const limit = 1 + random(6)
          const due = models.reduce(
            (sum, m) =>
              sum +
              [...m.stored.values()].filter(({ expiresAt }) => expiresAt !== undefined && expiresAt <= now).length,
            0
          )
          const expired = yield* backend.expire(now, limit)
          assert.strictEqual(countOf(expired), Math.min(due, limit), `step ${step}: expire(${now}, ${limit})`)
          for (const { lane, peer, seqs } of expired) {
            for (const { from, to } of seqs) {
              for (let seq = from; seq <= to; seq++) {
                const expiresAt = modelOf(peer, lane).stored.get(seq)?.expiresAt
                assert.isTrue(
                  expiresAt !== undefined && expiresAt <= now,
                  `step ${step}: ${peer}/${lane} ${seq} was due`
                )
              }
            }
          }
          dropInModel(expired, "expired")
        } else {
          const purgeLane = random(2) === 0 ? undefined : lane
          const purged = yield* backend.purge(peer, purgeLane)
          const expected = streams.filter(([p, l]) => p === peer && (purgeLane === undefined || l === purgeLane))
            .reduce((sum, [p, l]) => sum + modelOf(p, l).stored.size, 0)
          assert.strictEqual(countOf(purged), expected, `step ${step}: purge`)
          dropInModel(purged, "purged")
        }
        // The whole state against the model, after every step.
        const outbound = yield* backend.outbound
        for (const [i, [peer, lane]] of streams.entries()) {
          const model = models[i]!
          const storedSeqs = [...model.stored.keys()].sort((a, b) => a - b)
          const stored = yield* backend.read(peer, lane, 1, 1_000_000)
          assert.deepStrictEqual(
            stored.map(({ expiresAt, run, seq }) => ({ seq, run, expiresAt })),
            storedSeqs.map((seq) => ({ seq, ...model.stored.get(seq)! })),
            `step ${step}: ${peer}/${lane} read`
          )
          // Joined where seqs follow each other, dropped for one reason, in one run.
          const dropped: Array<{ from: number; to: number; run: number; reason: DropReason }> = []
          for (const seq of [...model.dropped.keys()].sort((a, b) => a - b)) {
            const last = dropped[dropped.length - 1]
            const { reason, run: runOfSeq } = model.dropped.get(seq)!
            if (last !== undefined && last.to + 1 === seq && last.run === runOfSeq && last.reason === reason) {
              last.to = seq
            } else dropped.push({ from: seq, to: seq, run: runOfSeq, reason })
          }
          const runs: Array<{ run: number; from: number }> = []
          for (let seq = model.acknowledged + 1; seq < model.nextSeq; seq++) {
            const runOfSeq = model.runs.get(seq)!
            if (runs[runs.length - 1]?.run !== runOfSeq) runs.push({ run: runOfSeq, from: seq })
          }
          const reported = outbound.streams.find((stream) => stream.peer === peer && stream.lane === lane)
          if (model.nextSeq === 1) {
            assert.isUndefined(reported, `step ${step}: ${peer}/${lane} never allocated`)
            continue
          }
          assert.deepStrictEqual(reported, {
            peer,
            lane,
            firstPending: storedSeqs[0] ?? model.nextSeq,
            nextSeq: model.nextSeq,
            runs,
            dropped
          }, `step ${step}: ${peer}/${lane} outbound`)
        }
        assert.strictEqual(
          yield* store.pendingCount,
          models.reduce((sum, model) => sum + model.stored.size, 0),
          `step ${step}: pendingCount`
        )
      }
    }))
})
