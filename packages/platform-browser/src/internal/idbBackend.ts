/**
 * The operations of the IndexedDB backend over an open database, each one transaction (see `transact`): the writes
 * of one Backend call commit together or not at all, however many messages they carry.
 *
 * The store keeps one invariant that spares it from reading messages where it needs their seqs: a stream's seqs
 * above its last acknowledgement and below its next seq are each either stored or dropped. So its lowest stored seq,
 * the runs of its seqs and the seqs a purge removes follow from its record and its dropped ranges alone.
 *
 * @internal
 */
import type * as BackendTypes from "@intersession/core/Backend"
import type { Incarnation } from "@intersession/core/Incarnation"
import type { Lane } from "@intersession/core/Lane"
import type { PeerId } from "@intersession/core/PeerId"
import * as StreamKey from "@intersession/core/StreamKey"
import {
  type BatchRecord,
  type DroppedRecord,
  expiryIndex,
  type IncarnationRecord,
  metaKey,
  type MetaRecord,
  type ReceivedRecord,
  request,
  stores,
  type StreamRecord,
  transact,
  walk
} from "./idbDatabase.js"

// --- ranges and runs ---------------------------------------------------------------------------------------------

/** Every key of `[peer, lane, …]` or `[peer, …]`: arrays sort after numbers and strings. */
const startingWith = (...prefix: Array<string>) => IDBKeyRange.bound(prefix, [...prefix, []])

/** The keys of a stream's seqs `from … to`. */
const seqsOf = (peer: string, lane: string, from: number, to: number) =>
  IDBKeyRange.bound([peer, lane, from], [peer, lane, to])

/** The largest count `getAll` takes. */
const maxCount = 2 ** 32 - 1

/** A limit as a count for `getAll`, where 0 means no limit: callers return nothing for a count below 1 instead. */
const countOf = (limit: number) => Math.min(Math.floor(limit), maxCount)

/** The run that allocated `seq`, from a stream's run starts in seq order. */
const runAt = (runs: ReadonlyArray<BackendTypes.RunStart>, seq: number): number | undefined => {
  let run: number | undefined
  for (const start of runs) {
    if (start.from > seq) break
    run = start.run
  }
  return run
}

/** A stream's run starts from `from` on, for seqs below `nextSeq`. */
const runsFrom = (
  runs: ReadonlyArray<BackendTypes.RunStart>,
  from: number,
  nextSeq: number
): Array<BackendTypes.RunStart> => {
  if (from >= nextSeq) return []
  const kept = runs.filter((start) => start.from > from)
  const run = runAt(runs, from)
  return run === undefined ? kept : [{ run, from }, ...kept]
}

/** Seqs `from … to` of a stream as ranges, split where its run changes. */
const splitByRun = (
  runs: ReadonlyArray<BackendTypes.RunStart>,
  from: number,
  to: number
): Array<BackendTypes.RunRange> => {
  const ranges: Array<BackendTypes.RunRange> = []
  for (const [i, start] of runs.entries()) {
    const end = Math.min(to, (runs[i + 1]?.from ?? Infinity) - 1)
    const begin = Math.max(from, start.from)
    if (begin <= end) ranges.push({ from: begin, to: end, run: start.run })
  }
  return ranges
}

/** Removed seqs of one stream, in seq order, as ranges each as long as their run allows. */
const rangesOf = (removed: ReadonlyArray<{ readonly seq: number; readonly run: number }>) => {
  const ranges: Array<{ from: number; to: number; run: number }> = []
  for (const { run, seq } of removed) {
    const last = ranges[ranges.length - 1]
    if (last !== undefined && last.run === run && last.to + 1 === seq) last.to = seq
    else ranges.push({ from: seq, to: seq, run })
  }
  return ranges
}

/** A stream's dropped ranges in seq order, with the ranges that continue each other in one run and reason joined. */
const joined = (ranges: ReadonlyArray<DroppedRecord>): Array<BackendTypes.DroppedRange> => {
  const result: Array<{ from: number; to: number; run: number; reason: BackendTypes.DropReason }> = []
  for (const { from, reason, run, to } of ranges) {
    const last = result[result.length - 1]
    if (last !== undefined && last.run === run && last.reason === reason && last.to + 1 === from) last.to = to
    else result.push({ from, to, run, reason })
  }
  return result
}

/** The lowest stored seq of a stream: the first seq above its acknowledgement that no dropped range covers. */
const firstStored = (stream: StreamRecord, dropped: ReadonlyArray<BackendTypes.SeqRange>): number => {
  let seq = stream.acknowledged + 1
  for (const range of dropped) {
    if (range.from !== seq) break
    seq = range.to + 1
  }
  return Math.min(seq, stream.nextSeq)
}

/** A stream's stored seqs as ranges of one run each: the seqs above its acknowledgement that are not dropped. */
const storedRanges = (stream: StreamRecord, dropped: ReadonlyArray<BackendTypes.SeqRange>) => {
  const ranges: Array<BackendTypes.RunRange> = []
  let from = stream.acknowledged + 1
  for (const range of [...dropped, { from: stream.nextSeq, to: stream.nextSeq }]) {
    if (range.from > from) ranges.push(...splitByRun(stream.runs, from, range.from - 1))
    from = range.to + 1
  }
  return ranges
}

/** Bytes as their own buffer: a view into a larger one would be stored with all of it. */
const ownBytes = (bytes: Uint8Array): Uint8Array =>
  bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice()

/** Items grouped by stream, in the order of each stream's first item. */
const byStream = <A extends { readonly peer: PeerId; readonly lane: Lane }>(items: ReadonlyArray<A>) => {
  const groups = new Map<StreamKey.StreamKey, Array<A>>()
  for (const item of items) {
    const key = StreamKey.make(item.peer, item.lane)
    const group = groups.get(key)
    if (group === undefined) groups.set(key, [item])
    else group.push(item)
  }
  return groups
}

// --- operations --------------------------------------------------------------------------------------------------

/** The store's incarnation, written as `fresh` by the first open. */
export const initialize = (db: IDBDatabase, fresh: Incarnation): Promise<Incarnation> =>
  transact(db, [stores.meta], "readwrite", async (transaction) => {
    const meta = transaction.objectStore(stores.meta)
    const stored: MetaRecord | undefined = await request(meta.get(metaKey))
    if (stored !== undefined) return stored.incarnation
    meta.add({ incarnation: fresh } satisfies MetaRecord, metaKey)
    return fresh
  })

export const outbound = (db: IDBDatabase): Promise<BackendTypes.OutboundState> =>
  transact(db, [stores.streams, stores.dropped, stores.incarnations], "readonly", async (transaction) => {
    const [streams, dropped, incarnations]: [
      ReadonlyArray<StreamRecord>,
      ReadonlyArray<DroppedRecord>,
      ReadonlyArray<IncarnationRecord>
    ] = await Promise.all([
      request(transaction.objectStore(stores.streams).getAll()),
      request(transaction.objectStore(stores.dropped).getAll()),
      request(transaction.objectStore(stores.incarnations).getAll())
    ])
    // In key order: each stream's ranges in seq order.
    const droppedOf = byStream(dropped)
    return {
      streams: streams.map((stream) => {
        const ranges = joined(droppedOf.get(StreamKey.make(stream.peer, stream.lane)) ?? [])
        return {
          peer: stream.peer,
          lane: stream.lane,
          firstPending: firstStored(stream, ranges),
          nextSeq: stream.nextSeq,
          runs: stream.runs.map(({ from, run }) => ({ run, from })),
          dropped: ranges
        }
      }),
      incarnations: incarnations.map(({ incarnation, peer }) => ({ peer, incarnation }))
    }
  })

/**
 * The earliest expiry of a batch's messages that are still stored and above `acknowledged`, or undefined if none
 * expires.
 */
const nextExpiryOf = (
  payloads: ReadonlyArray<Uint8Array | null>,
  expiresAt: ReadonlyArray<number | null>,
  from: number,
  acknowledged: number
): number | undefined => {
  let next: number | undefined
  for (const [i, at] of expiresAt.entries()) {
    if (at !== null && payloads[i] !== null && from + i > acknowledged && (next === undefined || at < next)) next = at
  }
  return next
}

/** A batch record, with `expiresAt` and `nextExpiry` only where a message expires. */
const batchRecord = (
  batch: Omit<BatchRecord, "expiresAt" | "nextExpiry">,
  expiresAt: ReadonlyArray<number | null>,
  acknowledged: number
): BatchRecord => {
  const nextExpiry = nextExpiryOf(batch.payloads, expiresAt, batch.from, acknowledged)
  return nextExpiry === undefined ? batch : { ...batch, expiresAt, nextExpiry }
}

/**
 * Allocates the next seqs of each message's stream and stores the messages, one record per stream: one read per
 * stream, then writes.
 */
export const append = (
  db: IDBDatabase,
  messages: ReadonlyArray<BackendTypes.OutboundMessage>,
  run: number
): Promise<ReadonlyArray<number>> =>
  transact(db, [stores.streams, stores.batches], "readwrite", async (transaction) => {
    const streamStore = transaction.objectStore(stores.streams)
    const batchStore = transaction.objectStore(stores.batches)
    const groups = Array.from(byStream(messages).values())
    const found: ReadonlyArray<StreamRecord | undefined> = await Promise.all(
      groups.map((group) => request(streamStore.get([group[0]!.peer, group[0]!.lane])))
    )
    const records = groups.map((group, i): StreamRecord =>
      found[i] ?? { peer: group[0]!.peer, lane: group[0]!.lane, nextSeq: 1, acknowledged: 0, runs: [] }
    )
    // Seqs of one stream in one call are consecutive, in the order given.
    const next = new Map(records.map((stream) => [StreamKey.make(stream.peer, stream.lane), stream.nextSeq]))
    const seqs = messages.map(({ lane, peer }) => {
      const key = StreamKey.make(peer, lane)
      const seq = next.get(key)!
      next.set(key, seq + 1)
      return seq
    })
    for (const [i, group] of groups.entries()) {
      const stream = records[i]!
      const { lane, peer } = stream
      const from = stream.nextSeq
      const runs = stream.runs[stream.runs.length - 1]?.run === run ? stream.runs : [...stream.runs, { run, from }]
      streamStore.put(
        { peer, lane, nextSeq: from + group.length, acknowledged: stream.acknowledged, runs } satisfies StreamRecord
      )
      const payloads = group.map((message) => ownBytes(message.payload))
      const expiresAt = group.map((message) => message.expiresAt ?? null)
      batchStore.add(
        batchRecord({ peer, lane, from, to: from + group.length - 1, run, payloads }, expiresAt, stream.acknowledged)
      )
    }
    return seqs
  })

/** The stored messages of a batch from `fromSeq` on, in seq order, until `into` holds `limit`. */
const takeFrom = (
  batch: BatchRecord,
  fromSeq: number,
  limit: number,
  into: Array<BackendTypes.StoredMessage>
): void => {
  const { lane, peer, run } = batch
  for (let i = Math.max(0, fromSeq - batch.from); i < batch.payloads.length && into.length < limit; i++) {
    const payload = batch.payloads[i]
    if (payload === null || payload === undefined) continue
    const seq = batch.from + i
    const expiresAt = batch.expiresAt?.[i] ?? null
    into.push(expiresAt === null ? { peer, lane, seq, run, payload } : { peer, lane, seq, run, payload, expiresAt })
  }
}

export const read = (
  db: IDBDatabase,
  peer: PeerId,
  lane: Lane,
  fromSeq: number,
  limit: number
): Promise<ReadonlyArray<BackendTypes.StoredMessage>> =>
  transact(db, [stores.streams, stores.batches], "readonly", async (transaction) => {
    if (!(limit >= 1)) return []
    const batchStore = transaction.objectStore(stores.batches)
    const stream: StreamRecord | undefined = await request(transaction.objectStore(stores.streams).get([peer, lane]))
    if (stream === undefined) return []
    // A batch an acknowledgement ends in still holds the seqs it covered.
    const from = Math.max(fromSeq, stream.acknowledged + 1)
    const found: Array<BackendTypes.StoredMessage> = []
    // The batch that holds `from` starts at or below it; then the batches above it, until `limit` are found.
    await walk<BatchRecord>(batchStore.openCursor(seqsOf(peer, lane, -Infinity, from), "prev"), (batch) => {
      takeFrom(batch, from, limit, found)
      return false
    })
    if (found.length < limit) {
      await walk<BatchRecord>(
        batchStore.openCursor(IDBKeyRange.bound([peer, lane, from], [peer, lane, Infinity], true)),
        (batch) => {
          takeFrom(batch, from, limit, found)
          return found.length < limit
        }
      )
    }
    return found
  })

// --- writes that can share a transaction ---------------------------------------------------------------------------

/**
 * A write that can run in a transaction of its own ({@link perform}) or share one with others ({@link performAll}):
 * the object stores it uses, and its requests.
 */
export interface Work<A> {
  readonly stores: ReadonlyArray<string>
  readonly run: (transaction: IDBTransaction) => Promise<A>
}

/** Runs `work` in a write transaction of its own. */
export const perform = <A>(db: IDBDatabase, work: Work<A>): Promise<A> =>
  transact(db, work.stores, "readwrite", work.run)

/** Runs `works` in order in one write transaction over every store they use: they commit together or not at all. */
export const performAll = (db: IDBDatabase, works: ReadonlyArray<Work<unknown>>): Promise<void> =>
  transact(db, Array.from(new Set(works.flatMap((work) => work.stores))), "readwrite", async (transaction) => {
    // Each work goes on from the callback of the last request of the one before: the transaction stays active.
    for (const work of works) await work.run(transaction)
  })

/** Deletes each stream's messages and dropped seqs up to its acknowledgement (the highest given per stream). */
export const acknowledge = (acks: ReadonlyArray<BackendTypes.Acknowledgement>): Work<void> => ({
  stores: [stores.streams, stores.batches, stores.dropped],
  run: async (transaction) => {
    const streamStore = transaction.objectStore(stores.streams)
    const batchStore = transaction.objectStore(stores.batches)
    const droppedStore = transaction.objectStore(stores.dropped)
    const highest = Array.from(byStream(acks).values(), (group) => group.reduce((a, b) => (b.upTo > a.upTo ? b : a)))
    await Promise.all(highest.map(async ({ lane, peer, upTo }) => {
      const [stream, ranges]: [StreamRecord | undefined, ReadonlyArray<DroppedRecord>] = await Promise.all([
        request(streamStore.get([peer, lane])),
        request(droppedStore.getAll(seqsOf(peer, lane, -Infinity, upTo)))
      ])
      // Seqs only grow: what is at or below the last acknowledgement is gone already.
      const acknowledged = Math.min(Math.floor(upTo), stream === undefined ? 0 : stream.nextSeq - 1)
      if (stream === undefined || acknowledged <= stream.acknowledged) return
      // The batches wholly at or below the acknowledgement go; one that it ends in stays, read from above it.
      await walk<BatchRecord>(batchStore.openCursor(seqsOf(peer, lane, -Infinity, acknowledged), "prev"), (last) => {
        batchStore.delete(seqsOf(peer, lane, -Infinity, last.to <= acknowledged ? last.from : last.from - 1))
        return false
      })
      for (const range of ranges) {
        droppedStore.delete([peer, lane, range.from])
        // A range the acknowledgement ends in keeps its seqs above it.
        if (range.to > acknowledged) droppedStore.put({ ...range, from: acknowledged + 1 } satisfies DroppedRecord)
      }
      streamStore.put(
        {
          ...stream,
          acknowledged,
          runs: runsFrom(stream.runs, acknowledged + 1, stream.nextSeq)
        } satisfies StreamRecord
      )
    }))
  }
})

/** Whether any message expires at or before `now`: a read, so a sweep with nothing due writes nothing. */
export const anyDue = (db: IDBDatabase, now: number): Promise<boolean> =>
  transact(db, [stores.batches], "readonly", async (transaction) => {
    const index = transaction.objectStore(stores.batches).index(expiryIndex)
    const keys = await request(index.getAllKeys(IDBKeyRange.upperBound(now), 1))
    return keys.length > 0
  })

/** Records seqs removed from a stream as dropped for `reason`, and returns them as `expire` and `purge` report them. */
const drop = (
  droppedStore: IDBObjectStore,
  stream: StreamRecord,
  seqs: ReadonlyArray<BackendTypes.RunRange>,
  reason: BackendTypes.DropReason
): BackendTypes.DroppedMessages => {
  const { lane, peer } = stream
  for (const { from, run, to } of seqs) droppedStore.add({ peer, lane, from, to, run, reason } satisfies DroppedRecord)
  return { peer, lane, seqs }
}

/**
 * Removes up to `limit` messages that expire at or before `now`, and records them as dropped. The batches come from
 * the expiry index, earliest first; each is written back without its expired messages (or deleted, once it holds
 * none), with the expiry that is next among the rest.
 */
export const expire = (
  db: IDBDatabase,
  now: number,
  limit: number
): Promise<ReadonlyArray<BackendTypes.DroppedMessages>> =>
  transact(db, [stores.streams, stores.batches, stores.dropped], "readwrite", async (transaction) => {
    if (!(limit >= 1)) return []
    const streamStore = transaction.objectStore(stores.streams)
    const batchStore = transaction.objectStore(stores.batches)
    // Batches, earliest expiry first, until they hold `limit` messages due: never many more in memory.
    const due: Array<BatchRecord> = []
    let dueMessages = 0
    await walk<BatchRecord>(batchStore.index(expiryIndex).openCursor(IDBKeyRange.upperBound(now)), (batch) => {
      due.push(batch)
      for (const [j, at] of (batch.expiresAt ?? []).entries()) {
        if (at !== null && at <= now && batch.payloads[j] !== null) dueMessages++
      }
      return dueMessages < limit
    })
    const groups = Array.from(byStream(due).values())
    const streams: ReadonlyArray<StreamRecord | undefined> = await Promise.all(
      groups.map((group) => request(streamStore.get([group[0]!.peer, group[0]!.lane])))
    )
    const droppedStore = transaction.objectStore(stores.dropped)
    let left = Math.floor(limit)
    return groups.flatMap((group, i) => {
      const stream = streams[i]!
      const removed: Array<{ seq: number; run: number }> = []
      for (const batch of group) {
        const expiresAt = batch.expiresAt ?? []
        const payloads = batch.payloads.map((payload, j) => {
          const seq = batch.from + j
          // What an acknowledgement covered is gone already: dropped here, unreported.
          if (payload === null || seq <= stream.acknowledged) return null
          const at = expiresAt[j] ?? null
          if (at === null || at > now || left === 0) return payload
          left--
          removed.push({ seq, run: batch.run })
          return null
        })
        if (payloads.every((payload) => payload === null)) batchStore.delete([batch.peer, batch.lane, batch.from])
        else {
          const { expiresAt: _expiresAt, nextExpiry: _nextExpiry, ...rest } = batch
          batchStore.put(batchRecord({ ...rest, payloads }, expiresAt, stream.acknowledged))
        }
      }
      if (removed.length === 0) return []
      return [drop(droppedStore, stream, rangesOf(removed.sort((a, b) => a.seq - b.seq)), "expired")]
    })
  })

/** Removes every stored message of the streams to `peer` (of `lane` only, when given), and records them as dropped. */
export const purge = (
  db: IDBDatabase,
  peer: PeerId,
  lane: Lane | undefined
): Promise<ReadonlyArray<BackendTypes.DroppedMessages>> =>
  transact(db, [stores.streams, stores.batches, stores.dropped], "readwrite", async (transaction) => {
    const streamStore = transaction.objectStore(stores.streams)
    const droppedStore = transaction.objectStore(stores.dropped)
    const streams: ReadonlyArray<StreamRecord | undefined> = lane === undefined
      ? await request(streamStore.getAll(startingWith(peer)))
      : [await request(streamStore.get([peer, lane]))]
    const purged = await Promise.all(streams.map(async (stream) => {
      if (stream === undefined) return undefined
      const dropped: ReadonlyArray<DroppedRecord> = await request(
        droppedStore.getAll(startingWith(stream.peer, stream.lane))
      )
      const stored = storedRanges(stream, dropped)
      if (stored.length === 0) return undefined
      transaction.objectStore(stores.batches).delete(startingWith(stream.peer, stream.lane))
      return drop(droppedStore, stream, stored, "purged")
    }))
    return purged.filter((stream) => stream !== undefined)
  })

export const setIncarnation = (peer: PeerId, incarnation: Incarnation): Work<void> => ({
  stores: [stores.incarnations],
  run: async (transaction) => {
    transaction.objectStore(stores.incarnations).put({ peer, incarnation } satisfies IncarnationRecord)
  }
})

/** Deletes the streams to `peer`, their messages and dropped seqs, and its receive states; sets its incarnation. */
export const forget = (db: IDBDatabase, peer: PeerId, incarnation: Incarnation): Promise<void> =>
  transact(
    db,
    [stores.streams, stores.batches, stores.dropped, stores.received, stores.incarnations],
    "readwrite",
    async (transaction) => {
      for (const name of [stores.streams, stores.batches, stores.dropped, stores.received]) {
        transaction.objectStore(name).delete(startingWith(peer))
      }
      transaction.objectStore(stores.incarnations).put({ peer, incarnation } satisfies IncarnationRecord)
    }
  )

export const received = (db: IDBDatabase): Promise<ReadonlyArray<BackendTypes.ReceiveState>> =>
  transact(db, [stores.received], "readonly", async (transaction) => {
    const states: ReadonlyArray<ReceivedRecord> = await request(transaction.objectStore(stores.received).getAll())
    return states
  })

/** Stores receive states (the last one given per stream wins) and adds dead letters, in the order given. */
export const commitReceived = (
  states: ReadonlyArray<BackendTypes.ReceiveState>,
  letters: ReadonlyArray<BackendTypes.NewDeadLetter>
): Work<void> => ({
  stores: [stores.received, stores.deadLetters],
  run: async (transaction) => {
    const receivedStore = transaction.objectStore(stores.received)
    for (const { delivered, incarnation, lane, peer, runs } of states) {
      const runStarts = runs.map(({ from, run }) => ({ run, from }))
      receivedStore.put({ peer, lane, incarnation, delivered, runs: runStarts } satisfies ReceivedRecord)
    }
    const lettersStore = transaction.objectStore(stores.deadLetters)
    for (const letter of letters) {
      const { attempts, deadLetteredAt, error, incarnation, lane, payload, peer, seq } = letter
      const stored: Omit<BackendTypes.DeadLetter, "id"> = {
        peer,
        lane,
        incarnation,
        seq,
        payload: ownBytes(payload),
        error,
        attempts,
        deadLetteredAt,
        replayRequested: false
      }
      lettersStore.add(stored)
    }
  }
})

/** How many dead letters `deadLetters` reads at a time while it looks for those its query selects. */
const page = 256

export const deadLetters = (
  db: IDBDatabase,
  query: BackendTypes.DeadLetterQuery
): Promise<ReadonlyArray<BackendTypes.DeadLetter>> =>
  transact(db, [stores.deadLetters], "readonly", async (transaction) => {
    const lettersStore = transaction.objectStore(stores.deadLetters)
    const limit = countOf(query.limit)
    const afterId = query.afterId ?? 0
    const selected = (letter: BackendTypes.DeadLetter) =>
      (query.peer === undefined || letter.peer === query.peer) &&
      (query.lane === undefined || letter.lane === query.lane) &&
      (query.replayRequested === undefined || letter.replayRequested === query.replayRequested)
    if (!(limit > 0)) return []
    if (query.ids !== undefined) {
      const ids = Array.from(new Set(query.ids)).filter((id) => id > afterId).sort((a, b) => a - b)
      const found: ReadonlyArray<BackendTypes.DeadLetter | undefined> = await Promise.all(
        ids.map((id) => request(lettersStore.get(id)))
      )
      return found.flatMap((letter) => letter !== undefined && selected(letter) ? [letter] : []).slice(0, limit)
    }
    // Pages in id order, from `afterId` on, until `limit` are selected: never more than that plus a page in memory.
    const found: Array<BackendTypes.DeadLetter> = []
    let after = afterId
    while (found.length < limit) {
      const size = Math.min(Math.max(limit - found.length, page), maxCount)
      const letters: ReadonlyArray<BackendTypes.DeadLetter> = await request(
        lettersStore.getAll(IDBKeyRange.lowerBound(after, true), size)
      )
      for (const letter of letters) if (found.length < limit && selected(letter)) found.push(letter)
      if (letters.length < size) break
      after = letters[letters.length - 1]!.id
    }
    return found
  })

/** Applies `f` to each existing dead letter of `ids` (each once), and counts them. */
const eachDeadLetter = (
  ids: ReadonlyArray<number>,
  f: (store: IDBObjectStore, letter: BackendTypes.DeadLetter) => void
): Work<number> => ({
  stores: [stores.deadLetters],
  run: async (transaction) => {
    const lettersStore = transaction.objectStore(stores.deadLetters)
    const found: ReadonlyArray<BackendTypes.DeadLetter | undefined> = await Promise.all(
      Array.from(new Set(ids), (id) => request(lettersStore.get(id)))
    )
    let count = 0
    for (const letter of found) {
      if (letter === undefined) continue
      f(lettersStore, letter)
      count++
    }
    return count
  }
})

export const removeDeadLetters = (ids: ReadonlyArray<number>): Work<number> =>
  eachDeadLetter(ids, (store, letter) => store.delete(letter.id))

export const requestReplay = (ids: ReadonlyArray<number>, requested: boolean): Work<number> =>
  eachDeadLetter(ids, (store, letter) => store.put({ ...letter, replayRequested: requested }))

// --- the application's records ---------------------------------------------------------------------------------

/** Writes `value` under `key` in the application's records. */
export const putRecord = (key: IDBValidKey, value: unknown): Work<void> => ({
  stores: [stores.records],
  run: async (transaction) => {
    transaction.objectStore(stores.records).put(value, key)
  }
})

/** Deletes the record under `key`, if there is one. */
export const removeRecord = (key: IDBValidKey): Work<void> => ({
  stores: [stores.records],
  run: async (transaction) => {
    transaction.objectStore(stores.records).delete(key)
  }
})

/** The record under `key`, or `undefined`. */
export const getRecord = (db: IDBDatabase, key: IDBValidKey): Promise<unknown> =>
  transact(db, [stores.records], "readonly", (transaction) => request(transaction.objectStore(stores.records).get(key)))

/** The records whose keys are in `range` (every one without it), in key order. */
export const listRecords = (
  db: IDBDatabase,
  range: IDBKeyRange | undefined
): Promise<ReadonlyArray<{ readonly key: IDBValidKey; readonly value: unknown }>> =>
  transact(db, [stores.records], "readonly", async (transaction) => {
    const recordStore = transaction.objectStore(stores.records)
    const [keys, values] = await Promise.all([
      request(recordStore.getAllKeys(range)),
      request(recordStore.getAll(range))
    ])
    return keys.map((key, i) => ({ key, value: values[i] }))
  })
