/**
 * The page of the socket.io browser anchor: socket.io-client over a WebSocket to the case's server (`?url=`),
 * emitting each message with an acknowledgement and at most `?window=` unacknowledged, as `anchors/socketIo.ts`
 * does in Node.
 */
import { io } from "socket.io-client"
import { windowed } from "../../anchors/harness.js"
import { payload } from "../../Result.js"
import { offer } from "./api.js"

const params = new URLSearchParams(location.search)
const inFlight = Number(params.get("window") ?? 64)
/** An ack slower than this counts as failed, as in Node. */
const ackTimeoutMillis = 30_000

const client = io(params.get("url") ?? "", { transports: ["websocket"], reconnection: false })

offer({
  ready: new Promise((resolve, reject) => client.once("connect", resolve).once("connect_error", reject)),
  run: (messages, payloadBytes) =>
    new Promise((resolve) => {
      let acked = 0
      let failed = 0
      windowed(messages, inFlight, (index, done) => {
        client.timeout(ackTimeoutMillis).emitWithAck("m", payload(index, payloadBytes)).then(
          () => done(true),
          () => done(false)
        )
      }, {
        ack: (ok = true) => {
          if (ok) acked++
          else failed++
          if (acked + failed === messages) resolve(failed)
        }
      })
    })
})
