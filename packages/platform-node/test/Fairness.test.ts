/**
 * Fairness on the real clock, over real sockets and a real SQLite store: an application's send loop must not keep
 * the engine's own sockets, handshake and deliveries waiting until it ends.
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as FileSystem from "@effect/platform/FileSystem"
import { assert, describe, it } from "@effect/vitest"
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as PeerId from "@intersession/core/PeerId"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Path from "node:path"
import * as SqliteBackend from "../src/SqliteBackend.js"
import * as TcpNetwork from "../src/TcpNetwork.js"
import { freePort } from "./NetKit.js"

const alice = PeerId.make("alice")
const bob = PeerId.make("bob")
const key = Redacted.make("the fairness test's pre-shared key")

describe("fairness over TCP with SQLite", () => {
  it.scopedLive(
    "the first message is delivered while a 20,000-message awaited send loop still runs",
    () =>
      Effect.gen(function*() {
        const directory = yield* Effect.flatMap(
          FileSystem.FileSystem,
          (fs) => fs.makeTempDirectoryScoped({ prefix: "intersession-fairness-" })
        ).pipe(Effect.provide(NodeFileSystem.layer))
        const addresses = new Map([[alice, { host: "127.0.0.1", port: yield* freePort }], [bob, {
          host: "127.0.0.1",
          port: yield* freePort
        }]])
        let delivered = 0
        let firstDelivery: number | undefined
        const peer = (id: PeerId.PeerId, deliver: () => void) =>
          ILM.layer().pipe(
            Layer.provide(
              Layer.succeed(Delivery.Delivery, Delivery.Delivery.of({ deliver: () => Effect.sync(deliver) }))
            ),
            Layer.provide(TcpNetwork.layer({ peer: id, listen: addresses.get(id)!, peers: addresses, key })),
            Layer.provide(SqliteBackend.layer({ filename: Path.join(directory, `${id}.db`) }))
          )
        yield* Layer.build(peer(bob, () => {
          delivered++
          firstDelivery ??= performance.now()
        }))
        const sender = Context.get(yield* Layer.build(peer(alice, () => {})), ILM.ILM)
        // The loop starts at once: the peers have not even connected yet.
        const payload = new Uint8Array(128)
        const started = performance.now()
        const total = 20_000
        for (let i = 0; i < total; i++) yield* sender.send(bob, payload)
        const loopEnded = performance.now()
        assert.isDefined(firstDelivery, "a message was delivered before the loop ended")
        assert.isBelow(firstDelivery!, loopEnded)
        yield* Effect.logInfo(
          `first delivery at ${Math.round(firstDelivery! - started)} ms, loop ended at ${
            Math.round(loopEnded - started)
          } ms`
        )
        yield* sender.drain("2 minutes")
        assert.strictEqual(delivered, total)
      }),
    180_000
  )
})
