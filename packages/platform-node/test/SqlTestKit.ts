/**
 * Test helpers shared by the SQL backend tests: child processes that speak one JSON line at a time, and a round trip
 * through the backend's statements of every row count.
 */
import { assert } from "@effect/vitest"
import type { Backend } from "@intersession/core/Backend"
import * as PeerId from "@intersession/core/PeerId"
import * as StreamKey from "@intersession/core/StreamKey"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import { spawn } from "node:child_process"
import { createRequire } from "node:module"
import * as Path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const here = Path.dirname(fileURLToPath(import.meta.url))

/**
 * The repository's `tsx` loader, so `node` runs a TypeScript file itself (and the workspace's packages from their
 * sources, by the `@intersession/source` export condition): one process, which SIGKILL kills for real
 * (the `tsx` command would run the script in a child process of its own).
 */
const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href

/** The path of a script beside this file. */
export const script = (name: string) => Path.join(here, name)

/** What a child process printed, one parsed JSON line at a time; its exit is the line `{ result: "exited" }`. */
export interface ChildLine {
  readonly result: string
  readonly detail?: string | undefined
  readonly [key: string]: unknown
}

export interface Child {
  readonly pid: number
  /** The next line the child prints; a child that exits first yields `{ result: "exited", detail: stderr }`. */
  readonly next: Effect.Effect<ChildLine>
  /** Writes a line to the child's standard input. */
  readonly write: (line: string) => Effect.Effect<void>
  /** Kills the child with SIGKILL, as a crash would, and waits until it is gone. */
  readonly kill: Effect.Effect<void>
}

/**
 * Starts `node --import tsx <script> <args>` for the scope; a child still running when the scope closes is killed.
 * `as` runs it as another user (this process must be root).
 */
export const spawnScript = (
  file: string,
  args: ReadonlyArray<string>,
  as?: { readonly uid: number; readonly gid: number }
) =>
  Effect.gen(function*() {
    const lines = yield* Queue.unbounded<ChildLine>()
    let exited: Promise<void> | undefined
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const child = spawn(process.execPath, [
          "--import",
          tsxLoader,
          "--conditions=@intersession/source",
          file,
          ...args
        ], {
          stdio: ["pipe", "pipe", "pipe"],
          ...as
        })
        let stdout = ""
        let stderr = ""
        child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
          stdout += chunk
          let end = stdout.indexOf("\n")
          while (end >= 0) {
            const line = stdout.slice(0, end).trim()
            stdout = stdout.slice(end + 1)
            if (line.startsWith("{")) Queue.unsafeOffer(lines, JSON.parse(line) as ChildLine)
            end = stdout.indexOf("\n")
          }
        })
        child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
          stderr += chunk
        })
        exited = new Promise((resolve) =>
          child.on("close", (code, signal) => {
            Queue.unsafeOffer(lines, {
              result: "exited",
              code,
              signal,
              detail: `code ${code} signal ${signal}: ${stderr}`
            })
            resolve()
          })
        )
        return child
      }),
      (child) =>
        Effect.promise(() => {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
          return exited ?? Promise.resolve()
        })
    )
    return {
      pid: child.pid ?? -1,
      next: Queue.take(lines).pipe(
        Effect.timeoutTo({
          duration: Duration.seconds(30),
          onTimeout: () => ({ result: "timeout" }) as ChildLine,
          onSuccess: (line) => line
        })
      ),
      write: (line) =>
        Effect.async<void>((resume) => {
          child.stdin.write(`${line}\n`, () => resume(Effect.void))
        }),
      kill: Effect.promise(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
        return exited ?? Promise.resolve()
      })
    } satisfies Child
  })

/** Builds a layer in a scope of its own, so a test can close it when it chooses (a stop, or a crash). */
export const buildScoped = <ROut, E, RIn>(layer: Layer.Layer<ROut, E, RIn>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(layer, scope)
    return { context, close: Scope.close(scope, Exit.void) }
  })

/**
 * Appends, acknowledges and commits receive states in batches whose sizes straddle the SQL backend's statement row
 * counts (powers of two up to 1,024, batches of one statement or several), over one stream or many, and checks every
 * seq, payload and state they leave. Fails the test with the first difference.
 */
export const rowCountsRoundTrip = (backend: Backend["Type"]) =>
  Effect.gen(function*() {
    const peers = [PeerId.make("A"), PeerId.make("C")]
    const encode = (value: string) => new TextEncoder().encode(value)
    const decode = (payload: Uint8Array) => new TextDecoder().decode(payload)
    /** Per stream: its peer and lane, its next seq, and the payload of each seq stored. */
    const streams = new Map<
      StreamKey.StreamKey,
      { peer: PeerId.PeerId; lane: string; next: number; payloads: Array<string> }
    >()
    // [messages, streams they spread over]
    const batches: ReadonlyArray<readonly [number, number]> = [
      [1, 1],
      [2, 2],
      [3, 1],
      [17, 17],
      [255, 3],
      [1024, 1],
      [1025, 1025],
      [2100, 700]
    ]
    for (const [b, [size, spread]] of batches.entries()) {
      const batch = Array.from({ length: size }, (_, i) => ({
        peer: peers[i % 2]!,
        lane: `l${i % spread}`,
        payload: encode(`${b}/${i}`)
      }))
      const expected = batch.map((message) => {
        const key = StreamKey.make(message.peer, message.lane)
        let stream = streams.get(key)
        if (stream === undefined) {
          stream = { peer: message.peer, lane: message.lane, next: 1, payloads: [] }
          streams.set(key, stream)
        }
        stream.payloads.push(decode(message.payload))
        return stream.next++
      })
      assert.deepStrictEqual(yield* backend.append(batch, b + 1), expected, `seqs of batch ${b}`)
    }
    // Every payload of a sample of the streams (reading each of them would make the test slow on PostgreSQL).
    const sample = Array.from(streams.values()).filter((_, i) => i < 8 || i % 7 === 0)
    for (const stream of sample) {
      const stored = yield* backend.read(stream.peer, stream.lane, 1, 10_000)
      assert.deepStrictEqual(stored.map((m) => m.seq), stream.payloads.map((_, i) => i + 1))
      assert.deepStrictEqual(stored.map((m) => decode(m.payload)), stream.payloads)
    }

    // Acknowledgements of one stream, of the next three, then of all the others (over a thousand): each up to the
    // middle of its seqs, so every one of them changes what the stream holds.
    const all = Array.from(streams.values())
    const upTo = (stream: { readonly next: number }) => Math.ceil((stream.next - 1) / 2)
    for (const [from, to] of [[0, 1], [1, 4], [4, all.length]] as const) {
      yield* backend.acknowledge(
        all.slice(from, to).map((stream) => ({
          peer: stream.peer,
          lane: stream.lane,
          upTo: upTo(stream)
        }))
      )
    }
    const { streams: outbound } = yield* backend.outbound
    assert.strictEqual(outbound.length, all.length)
    for (const summary of outbound) {
      const stream = streams.get(StreamKey.make(summary.peer, summary.lane))!
      assert.deepStrictEqual([summary.firstPending, summary.nextSeq], [upTo(stream) + 1, stream.next], stream.lane)
    }
    for (const stream of sample) {
      const firstPending = upTo(stream) + 1
      const pending = yield* backend.read(stream.peer, stream.lane, 1, 10_000)
      assert.deepStrictEqual(pending.map((m) => m.seq), stream.payloads.map((_, i) => i + 1).slice(firstPending - 1))
    }

    // Receive states: one, then five, then 1,100 (the last per stream wins), each replacing the one before.
    for (const count of [1, 5, 1100]) {
      yield* backend.commitReceived(Array.from({ length: count }, (_, i) => ({
        peer: peers[i % 2]!,
        lane: `in${i % 1030}`,
        incarnation: backend.incarnation,
        delivered: count * 10_000 + i,
        runs: [{ run: count, from: i + 1 }]
      })))
    }
    const received = yield* backend.received
    assert.strictEqual(received.length, 1030)
    for (const state of received) {
      // Lanes in0 to in69 were given twice in the last commit: the later state, i = lane + 1030, is the one kept.
      const lane = Number(state.lane.slice(2))
      const i = lane < 70 ? lane + 1030 : lane
      assert.deepStrictEqual(
        { peer: state.peer, delivered: state.delivered, runs: state.runs },
        { peer: peers[i % 2], delivered: 1100 * 10_000 + i, runs: [{ run: 1100, from: i + 1 }] },
        state.lane
      )
    }
  })
