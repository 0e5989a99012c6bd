import * as NetworkSuite from "@intersession/testing/NetworkSuite"
import * as NetKit from "./NetKit.js"

NetworkSuite.networkSuite("TcpNetwork", NetKit.fixture(NetKit.tcpKit), { raw: true })

NetKit.networkBehaviour(NetKit.tcpKit)
