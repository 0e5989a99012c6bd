/**
 * The appender: stores what `send` and `sendAll` are given, in batches, and makes it known to the pump.
 *
 * Group commit without a hand-off when it is idle: a call that finds the appender idle stores its own messages on
 * its own fiber, at once — one awaited `send` costs one store commit and little else. Calls that arrive while a
 * batch is being stored queue up, and the appender's fiber stores them together in the next batch, in arrival
 * order. A batch is stored and recorded uninterruptibly, so a message the store has is always one the engine knows.
 *
 * A call made inside a span has that span's trace context captured on the caller's fiber, and kept in memory with
 * the messages until they are acknowledged (`sendBuffer.ts`); a stored batch is an `intersession.append` span
 * (`spans.ts`).
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as STM from "effect/STM"
import type { BackendError, OutboundMessage } from "../../Backend.js"
import type { TraceContext } from "../../Frame.js"
import type { SendError } from "../../ILM.js"
import { EngineClosedError } from "../../IlmError.js"
import * as Metrics from "../../IlmMetrics.js"
import type { Lane } from "../../Lane.js"
import type { MessageId } from "../../Message.js"
import type { PeerId } from "../../PeerId.js"
import type { StreamKey } from "../../StreamKey.js"
import type { Env } from "./env.js"
import { yieldToEventLoop } from "./fairness.js"
import { messageId } from "./messages.js"
import * as Outbound from "./outbound.js"
import * as Spans from "./spans.js"
import * as State from "./state.js"

/** One call of `send` or `sendAll`: its messages are stored together, with consecutive seqs. */
export interface Request {
  readonly peer: PeerId
  readonly lane: Lane
  readonly key: StreamKey
  readonly payloads: ReadonlyArray<Uint8Array>
  /** When the messages expire (ms since the epoch), if they do. */
  readonly expiresAt: number | undefined
  /** The span the call ran in, if it ran in one that is traced: set by `submit`, on the caller's fiber. */
  readonly trace?: TraceContext | undefined
}

type Result = Exit.Exit<ReadonlyArray<MessageId>, SendError>

interface Queued {
  readonly request: Request
  readonly resume: (result: Result) => void
}

export interface Appender {
  /** Stores a request's messages; the outbox room for them is already reserved. */
  readonly submit: (request: Request) => Effect.Effect<ReadonlyArray<MessageId>, SendError>
  /** Runs an effect while nothing is stored: sends made meanwhile wait, and are stored after it, in order. */
  readonly exclusive: <A, E>(effect: Effect.Effect<A, E>) => Effect.Effect<A, E>
  /** The appender's fiber: stores what queued up while a batch was being stored. */
  readonly run: Effect.Effect<never>
  /** Fails every queued request: the engine has closed. */
  readonly close: (error: EngineClosedError) => Effect.Effect<void>
}

/** A call storing at least this many messages lets the engine's other fibers run once before it stores them. */
const gatherFrom = 64

export const make = (env: Env): Appender => {
  const { backend, config, state } = env
  const queue: Array<Queued> = []
  /** A batch is being stored, by a caller or by the appender's fiber. */
  let busy = false
  /** Resumes the appender's fiber when it waits for work. */
  let wake: (() => void) | undefined
  let closed: EngineClosedError | undefined
  /** Those waiting to run alone (`exclusive`), first come first served: each takes over when storing ends. */
  const exclusives: Array<() => void> = []

  /** Storing ended: the next exclusive effect runs, or queued requests are stored. */
  const idle = () => {
    const next = exclusives.shift()
    if (next !== undefined) return next()
    busy = false
    kick()
  }

  /** Fails every request of a batch the store refused, freeing their room in the outbox. */
  const refuse = (requests: ReadonlyArray<Request>, cause: Cause.Cause<BackendError>) => {
    const error = Option.getOrElse(Cause.failureOption(cause), () => new EngineClosedError({ peer: env.self }))
    return Effect.as(
      Effect.forEach(requests, (request) => env.outbox.release(request.peer, request.payloads.length), {
        discard: true
      }),
      requests.map((): Result => Exit.fail(error))
    )
  }

  /** Extends one stream by a request's seqs from `first`; gives the peer's link as it stands. */
  const allocateOne = (request: Request, first: number, ready: Array<StreamKey>): STM.STM<State.PeerLink> =>
    STM.flatMap(state.outs.get(request.key), (current) =>
      STM.flatMap(env.peerLink(request.peer), (peer) => {
        const last = first + request.payloads.length - 1
        const stream = Outbound.allocate(
          current ?? Outbound.make(request.key, request.peer, request.lane),
          env.run,
          first,
          last
        )
        // The pump has nothing to do for a peer that is not linked: linking makes its streams ready.
        if (peer.linked) ready.push(request.key)
        const written = state.outs.set(request.key, stream)
        return STM.as(
          current === undefined ? STM.zipRight(written, state.peers.set(request.peer, peer)) : written,
          peer
        )
      }))

  /** Records stored requests in their streams, in one transaction; gives each one's peer link. */
  const allocate = (requests: ReadonlyArray<Request>, firsts: ReadonlyArray<number>, count: number) =>
    STM.suspend(() => {
      const ready: Array<StreamKey> = []
      return STM.forEach(
        requests.map((request, i) => [request, firsts[i]!] as const),
        ([request, first]) => allocateOne(request, first, ready)
      ).pipe(
        STM.zipLeft(State.addPending(state, count)),
        STM.tap(() => ready.length > 0 ? State.addAll(state.outReady, ready) : STM.void)
      )
    })

  /** What a stored batch gives its requests: their ids. */
  const record = (requests: ReadonlyArray<Request>, seqs: ReadonlyArray<number>, count: number) => {
    // A stream's seqs come in the order given, so one request's are consecutive.
    const firsts: Array<number> = []
    let offset = 0
    for (const request of requests) {
      firsts.push(seqs[offset]!)
      offset += request.payloads.length
    }
    const cells = Effect.zipRight(
      state.outs.ensure(requests.map((request) => request.key)),
      state.peers.ensure(requests.map((request) => request.peer))
    )
    return Effect.zipRight(
      cells,
      Effect.map(STM.commit(allocate(requests, firsts, count)), (links) => {
        // The caller's buffers are the caller's again once `send` returns: the send buffer keeps copies of what
        // goes out soon. Messages for a peer that is not linked wait in the store only, however long it is away.
        requests.forEach((request, i) => {
          if (links[i]!.linked) {
            env.sendBuffer.add(request.key, firsts[i]!, env.run, request.payloads, request.expiresAt)
          }
          if (request.trace !== undefined) {
            env.sendBuffer.trace(request.key, firsts[i]!, env.run, request.payloads.length, request.trace)
          }
        })
        for (const request of requests) {
          Metrics.sent.unsafeUpdate(request.payloads.length, env.metricTags.stream(request.peer, request.lane))
        }
        Metrics.pending.unsafeUpdate(env.outbox.total(), env.metricTags.engine)
        return requests.map((request, i): Result => {
          const ids: Array<MessageId> = []
          for (let j = 0; j < request.payloads.length; j++) {
            ids.push(messageId({
              destination: request.peer,
              lane: request.lane,
              incarnation: links[i]!.incarnation,
              seq: firsts[i]! + j
            }))
          }
          return Exit.succeed(ids)
        })
      })
    )
  }

  /**
   * Stores a batch and records it, in a span when traced; gives each request its result. `own` is the caller's
   * request when the caller's fiber stores the batch: the span is then a child of the caller's span, and a root
   * otherwise. It links to the spans the other requests were sent in.
   */
  const store = (requests: ReadonlyArray<Request>, own: Request | undefined): Effect.Effect<Array<Result>> =>
    Spans.withSpan(storeBatch(requests), "intersession.append", () => {
      const streams = new Set<StreamKey>()
      const peers = new Set<PeerId>()
      let messages = 0
      for (const request of requests) {
        streams.add(request.key)
        peers.add(request.peer)
        messages += request.payloads.length
      }
      return {
        root: own === undefined,
        links: Spans.linksTo(requests.map((request) => request.trace), own?.trace),
        attributes: {
          "intersession.local_peer": env.self,
          "intersession.messages": messages,
          "intersession.requests": requests.length,
          "intersession.peers": peers.size,
          "intersession.streams": streams.size
        }
      }
    })

  /**
   * Stores a batch and records it; gives each request its result. Runs uninterruptibly, and without generators:
   * it runs for every awaited `send`, and an `Effect.gen` costs more than the rest of it.
   */
  const storeBatch = (requests: ReadonlyArray<Request>): Effect.Effect<Array<Result>> => {
    const messages: Array<OutboundMessage> = []
    for (const request of requests) {
      const { expiresAt, lane, peer } = request
      for (const payload of request.payloads) {
        messages.push(expiresAt === undefined ? { peer, lane, payload } : { peer, lane, payload, expiresAt })
      }
    }
    return Effect.uninterruptible(
      Effect.flatMap(
        Effect.exit(backend.append(messages, env.run)),
        (stored) =>
          Exit.isFailure(stored) ? refuse(requests, stored.cause) : record(requests, stored.value, messages.length)
      )
    )
  }

  /** The next requests to store together: the first queued one, and those after it while `maxBatch` allows. */
  const takeBatch = (): Array<Queued> => {
    let count = queue[0]!.request.payloads.length
    let end = 1
    while (end < queue.length && count + queue[end]!.request.payloads.length <= config.maxBatch) {
      count += queue[end++]!.request.payloads.length
    }
    return queue.splice(0, end)
  }

  /** Hands queued requests to the appender's fiber once nobody is storing. */
  const kick = () => {
    if (busy || queue.length === 0 || wake === undefined) return
    const resume = wake
    wake = undefined
    resume()
  }

  /** Takes queued requests after the caller's own, while `maxBatch` allows: they go in the caller's batch. */
  const takeAlong = (own: Request): Array<Queued> => {
    let count = own.payloads.length
    let end = 0
    while (end < queue.length && count + queue[end]!.request.payloads.length <= config.maxBatch) {
      count += queue[end++]!.request.payloads.length
    }
    return queue.splice(0, end)
  }

  /**
   * Stores the caller's request on its own fiber, with whatever queued meanwhile. A large request first lets the
   * engine's other fibers run once: concurrent callers then join its batch (one commit for all, which a store that
   * syncs to disk pays dearly for), and the pump and frame reader take a turn — with better-sqlite3 storing never
   * waits, and a busy producer would keep them from running.
   */
  /** Lets the other fibers run once; a caller interrupted meanwhile stores nothing and frees its room. */
  const gather = (request: Request, restore: <A, E>(effect: Effect.Effect<A, E>) => Effect.Effect<A, E>) =>
    Effect.onInterrupt(restore(Effect.yieldNow()), () => env.outbox.release(request.peer, request.payloads.length))

  const storeHere = (request: Request): Effect.Effect<ReadonlyArray<MessageId>, SendError> =>
    Effect.uninterruptibleMask((restore) =>
      (request.payloads.length >= gatherFrom ? gather(request, restore) : Effect.void).pipe(
        Effect.zipRight(Effect.suspend(() => {
          const along = takeAlong(request)
          return Effect.map(store([request, ...along.map((queued) => queued.request)], request), (results) => {
            along.forEach((queued, i) => queued.resume(results[i + 1]!))
            return results[0]!
          })
        })),
        Effect.ensuring(Effect.sync(idle))
      )
    ).pipe(
      Effect.zipLeft(yieldToEventLoop),
      Effect.flatten
    )

  const submit = (untraced: Request): Effect.Effect<ReadonlyArray<MessageId>, SendError> =>
    Effect.withFiberRuntime((fiber) => {
      if (closed !== undefined) return Effect.fail(closed)
      const trace = Spans.traceContext(fiber)
      const request = trace === undefined ? untraced : { ...untraced, trace }
      if (!busy && queue.length === 0) {
        busy = true
        return storeHere(request)
      }
      return Effect.async<ReadonlyArray<MessageId>, SendError>((resume) => {
        const queued: Queued = { request, resume }
        queue.push(queued)
        kick()
        // A caller that stops waiting before its batch is taken withdraws its request: nothing is stored for it.
        return Effect.suspend(() => {
          const at = queue.indexOf(queued)
          if (at < 0) return Effect.void
          queue.splice(at, 1)
          return env.outbox.release(request.peer, request.payloads.length)
        })
      })
    })

  const awaitWork = Effect.async<void>((resume) => {
    wake = () => resume(Effect.void)
    kick()
  })

  const run: Effect.Effect<never> = Effect.forever(Effect.gen(function*() {
    yield* awaitWork
    // A caller may have started storing, or withdrawn the queued request, since the wake-up.
    if (busy || queue.length === 0) return
    busy = true
    while (queue.length > 0) {
      const batch = takeBatch()
      const results = yield* store(batch.map((queued) => queued.request), undefined)
      batch.forEach((queued, i) => queued.resume(results[i]!))
      yield* yieldToEventLoop
    }
    idle()
  }))

  /** Waits until nothing is being stored, and holds the appender until released. */
  const acquire = Effect.async<void>((resume) => {
    if (!busy) {
      busy = true
      return resume(Effect.void)
    }
    exclusives.push(() => resume(Effect.void))
  })

  // The wait is not interruptible (it lasts one stored batch at most), so a turn is never taken and then lost.
  const exclusive = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.zipRight(acquire, Effect.ensuring(restore(effect), Effect.sync(idle)))
    )

  const close = (error: EngineClosedError) =>
    Effect.sync(() => {
      closed = error
      for (const queued of queue.splice(0)) queued.resume(Exit.fail(error))
    })

  return { submit, exclusive, run, close }
}
