import * as Channel from "@intersession/core/Channel"
import * as ILM from "@intersession/core/ILM"
import * as PeerId from "@intersession/core/PeerId"
import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"

// A channel is a lane bound to a schema: define it once, and share it between the sending and the receiving code.
class Order extends Schema.Class<Order>("Order")({
  id: Schema.Number,
  item: Schema.String,
  // Added in version 2: orders stored by version 1 have none, and still decode.
  gift: Schema.optional(Schema.Boolean)
}) {}
const orders = Channel.json("orders", Order)

const shop = PeerId.make("shop")
const warehouse = PeerId.make("warehouse")

const peer = (network: InMemoryNetwork.Hub, id: PeerId.PeerId) =>
  ILM.layer().pipe(
    // `provideMerge` keeps `Channels` (where decoded messages arrive) next to `ILM`.
    Layer.provideMerge(Channel.layerDelivery([orders])),
    Layer.provide(network.layer(id)),
    Layer.provide(InMemoryBackend.layerFresh)
  )

const main = Effect.gen(function*() {
  const network = yield* InMemoryNetwork.make()
  const sender = yield* Layer.build(peer(network, shop))
  const receiver = yield* Layer.build(peer(network, warehouse))

  yield* Effect.provide(
    Effect.gen(function*() {
      yield* Channel.send(orders, warehouse, new Order({ id: 1, item: "tea" }))
      yield* Channel.send(orders, warehouse, new Order({ id: 2, item: "cups", gift: true }))
      // Someone sends bytes that are not an order in the same lane: they go to the dead letters, the lane goes on.
      const ilm = yield* ILM.ILM
      yield* ilm.send(warehouse, new TextEncoder().encode("{\"id\":\"three\"}"), { lane: "orders" })
      yield* Channel.send(orders, warehouse, new Order({ id: 4, item: "pot" }))
    }),
    sender
  )

  yield* Channel.messages(orders).pipe(
    Stream.take(3),
    Stream.runForEach((order) =>
      Console.log(`${order.source} #${order.seq}: ${order.value.item}${order.value.gift === true ? " (gift)" : ""}`)
    ),
    Effect.provide(receiver)
  )
  const [letter] = yield* Context.get(receiver, ILM.ILM).deadLetters.list({ lane: "orders" })
  yield* Console.log(`dead letter #${letter!.seq}: ${letter!.error.split("\n")[0]}`)
})

// The engine logs the refused message as a warning; this example keeps its output to what it prints itself.
Effect.runPromise(Effect.scoped(main).pipe(Logger.withMinimumLogLevel(LogLevel.Error)))
