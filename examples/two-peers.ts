import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as PeerId from "@intersession/core/PeerId"
import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

const peer1 = PeerId.make("1")
const peer2 = PeerId.make("2")

// A peer = the engine on a network, a backend and a delivery. Swap the layers to change environment.
const peer = (network: InMemoryNetwork.Hub, id: PeerId.PeerId) =>
  ILM.layer().pipe(
    Layer.provideMerge(Delivery.layerInbox()),
    Layer.provide(network.layer(id)),
    Layer.provide(InMemoryBackend.layerFresh)
  )

const main = Effect.gen(function*() {
  const network = yield* InMemoryNetwork.make()
  const one = yield* Layer.build(peer(network, peer1))
  const two = yield* Layer.build(peer(network, peer2))
  const messenger1 = Context.get(one, ILM.ILM)
  const messenger2 = Context.get(two, ILM.ILM)

  // Peer 1 sends a message to peer 2, and peer 2 one to peer 1
  yield* messenger1.send(peer2, new Uint8Array([1, 2, 3]))
  yield* messenger2.send(peer1, new Uint8Array([4, 5, 6]))

  // Each receives the other's message
  const received1 = yield* Context.get(one, Delivery.Inbox).take
  const received2 = yield* Context.get(two, Delivery.Inbox).take
  yield* Console.log(`peer 1 got [${received1.payload}] from ${received1.source} to ${received1.destination}`)
  yield* Console.log(`peer 2 got [${received2.payload}] from ${received2.source} to ${received2.destination}`)
})

Effect.runPromise(Effect.scoped(main))
