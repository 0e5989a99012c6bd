/**
 * Runs the command-line program in this process and captures what it prints.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Effect from "effect/Effect"
import * as Cli from "../src/Cli.js"

/** What `Cli.run` printed to stdout and stderr for the arguments, and how it ended. */
export const runInProcess = (...args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const stdout: Array<string> = []
    const stderr: Array<string> = []
    const console = yield* Effect.console
    const exit = yield* Cli.run(["node", "intersession", ...args]).pipe(
      Effect.withConsole({
        ...console,
        log: (...parts) => Effect.sync(() => void stdout.push(parts.join(" "))),
        error: (...parts) => Effect.sync(() => void stderr.push(parts.join(" ")))
      }),
      Effect.provide(NodeContext.layer),
      Effect.exit
    )
    return { stdout: stdout.join("\n"), stderr: stderr.join("\n"), exit }
  })
