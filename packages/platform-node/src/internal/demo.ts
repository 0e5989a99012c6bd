/**
 * `intersession demo`: two peer processes over TCP with SQLite files, streaming messages both ways while they are
 * killed with SIGKILL mid-transfer and restarted; then a check of every promise against what each application
 * recorded, and of whether the kills landed while messages were in flight between the two.
 *
 * @internal
 */
import * as Command from "@effect/platform/Command"
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as SqlClient from "@effect/sql/SqlClient"
import * as PeerId from "@intersession/core/PeerId"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { randomBytes } from "node:crypto"
import { createServer } from "node:net"
import { fileURLToPath } from "node:url"
import * as SqliteBackend from "../SqliteBackend.js"
import type { Progress, Started } from "./demoPeer.js"
import { defaultWindow, Line, receivedTable } from "./demoPeer.js"

/** @internal */
export interface Options {
  /** Messages each peer sends to the other. */
  readonly messages: number
  /** SIGKILLs, spread over both peers and over the transfer. */
  readonly kills: number
  readonly seed: number
  /** At most this many of a peer's messages unacknowledged at once (at least 1; `defaultWindow` when absent). */
  readonly window?: number | undefined
  /** Gives up when the run takes longer than this. */
  readonly timeout: Duration.DurationInput
  /** Called about twice a second with the state of the run. */
  readonly onProgress: (progress: RunProgress) => Effect.Effect<void>
}

/** @internal */
export interface RunProgress {
  readonly peers: ReadonlyArray<Progress & { readonly restarts: number; readonly up: boolean }>
  readonly kills: number
  /** Of the kills whose restart was seen, those that landed mid-transfer. */
  readonly killsMidTransfer: number
  readonly elapsedMillis: number
}

/** What one direction of the run did. */
export interface Direction {
  readonly from: string
  readonly to: string
  readonly sent: number
  readonly delivered: number
  readonly lost: number
  readonly duplicated: number
  readonly outOfOrder: number
}

/**
 * What the demo knows of one SIGKILL, from the lines the two peers printed. Each number errs on the side of "nothing
 * in flight": counts of accepted messages are lower bounds, counts of delivered ones exact or upper bounds.
 */
export interface Kill {
  readonly victim: string
  readonly other: string
  /** Messages the victim's store had accepted for the other when it died, exactly: what its next process found. */
  readonly victimSent: number
  /** Messages the other's store had accepted for the victim at the kill, at least: its last report before it. */
  readonly otherSent: number
  /** Messages the victim had delivered when it died, exactly: what its next process found on starting. */
  readonly victimReceived: number
  /** Messages the other had delivered at the kill, at least: its last report before it. */
  readonly otherReceivedBefore: number
  /** Messages the other had delivered at the kill, at most: its first report taken after it. */
  readonly otherReceivedAfter: number
}

/** The messages accepted by `send` and not yet delivered at a kill, each way, at least. */
export const inFlight = (kill: Kill): { readonly toVictim: number; readonly fromVictim: number } => ({
  toVictim: Math.max(0, kill.otherSent - kill.victimReceived),
  fromVictim: Math.max(0, kill.victimSent - kill.otherReceivedAfter)
})

/**
 * A kill landed mid-transfer when, at the SIGKILL, the transfer had started (something was delivered, or the victim
 * had sent something) and at least one message accepted by `send`, either way between the two peers, was not yet
 * delivered. Judged from the bounds of a {@link Kill}, it may miss a kill that did, and never counts one that did not.
 */
export const landedMidTransfer = (kill: Kill): boolean => {
  const started = kill.victimSent > 0 || kill.victimReceived > 0 || kill.otherReceivedBefore > 0
  const { fromVictim, toVictim } = inFlight(kill)
  return started && (toVictim > 0 || fromVictim > 0)
}

/** @internal */
export interface Report {
  readonly directions: ReadonlyArray<Direction>
  readonly kills: number
  /** How many of the kills landed mid-transfer. */
  readonly killsMidTransfer: number
  /** Every kill, in order. */
  readonly killLog: ReadonlyArray<Kill & { readonly midTransfer: boolean }>
  readonly restarts: Readonly<Record<string, number>>
  readonly elapsedMillis: number
  readonly messagesPerSecond: number
  /** What went wrong, one sentence each; empty when the run passed. */
  readonly failures: ReadonlyArray<string>
  readonly ok: boolean
}

/**
 * Whether a run passed, as the list of what went wrong: in each direction every message sent, none lost, duplicated
 * or out of order; and, when there were kills, at least one landed mid-transfer (else they proved nothing).
 */
export const verdict = (
  expected: { readonly messages: number; readonly kills: number },
  directions: ReadonlyArray<Direction>,
  killsMidTransfer: number
): ReadonlyArray<string> => {
  const failures: Array<string> = []
  for (const direction of directions) {
    const broken = [
      direction.sent === expected.messages ? "" : `${direction.sent} of ${expected.messages} sent`,
      direction.lost === 0 ? "" : `${direction.lost} lost`,
      direction.duplicated === 0 ? "" : `${direction.duplicated} duplicated`,
      direction.outOfOrder === 0 ? "" : `${direction.outOfOrder} out of order`
    ].filter((problem) => problem !== "")
    if (broken.length > 0) failures.push(`${direction.from}→${direction.to}: ${broken.join(", ")}`)
  }
  if (expected.kills > 0 && killsMidTransfer === 0) {
    failures.push(`no kill landed mid-transfer (0 of ${expected.kills}), so the kills proved nothing`)
  }
  return failures
}

/** @internal */
export class DemoError extends Data.TaggedError("DemoError")<{ readonly reason: string; readonly cause?: unknown }> {
  override get message(): string {
    return `The demo could not run: ${this.reason}`
  }
}

/** A port nothing listens on now, from the operating system. */
const freePort = Effect.async<number, DemoError>((resume) => {
  const server = createServer()
  server.once("error", (cause) => resume(Effect.fail(new DemoError({ reason: "no free port", cause }))))
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(port > 0 ? Effect.succeed(port) : Effect.fail(new DemoError({ reason: "no free port" }))))
  })
})

// Peers run as this module runs: the built JavaScript under plain node, or, in the library's own repository, the
// TypeScript sources through tsx (resolved from this package's directory).
const fromSources = import.meta.url.endsWith(".ts")
const peerCommand = fromSources
  ? ["--import", "tsx", "--conditions=@intersession/source", fileURLToPath(new URL("../bin.ts", import.meta.url))]
  : [fileURLToPath(new URL("../bin.js", import.meta.url))]
const packageDirectory = fileURLToPath(new URL("../..", import.meta.url))

interface PeerProcess {
  readonly id: PeerId.PeerId
  readonly args: ReadonlyArray<string>
  /** Its last report, from this process or an earlier one. */
  progress: Progress
  /** This process reported its progress at least once. */
  fresh: boolean
  /** What this process found in its store and its application's table when it started. */
  started: Deferred.Deferred<Started>
  restarts: number
  up: boolean
  running: { readonly process: CommandExecutor.Process; readonly scope: Scope.CloseableScope } | undefined
  stopped: Deferred.Deferred<void> | undefined
}

const decodeLine = Schema.decodeOption(Schema.parseJson(Line))

/** Starts the peer's process in a scope of its own, following its lines. */
const spawn = (peer: PeerProcess) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const process = yield* Command.make(globalThis.process.execPath, ...peerCommand, ...peer.args).pipe(
      Command.workingDirectory(packageDirectory),
      Command.start,
      Scope.extend(scope)
    )
    const stopped = yield* Deferred.make<void>()
    const started = yield* Deferred.make<Started>()
    peer.running = { process, scope }
    peer.stopped = stopped
    peer.started = started
    peer.fresh = false
    peer.up = true
    yield* process.stdout.pipe(
      Stream.decodeText(),
      Stream.splitLines,
      // A line cut short by a kill does not decode; the next process says it again.
      Stream.runForEach((line) =>
        Option.match(decodeLine(line), {
          onNone: () => Effect.void,
          onSome: (decoded) =>
            decoded._tag === "Started" ? Deferred.succeed(started, decoded) : Effect.sync(() => {
              peer.progress = decoded
              peer.fresh = true
            })
        })
      ),
      Effect.ensuring(Effect.andThen(Effect.sync(() => (peer.up = false)), Deferred.succeed(stopped, undefined))),
      Effect.forkIn(scope)
    )
    yield* process.stderr.pipe(Stream.runDrain, Effect.forkIn(scope))
    return process
  })

/** Stops a peer's process with `signal` (SIGKILL: no drain, no clean close) and waits until it is gone. */
const kill = (peer: PeerProcess, signal: "SIGKILL" | "SIGTERM") =>
  Effect.gen(function*() {
    const running = peer.running
    if (running === undefined) return
    peer.running = undefined
    yield* Effect.ignore(running.process.kill(signal))
    yield* Effect.ignore(running.process.exitCode)
    yield* Scope.close(running.scope, Exit.void)
    if (peer.stopped !== undefined) yield* Deferred.await(peer.stopped)
  })

/**
 * Reads what a peer's application recorded, in the order it recorded it, through the store the peer used: the peer's
 * process must be gone, since the store holds an exclusive lock on its file.
 */
const recorded = (db: string, source: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ readonly body: string }>`SELECT body FROM ${
      sql(receivedTable)
    } WHERE source = ${source} ORDER BY rowid`
    return rows.map((row) => Number(row.body))
  }).pipe(
    Effect.provide(SqliteBackend.layer({ filename: db })),
    Effect.mapError((cause) => new DemoError({ reason: `cannot read ${db}`, cause }))
  )

/** Every promise of protocol.md §1 for one direction: each of 1…sent delivered once, in order. */
export const check = (from: string, to: string, sent: number, bodies: ReadonlyArray<number>): Direction => {
  const seen = new Set<number>()
  let duplicated = 0
  let outOfOrder = 0
  let last = 0
  for (const body of bodies) {
    if (seen.has(body)) duplicated++
    else if (body < last) outOfOrder++
    seen.add(body)
    last = Math.max(last, body)
  }
  let lost = 0
  for (let i = 1; i <= sent; i++) if (!seen.has(i)) lost++
  return { from, to, sent, delivered: bodies.length, lost, duplicated, outOfOrder }
}

/**
 * A bound on a run, for its timeout: each kill waits for the restarted process to start (seconds on a busy machine)
 * and deliver again, and messages flow at some tens to hundreds a second.
 */
export const budget = (messages: number, kills: number): Duration.Duration =>
  Duration.seconds(60 + kills * 10 + messages / 10)

/**
 * How long the kills wait for the transfer to move before they give up aiming and kill at once: a stalled transfer
 * is killed too, and the count of kills mid-transfer says what those proved.
 */
const patienceMillis = 5000

/** How recent a report must be for the kills to aim by it. */
const freshMillis = 25

/** @internal */
export const run = (
  options: Options
): Effect.Effect<
  Report,
  DemoError,
  CommandExecutor.CommandExecutor | FileSystem.FileSystem | Path.Path | Scope.Scope
> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const dir = yield* fs.makeTempDirectoryScoped({ prefix: "intersession-demo-" }).pipe(
      Effect.mapError((cause) => new DemoError({ reason: "cannot make a temporary directory", cause }))
    )
    const random = Random.make(options.seed)
    const key = randomBytes(32).toString("hex")
    const keyFile = path.join(dir, "key")
    yield* fs.writeFileString(keyFile, key).pipe(
      Effect.mapError((cause) => new DemoError({ reason: "cannot write the key file", cause }))
    )
    const ids = [PeerId.make("A"), PeerId.make("B")] as const
    const ports = [yield* freePort, yield* freePort] as const
    const peers: Array<PeerProcess> = []
    for (const [i, id] of ids.entries()) {
      const other = 1 - i
      peers.push({
        id,
        args: [
          "demo-peer",
          "--id",
          id,
          "--listen",
          `127.0.0.1:${ports[i]}`,
          "--peer",
          `${ids[other]}=127.0.0.1:${ports[other]}`,
          "--db",
          path.join(dir, `${id}.db`),
          "--key-file",
          keyFile,
          "--count",
          String(options.messages),
          "--window",
          String(options.window ?? defaultWindow)
        ],
        progress: { _tag: "Progress", id, sent: 0, acknowledged: 0, received: 0, connected: false, at: 0 },
        fresh: false,
        started: yield* Deferred.make<Started>(),
        restarts: 0,
        up: false,
        running: undefined,
        stopped: undefined
      })
    }
    const spawnPeer = (peer: PeerProcess) =>
      Effect.mapError(spawn(peer), (cause) => new DemoError({ reason: `cannot start peer ${peer.id}`, cause }))

    const started = yield* Clock.currentTimeMillis
    const kills = yield* Ref.make(0)
    const killLog: Array<Kill & { readonly midTransfer: boolean }> = []
    const countMidTransfer = () => killLog.filter((kill) => kill.midTransfer).length
    const finished = (peer: PeerProcess) =>
      peer.progress.sent >= options.messages && peer.progress.received >= options.messages &&
      peer.progress.acknowledged >= peer.progress.sent
    /** Messages delivered so far, both ways, as last reported. */
    const delivered = () => peers.reduce((sum, peer) => sum + peer.progress.received, 0)
    const snapshot = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      return {
        peers: peers.map((peer) => ({ ...peer.progress, restarts: peer.restarts, up: peer.up })),
        kills: yield* Ref.get(kills),
        killsMidTransfer: countMidTransfer(),
        elapsedMillis: now - started
      } satisfies RunProgress
    })
    yield* Effect.addFinalizer(() => Effect.forEach(peers, (peer) => kill(peer, "SIGKILL"), { discard: true }))

    for (const peer of peers) yield* spawnPeer(peer)

    const reporter = yield* Effect.forkScoped(
      Effect.forever(Effect.zipRight(Effect.flatMap(snapshot, options.onProgress), Effect.sleep("500 millis")))
    )

    /**
     * Waits for a moment to kill `victim` mid-transfer. The transfer must be ready: both processes up, reporting and
     * connected, past `target` messages delivered, and moved on since the last restart (`mark`). Then the moment is
     * when one of them has just reported (within {@link freshMillis}) messages sent that the other had not delivered
     * when it last reported: a batch on its way. Returns anyway when everything is delivered (nothing can be in
     * flight any more), after {@link patienceMillis} of both reporting without a delivery (a stalled transfer), and
     * after {@link patienceMillis} of a ready transfer without such a moment.
     */
    const aim = (victim: PeerProcess, other: PeerProcess, target: number, mark: number) =>
      Effect.gen(function*() {
        let lastDelivered = delivered()
        let movedAt = yield* Clock.currentTimeMillis
        let readyAt: number | undefined
        const onItsWay = (from: PeerProcess, to: PeerProcess, now: number) =>
          from.progress.sent > to.progress.received && now - from.progress.at <= freshMillis
        while (!peers.every(finished)) {
          const now = yield* Clock.currentTimeMillis
          const total = delivered()
          const running = victim.up && other.up && victim.fresh && other.fresh
          // Patience runs while both processes report: a process takes seconds to start on a busy machine.
          if (total > lastDelivered || !running) {
            lastDelivered = total
            movedAt = now
          }
          const ready = running && victim.progress.connected && other.progress.connected && total >= target &&
            total > mark
          if (ready) readyAt ??= now
          if (ready && (onItsWay(other, victim, now) || onItsWay(victim, other, now))) return
          if (now - movedAt > patienceMillis || (readyAt !== undefined && now - readyAt > patienceMillis)) return
          yield* Effect.sleep("5 millis")
        }
      })

    /** Waits for a report `peer` took after `time`. */
    const reportAfter = (peer: PeerProcess, time: number) =>
      Effect.gen(function*() {
        while (peer.progress.at <= time) yield* Effect.sleep("10 millis")
      })

    // The chaos: the kills aim at evenly spread points of the transfer (messages delivered, both ways), each at a
    // random place of its share; each kills a random peer and restarts it after a random pause.
    const chaos = Effect.gen(function*() {
      const total = 2 * options.messages
      let mark = 0
      for (let i = 0; i < options.kills; i++) {
        const target = Math.max(1, Math.ceil((total * (i + (yield* random.nextRange(0.1, 0.9)))) / options.kills))
        const victimIndex = yield* random.nextIntBetween(0, peers.length)
        const victim = peers[victimIndex]!
        const other = peers[1 - victimIndex]!
        const pause = Duration.millis(yield* random.nextIntBetween(50, 500))
        if (peers.every(finished)) yield* Effect.sleep(pause)
        else yield* aim(victim, other, target, mark)

        const before = other.progress
        yield* kill(victim, "SIGKILL")
        // The victim is dead: the parent and the peers read the same wall clock, so a report the other took after
        // this moment counts at least what it had delivered at the kill.
        const killedAt = yield* Clock.currentTimeMillis
        yield* Ref.update(kills, (n) => n + 1)
        yield* Effect.all([Effect.sleep(pause), reportAfter(other, killedAt)], { concurrency: 2, discard: true })
        const otherReceivedAfter = other.progress.received
        victim.restarts++
        victim.progress = { ...victim.progress, connected: false }
        yield* spawnPeer(victim)
        mark = delivered()
        const atDeath = yield* Deferred.await(victim.started)
        const record: Kill = {
          victim: victim.id,
          other: other.id,
          victimSent: atDeath.sent,
          otherSent: before.sent,
          victimReceived: atDeath.received,
          otherReceivedBefore: before.received,
          otherReceivedAfter
        }
        killLog.push({ ...record, midTransfer: landedMidTransfer(record) })
      }
    })
    const allDone = Effect.gen(function*() {
      while (!peers.every(finished)) yield* Effect.sleep("100 millis")
    })
    yield* Effect.zipRight(chaos, allDone).pipe(
      Effect.timeoutFail({
        duration: options.timeout,
        onTimeout: () =>
          new DemoError({
            reason: `not finished after ${Duration.format(Duration.decode(options.timeout))}: ${
              peers.map((peer) => JSON.stringify(peer.progress)).join(", ")
            }`
          })
      })
    )
    const elapsedMillis = (yield* Clock.currentTimeMillis) - started
    yield* Fiber.interrupt(reporter)
    yield* options.onProgress(yield* snapshot)
    // Both processes are gone once killed: their stores are free to open.
    for (const peer of peers) yield* kill(peer, "SIGTERM")

    const directions: Array<Direction> = []
    for (const [i, peer] of peers.entries()) {
      const receiver = peers[1 - i]!
      const bodies = yield* recorded(path.join(dir, `${receiver.id}.db`), peer.id)
      directions.push(check(peer.id, receiver.id, peer.progress.sent, bodies))
    }
    const deliveredInAll = directions.reduce((sum, direction) => sum + direction.delivered, 0)
    const killed = yield* Ref.get(kills)
    const killsMidTransfer = countMidTransfer()
    const failures = verdict({ messages: options.messages, kills: killed }, directions, killsMidTransfer)
    return {
      directions,
      kills: killed,
      killsMidTransfer,
      killLog,
      restarts: Object.fromEntries(peers.map((peer) => [peer.id, peer.restarts])),
      elapsedMillis,
      messagesPerSecond: elapsedMillis > 0 ? Math.round((deliveredInAll * 1000) / elapsedMillis) : 0,
      failures,
      ok: failures.length === 0
    } satisfies Report
  })
