/**
 * A `Backend` kept in memory, in a store handle that outlives engines: stop an engine and start another on the
 * same handle to model a restart; wipe it to model a lost disk; restore a snapshot to model a backup; tell it to
 * fail to model an unavailable database.
 *
 * @since 0.1.0
 */
import { Backend, BackendError, StoreLockedError } from "@intersession/core/Backend"
import type * as BackendTypes from "@intersession/core/Backend"
import * as Incarnation from "@intersession/core/Incarnation"
import type { Lane } from "@intersession/core/Lane"
import type { PeerId } from "@intersession/core/PeerId"
import * as StreamKey from "@intersession/core/StreamKey"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

interface Entry {
  readonly payload: Uint8Array
  readonly run: number
}

/** Consecutive messages of one append: message `i` is `bytes[offsets[i] … offsets[i+1]]`. */
interface Segment {
  readonly first: number
  readonly run: number
  readonly bytes: Uint8Array
  readonly offsets: Uint32Array
}

/**
 * A stream's stored messages, from `firstPending` on: one segment per append, so a stored message costs no object of
 * its own (a map of seqs would cost several times more per message, and weigh on the garbage collector).
 */
class Messages {
  private segments: Array<Segment> = []
  /** The index of the first segment kept; those before it are acknowledged, and go when half the array is. */
  private start = 0

  /** `base` is the first seq kept, `end` the seq the next message gets. */
  constructor(private base = 1, private end = 1) {}

  get(seq: number): Entry | undefined {
    if (seq < this.base || seq >= this.end) return undefined
    let low = this.start
    let high = this.segments.length - 1
    while (low < high) {
      const middle = (low + high + 1) >>> 1
      if (this.segments[middle]!.first <= seq) low = middle
      else high = middle - 1
    }
    const segment = this.segments[low]!
    const i = seq - segment.first
    return { payload: segment.bytes.subarray(segment.offsets[i]!, segment.offsets[i + 1]!), run: segment.run }
  }

  /** Stores the next seqs: copies of the payloads of `messages[from … to - 1]`, end to end in one buffer. */
  append(run: number, messages: ReadonlyArray<BackendTypes.OutboundMessage>, from: number, to: number): void {
    const offsets = new Uint32Array(to - from + 1)
    let size = 0
    for (let i = from; i < to; i++) {
      offsets[i - from] = size
      size += messages[i]!.payload.length
    }
    offsets[to - from] = size
    const bytes = new Uint8Array(size)
    for (let i = from; i < to; i++) bytes.set(messages[i]!.payload, offsets[i - from]!)
    this.segments.push({ first: this.end, run, bytes, offsets })
    this.end += to - from
  }

  /** Forgets every seq up to `upTo`. */
  dropThrough(upTo: number): void {
    this.base = Math.min(this.end, Math.max(this.base, upTo + 1))
    while (this.start < this.segments.length) {
      const segment = this.segments[this.start]!
      if (segment.first + segment.offsets.length - 1 > this.base) break
      this.start++
    }
    if (this.start === this.segments.length) {
      this.segments = []
      this.start = 0
    } else if (this.start > 1024 && this.start * 2 > this.segments.length) {
      this.segments = this.segments.slice(this.start)
      this.start = 0
    }
  }

  get size(): number {
    return this.end - this.base
  }

  /** Every message kept, with its seq, in seq order. */
  entries(): Array<readonly [number, Entry]> {
    const entries: Array<readonly [number, Entry]> = []
    for (let seq = this.base; seq < this.end; seq++) entries.push([seq, this.get(seq)!])
    return entries
  }

  copy(): Messages {
    const copy = new Messages(this.base, this.end)
    copy.segments = this.segments.slice(this.start)
    return copy
  }
}

interface StreamData {
  readonly peer: PeerId
  readonly lane: Lane
  nextSeq: number
  firstPending: number
  readonly messages: Messages
}

interface StoreData {
  incarnation: Incarnation.Incarnation | undefined
  readonly streams: Map<StreamKey.StreamKey, StreamData>
  readonly incarnations: Map<PeerId, Incarnation.Incarnation>
  readonly received: Map<StreamKey.StreamKey, BackendTypes.ReceiveState>
}

/**
 * A copy of a store's whole content, to restore later.
 *
 * @since 0.1.0
 * @category models
 */
export interface Snapshot {
  readonly data: StoreData
}

/**
 * Counters of what the engine asked of a store: tests use them to check that no operation loads a backlog.
 *
 * @since 0.1.0
 * @category models
 */
export interface Usage {
  readonly reads: number
  readonly largestRead: number
  readonly appends: number
  readonly acknowledgements: number
  readonly commits: number
}

/**
 * What a store holds about one peer, by lane.
 *
 * @since 0.2.0
 * @category models
 */
export interface Held {
  /** Lanes of streams to the peer, with messages the peer acknowledged. */
  readonly acknowledged: ReadonlyArray<Lane>
  /** Lanes of streams from the peer, with a receive state. */
  readonly received: ReadonlyArray<Lane>
}

/**
 * A store handle.
 *
 * @since 0.1.0
 * @category models
 */
export interface Store {
  readonly name: string
  /** The store's incarnation, once an engine has opened it. */
  readonly incarnation: Effect.Effect<Incarnation.Incarnation | undefined>
  /** Messages stored and not yet acknowledged, over all streams. */
  readonly pendingCount: Effect.Effect<number>
  readonly usage: Effect.Effect<Usage>
  /**
   * What the store holds about `peer`: the lanes of its streams to `peer` with messages `peer` acknowledged, and the
   * lanes of its streams from `peer` with a receive state. Since 0.2.0.
   */
  readonly heldFor: (peer: PeerId) => Effect.Effect<Held>
  /** Forgets everything, as a new install would. Stop the engine first. */
  readonly wipe: Effect.Effect<void>
  readonly snapshot: Effect.Effect<Snapshot>
  /** Replaces the content with a snapshot, as restoring a backup would. Stop the engine first. */
  readonly restore: (snapshot: Snapshot) => Effect.Effect<void>
  /** Makes the next `count` operations fail with a `BackendError`. */
  readonly failNext: (count: number) => Effect.Effect<void>
  /** Makes every operation fail until called again with `false`. */
  readonly setFailing: (failing: boolean) => Effect.Effect<void>
}

const emptyData = (): StoreData => ({
  incarnation: undefined,
  streams: new Map(),
  incarnations: new Map(),
  received: new Map()
})

const copyData = (data: StoreData): StoreData => ({
  incarnation: data.incarnation,
  streams: new Map(
    Array.from(data.streams, ([k, stream]) => [k, { ...stream, messages: stream.messages.copy() }])
  ),
  incarnations: new Map(data.incarnations),
  received: new Map(data.received)
})

interface StoreInternal extends Store {
  data: StoreData
  owned: boolean
  failures: number
  failing: boolean
  usage_: { reads: number; largestRead: number; appends: number; acknowledgements: number; commits: number }
}

const internals = new WeakMap<Store, StoreInternal>()

/** The runs of a stream's pending messages, each from its lowest pending seq. */
const pendingRuns = (stream: StreamData): Array<BackendTypes.RunStart> => {
  const runs: Array<BackendTypes.RunStart> = []
  for (let seq = stream.firstPending; seq < stream.nextSeq; seq++) {
    const stored = stream.messages.get(seq)
    if (stored !== undefined && runs[runs.length - 1]?.run !== stored.run) runs.push({ run: stored.run, from: seq })
  }
  return runs
}

/**
 * Makes an empty store.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeStore = (name = "memory"): Effect.Effect<Store> =>
  Effect.sync(() => {
    const store: StoreInternal = {
      name,
      data: emptyData(),
      owned: false,
      failures: 0,
      failing: false,
      usage_: { reads: 0, largestRead: 0, appends: 0, acknowledgements: 0, commits: 0 },
      incarnation: Effect.sync(() => store.data.incarnation),
      pendingCount: Effect.sync(() =>
        Array.from(store.data.streams.values()).reduce((sum, stream) => sum + stream.messages.size, 0)
      ),
      usage: Effect.sync(() => ({ ...store.usage_ })),
      heldFor: (peer) =>
        Effect.sync(() => ({
          acknowledged: Array.from(store.data.streams.values())
            .filter((stream) => stream.peer === peer && stream.firstPending > 1)
            .map((stream) => stream.lane),
          received: Array.from(store.data.received.values())
            .filter((state) => state.peer === peer)
            .map((state) => state.lane)
        })),
      wipe: Effect.sync(() => {
        store.data = emptyData()
      }),
      snapshot: Effect.sync(() => ({ data: copyData(store.data) })),
      restore: (snapshot) =>
        Effect.sync(() => {
          store.data = copyData(snapshot.data)
        }),
      failNext: (count) =>
        Effect.sync(() => {
          store.failures = count
        }),
      setFailing: (failing) =>
        Effect.sync(() => {
          store.failing = failing
        })
    }
    internals.set(store, store)
    return store
  })

const open = (handle: Store) =>
  Effect.gen(function*() {
    const store = internals.get(handle)
    if (store === undefined) return yield* Effect.die("not a store made by InMemoryBackend.makeStore")
    if (store.owned) return yield* new StoreLockedError({ store: store.name })
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        store.owned = true
      }),
      () =>
        Effect.sync(() => {
          store.owned = false
        })
    )
    if (store.data.incarnation === undefined) store.data.incarnation = yield* Incarnation.make
    const incarnation = store.data.incarnation

    /** Runs `f` on the current data unless a failure is injected; the data object changes on wipe and restore. */
    const operation = <A>(
      name: BackendTypes.BackendOperation,
      f: (data: StoreData) => A
    ): Effect.Effect<A, BackendError> =>
      Effect.suspend(() => {
        if (store.failing || store.failures > 0) {
          if (store.failures > 0) store.failures--
          return Effect.fail(new BackendError({ operation: name, cause: new Error("injected failure") }))
        }
        return Effect.succeed(f(store.data))
      })

    return Backend.of({
      incarnation,
      transactional: false,
      outbound: operation("outbound", (data) => ({
        streams: Array.from(data.streams.values(), (stream) => ({
          peer: stream.peer,
          lane: stream.lane,
          firstPending: stream.firstPending,
          nextSeq: stream.nextSeq,
          runs: pendingRuns(stream)
        })),
        incarnations: Array.from(data.incarnations, ([peer, incarnation]) => ({ peer, incarnation }))
      })),
      append: (messages, run) =>
        operation("append", (data) => {
          store.usage_.appends++
          const seqs: Array<number> = []
          // Messages of one stream come together: each run of them is one segment of its stream.
          for (let start = 0; start < messages.length;) {
            const { lane, peer } = messages[start]!
            let end = start + 1
            while (end < messages.length && messages[end]!.peer === peer && messages[end]!.lane === lane) end++
            const k = StreamKey.make(peer, lane)
            let stream = data.streams.get(k)
            if (stream === undefined) {
              stream = { peer, lane, nextSeq: 1, firstPending: 1, messages: new Messages() }
              data.streams.set(k, stream)
            }
            stream.messages.append(run, messages, start, end)
            for (let i = start; i < end; i++) seqs.push(stream.nextSeq++)
            start = end
          }
          return seqs
        }),
      read: (peer, lane, fromSeq, limit) =>
        operation("read", (data) => {
          store.usage_.reads++
          store.usage_.largestRead = Math.max(store.usage_.largestRead, limit)
          const stream = data.streams.get(StreamKey.make(peer, lane))
          if (stream === undefined) return []
          const result: Array<BackendTypes.StoredMessage> = []
          for (let seq = Math.max(fromSeq, stream.firstPending); seq < stream.nextSeq && result.length < limit; seq++) {
            const stored = stream.messages.get(seq)
            if (stored !== undefined) result.push({ peer, lane, seq, payload: stored.payload, run: stored.run })
          }
          return result
        }),
      acknowledge: (acks) =>
        operation("acknowledge", (data) => {
          store.usage_.acknowledgements++
          for (const ack of acks) {
            const stream = data.streams.get(StreamKey.make(ack.peer, ack.lane))
            if (stream === undefined) continue
            const upTo = Math.min(ack.upTo, stream.nextSeq - 1)
            stream.messages.dropThrough(upTo)
            stream.firstPending = Math.max(stream.firstPending, upTo + 1)
          }
        }),
      setIncarnation: (peer, next) =>
        operation("setIncarnation", (data) => {
          data.incarnations.set(peer, next)
        }),
      received: operation("received", (data) => Array.from(data.received.values())),
      commitReceived: (states) =>
        operation("commitReceived", (data) => {
          store.usage_.commits++
          for (const state of states) data.received.set(StreamKey.make(state.peer, state.lane), state)
        }),
      withTransaction: (effect) => effect
    })
  })

/**
 * A `Backend` on a store handle. Fails with `StoreLockedError` while another engine owns the handle.
 *
 * @example
 * ```ts
 * import * as Delivery from "@intersession/core/Delivery"
 * import * as ILM from "@intersession/core/ILM"
 * import * as PeerId from "@intersession/core/PeerId"
 * import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
 * import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 *
 * const program = Effect.gen(function*() {
 *   const hub = yield* InMemoryNetwork.make()
 *   // The store outlives the engines built on it: one engine after another on the same handle is a restart.
 *   const store = yield* InMemoryBackend.makeStore("alice")
 *   const alice = ILM.layer().pipe(
 *     Layer.provide(Delivery.layerInbox()),
 *     Layer.provide(hub.layer(PeerId.make("alice"))),
 *     Layer.provide(InMemoryBackend.layer(store))
 *   )
 *   const send = Effect.flatMap(ILM.ILM, (ilm) => ilm.send(PeerId.make("bob"), new TextEncoder().encode("hi")))
 *
 *   // The first run stores a message for bob, who is offline, and stops.
 *   yield* Effect.provide(send, alice)
 *   console.log(yield* store.pendingCount) // 1
 *   // The next run on the same store, a restart, still has it and stores the next one after it.
 *   const id = yield* Effect.provide(send, alice)
 *   console.log(id.seq, yield* store.pendingCount) // 2 2
 * })
 *
 * Effect.runPromise(Effect.scoped(program))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (store: Store): Layer.Layer<Backend, StoreLockedError> => Layer.scoped(Backend, open(store))

/**
 * A `Backend` on a fresh store of its own.
 *
 * @example
 * ```ts
 * import * as Backend from "@intersession/core/Backend"
 * import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
 * import * as Effect from "effect/Effect"
 *
 * // A store nobody else will open: each build of the layer starts empty.
 * const program = Effect.gen(function*() {
 *   const backend = yield* Backend.Backend
 *   const { streams } = yield* backend.outbound
 *   console.log(streams.length) // 0
 * })
 *
 * Effect.runPromise(Effect.scoped(Effect.provide(program, InMemoryBackend.layerFresh)))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFresh: Layer.Layer<Backend, StoreLockedError> = Layer.unwrapEffect(Effect.map(makeStore(), layer))
