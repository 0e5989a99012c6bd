/**
 * The outbox pump: sends what each linked stream's window lets out, in batches — one transaction to see what is
 * ready, one to record what went out, one network write per peer.
 *
 * Messages come from the send buffer; what it does not hold (a backlog, or after a restart) is read back from the
 * store and kept there for resends. The window is bounded in messages and in payload bytes. Only the pump moves a
 * stream's `nextToSend` up, so it can read what to send first and record it after: if the stream was rewound
 * meanwhile (an acknowledgement gap, a timeout, a new link), what it read is not sent and the rewind stands.
 *
 * Each network write is an `intersession.transmit` span when traced (`spans.ts`), linked to the spans its messages
 * were sent in; such a message carries its trace context, as the send buffer keeps it.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as STM from "effect/STM"
import * as TRef from "effect/TRef"
import * as Frame from "../../Frame.js"
import type { SkipReason, TraceContext } from "../../Frame.js"
import * as Metrics from "../../IlmMetrics.js"
import type { Incarnation } from "../../Incarnation.js"
import type { Lane } from "../../Lane.js"
import type { PeerId } from "../../PeerId.js"
import type { StreamKey } from "../../StreamKey.js"
import type { Env } from "./env.js"
import { yieldToEventLoop } from "./fairness.js"
import * as Outbound from "./outbound.js"
import type { KeptMessage } from "./sendBuffer.js"
import * as Spans from "./spans.js"
import * as State from "./state.js"

interface Candidate {
  readonly stream: Outbound.OutStream
  readonly nonce: number
  readonly from: number
  readonly to: number
  readonly more: boolean
}

interface Transmission {
  readonly candidate: Candidate
  /**
   * The stored messages read from the candidate's first seq, in seq order, with holes where seqs were dropped;
   * `undefined` when they could not be read (a lost transmission).
   */
  readonly messages: ReadonlyArray<KeptMessage> | undefined
}

/** A message to send, with the time it may still live and the span it was sent in, or seqs to skip. */
type Item =
  | {
    readonly _tag: "Data"
    readonly run: number
    readonly seq: number
    readonly ttl?: number | undefined
    readonly trace?: TraceContext | undefined
    readonly payload: Uint8Array
  }
  | {
    readonly _tag: "Skip"
    readonly run: number
    readonly seq: number
    readonly last: number
    readonly reason: SkipReason
  }

type DataItem = Extract<Item, { readonly _tag: "Data" }>

/** A transmission recorded as sent, with what its frames carry. */
interface Outgoing {
  readonly peer: PeerId
  readonly lane: Lane
  readonly incarnation: Incarnation
  readonly session: number
  readonly floor: number
  readonly items: ReadonlyArray<Item>
  readonly retransmits: number
}

/**
 * What goes out of a stream from `from`: its stored messages while the byte window lets them (always one when
 * nothing is in flight), and a `Skip` for each dropped range, which costs the window nothing and may reach past
 * `to` (a purged backlog goes in one frame). It stops at a hole the stream has no dropped range for yet: the
 * store removed those messages a moment ago, and the pump is told once the stream knows.
 */
export const itemsToSend = (
  stream: Outbound.OutStream,
  from: number,
  to: number,
  messages: ReadonlyArray<KeptMessage>,
  windowBytes: number,
  now: number
): { readonly items: Array<Item>; readonly last: number; readonly bytes: number } => {
  const items: Array<Item> = []
  let seq = from
  let bytes = 0
  let data = 0
  let index = 0
  while (seq <= to) {
    const dropped = Outbound.droppedAt(stream, seq)
    if (dropped !== undefined) {
      const last = Math.min(dropped.to, stream.allocated)
      items.push({ _tag: "Skip", run: dropped.run, seq, last, reason: dropped.reason })
      seq = last + 1
      continue
    }
    while (index < messages.length && messages[index]!.seq < seq) index++
    const message = messages[index]
    if (message === undefined || message.seq !== seq) break
    const size = message.payload.length
    if (stream.flightBytes + bytes + size > windowBytes && (data > 0 || stream.flight.length > 0)) break
    const item: DataItem = message.expiresAt === undefined
      ? { _tag: "Data", run: message.run, seq, payload: message.payload }
      : { _tag: "Data", run: message.run, seq, payload: message.payload, ttl: Math.max(0, message.expiresAt - now) }
    items.push(message.trace === undefined ? item : { ...item, trace: message.trace })
    bytes += size
    data++
    seq++
  }
  return { items, last: seq - 1, bytes }
}

export const make = (env: Env): Effect.Effect<never> => {
  const { config, state } = env

  /** Waits for ready streams; returns what the window of each linked one lets out. */
  const takeCandidates = STM.gen(function*() {
    const ready = yield* State.takeAll(state.outReady, () => new Set())
    const candidates: Array<Candidate> = []
    for (const key of ready) {
      const stream = yield* state.outs.get(key)
      if (stream === undefined) continue
      const peer = yield* env.peerLink(stream.peer)
      if (!peer.linked) continue
      const range = Outbound.sendable(stream, config.window, config.maxBatch)
      if (range !== undefined) candidates.push({ stream, nonce: peer.nonce, ...range })
    }
    return candidates
  })

  /** The candidate's stored messages, from the send buffer or the store. */
  const prepare = (candidate: Candidate): Effect.Effect<Transmission> => {
    const { from, stream, to } = candidate
    const buffered = env.sendBuffer.get(stream.key, stream.peer, stream.lane, from, to)
    if (buffered !== undefined) return Effect.succeed({ candidate, messages: buffered })
    return env.backend.read(stream.peer, stream.lane, from, to - from + 1).pipe(
      Effect.map((stored): Transmission => {
        const messages = stored.filter((message) => message.seq <= to)
        env.sendBuffer.addStored(stream.key, messages)
        return { candidate, messages: env.sendBuffer.withTraces(stream.key, messages) }
      }),
      // A failed read is a lost transmission: the retransmission timer sends it again.
      Effect.catchAll((error) =>
        Effect.as(Effect.logWarning("Could not read pending messages", error), { candidate, messages: undefined })
      )
    )
  }

  /** Records what goes out, unless the stream was rewound or the link renewed meanwhile; arms the timers. */
  const record = (transmissions: ReadonlyArray<Transmission>, now: number) =>
    STM.gen(function*() {
      const going: Array<Outgoing> = []
      const again: Array<StreamKey> = []
      let armed = false
      for (const transmission of transmissions) {
        const { candidate, messages } = transmission
        const stream = yield* state.outs.get(candidate.stream.key)
        if (stream === undefined || stream.nextToSend !== candidate.from) continue
        const peer = yield* env.peerLink(stream.peer)
        if (!peer.linked || peer.nonce !== candidate.nonce) continue
        const planned = messages === undefined
          ? { items: [], last: candidate.to, bytes: 0 }
          : itemsToSend(stream, candidate.from, candidate.to, messages, config.windowBytes, now)
        if (planned.last < candidate.from) continue
        const next = Outbound.sent(stream, candidate.from, planned.last, planned.bytes, now)
        armed ||= stream.deadline === undefined
        yield* state.outs.set(stream.key, Outbound.arm(next.stream, now + peer.rtt.rto))
        // More is sendable when the batch bound stopped it; the byte bound waits for an acknowledgement instead.
        if (candidate.more && planned.last >= candidate.to) again.push(stream.key)
        if (messages === undefined) continue
        going.push({
          peer: stream.peer,
          lane: stream.lane,
          incarnation: peer.incarnation,
          session: candidate.nonce,
          floor: next.stream.acked + 1,
          items: planned.items,
          retransmits: next.retransmits
        })
      }
      if (again.length > 0) yield* State.addAll(state.outReady, again)
      if (armed) yield* TRef.update(state.deadlinesVersion, (n) => n + 1)
      return going
    })

  const encode = (outgoing: Outgoing, frames: Array<Uint8Array>) => {
    const header = {
      from: env.self,
      to: outgoing.peer,
      lane: outgoing.lane,
      incarnation: outgoing.incarnation,
      session: outgoing.session,
      floor: outgoing.floor
    }
    // The messages between two skips share one buffer.
    let messages: Array<DataItem> = []
    const flush = () => {
      if (messages.length > 0) { for (const frame of Frame.encodeData(header, messages)) frames.push(frame) }
      messages = []
    }
    for (const item of outgoing.items) {
      if (item._tag === "Data") {
        messages.push(item)
      } else {
        flush()
        frames.push(Frame.encodeSkip(header, item))
      }
    }
    flush()
  }

  return Effect.forever(Effect.gen(function*() {
    const candidates = yield* takeCandidates
    const transmissions: Array<Transmission> = []
    for (const candidate of candidates) transmissions.push(yield* prepare(candidate))
    const going = yield* record(transmissions, yield* Clock.currentTimeMillis)
    const byPeer = new Map<PeerId, Array<Uint8Array>>()
    /** The peers some of whose frames are resent. */
    const resent = new Set<PeerId>()
    for (const outgoing of going) {
      let frames = byPeer.get(outgoing.peer)
      if (frames === undefined) byPeer.set(outgoing.peer, frames = [])
      encode(outgoing, frames)
      if (outgoing.retransmits > 0) {
        resent.add(outgoing.peer)
        Metrics.retransmitted.unsafeUpdate(outgoing.retransmits, env.metricTags.stream(outgoing.peer, outgoing.lane))
      }
    }
    for (const [peer, frames] of byPeer) {
      if (frames.length === 0) continue
      yield* Spans.withSpan(env.sendFrames(peer, frames), "intersession.transmit", () => {
        let bytes = 0
        for (const frame of frames) bytes += frame.length
        const traces: Array<TraceContext | undefined> = []
        for (const outgoing of going) {
          if (outgoing.peer !== peer) continue
          for (const item of outgoing.items) if (item._tag === "Data") traces.push(item.trace)
        }
        return {
          root: true,
          kind: "producer",
          links: Spans.linksTo(traces, undefined),
          attributes: {
            "intersession.local_peer": env.self,
            "intersession.peer": peer,
            "intersession.frames": frames.length,
            "intersession.bytes": bytes,
            "intersession.retransmission": resent.has(peer)
          }
        }
      })
    }
    yield* yieldToEventLoop
  }))
}
