/**
 * Expiry and purge with the engine on real stores: what expired and what was purged is removed from the SQLite or
 * PostgreSQL store, the sender restarts on it, and the receiver moves past those seqs in order, reported with the
 * right reason, without a resync; the rest arrives.
 */
import { assert, describe, it } from "@effect/vitest"
import type { Backend } from "@intersession/core/Backend"
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import type { IlmEvent } from "@intersession/core/IlmEvent"
import * as PeerId from "@intersession/core/PeerId"
import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as PostgresBackend from "../src/PostgresBackend.js"
import * as SqliteBackend from "../src/SqliteBackend.js"
import * as PgTestKit from "./PgTestKit.js"

const sender = PeerId.make("sender")
const receiver = PeerId.make("receiver")
const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** Quick checks and retries, so that the test takes a moment on the live clock. */
const config = {
  expiryCheckInterval: "50 millis",
  helloInitial: "50 millis",
  helloMax: "200 millis",
  retransmitInitial: "100 millis",
  retransmitMin: "50 millis"
} as const

/** Runs the scenario with the sender's store from `store`; each start of the sender opens it again. */
const scenario = (store: Layer.Layer<Backend, unknown>) =>
  Effect.gen(function*() {
    const hub = yield* InMemoryNetwork.make()
    const receiving = yield* Layer.build(
      ILM.layer(config).pipe(
        Layer.provideMerge(Delivery.layerInbox()),
        Layer.provide(hub.layer(receiver)),
        Layer.provide(InMemoryBackend.layerFresh)
      )
    )
    const events = yield* Ref.make<ReadonlyArray<IlmEvent>>([])
    yield* Effect.forkScoped(
      Stream.runForEach(Context.get(receiving, ILM.ILM).events, (event) => Ref.update(events, (all) => [...all, event]))
    )
    const startSender = Effect.gen(function*() {
      const scope = yield* Scope.make()
      // Stopped by the test, or with the test's scope if it fails first.
      yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
      const context = yield* Layer.buildWithScope(
        ILM.layer(config).pipe(
          Layer.provide(Delivery.layerInbox()),
          Layer.provide(hub.layer(sender)),
          Layer.provide(store)
        ),
        scope
      )
      return { ilm: Context.get(context, ILM.ILM), stop: Scope.close(scope, Exit.void) }
    })

    yield* hub.partition(sender, receiver)
    const first = yield* startSender
    yield* first.ilm.send(receiver, encoder.encode("keep 1"))
    yield* first.ilm.sendAll(receiver, [encoder.encode("stale 1"), encoder.encode("stale 2")], {
      timeToLive: "100 millis"
    })
    yield* first.ilm.sendAll(receiver, ["t1", "t2", "t3"].map((line) => encoder.encode(line)), { lane: "telemetry" })
    yield* first.ilm.send(receiver, encoder.encode("keep 2"))
    assert.strictEqual(yield* first.ilm.purge(receiver, { lane: "telemetry" }), 3)
    yield* Effect.sleep("400 millis")
    const before = (yield* first.ilm.stats).outbound.find((stream) => stream.lane === "default")
    assert.strictEqual(before?.expired, 2)
    assert.strictEqual(before?.pending, 2)
    yield* first.stop

    // The restarted sender knows the removed seqs from its store alone.
    const second = yield* startSender
    yield* second.ilm.send(receiver, encoder.encode("t4"), { lane: "telemetry" })
    yield* hub.heal(sender, receiver)
    const inbox = Context.get(receiving, Delivery.Inbox)
    const received: Array<string> = []
    for (let i = 0; i < 3; i++) {
      const message = yield* inbox.take
      received.push(`${message.lane}:${message.seq}:${decoder.decode(message.payload)}`)
    }
    yield* second.ilm.drain("10 seconds")
    assert.sameMembers(received, ["default:1:keep 1", "default:4:keep 2", "telemetry:4:t4"])
    const inbound = (yield* Context.get(receiving, ILM.ILM).stats).inbound
    assert.strictEqual(inbound.find((stream) => stream.lane === "default")?.expired, 2)
    assert.strictEqual(inbound.find((stream) => stream.lane === "telemetry")?.purged, 3)
    assert.isFalse((yield* Ref.get(events)).some((event) => event._tag === "Resynchronised"))
    yield* second.stop
  })

describe("expiry and purge on SQLite", () => {
  it.live("removed messages stay skipped across a restart of the sender", () =>
    Effect.gen(function*() {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "intersession-lifecycle-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })))
      yield* scenario(SqliteBackend.layer({ filename: Path.join(dir, "sender.db") }))
    }).pipe(Effect.scoped), 60_000)
})

describe.skipIf(PgTestKit.probe.url === undefined)(PgTestKit.suiteName("expiry and purge on PostgreSQL"), () => {
  it.live("removed messages stay skipped across a restart of the sender", () =>
    Effect.gen(function*() {
      const prefix = yield* PgTestKit.freshPrefix
      yield* scenario(PostgresBackend.layer({ url: PgTestKit.url, tablePrefix: prefix }))
    }).pipe(Effect.scoped, Effect.provide(PgTestKit.adminLayer)), 60_000)
})
