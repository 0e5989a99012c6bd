/**
 * Exactly-once delivery with the SQL backend (protocol.md §1, promise 3): the receiver's Delivery writes each message to
 * an application table through the store's own `SqlClient`, so the write commits or rolls back together with the
 * receive state. Faults strike at each step of a delivery, the receiver stops or dies, starts again, and the table
 * must hold every message once, in order — and at every stop, exactly the messages the store counts as delivered.
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as FileSystem from "@effect/platform/FileSystem"
import { assert, describe, it } from "@effect/vitest"
import { BackendError } from "@intersession/core/Backend"
import { DeliveryError } from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import { InMemoryNetwork, TestPeer } from "@intersession/testing"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Path from "node:path"
import * as SqliteBackend from "../src/SqliteBackend.js"
import {
  A,
  appRows,
  B,
  batchReceiverConfig,
  bodies,
  body,
  config,
  deliveredFromA,
  type Faults,
  noFaults,
  payload,
  pending,
  receiverLayer,
  senderLayer
} from "./SqlDeliveryKit.js"
import { buildScoped, script, spawnScript } from "./SqlTestKit.js"

/** `pnpm test:quick` sets this to leave out the test that kills real processes; `pnpm test` runs it. */
const skipKills = process.env.SKIP_PROCESS_KILLS === "1"
if (skipKills) console.warn("SKIPPED the SqlDelivery test that kills receiver processes: SKIP_PROCESS_KILLS=1")

const tempDirectory = Effect.flatMap(
  FileSystem.FileSystem,
  (fs) => fs.makeTempDirectoryScoped({ prefix: "intersession-delivery-" })
).pipe(Effect.provide(NodeFileSystem.layer))

/** What B's database holds while no engine runs: the application's rows and the delivered seq of A's stream. */
const inspect = (filename: string) =>
  Effect.scoped(Effect.provide(
    Effect.all({ rows: appRows, delivered: deliveredFromA }),
    SqliteBackend.layer({ filename })
  ))

/** Polls on the live clock until `condition` holds, for up to 15 seconds. */
const eventually = <E, R>(what: string, condition: Effect.Effect<boolean, E, R>) =>
  condition.pipe(
    Effect.repeat({ until: (done) => done, schedule: Schedule.spaced("10 millis") }),
    Effect.timeoutFail({ duration: "15 seconds", onTimeout: () => new Error(`not reached: ${what}`) })
  )

/**
 * Waits until every one of `total` messages is delivered and acknowledged, stops the receiver, and checks that its
 * database holds each message's row once, in order, and counts them all as delivered.
 */
const finishes = <E, R>(
  sender: TestPeer.Peer,
  receiver: { readonly rows: Effect.Effect<ReadonlyArray<string>, E, R>; readonly close: Effect.Effect<void> },
  filename: string,
  total: number
) =>
  Effect.gen(function*() {
    yield* eventually(
      "every message delivered and acknowledged",
      Effect.zipWith(sender.store.pendingCount, receiver.rows, (pending, rows) => pending === 0 && rows.length >= total)
    )
    yield* receiver.close
    const final = yield* inspect(filename)
    assert.deepStrictEqual(final.rows, bodies(total))
    assert.strictEqual(final.delivered, total)
  })

const count = 20
const faultAt = 7

type Step =
  | "deliver fails after the application's insert"
  | "deliver dies after the application's insert"
  | "the engine stops inside deliver, after the application's insert"
  | "the receive-state commit fails after its statement"

const steps: ReadonlyArray<Step> = [
  "deliver fails after the application's insert",
  "deliver dies after the application's insert",
  "the engine stops inside deliver, after the application's insert",
  "the receive-state commit fails after its statement"
]

/** A fault that strikes once, at `step` of the delivery of message `faultAt`, and says when it did. */
const makeFault = (step: Step) =>
  Effect.gen(function*() {
    const struck = yield* Deferred.make<void>()
    let fired = false
    const once = <E>(effect: Effect.Effect<void, E>) =>
      Effect.suspend(() => {
        if (fired) return Effect.void
        fired = true
        return Effect.zipRight(Deferred.succeed(struck, undefined), effect)
      })
    const faults: Faults = {
      ...noFaults,
      afterInsert: (message) => {
        if (message.seq !== faultAt) return Effect.void
        switch (step) {
          case "deliver fails after the application's insert":
            return once(Effect.fail(new DeliveryError({ reason: "injected failure" })))
          case "deliver dies after the application's insert":
            return once(Effect.die("injected defect"))
          case "the engine stops inside deliver, after the application's insert":
            return once(Effect.never)
          default:
            return Effect.void
        }
      },
      afterReceiveState: (states) =>
        step === "the receive-state commit fails after its statement" &&
          states.some((state) => state.peer === A && state.delivered >= faultAt)
          ? once(Effect.fail(new BackendError({ operation: "commitReceived", cause: "injected failure" })))
          : Effect.void
    }
    return { faults, struck: Deferred.await(struck) }
  })

describe("SqlBackend transactional delivery", () => {
  for (const step of steps) {
    it.scopedLive(`every message once, in order, when ${step}, then the receiver restarts`, () =>
      Effect.gen(function*() {
        const hub = yield* InMemoryNetwork.make()
        const sender = yield* TestPeer.make(A)
        const running = yield* TestPeer.start(hub, sender, config)
        for (let i = 1; i <= count; i++) yield* running.ilm.send(B, payload(i))
        const filename = Path.join(yield* tempDirectory, "b.db")

        const fault = yield* makeFault(step)
        const first = yield* buildScoped(receiverLayer(hub, filename, fault.faults))
        yield* fault.struck.pipe(Effect.timeoutFail({ duration: "15 seconds", onTimeout: () => new Error("no fault") }))
        if (step !== "the engine stops inside deliver, after the application's insert") {
          // The engine recovers from a failure by itself: let it finish, so a redelivery it should not have made
          // shows as a duplicate row.
          yield* eventually("the first run delivers everything", Effect.map(sender.store.pendingCount, (n) => n === 0))
        }
        yield* first.close

        // At the stop the application holds exactly what the store counts as delivered: no more, no less.
        const stopped = yield* inspect(filename)
        assert.deepStrictEqual(stopped.rows, bodies(stopped.delivered), "rows at the stop")
        if (step === "the engine stops inside deliver, after the application's insert") {
          assert.isBelow(stopped.delivered, faultAt, "the interrupted delivery was rolled back")
        }

        const second = yield* buildScoped(receiverLayer(hub, filename, noFaults))
        yield* finishes(sender, { rows: Effect.provide(appRows, second.context), close: second.close }, filename, count)
      }))
  }

  it.scopedLive.skipIf(skipKills)(
    `every message once, in order, when the receiver's process is killed inside deliver, before the commit and after it${
      skipKills ? " (skipped: SKIP_PROCESS_KILLS=1, as in pnpm test:quick)" : ""
    }`,
    () =>
      Effect.gen(function*() {
        const directory = yield* tempDirectory
        const senderFile = Path.join(directory, "a.db")
        const receiverFile = Path.join(directory, "b.db")
        const total = 15
        // A stores its messages while B is not running, so every kill below finds them pending.
        yield* Effect.scoped(Effect.gen(function*() {
          const hub = yield* InMemoryNetwork.make()
          const sender = yield* Layer.build(senderLayer(hub, senderFile))
          const ilm = Context.get(sender, ILM.ILM)
          for (let i = 1; i <= total; i++) yield* ilm.send(B, payload(i))
        }))

        // The children load at once (most of their life is loading TypeScript), then run one after another.
        const kills = [["deliver", 4], ["commit", 8], ["committed", 12]] as const
        const children = yield* Effect.forEach(
          kills,
          ([step, at]) => spawnScript(script("SqlDeliveryChild.ts"), [directory, step, String(at)]),
          { concurrency: "unbounded" }
        )
        for (const [i, [step, at]] of kills.entries()) {
          const child = children[i]!
          const ready = yield* child.next
          assert.strictEqual(ready.result, "ready", JSON.stringify(ready))
          yield* child.write("go")
          const killed = yield* child.next
          assert.deepStrictEqual(
            [killed.result, killed.signal],
            ["exited", "SIGKILL"],
            `killed at ${step} ${at}: ${JSON.stringify(killed)}`
          )
          const state = yield* inspect(receiverFile)
          assert.deepStrictEqual(state.rows, bodies(state.delivered), `rows after the kill at ${step} ${at}`)
          if (step === "committed") assert.isAtLeast(state.delivered, at, "the commit before the kill stands")
          else assert.isBelow(state.delivered, at, "the transaction cut short by the kill was rolled back")
        }

        // Both peers start again on their stores and finish.
        yield* Effect.scoped(Effect.gen(function*() {
          const hub = yield* InMemoryNetwork.make()
          const sender = Context.get(yield* Layer.build(senderLayer(hub, senderFile)), ILM.ILM)
          const receiver = yield* Layer.build(receiverLayer(hub, receiverFile, noFaults))
          yield* eventually(
            "every message delivered and acknowledged",
            Effect.zipWith(
              pending(sender),
              Effect.provide(appRows, receiver),
              (pending, rows) => pending === 0 && rows.length >= total
            )
          )
        }))
        const final = yield* inspect(receiverFile)
        assert.deepStrictEqual(final.rows, bodies(total))
        assert.strictEqual(final.delivered, total)
      })
  )

  // A batch arrives at once: A stored it while B was offline. Its message `failing` inserts its row and then fails
  // (once, or until the test says stop): that row must vanish with it, the rows before it must be written once
  // (however the engine retries the batch), and nothing after it may be delivered first.
  for (const mode of ["once", "until the test says stop"] as const) {
    it.scopedLive(`a batch arriving at once whose message 5 fails ${mode}: each row once, in order`, () =>
      Effect.gen(function*() {
        const total = 12
        const failing = 5
        const hub = yield* InMemoryNetwork.make()
        const sender = yield* TestPeer.make(A)
        const running = yield* TestPeer.start(hub, sender, config)
        yield* running.ilm.sendAll(B, Array.from({ length: total }, (_, i) => payload(i + 1)))
        const filename = Path.join(yield* tempDirectory, "b.db")

        /** Every delivery the application saw, in order, and whether it was told to fail. */
        const calls: Array<{ readonly seq: number; readonly failed: boolean }> = []
        let stop = false
        const faults: Faults = {
          ...noFaults,
          afterInsert: (message) =>
            Effect.suspend(() => {
              const failures = calls.filter((call) => call.failed).length
              const fail = message.seq === failing && (mode === "once" ? failures === 0 : !stop)
              calls.push({ seq: message.seq, failed: fail })
              return fail ? Effect.fail(new DeliveryError({ reason: "injected failure" })) : Effect.void
            })
        }
        const receiver = yield* buildScoped(receiverLayer(hub, filename, faults, batchReceiverConfig))
        const failures = Effect.sync(() => calls.filter((call) => call.failed).length)

        if (mode === "until the test says stop") {
          yield* eventually("message 5 failed three times", Effect.map(failures, (n) => n >= 3))
          // While it fails: the rows before it, each once, and neither its own row nor any later one.
          const rows = yield* Effect.provide(appRows, receiver.context)
          assert.deepStrictEqual(rows, bodies(failing - 1), "rows while message 5 fails")
          assert.strictEqual(yield* Effect.provide(deliveredFromA, receiver.context), failing - 1)
          assert.deepStrictEqual(calls.filter((call) => call.seq > failing), [], "delivered past message 5")
          stop = true
        }
        yield* finishes(
          sender,
          { rows: Effect.provide(appRows, receiver.context), close: receiver.close },
          filename,
          total
        )
        if (mode === "once") assert.strictEqual(yield* failures, 1)
        // Nothing after message 5 reached the application before message 5 itself succeeded.
        const succeeded = calls.findIndex((call) => call.seq === failing && !call.failed)
        assert.isAtLeast(succeeded, 0)
        const early = calls.slice(0, succeeded).filter((call) => call.seq > failing)
        assert.deepStrictEqual(early.map((call) => body(call.seq)), [], "delivered before message 5 succeeded")
      }))
  }
})
