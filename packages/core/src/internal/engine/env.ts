/**
 * What every fiber of one engine shares: its services, settings, state, send buffer and reporting.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as HashSet from "effect/HashSet"
import * as PubSub from "effect/PubSub"
import * as Random from "effect/Random"
import * as STM from "effect/STM"
import * as SubscriptionRef from "effect/SubscriptionRef"
import { Backend } from "../../Backend.js"
import { Delivery } from "../../Delivery.js"
import type { IlmConfig } from "../../IlmConfig.js"
import type { IlmEvent } from "../../IlmEvent.js"
import type { Incarnation } from "../../Incarnation.js"
import { Network } from "../../Network.js"
import type { PeerId } from "../../PeerId.js"
import * as StreamKey from "../../StreamKey.js"
import * as Inbound from "./inbound.js"
import { MetricTags } from "./metricTags.js"
import * as Outbound from "./outbound.js"
import * as Outbox from "./outbox.js"
import * as Report from "./report.js"
import * as Rtt from "./rtt.js"
import { SendBuffer } from "./sendBuffer.js"
import * as State from "./state.js"

export interface Env {
  readonly self: PeerId
  readonly config: IlmConfig
  readonly network: Network["Type"]
  readonly backend: Backend["Type"]
  readonly delivery: Delivery["Type"]
  readonly state: State.State
  readonly sendBuffer: SendBuffer
  readonly outbox: Outbox.Outbox
  /** This run's id, stored with every seq it allocates. */
  readonly run: number
  readonly rttBounds: Rtt.RttBounds
  readonly metricTags: MetricTags
  readonly events: PubSub.PubSub<IlmEvent>
  /** The peers messages flow to now. */
  readonly linkedPeers: SubscriptionRef.SubscriptionRef<HashSet.HashSet<PeerId>>
  /** A nonce no connection of this run used before. */
  readonly nextNonce: () => number
  /** The link record of a peer, or a fresh one. */
  readonly peerLink: (peer: PeerId) => STM.STM<State.PeerLink>
  readonly publish: (report: Report.Report) => Effect.Effect<void>
  /** Hands frames to the network; a failure is a lost frame, which the protocol recovers from. */
  readonly sendFrames: (peer: PeerId, frames: ReadonlyArray<Uint8Array>) => Effect.Effect<void>
}

/** Builds the environment and loads what the store holds. */
export const make = Effect.fnUntraced(function*(config: IlmConfig) {
  const network = yield* Network
  const backend = yield* Backend
  const delivery = yield* Delivery
  const state = yield* State.make
  const storedOutbound = yield* backend.outbound
  const storedReceived = yield* backend.received
  const storedIncarnations = new Map(storedOutbound.incarnations.map((entry) => [entry.peer, entry.incarnation]))
  const run = yield* Random.nextIntBetween(1, 2 ** 48)
  // Nonces only need to differ between connections and runs: a random start and a counter do.
  let lastNonce = yield* Random.nextIntBetween(1, 2 ** 48)
  const nextNonce = () => ++lastNonce
  const rttBounds: Rtt.RttBounds = {
    initial: Duration.toMillis(config.retransmitInitial),
    min: Duration.toMillis(config.retransmitMin),
    max: Duration.toMillis(config.retransmitMax),
    backoff: config.retransmitBackoff
  }
  const newPeer = (peer: PeerId, incarnation: Incarnation): State.PeerLink => ({
    peer,
    incarnation,
    connected: false,
    // A nonce is given at each connection: a peer never connected has none.
    nonce: 0,
    theirNonce: 0,
    linked: false,
    verified: false,
    checkedSession: undefined,
    forgetting: false,
    rtt: Rtt.initial(rttBounds)
  })
  const peerLink = (peer: PeerId) =>
    STM.map(state.peers.get(peer), (link) => link ?? newPeer(peer, storedIncarnations.get(peer) ?? backend.incarnation))

  const outbox = yield* Outbox.make({ max: config.maxPendingPerPeer, wait: config.whenFull === "wait" })
  const reserved: Array<readonly [PeerId, number]> = []
  const outKeys = storedOutbound.streams.map((stream) => StreamKey.make(stream.peer, stream.lane))
  const inKeys = storedReceived.map((received) => StreamKey.make(received.peer, received.lane))
  yield* state.outs.ensure(outKeys)
  yield* state.ins.ensure(inKeys)
  yield* state.peers.ensure(storedOutbound.streams.map((stream) => stream.peer))
  yield* STM.gen(function*() {
    for (const [i, stream] of storedOutbound.streams.entries()) {
      const restored = Outbound.restore(outKeys[i]!, stream)
      yield* state.outs.set(outKeys[i]!, restored)
      yield* State.addPending(state, Outbound.pending(restored))
      reserved.push([stream.peer, Outbound.pending(restored)])
      yield* state.peers.set(stream.peer, yield* peerLink(stream.peer))
    }
    for (const [i, received] of storedReceived.entries()) {
      yield* state.ins.set(inKeys[i]!, Inbound.restore(inKeys[i]!, received))
    }
  })

  // What the store holds counts against the outbox, however far above its bound a store from a larger one is.
  for (const [peer, count] of reserved) outbox.restore(peer, count)
  const events = yield* PubSub.sliding<IlmEvent>(4096)
  const pending = Effect.sync(outbox.total)
  const metricTags = new MetricTags(network.localPeer)
  return {
    self: network.localPeer,
    config,
    network,
    backend,
    delivery,
    state,
    sendBuffer: new SendBuffer(config.sendBufferBytes),
    outbox,
    run,
    rttBounds,
    metricTags,
    events,
    linkedPeers: yield* SubscriptionRef.make(HashSet.empty<PeerId>()),
    nextNonce,
    peerLink,
    publish: (report) => Report.publish(report, events, pending, metricTags),
    sendFrames: (peer, frames) => frames.length === 0 ? Effect.void : Effect.ignore(network.send(peer, frames))
  } satisfies Env
})
