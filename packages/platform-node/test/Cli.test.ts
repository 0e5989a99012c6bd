/**
 * The `intersession` program: its help (the public commands, never the demo's internal `demo-peer`), no colours
 * when the output is not a terminal or `NO_COLOR` is set, plain errors for bad arguments, the package's version.
 *
 * The first suite runs `Cli.run` from the sources in this process. The second runs the published program, the bin
 * under plain node on `dist/`, as child processes: it builds the packages first (`tsc -b`, incremental).
 */
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Command from "@effect/platform/Command"
import { afterEach, assert, beforeAll, describe, it, vi } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Stream from "effect/Stream"
import { execFile } from "node:child_process"
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import * as Cli from "../src/Cli.js"

const version = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string })
  .version
const bin = fileURLToPath(new URL("../bin/intersession.js", import.meta.url))
const root = fileURLToPath(new URL("../../..", import.meta.url))

const ESC = "\u001b"

/** What `Cli.run` printed to stdout and stderr for the arguments, and how it ended. */
const runInProcess = (...args: ReadonlyArray<string>) =>
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

/** The lines of the USAGE section of a help. */
const usageLines = (help: string) => help.split("\n").filter((line) => line.startsWith("$ "))

/** Makes this process's stdout and stderr say they are terminals, until `afterEach` puts them back. */
const restores: Array<() => void> = []
const asTerminals = () => {
  for (const stream of [process.stdout, process.stderr]) {
    const before = Object.getOwnPropertyDescriptor(stream, "isTTY")
    Object.defineProperty(stream, "isTTY", { value: true, configurable: true, writable: true })
    restores.push(() => {
      if (before === undefined) Reflect.deleteProperty(stream, "isTTY")
      else Object.defineProperty(stream, "isTTY", before)
    })
  }
}

describe("Cli, in process", () => {
  afterEach(() => {
    vi.unstubAllEnvs()
    for (const restore of restores.splice(0)) restore()
  })

  it.effect("the program's help gives the usage of peer and demo, and hides demo-peer", () =>
    Effect.gen(function*() {
      for (const args of [["--help"], ["-h"], []]) {
        const { exit, stderr, stdout } = yield* runInProcess(...args)
        assert.isTrue(Exit.isSuccess(exit), `${args.join(" ")}: ${stderr}`)
        const usage = usageLines(stdout)
        assert.isTrue(usage.some((line) => line.startsWith("$ intersession peer --id text --listen text")), stdout)
        assert.isTrue(usage.some((line) => line.startsWith("$ intersession demo [--messages integer]")), stdout)
        assert.include(stdout, "Run a peer: lines on stdin are sent")
        assert.include(stdout, "Two peers, kill -9s while messages are in flight")
        assert.include(stdout, `intersession ${version}`)
        assert.notInclude(stdout, "demo-peer")
      }
    }))

  it.effect("a command's help gives its usage under the program's name, and its options", () =>
    Effect.gen(function*() {
      for (const args of [["peer", "--help"], ["--help", "peer"], ["peer", "-h"]]) {
        const { stdout } = yield* runInProcess(...args)
        assert.deepStrictEqual(usageLines(stdout).map((line) => line.split(" ").slice(0, 4).join(" ")), [
          "$ intersession peer --id"
        ])
        assert.include(stdout, "where to listen, as host:port")
        assert.notInclude(stdout, "demo-peer")
      }
      const demo = yield* runInProcess("demo", "--help")
      assert.isTrue(usageLines(demo.stdout)[0]?.startsWith("$ intersession demo [--messages integer]"), demo.stdout)
      assert.include(demo.stdout, "seed of the kill schedule")
    }))

  it.effect("on a terminal, the help and the errors are coloured", () =>
    Effect.gen(function*() {
      asTerminals()
      vi.stubEnv("NO_COLOR", "")
      vi.stubEnv("TERM", "xterm-256color")
      assert.include((yield* runInProcess("--help")).stdout, ESC)
      assert.include((yield* runInProcess("peer", "--help")).stdout, ESC)
    }))

  it.effect("with NO_COLOR set, the help and the errors have no escape sequences, even on a terminal", () =>
    Effect.gen(function*() {
      asTerminals()
      vi.stubEnv("NO_COLOR", "1")
      vi.stubEnv("TERM", "xterm-256color")
      for (const args of [["--help"], ["peer", "--help"], ["demo", "--help"], ["peer", "--id", "A"]]) {
        const { stderr, stdout } = yield* runInProcess(...args)
        assert.isAbove(stdout.length + stderr.length, 0, args.join(" "))
        assert.notInclude(stdout, ESC, args.join(" "))
        assert.notInclude(stderr, ESC, args.join(" "))
      }
    }))

  it.effect("an invalid argument fails with a ValidationError, after a plain sentence on stderr", () =>
    Effect.gen(function*() {
      const { exit, stderr, stdout } = yield* runInProcess(
        "peer",
        "--id",
        "A",
        "--listen",
        "nowhere",
        "--peer",
        "B=127.0.0.1:1",
        "--db",
        "a.db"
      )
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const error = Cause.failureOption(exit.cause)
        assert.isTrue(error._tag === "Some" && ValidationError.isValidationError(error.value), String(exit.cause))
      }
      assert.strictEqual(stdout, "")
      assert.include(stderr, "\"nowhere\" is not host:port")
      assert.notInclude(stderr, ESC)
    }))

  it.effect("an unknown command names the public commands only", () =>
    Effect.gen(function*() {
      const { exit, stderr } = yield* runInProcess("bogus")
      assert.isTrue(Exit.isFailure(exit))
      assert.include(stderr, "use one of 'peer', 'demo'")
      assert.notInclude(stderr, "demo-peer")
    }))

  it.effect("demo-peer, hidden from the help, still parses its options when the demo starts it", () =>
    Effect.gen(function*() {
      const { exit, stderr } = yield* runInProcess("demo-peer", "--id", "A")
      assert.isTrue(Exit.isFailure(exit))
      // Its own options are missing, rather than the command being unknown.
      assert.include(stderr, "Expected to find option: '--listen'")
      assert.notInclude(stderr, "Invalid subcommand")
    }))

  it.effect("--version prints the package's version", () =>
    Effect.gen(function*() {
      const { stdout } = yield* runInProcess("--version")
      assert.strictEqual(stdout.trim(), version)
    }))
})

/** Runs the built program with `env` added to this process's environment, its output piped. */
const runBin = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  Effect.gen(function*() {
    const child = yield* Command.make(process.execPath, bin, ...args).pipe(Command.env(env), Command.start)
    const text = (stream: Stream.Stream<Uint8Array, unknown>) =>
      stream.pipe(Stream.decodeText(), Stream.runCollect, Effect.map((chunks) => Chunk.join(chunks, "")))
    const [stdout, stderr, exitCode] = yield* Effect.all([text(child.stdout), text(child.stderr), child.exitCode], {
      concurrency: "unbounded"
    })
    return { stdout, stderr, exitCode: Number(exitCode) }
  }).pipe(Effect.scoped, Effect.provide(NodeContext.layer))

describe("Cli, the built program under plain node (builds the packages first)", () => {
  beforeAll(async () => {
    const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc")
    await promisify(execFile)(process.execPath, [tsc, "-b", "tsconfig.build.json"], { cwd: root })
  }, 300_000)

  it.live("--help with stdout piped: the usage of peer and demo, no demo-peer, no colour", () =>
    Effect.gen(function*() {
      // NO_COLOR empty counts as unset (no-color.org): what takes the colours out here is the pipe.
      const { exitCode, stderr, stdout } = yield* runBin(["--help"], { NO_COLOR: "" })
      assert.strictEqual(exitCode, 0, stderr)
      assert.isTrue(usageLines(stdout).some((line) => line.startsWith("$ intersession peer --id text")), stdout)
      assert.isTrue(usageLines(stdout).some((line) => line.startsWith("$ intersession demo")), stdout)
      assert.notInclude(stdout, "demo-peer")
      assert.notInclude(stdout, ESC)
    }))

  it.live("peer --help with NO_COLOR=1: no colour", () =>
    Effect.gen(function*() {
      const { exitCode, stdout } = yield* runBin(["peer", "--help"], { NO_COLOR: "1" })
      assert.strictEqual(exitCode, 0)
      assert.include(stdout, "$ intersession peer --id text")
      assert.notInclude(stdout, ESC)
    }))

  it.live("an invalid argument: a plain error on stderr and exit code 1", () =>
    Effect.gen(function*() {
      const { exitCode, stderr, stdout } = yield* runBin(["demo", "--messages", "many"], { NO_COLOR: "" })
      assert.strictEqual(exitCode, 1)
      assert.strictEqual(stdout, "")
      assert.include(stderr, "'many' is not a integer")
      assert.notInclude(stderr, ESC)
    }))

  it.live("--version prints the package's version, read from package.json beside dist/", () =>
    Effect.gen(function*() {
      const { exitCode, stdout } = yield* runBin(["--version"], {})
      assert.strictEqual(exitCode, 0)
      assert.strictEqual(stdout.trim(), version)
    }))

  it.live("the demo runs its hidden demo-peer processes and reads their stores", () =>
    Effect.gen(function*() {
      const { exitCode, stderr, stdout } = yield* runBin(["demo", "--messages", "20", "--kills", "0"], {})
      assert.strictEqual(exitCode, 0, `${stdout}\n${stderr}`)
      assert.match(stdout, /delivered\s+20\s+20/)
      assert.include(stdout, "every promise held: nothing lost, duplicated or out of order")
    }), 120_000)
})
