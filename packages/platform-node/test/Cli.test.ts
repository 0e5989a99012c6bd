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
import * as FileSystem from "@effect/platform/FileSystem"
import { afterEach, assert, beforeAll, describe, it, vi } from "@effect/vitest"
import { StoreUnusableError } from "@intersession/core/Backend"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { execFile } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import * as Cli from "../src/Cli.js"
import { runInProcess } from "./CliKit.js"

const version = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string })
  .version
const bin = fileURLToPath(new URL("../bin/intersession.js", import.meta.url))
const root = fileURLToPath(new URL("../../..", import.meta.url))

const ESC = "\u001b"

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

  it.effect("a --peer on port 0, the peer's own id as a --peer, or a peer given twice: refused, saying why", () =>
    Effect.gen(function*() {
      const peer = (...peers: ReadonlyArray<string>) =>
        runInProcess(
          "peer",
          "--id",
          "alice",
          "--listen",
          "127.0.0.1:0",
          ...peers.flatMap((value) => ["--peer", value]),
          "--db",
          "unused.db"
        )
      const cases = [
        [["bob=127.0.0.1:0"], "--peer bob=127.0.0.1:0: port 0 cannot be dialled; give the port bob listens on"],
        [
          ["bob=127.0.0.1:7002", "alice=127.0.0.1:7001"],
          "--peer alice=…: alice is this peer's own id (--id); list the other peers only"
        ],
        [["bob=127.0.0.1:7002", "bob=127.0.0.1:7003"], "--peer bob=… is given twice: give each peer once"]
      ] as const
      for (const [peers, expected] of cases) {
        const { exit, stderr, stdout } = yield* peer(...peers)
        assert.isTrue(Exit.isFailure(exit), peers.join(" "))
        if (Exit.isFailure(exit)) {
          const error = Cause.failureOption(exit.cause)
          assert.isTrue(error._tag === "Some" && ValidationError.isValidationError(error.value), String(exit.cause))
        }
        assert.strictEqual(stdout, "")
        assert.include(stderr, expected)
        console.log(`[cli] ${peers.join(" ")}: ${stderr.trim()}`)
      }
    }))
})

/** The error `Cli.run` failed with, which the bin prints as it is (see bin.ts). */
const failure = (exit: Exit.Exit<unknown, unknown>) =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

describe("Cli peer, when it cannot start", () => {
  afterEach(() => {
    vi.unstubAllEnvs()
  })

  /** `intersession peer` as alice, with a key, listening on `listen`, her store at `db`. */
  const runPeer = (listen: string, db: string) => {
    vi.stubEnv("INTERSESSION_KEY", "the key of the test deployment")
    return runInProcess("peer", "--id", "alice", "--listen", listen, "--peer", "bob=127.0.0.1:1", "--db", db)
  }

  const tempDirectory = Effect.flatMap(
    FileSystem.FileSystem,
    (fs) => fs.makeTempDirectoryScoped({ prefix: "intersession-cli-" })
  ).pipe(Effect.provide(NodeContext.layer))

  it.scopedLive("a store that cannot be used: the store's error, with its reason", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const db = Path.join(directory, "alice.db")
      writeFileSync(db, "not a database at all\n".repeat(50))
      const error = failure((yield* runPeer("127.0.0.1:0", db)).exit)
      if (!(error instanceof StoreUnusableError)) {
        return assert.fail(`expected StoreUnusableError, got ${String(error)}`)
      }
      console.log(`[cli] unusable store: ${error.message}`)
      assert.strictEqual(
        error.message,
        `Store ${db} cannot be used, it is not a database (SQLITE_NOTADB: file is not a database); ` +
          "nothing was written to it"
      )
    }))

  it.scopedLive("an address in use: cannot listen, because the address is in use", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      const server = createServer()
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
      )
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      const error = failure((yield* runPeer(`127.0.0.1:${port}`, Path.join(directory, "alice.db"))).exit)
      if (!(error instanceof Cli.ListenError)) return assert.fail(`expected ListenError, got ${String(error)}`)
      console.log(`[cli] address in use: ${error.message}`)
      assert.include(error.message, `cannot listen on 127.0.0.1:${port}`)
      assert.include(error.message, "the address is already in use")
      assert.include(error.message, "(EADDRINUSE)")
    }))

  it.scopedLive("an address of another host: cannot listen, because it is not this machine's", () =>
    Effect.gen(function*() {
      const directory = yield* tempDirectory
      // 192.0.2.1 is TEST-NET-1 (RFC 5737): never an address of this machine.
      const error = failure((yield* runPeer("192.0.2.1:7001", Path.join(directory, "alice.db"))).exit)
      if (!(error instanceof Cli.ListenError)) return assert.fail(`expected ListenError, got ${String(error)}`)
      console.log(`[cli] not this host: ${error.message}`)
      assert.include(error.message, "cannot listen on 192.0.2.1:7001")
      assert.include(error.message, "the host is not an address of this machine (EADDRNOTAVAIL)")
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

  it.live("a store that cannot be used: its error on stderr as it is, and exit code 1", () =>
    Effect.gen(function*() {
      const directory = mkdtempSync(Path.join(tmpdir(), "intersession-cli-"))
      const db = Path.join(directory, "alice.db")
      writeFileSync(db, "not a database at all\n".repeat(50))
      const args = ["peer", "--id", "alice", "--listen", "127.0.0.1:0", "--peer", "bob=127.0.0.1:1", "--db", db]
      const { exitCode, stderr } = yield* runBin(args, { INTERSESSION_KEY: "the key of the test deployment" }).pipe(
        Effect.ensuring(Effect.sync(() => rmSync(directory, { recursive: true, force: true })))
      )
      assert.strictEqual(exitCode, 1)
      assert.strictEqual(
        stderr.trim(),
        `Store ${db} cannot be used, it is not a database (SQLITE_NOTADB: file is not a database); ` +
          "nothing was written to it"
      )
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
