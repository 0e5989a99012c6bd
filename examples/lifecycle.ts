import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as PeerId from "@intersession/core/PeerId"
import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

const alice = PeerId.make("alice")
const bob = PeerId.make("bob")
const encoder = new TextEncoder()

const peer = (network: InMemoryNetwork.Hub, id: PeerId.PeerId) =>
  ILM.layer({ expiryCheckInterval: "100 millis" }).pipe(
    Layer.provideMerge(Delivery.layerInbox()),
    Layer.provide(network.layer(id)),
    Layer.provide(InMemoryBackend.layerFresh)
  )

const main = Effect.gen(function*() {
  const network = yield* InMemoryNetwork.make()
  const sender = Context.get(yield* Layer.build(peer(network, alice)), ILM.ILM)
  const inbox = Context.get(yield* Layer.build(peer(network, bob)), Delivery.Inbox)

  // Bob is out of reach for a while.
  yield* network.partition(alice, bob)
  // A quote is worthless after half a second; an order must arrive, however late.
  yield* sender.send(bob, encoder.encode("quote: 101.5"), { timeToLive: "500 millis" })
  yield* sender.send(bob, encoder.encode("order: buy 10"))
  // Telemetry piles up in a lane of its own, until the application gives up on it.
  yield* sender.sendAll(bob, ["cpu 91%", "cpu 93%", "cpu 97%"].map((line) => encoder.encode(line)), {
    lane: "telemetry"
  })
  const purged = yield* sender.purge(bob, { lane: "telemetry" })
  yield* Effect.sleep("1 second")

  const stats = yield* sender.stats
  for (const stream of stats.outbound) {
    yield* Console.log(
      `${stream.peer}/${stream.lane}: ${stream.pending} pending, ${stream.expired} expired, ${stream.purged} purged`
    )
  }
  yield* Console.log(`purge removed ${purged}`)

  // Bob is back: the order arrives, with the seq it was given; nothing else does, and nothing is missing.
  yield* network.heal(alice, bob)
  const message = yield* inbox.take
  yield* Console.log(`bob got "${new TextDecoder().decode(message.payload)}" in ${message.lane}, seq ${message.seq}`)
  yield* sender.drain("5 seconds")
  yield* Console.log("drained: everything acknowledged, expired or purged")
})

Effect.runPromise(Effect.scoped(main))
