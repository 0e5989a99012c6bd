/**
 * The page of scenario 11: a tab's engine, its store in IndexedDB and its network a WebSocket to the case's Node
 * peer (`?ws=` its URL, `?server=` its id), as `examples/browser` runs one.
 */
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as PeerId from "@intersession/core/PeerId"
import * as IndexedDbBackend from "@intersession/platform-browser/IndexedDbBackend"
import * as WebSocketNetwork from "@intersession/platform-browser/WebSocketNetwork"
import * as Effect from "effect/Effect"
import * as HashSet from "effect/HashSet"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Stream from "effect/Stream"
import { sendMany } from "../../ours/send.js"
import { payload } from "../../Result.js"
import { offer } from "./api.js"

const params = new URLSearchParams(location.search)
const server = PeerId.make(params.get("server") ?? "")

// The tab only sends: what it would be given is dropped.
const ignore = Layer.succeed(Delivery.Delivery, Delivery.Delivery.of({ deliver: () => Effect.void }))

const runtime = ManagedRuntime.make(
  ILM.layer().pipe(
    Layer.provide(ignore),
    Layer.provide(
      WebSocketNetwork.layerBrowser({
        peer: PeerId.make("bench-tab"),
        url: params.get("ws") ?? "",
        server,
        // The Node peer takes any tab: the case measures messaging, not a login.
        credential: Effect.succeed("bench")
      })
    ),
    Layer.provide(IndexedDbBackend.layer({ databaseName: "intersession-bench" })),
    Layer.orDie
  )
)

offer({
  ready: runtime.runPromise(
    Effect.flatMap(
      ILM.ILM,
      (ilm) => Stream.runDrain(Stream.takeUntil(ilm.peers.changes, (linked) => HashSet.has(linked, server)))
    )
  ),
  run: (messages, payloadBytes) =>
    runtime.runPromise(Effect.gen(function*() {
      const ilm = yield* ILM.ILM
      // As the Node streams send: `sendAll` calls of a batch each, a few at a time, resolving once stored.
      yield* sendMany(ilm, messages, () => server, (i) => payload(i, payloadBytes))
      yield* ilm.drain("10 minutes")
      return 0
    }))
})
