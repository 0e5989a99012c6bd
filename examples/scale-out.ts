import type { Backend } from "@intersession/core/Backend"
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as PeerId from "@intersession/core/PeerId"
import * as PostgresBackend from "@intersession/platform-node/PostgresBackend"
import * as SqliteBackend from "@intersession/platform-node/SqliteBackend"
import * as TcpNetwork from "@intersession/platform-node/TcpNetwork"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

// Scale-out: carol keeps her state in PostgreSQL, so it survives the loss of her host and she can move to another.
// dave, at the edge, keeps a SQLite file. Only the Backend layer differs.
const key = Redacted.make("a-pre-shared-key-of-the-deployment")
const carol = PeerId.make("carol")
const dave = PeerId.make("dave")
const addresses = new Map([[carol, { host: "127.0.0.1", port: 7411 }], [dave, { host: "127.0.0.1", port: 7412 }]])

const peer = (id: PeerId.PeerId, store: Layer.Layer<Backend, unknown>) =>
  ILM.layer().pipe(
    Layer.provideMerge(Delivery.layerInbox()),
    Layer.provide(TcpNetwork.layer({ peer: id, listen: addresses.get(id)!, peers: addresses, key })),
    Layer.provide(store)
  )

const postgres = PostgresBackend.layer({
  url: process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test",
  tablePrefix: "example_carol_"
})
const sqlite = SqliteBackend.layer({ filename: join(mkdtempSync(join(tmpdir(), "intersession-")), "dave.db") })

const main = Effect.gen(function*() {
  const fromCarol = Context.get(yield* Layer.build(peer(carol, postgres)), ILM.ILM)
  const atDave = yield* Layer.build(peer(dave, sqlite))
  yield* fromCarol.send(dave, new TextEncoder().encode("stored in PostgreSQL until dave has it"))
  const message = yield* Context.get(atDave, Delivery.Inbox).take
  yield* Console.log(`dave got "${new TextDecoder().decode(message.payload)}" from ${message.source}`)
  yield* fromCarol.drain("10 seconds")
})

Effect.runPromise(Effect.scoped(main))
