/**
 * The transaction that takes a batch of `Data`, `Skip` and `Ack` frames: consecutive `Data` and `Skip` frames of one
 * stream go into its reorder buffer together, and each `Ack` moves its outbound stream's window. One transaction per batch; it
 * returns what the caller must do once it has committed.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as STM from "effect/STM"
import type { Acknowledgement } from "../../Backend.js"
import type * as Frame from "../../Frame.js"
import type { PeerId } from "../../PeerId.js"
import * as StreamKey from "../../StreamKey.js"
import type { Env } from "./env.js"
import * as Inbound from "./inbound.js"
import * as Outbound from "./outbound.js"
import * as Report from "./report.js"
import * as Rtt from "./rtt.js"
import * as State from "./state.js"

/** Writes to the shared cells a batch collects, to make once at its end. */
export interface Effects {
  readonly outReady: Array<StreamKey.StreamKey>
  readonly inReady: Array<StreamKey.StreamKey>
  readonly acks: Array<readonly [StreamKey.StreamKey, State.AckToSend]>
  readonly deletions: Array<readonly [StreamKey.StreamKey, Acknowledgement]>
  /** Outbound streams acknowledged up to a seq: the send buffer may forget them once committed. */
  readonly released: Array<{ readonly key: StreamKey.StreamKey; readonly upTo: number }>
  /** Messages acknowledged per peer: room in the outbox once committed. */
  readonly freed: Array<readonly [PeerId, number]>
}

export const emptyEffects = (): Effects => ({
  outReady: [],
  inReady: [],
  acks: [],
  deletions: [],
  released: [],
  freed: []
})

/** What a committed batch's acknowledgements free: the send buffer's copies and the outbox's room. */
export const release = (env: Env, effects: Effects): Effect.Effect<void> =>
  Effect.suspend(() => {
    for (const { key, upTo } of effects.released) env.sendBuffer.release(key, upTo)
    return Effect.forEach(effects.freed, ([peer, count]) => env.outbox.release(peer, count), { discard: true })
  })

/** Makes a batch's collected writes. */
export const flush = (env: Env, effects: Effects): STM.STM<void> =>
  STM.gen(function*() {
    const { state } = env
    if (effects.outReady.length > 0) yield* State.addAll(state.outReady, effects.outReady)
    if (effects.inReady.length > 0) yield* State.addAll(state.inReady, effects.inReady)
    if (effects.acks.length > 0) yield* State.queueAcks(state, effects.acks)
    if (effects.deletions.length > 0) yield* State.setAll(state.deletions, effects.deletions)
  })

/** Queues the acknowledgement of what a stream delivered, repeated once per frame waiting past a gap. */
export const queueAck = (effects: Effects, stream: Inbound.InStream) => {
  if (stream.delivered === 0) return
  effects.acks.push([stream.key, {
    peer: stream.peer,
    lane: stream.lane,
    incarnation: stream.incarnation,
    upTo: stream.delivered,
    copies: 1 + Inbound.pastGap(stream)
  }])
}

/**
 * Moves an outbound stream's acknowledged seq to `upTo`: the window, the round-trip estimate, the retransmission
 * deadline and the count of pending messages.
 */
export const applyAck = (
  env: Env,
  stream: Outbound.OutStream,
  upTo: number,
  now: number,
  report: Report.Report,
  effects: Effects
) =>
  STM.gen(function*() {
    const { state } = env
    const outcome = Outbound.acknowledge(stream, upTo, now)
    if (outcome._tag === "stale") return
    if (outcome._tag === "duplicate") {
      yield* state.outs.set(stream.key, outcome.stream)
      if (outcome.rewound) effects.outReady.push(stream.key)
      return
    }
    const peer = yield* env.peerLink(stream.peer)
    const rtt = outcome.sample === undefined
      ? Rtt.progress(peer.rtt, env.rttBounds)
      : Rtt.sample(peer.rtt, outcome.sample, env.rttBounds)
    if (rtt !== peer.rtt) yield* state.peers.set(peer.peer, { ...peer, rtt })
    const deadline = Outbound.inFlight(outcome.stream) > 0 ? now + rtt.rto : undefined
    yield* state.outs.set(stream.key, { ...outcome.stream, deadline })
    yield* State.addPending(state, -outcome.count)
    effects.deletions.push([stream.key, { peer: stream.peer, lane: stream.lane, upTo }])
    effects.released.push({ key: stream.key, upTo })
    effects.freed.push([stream.peer, outcome.count])
    effects.outReady.push(stream.key)
    Report.count(report, stream.peer, stream.lane, "acked", outcome.count)
  })

const receiveAck = (env: Env, ack: Frame.Ack, now: number, report: Report.Report, effects: Effects) =>
  STM.gen(function*() {
    const peer = yield* env.state.peers.get(ack.from)
    if (peer === undefined || !peer.verified) {
      return Report.reject(report, ack.from, "before-handshake", "an Ack before this run's Hello exchange")
    }
    const stream = yield* env.state.outs.get(StreamKey.make(ack.from, ack.lane))
    if (stream === undefined) return Report.reject(report, ack.from, "unknown-stream", `no stream in lane ${ack.lane}`)
    if (ack.incarnation !== peer.incarnation) {
      return Report.reject(report, ack.from, "stale-incarnation", `an Ack for incarnation ${ack.incarnation}`)
    }
    if (ack.upTo > stream.allocated) {
      return Report.reject(
        report,
        ack.from,
        "ack-beyond-sent",
        `Ack up to ${ack.upTo}, highest seq ${stream.allocated}`
      )
    }
    yield* applyAck(env, stream, ack.upTo, now, report, effects)
  })

/**
 * Takes `Data` and `Skip` frames of one stream, in arrival order, reading and writing the stream's state once. A
 * message's time to live starts counting down on this peer's clock now.
 */
const receiveData = (
  env: Env,
  frames: ReadonlyArray<Frame.Data | Frame.Skip>,
  now: number,
  report: Report.Report,
  effects: Effects
) =>
  STM.gen(function*() {
    const first = frames[0]!
    const sender = yield* env.state.peers.get(first.from)
    const current = sender === undefined ? [] : frames.filter((data) => data.session === sender.theirNonce)
    if (current.length < frames.length) {
      report.unknownSessions.add(first.from)
      for (const data of frames) {
        if (sender === undefined || data.session !== sender.theirNonce) {
          Report.reject(report, data.from, "stale-session", `${data._tag} of session ${data.session}`)
        }
      }
    }
    if (current.length === 0) return
    const key = StreamKey.make(first.from, first.lane)
    const stored = yield* env.state.ins.get(key)
    // A batch with no time to live in it (the usual case) goes in as it is, without a copy.
    const items = current.some((frame) => frame._tag === "Data" && frame.ttl !== undefined)
      ? current.map((frame): Inbound.Item =>
        frame._tag === "Data" && frame.ttl !== undefined ? { ...frame, deadline: now + frame.ttl } : frame
      )
      : current
    const accepted = Inbound.accept(key, stored, items, env.config)
    Report.count(report, first.from, first.lane, "duplicates", accepted.duplicates)
    Report.jumped(report, first.from, first.lane, accepted.jumps)
    for (const data of accepted.stale) {
      Report.reject(report, data.from, "stale-incarnation", `${data._tag} of incarnation ${data.incarnation}`)
    }
    const stream = accepted.stream
    if (stream === undefined) return
    if (stream !== stored) yield* env.state.ins.set(key, stream)
    if (accepted.repeatAck) queueAck(effects, stream)
    if (!stream.busy && stream.buffer[0]?.seq === stream.delivered + 1) effects.inReady.push(key)
  })

/** Takes a batch of frames, checked to come from and go to the right peers, in one transaction. */
export const apply = (
  env: Env,
  batch: ReadonlyArray<Frame.Data | Frame.Skip | Frame.Ack>,
  now: number,
  report: Report.Report
): STM.STM<Effects> =>
  STM.gen(function*() {
    const effects = emptyEffects()
    let start = 0
    while (start < batch.length) {
      const frame = batch[start]!
      if (frame._tag === "Ack") {
        yield* receiveAck(env, frame, now, report, effects)
        start++
        continue
      }
      // Consecutive frames of one stream go in together.
      const run: Array<Frame.Data | Frame.Skip> = [frame]
      for (
        let next = batch[start + 1];
        next !== undefined && sameStream(frame, next);
        next = batch[start + run.length]
      ) {
        run.push(next)
      }
      yield* receiveData(env, run, now, report, effects)
      start += run.length
    }
    yield* flush(env, effects)
    return effects
  })

const sameStream = (
  data: Frame.Data | Frame.Skip,
  next: Frame.Data | Frame.Skip | Frame.Ack
): next is Frame.Data | Frame.Skip => next._tag !== "Ack" && next.from === data.from && next.lane === data.lane
