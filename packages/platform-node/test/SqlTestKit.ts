/**
 * Test helpers shared by the SQL backend tests: child processes that speak one JSON line at a time.
 */
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
 * The repository's `tsx` loader, so `node` runs a TypeScript file itself: one process, which SIGKILL kills for real
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
 */
export const spawnScript = (file: string, args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const lines = yield* Queue.unbounded<ChildLine>()
    let exited: Promise<void> | undefined
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const child = spawn(process.execPath, ["--import", tsxLoader, file, ...args], {
          stdio: ["pipe", "pipe", "pipe"]
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
