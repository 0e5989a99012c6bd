/**
 * A receiving peer in a process of its own: the parent starts it, streams to it, and reads what it counted. The
 * child prints `READY` once its engine runs and `DONE <counts>` once it has every message, then runs until the
 * parent closes its stdin, so that the sender's last acknowledgements still arrive.
 */
import type * as IlmConfig from "@intersession/core/IlmConfig"
import type { PeerId } from "@intersession/core/PeerId"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { spawn } from "node:child_process"
import { createInterface } from "node:readline"
import type { Counts } from "../Result.js"
import * as Runtime from "../runtime.js"
import type { TcpSetup } from "./peers.js"

export interface Options {
  /** Messages the receiver waits for, with indices 0 … expected-1. */
  readonly expected: number
  /** Messages below this index are not timed: warm-up. */
  readonly timedFrom?: number | undefined
  readonly config?: IlmConfig.Options | undefined
}

/** What the receiver counted, with the latency of the timed messages from their payload's clock. */
export interface Report extends Counts {
  readonly latencyP50Micros: number
  readonly latencyP99Micros: number
}

export interface Receiver {
  /** Resolves once the receiver has every message. */
  readonly done: Effect.Effect<Report>
}

/** The child's arguments. */
export interface Arguments {
  readonly setup: TcpSetup
  readonly id: PeerId
  readonly options: Options
}

/** Node flags for the receiver from `BENCH_RECEIVER_NODE_ARGS` (`--cpu-prof` profiles it, say). */
const receiverNodeArgs = process.env.BENCH_RECEIVER_NODE_ARGS?.split(" ").filter((arg) => arg !== "") ?? []

/** Starts the receiver process, run as this process runs (its bundle, or tsx); the scope closing ends it. */
export const start = (
  setup: TcpSetup,
  id: PeerId,
  options: Options
): Effect.Effect<Receiver, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const ready = yield* Deferred.make<void, Error>()
    const done = yield* Deferred.make<Report>()
    const args: Arguments = { setup, id, options }
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn(process.execPath, [
          ...receiverNodeArgs,
          ...Runtime.nodeArgs("receiver", Runtime.currentBundle),
          JSON.stringify(args)
        ], {
          stdio: ["pipe", "pipe", "inherit"]
        })
      ),
      (child) => Effect.sync(() => child.stdin.end())
    )
    createInterface({ input: child.stdout }).on("line", (line) => {
      if (line === "READY") Deferred.unsafeDone(ready, Effect.void)
      else if (line.startsWith("DONE ")) Deferred.unsafeDone(done, Effect.succeed(JSON.parse(line.slice(5))))
    })
    child.on("exit", (code) =>
      Deferred.unsafeDone(ready, Effect.fail(new Error(`the receiver process exited with code ${code}`))))
    yield* Deferred.await(ready)
    return { done: Deferred.await(done) }
  })
