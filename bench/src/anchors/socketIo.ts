/**
 * Anchor: socket.io over a WebSocket on loopback, server and client in this process. The client emits each message
 * with an acknowledgement (`emitWithAck`), keeping at most `window` unacknowledged; the server's handler hands the
 * message to the application and acks it.
 */
import * as Http from "node:http"
import { Server } from "socket.io"
import { io } from "socket.io-client"
import { indexOf, payload, type Result, Tally } from "../Result.js"
import { Watch, windowed } from "./harness.js"

export interface Options {
  readonly messages: number
  readonly payloadBytes: number
  readonly window?: number
}

/** An ack slower than this counts as failed: far beyond any healthy loopback round trip. */
const ackTimeoutMillis = 30_000

export const run = async (options: Options): Promise<Result> => {
  const { messages, payloadBytes } = options
  const window = options.window ?? 64
  const tally = new Tally(messages)
  // Set once the run starts; frames before that are the set-up's.
  const running: { watch?: Watch } = {}

  const http = Http.createServer()
  // maxHttpBufferSize: the default (1 MB) would cut off large payloads.
  const server = new Server(http, { transports: ["websocket"], maxHttpBufferSize: Math.max(1e6, 2 * payloadBytes) })
  server.on("connection", (socket) => {
    socket.on("m", (bytes: Buffer, ack: () => void) => {
      running.watch?.delivered(indexOf(bytes), bytes)
      ack()
    })
  })
  await new Promise<void>((resolve, reject) => http.once("error", reject).listen(0, "127.0.0.1", resolve))
  const address = http.address()
  const port = typeof address === "object" && address !== null ? address.port : 0

  const client = io(`http://127.0.0.1:${port}`, { transports: ["websocket"], reconnection: false })
  await new Promise<void>((resolve, reject) => client.once("connect", resolve).once("connect_error", reject))

  const current = new Watch(tally, messages)
  running.watch = current
  windowed(messages, window, (index, done) => {
    client.timeout(ackTimeoutMillis).emitWithAck("m", payload(index, payloadBytes)).then(
      () => done(true),
      () => done(false)
    )
  }, current)
  await current.finished
  const result = current.result()

  client.disconnect()
  await server.close()
  return result
}
