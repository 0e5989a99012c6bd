/**
 * The conformance suite of the `Backend` contract (protocol.md §4, `@intersession/core/Backend`). Every implementation
 * runs the same suite: it provides a {@link BackendFixture} that makes empty stores and opens them, and calls
 * {@link backendSuite} from a test file.
 *
 * @since 0.1.0
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import type {
  Backend,
  BackendError,
  DroppedMessages,
  DroppedRange,
  DropReason,
  OutboundStream,
  ReceiveState,
  RunRange,
  RunStart,
  StoredMessage,
  StoreLockedError
} from "@intersession/core/Backend"
import * as Incarnation from "@intersession/core/Incarnation"
import type { Lane } from "@intersession/core/Lane"
import * as PeerId from "@intersession/core/PeerId"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import type * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import { assertBytes, decoder, pattern, range, text } from "./internal/suiteKit.js"

/**
 * One store of a fixture. `open` takes ownership of the store and gives its `Backend`, as the implementation's layer
 * would; closing the scope of `open` releases the ownership. Every `open` of one `StoreFixture` opens the same
 * underlying store (the same file, the same database schema), so what one owner wrote the next one reads.
 *
 * @since 0.1.0
 * @category models
 */
export interface StoreFixture {
  readonly open: Effect.Effect<Backend["Type"], StoreLockedError | BackendError, Scope.Scope>
}

/**
 * What the suite needs from an implementation: `makeStore` makes a new, empty store (a file in a temporary
 * directory, a fresh schema) that lives as long as the scope; stores made by one fixture are independent of each
 * other.
 *
 * @since 0.1.0
 * @category fixtures
 */
export class BackendFixture extends Context.Tag("@intersession/testing/BackendSuite/BackendFixture")<
  BackendFixture,
  {
    readonly makeStore: Effect.Effect<StoreFixture, unknown, Scope.Scope>
  }
>() {}

const peerA = PeerId.make("peer-a")
const peerB = PeerId.make("peer-b")
const peerC = PeerId.make("peer-c")
const laneX: Lane = "x"
const laneY: Lane = "y"

/** The engine run that appends in tests where runs do not matter. */
const run = 7

/** A time at which messages of the tests expire, in milliseconds since the epoch. */
const at = 1_700_000_000_000

const texts = (messages: ReadonlyArray<StoredMessage>): Array<string> => messages.map((m) => decoder.decode(m.payload))
const seqs = (messages: ReadonlyArray<StoredMessage>): Array<number> => messages.map((m) => m.seq)
const expiries = (messages: ReadonlyArray<StoredMessage>): Array<number | undefined> => messages.map((m) => m.expiresAt)

const byStream = (a: { readonly peer: string; readonly lane: string }, b: typeof a) =>
  a.peer < b.peer ? -1 : a.peer > b.peer ? 1 : a.lane < b.lane ? -1 : a.lane > b.lane ? 1 : 0

/** Plain copies of run starts, so that extra fields or array subclasses from a driver do not affect comparisons. */
const plainRuns = (runs: ReadonlyArray<RunStart>): Array<RunStart> => runs.map(({ from, run }) => ({ run, from }))

/** Plain copies of seq ranges, as {@link plainRuns} makes of run starts. */
const plainRanges = (ranges: ReadonlyArray<RunRange>): Array<RunRange> =>
  ranges.map(({ from, run, to }) => ({ from, to, run }))

/** Plain copies of dropped ranges, with their reasons, as {@link plainRuns} makes of run starts. */
const plainDropped = (ranges: ReadonlyArray<DroppedRange>): Array<DroppedRange> =>
  ranges.map(({ from, reason, run, to }) => ({ from, to, run, reason }))

/** Ranges as dropped ranges, all for `reason`. */
const droppedFor = (reason: DropReason, ranges: ReadonlyArray<RunRange>): Array<DroppedRange> =>
  ranges.map(({ from, run, to }) => ({ from, to, run, reason }))

const sortedStreams = (streams: ReadonlyArray<OutboundStream>): Array<OutboundStream> =>
  streams.map(({ dropped, firstPending, lane, nextSeq, peer, runs }) => ({
    peer,
    lane,
    firstPending,
    nextSeq,
    runs: plainRuns(runs),
    dropped: plainDropped(dropped)
  })).sort(byStream)

/** What `expire` or `purge` returned, as plain data in stream order (the contract leaves the order of streams open). */
const sortedDropped = (dropped: ReadonlyArray<DroppedMessages>): Array<DroppedMessages> =>
  dropped.map(({ lane, peer, seqs }) => ({ peer, lane, seqs: plainRanges(seqs) })).sort(byStream)

/** How many seqs `expire` or `purge` reported. */
const countOf = (dropped: ReadonlyArray<DroppedMessages>): number =>
  dropped.reduce((sum, stream) => sum + stream.seqs.reduce((n, { from, to }) => n + to - from + 1, 0), 0)

/**
 * Checks the form of what one `expire` or `purge` returned: one entry per stream, each with non-empty ranges in seq
 * order, each as long as its run allows, and the run `runOf` says allocated each seq.
 */
const assertDropped = (
  dropped: ReadonlyArray<DroppedMessages>,
  runOf: (peer: PeerId.PeerId, seq: number) => number
): void => {
  const streams = new Set(dropped.map(({ lane, peer }) => JSON.stringify([peer, lane])))
  assert.strictEqual(streams.size, dropped.length, "one entry per stream")
  for (const { peer, seqs } of dropped) {
    assert.isAbove(seqs.length, 0, "a stream is reported with the seqs removed from it")
    seqs.forEach(({ from, run, to }, i) => {
      assert.isAtMost(from, to, "a range holds one seq at least")
      const previous = seqs[i - 1]
      if (previous !== undefined) {
        assert.isAbove(from, previous.to, "ranges are in seq order")
        assert.isFalse(previous.to + 1 === from && previous.run === run, "a range is as long as its run allows")
      }
      for (let seq = from; seq <= to; seq++) assert.strictEqual(run, runOf(peer, seq), `the run of ${peer} seq ${seq}`)
    })
  }
}

const sortedReceived = (states: ReadonlyArray<ReceiveState>): Array<ReceiveState> =>
  states.map(({ delivered, incarnation, lane, peer, runs }) => ({
    peer,
    lane,
    incarnation,
    delivered,
    runs: plainRuns(runs)
  })).sort(byStream)

/** The pending runs of one stream as `outbound` reports them. */
const runsOf = (
  streams: ReadonlyArray<OutboundStream>,
  peer: PeerId.PeerId,
  lane: Lane
): Array<RunStart> | undefined => {
  const stream = streams.find((stream) => stream.peer === peer && stream.lane === lane)
  return stream === undefined ? undefined : plainRuns(stream.runs)
}

const runsOfMessages = (messages: ReadonlyArray<StoredMessage>): Array<number> => messages.map((m) => m.run)

const incarnation = (n: number): Incarnation.Incarnation => Incarnation.Incarnation.make(n)

const isIncarnation = Schema.is(Incarnation.Incarnation)

/** Makes a new store from the fixture. */
const makeStore = Effect.flatMap(BackendFixture, (fixture) => fixture.makeStore)

/** Opens `store`, runs `f` on its backend and closes it again. */
const withBackend = <A, E, R>(
  store: StoreFixture,
  f: (backend: Backend["Type"]) => Effect.Effect<A, E, R>
): Effect.Effect<A, E | StoreLockedError | BackendError, R> => Effect.scoped(Effect.flatMap(store.open, f))

/** Opens a new store for the rest of the test. */
const openFresh = Effect.flatMap(makeStore, (store) => store.open)

/**
 * Declares a `describe` block named `name` that checks the `Backend` contract on the stores of the fixture `layer`.
 * The fixture is built once for the block, by the first test, and closed after the last; every test makes its own
 * stores. Tests run on the live clock, so a fixture may use real resources (files, connections).
 *
 * @example
 * ```ts
 * // test/InMemoryBackend.test.ts: the suite on the in-memory backend. A backend of your own gives its fixture the
 * // same way: `makeStore` makes an empty store (a file in a temporary directory, a fresh schema), and each `open`
 * // of it builds your layer on that same store.
 * import { Backend } from "@intersession/core/Backend"
 * import * as BackendSuite from "@intersession/testing/BackendSuite"
 * import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
 * import * as Context from "effect/Context"
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 *
 * const fixture = Layer.succeed(
 *   BackendSuite.BackendFixture,
 *   BackendSuite.BackendFixture.of({
 *     makeStore: Effect.map(InMemoryBackend.makeStore(), (store) => ({
 *       open: Effect.map(Layer.build(InMemoryBackend.layer(store)), Context.get(Backend))
 *     }))
 *   })
 * )
 *
 * BackendSuite.backendSuite("InMemoryBackend", fixture)
 * ```
 *
 * @since 0.1.0
 * @category suites
 */
export const backendSuite = (name: string, fixture: Layer.Layer<BackendFixture, unknown>): void => {
  describe(name, () => {
    // One fixture for the block, built by the first test and closed after the last. (`layer` from @effect/vitest
    // would do the same, but it rebinds the shared `it` for every test declared after it in the same file.)
    const runtime = ManagedRuntime.make(fixture)
    afterAll(() => runtime.dispose())
    const test = (title: string, body: () => Effect.Effect<void, unknown, BackendFixture | Scope.Scope>) =>
      it.live(title, () => Effect.provide(Effect.scoped(Effect.suspend(body)), runtime))

    test("a new store is empty", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        assert.isTrue(isIncarnation(backend.incarnation), "the incarnation is a non-negative safe integer")
        const outbound = yield* backend.outbound
        assert.deepStrictEqual(outbound.streams, [])
        assert.deepStrictEqual(outbound.incarnations, [])
        assert.deepStrictEqual(yield* backend.received, [])
        assert.deepStrictEqual(yield* backend.read(peerA, laneX, 1, 100), [])
      }))

    test("the incarnation is created once and stays the same across operations and reopening", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        const first = yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            const before = backend.incarnation
            yield* backend.append([{ peer: peerA, lane: laneX, payload: text("a") }], run)
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 1 }])
            yield* backend.setIncarnation(peerA, incarnation(before + 1))
            yield* backend.commitReceived([{
              peer: peerB,
              lane: laneX,
              incarnation: incarnation(5),
              delivered: 1,
              runs: []
            }])
            assert.strictEqual(backend.incarnation, before)
            return before
          }))
        const second = yield* withBackend(store, (backend) => Effect.succeed(backend.incarnation))
        const third = yield* withBackend(store, (backend) => Effect.succeed(backend.incarnation))
        assert.strictEqual(second, first)
        assert.strictEqual(third, first)
      }))

    test("append allocates consecutive seqs from 1 per stream, in the order given", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        const first = yield* backend.append(
          ["one", "two", "three"].map((value) => ({ peer: peerA, lane: laneX, payload: text(value) })),
          run
        )
        assert.deepStrictEqual(first, [1, 2, 3])
        const second = yield* backend.append([{ peer: peerA, lane: laneX, payload: text("four") }], run)
        assert.deepStrictEqual(second, [4])
        const stored = yield* backend.read(peerA, laneX, 1, 100)
        assert.deepStrictEqual(seqs(stored), [1, 2, 3, 4])
        assert.deepStrictEqual(texts(stored), ["one", "two", "three", "four"])
        for (const message of stored) {
          assert.strictEqual(message.peer, peerA)
          assert.strictEqual(message.lane, laneX)
        }
      }))

    test("read returns each message's run as given to append, and keeps it across acknowledging and reopening", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        const largest = Number.MAX_SAFE_INTEGER
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(
              yield* backend.append([
                { peer: peerA, lane: laneX, payload: text("a1") },
                { peer: peerA, lane: laneX, payload: text("a2") },
                { peer: peerB, lane: laneY, payload: text("b1") }
              ], 1),
              [1, 2, 1]
            )
            assert.deepStrictEqual(
              yield* backend.append([
                { peer: peerB, lane: laneY, payload: text("b2") },
                { peer: peerA, lane: laneX, payload: text("a3") }
              ], 2),
              [2, 3]
            )
            assert.deepStrictEqual(
              yield* backend.append([{ peer: peerA, lane: laneX, payload: text("a4") }], largest),
              [
                4
              ]
            )
            const ax = yield* backend.read(peerA, laneX, 1, 100)
            assert.deepStrictEqual(texts(ax), ["a1", "a2", "a3", "a4"])
            assert.deepStrictEqual(runsOfMessages(ax), [1, 1, 2, largest])
            assert.deepStrictEqual(runsOfMessages(yield* backend.read(peerB, laneY, 1, 100)), [1, 2])
            assert.deepStrictEqual(runsOfMessages(yield* backend.read(peerA, laneX, 2, 2)), [1, 2])
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 2 }])
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            const ax = yield* backend.read(peerA, laneX, 1, 100)
            assert.deepStrictEqual(seqs(ax), [3, 4], "after reopening")
            assert.deepStrictEqual(runsOfMessages(ax), [2, largest], "after reopening")
            assert.deepStrictEqual(runsOfMessages(yield* backend.read(peerB, laneY, 1, 100)), [1, 2], "after reopening")
            // A later run's messages carry its own run; earlier messages keep theirs.
            assert.deepStrictEqual(yield* backend.append([{ peer: peerB, lane: laneY, payload: text("b3") }], 3), [3])
            const by = yield* backend.read(peerB, laneY, 1, 100)
            assert.deepStrictEqual(texts(by), ["b1", "b2", "b3"])
            assert.deepStrictEqual(runsOfMessages(by), [1, 2, 3])
          }))
      }))

    test("seqs are independent across lanes and peers, even in one interleaved batch", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        const streams: ReadonlyArray<readonly [PeerId.PeerId, Lane]> = [
          [peerA, laneX],
          [peerA, laneY],
          [peerB, laneX],
          [peerA, laneX],
          [peerB, laneX],
          [peerA, laneY],
          [peerA, laneX],
          // Streams whose peer and lane concatenate to the same text must not be confused.
          [PeerId.make("ab"), "c"],
          [PeerId.make("a"), "bc"],
          [PeerId.make("ab"), "c"],
          // Names beyond ASCII.
          [PeerId.make("пир-ü"), "лейн-😀"]
        ]
        const allocated = yield* backend.append(
          streams.map(([peer, lane], i) => ({ peer, lane, payload: text(`${peer}/${lane}/${i}`) })),
          run
        )
        assert.deepStrictEqual(allocated, [1, 1, 1, 2, 2, 2, 3, 1, 1, 2, 1])
        const ax = yield* backend.read(peerA, laneX, 1, 100)
        assert.deepStrictEqual(texts(ax), ["peer-a/x/0", "peer-a/x/3", "peer-a/x/6"])
        const ay = yield* backend.read(peerA, laneY, 1, 100)
        assert.deepStrictEqual(texts(ay), ["peer-a/y/1", "peer-a/y/5"])
        const bx = yield* backend.read(peerB, laneX, 1, 100)
        assert.deepStrictEqual(texts(bx), ["peer-b/x/2", "peer-b/x/4"])
        assert.deepStrictEqual(texts(yield* backend.read(PeerId.make("ab"), "c", 1, 100)), ["ab/c/7", "ab/c/9"])
        assert.deepStrictEqual(texts(yield* backend.read(PeerId.make("a"), "bc", 1, 100)), ["a/bc/8"])
        const unicode = yield* backend.read(PeerId.make("пир-ü"), "лейн-😀", 1, 100)
        assert.deepStrictEqual(texts(unicode), ["пир-ü/лейн-😀/10"])
        assert.strictEqual(unicode[0]?.peer, "пир-ü")
        assert.strictEqual(unicode[0]?.lane, "лейн-😀")
        assert.deepStrictEqual(yield* backend.read(peerB, laneY, 1, 100), [])
        const outbound = yield* backend.outbound
        assert.deepStrictEqual(
          sortedStreams(outbound.streams),
          sortedStreams([
            { peer: peerA, lane: laneX, firstPending: 1, nextSeq: 4, runs: [{ run, from: 1 }], dropped: [] },
            { peer: peerA, lane: laneY, firstPending: 1, nextSeq: 3, runs: [{ run, from: 1 }], dropped: [] },
            { peer: peerB, lane: laneX, firstPending: 1, nextSeq: 3, runs: [{ run, from: 1 }], dropped: [] },
            { peer: PeerId.make("ab"), lane: "c", firstPending: 1, nextSeq: 3, runs: [{ run, from: 1 }], dropped: [] },
            { peer: PeerId.make("a"), lane: "bc", firstPending: 1, nextSeq: 2, runs: [{ run, from: 1 }], dropped: [] },
            {
              peer: PeerId.make("пир-ü"),
              lane: "лейн-😀",
              firstPending: 1,
              nextSeq: 2,
              runs: [{ run, from: 1 }],
              dropped: []
            }
          ])
        )
      }))

    test("appended messages persist across reopening, and seqs continue after them", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        yield* withBackend(store, (backend) =>
          backend.append([
            { peer: peerA, lane: laneX, payload: text("a1") },
            { peer: peerA, lane: laneX, payload: text("a2") },
            { peer: peerB, lane: laneY, payload: text("b1") }
          ], run))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            const ax = yield* backend.read(peerA, laneX, 1, 100)
            assert.deepStrictEqual(seqs(ax), [1, 2])
            assert.deepStrictEqual(texts(ax), ["a1", "a2"])
            assert.deepStrictEqual(texts(yield* backend.read(peerB, laneY, 1, 100)), ["b1"])
            assert.deepStrictEqual(
              yield* backend.append([
                { peer: peerA, lane: laneX, payload: text("a3") },
                { peer: peerB, lane: laneY, payload: text("b2") },
                { peer: peerC, lane: laneX, payload: text("c1") }
              ], run),
              [3, 2, 1]
            )
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(texts(yield* backend.read(peerA, laneX, 1, 100)), ["a1", "a2", "a3"])
            assert.deepStrictEqual(texts(yield* backend.read(peerB, laneY, 1, 100)), ["b1", "b2"])
            assert.deepStrictEqual(texts(yield* backend.read(peerC, laneX, 1, 100)), ["c1"])
          }))
      }))

    test("read returns pending messages from a seq, in order, up to a limit", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        yield* backend.append(range(1, 10).map((i) => ({ peer: peerA, lane: laneX, payload: text(`m${i}`) })), run)
        assert.deepStrictEqual(seqs(yield* backend.read(peerA, laneX, 1, 100)), range(1, 10))
        assert.deepStrictEqual(seqs(yield* backend.read(peerA, laneX, 4, 3)), [4, 5, 6])
        assert.deepStrictEqual(texts(yield* backend.read(peerA, laneX, 4, 3)), ["m4", "m5", "m6"])
        assert.deepStrictEqual(seqs(yield* backend.read(peerA, laneX, 8, 100)), [8, 9, 10])
        assert.deepStrictEqual(seqs(yield* backend.read(peerA, laneX, 10, 1)), [10])
        assert.deepStrictEqual(seqs(yield* backend.read(peerA, laneX, 1, 1)), [1])
        assert.deepStrictEqual(yield* backend.read(peerA, laneX, 11, 100), [])
        assert.deepStrictEqual(yield* backend.read(peerA, laneX, 1_000_000, 100), [])
        assert.deepStrictEqual(yield* backend.read(peerA, laneX, 1, 0), [])
      }))

    test("read of an unknown stream is empty", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        assert.deepStrictEqual(yield* backend.read(peerA, laneX, 1, 100), [])
        yield* backend.append([{ peer: peerA, lane: laneX, payload: text("a") }], run)
        assert.deepStrictEqual(yield* backend.read(peerA, laneY, 1, 100), [])
        assert.deepStrictEqual(yield* backend.read(peerB, laneX, 1, 100), [])
        assert.deepStrictEqual(seqs(yield* backend.read(peerA, laneX, 1, 100)), [1])
      }))

    test("payload bytes come back exactly: empty, every byte value, 64 KiB, a view into a larger buffer", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        const larger = pattern(100, 3)
        const payloads: ReadonlyArray<readonly [string, Uint8Array]> = [
          ["empty", new Uint8Array(0)],
          ["one zero byte", new Uint8Array([0])],
          ["every byte value", Uint8Array.from({ length: 256 }, (_, i) => 255 - i)],
          ["64 KiB", pattern(64 * 1024, 1)],
          ["a view into a larger buffer", larger.subarray(17, 29)],
          ["invalid UTF-8", new Uint8Array([0xff, 0xfe, 0xc3, 0x28, 0x00, 0xed, 0xa0, 0x80])]
        ]
        const expected = payloads.map(([what, payload]) => [what, payload.slice()] as const)
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(
              yield* backend.append(payloads.map(([, payload]) => ({ peer: peerA, lane: laneX, payload })), run),
              range(1, payloads.length)
            )
            // Changing the caller's buffers afterwards changes nothing stored.
            for (const [, payload] of payloads) payload.fill(0x55)
            const stored = yield* backend.read(peerA, laneX, 1, 100)
            assert.strictEqual(stored.length, expected.length)
            expected.forEach(([what, payload], i) => assertBytes(stored[i]!.payload, payload, what))
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            const stored = yield* backend.read(peerA, laneX, 1, 100)
            assert.strictEqual(stored.length, expected.length)
            expected.forEach(([what, payload], i) =>
              assertBytes(stored[i]!.payload, payload, `${what} after reopening`)
            )
          }))
      }))

    test("acknowledge deletes up to a seq; it is idempotent and a lower upTo is a no-op", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        yield* backend.append(range(1, 6).map((i) => ({ peer: peerA, lane: laneX, payload: text(`m${i}`) })), run)
        yield* backend.append(range(1, 2).map((i) => ({ peer: peerA, lane: laneY, payload: text(`y${i}`) })), run)
        yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 3 }])
        assert.deepStrictEqual(seqs(yield* backend.read(peerA, laneX, 1, 100)), [4, 5, 6])
        assert.deepStrictEqual(texts(yield* backend.read(peerA, laneX, 1, 1)), ["m4"])
        assert.deepStrictEqual(yield* backend.read(peerA, laneX, 2, 2).pipe(Effect.map(seqs)), [4, 5])
        yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 3 }])
        assert.deepStrictEqual(seqs(yield* backend.read(peerA, laneX, 1, 100)), [4, 5, 6])
        yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 1 }])
        assert.deepStrictEqual(seqs(yield* backend.read(peerA, laneX, 1, 100)), [4, 5, 6])
        // The other lane of the same peer is untouched.
        assert.deepStrictEqual(seqs(yield* backend.read(peerA, laneY, 1, 100)), [1, 2])
        const outbound = yield* backend.outbound
        assert.deepStrictEqual(sortedStreams(outbound.streams), [
          { peer: peerA, lane: laneX, firstPending: 4, nextSeq: 7, runs: [{ run, from: 4 }], dropped: [] },
          { peer: peerA, lane: laneY, firstPending: 1, nextSeq: 3, runs: [{ run, from: 1 }], dropped: [] }
        ])
      }))

    test("one acknowledge call can cover several streams", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        yield* backend.append([
          ...range(1, 4).map((i) => ({ peer: peerA, lane: laneX, payload: text(`ax${i}`) })),
          ...range(1, 4).map((i) => ({ peer: peerA, lane: laneY, payload: text(`ay${i}`) })),
          ...range(1, 4).map((i) => ({ peer: peerB, lane: laneX, payload: text(`bx${i}`) }))
        ], run)
        yield* backend.acknowledge([
          { peer: peerA, lane: laneX, upTo: 2 },
          { peer: peerA, lane: laneY, upTo: 4 },
          { peer: peerB, lane: laneX, upTo: 1 }
        ])
        assert.deepStrictEqual(texts(yield* backend.read(peerA, laneX, 1, 100)), ["ax3", "ax4"])
        assert.deepStrictEqual(yield* backend.read(peerA, laneY, 1, 100), [])
        assert.deepStrictEqual(texts(yield* backend.read(peerB, laneX, 1, 100)), ["bx2", "bx3", "bx4"])
      }))

    test("acknowledging a stream that never allocated does not create it", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        yield* backend.append([{ peer: peerA, lane: laneX, payload: text("a") }], run)
        yield* backend.acknowledge([{ peer: peerB, lane: laneX, upTo: 5 }, { peer: peerA, lane: laneY, upTo: 1 }])
        const outbound = yield* backend.outbound
        assert.deepStrictEqual(sortedStreams(outbound.streams), [
          { peer: peerA, lane: laneX, firstPending: 1, nextSeq: 2, runs: [{ run, from: 1 }], dropped: [] }
        ])
        assert.deepStrictEqual(seqs(yield* backend.read(peerA, laneX, 1, 100)), [1])
        assert.deepStrictEqual(yield* backend.append([{ peer: peerB, lane: laneX, payload: text("b") }], run), [1])
      }))

    test("empty batches are accepted and change nothing", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        assert.deepStrictEqual(yield* backend.append([], run), [])
        yield* backend.acknowledge([])
        yield* backend.commitReceived([])
        const outbound = yield* backend.outbound
        assert.deepStrictEqual(outbound.streams, [])
        assert.deepStrictEqual(yield* backend.received, [])
        assert.deepStrictEqual(yield* backend.append([{ peer: peerA, lane: laneX, payload: text("a") }], run), [1])
      }))

    test("outbound reports every stream that ever allocated, fully acknowledged ones included", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        const expected = [
          { peer: peerA, lane: laneX, firstPending: 3, nextSeq: 4, runs: [{ run, from: 3 }], dropped: [] },
          { peer: peerA, lane: laneY, firstPending: 3, nextSeq: 3, runs: [], dropped: [] },
          { peer: peerB, lane: laneX, firstPending: 1, nextSeq: 2, runs: [{ run, from: 1 }], dropped: [] }
        ]
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            yield* backend.append([
              { peer: peerA, lane: laneX, payload: text("ax1") },
              { peer: peerA, lane: laneX, payload: text("ax2") },
              { peer: peerA, lane: laneX, payload: text("ax3") },
              { peer: peerA, lane: laneY, payload: text("ay1") },
              { peer: peerA, lane: laneY, payload: text("ay2") },
              { peer: peerB, lane: laneX, payload: text("bx1") }
            ], run)
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 2 }, { peer: peerA, lane: laneY, upTo: 2 }])
            assert.deepStrictEqual(sortedStreams((yield* backend.outbound).streams), expected)
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(sortedStreams((yield* backend.outbound).streams), expected, "after reopening")
          }))
      }))

    test("outbound reports the runs of each stream's pending messages, from their lowest pending seq", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        const messages = (lane: Lane, count: number) =>
          range(1, count).map((i) => ({ peer: peerA, lane, payload: text(`${lane}${i}`) }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(yield* backend.append(messages(laneX, 3), 1), [1, 2, 3])
            assert.deepStrictEqual(
              yield* backend.append([...messages(laneX, 2), { peer: peerB, lane: laneX, payload: text("b1") }], 2),
              [4, 5, 1]
            )
            assert.deepStrictEqual(yield* backend.append(messages(laneX, 1), 1), [6])
            const streams = (yield* backend.outbound).streams
            assert.deepStrictEqual(runsOf(streams, peerA, laneX), [{ run: 1, from: 1 }, { run: 2, from: 4 }, {
              run: 1,
              from: 6
            }])
            // Runs are per stream: the other stream of the same append has only its own.
            assert.deepStrictEqual(runsOf(streams, peerB, laneX), [{ run: 2, from: 1 }])
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 4 }])
            assert.deepStrictEqual(runsOf((yield* backend.outbound).streams, peerA, laneX), [{ run: 2, from: 5 }, {
              run: 1,
              from: 6
            }])
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(sortedStreams((yield* backend.outbound).streams), [
              {
                peer: peerA,
                lane: laneX,
                firstPending: 5,
                nextSeq: 7,
                runs: [{ run: 2, from: 5 }, { run: 1, from: 6 }],
                dropped: []
              },
              { peer: peerB, lane: laneX, firstPending: 1, nextSeq: 2, runs: [{ run: 2, from: 1 }], dropped: [] }
            ], "after reopening")
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 6 }])
            assert.deepStrictEqual(runsOf((yield* backend.outbound).streams, peerA, laneX), [])
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(sortedStreams((yield* backend.outbound).streams), [
              { peer: peerA, lane: laneX, firstPending: 7, nextSeq: 7, runs: [], dropped: [] },
              { peer: peerB, lane: laneX, firstPending: 1, nextSeq: 2, runs: [{ run: 2, from: 1 }], dropped: [] }
            ], "after acknowledging everything and reopening")
            // A new run after everything was acknowledged starts at the next seq.
            assert.deepStrictEqual(yield* backend.append(messages(laneX, 2), 3), [7, 8])
            assert.deepStrictEqual(runsOf((yield* backend.outbound).streams, peerA, laneX), [{ run: 3, from: 7 }])
          }))
      }))

    test("outbound reports the per-peer incarnations set with setIncarnation, the last one per peer", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        const own = yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            const own = backend.incarnation
            yield* backend.setIncarnation(peerA, incarnation(own + 10))
            yield* backend.setIncarnation(peerB, incarnation(own + 20))
            yield* backend.setIncarnation(peerA, incarnation(own + 30))
            const outbound = yield* backend.outbound
            assert.deepStrictEqual(
              [...outbound.incarnations].map(({ incarnation, peer }) => ({ peer, incarnation })).sort((a, b) =>
                a.peer < b.peer ? -1 : 1
              ),
              [{ peer: peerA, incarnation: own + 30 }, { peer: peerB, incarnation: own + 20 }]
            )
            // Setting incarnations allocates no stream.
            assert.deepStrictEqual(outbound.streams, [])
            return own
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.strictEqual(backend.incarnation, own, "setIncarnation does not change the store's incarnation")
            const outbound = yield* backend.outbound
            assert.deepStrictEqual(
              [...outbound.incarnations].map(({ incarnation, peer }) => ({ peer, incarnation })).sort((a, b) =>
                a.peer < b.peer ? -1 : 1
              ),
              [{ peer: peerA, incarnation: own + 30 }, { peer: peerB, incarnation: own + 20 }],
              "after reopening"
            )
          }))
      }))

    test("seqs continue after everything is acknowledged, and after reopening then", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(
              yield* backend.append(
                range(1, 3).map((i) => ({ peer: peerA, lane: laneX, payload: text(`m${i}`) })),
                run
              ),
              [1, 2, 3]
            )
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 3 }])
            assert.deepStrictEqual(yield* backend.read(peerA, laneX, 1, 100), [])
            assert.deepStrictEqual(yield* backend.append([{ peer: peerA, lane: laneX, payload: text("m4") }], run), [4])
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 4 }])
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(sortedStreams((yield* backend.outbound).streams), [
              { peer: peerA, lane: laneX, firstPending: 5, nextSeq: 5, runs: [], dropped: [] }
            ])
            assert.deepStrictEqual(yield* backend.read(peerA, laneX, 1, 100), [])
            assert.deepStrictEqual(
              yield* backend.append([
                { peer: peerA, lane: laneX, payload: text("m5") },
                { peer: peerA, lane: laneX, payload: text("m6") }
              ], run),
              [5, 6]
            )
            const stored = yield* backend.read(peerA, laneX, 1, 100)
            assert.deepStrictEqual(seqs(stored), [5, 6])
            assert.deepStrictEqual(texts(stored), ["m5", "m6"])
          }))
      }))

    test("append stores each message's expiresAt and read returns it; a message without one has none", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        const latest = 8_640_000_000_000_000 // the latest time a Date can hold
        const expected = [at, undefined, at + 1, undefined, latest, 0]
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(
              yield* backend.append([
                { peer: peerA, lane: laneX, payload: text("a1"), expiresAt: at },
                { peer: peerA, lane: laneX, payload: text("a2") },
                { peer: peerA, lane: laneX, payload: text("a3"), expiresAt: at + 1 },
                { peer: peerA, lane: laneX, payload: text("a4"), expiresAt: undefined },
                { peer: peerB, lane: laneX, payload: text("b1") },
                { peer: peerA, lane: laneX, payload: text("a5"), expiresAt: latest },
                { peer: peerA, lane: laneX, payload: text("a6"), expiresAt: 0 }
              ], run),
              [1, 2, 3, 4, 1, 5, 6]
            )
            const stored = yield* backend.read(peerA, laneX, 1, 100)
            assert.deepStrictEqual(texts(stored), ["a1", "a2", "a3", "a4", "a5", "a6"])
            assert.deepStrictEqual(expiries(stored), expected)
            assert.deepStrictEqual(expiries(yield* backend.read(peerA, laneX, 3, 2)), [at + 1, undefined])
            assert.deepStrictEqual(expiries(yield* backend.read(peerB, laneX, 1, 100)), [undefined])
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 1 }])
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            const stored = yield* backend.read(peerA, laneX, 1, 100)
            assert.deepStrictEqual(seqs(stored), [2, 3, 4, 5, 6], "after reopening")
            assert.deepStrictEqual(expiries(stored), expected.slice(1), "after reopening")
            assert.deepStrictEqual(expiries(yield* backend.read(peerB, laneX, 1, 100)), [undefined], "after reopening")
          }))
      }))

    test("expire removes exactly the messages due at now, the boundary included, wherever they are in a stream", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            yield* backend.append([
              ...[undefined, at - 100, at, undefined, at - 100, at + 100].map((expiresAt, i) => ({
                peer: peerA,
                lane: laneX,
                payload: text(`ax${i + 1}`),
                expiresAt
              })),
              { peer: peerA, lane: laneY, payload: text("ay1"), expiresAt: at },
              { peer: peerA, lane: laneY, payload: text("ay2") },
              { peer: peerB, lane: laneX, payload: text("bx1"), expiresAt: at - 1 },
              { peer: peerC, lane: laneX, payload: text("cx1"), expiresAt: at + 1 }
            ], run)
            // Nothing is due before the earliest expiry.
            assert.deepStrictEqual(yield* backend.expire(at - 101, 100), [])
            assert.deepStrictEqual(sortedDropped(yield* backend.expire(at, 100)), [
              { peer: peerA, lane: laneX, seqs: [{ from: 2, to: 3, run }, { from: 5, to: 5, run }] },
              { peer: peerA, lane: laneY, seqs: [{ from: 1, to: 1, run }] },
              { peer: peerB, lane: laneX, seqs: [{ from: 1, to: 1, run }] }
            ])
            // A dropped seq leaves a hole in what read returns.
            assert.deepStrictEqual(texts(yield* backend.read(peerA, laneX, 1, 100)), ["ax1", "ax4", "ax6"])
            assert.deepStrictEqual(seqs(yield* backend.read(peerA, laneX, 2, 100)), [4, 6])
            assert.deepStrictEqual(seqs(yield* backend.read(peerA, laneX, 2, 1)), [4])
            assert.deepStrictEqual(seqs(yield* backend.read(peerA, laneX, 5, 100)), [6])
            assert.deepStrictEqual(texts(yield* backend.read(peerA, laneY, 1, 100)), ["ay2"])
            assert.deepStrictEqual(yield* backend.read(peerB, laneX, 1, 100), [])
            assert.deepStrictEqual(texts(yield* backend.read(peerC, laneX, 1, 100)), ["cx1"])
            // What expired is gone: the same sweep again finds nothing.
            assert.deepStrictEqual(yield* backend.expire(at, 100), [])
            assert.deepStrictEqual(sortedDropped(yield* backend.expire(at + 100, 100)), [
              { peer: peerA, lane: laneX, seqs: [{ from: 6, to: 6, run }] },
              { peer: peerC, lane: laneX, seqs: [{ from: 1, to: 1, run }] }
            ])
          }))
        const expected: Array<OutboundStream> = [
          {
            peer: peerA,
            lane: laneX,
            firstPending: 1,
            nextSeq: 7,
            runs: [{ run, from: 1 }],
            // Ranges that continue each other in one run are joined, although two sweeps dropped them.
            dropped: droppedFor("expired", [{ from: 2, to: 3, run }, { from: 5, to: 6, run }])
          },
          {
            peer: peerA,
            lane: laneY,
            firstPending: 2,
            nextSeq: 3,
            runs: [{ run, from: 1 }],
            dropped: [{ from: 1, to: 1, run, reason: "expired" }]
          },
          // Streams whose messages were all dropped are still listed: they allocated seqs.
          {
            peer: peerB,
            lane: laneX,
            firstPending: 2,
            nextSeq: 2,
            runs: [{ run, from: 1 }],
            dropped: [{ from: 1, to: 1, run, reason: "expired" }]
          },
          {
            peer: peerC,
            lane: laneX,
            firstPending: 2,
            nextSeq: 2,
            runs: [{ run, from: 1 }],
            dropped: [{ from: 1, to: 1, run, reason: "expired" }]
          }
        ]
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(sortedStreams((yield* backend.outbound).streams), expected, "after reopening")
            assert.deepStrictEqual(texts(yield* backend.read(peerA, laneX, 1, 100)), ["ax1", "ax4"], "after reopening")
            assert.deepStrictEqual(yield* backend.expire(at + 1000, 100), [], "after reopening")
            // Seqs go on after dropped ones, never reusing them.
            assert.deepStrictEqual(
              yield* backend.append([
                { peer: peerB, lane: laneX, payload: text("bx2") },
                { peer: peerA, lane: laneX, payload: text("ax7") }
              ], run),
              [2, 7]
            )
          }))
      }))

    test("after an acknowledgement that ends inside one append, read and expire see only what it did not cover", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            // One call: a store may keep a call's messages together, and must still cut them at the acknowledgement.
            yield* backend.append(
              range(1, 6).map((i) => ({ peer: peerA, lane: laneX, payload: text(`ax${i}`), expiresAt: at })),
              run
            )
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 3 }])
            assert.deepStrictEqual(texts(yield* backend.read(peerA, laneX, 1, 100)), ["ax4", "ax5", "ax6"])
            assert.deepStrictEqual(seqs(yield* backend.read(peerA, laneX, 3, 2)), [4, 5])
            assert.deepStrictEqual(sortedDropped(yield* backend.expire(at, 2)), [
              { peer: peerA, lane: laneX, seqs: [{ from: 4, to: 5, run }] }
            ])
            assert.deepStrictEqual(sortedDropped(yield* backend.expire(at, 100)), [
              { peer: peerA, lane: laneX, seqs: [{ from: 6, to: 6, run }] }
            ])
            assert.deepStrictEqual(yield* backend.expire(at, 100), [])
            assert.deepStrictEqual(yield* backend.read(peerA, laneX, 1, 100), [])
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 6 }])
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual((yield* backend.outbound).streams, [
              { peer: peerA, lane: laneX, firstPending: 7, nextSeq: 7, runs: [], dropped: [] }
            ])
            assert.deepStrictEqual(yield* backend.expire(at + 1000, 100), [])
            assert.deepStrictEqual(yield* backend.append([{ peer: peerA, lane: laneX, payload: text("ax7") }], run), [
              7
            ])
            assert.deepStrictEqual(texts(yield* backend.read(peerA, laneX, 1, 100)), ["ax7"])
          }))
      }))

    test("expire removes at most limit messages a call, as ranges joined within a run and split between runs", () =>
      Effect.gen(function*() {
        // peer-a/x: seqs 1-3 by run 1, 4-6 by run 2, 7 and 8 by run 1 again (in two appends); peer-b/x: 1-2 by run 2.
        const due = (peer: PeerId.PeerId, count: number) =>
          range(1, count).map((i) => ({ peer, lane: laneX, payload: text(`${peer}${i}`), expiresAt: at }))
        const fill = (backend: Backend["Type"]) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(yield* backend.append(due(peerA, 3), 1), [1, 2, 3])
            assert.deepStrictEqual(yield* backend.append([...due(peerA, 3), ...due(peerB, 2)], 2), [4, 5, 6, 1, 2])
            assert.deepStrictEqual(yield* backend.append(due(peerA, 1), 1), [7])
            assert.deepStrictEqual(yield* backend.append(due(peerA, 1), 1), [8])
          })
        const runOfSeq = (peer: PeerId.PeerId, seq: number) => peer === peerB || (seq >= 4 && seq <= 6) ? 2 : 1
        const expected = [
          {
            peer: peerA,
            lane: laneX,
            seqs: [{ from: 1, to: 3, run: 1 }, { from: 4, to: 6, run: 2 }, { from: 7, to: 8, run: 1 }]
          },
          { peer: peerB, lane: laneX, seqs: [{ from: 1, to: 2, run: 2 }] }
        ]

        // All ten in one sweep: each range as long as its run allows, across appends too.
        const whole = yield* openFresh
        yield* fill(whole)
        assert.deepStrictEqual(sortedDropped(yield* whole.expire(at, 10)), expected)
        assert.deepStrictEqual(yield* whole.expire(at, 10), [])

        // In sweeps of at most four: which messages a sweep takes is the store's choice, how it reports them is not.
        const swept = yield* openFresh
        yield* fill(swept)
        const counts: Array<number> = []
        for (let sweep = 0; sweep < 5; sweep++) {
          const dropped = yield* swept.expire(at, 4)
          assertDropped(dropped, runOfSeq)
          counts.push(countOf(dropped))
          if (countOf(dropped) < 4) break
        }
        assert.deepStrictEqual(
          counts,
          [4, 4, 2],
          "a sweep takes the limit while more are due, fewer means none is left"
        )
        assert.deepStrictEqual(yield* swept.expire(at, 4), [])
        // Together the sweeps dropped each of the ten once, and outbound joins their ranges.
        assert.deepStrictEqual(
          sortedStreams((yield* swept.outbound).streams).map(({ dropped, lane, peer }) => ({ peer, lane, dropped })),
          expected.map(({ lane, peer, seqs }) => ({ peer, lane, dropped: droppedFor("expired", seqs) }))
        )
      }))

    test("dropped seqs persist, and acknowledge deletes them up to a seq, cutting a range that it ends in", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        // Every dropped seq here expired: a range cut by an acknowledgement keeps its reason.
        const stream = (firstPending: number, runs: Array<RunStart>, dropped: Array<RunRange>) => [
          { peer: peerA, lane: laneX, firstPending, nextSeq: 10, runs, dropped: droppedFor("expired", dropped) }
        ]
        // Seq 1 by run 1 and 9 by run 2 never expire; 2-5 by run 1 and 6-8 by run 2 do.
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            yield* backend.append([
              { peer: peerA, lane: laneX, payload: text("m1") },
              ...range(2, 5).map((i) => ({ peer: peerA, lane: laneX, payload: text(`m${i}`), expiresAt: at }))
            ], 1)
            yield* backend.append([
              ...range(6, 8).map((i) => ({ peer: peerA, lane: laneX, payload: text(`m${i}`), expiresAt: at })),
              { peer: peerA, lane: laneX, payload: text("m9") }
            ], 2)
            assert.strictEqual(countOf(yield* backend.expire(at, 100)), 7)
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(
              sortedStreams((yield* backend.outbound).streams),
              stream(1, [{ run: 1, from: 1 }, { run: 2, from: 6 }], [{ from: 2, to: 5, run: 1 }, {
                from: 6,
                to: 8,
                run: 2
              }]),
              "after reopening"
            )
            assert.deepStrictEqual(texts(yield* backend.read(peerA, laneX, 1, 100)), ["m1", "m9"], "after reopening")
            // Up to 3: seq 1 goes, the first range is cut; the runs start at the lowest seq left.
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 3 }])
            assert.deepStrictEqual(
              sortedStreams((yield* backend.outbound).streams),
              stream(9, [{ run: 1, from: 4 }, { run: 2, from: 6 }], [{ from: 4, to: 5, run: 1 }, {
                from: 6,
                to: 8,
                run: 2
              }])
            )
            // A lower upTo changes nothing.
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 2 }])
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 3 }])
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(
              sortedStreams((yield* backend.outbound).streams),
              stream(9, [{ run: 1, from: 4 }, { run: 2, from: 6 }], [{ from: 4, to: 5, run: 1 }, {
                from: 6,
                to: 8,
                run: 2
              }]),
              "after reopening"
            )
            // Up to the end of a range: it goes whole, the next stays whole.
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 5 }])
            assert.deepStrictEqual(
              sortedStreams((yield* backend.outbound).streams),
              stream(9, [{ run: 2, from: 6 }], [{ from: 6, to: 8, run: 2 }])
            )
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 7 }])
            assert.deepStrictEqual(
              sortedStreams((yield* backend.outbound).streams),
              stream(9, [{ run: 2, from: 8 }], [{ from: 8, to: 8, run: 2 }])
            )
            assert.deepStrictEqual(texts(yield* backend.read(peerA, laneX, 1, 100)), ["m9"])
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(
              sortedStreams((yield* backend.outbound).streams),
              stream(9, [{ run: 2, from: 8 }], [{ from: 8, to: 8, run: 2 }]),
              "after reopening"
            )
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 9 }])
            assert.deepStrictEqual(sortedStreams((yield* backend.outbound).streams), stream(10, [], []))
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(
              sortedStreams((yield* backend.outbound).streams),
              stream(10, [], []),
              "after acknowledging everything and reopening"
            )
            assert.deepStrictEqual(yield* backend.append([{ peer: peerA, lane: laneX, payload: text("m10") }], 3), [10])
          }))
      }))

    test("purge removes every stored message to a peer, or to one lane of it, and reports them", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            // peer-a/x: 1-3 by run 1 (3 expires), 4-5 by run 2; peer-a/y: 1-2 by run 1; peer-b/x and peer-b/y: 1-2.
            yield* backend.append([
              { peer: peerA, lane: laneX, payload: text("ax1") },
              { peer: peerA, lane: laneX, payload: text("ax2") },
              { peer: peerA, lane: laneX, payload: text("ax3"), expiresAt: at },
              ...range(1, 2).map((i) => ({ peer: peerA, lane: laneY, payload: text(`ay${i}`) })),
              ...range(1, 2).map((i) => ({ peer: peerB, lane: laneX, payload: text(`bx${i}`) })),
              ...range(1, 2).map((i) => ({ peer: peerB, lane: laneY, payload: text(`by${i}`) }))
            ], 1)
            yield* backend.append(range(4, 5).map((i) => ({ peer: peerA, lane: laneX, payload: text(`ax${i}`) })), 2)
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 1 }])
            assert.strictEqual(countOf(yield* backend.expire(at, 100)), 1)
            // One lane: neither the acknowledged seq 1 nor the expired seq 3 is purged again.
            const lane = yield* backend.purge(peerA, laneX)
            assert.deepStrictEqual(sortedDropped(lane), [
              { peer: peerA, lane: laneX, seqs: [{ from: 2, to: 2, run: 1 }, { from: 4, to: 5, run: 2 }] }
            ])
            assert.strictEqual(countOf(lane), 3)
            assert.deepStrictEqual(yield* backend.read(peerA, laneX, 1, 100), [])
            assert.deepStrictEqual(texts(yield* backend.read(peerA, laneY, 1, 100)), ["ay1", "ay2"])
            assert.deepStrictEqual(texts(yield* backend.read(peerB, laneX, 1, 100)), ["bx1", "bx2"])
            // The stream goes on after the purged seqs, and a later purge takes only what came since.
            assert.deepStrictEqual(yield* backend.append([{ peer: peerA, lane: laneX, payload: text("ax6") }], 3), [6])
            assert.deepStrictEqual(texts(yield* backend.read(peerA, laneX, 1, 100)), ["ax6"])
            assert.deepStrictEqual(sortedDropped(yield* backend.purge(peerA, laneX)), [
              { peer: peerA, lane: laneX, seqs: [{ from: 6, to: 6, run: 3 }] }
            ])
            assert.deepStrictEqual(yield* backend.purge(peerA, laneX), [])
          }))
        const afterLane: Array<OutboundStream> = [
          {
            peer: peerA,
            lane: laneX,
            firstPending: 7,
            nextSeq: 7,
            runs: [{ run: 1, from: 2 }, { run: 2, from: 4 }, { run: 3, from: 6 }],
            // Seqs 2 and 3 follow each other in run 1, but 2 was purged and 3 expired: they are not joined.
            dropped: [
              { from: 2, to: 2, run: 1, reason: "purged" },
              { from: 3, to: 3, run: 1, reason: "expired" },
              { from: 4, to: 5, run: 2, reason: "purged" },
              { from: 6, to: 6, run: 3, reason: "purged" }
            ]
          },
          { peer: peerA, lane: laneY, firstPending: 1, nextSeq: 3, runs: [{ run: 1, from: 1 }], dropped: [] },
          { peer: peerB, lane: laneX, firstPending: 1, nextSeq: 3, runs: [{ run: 1, from: 1 }], dropped: [] },
          { peer: peerB, lane: laneY, firstPending: 1, nextSeq: 3, runs: [{ run: 1, from: 1 }], dropped: [] }
        ]
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(sortedStreams((yield* backend.outbound).streams), afterLane, "after reopening")
            // The whole peer: every lane with something stored; peer-a/x has nothing left, so it is not reported.
            const peer = yield* backend.purge(peerA, undefined)
            assert.deepStrictEqual(sortedDropped(peer), [{
              peer: peerA,
              lane: laneY,
              seqs: [{ from: 1, to: 2, run: 1 }]
            }])
            assert.deepStrictEqual(yield* backend.read(peerA, laneY, 1, 100), [])
            assert.deepStrictEqual(yield* backend.purge(peerA, undefined), [])
            // Other peers are untouched.
            assert.deepStrictEqual(texts(yield* backend.read(peerB, laneX, 1, 100)), ["bx1", "bx2"])
            assert.deepStrictEqual(texts(yield* backend.read(peerB, laneY, 1, 100)), ["by1", "by2"])
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(
              sortedStreams((yield* backend.outbound).streams),
              [
                afterLane[0]!,
                {
                  peer: peerA,
                  lane: laneY,
                  firstPending: 3,
                  nextSeq: 3,
                  runs: [{ run: 1, from: 1 }],
                  dropped: [{ from: 1, to: 2, run: 1, reason: "purged" }]
                },
                ...afterLane.slice(2)
              ],
              "after reopening"
            )
            assert.deepStrictEqual(
              yield* backend.append([
                { peer: peerA, lane: laneY, payload: text("ay3") },
                { peer: peerA, lane: laneX, payload: text("ax7") }
              ], 4),
              [3, 7]
            )
            // An acknowledgement of everything leaves nothing dropped.
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 7 }, { peer: peerA, lane: laneY, upTo: 3 }])
            assert.deepStrictEqual(sortedStreams((yield* backend.outbound).streams), [
              { peer: peerA, lane: laneX, firstPending: 8, nextSeq: 8, runs: [], dropped: [] },
              { peer: peerA, lane: laneY, firstPending: 4, nextSeq: 4, runs: [], dropped: [] },
              ...afterLane.slice(2)
            ])
          }))
      }))

    test("outbound reports why each range was dropped, across reopening, and joins ranges of one run and reason only", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        // Nothing of peer-a/x stays stored: its seqs above its last acknowledgement are all dropped ones.
        const stream = (dropped: Array<DroppedRange>) => [
          {
            peer: peerA,
            lane: laneX,
            firstPending: 10,
            nextSeq: 10,
            runs: [{ run: 1, from: dropped[0]!.from }],
            dropped
          },
          { peer: peerB, lane: laneX, firstPending: 1, nextSeq: 2, runs: [{ run: 1, from: 1 }], dropped: [] }
        ]
        // All by run 1. Seqs 1-6: 2, 3 and 5 expire, then a purge takes 1, 4 and 6.
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            yield* backend.append([
              ...range(1, 6).map((i) => ({
                peer: peerA,
                lane: laneX,
                payload: text(`m${i}`),
                expiresAt: i === 2 || i === 3 || i === 5 ? at : undefined
              })),
              { peer: peerB, lane: laneX, payload: text("kept") }
            ], 1)
            assert.deepStrictEqual(sortedDropped(yield* backend.expire(at, 100)), [
              { peer: peerA, lane: laneX, seqs: [{ from: 2, to: 3, run: 1 }, { from: 5, to: 5, run: 1 }] }
            ])
            assert.deepStrictEqual(sortedDropped(yield* backend.purge(peerA, laneX)), [
              {
                peer: peerA,
                lane: laneX,
                seqs: [{ from: 1, to: 1, run: 1 }, { from: 4, to: 4, run: 1 }, {
                  from: 6,
                  to: 6,
                  run: 1
                }]
              }
            ])
          }))
        // Seq 7, purged too, continues the purged 6: joined although two purges dropped them. Seqs 8-9 expire next to
        // it: not joined to it.
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(yield* backend.append([{ peer: peerA, lane: laneX, payload: text("m7") }], 1), [7])
            assert.strictEqual(countOf(yield* backend.purge(peerA, laneX)), 1)
            assert.deepStrictEqual(
              yield* backend.append(
                range(8, 9).map((i) => ({
                  peer: peerA,
                  lane: laneX,
                  payload: text(`m${i}`),
                  expiresAt: at
                })),
                1
              ),
              [8, 9]
            )
            assert.strictEqual(countOf(yield* backend.expire(at, 100)), 2)
          }))
        const all: Array<DroppedRange> = [
          { from: 1, to: 1, run: 1, reason: "purged" },
          { from: 2, to: 3, run: 1, reason: "expired" },
          { from: 4, to: 4, run: 1, reason: "purged" },
          { from: 5, to: 5, run: 1, reason: "expired" },
          { from: 6, to: 7, run: 1, reason: "purged" },
          { from: 8, to: 9, run: 1, reason: "expired" }
        ]
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(sortedStreams((yield* backend.outbound).streams), stream(all), "after reopening")
            // Up to 2: the expired range 2-3 is cut, and stays expired.
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 2 }])
            assert.deepStrictEqual(
              sortedStreams((yield* backend.outbound).streams),
              stream([{ from: 3, to: 3, run: 1, reason: "expired" }, ...all.slice(2)])
            )
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(
              sortedStreams((yield* backend.outbound).streams),
              stream([{ from: 3, to: 3, run: 1, reason: "expired" }, ...all.slice(2)]),
              "after reopening"
            )
            // Up to 6: the purged range 6-7 is cut, and stays purged.
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 6 }])
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(
              sortedStreams((yield* backend.outbound).streams),
              stream([{ from: 7, to: 7, run: 1, reason: "purged" }, { from: 8, to: 9, run: 1, reason: "expired" }]),
              "after reopening"
            )
          }))
      }))

    test("expire and purge with nothing to remove return nothing and change nothing", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        assert.deepStrictEqual(yield* backend.expire(at, 100), [])
        assert.deepStrictEqual(yield* backend.purge(peerA, undefined), [])
        assert.deepStrictEqual(yield* backend.purge(peerA, laneX), [])
        assert.deepStrictEqual((yield* backend.outbound).streams, [], "they allocate no stream")
        yield* backend.append([
          { peer: peerA, lane: laneX, payload: text("never") },
          { peer: peerA, lane: laneX, payload: text("later"), expiresAt: at + 1 }
        ], run)
        assert.deepStrictEqual(yield* backend.expire(at, 100), [])
        assert.deepStrictEqual(yield* backend.purge(peerA, laneY), [])
        assert.deepStrictEqual(yield* backend.purge(peerB, undefined), [])
        assert.deepStrictEqual(yield* backend.purge(peerB, laneX), [])
        assert.deepStrictEqual(sortedStreams((yield* backend.outbound).streams), [
          { peer: peerA, lane: laneX, firstPending: 1, nextSeq: 3, runs: [{ run, from: 1 }], dropped: [] }
        ])
        assert.deepStrictEqual(texts(yield* backend.read(peerA, laneX, 1, 100)), ["never", "later"])
      }))

    test("commitReceived and received round-trip, overwrite per (peer, lane) and persist", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        const expected = [
          { peer: peerA, lane: laneX, incarnation: incarnation(2000), delivered: 7, runs: [] },
          { peer: peerA, lane: laneY, incarnation: incarnation(1000), delivered: 0, runs: [] },
          { peer: peerB, lane: laneX, incarnation: incarnation(3000), delivered: 1, runs: [] },
          {
            peer: PeerId.make("a"),
            lane: "bc",
            incarnation: incarnation(Number.MAX_SAFE_INTEGER),
            delivered: 9,
            runs: []
          },
          {
            peer: PeerId.make("ab"),
            lane: "c",
            incarnation: incarnation(0),
            delivered: Number.MAX_SAFE_INTEGER,
            runs: []
          }
        ]
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            yield* backend.commitReceived([
              { peer: peerA, lane: laneX, incarnation: incarnation(1000), delivered: 3, runs: [] },
              { peer: peerA, lane: laneY, incarnation: incarnation(1000), delivered: 0, runs: [] },
              { peer: peerB, lane: laneX, incarnation: incarnation(3000), delivered: 1, runs: [] }
            ])
            assert.deepStrictEqual(sortedReceived(yield* backend.received), [
              { peer: peerA, lane: laneX, incarnation: incarnation(1000), delivered: 3, runs: [] },
              { peer: peerA, lane: laneY, incarnation: incarnation(1000), delivered: 0, runs: [] },
              { peer: peerB, lane: laneX, incarnation: incarnation(3000), delivered: 1, runs: [] }
            ])
            // A new state of one stream replaces its old one, whatever its incarnation and count.
            yield* backend.commitReceived([{
              peer: peerA,
              lane: laneX,
              incarnation: incarnation(2000),
              delivered: 7,
              runs: []
            }])
            yield* backend.commitReceived([
              {
                peer: PeerId.make("a"),
                lane: "bc",
                incarnation: incarnation(Number.MAX_SAFE_INTEGER),
                delivered: 9,
                runs: []
              },
              {
                peer: PeerId.make("ab"),
                lane: "c",
                incarnation: incarnation(0),
                delivered: Number.MAX_SAFE_INTEGER,
                runs: []
              }
            ])
            assert.deepStrictEqual(sortedReceived(yield* backend.received), sortedReceived(expected))
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(sortedReceived(yield* backend.received), sortedReceived(expected), "after reopening")
            // Receive state and outbound state are separate.
            assert.deepStrictEqual((yield* backend.outbound).streams, [])
          }))
      }))

    test("commitReceived keeps runs exactly as given, a later commit replaces them, and they persist", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        const several = [
          { run: Number.MAX_SAFE_INTEGER, from: 1 },
          { run: 3, from: 10 },
          { run: 5, from: 11 },
          { run: 3, from: 40 },
          { run: 1, from: 41 }
        ]
        const expected = [
          { peer: peerA, lane: laneX, incarnation: incarnation(1), delivered: 12, runs: [{ run: 9, from: 12 }] },
          { peer: peerA, lane: laneY, incarnation: incarnation(1), delivered: 3, runs: [] },
          { peer: peerB, lane: laneX, incarnation: incarnation(2), delivered: 41, runs: several.slice(2) }
        ]
        const first = [
          { peer: peerA, lane: laneX, incarnation: incarnation(1), delivered: 0, runs: [] },
          { peer: peerA, lane: laneY, incarnation: incarnation(1), delivered: 2, runs: [{ run: 4, from: 1 }] },
          { peer: peerB, lane: laneX, incarnation: incarnation(2), delivered: 41, runs: several }
        ]
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            yield* backend.commitReceived(first)
            assert.deepStrictEqual(sortedReceived(yield* backend.received), first)
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(sortedReceived(yield* backend.received), first, "after reopening")
            // A later commit replaces a stream's runs as a whole: empty by some, some by none, several by fewer.
            yield* backend.commitReceived([
              { peer: peerA, lane: laneX, incarnation: incarnation(1), delivered: 12, runs: [{ run: 9, from: 12 }] },
              { peer: peerA, lane: laneY, incarnation: incarnation(1), delivered: 3, runs: [] }
            ])
            yield* backend.commitReceived([
              { peer: peerB, lane: laneX, incarnation: incarnation(2), delivered: 41, runs: several.slice(2) }
            ])
            assert.deepStrictEqual(sortedReceived(yield* backend.received), expected)
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(sortedReceived(yield* backend.received), expected, "after reopening")
          }))
      }))

    test("a second open while the store is owned fails with StoreLockedError, and succeeds once released", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        const firstScope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
        const first = yield* Scope.extend(store.open, firstScope)
        yield* first.append([{ peer: peerA, lane: laneX, payload: text("a1") }], run)
        const refused = yield* Effect.flip(Effect.scoped(store.open))
        assert.strictEqual(refused._tag, "StoreLockedError")
        // The refused attempt neither took the store from its owner nor released the owner's lock.
        assert.deepStrictEqual(yield* first.append([{ peer: peerA, lane: laneX, payload: text("a2") }], run), [2])
        const refusedAgain = yield* Effect.flip(Effect.scoped(store.open))
        assert.strictEqual(refusedAgain._tag, "StoreLockedError")
        yield* Scope.close(firstScope, Exit.void)
        yield* withBackend(store, (second) =>
          Effect.gen(function*() {
            assert.strictEqual(second.incarnation, first.incarnation)
            assert.deepStrictEqual(texts(yield* second.read(peerA, laneX, 1, 100)), ["a1", "a2"])
            const blocked = yield* Effect.flip(Effect.scoped(store.open))
            assert.strictEqual(blocked._tag, "StoreLockedError", "the new owner holds the lock in turn")
          }))
        yield* withBackend(
          store,
          (third) =>
            Effect.map(
              third.append([{ peer: peerA, lane: laneX, payload: text("a3") }], run),
              (allocated) => assert.deepStrictEqual(allocated, [3])
            )
        )
      }))

    test("stores made by one fixture are independent and can be open at the same time", () =>
      Effect.gen(function*() {
        const one = yield* openFresh
        const two = yield* openFresh
        assert.deepStrictEqual(yield* one.append([{ peer: peerA, lane: laneX, payload: text("one") }], run), [1])
        assert.deepStrictEqual(yield* two.append([{ peer: peerA, lane: laneX, payload: text("two") }], run), [1])
        yield* one.commitReceived([{ peer: peerB, lane: laneX, incarnation: incarnation(1), delivered: 1, runs: [] }])
        assert.deepStrictEqual(texts(yield* one.read(peerA, laneX, 1, 100)), ["one"])
        assert.deepStrictEqual(texts(yield* two.read(peerA, laneX, 1, 100)), ["two"])
        assert.deepStrictEqual(yield* two.received, [])
      }))

    test("withTransaction returns the value of its effect, nested too, and keeps its writes", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        assert.strictEqual(yield* backend.withTransaction(Effect.succeed(42)), 42)
        const result = yield* backend.withTransaction(
          Effect.gen(function*() {
            const allocated = yield* backend.append([{ peer: peerA, lane: laneX, payload: text("in") }], run)
            yield* backend.commitReceived([{
              peer: peerB,
              lane: laneX,
              incarnation: incarnation(9),
              delivered: 4,
              runs: []
            }])
            const nested = yield* backend.withTransaction(
              backend.append([{ peer: peerA, lane: laneX, payload: text("nested") }], run)
            )
            const seen = yield* backend.read(peerA, laneX, 1, 100)
            return { allocated, nested, seen: texts(seen) }
          })
        )
        assert.deepStrictEqual(result, { allocated: [1], nested: [2], seen: ["in", "nested"] })
        assert.deepStrictEqual(texts(yield* backend.read(peerA, laneX, 1, 100)), ["in", "nested"])
        assert.deepStrictEqual(sortedReceived(yield* backend.received), [
          { peer: peerB, lane: laneX, incarnation: incarnation(9), delivered: 4, runs: [] }
        ])
      }))

    test("withTransaction propagates the error of its effect and leaves the store usable", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        const failure = { reason: "application failure" } as const
        const error = yield* Effect.flip(backend.withTransaction(Effect.fail(failure)))
        assert.strictEqual(error, failure)
        const nestedError = yield* Effect.flip(
          backend.withTransaction(Effect.zipRight(
            backend.append([{ peer: peerB, lane: laneX, payload: text("b") }], run),
            backend.withTransaction(Effect.fail(failure))
          ))
        )
        assert.strictEqual(nestedError, failure)
        // No transaction is left open: later operations and transactions work and are kept.
        const allocated = yield* backend.append([{ peer: peerA, lane: laneX, payload: text("after") }], run)
        assert.deepStrictEqual(allocated, [1])
        assert.strictEqual(yield* backend.withTransaction(Effect.succeed("again")), "again")
        assert.deepStrictEqual(texts(yield* backend.read(peerA, laneX, 1, 100)), ["after"])
      }))

    test("a failed withTransaction rolls its writes back exactly when the backend says it is transactional", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        const failure = { reason: "application failure" } as const
        const error = yield* Effect.flip(backend.withTransaction(
          Effect.zipRight(
            Effect.zip(
              backend.append([{ peer: peerA, lane: laneX, payload: text("failed") }], run),
              backend.commitReceived([{
                peer: peerB,
                lane: laneX,
                incarnation: incarnation(1),
                delivered: 5,
                runs: []
              }])
            ),
            Effect.fail(failure)
          )
        ))
        assert.strictEqual(error, failure)
        const next = yield* backend.append([{ peer: peerA, lane: laneX, payload: text("next") }], run)
        const stored = texts(yield* backend.read(peerA, laneX, 1, 100))
        const received = (yield* backend.received).map((state) => state.delivered)
        if (backend.transactional) {
          assert.deepStrictEqual({ next, stored, received }, { next: [1], stored: ["next"], received: [] })
        } else {
          assert.deepStrictEqual({ next, stored, received }, { next: [2], stored: ["failed", "next"], received: [5] })
        }
      }))

    test("a failed nested withTransaction rolls back only its own writes when the backend is transactional", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        const failure = { reason: "application failure" } as const
        const last = yield* backend.withTransaction(Effect.gen(function*() {
          yield* backend.append([{ peer: peerA, lane: laneX, payload: text("outer") }], run)
          const error = yield* Effect.flip(backend.withTransaction(
            Effect.zipRight(
              backend.append([{ peer: peerA, lane: laneX, payload: text("inner") }], run),
              Effect.fail(failure)
            )
          ))
          assert.strictEqual(error, failure)
          return yield* backend.append([{ peer: peerA, lane: laneX, payload: text("after") }], run)
        }))
        const stored = texts(yield* backend.read(peerA, laneX, 1, 100))
        if (backend.transactional) {
          assert.deepStrictEqual({ last, stored }, { last: [2], stored: ["outer", "after"] })
        } else {
          assert.deepStrictEqual({ last, stored }, { last: [3], stored: ["outer", "inner", "after"] })
        }
      }))

    test("many streams in one append", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        const peers = range(1, 200).map((i) => PeerId.make(`peer-${i}`))
        const lanes: ReadonlyArray<Lane> = ["x", "y", "z"]
        const messages = [1, 2].flatMap((round) =>
          peers.flatMap((peer) => lanes.map((lane) => ({ peer, lane, payload: text(`${peer}/${lane}/${round}`) })))
        )
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            const allocated = yield* backend.append(messages, run)
            assert.strictEqual(allocated.length, 1200)
            assert.deepStrictEqual(allocated.slice(0, 600), Array.from({ length: 600 }, () => 1))
            assert.deepStrictEqual(allocated.slice(600), Array.from({ length: 600 }, () => 2))
            yield* backend.acknowledge(peers.map((peer) => ({ peer, lane: "y", upTo: 2 })))
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            const outbound = yield* backend.outbound
            assert.deepStrictEqual(
              sortedStreams(outbound.streams),
              peers.flatMap((peer) =>
                lanes.map((lane) => ({
                  peer,
                  lane,
                  firstPending: lane === "y" ? 3 : 1,
                  nextSeq: 3,
                  runs: lane === "y" ? [] : [{ run, from: 1 }],
                  dropped: []
                }))
              ).sort(byStream)
            )
            assert.deepStrictEqual(texts(yield* backend.read(peers[137]!, "z", 1, 100)), [
              "peer-138/z/1",
              "peer-138/z/2"
            ])
            assert.deepStrictEqual(yield* backend.read(peers[42]!, "y", 1, 100), [])
          }))
      }))

    test("a batch of 1,000 appends in one call", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        const payloads = range(1, 1000).map((i) => pattern(1 + (i % 97), i))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            const allocated = yield* backend.append(
              payloads.map((payload) => ({ peer: peerA, lane: laneX, payload })),
              run
            )
            assert.deepStrictEqual(allocated, range(1, 1000))
            assert.deepStrictEqual(seqs(yield* backend.read(peerA, laneX, 1, 1000)), range(1, 1000))
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            // Page through the stream the way the engine does.
            const pages: Array<number> = []
            let from = 1
            while (true) {
              const page = yield* backend.read(peerA, laneX, from, 128)
              if (page.length === 0) break
              assert.isAtMost(page.length, 128)
              for (const message of page) {
                assertBytes(message.payload, payloads[message.seq - 1]!, `payload of seq ${message.seq}`)
              }
              pages.push(page.length)
              from = page[page.length - 1]!.seq + 1
            }
            assert.deepStrictEqual(pages, [128, 128, 128, 128, 128, 128, 128, 104])
            assert.deepStrictEqual(sortedStreams((yield* backend.outbound).streams), [
              { peer: peerA, lane: laneX, firstPending: 1, nextSeq: 1001, runs: [{ run, from: 1 }], dropped: [] }
            ])
          }))
      }))

    const letter = (
      peer: PeerId.PeerId,
      lane: Lane,
      seq: number,
      payload: Uint8Array = text(`${peer}/${lane}/${seq}`)
    ) => ({
      peer,
      lane,
      incarnation: incarnation(41),
      seq,
      payload,
      error: `Delivery failed: seq ${seq} was refused`,
      attempts: 3,
      deadLetteredAt: at + (seq % 1000)
    })
    const receiveState = (peer: PeerId.PeerId, lane: Lane, delivered: number): ReceiveState => ({
      peer,
      lane,
      incarnation: incarnation(41),
      delivered,
      runs: [{ run: 3, from: 1 }]
    })
    const allLetters = (backend: Backend["Type"]) => backend.deadLetters({ limit: 10_000 })

    test("commitReceived stores dead letters with the receive state; they persist, as given, with growing ids", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        const binary = pattern(300, 9)
        const first = [letter(peerA, laneX, 2, binary), letter(peerA, laneX, 4)]
        const stored = yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(yield* allLetters(backend), [])
            yield* backend.commitReceived([receiveState(peerA, laneX, 5)], first)
            // A commit without dead letters adds none.
            yield* backend.commitReceived([receiveState(peerA, laneX, 6)])
            yield* backend.commitReceived([receiveState(peerB, laneY, 9)], [{
              ...letter(peerB, laneY, Number.MAX_SAFE_INTEGER),
              incarnation: incarnation(Number.MAX_SAFE_INTEGER)
            }])
            return yield* allLetters(backend)
          }))
        assert.strictEqual(stored.length, 3)
        const ids = stored.map((entry) => entry.id)
        assert.isTrue(ids.every((id, i) => Number.isSafeInteger(id) && id >= 1 && (i === 0 || id > ids[i - 1]!)))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            const reopened = yield* allLetters(backend)
            assert.deepStrictEqual(reopened.map((entry) => entry.id), ids)
            const [a, b, c] = reopened
            assert.deepStrictEqual({ ...a!, payload: undefined }, {
              ...first[0]!,
              payload: undefined,
              id: ids[0]!,
              replayRequested: false
            })
            assertBytes(a!.payload, binary, "the dead letter's payload")
            assert.strictEqual(decoder.decode(b!.payload), "peer-a/x/4")
            assert.deepStrictEqual([c!.peer, c!.lane, c!.seq, c!.incarnation], [
              peerB,
              laneY,
              Number.MAX_SAFE_INTEGER,
              Number.MAX_SAFE_INTEGER
            ])
            assert.deepStrictEqual(
              (yield* backend.received).map((state) => [state.peer, state.lane, state.delivered]).sort(),
              [[peerA, laneX, 6], [peerB, laneY, 9]]
            )
          }))
      }))

    test("deadLetters selects by peer, lane, ids and replay mark, lowest id first, and pages with afterId", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        yield* backend.commitReceived([receiveState(peerA, laneX, 3)], [
          letter(peerA, laneX, 1),
          letter(peerB, laneX, 1),
          letter(peerA, laneY, 1),
          letter(peerA, laneX, 2),
          letter(peerC, laneY, 7)
        ])
        const all = yield* allLetters(backend)
        const ids = all.map((entry) => entry.id)
        const names = (entries: ReadonlyArray<{ readonly payload: Uint8Array }>) =>
          entries.map((entry) => decoder.decode(entry.payload))
        assert.deepStrictEqual(names(all), ["peer-a/x/1", "peer-b/x/1", "peer-a/y/1", "peer-a/x/2", "peer-c/y/7"])
        assert.deepStrictEqual(names(yield* backend.deadLetters({ peer: peerA, limit: 10 })), [
          "peer-a/x/1",
          "peer-a/y/1",
          "peer-a/x/2"
        ])
        assert.deepStrictEqual(names(yield* backend.deadLetters({ peer: peerA, lane: laneX, limit: 10 })), [
          "peer-a/x/1",
          "peer-a/x/2"
        ])
        assert.deepStrictEqual(names(yield* backend.deadLetters({ lane: laneY, limit: 10 })), [
          "peer-a/y/1",
          "peer-c/y/7"
        ])
        assert.deepStrictEqual(names(yield* backend.deadLetters({ ids: [ids[4]!, ids[1]!, 999_999], limit: 10 })), [
          "peer-b/x/1",
          "peer-c/y/7"
        ])
        assert.deepStrictEqual(yield* backend.deadLetters({ ids: [], limit: 10 }), [])
        assert.deepStrictEqual(names(yield* backend.deadLetters({ limit: 2 })), ["peer-a/x/1", "peer-b/x/1"])
        assert.deepStrictEqual(names(yield* backend.deadLetters({ afterId: ids[1]!, limit: 2 })), [
          "peer-a/y/1",
          "peer-a/x/2"
        ])
        assert.deepStrictEqual(yield* backend.deadLetters({ afterId: ids[4]!, limit: 2 }), [])
        assert.strictEqual(yield* backend.requestReplay([ids[0]!, ids[3]!], true), 2)
        assert.deepStrictEqual(names(yield* backend.deadLetters({ replayRequested: true, limit: 10 })), [
          "peer-a/x/1",
          "peer-a/x/2"
        ])
        assert.deepStrictEqual(
          names(yield* backend.deadLetters({ replayRequested: false, peer: peerA, limit: 10 })),
          ["peer-a/y/1"]
        )
      }))

    test("removeDeadLetters and requestReplay count what they changed, persist, and ids are never reused", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        const ids = yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            yield* backend.commitReceived([], [1, 2, 3, 4].map((seq) => letter(peerA, laneX, seq)))
            const ids = (yield* allLetters(backend)).map((entry) => entry.id)
            assert.strictEqual(yield* backend.removeDeadLetters([ids[3]!, ids[1]!, 999_999]), 2)
            assert.strictEqual(yield* backend.removeDeadLetters([ids[3]!]), 0)
            assert.strictEqual(yield* backend.removeDeadLetters([]), 0)
            assert.strictEqual(yield* backend.requestReplay([ids[2]!, 999_999], true), 1)
            assert.strictEqual(yield* backend.requestReplay([], true), 0)
            return ids
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            const left = yield* allLetters(backend)
            assert.deepStrictEqual(left.map((entry) => [entry.id, entry.seq, entry.replayRequested]), [
              [ids[0]!, 1, false],
              [ids[2]!, 3, true]
            ])
            assert.strictEqual(yield* backend.requestReplay([ids[2]!], false), 1)
            assert.isFalse((yield* backend.deadLetters({ ids: [ids[2]!], limit: 1 }))[0]!.replayRequested)
            // The highest id was removed: a new dead letter still gets a higher one.
            yield* backend.commitReceived([], [letter(peerA, laneX, 5)])
            const newest = (yield* allLetters(backend)).at(-1)!
            assert.strictEqual(newest.seq, 5)
            assert.isAbove(newest.id, ids[3]!)
          }))
      }))

    test("thousands of dead letters are stored, selected, marked and removed in single calls", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        yield* backend.commitReceived(
          [receiveState(peerA, laneX, 2500)],
          range(1, 2500).map((seq) => letter(peerA, laneX, seq, pattern(seq % 50, seq)))
        )
        const all = yield* allLetters(backend)
        assert.deepStrictEqual(all.map((entry) => entry.seq), range(1, 2500))
        const ids = all.map((entry) => entry.id)
        assert.strictEqual((yield* backend.deadLetters({ ids: ids.slice(0, 2000), limit: 10_000 })).length, 2000)
        assert.strictEqual(yield* backend.requestReplay(ids.slice(500), true), 2000)
        assert.strictEqual(yield* backend.removeDeadLetters(ids.slice(0, 2000)), 2000)
        const left = yield* allLetters(backend)
        assert.deepStrictEqual(left.map((entry) => entry.seq), range(2001, 2500))
        for (const entry of left) assertBytes(entry.payload, pattern(entry.seq % 50, entry.seq), `seq ${entry.seq}`)
      }))

    test("on a transactional store, a failure inside withTransaction undoes the dead letters with the commit", () =>
      Effect.gen(function*() {
        const backend = yield* openFresh
        if (!backend.transactional) return
        const failed = yield* backend.withTransaction(
          Effect.zipRight(
            backend.commitReceived([receiveState(peerA, laneX, 4)], [letter(peerA, laneX, 4)]),
            Effect.fail("the delivery after it failed")
          )
        ).pipe(Effect.flip)
        assert.strictEqual(failed, "the delivery after it failed")
        assert.deepStrictEqual(yield* allLetters(backend), [])
        assert.deepStrictEqual(yield* backend.received, [])
      }))

    test("forget deletes what the store holds about one peer but its dead letters, and sets its incarnation", () =>
      Effect.gen(function*() {
        const store = yield* makeStore
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            yield* backend.append([
              { peer: peerA, lane: laneX, payload: text("a1") },
              { peer: peerA, lane: laneX, payload: text("a2"), expiresAt: at },
              { peer: peerA, lane: laneY, payload: text("a3") },
              { peer: peerB, lane: laneX, payload: text("b1") }
            ], run)
            yield* backend.acknowledge([{ peer: peerA, lane: laneX, upTo: 1 }])
            yield* backend.expire(at, 10)
            yield* backend.setIncarnation(peerA, incarnation(5))
            yield* backend.setIncarnation(peerB, incarnation(6))
            yield* backend.commitReceived(
              [receiveState(peerA, laneX, 4), receiveState(peerB, laneY, 2)],
              [letter(peerA, laneX, 3)]
            )
            yield* backend.forget(peerA, incarnation(9))
          }))
        yield* withBackend(store, (backend) =>
          Effect.gen(function*() {
            const outbound = yield* backend.outbound
            assert.deepStrictEqual(outbound.streams.map((stream) => [stream.peer, stream.lane]), [[peerB, laneX]])
            assert.deepStrictEqual(
              [...outbound.incarnations].sort((a, b) => a.peer < b.peer ? -1 : 1).map((entry) => [
                entry.peer,
                entry.incarnation
              ]),
              [[peerA, 9], [peerB, 6]]
            )
            assert.deepStrictEqual(yield* backend.read(peerA, laneX, 1, 10), [])
            assert.deepStrictEqual(yield* backend.read(peerA, laneY, 1, 10), [])
            assert.deepStrictEqual(texts(yield* backend.read(peerB, laneX, 1, 10)), ["b1"])
            assert.deepStrictEqual((yield* backend.received).map((state) => state.peer), [peerB])
            // Dead letters are the application's: forgetting their sender leaves them.
            assert.deepStrictEqual((yield* allLetters(backend)).map((entry) => [entry.peer, entry.seq]), [[peerA, 3]])
            // A new stream to the forgotten peer starts again at seq 1.
            assert.deepStrictEqual(yield* backend.append([{ peer: peerA, lane: laneX, payload: text("again") }], run), [
              1
            ])
            assert.deepStrictEqual(yield* backend.expire(at + 1, 10), [])
          }))
      }))
  })
}
