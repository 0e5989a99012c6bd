// A PostgreSQL-only application: two peers over TCP, each with its store in PostgreSQL (one database, two table
// prefixes). It imports the modules it uses by path, so type-checking needs no SQLite driver.
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as PeerId from "@intersession/core/PeerId"
import * as PostgresBackend from "@intersession/platform-node/PostgresBackend"
import * as TcpNetwork from "@intersession/platform-node/TcpNetwork"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"

const key = Redacted.make("a-pre-shared-key-of-the-deployment")
const erin = PeerId.make("erin")
const frank = PeerId.make("frank")
const addresses = new Map([[erin, { host: "127.0.0.1", port: 7421 }], [frank, { host: "127.0.0.1", port: 7422 }]])
const url = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
const prefix = `packaging_${process.pid}_`

const peer = (id: PeerId.PeerId) =>
  ILM.layer().pipe(
    Layer.provideMerge(Delivery.layerInbox()),
    Layer.provide(TcpNetwork.layer({ peer: id, listen: addresses.get(id)!, peers: addresses, key })),
    Layer.provide(PostgresBackend.layer({ url, tablePrefix: `${prefix}${id}_` }))
  )

const main = Effect.gen(function*() {
  const fromErin = Context.get(yield* Layer.build(peer(erin)), ILM.ILM)
  const atFrank = Context.get(yield* Layer.build(peer(frank)), Delivery.Inbox)
  yield* fromErin.sendAll(frank, ["one", "two", "three"].map((text) => new TextEncoder().encode(text)))
  for (let i = 0; i < 3; i++) {
    const message = yield* atFrank.take
    yield* Console.log(`frank got "${new TextDecoder().decode(message.payload)}" from ${message.source}, seq ${message.seq}`)
  }
  yield* fromErin.drain("10 seconds")
})

Effect.runPromise(Effect.scoped(main))
