/**
 * Clients on the Node side: the browser package's WebSocket network (run here in Node, with the `ws` constructor)
 * dials a WebSocket network that takes clients. The verifier binds the peer id; refusals reach the client typed;
 * the per-client limits hold; frames are sealed. Every assertion reads what the engines delivered.
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import { assert, describe, it } from "@effect/vitest"
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import type * as IlmConfig from "@intersession/core/IlmConfig"
import { Network } from "@intersession/core/Network"
import * as PeerId from "@intersession/core/PeerId"
import * as Browser from "@intersession/platform-browser/WebSocketNetwork"
import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import * as WebSocketNetwork from "../src/WebSocketNetwork.js"

const server = PeerId.make("server")
const tab = PeerId.make("tab-1")
const other = PeerId.make("node-peer")
const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** Tokens of this test: `ok:<peer>` binds `<peer>`; anything else is refused. */
const verify = ({ credential }: WebSocketNetwork.ClientRequest) => {
  const token = decoder.decode(credential)
  return token.startsWith("ok:") ? Effect.succeed(PeerId.make(token.slice(3))) : Effect.fail("bad token")
}

const quick = { reconnectBase: "20 millis", reconnectMax: "200 millis", handshakeTimeout: "2 seconds" } as const

/** The Node peer's network, taking clients as `clients` says, with `other` a peer of its deployment. */
const serverNetwork = (clients: WebSocketNetwork.ClientOptions | undefined) =>
  WebSocketNetwork.make({
    peer: server,
    listen: { host: "127.0.0.1", port: 0, path: "/intersession" },
    peers: new Map([[other, "ws://127.0.0.1:9/unused"]]),
    key: Redacted.make("the deployment's pre-shared key"),
    clients,
    ...quick
  }).pipe(Effect.provide(NodeSocket.layerWebSocketConstructor))

const clientNetwork = (url: string, peer: PeerId.PeerId, token: string) =>
  Browser.make({ peer, url, server, credential: Effect.succeed(token), ...quick }).pipe(
    Effect.provide(NodeSocket.layerWebSocketConstructor)
  )

/** An engine on `network`, with an inbox and a fresh in-memory store. */
const engineOn = (network: Network["Type"], config: IlmConfig.Options = {}) =>
  Effect.map(
    Layer.build(
      ILM.layer({ ...quick, ...config }).pipe(
        Layer.provideMerge(Delivery.layerInbox()),
        Layer.provide(Layer.succeed(Network, network)),
        Layer.provide(InMemoryBackend.layerFresh)
      )
    ),
    (context) => ({ ilm: Context.get(context, ILM.ILM), inbox: Context.get(context, Delivery.Inbox) })
  )

const texts = (prefix: string, count: number) => Array.from({ length: count }, (_, i) => `${prefix}${i + 1}`)

const take = (inbox: Delivery.Inbox["Type"], count: number) =>
  Effect.forEach(texts("", count), () => Effect.map(inbox.take, (message) => decoder.decode(message.payload)))

/** The first status of the client that `match` accepts. */
const statusWhere = (network: Browser.WebSocketNetwork, match: (status: Browser.Status) => boolean) =>
  Effect.flatten(Stream.runHead(Stream.filter(network.status.changes, match)))

const refusal = (network: Browser.WebSocketNetwork) =>
  Effect.map(
    statusWhere(network, (status) => status._tag === "Refused"),
    (status) => status._tag === "Refused" ? status.reason : "none"
  )

describe("clients of a WebSocket network", () => {
  it.scopedLive(
    "a verified client exchanges messages both ways in order, bound to its id, on a sealed link",
    () =>
      Effect.gen(function*() {
        const network = yield* serverNetwork({ verify })
        const atServer = yield* engineOn(network)
        const client = yield* clientNetwork(network.url, tab, `ok:${tab}`)
        const atTab = yield* engineOn(client)
        yield* atTab.ilm.sendAll(server, texts("t", 50).map((text) => encoder.encode(text)))
        yield* atServer.ilm.sendAll(tab, texts("s", 50).map((text) => encoder.encode(text)))
        assert.deepStrictEqual(yield* take(atServer.inbox, 50), texts("t", 50))
        assert.deepStrictEqual(yield* take(atTab.inbox, 50), texts("s", 50))
        const connections = yield* network.connections
        assert.deepStrictEqual(connections.map(({ client, keyIndex, peer }) => ({ client, keyIndex, peer })), [
          { client: true, keyIndex: -1, peer: tab }
        ])
        yield* atTab.ilm.drain("5 seconds")
        yield* atServer.ilm.drain("5 seconds")
      }),
    30_000
  )

  it.scopedLive(
    "a refused credential, an id of the deployment, another id and a peer without clients are refused",
    () =>
      Effect.gen(function*() {
        const network = yield* serverNetwork({ verify })
        const refusedToken = yield* clientNetwork(network.url, tab, "stolen")
        assert.strictEqual(yield* refusal(refusedToken), "Unauthorized")
        const reserved = yield* clientNetwork(network.url, other, `ok:${other}`)
        assert.strictEqual(yield* refusal(reserved), "ReservedPeer")
        const wrong = yield* clientNetwork(network.url, tab, "ok:tab-2")
        assert.strictEqual(yield* refusal(wrong), "WrongPeer")
        const closed = yield* serverNetwork(undefined)
        const notAccepted = yield* clientNetwork(closed.url, tab, `ok:${tab}`)
        assert.strictEqual(yield* refusal(notAccepted), "NotAccepted")
        const stats = yield* network.handshakes
        assert.isAtLeast(stats.failed["ClientRefused"] ?? 0, 3)
        assert.deepStrictEqual(yield* network.connections, [])
      }),
    30_000
  )

  it.scopedLive("a client over maxConnections is refused while its connection is in use", () =>
    Effect.gen(function*() {
      const network = yield* serverNetwork({ verify, maxConnections: 1 })
      const first = yield* clientNetwork(network.url, tab, `ok:${tab}`)
      yield* statusWhere(first, (status) => status._tag === "Connected")
      const second = yield* clientNetwork(network.url, tab, `ok:${tab}`)
      assert.strictEqual(yield* refusal(second), "TooManyConnections")
      assert.strictEqual((yield* network.connections).length, 1)
    }), 30_000)

  it.scopedLive(
    "frames on lanes past maxStreams never reach the engine; the others are delivered",
    () =>
      Effect.gen(function*() {
        const network = yield* serverNetwork({ verify, maxStreams: 2 })
        const atServer = yield* engineOn(network)
        const atTab = yield* engineOn(yield* clientNetwork(network.url, tab, `ok:${tab}`))
        yield* atTab.ilm.send(server, encoder.encode("a1"), { lane: "a" })
        yield* atTab.ilm.send(server, encoder.encode("b1"), { lane: "b" })
        yield* atTab.ilm.send(server, encoder.encode("c1"), { lane: "c" })
        yield* atTab.ilm.send(server, encoder.encode("a2"), { lane: "a" })
        const got = yield* take(atServer.inbox, 3)
        assert.deepStrictEqual(got.filter((text) => text.startsWith("a")), ["a1", "a2"])
        assert.deepStrictEqual(got.filter((text) => text.startsWith("b")), ["b1"])
        // The message on lane c never arrives, and stays pending on the client's side.
        assert.isTrue(Option.isNone(yield* Effect.option(Effect.timeout(atServer.inbox.take, "500 millis"))))
        const pending = (yield* atTab.ilm.stats).outbound.filter((stream) => stream.pending > 0)
        assert.deepStrictEqual(pending.map((stream) => stream.lane), ["c"])
      }),
    30_000
  )

  it.scopedLive(
    "a client that sends more than maxPendingBytes at once is disconnected; one within them is not",
    () =>
      Effect.gen(function*() {
        const network = yield* serverNetwork({ verify, maxPendingBytes: 16 * 1024 })
        const atServer = yield* engineOn(network)
        const big = texts("m", 40).map((text) => encoder.encode(text.padEnd(4096, ".")))
        // The default window lets 160 KiB go out at once: the server closes the connection.
        const greedy = yield* clientNetwork(network.url, tab, `ok:${tab}`)
        const atGreedy = yield* engineOn(greedy)
        yield* atGreedy.ilm.sendAll(server, big)
        yield* statusWhere(greedy, (status) => status._tag === "Disconnected")
        // A client whose window is below the limit gets everything through, in order.
        const polite = yield* clientNetwork(network.url, PeerId.make("tab-2"), "ok:tab-2")
        const atPolite = yield* engineOn(polite, { windowBytes: 12 * 1024 })
        yield* atPolite.ilm.sendAll(server, big)
        const got: Array<string> = []
        while (got.length < 40) {
          const message = yield* atServer.inbox.take
          if (message.source === "tab-2") got.push(decoder.decode(message.payload))
        }
        assert.deepStrictEqual(got, texts("m", 40).map((text) => text.padEnd(4096, ".")))
      }),
    60_000
  )
})
