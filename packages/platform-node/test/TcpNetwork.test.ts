import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as NetworkSuite from "@intersession/testing/NetworkSuite"
import * as Effect from "effect/Effect"
import * as TcpNetwork from "../src/TcpNetwork.js"
import * as NetKit from "./NetKit.js"

const kit: NetKit.Kit<TcpNetwork.Address> = {
  name: "TcpNetwork",
  address: (port) => ({ host: "127.0.0.1", port }),
  make: (options) =>
    Effect.map(
      TcpNetwork.make({
        ...options.settings,
        peer: options.peer,
        listen: { host: "127.0.0.1", port: options.port },
        peers: options.book,
        key: options.key ?? NetKit.key
      }),
      (network) => ({ ...network, port: network.address.port })
    ),
  connect: (port) => NodeSocket.makeNet({ host: "127.0.0.1", port })
}

NetworkSuite.networkSuite("TcpNetwork", NetKit.fixture(kit))

NetKit.networkBehaviour(kit)
