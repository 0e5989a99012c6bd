/**
 * The engine behind `ILM`. State lives in STM; each fiber waits in `STM.retry` on exactly the state it needs.
 *
 * Outbound, per stream: `acked < nextToSend <= allocated + 1`. Seqs `acked+1 … nextToSend-1` are in flight,
 * `nextToSend … allocated` wait for the window. Inbound, per stream: `delivered` plus a reorder buffer of at most
 * `window` messages above it.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import type * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberMap from "effect/FiberMap"
import * as FiberSet from "effect/FiberSet"
import * as HashMap from "effect/HashMap"
import * as HashSet from "effect/HashSet"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as STM from "effect/STM"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import * as TMap from "effect/TMap"
import * as TQueue from "effect/TQueue"
import * as TRef from "effect/TRef"
import { Backend, type BackendError } from "../Backend.js"
import type * as BackendTypes from "../Backend.js"
import { Delivery } from "../Delivery.js"
import * as Frame from "../Frame.js"
import type * as ILM from "../ILM.js"
import type { IlmConfig } from "../IlmConfig.js"
import {
  DrainTimeoutError,
  EngineClosedError,
  InvalidLaneError,
  OutboxFullError,
  PayloadTooLargeError,
  SendToSelfError
} from "../IlmError.js"
import { IlmEvent, type ResyncReason } from "../IlmEvent.js"
import * as Metrics from "../IlmMetrics.js"
import * as Incarnation from "../Incarnation.js"
import * as Lane from "../Lane.js"
import { Message, MessageId } from "../Message.js"
import { type Inbound, Network } from "../Network.js"
import type { PeerId } from "../PeerId.js"
import * as Runs from "./runs.js"
import { Unsent } from "./unsent.js"

interface PeerState {
  readonly peer: PeerId
  /** The incarnation of this peer's outbound streams to `peer`. */
  readonly incarnation: Incarnation.Incarnation
  readonly connected: boolean
  /** Fresh per connection: a `Hello` that echoes it reflects this connection. */
  readonly nonce: number
  /** The last nonce seen from the peer, echoed in our `Hello`s. */
  readonly theirNonce: number
  /** Connected and a fresh `Hello` arrived: data may flow. */
  readonly linked: boolean
  /** A fresh `Hello` of this run was checked: acknowledgements may be taken. */
  readonly verified: boolean
  readonly srtt: number | undefined
  readonly rttvar: number
  readonly rto: number
}

interface OutState {
  readonly peer: PeerId
  readonly lane: Lane.Lane
  /** The runs that allocated the pending seqs. */
  readonly runs: ReadonlyArray<BackendTypes.RunStart>
  readonly allocated: number
  readonly acked: number
  readonly nextToSend: number
  /** The highest seq ever transmitted in this run: anything at or below it is a retransmission. */
  readonly highestSent: number
  /** The seq being timed for a round-trip sample (Karn: never a retransmitted one). */
  readonly probe: { readonly seq: number; readonly at: number } | undefined
  readonly retransmitted: number
  /** Acks in a row that repeated `acked` while messages were in flight. */
  readonly duplicateAcks: number
  /** The `acked` at the last fast retransmit: one per gap. */
  readonly fastRetransmitAt: number
}

interface InState {
  readonly peer: PeerId
  readonly lane: Lane.Lane
  readonly incarnation: Incarnation.Incarnation
  readonly delivered: number
  /** The source runs of the last seqs delivered; empty after adopting a floor. */
  readonly runs: ReadonlyArray<BackendTypes.RunStart>
  readonly buffer: HashMap.HashMap<number, Frame.Data>
  /** A delivery worker owns the stream. */
  readonly busy: boolean
}

interface AckToSend {
  readonly peer: PeerId
  readonly lane: Lane.Lane
  readonly incarnation: Incarnation.Incarnation
  readonly upTo: number
}

/** One call of `send` or `sendAll`: its messages are stored together, in one append. */
interface SendRequest {
  readonly peer: PeerId
  readonly lane: Lane.Lane
  readonly payloads: ReadonlyArray<Uint8Array>
  readonly deferred: Deferred.Deferred<ReadonlyArray<MessageId>, ILM.SendError>
}

interface Transmission {
  readonly peer: PeerId
  readonly lane: Lane.Lane
  readonly incarnation: Incarnation.Incarnation
  readonly session: number
  readonly from: number
  readonly to: number
  readonly floor: number
  readonly retransmits: number
}

/** What a state transition wants reported once it has committed. */
interface Report {
  readonly events: Array<IlmEvent>
  readonly rejected: Array<{ readonly from: PeerId; readonly reason: Frame.RejectReason }>
  /** Peers that sent data of a session this peer has not heard a `Hello` of: they are asked for one. */
  readonly unknownSessions: Set<PeerId>
  duplicates: number
  acked: number
}

const emptyReport = (): Report => ({ events: [], rejected: [], unknownSessions: new Set(), duplicates: 0, acked: 0 })

const streamKey = (peer: string, lane: string): string => `${peer.length}:${peer}${lane}`

const noValidation = { disableValidation: true } as const

/** The pause between two deletions of acknowledged messages. */
const deletionPause = Duration.millis(10)

/** @internal */
export const make = Effect.fnUntraced(function*(config: IlmConfig) {
  const network = yield* Network
  const backend = yield* Backend
  const delivery = yield* Delivery
  const self = network.localPeer
  const window = config.window
  const millis = (duration: Duration.Duration) => Duration.toMillis(duration)
  const rtoMin = millis(config.retransmitMin)
  const rtoMax = millis(config.retransmitMax)

  // ---------------------------------------------------------------------------------------------------------------
  // State
  // ---------------------------------------------------------------------------------------------------------------

  const peers = yield* TMap.empty<PeerId, PeerState>()
  const outs = yield* TMap.empty<string, OutState>()
  const ins = yield* TMap.empty<string, InState>()
  const outReady = yield* TRef.make(HashSet.empty<string>())
  const inReady = yield* TRef.make(HashSet.empty<string>())
  const acksToSend = yield* TRef.make(HashMap.empty<string, AckToSend>())
  const deletions = yield* TRef.make(HashMap.empty<string, BackendTypes.Acknowledgement>())
  const deadlines = yield* TMap.empty<string, number>()
  const deadlinesVersion = yield* TRef.make(0)
  const pendingByPeer = yield* TMap.empty<PeerId, number>()
  const closed = yield* TRef.make(false)
  const appendQueue = yield* TQueue.unbounded<SendRequest>()
  const linkedPeers = yield* SubscriptionRef.make(HashSet.empty<PeerId>())
  const events = yield* PubSub.sliding<IlmEvent>(4096)
  /** Fresh messages for the pump, so it need not read back what was just stored: a window per stream, 8 MiB. */
  const unsent = new Unsent(window, 8 * 1024 * 1024)
  /** One delivery worker per inbound stream that has messages to deliver, keyed by stream. */
  const workers = yield* FiberMap.make<string, void>()

  const storedOutbound = yield* backend.outbound
  const storedReceived = yield* backend.received
  const storedIncarnations = new Map(storedOutbound.incarnations.map((entry) => [entry.peer, entry.incarnation]))

  // This run's id, stored with every seq it allocates.
  const run = yield* Random.nextIntBetween(1, 2 ** 48)
  // Nonces only need to differ between connections and runs: a random start and a counter do.
  let lastNonce = yield* Random.nextIntBetween(1, 2 ** 48)
  const nextNonce = () => ++lastNonce

  const newPeer = (peer: PeerId): PeerState => ({
    peer,
    incarnation: storedIncarnations.get(peer) ?? backend.incarnation,
    connected: false,
    nonce: nextNonce(),
    theirNonce: 0,
    linked: false,
    verified: false,
    srtt: undefined,
    rttvar: 0,
    rto: millis(config.retransmitInitial)
  })

  const getPeer = (peer: PeerId): STM.STM<PeerState> =>
    STM.map(TMap.get(peers, peer), Option.getOrElse(() => newPeer(peer)))

  const addPending = (peer: PeerId, delta: number) => TMap.merge(pendingByPeer, peer, delta, (a, b) => a + b)

  const markOutReady = (keys: Iterable<string>) =>
    TRef.update(outReady, (ready) => {
      let next = ready
      for (const key of keys) next = HashSet.add(next, key)
      return next
    })

  const streamsOf = (peer: PeerId): STM.STM<Array<[string, OutState]>> =>
    STM.map(TMap.toArray(outs), (entries) => entries.filter(([, out]) => out.peer === peer))

  yield* STM.gen(function*() {
    for (const stream of storedOutbound.streams) {
      yield* TMap.set(outs, streamKey(stream.peer, stream.lane), {
        peer: stream.peer,
        lane: stream.lane,
        runs: stream.runs,
        allocated: stream.nextSeq - 1,
        acked: stream.firstPending - 1,
        nextToSend: stream.firstPending,
        highestSent: stream.firstPending - 1,
        probe: undefined,
        retransmitted: 0,
        duplicateAcks: 0,
        fastRetransmitAt: -1
      })
      yield* addPending(stream.peer, stream.nextSeq - stream.firstPending)
      yield* TMap.set(peers, stream.peer, newPeer(stream.peer))
    }
    for (const state of storedReceived) {
      yield* TMap.set(ins, streamKey(state.peer, state.lane), {
        peer: state.peer,
        lane: state.lane,
        incarnation: state.incarnation,
        delivered: state.delivered,
        runs: state.runs,
        buffer: HashMap.empty(),
        busy: false
      })
    }
  })

  const publish = (report: Report) =>
    Effect.gen(function*() {
      if (report.events.length > 0) yield* PubSub.publishAll(events, report.events)
      for (const rejected of report.rejected) {
        yield* Metric.increment(
          Metric.tagged(Metric.tagged(Metrics.framesRejected, "peer", rejected.from), "reason", rejected.reason)
        )
      }
      if (report.duplicates > 0) yield* Metric.incrementBy(Metrics.duplicatesDropped, report.duplicates)
      if (report.acked > 0) {
        yield* Metric.incrementBy(Metrics.acked, report.acked)
        yield* Metric.set(Metrics.pending, yield* totalPending)
      }
    })

  const totalPending = STM.map(TMap.values(pendingByPeer), (values) => values.reduce((sum, n) => sum + n, 0))

  const reject = (report: Report, from: PeerId, reason: Frame.RejectReason, detail: string) => {
    report.rejected.push({ from, reason })
    report.events.push(IlmEvent.FrameRejected({ from, reason, detail }))
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Outbound: acknowledgements and round trips
  // ---------------------------------------------------------------------------------------------------------------

  const clampRto = (rto: number) => Math.ceil(Math.min(rtoMax, Math.max(rtoMin, rto)))

  /** Moves a stream's acknowledged seq to `upTo`, sampling the round trip and re-arming its timer. */
  const applyAck = (key: string, out: OutState, upTo: number, now: number, report: Report) =>
    STM.gen(function*() {
      if (upTo <= out.acked) return
      let peer = yield* getPeer(out.peer)
      let probe = out.probe
      if (probe !== undefined && probe.seq <= upTo) {
        const sample = Math.max(0, now - probe.at)
        const srtt = peer.srtt === undefined ? sample : 0.875 * peer.srtt + 0.125 * sample
        const rttvar = peer.srtt === undefined ? sample / 2 : 0.75 * peer.rttvar + 0.25 * Math.abs(peer.srtt - sample)
        peer = { ...peer, srtt, rttvar, rto: clampRto(srtt + 4 * rttvar) }
        probe = undefined
      } else {
        // Progress without a sample still ends the back-off.
        const rto = peer.srtt === undefined ? millis(config.retransmitInitial) : clampRto(peer.srtt + 4 * peer.rttvar)
        if (rto < peer.rto) peer = { ...peer, rto }
      }
      yield* TMap.set(peers, peer.peer, peer)
      const next: OutState = {
        ...out,
        runs: Runs.prune(out.runs, upTo + 1),
        acked: upTo,
        nextToSend: Math.max(out.nextToSend, upTo + 1),
        probe,
        duplicateAcks: 0
      }
      yield* TMap.set(outs, key, next)
      yield* addPending(out.peer, -(upTo - out.acked))
      yield* TRef.update(deletions, HashMap.set(key, { peer: out.peer, lane: out.lane, upTo }))
      if (next.acked < next.nextToSend - 1) yield* TMap.set(deadlines, key, now + peer.rto)
      else yield* TMap.remove(deadlines, key)
      yield* markOutReady([key])
      report.acked += upTo - out.acked
    })

  const receiveAck = (ack: Frame.Ack, now: number, report: Report) =>
    STM.gen(function*() {
      const peer = yield* TMap.get(peers, ack.from)
      if (Option.isNone(peer) || !peer.value.verified) {
        return reject(report, ack.from, "before-handshake", "an Ack before this run's Hello exchange")
      }
      const key = streamKey(ack.from, ack.lane)
      const out = yield* TMap.get(outs, key)
      if (Option.isNone(out)) return reject(report, ack.from, "unknown-stream", `no stream in lane ${ack.lane}`)
      if (ack.incarnation !== peer.value.incarnation) {
        return reject(report, ack.from, "stale-incarnation", `an Ack for incarnation ${ack.incarnation}`)
      }
      if (ack.upTo > out.value.allocated) {
        return reject(report, ack.from, "ack-beyond-sent", `Ack up to ${ack.upTo}, highest seq ${out.value.allocated}`)
      }
      if (ack.upTo === out.value.acked) return yield* countDuplicateAck(key, out.value)
      yield* applyAck(key, out.value, ack.upTo, now, report)
    })

  /**
   * A receiver re-acknowledges its last delivered seq for every message that arrives past a gap. The third such
   * duplicate resends from the gap at once instead of waiting for the timeout (fast retransmit), once per gap.
   */
  const countDuplicateAck = (key: string, out: OutState) => {
    if (out.nextToSend - 1 <= out.acked || out.fastRetransmitAt === out.acked) return STM.void
    const duplicateAcks = out.duplicateAcks + 1
    if (duplicateAcks < 3) return TMap.set(outs, key, { ...out, duplicateAcks })
    return STM.zipRight(
      TMap.set(outs, key, {
        ...out,
        duplicateAcks: 0,
        fastRetransmitAt: out.acked,
        nextToSend: out.acked + 1,
        probe: undefined
      }),
      markOutReady([key])
    )
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Inbound: data and the reorder buffer
  // ---------------------------------------------------------------------------------------------------------------

  const queueAck = (key: string, state: InState) =>
    state.delivered > 0
      ? TRef.update(
        acksToSend,
        HashMap.set(key, { peer: state.peer, lane: state.lane, incarnation: state.incarnation, upTo: state.delivered })
      )
      : STM.void

  /**
   * Takes one `Data` into a stream's state (`undefined`: none yet). Returns the new state, or `undefined` when the
   * frame is refused, and whether the sender should hear the current acknowledgement again.
   */
  const acceptData = (
    current: InState | undefined,
    data: Frame.Data,
    report: Report
  ): { readonly state: InState; readonly repeatAck: boolean } | undefined => {
    let state: InState
    if (current === undefined) {
      state = {
        peer: data.from,
        lane: data.lane,
        incarnation: data.incarnation,
        delivered: data.floor - 1,
        runs: [],
        buffer: HashMap.empty(),
        busy: false
      }
      if (data.floor > 1) {
        report.events.push(IlmEvent.Resynchronised({
          peer: data.from,
          lane: data.lane,
          reason: "receiver-behind",
          detail: `no record of this stream; adopted it at the sender's floor, seq ${data.floor}`
        }))
      }
    } else if (data.incarnation < current.incarnation) {
      reject(report, data.from, "stale-incarnation", `Data of incarnation ${data.incarnation}`)
      return undefined
    } else if (data.incarnation > current.incarnation) {
      state = {
        ...current,
        incarnation: data.incarnation,
        delivered: data.floor - 1,
        runs: [],
        buffer: HashMap.empty()
      }
      report.events.push(IlmEvent.Resynchronised({
        peer: data.from,
        lane: data.lane,
        reason: "peer-new-incarnation",
        detail: `incarnation ${current.incarnation} replaced by ${data.incarnation}, adopted at seq ${data.floor}`
      }))
    } else if (data.floor - 1 > current.delivered && !current.busy) {
      state = {
        ...current,
        delivered: data.floor - 1,
        runs: [],
        buffer: HashMap.filter(current.buffer, (_, seq) => seq >= data.floor)
      }
      report.events.push(IlmEvent.Resynchronised({
        peer: data.from,
        lane: data.lane,
        reason: "receiver-behind",
        detail: `delivered ${current.delivered}, sender acknowledged up to ${data.floor - 1}`
      }))
    } else {
      state = current
    }
    if (data.seq <= state.delivered || HashMap.has(state.buffer, data.seq)) {
      report.duplicates++
      return { state, repeatAck: true }
    }
    if (data.seq > state.delivered + window) return { state, repeatAck: false }
    // Past a gap (the next seq to deliver is missing): repeat the last acknowledgement so the sender can resend the
    // gap at once. Frames queued behind a next seq that is here, waiting for its delivery, are no sign of loss.
    return {
      state: { ...state, buffer: HashMap.set(state.buffer, data.seq, data) },
      repeatAck: data.seq > state.delivered + 1 && !HashMap.has(state.buffer, state.delivered + 1)
    }
  }

  /** Takes `Data` frames of one stream, in arrival order, reading and writing the stream's state once. */
  const receiveData = (frames: ReadonlyArray<Frame.Data>, report: Report) =>
    STM.gen(function*() {
      const first = frames[0]!
      const sender = yield* TMap.get(peers, first.from)
      const key = streamKey(first.from, first.lane)
      const stored = Option.getOrUndefined(yield* TMap.get(ins, key))
      let state = stored
      let repeatAck = false
      for (const data of frames) {
        if (Option.isNone(sender) || data.session !== sender.value.theirNonce) {
          report.unknownSessions.add(data.from)
          reject(report, data.from, "stale-session", `Data of session ${data.session}`)
          continue
        }
        const accepted = acceptData(state, data, report)
        if (accepted === undefined) continue
        state = accepted.state
        repeatAck ||= accepted.repeatAck
      }
      if (state === undefined) return
      if (state !== stored) yield* TMap.set(ins, key, state)
      if (repeatAck) yield* queueAck(key, state)
      if (!state.busy && HashMap.has(state.buffer, state.delivered + 1)) {
        yield* TRef.update(inReady, HashSet.add(key))
      }
    })

  // ---------------------------------------------------------------------------------------------------------------
  // Hello
  // ---------------------------------------------------------------------------------------------------------------

  const makeHello = (peer: PeerId, reply: boolean) =>
    STM.gen(function*() {
      const state = yield* getPeer(peer)
      const lanes = (yield* TMap.values(ins))
        .filter((stream) => stream.peer === peer)
        .map((stream) =>
          new Frame.LaneState({
            lane: stream.lane,
            incarnation: stream.incarnation,
            delivered: stream.delivered,
            runs: stream.runs.map((entry) => new Frame.RunStart(entry, noValidation))
          }, noValidation)
        )
      return new Frame.Hello({
        from: self,
        to: peer,
        incarnation: state.incarnation,
        nonce: state.nonce,
        echo: state.theirNonce,
        reply,
        lanes
      }, noValidation)
    })

  const sendFrames = (peer: PeerId, frames: ReadonlyArray<Uint8Array>) =>
    frames.length === 0 ? Effect.void : Effect.ignore(network.send(peer, frames))

  const sendHello = (peer: PeerId, reply: boolean) =>
    Effect.flatMap(makeHello(peer, reply), (hello) => sendFrames(peer, [Frame.encode(hello)]))

  const setLinked = (peer: PeerId, linked: boolean) =>
    SubscriptionRef.update(linkedPeers, (set) => linked ? HashSet.add(set, peer) : HashSet.remove(set, peer))

  interface HelloPlan {
    readonly acks: ReadonlyArray<{ readonly key: string; readonly upTo: number }>
    readonly resync: { readonly reason: ResyncReason; readonly detail: string; readonly after: number } | undefined
  }

  /** Reads a fresh `Hello`: which acknowledgements it carries and whether this peer needs a new incarnation. */
  const planHello = (hello: Frame.Hello, peer: PeerState, report: Report) =>
    STM.gen(function*() {
      const acks: Array<{ key: string; upTo: number }> = []
      let resync: HelloPlan["resync"] = undefined
      const known = hello.lanes.reduce((max, lane) => Math.max(max, lane.incarnation), 0)
      if (known > peer.incarnation) {
        resync = {
          reason: "peer-knows-newer-incarnation",
          detail: `peer knows incarnation ${known}, this peer runs ${peer.incarnation}`,
          after: known
        }
      }
      const listed = new Set(hello.lanes.map((lane) => lane.lane))
      for (const [, out] of yield* streamsOf(hello.from)) {
        if (out.acked > 0 && !listed.has(out.lane)) {
          report.events.push(IlmEvent.Resynchronised({
            peer: hello.from,
            lane: out.lane,
            reason: "peer-lost-state",
            detail: `peer has no record of this stream, acknowledged up to ${out.acked}; it will adopt it at the floor`
          }))
        }
      }
      // What the peer delivered counts as acknowledged only as far as its record of the stream shares this store's
      // history, seq by seq and run by run. Beyond that it delivered messages this store no longer has, and reusing
      // their seqs would lose new ones: the store went back in time.
      for (const lane of hello.lanes) {
        if (lane.incarnation !== peer.incarnation) continue
        const key = streamKey(hello.from, lane.lane)
        const out = yield* TMap.get(outs, key)
        const acked = Option.isSome(out) ? out.value.acked : 0
        if (lane.delivered <= acked) continue
        const shared = Option.isSome(out)
          ? Runs.sharedUpTo(out.value.runs, lane.runs, acked + 1, Math.min(lane.delivered, out.value.allocated))
          : acked
        if (shared > acked) acks.push({ key, upTo: shared })
        if (shared < lane.delivered) {
          resync ??= {
            reason: "store-went-back",
            detail:
              `peer delivered seq ${lane.delivered} in lane ${lane.lane}; this store shares that history up to ${shared}`,
            after: Math.max(known, peer.incarnation)
          }
        }
      }
      return { acks, resync } satisfies HelloPlan
    })

  /** Applies a fresh `Hello`: acknowledgements, a new incarnation if needed, and a resend from the first gap. */
  const linkPeer = (peerId: PeerId, plan: HelloPlan, incarnation: Incarnation.Incarnation, now: number) =>
    STM.gen(function*() {
      const report = emptyReport()
      for (const { key, upTo } of plan.acks) {
        const out = yield* TMap.get(outs, key)
        if (Option.isSome(out)) yield* applyAck(key, out.value, upTo, now, report)
      }
      const peer = yield* getPeer(peerId)
      if (!peer.connected) return report
      yield* TMap.set(peers, peerId, { ...peer, incarnation, linked: true, verified: true })
      const streams = yield* streamsOf(peerId)
      for (const [key, out] of streams) {
        yield* TMap.set(outs, key, { ...out, nextToSend: out.acked + 1, probe: undefined })
        yield* TMap.remove(deadlines, key)
      }
      yield* markOutReady(streams.map(([key]) => key))
      if (plan.resync !== undefined) {
        report.events.push(IlmEvent.Resynchronised({
          peer: peerId,
          lane: undefined,
          reason: plan.resync.reason,
          detail: `${plan.resync.detail}; now incarnation ${incarnation}`
        }))
      }
      if (!peer.linked) report.events.push(IlmEvent.PeerConnected({ peer: peerId }))
      return report
    })

  /**
   * A `Hello` with a new nonce opens a new session of the peer, and what it sent before is history: its buffered
   * frames are dropped and delivery of them stops before this peer answers. So the `delivered` the answer reports is
   * final, and no frame of an earlier run can be delivered after the peer was told where to resume.
   */
  const startSession = (peer: PeerId, nonce: number) =>
    Effect.gen(function*() {
      const keys = yield* STM.gen(function*() {
        yield* TMap.set(peers, peer, { ...(yield* getPeer(peer)), theirNonce: nonce })
        const keys: Array<string> = []
        for (const [key, stream] of yield* TMap.toArray(ins)) {
          if (stream.peer !== peer) continue
          keys.push(key)
          yield* TMap.set(ins, key, { ...stream, buffer: HashMap.empty() })
        }
        return keys
      })
      for (const key of keys) yield* FiberMap.remove(workers, key)
      yield* STM.forEach(keys, (key) =>
        STM.flatMap(TMap.get(ins, key), (stream) =>
          Option.isSome(stream) ? TMap.set(ins, key, { ...stream.value, busy: false }) : STM.void), {
        discard: true
      })
    })

  const handleHello = (hello: Frame.Hello) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const report = emptyReport()
      if (hello.nonce !== (yield* getPeer(hello.from)).theirNonce) yield* startSession(hello.from, hello.nonce)
      const plan = yield* STM.gen(function*() {
        const peer = yield* getPeer(hello.from)
        const fresh = peer.connected && hello.echo === peer.nonce
        return fresh ? yield* planHello(hello, peer, report) : undefined
      })
      if (plan !== undefined) {
        const peer = yield* getPeer(hello.from)
        const linked = yield* Effect.gen(function*() {
          if (plan.resync === undefined) return yield* linkPeer(hello.from, plan, peer.incarnation, now)
          const incarnation = yield* Incarnation.after(Incarnation.Incarnation.make(plan.resync.after))
          const acknowledgements = yield* STM.gen(function*() {
            const list: Array<BackendTypes.Acknowledgement> = []
            for (const { key, upTo } of plan.acks) {
              const out = yield* TMap.get(outs, key)
              if (Option.isSome(out)) list.push({ peer: out.value.peer, lane: out.value.lane, upTo })
            }
            return list
          })
          // Forget what the peer has delivered before moving on, so a crash in between cannot resend it.
          yield* backend.withTransaction(
            Effect.zipRight(backend.acknowledge(acknowledgements), backend.setIncarnation(hello.from, incarnation))
          )
          return yield* linkPeer(hello.from, plan, incarnation, now)
        }).pipe(
          Effect.tapErrorCause((cause) =>
            Effect.logWarning("Could not start a new incarnation; waiting for the next Hello", cause)
          ),
          Effect.option
        )
        if (Option.isSome(linked)) {
          linked.value.events.forEach((event) => report.events.push(event))
          report.acked += linked.value.acked
          if (linked.value.events.some(IlmEvent.$is("PeerConnected"))) yield* setLinked(hello.from, true)
        }
      }
      yield* publish(report)
      if (!hello.reply) {
        const linked = (yield* getPeer(hello.from)).linked
        yield* sendHello(hello.from, linked)
      }
    })

  // ---------------------------------------------------------------------------------------------------------------
  // Frame reader
  // ---------------------------------------------------------------------------------------------------------------

  const applyBatch = (batch: ReadonlyArray<Frame.Data | Frame.Ack>, now: number) =>
    STM.gen(function*() {
      const report = emptyReport()
      // Consecutive frames of one stream go in together.
      let run: Array<Frame.Data> = []
      for (const frame of batch) {
        if (frame._tag === "Data") {
          const last = run[run.length - 1]
          if (last !== undefined && (last.from !== frame.from || last.lane !== frame.lane)) {
            yield* receiveData(run, report)
            run = []
          }
          run.push(frame)
        } else {
          if (run.length > 0) yield* receiveData(run, report)
          run = []
          yield* receiveAck(frame, now, report)
        }
      }
      if (run.length > 0) yield* receiveData(run, report)
      return report
    })

  const flushBatch = (batch: Array<Frame.Data | Frame.Ack>) =>
    batch.length === 0 ? Effect.void : Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const report = yield* applyBatch(batch.splice(0), now)
      yield* publish(report)
      for (const peer of report.unknownSessions) yield* sendHello(peer, false)
    })

  const handleChunk = (chunk: Chunk.Chunk<Inbound>) =>
    Effect.gen(function*() {
      const batch: Array<Frame.Data | Frame.Ack> = []
      const report = emptyReport()
      for (const inbound of chunk) {
        const decoded = Frame.decodeRecord(inbound.frame, config.maxPayloadBytes)
        if (Either.isLeft(decoded)) {
          reject(report, inbound.from, decoded.left.reason, decoded.left.detail)
          continue
        }
        const frame = decoded.right
        if (frame.from !== inbound.from) {
          reject(report, inbound.from, "spoofed-source", `frame claims source ${frame.from}`)
        } else if (frame.to !== self) {
          reject(report, inbound.from, "wrong-destination", `frame addressed to ${frame.to}`)
        } else if (frame._tag === "Hello") {
          yield* flushBatch(batch)
          yield* handleHello(frame)
        } else {
          batch.push(frame)
        }
      }
      yield* flushBatch(batch)
      yield* publish(report)
    })

  const frameReader = Stream.runForEachChunk(network.inbound, handleChunk)

  // ---------------------------------------------------------------------------------------------------------------
  // Peer watcher and Hello loops
  // ---------------------------------------------------------------------------------------------------------------

  const helloLoops = yield* FiberMap.make<PeerId, void>()

  const awaitLinked = (peer: PeerId) => STM.flatMap(getPeer(peer), (state) => STM.check(() => state.linked))

  const helloLoop = (peer: PeerId): Effect.Effect<void> =>
    Effect.gen(function*() {
      let interval = config.helloInitial
      while (true) {
        yield* sendHello(peer, false)
        const linked = yield* Effect.raceFirst(
          Effect.as(awaitLinked(peer), true),
          Effect.as(Effect.sleep(interval), false)
        )
        if (linked) return
        interval = Duration.min(Duration.times(interval, 2), config.helloMax)
      }
    })

  const connect = (peer: PeerId) =>
    Effect.gen(function*() {
      yield* STM.flatMap(
        getPeer(peer),
        (state) => TMap.set(peers, peer, { ...state, connected: true, linked: false, nonce: nextNonce() })
      )
      yield* FiberMap.run(helloLoops, peer, helloLoop(peer))
    })

  const disconnect = (peer: PeerId) =>
    Effect.gen(function*() {
      yield* FiberMap.remove(helloLoops, peer)
      const wasLinked = yield* STM.gen(function*() {
        const state = yield* getPeer(peer)
        yield* TMap.set(peers, peer, { ...state, connected: false, linked: false })
        for (const [key, out] of yield* streamsOf(peer)) {
          yield* TMap.set(outs, key, { ...out, nextToSend: out.acked + 1, probe: undefined })
          yield* TMap.remove(deadlines, key)
        }
        return state.linked
      })
      if (wasLinked) {
        yield* setLinked(peer, false)
        yield* PubSub.publish(events, IlmEvent.PeerDisconnected({ peer }))
      }
    })

  const peerWatcher = Effect.gen(function*() {
    let known = HashSet.empty<PeerId>()
    yield* Stream.runForEach(network.connected.changes, (current) =>
      Effect.gen(function*() {
        for (const peer of HashSet.difference(known, current)) yield* disconnect(peer)
        for (const peer of HashSet.difference(current, known)) {
          if (peer !== self) yield* connect(peer)
        }
        known = current
      }))
  })

  // ---------------------------------------------------------------------------------------------------------------
  // Appender: group commit of sends
  // ---------------------------------------------------------------------------------------------------------------

  const appendBatch = (requests: ReadonlyArray<SendRequest>) =>
    Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        const messages: Array<BackendTypes.OutboundMessage> = []
        /** Each message's stream key, one string per request. */
        const keys: Array<string> = []
        for (const request of requests) {
          const key = streamKey(request.peer, request.lane)
          for (const payload of request.payloads) {
            messages.push({ peer: request.peer, lane: request.lane, payload })
            keys.push(key)
          }
        }
        const exit = yield* Effect.exit(restore(backend.append(messages, run)))
        if (Exit.isFailure(exit)) {
          const error = Cause.failureOption(exit.cause)
          yield* STM.forEach(requests, (request) => addPending(request.peer, -request.payloads.length), {
            discard: true
          })
          for (const request of requests) {
            yield* Deferred.fail(
              request.deferred,
              Option.isSome(error) ? error.value : new EngineClosedError({ peer: self })
            )
          }
          return
        }
        const seqs = exit.value
        messages.forEach((message, i) => unsent.add(keys[i]!, message, seqs[i]!, run))
        const ids = yield* STM.gen(function*() {
          const result: Array<Array<MessageId>> = []
          let offset = 0
          for (const request of requests) {
            const count = request.payloads.length
            // A stream's seqs come in the order given, so one request's are contiguous.
            const first = seqs[offset]!
            const last = seqs[offset + count - 1]!
            offset += count
            const key = streamKey(request.peer, request.lane)
            const out = yield* TMap.get(outs, key)
            const peer = yield* getPeer(request.peer)
            yield* TMap.set(peers, request.peer, peer)
            const current: OutState = Option.getOrElse(out, () => ({
              peer: request.peer,
              lane: request.lane,
              runs: [],
              allocated: 0,
              acked: 0,
              nextToSend: 1,
              highestSent: 0,
              probe: undefined,
              retransmitted: 0,
              duplicateAcks: 0,
              fastRetransmitAt: -1
            }))
            yield* TMap.set(outs, key, {
              ...current,
              runs: Runs.extend(current.runs, run, first),
              allocated: Math.max(current.allocated, last)
            })
            const ids: Array<MessageId> = []
            for (let seq = first; seq <= last; seq++) {
              ids.push(
                new MessageId(
                  { destination: request.peer, lane: request.lane, incarnation: peer.incarnation, seq },
                  noValidation
                )
              )
            }
            result.push(ids)
          }
          yield* markOutReady(requests.map((request) => streamKey(request.peer, request.lane)))
          return result
        })
        for (let i = 0; i < requests.length; i++) yield* Deferred.succeed(requests[i]!.deferred, ids[i]!)
        yield* Metric.incrementBy(Metrics.sent, messages.length)
        yield* Metric.set(Metrics.pending, yield* totalPending)
      })
    )

  /** The next requests to store together: the first waiting one, and those after it while `maxBatch` allows. */
  const takeRequests = STM.gen(function*() {
    const first = yield* TQueue.take(appendQueue)
    const batch = [first]
    let total = first.payloads.length
    while (total < config.maxBatch) {
      const next = yield* TQueue.peekOption(appendQueue)
      if (Option.isNone(next) || total + next.value.payloads.length > config.maxBatch) break
      batch.push(yield* TQueue.take(appendQueue))
      total += next.value.payloads.length
    }
    return batch
  })

  const appender = Effect.forever(Effect.flatMap(takeRequests, appendBatch))

  // ---------------------------------------------------------------------------------------------------------------
  // Outbox pump
  // ---------------------------------------------------------------------------------------------------------------

  const reserveTransmissions = (now: number) =>
    STM.gen(function*() {
      const ready = yield* TRef.get(outReady)
      if (HashSet.size(ready) === 0) return yield* STM.retry
      let stillReady = HashSet.empty<string>()
      const transmissions: Array<Transmission> = []
      let armed = false
      for (const key of ready) {
        const out = yield* TMap.get(outs, key)
        if (Option.isNone(out)) continue
        const stream = out.value
        const peer = yield* getPeer(stream.peer)
        if (!peer.linked) continue
        const limit = Math.min(stream.allocated, stream.acked + window)
        const end = Math.min(limit, stream.nextToSend + config.maxBatch - 1)
        if (stream.nextToSend > end) continue
        if (end < limit) stillReady = HashSet.add(stillReady, key)
        const retransmits = Math.max(0, Math.min(end, stream.highestSent) - stream.nextToSend + 1)
        const probe = stream.probe ?? (end > stream.highestSent ? { seq: end, at: now } : undefined)
        yield* TMap.set(outs, key, {
          ...stream,
          nextToSend: end + 1,
          highestSent: Math.max(stream.highestSent, end),
          probe,
          retransmitted: stream.retransmitted + retransmits
        })
        if (!(yield* TMap.has(deadlines, key))) {
          yield* TMap.set(deadlines, key, now + peer.rto)
          armed = true
        }
        transmissions.push({
          peer: stream.peer,
          lane: stream.lane,
          incarnation: peer.incarnation,
          session: peer.nonce,
          from: stream.nextToSend,
          to: end,
          floor: stream.acked + 1,
          retransmits
        })
      }
      yield* TRef.set(outReady, stillReady)
      if (armed) yield* TRef.update(deadlinesVersion, (n) => n + 1)
      return transmissions
    })

  /** The messages of a transmission: fresh ones as they were stored, others read back from the store. */
  const messagesOf = (transmission: Transmission) => {
    const { from, lane, peer, to } = transmission
    const fresh = unsent.take(streamKey(peer, lane), from, to)
    return fresh !== undefined ? Effect.succeed(fresh) : backend.read(peer, lane, from, to - from + 1)
  }

  const transmit = (transmission: Transmission) =>
    messagesOf(transmission).pipe(
      Effect.map((messages) => {
        const frames: Array<Uint8Array> = []
        for (const message of messages) {
          if (message.seq < transmission.from || message.seq > transmission.to) continue
          frames.push(Frame.encode({
            _tag: "Data",
            from: self,
            to: transmission.peer,
            lane: transmission.lane,
            incarnation: transmission.incarnation,
            session: transmission.session,
            run: message.run,
            seq: message.seq,
            floor: transmission.floor,
            payload: message.payload
          }))
        }
        return frames
      }),
      // A failed read is a lost transmission: the retransmission timer sends it again.
      Effect.tapError((error) => Effect.logWarning("Could not read pending messages", error)),
      Effect.orElseSucceed((): Array<Uint8Array> => [])
    )

  const pump = Effect.forever(Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const transmissions = yield* reserveTransmissions(now)
    const byPeer = new Map<PeerId, Array<Uint8Array>>()
    let retransmits = 0
    for (const transmission of transmissions) {
      const frames = yield* transmit(transmission)
      const list = byPeer.get(transmission.peer)
      if (list === undefined) byPeer.set(transmission.peer, frames)
      else for (const frame of frames) list.push(frame)
      retransmits += transmission.retransmits
    }
    for (const [peer, frames] of byPeer) yield* sendFrames(peer, frames)
    if (retransmits > 0) yield* Metric.incrementBy(Metrics.retransmitted, retransmits)
  }))

  // ---------------------------------------------------------------------------------------------------------------
  // Retransmission timer
  // ---------------------------------------------------------------------------------------------------------------

  const expire = (now: number) =>
    STM.gen(function*() {
      const backedOff = new Set<PeerId>()
      for (const [key, deadline] of yield* TMap.toArray(deadlines)) {
        if (deadline > now) continue
        yield* TMap.remove(deadlines, key)
        const out = yield* TMap.get(outs, key)
        if (Option.isNone(out) || out.value.acked >= out.value.nextToSend - 1) continue
        yield* TMap.set(outs, key, { ...out.value, nextToSend: out.value.acked + 1, probe: undefined })
        yield* markOutReady([key])
        if (!backedOff.has(out.value.peer)) {
          backedOff.add(out.value.peer)
          const peer = yield* getPeer(out.value.peer)
          yield* TMap.set(peers, peer.peer, { ...peer, rto: Math.min(rtoMax, peer.rto * config.retransmitBackoff) })
        }
      }
    })

  const retransmitTimer = Effect.forever(Effect.gen(function*() {
    const [earliest, version] = yield* STM.gen(function*() {
      const all = yield* TMap.values(deadlines)
      if (all.length === 0) return yield* STM.retry
      return [Math.min(...all), yield* TRef.get(deadlinesVersion)] as const
    })
    const now = yield* Clock.currentTimeMillis
    if (earliest > now) {
      // Sleep until the earliest deadline, or until a stream is armed that may expire sooner.
      yield* Effect.raceFirst(
        Effect.sleep(Duration.millis(Math.max(1, Math.ceil(earliest - now)))),
        STM.flatMap(TRef.get(deadlinesVersion), (current) => STM.check(() => current !== version))
      )
      return
    }
    yield* expire(now)
  }))

  // ---------------------------------------------------------------------------------------------------------------
  // Ack sender and ack handler
  // ---------------------------------------------------------------------------------------------------------------

  const takeAll = <K, V>(ref: TRef.TRef<HashMap.HashMap<K, V>>) =>
    STM.gen(function*() {
      const all = yield* TRef.get(ref)
      if (HashMap.size(all) === 0) return yield* STM.retry
      yield* TRef.set(ref, HashMap.empty())
      return Array.from(HashMap.values(all))
    })

  const ackDelay = Duration.greaterThan(config.ackDelay, Duration.zero)

  const ackSender = Effect.forever(Effect.gen(function*() {
    if (ackDelay) {
      yield* STM.flatMap(TRef.get(acksToSend), (all) => STM.check(() => HashMap.size(all) > 0))
      yield* Effect.sleep(config.ackDelay)
    }
    const acks = yield* takeAll(acksToSend)
    const byPeer = new Map<PeerId, Array<Uint8Array>>()
    for (const ack of acks) {
      const frame = Frame.encode({
        _tag: "Ack",
        from: self,
        to: ack.peer,
        lane: ack.lane,
        incarnation: ack.incarnation,
        upTo: ack.upTo
      })
      const list = byPeer.get(ack.peer)
      if (list === undefined) byPeer.set(ack.peer, [frame])
      else list.push(frame)
    }
    for (const [peer, frames] of byPeer) yield* sendFrames(peer, frames)
  }))

  /** Work the engine owes the store is retried until the store answers again: 50 ms, doubling, at most 10 s. */
  const retryBackend = <A>(what: string, effect: Effect.Effect<A, BackendError>) =>
    Effect.retry(
      effect,
      Schedule.exponential("50 millis").pipe(
        Schedule.union(Schedule.spaced("10 seconds")),
        Schedule.tapInput((error: BackendError) => Effect.logWarning(`Could not ${what}; retrying`, error))
      )
    )

  // Acknowledgements that arrive meanwhile accumulate in `deletions` and go in the next call.
  // An acknowledged message is in no hurry to leave the store (after a crash the peer's Hello acknowledges it
  // again), so deletions pause between batches: at a low rate each message would otherwise cost a transaction.
  const ackHandler = Effect.forever(
    Effect.flatMap(takeAll(deletions), (acks) => {
      for (const ack of acks) unsent.drop(streamKey(ack.peer, ack.lane), ack.upTo)
      return Effect.zipRight(
        retryBackend("delete acknowledged messages", backend.acknowledge(acks)),
        Effect.sleep(deletionPause)
      )
    })
  )

  // ---------------------------------------------------------------------------------------------------------------
  // Inbox reorderer and delivery workers
  // ---------------------------------------------------------------------------------------------------------------

  const fibers = yield* FiberSet.make<unknown, unknown>()

  const takeDeliverable = (key: string) =>
    STM.gen(function*() {
      const current = yield* TMap.get(ins, key)
      if (Option.isNone(current)) return undefined
      const state = current.value
      const messages: Array<Frame.Data> = []
      for (let seq = state.delivered + 1; messages.length < config.maxBatch; seq++) {
        const data = HashMap.get(state.buffer, seq)
        if (Option.isNone(data)) break
        messages.push(data.value)
      }
      if (messages.length === 0) {
        yield* TMap.set(ins, key, { ...state, busy: false })
        return undefined
      }
      return { incarnation: state.incarnation, runs: state.runs, messages }
    })

  /** Moves a stream's delivered seq to `lastOk` once the store has it, and queues the acknowledgement. */
  const recordDelivered = (
    key: string,
    incarnation: Incarnation.Incarnation,
    lastOk: number,
    runs: ReadonlyArray<BackendTypes.RunStart>
  ) =>
    STM.gen(function*() {
      const current = yield* TMap.get(ins, key)
      if (Option.isNone(current) || current.value.incarnation !== incarnation) return
      if (lastOk <= current.value.delivered) return
      const state: InState = {
        ...current.value,
        delivered: lastOk,
        runs,
        buffer: HashMap.filter(current.value.buffer, (_, seq) => seq > lastOk)
      }
      yield* TMap.set(ins, key, state)
      yield* queueAck(key, state)
    })

  /**
   * Delivers messages in order inside one backend transaction, each in its own nested one, and commits the receive
   * state of those that succeeded. Only a delivery itself can be interrupted: the commit and the in-memory record of
   * what was delivered always happen together, so a stopped worker never leaves a delivered message to deliver again.
   */
  const deliverBatch = (
    key: string,
    peer: PeerId,
    lane: Lane.Lane,
    batch: { readonly incarnation: Incarnation.Incarnation; readonly runs: ReadonlyArray<BackendTypes.RunStart> },
    messages: ReadonlyArray<Frame.Data>
  ) =>
    Effect.uninterruptibleMask((restore) => {
      const first = messages[0]!.seq
      const incarnation = batch.incarnation
      return backend.withTransaction(Effect.gen(function*() {
        let lastOk = first - 1
        let runs = batch.runs
        let failure: Cause.Cause<unknown> | undefined
        for (const data of messages) {
          const message = new Message({
            source: peer,
            destination: self,
            lane,
            incarnation,
            seq: data.seq,
            payload: data.payload
          }, noValidation)
          const exit = yield* Effect.exit(restore(backend.withTransaction(delivery.deliver(message))))
          if (Exit.isFailure(exit)) {
            failure = exit.cause
            break
          }
          lastOk = data.seq
          runs = Runs.extend(runs, data.run, data.seq, Frame.maxRuns)
        }
        if (lastOk >= first) {
          const commit = backend.commitReceived([{ peer, lane, incarnation, delivered: lastOk, runs }])
          // A transactional store rolls the deliveries back with a failed commit: fail, and deliver them again.
          // Elsewhere the deliveries stand, so only the commit is retried: delivering again would duplicate them.
          if (backend.transactional) yield* commit
          else yield* retryBackend("record a delivery", commit)
        }
        return { lastOk, runs, failure }
      })).pipe(
        Effect.tap(({ lastOk, runs }) =>
          lastOk >= first
            ? Effect.zipRight(
              recordDelivered(key, incarnation, lastOk, runs),
              Metric.incrementBy(Metrics.delivered, lastOk - first + 1)
            )
            : Effect.void
        )
      )
    })

  const deliveryWorker = (key: string, peer: PeerId, lane: Lane.Lane) =>
    Effect.gen(function*() {
      let attempt = 0
      while (true) {
        const batch = yield* takeDeliverable(key)
        if (batch === undefined) return
        const first = batch.messages[0]!.seq
        const exit = yield* Effect.exit(deliverBatch(key, peer, lane, batch, batch.messages))
        const lastOk = Exit.isSuccess(exit) ? exit.value.lastOk : first - 1
        const failure = Exit.isSuccess(exit) ? exit.value.failure : exit.cause
        if (failure === undefined) {
          attempt = 0
          continue
        }
        attempt++
        const delay = Duration.min(
          Duration.times(config.deliveryRetryInitial, 2 ** Math.min(attempt - 1, 30)),
          config.deliveryRetryMax
        )
        const error = Cause.squash(failure)
        yield* PubSub.publish(
          events,
          IlmEvent.DeliveryFailed({
            peer,
            lane,
            seq: lastOk + 1,
            attempt,
            retryInMillis: Duration.toMillis(delay),
            error
          })
        )
        yield* Effect.logWarning(`Delivery of ${peer}/${lane} seq ${lastOk + 1} failed; retrying`, failure)
        yield* Effect.sleep(delay)
      }
    })

  const reorderer = Effect.forever(Effect.gen(function*() {
    const started = yield* STM.gen(function*() {
      const ready = yield* TRef.get(inReady)
      if (HashSet.size(ready) === 0) return yield* STM.retry
      yield* TRef.set(inReady, HashSet.empty())
      const result: Array<InState & { readonly key: string }> = []
      for (const key of ready) {
        const state = yield* TMap.get(ins, key)
        if (Option.isNone(state) || state.value.busy) continue
        yield* TMap.set(ins, key, { ...state.value, busy: true })
        result.push({ ...state.value, key })
      }
      return result
    })
    for (const state of started) {
      yield* FiberMap.run(workers, state.key, deliveryWorker(state.key, state.peer, state.lane))
    }
  }))

  // ---------------------------------------------------------------------------------------------------------------
  // Lifecycle
  // ---------------------------------------------------------------------------------------------------------------

  const failureCause = yield* TRef.make<Cause.Cause<unknown> | undefined>(undefined)

  const closedError = Effect.map(TRef.get(failureCause), (cause) => new EngineClosedError({ peer: self, cause }))

  const close = Effect.gen(function*() {
    const queued = yield* STM.gen(function*() {
      yield* TRef.set(closed, true)
      return yield* TQueue.takeAll(appendQueue)
    })
    const error = yield* closedError
    for (const request of queued) yield* Deferred.fail(request.deferred, error)
  })

  const annotate = <A, E, R>(name: string, effect: Effect.Effect<A, E, R>) =>
    effect.pipe(Effect.annotateLogs({ peer: self, fiber: name }), Effect.withLogSpan(`ilm.${name}`))

  yield* FiberSet.run(fibers, annotate("frame-reader", frameReader))
  yield* FiberSet.run(fibers, annotate("peer-watcher", peerWatcher))
  yield* FiberSet.run(fibers, annotate("appender", appender))
  yield* FiberSet.run(fibers, annotate("outbox-pump", pump))
  yield* FiberSet.run(fibers, annotate("ack-sender", ackSender))
  yield* FiberSet.run(fibers, annotate("ack-handler", ackHandler))
  yield* FiberSet.run(fibers, annotate("inbox-reorderer", reorderer))
  yield* FiberSet.run(fibers, annotate("retransmit-timer", retransmitTimer))

  // Supervision: the first fiber to fail stops the engine as a whole, never leaving it half-alive.
  const supervise = (join: Effect.Effect<void, unknown>) =>
    join.pipe(
      Effect.catchAllCause((cause) =>
        Effect.gen(function*() {
          yield* Effect.logError("The engine stopped after a fiber failed", cause)
          yield* TRef.set(failureCause, cause)
          yield* close
          yield* FiberSet.clear(fibers)
          yield* FiberMap.clear(helloLoops)
          yield* FiberMap.clear(workers)
        })
      ),
      Effect.forkScoped
    )
  yield* supervise(FiberSet.join(fibers))
  yield* supervise(FiberMap.join(helloLoops))
  yield* supervise(FiberMap.join(workers))
  yield* Effect.addFinalizer(() => close)

  // ---------------------------------------------------------------------------------------------------------------
  // API
  // ---------------------------------------------------------------------------------------------------------------

  const validate = (to: PeerId, payloads: ReadonlyArray<Uint8Array>, options: ILM.SendOptions | undefined) => {
    const lane = options?.lane ?? Lane.defaultLane
    if (to === self) return Either.left(new SendToSelfError({ peer: self }))
    if (!Lane.isLane(lane)) return Either.left(new InvalidLaneError({ lane }))
    for (const payload of payloads) {
      if (payload.length > config.maxPayloadBytes) {
        return Either.left(new PayloadTooLargeError({ size: payload.length, maxPayloadBytes: config.maxPayloadBytes }))
      }
    }
    return Either.right(lane)
  }

  const sendAll = (to: PeerId, payloads: ReadonlyArray<Uint8Array>, options?: ILM.SendOptions) =>
    Effect.gen(function*() {
      const lane = yield* validate(to, payloads, options)
      if (payloads.length === 0) return []
      const deferred = yield* Deferred.make<ReadonlyArray<MessageId>, ILM.SendError>()
      const request: SendRequest = { peer: to, lane, payloads, deferred }
      const count = payloads.length
      yield* STM.gen(function*() {
        if (yield* TRef.get(closed)) return yield* STM.fail("closed" as const)
        const pending = Option.getOrElse(yield* TMap.get(pendingByPeer, to), () => 0)
        if (pending + count > config.maxPendingPerPeer) {
          // A call larger than the whole outbox could never fit, however long it waited.
          if (config.whenFull === "fail" || count > config.maxPendingPerPeer) return yield* STM.fail("full" as const)
          return yield* STM.retry
        }
        yield* TMap.set(pendingByPeer, to, pending + count)
        yield* TQueue.offer(appendQueue, request)
      }).pipe(
        Effect.catchAll((reason): Effect.Effect<never, OutboxFullError | EngineClosedError> =>
          reason === "full"
            ? Effect.fail(new OutboxFullError({ peer: to, maxPendingPerPeer: config.maxPendingPerPeer }))
            : Effect.flatMap(closedError, Effect.fail)
        )
      )
      return yield* Deferred.await(deferred)
    })

  // No span per message: a span costs more than the rest of a send.
  const send = (to: PeerId, payload: Uint8Array, options?: ILM.SendOptions) =>
    Effect.map(sendAll(to, [payload], options), (ids) => ids[0]!)

  const sendAndAwait = (to: PeerId, payload: Uint8Array, options?: ILM.SendOptions) =>
    Effect.gen(function*() {
      const id = yield* send(to, payload, options)
      const key = streamKey(to, id.lane)
      const acknowledged = yield* STM.gen(function*() {
        if (yield* TRef.get(closed)) return false
        const out = yield* TMap.get(outs, key)
        if (Option.isSome(out) && out.value.acked >= id.seq) return true
        return yield* STM.retry
      })
      if (!acknowledged) return yield* Effect.flatMap(closedError, Effect.fail)
      return id
    }).pipe(Effect.withSpan("ILM.sendAndAwait", { attributes: { to } }))

  const pendingStreams = STM.map(
    TMap.values(outs),
    (all) =>
      all.filter((out) => out.allocated > out.acked).map((out) => ({
        peer: out.peer,
        lane: out.lane,
        pending: out.allocated - out.acked
      }))
  )

  const drain = (timeout: Duration.DurationInput) =>
    Effect.gen(function*() {
      const drained = STM.gen(function*() {
        if (yield* TRef.get(closed)) return false
        const pending = yield* totalPending
        if (pending > 0) return yield* STM.retry
        return true
      })
      const result = yield* Effect.timeout(drained, timeout).pipe(Effect.option)
      if (Option.isNone(result)) {
        return yield* Effect.fail(new DrainTimeoutError({ pending: yield* pendingStreams }))
      }
      if (!result.value) return yield* Effect.flatMap(closedError, Effect.fail)
    }).pipe(Effect.withSpan("ILM.drain"))

  const stats = STM.gen(function*() {
    const peerList = yield* TMap.values(peers)
    const incarnations = new Map(peerList.map((peer) => [peer.peer, peer.incarnation]))
    const outbound = (yield* TMap.values(outs)).map((out): ILM.OutboundStats => ({
      peer: out.peer,
      lane: out.lane,
      incarnation: incarnations.get(out.peer) ?? backend.incarnation,
      pending: out.allocated - out.acked,
      inFlight: out.nextToSend - 1 - out.acked,
      ackedUpTo: out.acked,
      lastSeq: out.allocated,
      retransmitted: out.retransmitted
    }))
    const inbound = (yield* TMap.values(ins)).map((state): ILM.InboundStats => ({
      peer: state.peer,
      lane: state.lane,
      incarnation: state.incarnation,
      delivered: state.delivered,
      buffered: HashMap.size(state.buffer)
    }))
    return {
      peers: peerList.map((peer): ILM.PeerStats => ({
        peer: peer.peer,
        connected: peer.connected,
        linked: peer.linked,
        incarnation: peer.incarnation,
        retransmitTimeoutMillis: peer.rto,
        smoothedRoundTripMillis: peer.srtt
      })),
      outbound,
      inbound
    } satisfies ILM.Stats
  }).pipe(STM.commit)

  return {
    localPeer: self,
    send,
    sendAll,
    sendAndAwait,
    drain,
    peers: linkedPeers,
    stats,
    events: Stream.fromPubSub(events)
  } satisfies ILM.ILM["Type"] as ILM.ILM["Type"]
})
