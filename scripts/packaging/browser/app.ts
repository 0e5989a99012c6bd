// A tab's engine as the platform-browser README shows it, built by a user's bundler from the published packages.
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as PeerId from "@intersession/core/PeerId"
import * as IndexedDbBackend from "@intersession/platform-browser/IndexedDbBackend"
import * as WebSocketNetwork from "@intersession/platform-browser/WebSocketNetwork"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

const engine = ILM.layer().pipe(
  Layer.provideMerge(Delivery.layerInbox()),
  Layer.provideMerge(WebSocketNetwork.layerBrowser({
    peer: PeerId.make("tab-7f3a"),
    url: "wss://example.com/intersession",
    server: PeerId.make("server"),
    credential: Effect.tryPromise(() => fetch("/intersession/token").then((response) => response.text()))
  })),
  Layer.provideMerge(IndexedDbBackend.layer({ databaseName: "chat", waitForLock: true }))
)

Effect.runFork(Layer.launch(engine))
