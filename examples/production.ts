import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as PeerId from "@intersession/core/PeerId"
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

// Production: TCP with a pre-shared key between the peers, and a SQLite file per peer.
const key = Redacted.make("a-pre-shared-key-of-the-deployment")
const addresses = new Map([
  [PeerId.make("alice"), { host: "127.0.0.1", port: 7401 }],
  [PeerId.make("bob"), { host: "127.0.0.1", port: 7402 }]
])
const dir = mkdtempSync(join(tmpdir(), "intersession-"))

const peer = (id: PeerId.PeerId) =>
  ILM.layer({ window: 256 }).pipe(
    Layer.provideMerge(Delivery.layerInbox()),
    Layer.provide(TcpNetwork.layer({ peer: id, listen: addresses.get(id)!, peers: addresses, key })),
    Layer.provide(SqliteBackend.layer({ filename: join(dir, `${id}.db`), synchronous: "NORMAL" }))
  )

const main = Effect.gen(function*() {
  const alice = Context.get(yield* Layer.build(peer(PeerId.make("alice"))), ILM.ILM)
  const bob = yield* Layer.build(peer(PeerId.make("bob")))
  for (const text of ["one", "two", "three"]) {
    yield* alice.send(PeerId.make("bob"), new TextEncoder().encode(text))
  }
  for (let i = 0; i < 3; i++) {
    const message = yield* Context.get(bob, Delivery.Inbox).take
    yield* Console.log(
      `bob got "${new TextDecoder().decode(message.payload)}" from ${message.source}, seq ${message.seq}`
    )
  }
  yield* alice.drain("10 seconds")
})

Effect.runPromise(Effect.scoped(main))
