/**
 * `intersession demo`: two peer processes over TCP with SQLite files, streaming messages both ways while they are
 * killed with SIGKILL and restarted at random moments; then a check of every promise against what each
 * application recorded.
 *
 * @internal
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as Command from "@effect/platform/Command"
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
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
import type { Progress } from "./demoPeer.js"
import { receivedTable } from "./demoPeer.js"

/** @internal */
export interface Options {
  /** Messages each peer sends to the other. */
  readonly messages: number
  /** SIGKILLs, spread over both peers. */
  readonly kills: number
  readonly seed: number
  /** Gives up when the run takes longer than this. */
  readonly timeout: Duration.DurationInput
  /** Called about twice a second with the state of the run. */
  readonly onProgress: (progress: RunProgress) => Effect.Effect<void>
}

/** @internal */
export interface RunProgress {
  readonly peers: ReadonlyArray<Progress & { readonly restarts: number; readonly up: boolean }>
  readonly kills: number
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

/** @internal */
export interface Report {
  readonly directions: ReadonlyArray<Direction>
  readonly kills: number
  readonly restarts: Readonly<Record<string, number>>
  readonly elapsedMillis: number
  readonly messagesPerSecond: number
  readonly ok: boolean
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

const binPath = fileURLToPath(new URL("../bin.ts", import.meta.url))
// Peers run the TypeScript sources through tsx, resolved from this package's directory.
const packageDirectory = fileURLToPath(new URL("../..", import.meta.url))

interface PeerProcess {
  readonly id: PeerId.PeerId
  readonly args: ReadonlyArray<string>
  progress: Progress
  restarts: number
  up: boolean
  running: { readonly process: CommandExecutor.Process; readonly scope: Scope.CloseableScope } | undefined
  stopped: Deferred.Deferred<void> | undefined
}

const decodeProgress = Schema.decodeOption(Schema.parseJson(Schema.Struct({
  id: Schema.String,
  sent: Schema.Number,
  received: Schema.Number,
  pending: Schema.Number,
  connected: Schema.Boolean
})))

/** Starts the peer's process in a scope of its own, following its progress lines. */
const spawn = (peer: PeerProcess) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const process = yield* Command.make(globalThis.process.execPath, "--import", "tsx", binPath, ...peer.args).pipe(
      Command.workingDirectory(packageDirectory),
      Command.start,
      Scope.extend(scope)
    )
    const stopped = yield* Deferred.make<void>()
    peer.running = { process, scope }
    peer.stopped = stopped
    peer.up = true
    yield* process.stdout.pipe(
      Stream.decodeText(),
      Stream.splitLines,
      // A line cut short by a kill does not decode; the next one says the same.
      Stream.runForEach((line) =>
        Effect.sync(() => Option.map(decodeProgress(line), (progress) => (peer.progress = progress)))
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

/** Reads what a peer's application recorded, in the order it recorded it. */
const recorded = (db: string, source: string) =>
  Effect.gen(function*() {
    const sql = yield* SqliteClient.make({ filename: db, readonly: true })
    const rows = yield* sql<{ readonly body: string }>`SELECT body FROM ${
      sql(receivedTable)
    } WHERE source = ${source} ORDER BY rowid`
    return rows.map((row) => Number(row.body))
  }).pipe(
    Effect.provide(Reactivity.layer),
    Effect.scoped,
    Effect.mapError((cause) => new DemoError({ reason: `cannot read ${db}`, cause }))
  )

/** Every promise of DESIGN §2 for one direction: each of 1…sent delivered once, in order. */
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
    const peers: Array<PeerProcess> = ids.map((id, i) => {
      const other = 1 - i
      return {
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
          String(options.messages)
        ],
        progress: { id, sent: 0, received: 0, pending: 0, connected: false },
        restarts: 0,
        up: false,
        running: undefined,
        stopped: undefined
      }
    })
    const spawnPeer = (peer: PeerProcess) =>
      Effect.mapError(spawn(peer), (cause) => new DemoError({ reason: `cannot start peer ${peer.id}`, cause }))

    const started = yield* Clock.currentTimeMillis
    const kills = yield* Ref.make(0)
    const finished = (peer: PeerProcess) =>
      peer.progress.sent >= options.messages && peer.progress.received >= options.messages &&
      peer.progress.pending === 0
    const snapshot = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      return {
        peers: peers.map((peer) => ({ ...peer.progress, restarts: peer.restarts, up: peer.up })),
        kills: yield* Ref.get(kills),
        elapsedMillis: now - started
      } satisfies RunProgress
    })
    yield* Effect.addFinalizer(() => Effect.forEach(peers, (peer) => kill(peer, "SIGKILL"), { discard: true }))

    for (const peer of peers) yield* spawnPeer(peer)

    const reporter = yield* Effect.forkScoped(
      Effect.forever(Effect.zipRight(Effect.flatMap(snapshot, options.onProgress), Effect.sleep("500 millis")))
    )

    // The chaos: kill a random peer at a random moment, then restart it after a random pause.
    const chaos = Effect.gen(function*() {
      for (let i = 0; i < options.kills; i++) {
        yield* Effect.sleep(Duration.millis(yield* random.nextIntBetween(200, 1200)))
        const victim = peers[yield* random.nextIntBetween(0, peers.length)]!
        yield* kill(victim, "SIGKILL")
        yield* Ref.update(kills, (n) => n + 1)
        yield* Effect.sleep(Duration.millis(yield* random.nextIntBetween(50, 500)))
        victim.restarts++
        victim.progress = { ...victim.progress, connected: false }
        yield* spawnPeer(victim)
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
    for (const peer of peers) yield* kill(peer, "SIGTERM")

    const directions: Array<Direction> = []
    for (const [i, peer] of peers.entries()) {
      const receiver = peers[1 - i]!
      const bodies = yield* recorded(path.join(dir, `${receiver.id}.db`), peer.id)
      directions.push(check(peer.id, receiver.id, peer.progress.sent, bodies))
    }
    const delivered = directions.reduce((sum, direction) => sum + direction.delivered, 0)
    return {
      directions,
      kills: yield* Ref.get(kills),
      restarts: Object.fromEntries(peers.map((peer) => [peer.id, peer.restarts])),
      elapsedMillis,
      messagesPerSecond: elapsedMillis > 0 ? Math.round((delivered * 1000) / elapsedMillis) : 0,
      ok: directions.every((direction) =>
        direction.lost === 0 && direction.duplicated === 0 && direction.outOfOrder === 0 &&
        direction.sent === options.messages
      )
    } satisfies Report
  })
