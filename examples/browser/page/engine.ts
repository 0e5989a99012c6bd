import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as PeerId from "@intersession/core/PeerId"
import * as IndexedDbBackend from "@intersession/platform-browser/IndexedDbBackend"
import * as WebSocketNetwork from "@intersession/platform-browser/WebSocketNetwork"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

// Each message the tab is given becomes a record of its store, committed with the message's receive state: a reload
// neither loses it nor writes it twice. The key is the order the tab was given them in (this page's start, then a
// count), so a message given twice, or out of order, would show.
const pageStart = Date.now()
let given = 0
const recordEach = Layer.effect(
  Delivery.Delivery,
  Effect.map(IndexedDbBackend.Records, (records) =>
    Delivery.Delivery.of({
      deliver: (message) =>
        records.put([message.lane, pageStart, ++given], {
          seq: message.seq,
          text: new TextDecoder().decode(message.payload)
        }).pipe(Effect.mapError((cause) => new Delivery.DeliveryError({ reason: "cannot record the message", cause })))
    }))
)

// The tab's engine: its store in IndexedDB (a second tab on it waits), its network a WebSocket to the Node peer.
export const tab = <E>(me: PeerId.PeerId, url: string, credential: Effect.Effect<string, E>) =>
  ILM.layer().pipe(
    Layer.provideMerge(recordEach),
    Layer.provideMerge(WebSocketNetwork.layerBrowser({ peer: me, url, server: PeerId.make("server"), credential })),
    Layer.provideMerge(IndexedDbBackend.layer({ databaseName: `intersession-${me}`, waitForLock: true }))
  )
