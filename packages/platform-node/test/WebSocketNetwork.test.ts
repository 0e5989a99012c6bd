import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as Socket from "@effect/platform/Socket"
import * as NetworkSuite from "@intersession/testing/NetworkSuite"
import * as Effect from "effect/Effect"
import * as WebSocketNetwork from "../src/WebSocketNetwork.js"
import * as NetKit from "./NetKit.js"

const url = (port: number) => `ws://127.0.0.1:${port}/intersession`

const kit: NetKit.Kit<string> = {
  name: "WebSocketNetwork",
  address: url,
  make: (options) =>
    WebSocketNetwork.make({
      ...options.settings,
      peer: options.peer,
      listen: { host: "127.0.0.1", port: options.port, path: "/intersession" },
      peers: options.book,
      key: options.key ?? NetKit.key
    }).pipe(
      Effect.map((network) => ({ ...network, port: Number(new URL(network.url).port) })),
      Effect.provide(NodeSocket.layerWebSocketConstructor)
    ),
  connect: (port) =>
    Effect.provide(Socket.makeWebSocket(url(port), { openTimeout: "5 seconds" }), NodeSocket.layerWebSocketConstructor)
}

NetworkSuite.networkSuite("WebSocketNetwork", NetKit.fixture(kit))

NetKit.networkBehaviour(kit)
