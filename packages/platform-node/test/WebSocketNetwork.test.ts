import * as NetworkSuite from "@intersession/testing/NetworkSuite"
import * as NetKit from "./NetKit.js"

NetworkSuite.networkSuite("WebSocketNetwork", NetKit.fixture(NetKit.webSocketKit), { raw: true })

NetKit.networkBehaviour(NetKit.webSocketKit)
