/**
 * The engine behind `ILM`: builds the shared environment, forks the fibers under one supervisor, and returns the
 * API. Each fiber is a module of this folder:
 *
 * - `frameReader` decodes every inbound frame and takes `Data` and `Ack` frames in batches (`receive`), handing
 *   `Hello`s to the `greeting`;
 * - `peerWatcher` follows the network's reachable peers, and the `greeting` sends a `Hello` loop to each;
 * - `appender` stores sends in batches; `pump` sends what the windows let out; `retransmitTimer` resends what
 *   was not acknowledged in time;
 * - `ackSender` sends acknowledgements; `ackHandler` removes acknowledged messages from the store; `expirer`
 *   removes expired ones (`drops` moves their streams past them, as it does for purged ones);
 * - `reorderer` starts a `deliveryWorker` per inbound stream with deliverable messages; a worker retries failed
 *   deliveries as the lane's `deliveryPolicy` says, and stores the messages it gives up on as dead letters;
 * - `deadLetters` replays, at start, the dead letters marked for replay while the engine was stopped.
 *
 * Pure protocol logic lives in `outbound`, `inbound`, `hello` and `rtt`; the state they share, in `state`.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as FiberMap from "effect/FiberMap"
import type { IlmConfig } from "../../IlmConfig.js"
import type { PeerId } from "../../PeerId.js"
import type { StreamKey } from "../../StreamKey.js"
import * as AckHandler from "./ackHandler.js"
import * as AckSender from "./ackSender.js"
import * as Api from "./api.js"
import * as Appender from "./appender.js"
import * as DeadLetterReplay from "./deadLetters.js"
import * as Env from "./env.js"
import * as Expirer from "./expirer.js"
import * as FrameReader from "./frameReader.js"
import * as Greeting from "./greeting.js"
import * as PeerWatcher from "./peerWatcher.js"
import * as Pump from "./pump.js"
import * as Reorderer from "./reorderer.js"
import * as RetransmitTimer from "./retransmitTimer.js"
import * as Supervisor from "./supervisor.js"

export const make = Effect.fnUntraced(function*(config: IlmConfig) {
  const env = yield* Env.make(config)
  // Made before the supervisor, so they are closed after it has marked the engine as closing.
  const workers = yield* FiberMap.make<StreamKey, void, never>()
  const helloLoops = yield* FiberMap.make<PeerId, void, never>()
  const appender = Appender.make(env)
  const supervisor = yield* Supervisor.make(
    env,
    (error) =>
      Effect.all([env.outbox.close, appender.close(error), FiberMap.clear(workers), FiberMap.clear(helloLoops)], {
        discard: true
      })
  )
  const greeting = Greeting.make(env, workers, helloLoops)

  yield* supervisor.fork("frame reader", FrameReader.make(env, greeting))
  yield* supervisor.fork("peer watcher", PeerWatcher.make(env, greeting))
  yield* supervisor.fork("appender", appender.run)
  yield* supervisor.fork("outbox pump", Pump.make(env))
  yield* supervisor.fork("retransmission timer", RetransmitTimer.make(env))
  yield* supervisor.fork("ack sender", AckSender.make(env))
  yield* supervisor.fork("ack handler", AckHandler.make(env))
  yield* supervisor.fork("expirer", Expirer.make(env))
  yield* supervisor.fork("dead-letter replay", DeadLetterReplay.replayMarked(env))
  yield* supervisor.fork("inbox reorderer", Reorderer.make(env, workers))
  yield* supervisor.fork("delivery workers", FiberMap.join(workers))
  yield* supervisor.fork("hello loops", FiberMap.join(helloLoops))
  const lost = env.backend.lost
  if (lost !== undefined) yield* supervisor.fork("store", lost)

  return Api.make(env, appender, supervisor, greeting)
})
