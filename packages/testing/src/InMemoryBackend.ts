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

interface StreamData {
  readonly peer: PeerId
  readonly lane: Lane
  nextSeq: number
  firstPending: number
  readonly payloads: Map<number, { readonly payload: Uint8Array; readonly run: number }>
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
 * @since 0.1.0
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
   * lanes of its streams from `peer` with a receive state.
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
    Array.from(data.streams, ([k, stream]) => [k, { ...stream, payloads: new Map(stream.payloads) }])
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
    const stored = stream.payloads.get(seq)
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
        Array.from(store.data.streams.values()).reduce((sum, stream) => sum + stream.payloads.size, 0)
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
    const operation = <A>(name: string, f: (data: StoreData) => A): Effect.Effect<A, BackendError> =>
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
          // Copies of the payloads (the caller may reuse its buffers), end to end in one buffer per call.
          const copies = new Uint8Array(messages.reduce((sum, message) => sum + message.payload.length, 0))
          let offset = 0
          let stream: StreamData | undefined
          return messages.map((message) => {
            // Messages of one stream come together: look the stream up once per run of them.
            if (stream === undefined || stream.peer !== message.peer || stream.lane !== message.lane) {
              const k = StreamKey.make(message.peer, message.lane)
              stream = data.streams.get(k)
              if (stream === undefined) {
                stream = { peer: message.peer, lane: message.lane, nextSeq: 1, firstPending: 1, payloads: new Map() }
                data.streams.set(k, stream)
              }
            }
            const seq = stream.nextSeq++
            const payload = copies.subarray(offset, offset += message.payload.length)
            payload.set(message.payload)
            stream.payloads.set(seq, { payload, run })
            return seq
          })
        }),
      read: (peer, lane, fromSeq, limit) =>
        operation("read", (data) => {
          store.usage_.reads++
          store.usage_.largestRead = Math.max(store.usage_.largestRead, limit)
          const stream = data.streams.get(StreamKey.make(peer, lane))
          if (stream === undefined) return []
          const result: Array<BackendTypes.StoredMessage> = []
          for (let seq = Math.max(fromSeq, stream.firstPending); seq < stream.nextSeq && result.length < limit; seq++) {
            const stored = stream.payloads.get(seq)
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
            for (let seq = stream.firstPending; seq <= upTo; seq++) stream.payloads.delete(seq)
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
 * @since 0.1.0
 * @category layers
 */
export const layer = (store: Store): Layer.Layer<Backend, StoreLockedError> => Layer.scoped(Backend, open(store))

/**
 * A `Backend` on a fresh store of its own.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFresh: Layer.Layer<Backend, StoreLockedError> = Layer.unwrapEffect(Effect.map(makeStore(), layer))
