/**
 * The outbox pump: sends what each linked stream's window lets out, in batches — one transaction to see what is
 * ready, one to record what went out, one network write per peer.
 *
 * Messages come from the send buffer; what it does not hold (a backlog, or after a restart) is read back from the
 * store and kept there for resends. The window is bounded in messages and in payload bytes. Only the pump moves a
 * stream's `nextToSend` up, so it can read what to send first and record it after: if the stream was rewound
 * meanwhile (an acknowledgement gap, a timeout, a new link), what it read is not sent and the rewind stands.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as STM from "effect/STM"
import * as TRef from "effect/TRef"
import type { StoredMessage } from "../../Backend.js"
import * as Frame from "../../Frame.js"
import * as Metrics from "../../IlmMetrics.js"
import type { Incarnation } from "../../Incarnation.js"
import type { Lane } from "../../Lane.js"
import type { PeerId } from "../../PeerId.js"
import type { StreamKey } from "../../StreamKey.js"
import type { Env } from "./env.js"
import { yieldToEventLoop } from "./fairness.js"
import * as Outbound from "./outbound.js"
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
  /** The messages that fit the window, `undefined` when they could not be read (a lost transmission). */
  readonly messages: ReadonlyArray<StoredMessage> | undefined
  readonly bytes: number
}

/** A transmission recorded as sent, with what its frames carry. */
interface Outgoing {
  readonly peer: PeerId
  readonly lane: Lane
  readonly incarnation: Incarnation
  readonly session: number
  readonly floor: number
  readonly messages: ReadonlyArray<StoredMessage>
  readonly retransmits: number
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

  /** The candidate's messages that fit the byte window, from the send buffer or the store. */
  const prepare = (candidate: Candidate): Effect.Effect<Transmission> => {
    const { from, stream, to } = candidate
    const buffered = env.sendBuffer.get(stream.key, stream.peer, stream.lane, from, to)
    const read = buffered !== undefined
      ? Effect.succeed(buffered)
      : env.backend.read(stream.peer, stream.lane, from, to - from + 1).pipe(
        Effect.map((stored) => {
          const messages = consecutive(stored, from)
          env.sendBuffer.addStored(stream.key, messages)
          return messages
        })
      )
    return read.pipe(
      Effect.map((messages): Transmission => {
        const count = Outbound.fitting(stream, messages.map((message) => message.payload.length), config.windowBytes)
        const fit = count === messages.length ? messages : messages.slice(0, count)
        return { candidate, messages: fit, bytes: fit.reduce((sum, message) => sum + message.payload.length, 0) }
      }),
      // A failed read is a lost transmission: the retransmission timer sends it again.
      Effect.catchAll((error) =>
        Effect.as(Effect.logWarning("Could not read pending messages", error), {
          candidate,
          messages: undefined,
          bytes: 0
        })
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
        const count = messages === undefined ? candidate.to - candidate.from + 1 : messages.length
        if (count === 0) continue
        const next = Outbound.sent(stream, candidate.from, candidate.from + count - 1, transmission.bytes, now)
        armed ||= stream.deadline === undefined
        yield* state.outs.set(stream.key, Outbound.arm(next.stream, now + peer.rtt.rto))
        // More is sendable when the batch bound stopped it; the byte bound waits for an acknowledgement instead.
        if (candidate.more && count === candidate.to - candidate.from + 1) again.push(stream.key)
        if (messages === undefined) continue
        going.push({
          peer: stream.peer,
          lane: stream.lane,
          incarnation: peer.incarnation,
          session: candidate.nonce,
          floor: next.stream.acked + 1,
          messages,
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
    for (const frame of Frame.encodeData(header, outgoing.messages)) frames.push(frame)
  }

  return Effect.forever(Effect.gen(function*() {
    const candidates = yield* takeCandidates
    const transmissions: Array<Transmission> = []
    for (const candidate of candidates) transmissions.push(yield* prepare(candidate))
    const going = yield* record(transmissions, yield* Clock.currentTimeMillis)
    const byPeer = new Map<PeerId, Array<Uint8Array>>()
    let retransmits = 0
    for (const outgoing of going) {
      let frames = byPeer.get(outgoing.peer)
      if (frames === undefined) byPeer.set(outgoing.peer, frames = [])
      encode(outgoing, frames)
      retransmits += outgoing.retransmits
    }
    for (const [peer, frames] of byPeer) yield* env.sendFrames(peer, frames)
    if (retransmits > 0) yield* Metric.incrementBy(Metrics.retransmitted, retransmits)
    yield* yieldToEventLoop
  }))
}

/** The messages of a read that follow each other from `from`: a stream's pending seqs have no holes. */
const consecutive = (stored: ReadonlyArray<StoredMessage>, from: number): ReadonlyArray<StoredMessage> => {
  let count = 0
  while (count < stored.length && stored[count]!.seq === from + count) count++
  return count === stored.length ? stored : stored.slice(0, count)
}
