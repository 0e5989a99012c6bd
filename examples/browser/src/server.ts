/**
 * The example's Node peer: it keeps its state in SQLite, takes browser tabs as clients over WebSocket (each with a
 * token this server signed), and serves the page. What it receives from a tab is written to a table of its own in the
 * same transaction as the engine's receive state, so that table is exactly what was delivered, once each.
 *
 * HTTP (default http://127.0.0.1:8787):
 * - `/` and `/app.js`: the page, bundled with esbuild when the server starts;
 * - `GET /token?peer=ID`: a token for `ID` (an application would issue it after a login);
 * - `GET /api/received?peer=ID&lane=L`: what arrived from `ID` on lane `L`, in the order it was delivered;
 * - `POST /api/send?peer=ID&lane=L&from=K&count=N`: sends `s<K>` … `s<K+N-1>` to `ID` on lane `L`;
 * - `GET /api/status`: the connected tabs and what is pending towards each.
 *
 * A message on lane `chat` gets an answer on the same lane.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as PeerId from "@intersession/core/PeerId"
import * as SqliteBackend from "@intersession/platform-node/SqliteBackend"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Schema from "effect/Schema"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Os from "node:os"
import * as Path from "node:path"
import { parseArgs } from "node:util"
import { bundlePage } from "./bundle.js"
import { network, serverId, tokens } from "./network.js"

const { values: args } = parseArgs({
  options: {
    port: { type: "string", default: "8787" },
    "ws-port": { type: "string", default: "8788" },
    data: { type: "string", default: Path.join(Os.tmpdir(), "intersession-browser-example") }
  }
})
const httpPort = Number(args.port)
const wsPort = Number(args["ws-port"])
Fs.mkdirSync(args.data, { recursive: true })

// The tokens' secret is kept beside the store, so that tokens stay valid across restarts of the server.
const secretFile = Path.join(args.data, "token-secret")
if (!Fs.existsSync(secretFile)) Fs.writeFileSync(secretFile, Crypto.randomBytes(32), { mode: 0o600 })
const { issue, verify } = tokens(Fs.readFileSync(secretFile))
const browserId = /^browser-[a-z0-9-]{1,64}$/

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** Messages on lane `chat` that wait for their answer. */
const Answers = Effect.acquireRelease(
  Queue.unbounded<{ readonly peer: PeerId.PeerId; readonly text: string }>(),
  Queue.shutdown
)

/** The server's application: each message is a row of `received`, written in the delivery's transaction. */
const deliveryLayer = (answers: Queue.Queue<{ readonly peer: PeerId.PeerId; readonly text: string }>) =>
  Layer.effect(
    Delivery.Delivery,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE IF NOT EXISTS received (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source TEXT NOT NULL,
        lane TEXT NOT NULL,
        seq INTEGER NOT NULL,
        body TEXT NOT NULL
      )`.pipe(Effect.orDie)
      return Delivery.Delivery.of({
        deliver: (message) => {
          const body = decoder.decode(message.payload)
          return sql`INSERT INTO received (source, lane, seq, body)
            VALUES (${message.source}, ${message.lane}, ${message.seq}, ${body})`.pipe(
            Effect.mapError((cause) => new Delivery.DeliveryError({ reason: "cannot record the message", cause })),
            Effect.zipRight(
              message.lane === "chat" ? Queue.offer(answers, { peer: message.source, text: body }) : Effect.void
            )
          )
        }
      })
    })
  )

const PeerQuery = Schema.Struct({ peer: Schema.String.pipe(Schema.pattern(browserId)) })
const LaneQuery = Schema.Struct({
  peer: Schema.String.pipe(Schema.pattern(browserId)),
  lane: Schema.optionalWith(Schema.String, { default: () => "default" })
})
const SendQuery = Schema.Struct({
  peer: Schema.String.pipe(Schema.pattern(browserId)),
  lane: Schema.optionalWith(Schema.String, { default: () => "default" }),
  from: Schema.optionalWith(Schema.NumberFromString, { default: () => 1 }),
  count: Schema.NumberFromString
})

const badRequest = () => HttpServerResponse.text("bad request", { status: 400 })

const main = Effect.gen(function*() {
  const answers = yield* Answers
  const page = yield* bundlePage
  const engine = yield* Layer.build(
    ILM.layer().pipe(
      Layer.provideMerge(deliveryLayer(answers)),
      Layer.provideMerge(network(wsPort, verify)),
      Layer.provideMerge(SqliteBackend.layer({ filename: Path.join(args.data, "server.db") }))
    )
  )
  const ilm = yield* Effect.provide(ILM.ILM, engine)
  const sql = yield* Effect.provide(SqlClient.SqlClient, engine)

  yield* Effect.forkScoped(
    Effect.forever(
      Effect.flatMap(
        Queue.take(answers),
        ({ peer, text }) => ilm.send(peer, encoder.encode(`the server got "${text}"`), { lane: "chat" })
      )
    )
  )

  const router = HttpRouter.empty.pipe(
    HttpRouter.get("/", Effect.succeed(HttpServerResponse.text(page.html, { contentType: "text/html" }))),
    HttpRouter.get("/app.js", Effect.succeed(HttpServerResponse.text(page.script, { contentType: "text/javascript" }))),
    HttpRouter.get(
      "/token",
      Effect.flatMap(
        HttpServerRequest.schemaSearchParams(PeerQuery),
        ({ peer }) => HttpServerResponse.json({ token: issue(PeerId.make(peer)) })
      )
    ),
    HttpRouter.get(
      "/api/received",
      Effect.flatMap(HttpServerRequest.schemaSearchParams(LaneQuery), ({ lane, peer }) =>
        Effect.flatMap(
          sql<{ body: string }>`SELECT body FROM received WHERE source = ${peer} AND lane = ${lane} ORDER BY id`,
          (rows) => HttpServerResponse.json({ bodies: rows.map((row) => row.body) })
        ))
    ),
    HttpRouter.post(
      "/api/send",
      Effect.flatMap(HttpServerRequest.schemaSearchParams(SendQuery), ({ count, from, lane, peer }) =>
        Effect.flatMap(
          ilm.sendAll(
            PeerId.make(peer),
            Array.from({ length: count }, (_, i) => encoder.encode(`s${from + i}`)),
            { lane }
          ),
          (ids) => HttpServerResponse.json({ sent: ids.length })
        ))
    ),
    HttpRouter.get(
      "/api/status",
      Effect.flatMap(ilm.stats, (stats) =>
        HttpServerResponse.json({
          outbound: stats.outbound.map((stream) => ({ peer: stream.peer, lane: stream.lane, pending: stream.pending }))
        }))
    ),
    HttpRouter.catchTags({ ParseError: badRequest, RequestError: badRequest })
  )
  yield* Layer.launch(
    HttpServer.serve(router).pipe(
      HttpServer.withLogAddress,
      Layer.provide(NodeHttpServer.layer(Http.createServer, { host: "127.0.0.1", port: httpPort }))
    )
  ).pipe(Effect.forkScoped)
  yield* Effect.log(
    `open http://127.0.0.1:${httpPort}/ (the engine's WebSocket is ws://127.0.0.1:${wsPort}/intersession)`
  )
  return yield* Effect.never
}).pipe(Effect.scoped, Effect.annotateLogs({ peer: serverId }))

NodeRuntime.runMain(main)
