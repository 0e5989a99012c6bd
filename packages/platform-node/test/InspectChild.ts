/**
 * Run by Inspect.test.ts in a child process: an engine on the SQLite store given as the first argument sends the
 * number of messages given as the second to peer Z, which never comes, prints `{"result":"ready"}` once they are
 * stored, and runs until the process is killed (the test kills it with SIGKILL, leaving the store's `-wal` file).
 */
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as PeerId from "@intersession/core/PeerId"
import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqliteBackend from "../src/SqliteBackend.js"

const [filename = "", count = "1"] = process.argv.slice(2)

const program = Effect.gen(function*() {
  const hub = yield* InMemoryNetwork.make()
  const ilm = yield* Effect.provide(
    ILM.ILM,
    yield* Layer.build(
      ILM.layer().pipe(
        Layer.provide(Layer.merge(hub.layer(PeerId.make("A")), Delivery.layerInbox())),
        Layer.provide(SqliteBackend.layer({ filename }))
      )
    )
  )
  yield* ilm.sendAll(
    PeerId.make("Z"),
    Array.from({ length: Number(count) }, (_, i) => new TextEncoder().encode(`message ${i + 1}`))
  )
  process.stdout.write(`${JSON.stringify({ result: "ready" })}\n`)
  yield* Effect.never
}).pipe(Effect.scoped)

Effect.runPromise(program).then(() => process.exit(0), (error) => {
  process.stdout.write(`${JSON.stringify({ result: "crashed", detail: String(error) })}\n`)
  process.exit(1)
})
