/**
 * A deterministic simulation: N peers on an in-memory network, a schedule drawn from a seed — bursts of sends,
 * link faults, partitions, disconnects, crashes (an engine stopped without draining), restarts, wiped stores,
 * stores restored from an older backup, failing deliveries and failing backends, and on request messages with a time
 * to live and purges — then a quiet end, and a check of every promise of protocol.md §1: nothing lost, nothing
 * duplicated, nothing out of order or skipped, nothing left pending, nothing delivered past its expiry, and every
 * wipe followed by a resync (the store forgot, and its partners reported `Resynchronised`). It runs in
 * virtual time (see `VirtualClock`), so a schedule of minutes takes milliseconds, and the same seed replays the same
 * run.
 *
 * @since 0.1.0
 */
import type { IlmEvent } from "@intersession/core/IlmEvent"
import * as PeerId from "@intersession/core/PeerId"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Random from "effect/Random"
import * as Stream from "effect/Stream"
import * as InMemoryBackend from "./InMemoryBackend.js"
import * as InMemoryNetwork from "./InMemoryNetwork.js"
import * as TestPeer from "./TestPeer.js"
import * as VirtualClock from "./VirtualClock.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Peers in the simulation; 3 by default. */
  readonly peers?: number | undefined
  /** Operations in the schedule before the quiet end; 40 by default. */
  readonly operations?: number | undefined
  /**
   * The share of operations that back up or restore a store, on top of the usual mix (where each is 2.5%): raise it
   * to aim the schedules at stores that go back in time. 0 by default.
   */
  readonly backupsAndRestores?: number | undefined
  /**
   * The share of operations that purge what one peer has pending toward another (a lane or all), on top of the usual
   * mix; with it, a third of the bursts send with a time to live of 50 ms to 5 s. 0 by default. Such messages may
   * not arrive, but one that does must arrive in order, once, and before its expiry; and in a run without wipes and
   * restores, nobody may report `Resynchronised`: a removed message is never taken for a lost one.
   */
  readonly expiryAndPurge?: number | undefined
  /**
   * The share of messages that are poison: their destination's application refuses them for good, so they must
   * end in its dead letters, once each, and never reach the application, while their streams go on. 0 by default.
   */
  readonly deadLetters?: number | undefined
  /** How long the quiet end may take to deliver everything, in virtual time; 1 hour by default. */
  readonly settleLimit?: Duration.DurationInput | undefined
}

/**
 * What a run did and what it found. `violations` is empty when every promise held.
 *
 * @since 0.1.0
 * @category models
 */
export interface Report {
  readonly seed: number
  readonly window: number
  /** Sends attempted, and those that succeeded (the ones that must arrive unless their sender was wiped). */
  readonly attempted: number
  readonly succeeded: number
  /** Messages the applications received, over every application life. */
  readonly delivered: number
  readonly crashes: number
  readonly wipes: number
  /**
   * Wipes, counted once per partner, after which the partner held state for the wiped peer and met its new life, so
   * one of the two had to report `Resynchronised`.
   */
  readonly resyncsChecked: number
  readonly restores: number
  /** Messages sent with a time to live, and purges made. */
  readonly expiring: number
  readonly purges: number
  /** Poison messages sent, and those found in their destinations' dead letters at the end. */
  readonly poison: number
  readonly deadLettered: number
  readonly faults: number
  readonly virtualMillis: number
  /** The schedule, one line per operation, to read when a seed fails. */
  readonly schedule: ReadonlyArray<string>
  readonly violations: ReadonlyArray<string>
}

/** A small seeded generator for the schedule itself (mulberry32). */
const generator = (seed: number) => {
  let state = seed >>> 0
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return {
    next,
    int: (min: number, max: number) => min + Math.floor(next() * (max - min + 1)),
    pick: <A>(items: ReadonlyArray<A>): A => items[Math.floor(next() * items.length)]!
  }
}

interface SimPeer {
  readonly id: PeerId.PeerId
  readonly store: InMemoryBackend.Store
  /**
   * Incremented by every wipe (a new install) and every restore (a store gone back in time): each life has its
   * own application log, and messages sent in it form their own sequence.
   */
  life: number
  /** A copy of the store and how many messages had been sent when it was taken. */
  backup: { readonly snapshot: InMemoryBackend.Snapshot; readonly sentBefore: number } | undefined
  recorder: TestPeer.Recorder
  /** Each life, with the number of events observed when it began. */
  readonly lives: Array<{ readonly life: number; readonly recorder: TestPeer.Recorder; readonly mark: number }>
  running: TestPeer.Running | undefined
  /** Set by a wipe until the store is opened again, naming the wipe. */
  wiped: string | undefined
}

/** An event an engine reported, as far as the resync check needs it. */
interface Observed {
  /** The peer whose engine reported it. */
  readonly observer: PeerId.PeerId
  readonly tag: "PeerConnected" | "Resynchronised"
  readonly peer: PeerId.PeerId
}

/**
 * A wipe of `wiped` while `partner`'s store held state for it: when they link again (or the partner takes a message
 * of the wiped peer's new life in one of those lanes), one of them must report `Resynchronised`.
 */
interface ResyncExpected {
  readonly op: string
  readonly wiped: SimPeer
  /** The wiped peer's life that began with the wipe, and the partner's life then. */
  readonly life: number
  readonly partner: SimPeer
  readonly partnerLife: number
  /** The number of events observed at the wipe: only later ones count. */
  readonly mark: number
  readonly held: InMemoryBackend.Held
}

interface SentMessage {
  readonly source: PeerId.PeerId
  readonly sourceLife: number
  readonly destination: PeerId.PeerId
  readonly lane: string
  readonly index: number
  status: "pending" | "succeeded" | "failed"
  /** Its sender's store was wiped or restored to a copy older than the send: promise 1 no longer covers it. */
  exempt: boolean
  /** Its time to live, in milliseconds, if it has one. */
  readonly timeToLive: number | undefined
  /** When it expires at the latest, in virtual milliseconds: its time to live after its `send` returned. */
  expiresAt: number | undefined
  /** It expired or was purged, or may have been: it need not arrive. */
  droppable: boolean
  /** Its destination refuses it for good: it must become a dead letter there, never a delivery. */
  readonly poison: boolean
  /** Its destination's life when it was sent: a wipe or restore of the destination since takes its dead letters. */
  readonly destinationLife: number
}

const lanes = ["a", "b"] as const
const decoder = new TextDecoder()
const encoder = new TextEncoder()

const streamKey = (source: string, sourceLife: number, destination: string, lane: string) =>
  `${source}|${sourceLife}|${destination}|${lane}`

/**
 * Runs the schedule of one seed and checks the promises.
 *
 * @example
 * ```ts
 * import * as Simulation from "@intersession/testing/Simulation"
 * import * as Effect from "effect/Effect"
 *
 * // Minutes of virtual time take milliseconds, and a seed replays the same run: try many.
 * const program = Effect.gen(function*() {
 *   for (const seed of [1, 2, 3]) {
 *     const report = yield* Simulation.run(seed, { peers: 3, operations: 30 })
 *     // Every promise held when `violations` is empty; otherwise `schedule` tells what the seed did, step by step.
 *     console.log(`seed ${seed}: ${report.delivered} delivered, ${report.crashes} crashes`, report.violations)
 *   }
 * })
 * // seed 1: 105 delivered, 1 crashes []
 * // seed 2: 25 delivered, 1 crashes []
 * // seed 3: 38 delivered, 3 crashes []
 *
 * Effect.runPromise(program)
 * ```
 *
 * @since 0.1.0
 * @category running
 */
export const run = (seed: number, options?: Options): Effect.Effect<Report, VirtualClock.VirtualTimeError> =>
  VirtualClock.run(
    // Warnings (failed deliveries, failing backends) are the schedule working as meant; errors still show.
    Effect.scoped(Effect.withRandom(schedule(seed, options), Random.make(seed))).pipe(
      Logger.withMinimumLogLevel(LogLevel.Error)
    ),
    { limit: Duration.sum(Duration.hours(1), Duration.decode(options?.settleLimit ?? "1 hour")) }
  )

const schedule = (seed: number, options?: Options) =>
  Effect.gen(function*() {
    const rng = generator(seed)
    const window = rng.pick([1, 4, 16, 64])
    const config = {
      window,
      retransmitInitial: "200 millis",
      retransmitMin: "20 millis",
      retransmitMax: "2 seconds",
      helloInitial: "100 millis",
      helloMax: "2 seconds",
      deliveryRetryInitial: "20 millis",
      deliveryRetryMax: "1 second"
    } as const
    const hub = yield* InMemoryNetwork.make({ seed })
    const bursts = yield* FiberSet.make()
    const watchers = yield* FiberSet.make()
    /** What every engine reported, in the order the watchers saw it. */
    const observed: Array<Observed> = []
    const expected: Array<ResyncExpected> = []
    const wipeViolations: Array<string> = []
    const log: Array<string> = []
    const sent: Array<SentMessage> = []
    const counters = new Map<string, number>()
    const busy = new Set<string>()
    const partitions = new Map<string, readonly [PeerId.PeerId, PeerId.PeerId]>()
    const unplugged = new Set<PeerId.PeerId>()
    let crashes = 0
    let wipes = 0
    let restores = 0
    let faults = 0
    let expiring = 0
    let purges = 0
    const lifecycleShare = options?.expiryAndPurge ?? 0
    const poisonShare = options?.deadLetters ?? 0
    // Its own draws, so that poison changes which messages are refused, never the schedule.
    const poisonDraws = generator(seed ^ 0x5eed)
    /** Makes a peer's application refuse every message (`failing`) or none; poison it refuses for good, always. */
    const setFailing = (peer: SimPeer, failing: boolean) =>
      peer.recorder.setFailing((message) => isPoison(message) ? "permanent" : failing)

    const peers: Array<SimPeer> = []
    for (let i = 0; i < (options?.peers ?? 3); i++) {
      const id = PeerId.make(`p${i}`)
      const recorder = yield* TestPeer.makeRecorder
      peers.push({
        id,
        store: yield* InMemoryBackend.makeStore(id),
        life: 0,
        backup: undefined,
        recorder,
        lives: [{ life: 0, recorder, mark: 0 }],
        running: undefined,
        wiped: undefined
      })
      yield* setFailing(peers[i]!, false)
    }

    const observe = (observer: PeerId.PeerId) => (event: IlmEvent) =>
      Effect.sync(() => {
        if (event._tag === "PeerConnected" || event._tag === "Resynchronised") {
          observed.push({ observer, tag: event._tag, peer: event.peer })
        }
      })

    /**
     * A store opened again after a wipe has a new incarnation: the wipe left it none (see {@link wiped}), so opening
     * it must have drawn one.
     */
    const checkReopened = (peer: SimPeer) =>
      Effect.gen(function*() {
        if (peer.wiped === undefined) return
        if ((yield* peer.store.incarnation) === undefined) {
          wipeViolations.push(`wipe: ${peer.id}'s store, wiped at ${peer.wiped}, was opened with no incarnation`)
        }
        peer.wiped = undefined
      })

    const start = (peer: SimPeer) =>
      Effect.gen(function*() {
        if (peer.running !== undefined) return
        // Off the network until its events are watched, so that no link goes unreported.
        const offline = !unplugged.has(peer.id)
        if (offline) yield* hub.disconnect(peer.id)
        // A start fails with a typed error while the backend fails; the peer stays down until the next start.
        const started = yield* Effect.either(
          TestPeer.start(hub, { id: peer.id, store: peer.store, recorder: peer.recorder }, config)
        )
        if (started._tag === "Right") {
          peer.running = started.right
          yield* FiberSet.run(watchers, Stream.runForEach(started.right.ilm.events, observe(peer.id)))
          // In virtual time a sleep of zero ends once every other fiber waits: the watcher has subscribed.
          yield* Effect.sleep(Duration.zero)
          yield* checkReopened(peer)
        } else {
          log.push(`start of ${peer.id} failed: ${started.left._tag}`)
        }
        if (offline) yield* hub.connect(peer.id)
      })

    const stop = (peer: SimPeer) =>
      Effect.gen(function*() {
        if (peer.running === undefined) return
        const running = peer.running
        peer.running = undefined
        yield* running.stop
      })

    const burst = (source: SimPeer, destination: SimPeer, lane: string, count: number) =>
      Effect.gen(function*() {
        const running = source.running
        if (running === undefined) return
        const key = streamKey(source.id, source.life, destination.id, lane)
        if (busy.has(key)) return
        busy.add(key)
        const messages: Array<SentMessage> = []
        const timeToLive = lifecycleShare > 0 && rng.next() < 1 / 3 ? rng.pick([50, 200, 1000, 5000]) : undefined
        for (let i = 0; i < count; i++) {
          const poison = poisonShare > 0 && poisonDraws.next() < poisonShare
          const index = (counters.get(key) ?? 0) + 1
          counters.set(key, index)
          const message: SentMessage = {
            source: source.id,
            sourceLife: source.life,
            destination: destination.id,
            lane,
            index,
            status: "pending",
            exempt: false,
            timeToLive,
            expiresAt: undefined,
            droppable: timeToLive !== undefined,
            poison,
            destinationLife: destination.life
          }
          sent.push(message)
          messages.push(message)
        }
        if (timeToLive !== undefined) expiring += count
        yield* FiberSet.run(
          bursts,
          Effect.forEach(messages, (message) =>
            running.ilm.send(
              destination.id,
              encoder.encode(
                `${message.source}|${message.sourceLife}|${lane}|${message.index}${message.poison ? "|poison" : ""}`
              ),
              { lane, timeToLive }
            ).pipe(
              Effect.match({
                onFailure: () => {
                  message.status = "failed"
                },
                onSuccess: () => {
                  message.status = "succeeded"
                }
              }),
              // The latest it can expire: the time it was stored at was no later than now.
              Effect.zipLeft(Effect.clockWith((clock) =>
                Effect.sync(() => {
                  if (message.timeToLive !== undefined) {
                    message.expiresAt = clock.unsafeCurrentTimeMillis() + message.timeToLive
                  }
                })
              ))
            ), { discard: true }).pipe(Effect.ensuring(Effect.sync(() => busy.delete(key))))
        )
      })

    /**
     * Stops a peer, changes its store, and starts a new life: its sends since `sentBefore` may be lost. `changed`
     * runs once the new life began, before the peer may start again.
     */
    const newLife = (
      peer: SimPeer,
      change: Effect.Effect<void>,
      sentBefore: number,
      changed: Effect.Effect<void> = Effect.void
    ) =>
      Effect.gen(function*() {
        yield* stop(peer)
        yield* change
        for (const message of sent.slice(sentBefore)) if (message.source === peer.id) message.exempt = true
        peer.life++
        peer.recorder = yield* TestPeer.makeRecorder
        yield* setFailing(peer, false)
        // Let the watchers take every event reported before the change, so that later ones mean the new life.
        yield* Effect.sleep(Duration.zero)
        peer.lives.push({ life: peer.life, recorder: peer.recorder, mark: observed.length })
        yield* changed
        if (rng.next() < 0.5) yield* start(peer)
      })

    /**
     * After a wipe: the store forgot its incarnation and holds nothing pending, and every partner whose store holds
     * state for the peer expects a resync with its new life.
     */
    const wiped = (peer: SimPeer, op: string) =>
      Effect.gen(function*() {
        const left = yield* peer.store.pendingCount
        if (left > 0) wipeViolations.push(`wipe: ${peer.id}'s store still holds ${left} pending messages after ${op}`)
        const kept = yield* peer.store.incarnation
        if (kept !== undefined) wipeViolations.push(`wipe: ${peer.id}'s store kept its incarnation ${kept} after ${op}`)
        peer.wiped = op
        for (const partner of peers) {
          if (partner === peer) continue
          const held = yield* partner.store.heldFor(peer.id)
          if (held.acknowledged.length === 0 && held.received.length === 0) continue
          expected.push({
            op,
            wiped: peer,
            life: peer.life,
            partner,
            partnerLife: partner.life,
            mark: observed.length,
            held
          })
        }
      })

    const pair = () => {
      const a = rng.pick(peers)
      const others = peers.filter((peer) => peer !== a)
      return [a, rng.pick(others)] as const
    }

    const backup = (peer: SimPeer) =>
      Effect.gen(function*() {
        log.push(`backup ${peer.id}`)
        peer.backup = { snapshot: yield* peer.store.snapshot, sentBefore: sent.length }
      })

    /** Restores the peer's last backup, if it has one. */
    const restore = (peer: SimPeer) =>
      Effect.gen(function*() {
        const taken = peer.backup
        if (taken === undefined) return false
        log.push(`restore ${peer.id} to the backup taken after ${taken.sentBefore} sends`)
        restores++
        // A restored store has the backup's incarnation: nothing to check for an earlier wipe.
        peer.wiped = undefined
        yield* newLife(peer, peer.store.restore(taken.snapshot), taken.sentBefore)
        return true
      })

    /** Purges what `source` has pending toward `destination`, in one lane or all: those messages need not arrive. */
    const purge = (source: SimPeer, destination: SimPeer, lane: string | undefined) =>
      Effect.gen(function*() {
        const running = source.running
        if (running === undefined) return
        purges++
        for (const message of sent) {
          if (
            message.source === source.id && message.sourceLife === source.life &&
            message.destination === destination.id && (lane === undefined || message.lane === lane)
          ) message.droppable = true
        }
        const count = yield* Effect.orElseSucceed(running.ilm.purge(destination.id, { lane }), () => -1)
        log.push(`purge ${source.id}->${destination.id} ${lane === undefined ? "all lanes" : `lane ${lane}`}: ${count}`)
      })

    for (const peer of peers) yield* start(peer)

    const operations = options?.operations ?? 40
    const extraBackups = options?.backupsAndRestores ?? 0
    for (let op = 0; op < operations; op++) {
      if (extraBackups > 0 && rng.next() < extraBackups) {
        const peer = rng.pick(peers)
        if (peer.backup === undefined || rng.next() < 0.5) yield* backup(peer)
        else yield* restore(peer)
        yield* Effect.sleep(Duration.millis(rng.int(0, 400)))
        continue
      }
      if (lifecycleShare > 0 && rng.next() < lifecycleShare) {
        const [source, destination] = pair()
        yield* purge(source, destination, rng.next() < 0.5 ? rng.pick(lanes) : undefined)
        yield* Effect.sleep(Duration.millis(rng.int(0, 400)))
        continue
      }
      const roll = rng.next()
      if (roll < 0.35) {
        const [source, destination] = pair()
        const lane = rng.pick(lanes)
        const count = rng.int(1, 15)
        log.push(`send ${count} ${source.id}->${destination.id} lane ${lane}`)
        yield* burst(source, destination, lane, count)
      } else if (roll < 0.45) {
        const peer = rng.pick(peers)
        log.push(`crash ${peer.id}`)
        if (peer.running !== undefined) crashes++
        yield* stop(peer)
      } else if (roll < 0.55) {
        const peer = rng.pick(peers)
        log.push(`start ${peer.id}`)
        yield* start(peer)
      } else if (roll < 0.585) {
        const peer = rng.pick(peers)
        log.push(`wipe ${peer.id}`)
        wipes++
        yield* newLife(peer, peer.store.wipe, 0, wiped(peer, `op ${op} (wipe ${peer.id})`))
      } else if (roll < 0.61) {
        yield* backup(rng.pick(peers))
      } else if (roll < 0.635) {
        if (!(yield* restore(rng.pick(peers)))) continue
      } else if (roll < 0.69) {
        const next: InMemoryNetwork.Faults = {
          drop: rng.pick([0, 0, 0.05, 0.2]),
          duplicate: rng.pick([0, 0, 0.1, 0.3]),
          reorder: rng.pick([0, 0, 0.2, 0.5]),
          delay: Duration.millis(rng.pick([0, 0, 1, 5, 20]))
        }
        log.push(`faults ${JSON.stringify({ ...next, delay: Duration.toMillis(next.delay!) })}`)
        faults++
        yield* hub.setFaults(next)
      } else if (roll < 0.75) {
        const [a, b] = pair()
        log.push(`partition ${a.id} ${b.id}`)
        partitions.set([a.id, b.id].sort().join(), [a.id, b.id])
        yield* hub.partition(a.id, b.id)
      } else if (roll < 0.8) {
        const [a, b] = pair()
        log.push(`heal ${a.id} ${b.id}`)
        partitions.delete([a.id, b.id].sort().join())
        yield* hub.heal(a.id, b.id)
      } else if (roll < 0.84) {
        const peer = rng.pick(peers)
        const down = !unplugged.has(peer.id)
        log.push(`${down ? "disconnect" : "connect"} ${peer.id}`)
        if (down) {
          unplugged.add(peer.id)
          yield* hub.disconnect(peer.id)
        } else {
          unplugged.delete(peer.id)
          yield* hub.connect(peer.id)
        }
      } else if (roll < 0.9) {
        const peer = rng.pick(peers)
        const failing = rng.next() < 0.5
        log.push(`delivery ${failing ? "fails" : "works"} at ${peer.id}`)
        yield* setFailing(peer, failing)
      } else if (roll < 0.93) {
        const peer = rng.pick(peers)
        const count = rng.int(1, 6)
        log.push(`backend of ${peer.id} fails ${count} operations`)
        yield* peer.store.failNext(count)
      } else {
        log.push("pause")
      }
      yield* Effect.sleep(Duration.millis(rng.int(0, 400)))
    }

    // The quiet end: every peer up and reachable, links clean, applications and stores healthy.
    log.push("settle")
    yield* hub.setFaults({})
    for (const [a, b] of partitions.values()) yield* hub.heal(a, b)
    for (const id of unplugged) yield* hub.connect(id)
    for (const peer of peers) {
      yield* setFailing(peer, false)
      yield* peer.store.failNext(0)
      yield* start(peer)
    }
    yield* FiberSet.awaitEmpty(bursts)
    const settled = yield* VirtualClock.waitUntil(
      Effect.map(
        Effect.forEach(peers, (peer) => peer.store.pendingCount),
        (counts) => counts.every((count) => count === 0)
      ),
      "50 millis"
    ).pipe(Effect.timeoutTo({
      duration: options?.settleLimit ?? "1 hour",
      onSuccess: () => true,
      onTimeout: () => false
    }))
    // Late frames must not cause late duplicates.
    yield* Effect.sleep("10 seconds")
    const virtualMillis = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
    const deadLetters = yield* collectDeadLetters(peers)
    for (const peer of peers) yield* stop(peer)

    const violations = yield* check(peers, sent)
    violations.push(...checkDeadLetters(peers, sent, deadLetters))
    violations.push(...wipeViolations)
    if (lifecycleShare > 0 && wipes === 0 && restores === 0) {
      const resynced = observed.filter((event) => event.tag === "Resynchronised")
      if (resynced.length > 0) {
        violations.push(
          `resync: ${resynced.length} Resynchronised reported (first by ${resynced[0]!.observer} about ` +
            `${resynced[0]!.peer}) in a run without wipes or restores`
        )
      }
    }
    const resyncs = yield* checkResyncs(expected, observed)
    violations.push(...resyncs.violations)
    if (!settled) {
      const pending = yield* Effect.forEach(peers, (peer) =>
        Effect.map(peer.store.pendingCount, (n) => `${peer.id}: ${n}`))
      violations.unshift(`wedged: messages still pending after the quiet end (${pending.join(", ")})`)
    }
    let delivered = 0
    for (const peer of peers) {
      for (const { recorder } of peer.lives) {
        delivered += (yield* recorder.messages).length
      }
    }
    return {
      seed,
      window,
      attempted: sent.length,
      succeeded: sent.filter((message) =>
        message.status === "succeeded"
      ).length,
      delivered,
      crashes,
      wipes,
      resyncsChecked: resyncs.checked,
      restores,
      expiring,
      purges,
      poison: sent.filter((message) => message.poison).length,
      deadLettered: Array.from(deadLetters.values()).reduce((sum, count) => sum + count, 0),
      faults,
      virtualMillis,
      schedule: log,
      violations
    } satisfies Report
  })

interface Received {
  readonly source: string
  readonly sourceLife: number
  readonly lane: string
  readonly index: number
}

/**
 * The most a frame spends on the simulated network (a 20 ms delay and a 10 ms reorder hold): a receiver counts a
 * message's time to live from the frame's arrival, so this much of it goes uncounted.
 */
const transitSlack = 30

const isPoison = (message: { readonly payload: Uint8Array }) => decoder.decode(message.payload).endsWith("|poison")

/** The dead letters of every peer's store at the end, by message (`stream#index`), with how often each is there. */
const collectDeadLetters = (peers: ReadonlyArray<SimPeer>) =>
  Effect.gen(function*() {
    const found = new Map<string, number>()
    for (const peer of peers) {
      if (peer.running === undefined) continue
      const letters = yield* Effect.orElseSucceed(peer.running.ilm.deadLetters.list({ limit: 1_000_000 }), () => [])
      for (const letter of letters) {
        const received = parse(letter)
        const id = received === undefined
          ? `unreadable dead letter ${letter.id} at ${peer.id}`
          : `${streamKey(received.source, received.sourceLife, peer.id, received.lane)}#${received.index}${
            isPoison(letter) ? "" : " (not poison)"
          }`
        found.set(id, (found.get(id) ?? 0) + 1)
      }
    }
    return found
  })

/**
 * Checks the dead letters: only poison becomes one, none twice, and every poison message that had to reach its
 * destination (sent, not dropped, neither store changed since) is one there. Deliveries of poison are found by
 * `check`, which never expects one.
 */
const checkDeadLetters = (
  peers: ReadonlyArray<SimPeer>,
  sent: ReadonlyArray<SentMessage>,
  found: ReadonlyMap<string, number>
): Array<string> => {
  const violations: Array<string> = []
  for (const [id, count] of found) {
    if (!id.includes("#") || id.endsWith("(not poison)")) violations.push(`dead letter: ${id}`)
    if (count > 1) violations.push(`dead letter: ${id} is stored ${count} times`)
  }
  const lives = new Map(peers.map((peer) => [peer.id, peer.life]))
  for (const message of sent) {
    if (!message.poison || message.status !== "succeeded" || message.exempt || message.droppable) continue
    if (lives.get(message.destination) !== message.destinationLife) continue
    const id = `${streamKey(message.source, message.sourceLife, message.destination, message.lane)}#${message.index}`
    if (!found.has(id)) violations.push(`dead letter: poison ${id} is not among ${message.destination}'s dead letters`)
  }
  return violations
}

const parse = (message: { readonly payload: Uint8Array }): Received | undefined => {
  const [source, life, lane, index] = decoder.decode(message.payload).split("|")
  if (source === undefined || life === undefined || lane === undefined || index === undefined) return undefined
  return { source, sourceLife: Number(life), lane, index: Number(index) }
}

/** Checks promises 1–3 against what each application life received. */
const check = (peers: ReadonlyArray<SimPeer>, sent: ReadonlyArray<SentMessage>) =>
  Effect.gen(function*() {
    const violations: Array<string> = []
    const byStream = new Map<string, Array<SentMessage>>()
    for (const message of sent) {
      const key = streamKey(message.source, message.sourceLife, message.destination, message.lane)
      const list = byStream.get(key) ?? []
      list.push(message)
      byStream.set(key, list)
    }
    const deliveredAnywhere = new Set<string>()

    for (const peer of peers) {
      for (const { life, recorder } of peer.lives) {
        const seen = new Set<string>()
        const lastIndex = new Map<string, number>()
        const times = yield* recorder.receivedAt
        for (const [at, message] of (yield* recorder.messages).entries()) {
          const received = parse(message)
          if (received === undefined || message.source !== received.source || message.lane !== received.lane) {
            violations.push(`${peer.id} (life ${life}) received a message it cannot account for`)
            continue
          }
          const key = streamKey(received.source, received.sourceLife, peer.id, received.lane)
          const id = `${key}#${received.index}`
          const original = byStream.get(key)?.find((m) => m.index === received.index)
          if (original === undefined) {
            violations.push(`${peer.id} (life ${life}) received ${id}, which was never sent`)
          } else if (original.poison) {
            violations.push(`poison: ${peer.id} (life ${life}) received ${id}, which its application refuses`)
          } else if (original.expiresAt !== undefined && times[at]! > original.expiresAt + transitSlack) {
            violations.push(
              `expired: ${peer.id} (life ${life}) received ${id} ${times[at]! - original.expiresAt} ms after its expiry`
            )
          }
          if (seen.has(id)) violations.push(`duplicate: ${peer.id} (life ${life}) received ${id} twice`)
          seen.add(id)
          deliveredAnywhere.add(id)
          const last = lastIndex.get(key)
          if (last !== undefined && received.index <= last) {
            violations.push(`order: ${peer.id} (life ${life}) received ${id} after #${last}`)
          } else if (last !== undefined) {
            // No gap: every message between two delivered ones that must arrive did arrive, in between.
            const skipped = byStream.get(key)!.filter((m) =>
              m.index > last && m.index < received.index && m.status === "succeeded" && !m.droppable && !m.poison
            )
            if (skipped.length > 0) {
              violations.push(`gap: ${peer.id} (life ${life}) skipped ${key}#${skipped[0]!.index} before ${id}`)
            }
          }
          lastIndex.set(key, received.index)
        }
      }
    }

    for (const message of sent) {
      // A store wiped or restored after the send may take the message with it: promise 1 needs intact stores.
      if (message.status !== "succeeded" || message.exempt || message.droppable || message.poison) continue
      const id = `${streamKey(message.source, message.sourceLife, message.destination, message.lane)}#${message.index}`
      if (!deliveredAnywhere.has(id)) violations.push(`lost: ${id} was sent and never delivered`)
    }
    return violations
  })

/**
 * Checks promise 4 after each wipe: a partner that held state for the wiped peer learns of the new life. It must say
 * so with `Resynchronised` (either of the two may report it) when it links to the new life, since the new life's
 * `Hello` lacks the lanes the partner had acknowledged messages in, or when it takes a message of the new life in a
 * lane it had received in. Only events before either peer's next life count.
 */
const checkResyncs = (expected: ReadonlyArray<ResyncExpected>, observed: ReadonlyArray<Observed>) =>
  Effect.gen(function*() {
    const violations: Array<string> = []
    let checked = 0
    for (const expectation of expected) {
      const { held, mark, partner, wiped } = expectation
      const partnerUntil = partner.lives[expectation.partnerLife + 1]?.mark ?? Infinity
      const until = Math.min(partnerUntil, wiped.lives[expectation.life + 1]?.mark ?? Infinity)
      const within = (index: number, end: number) => index >= mark && index < end
      const between = (event: Observed) =>
        (event.observer === partner.id && event.peer === wiped.id) ||
        (event.observer === wiped.id && event.peer === partner.id)
      // The partner linked to the new life: its Hello had none of the lanes the partner had acknowledged.
      const linked = held.acknowledged.length > 0 &&
        observed.some((event, index) =>
          within(index, until) && event.tag === "PeerConnected" && event.observer === partner.id &&
          event.peer === wiped.id
        )
      // The partner took a message of the new life in a lane it had received in from an old one.
      const recorder = partner.lives[expectation.partnerLife]!.recorder
      const adopted = held.received.length > 0 && (yield* recorder.messages).some((message) => {
        const received = parse(message)
        return received !== undefined && received.source === wiped.id && received.sourceLife === expectation.life &&
          held.received.includes(message.lane)
      })
      if (!linked && !adopted) continue
      checked++
      const end = linked ? until : partnerUntil
      const reported = observed.some((event, index) =>
        within(index, end) && event.tag === "Resynchronised" && between(event)
      )
      if (!reported) {
        violations.push(
          `resync: ${wiped.id} was wiped at ${expectation.op} while ${partner.id} held state for it ` +
            `(acknowledged lanes ${JSON.stringify(held.acknowledged)}, received lanes ${
              JSON.stringify(held.received)
            }); ${
              linked ? "they linked again" : `${partner.id} received from its new life`
            }, and neither reported Resynchronised`
        )
      }
    }
    return { violations, checked }
  })
