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
  readonly expiresAt: number | undefined
}

/** A range of seqs being built: one operation's own object, which it may still extend. */
interface OpenRange {
  readonly from: number
  to: number
  readonly run: number
}

/**
 * Adds seqs `from … to` of `run` after the last range of `ranges`, extending that one when they continue it in the
 * same run.
 */
const appendRange = (ranges: Array<OpenRange>, from: number, to: number, run: number): void => {
  const last = ranges[ranges.length - 1]
  if (last !== undefined && last.run === run && last.to + 1 === from) last.to = to
  else ranges.push({ from, to, run })
}

/** A dropped range being built: one operation's own object, which it may still extend. */
interface OpenDropped extends OpenRange {
  readonly reason: BackendTypes.DropReason
}

/**
 * Calls `f` with the ranges of two lists of ranges in seq order that share no seq, in seq order.
 */
const inSeqOrder = <A extends BackendTypes.SeqRange>(
  ranges: ReadonlyArray<A>,
  more: ReadonlyArray<A>,
  f: (range: A) => void
): void => {
  let i = 0
  let j = 0
  while (i < ranges.length || j < more.length) {
    f(j === more.length || (i < ranges.length && ranges[i]!.from < more[j]!.from) ? ranges[i++]! : more[j++]!)
  }
}

/**
 * Two lists of dropped ranges in seq order that share no seq, as one list in seq order, with ranges that continue
 * each other in one run and for one reason joined. The ranges are new objects.
 */
const mergeDropped = (
  ranges: ReadonlyArray<BackendTypes.DroppedRange>,
  more: ReadonlyArray<BackendTypes.DroppedRange>
): Array<BackendTypes.DroppedRange> => {
  const merged: Array<OpenDropped> = []
  inSeqOrder(ranges, more, ({ from, reason, run, to }) => {
    const last = merged[merged.length - 1]
    if (last !== undefined && last.run === run && last.reason === reason && last.to + 1 === from) last.to = to
    else merged.push({ from, to, run, reason })
  })
  return merged
}

/**
 * Dropped ranges in seq order without the seqs up to `upTo`: the ones below go, one that straddles it is cut (and
 * keeps its run and reason).
 */
const rangesAbove = (
  ranges: ReadonlyArray<BackendTypes.DroppedRange>,
  upTo: number
): ReadonlyArray<BackendTypes.DroppedRange> => {
  const kept = ranges.findIndex((range) => range.to > upTo)
  if (kept === 0 && ranges[0]!.from > upTo) return ranges
  if (kept === -1) return []
  const { from, reason, run, to } = ranges[kept]!
  return [{ from: Math.max(from, upTo + 1), to, run, reason }, ...ranges.slice(kept + 1)]
}

const noBytes = new Uint8Array(0)

/** Consecutive messages of one append: message `i` is seq `first + i`, with `bytes[offsets[i] … offsets[i+1]]`. */
interface Segment {
  readonly first: number
  readonly run: number
  /** The payloads, end to end; emptied once none of the segment's messages is stored any more. */
  bytes: Uint8Array
  readonly offsets: Uint32Array
  /** Message `i` expires at `expiresAt[i]`, or never where that is `NaN`; absent when none of them expires. */
  readonly expiresAt: Float64Array | undefined
  /** None of the segment's messages expires before this. */
  readonly earliest: number
  /** `removed[i]` is 1 once message `i` expired or was purged; absent while none was. */
  removed: Uint8Array | undefined
  /** How many of its messages are still stored, and how many of those expire. */
  stored: number
  expiring: number
}

const lastSeq = (segment: Segment): number => segment.first + segment.offsets.length - 2

const isStored = (segment: Segment, i: number): boolean => segment.removed === undefined || segment.removed[i] === 0

const expires = (segment: Segment, i: number): boolean =>
  segment.expiresAt !== undefined && !Number.isNaN(segment.expiresAt[i]!)

/**
 * A stream's stored messages: one segment per append, so a stored message costs no object of its own (a map of seqs
 * would cost several times more per message, and weigh on the garbage collector). Messages that expired or were
 * purged are only marked in their segment; a segment lets go of its payloads once none of them is stored.
 */
class Messages {
  private segments: Array<Segment> = []
  /** The index of the first segment kept; those before it are gone, and go from the array when half of it is. */
  private start = 0
  /** Messages stored, and those of them that expire. */
  private stored = 0
  private expiringCount = 0

  /** `base` is the lowest seq stored (`end` when none is), `end` the seq the next message gets. */
  constructor(private base = 1, private end = 1) {}

  /** The lowest seq stored, or the next seq when nothing is. */
  get firstStored(): number {
    return this.base
  }

  get nextSeq(): number {
    return this.end
  }

  get size(): number {
    return this.stored
  }

  /** How many of the stored messages expire. */
  get expiring(): number {
    return this.expiringCount
  }

  /** Stores `messages[from … to - 1]` under the next seqs: copies of their payloads, end to end in one buffer. */
  append(run: number, messages: ReadonlyArray<BackendTypes.OutboundMessage>, from: number, to: number): void {
    const count = to - from
    const offsets = new Uint32Array(count + 1)
    let size = 0
    let expiring = 0
    let earliest = Infinity
    for (let i = from; i < to; i++) {
      offsets[i - from] = size
      size += messages[i]!.payload.length
      const expiresAt = messages[i]!.expiresAt
      if (expiresAt !== undefined) {
        expiring++
        earliest = Math.min(earliest, expiresAt)
      }
    }
    offsets[count] = size
    const bytes = new Uint8Array(size)
    for (let i = from; i < to; i++) bytes.set(messages[i]!.payload, offsets[i - from]!)
    const expiresAt = expiring === 0
      ? undefined
      : Float64Array.from({ length: count }, (_, i) => messages[from + i]!.expiresAt ?? NaN)
    this.segments.push({
      first: this.end,
      run,
      bytes,
      offsets,
      expiresAt,
      earliest,
      removed: undefined,
      stored: count,
      expiring
    })
    this.end += count
    this.stored += count
    this.expiringCount += expiring
  }

  /** Up to `limit` stored messages with seq `>= fromSeq`, in seq order. */
  read(fromSeq: number, limit: number): Array<readonly [number, Entry]> {
    const found: Array<readonly [number, Entry]> = []
    let seq = Math.max(fromSeq, this.base)
    if (seq >= this.end) return found
    for (let s = this.indexOf(seq); s < this.segments.length && found.length < limit; s++) {
      const segment = this.segments[s]!
      const last = lastSeq(segment)
      for (; segment.stored > 0 && seq <= last && found.length < limit; seq++) {
        const i = seq - segment.first
        if (!isStored(segment, i)) continue
        const expiresAt = segment.expiresAt?.[i]
        found.push([seq, {
          payload: segment.bytes.subarray(segment.offsets[i]!, segment.offsets[i + 1]!),
          run: segment.run,
          expiresAt: expiresAt === undefined || Number.isNaN(expiresAt) ? undefined : expiresAt
        }])
      }
      seq = last + 1
    }
    return found
  }

  /** The stored seqs as ranges in seq order, each as long as it can be while one run allocated it. */
  ranges(): Array<OpenRange> {
    const ranges: Array<OpenRange> = []
    for (let s = this.start; s < this.segments.length; s++) {
      const segment = this.segments[s]!
      if (segment.stored === 0) continue
      const from = Math.max(this.base, segment.first)
      if (segment.removed === undefined) {
        appendRange(ranges, from, lastSeq(segment), segment.run)
        continue
      }
      for (let seq = from; seq <= lastSeq(segment); seq++) {
        if (isStored(segment, seq - segment.first)) appendRange(ranges, seq, seq, segment.run)
      }
    }
    return ranges
  }

  /** Forgets every seq up to `upTo`. */
  acknowledge(upTo: number): void {
    const next = Math.min(this.end, upTo + 1)
    if (next <= this.base) return
    for (; this.start < this.segments.length; this.start++) {
      const segment = this.segments[this.start]!
      const to = Math.min(lastSeq(segment), next - 1)
      if (segment.removed === undefined && segment.expiresAt === undefined) {
        this.forget(segment, to - Math.max(this.base, segment.first) + 1, 0)
      } else if (segment.stored > 0) {
        for (let seq = Math.max(this.base, segment.first); seq <= to; seq++) {
          const i = seq - segment.first
          if (isStored(segment, i)) this.forget(segment, 1, expires(segment, i) ? 1 : 0)
        }
      }
      if (to < lastSeq(segment)) break
    }
    this.base = next
    this.settle()
  }

  /**
   * Removes up to `limit` stored messages that expire at or before `now`, in seq order, and returns their seqs as
   * ranges in seq order, each as long as it can be while one run allocated it.
   */
  expire(now: number, limit: number): Array<OpenRange> {
    const removed: Array<OpenRange> = []
    let left = limit
    for (let s = this.start; s < this.segments.length && left > 0; s++) {
      const segment = this.segments[s]!
      const expiresAt = segment.expiresAt
      if (expiresAt === undefined || segment.expiring === 0 || segment.earliest > now) continue
      for (let seq = Math.max(this.base, segment.first); seq <= lastSeq(segment) && left > 0; seq++) {
        const i = seq - segment.first
        if (expiresAt[i]! <= now && isStored(segment, i)) {
          segment.removed ??= new Uint8Array(segment.offsets.length - 1)
          segment.removed[i] = 1
          this.forget(segment, 1, 1)
          appendRange(removed, seq, seq, segment.run)
          left--
        }
      }
    }
    this.settle()
    return removed
  }

  /** Removes every stored message, and returns their seqs as {@link ranges} gives them. */
  purge(): Array<OpenRange> {
    const removed = this.ranges()
    this.segments = []
    this.start = 0
    this.stored = 0
    this.expiringCount = 0
    this.base = this.end
    return removed
  }

  /** A copy that changes independently of this one (payloads are never written after an append, so they are shared). */
  copy(): Messages {
    const copy = new Messages(this.base, this.end)
    copy.segments = this.segments.slice(this.start).map((segment) => ({
      ...segment,
      removed: segment.removed?.slice()
    }))
    copy.stored = this.stored
    copy.expiringCount = this.expiringCount
    return copy
  }

  /** Counts `count` stored messages of `segment`, `expiring` of them expiring, as stored no longer. */
  private forget(segment: Segment, count: number, expiring: number): void {
    segment.stored -= count
    segment.expiring -= expiring
    this.stored -= count
    this.expiringCount -= expiring
    if (segment.stored === 0) segment.bytes = noBytes
  }

  /** Moves `base` up to the lowest stored seq, past the segments with none. */
  private settle(): void {
    while (this.start < this.segments.length && this.segments[this.start]!.stored === 0) this.start++
    if (this.start === this.segments.length) {
      this.segments = []
      this.start = 0
      this.base = this.end
      return
    }
    const segment = this.segments[this.start]!
    let seq = Math.max(this.base, segment.first)
    while (!isStored(segment, seq - segment.first)) seq++
    this.base = seq
    if (this.start > 1024 && this.start * 2 > this.segments.length) {
      this.segments = this.segments.slice(this.start)
      this.start = 0
    }
  }

  /** The index of the segment that holds `seq`, for `base <= seq < end`. */
  private indexOf(seq: number): number {
    let low = this.start
    let high = this.segments.length - 1
    while (low < high) {
      const middle = (low + high + 1) >>> 1
      if (this.segments[middle]!.first <= seq) low = middle
      else high = middle - 1
    }
    return low
  }
}

interface StreamData {
  readonly peer: PeerId
  readonly lane: Lane
  readonly messages: Messages
  /**
   * The seqs `expire` and `purge` removed that no acknowledgement covered yet, with why, as `outbound` reports them.
   * A new array replaces it on each change and its ranges never change, so a snapshot may share it.
   */
  dropped: ReadonlyArray<BackendTypes.DroppedRange>
}

/** The last seq the peer acknowledged: every seq above it is stored or dropped. */
const acknowledgedUpTo = (stream: StreamData): number =>
  Math.min(stream.messages.firstStored, stream.dropped[0]?.from ?? Infinity) - 1

/**
 * Records seqs removed from `stream` as dropped for `reason`, and returns them as `expire` and `purge` report them.
 */
const drop = (
  stream: StreamData,
  removed: ReadonlyArray<BackendTypes.RunRange>,
  reason: BackendTypes.DropReason
): BackendTypes.DroppedMessages => {
  stream.dropped = mergeDropped(stream.dropped, removed.map(({ from, run, to }) => ({ from, to, run, reason })))
  return { peer: stream.peer, lane: stream.lane, seqs: removed }
}

/** The runs of a stream's stored and dropped seqs, each from its lowest such seq. */
const runStarts = (stream: StreamData): Array<BackendTypes.RunStart> => {
  const runs: Array<BackendTypes.RunStart> = []
  inSeqOrder<BackendTypes.RunRange>(stream.messages.ranges(), stream.dropped, ({ from, run }) => {
    if (runs[runs.length - 1]?.run !== run) runs.push({ run, from })
  })
  return runs
}

interface StoreData {
  incarnation: Incarnation.Incarnation | undefined
  readonly streams: Map<StreamKey.StreamKey, StreamData>
  readonly incarnations: Map<PeerId, Incarnation.Incarnation>
  readonly received: Map<StreamKey.StreamKey, BackendTypes.ReceiveState>
  /** By id, in id order (ids only grow). */
  readonly deadLetters: Map<number, BackendTypes.DeadLetter>
  lastDeadLetterId: number
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
  /** Messages stored, over all streams: neither acknowledged nor expired nor purged. */
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
  received: new Map(),
  deadLetters: new Map(),
  lastDeadLetterId: 0
})

const copyData = (data: StoreData): StoreData => ({
  incarnation: data.incarnation,
  streams: new Map(
    Array.from(data.streams, ([k, stream]) => [k, { ...stream, messages: stream.messages.copy() }])
  ),
  incarnations: new Map(data.incarnations),
  received: new Map(data.received),
  deadLetters: new Map(data.deadLetters),
  lastDeadLetterId: data.lastDeadLetterId
})

interface StoreInternal extends Store {
  data: StoreData
  owned: boolean
  failures: number
  failing: boolean
  usage_: { reads: number; largestRead: number; appends: number; acknowledgements: number; commits: number }
}

const internals = new WeakMap<Store, StoreInternal>()

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
            .filter((stream) => stream.peer === peer && acknowledgedUpTo(stream) > 0)
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
          firstPending: stream.messages.firstStored,
          nextSeq: stream.messages.nextSeq,
          runs: runStarts(stream),
          dropped: stream.dropped
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
              stream = { peer, lane, messages: new Messages(), dropped: [] }
              data.streams.set(k, stream)
            }
            const first = stream.messages.nextSeq
            stream.messages.append(run, messages, start, end)
            for (let i = start; i < end; i++) seqs.push(first + i - start)
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
          return stream.messages.read(fromSeq, limit).map(([seq, { expiresAt, payload, run }]) =>
            expiresAt === undefined ? { peer, lane, seq, payload, run } : { peer, lane, seq, payload, run, expiresAt }
          )
        }),
      acknowledge: (acks) =>
        operation("acknowledge", (data) => {
          store.usage_.acknowledgements++
          for (const ack of acks) {
            const stream = data.streams.get(StreamKey.make(ack.peer, ack.lane))
            if (stream === undefined) continue
            stream.messages.acknowledge(ack.upTo)
            stream.dropped = rangesAbove(stream.dropped, ack.upTo)
          }
        }),
      expire: (now, limit) =>
        operation("expire", (data) => {
          const expired: Array<BackendTypes.DroppedMessages> = []
          let left = limit
          for (const stream of data.streams.values()) {
            if (left <= 0) break
            if (stream.messages.expiring === 0) continue
            const removed = stream.messages.expire(now, left)
            if (removed.length === 0) continue
            expired.push(drop(stream, removed, "expired"))
            for (const range of removed) left -= range.to - range.from + 1
          }
          return expired
        }),
      purge: (peer, lane) =>
        operation("purge", (data) => {
          const purged: Array<BackendTypes.DroppedMessages> = []
          for (const stream of data.streams.values()) {
            if (stream.peer !== peer || (lane !== undefined && stream.lane !== lane)) continue
            const removed = stream.messages.purge()
            if (removed.length > 0) purged.push(drop(stream, removed, "purged"))
          }
          return purged
        }),
      forget: (peer, next) =>
        operation("forget", (data) => {
          for (const [key, stream] of data.streams) if (stream.peer === peer) data.streams.delete(key)
          for (const [key, state] of data.received) if (state.peer === peer) data.received.delete(key)
          data.incarnations.set(peer, next)
        }),
      setIncarnation: (peer, next) =>
        operation("setIncarnation", (data) => {
          data.incarnations.set(peer, next)
        }),
      received: operation("received", (data) => Array.from(data.received.values())),
      commitReceived: (states, deadLetters = []) =>
        operation("commitReceived", (data) => {
          store.usage_.commits++
          for (const state of states) data.received.set(StreamKey.make(state.peer, state.lane), state)
          for (const letter of deadLetters) {
            const id = ++data.lastDeadLetterId
            data.deadLetters.set(id, { ...letter, id, replayRequested: false })
          }
        }),
      deadLetters: (query) =>
        operation("deadLetters", (data) => {
          const ids = query.ids === undefined ? undefined : new Set(query.ids)
          const found: Array<BackendTypes.DeadLetter> = []
          for (const letter of data.deadLetters.values()) {
            if (found.length >= query.limit) break
            if (
              letter.id > (query.afterId ?? 0) &&
              (query.peer === undefined || letter.peer === query.peer) &&
              (query.lane === undefined || letter.lane === query.lane) &&
              (ids === undefined || ids.has(letter.id)) &&
              (query.replayRequested === undefined || letter.replayRequested === query.replayRequested)
            ) found.push(letter)
          }
          return found
        }),
      removeDeadLetters: (ids) =>
        operation("removeDeadLetters", (data) =>
          Array.from(new Set(ids)).filter((id) => data.deadLetters.delete(id)).length),
      requestReplay: (ids, requested) =>
        operation("requestReplay", (data) =>
          Array.from(new Set(ids)).filter((id) => {
            const letter = data.deadLetters.get(id)
            if (letter === undefined) {
              return false
            }
            data.deadLetters.set(id, { ...letter, replayRequested: requested })
            return true
          }).length),
      withTransaction: (effect) =>
        effect
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
