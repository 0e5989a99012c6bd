/**
 * Run by SqlDelivery.test.ts in a child process that kills itself for real (SIGKILL) at one step of a delivery. Two
 * peers on an in-memory hub, each on a SQLite store in `<dir>` (`a.db`, `b.db`): A has messages for B, and B's
 * application writes what it receives to a table in B's database, in the same transaction as B's receive state.
 *
 *   SqlDeliveryChild.ts <dir> <step> <seq>
 *
 * It prints {"result":"ready"} once loaded and starts when a line arrives on its standard input. B then kills its
 * own process at <step> of the delivery of message <seq>:
 *   deliver    inside deliver, after the application's insert
 *   commit     after the receive-state statement, before COMMIT
 *   committed  after the COMMIT of the receive state, before anything is acknowledged
 * A process that is still alive after 20 seconds prints {"result":"not killed"}.
 */
import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Path from "node:path"
import { type Faults, noFaults, receiverLayer, senderLayer } from "./SqlDeliveryKit.js"

const [dir = ".", step = "", seqArg = "0"] = process.argv.slice(2)
const at = Number(seqArg)

const report = (result: string, extra?: Record<string, unknown>) =>
  Effect.sync(() => process.stdout.write(`${JSON.stringify({ result, ...extra })}\n`))

/** The crash: nothing after this line runs, no finalizer, no COMMIT, no acknowledgement. */
const crash = Effect.zipRight(Effect.sync(() => process.kill(process.pid, "SIGKILL")), Effect.never)

const faults = (): Faults => {
  let armed = false
  switch (step) {
    case "deliver":
      return { ...noFaults, afterInsert: (message) => (message.seq === at ? crash : Effect.void) }
    case "commit":
      return {
        ...noFaults,
        afterReceiveState: (states) => (states.some((state) => state.delivered >= at) ? crash : Effect.void)
      }
    case "committed":
      return {
        ...noFaults,
        afterReceiveState: (states) =>
          Effect.sync(() => {
            if (states.some((state) => state.delivered >= at)) armed = true
          }),
        // The delivery transaction is the first to complete after its receive state was written.
        afterTransaction: Effect.suspend(() => (armed ? crash : Effect.void))
      }
    default:
      return noFaults
  }
}

/** Waits for a line on standard input: the parent starts the process early and says when to go. */
const go = Effect.async<void>((resume) => {
  process.stdin.once("data", () => resume(Effect.void))
})

const program = Effect.gen(function*() {
  yield* report("ready")
  yield* go
  const hub = yield* InMemoryNetwork.make()
  yield* Layer.build(senderLayer(hub, Path.join(dir, "a.db")))
  yield* Layer.build(receiverLayer(hub, Path.join(dir, "b.db"), faults()))
  yield* Effect.sleep(Duration.seconds(20))
  yield* report("not killed")
})

Effect.runPromise(Effect.scoped(program)).then(() => process.exit(0), (error) => {
  process.stdout.write(`${JSON.stringify({ result: "crashed", detail: String(error) })}\n`)
  process.exit(1)
})
