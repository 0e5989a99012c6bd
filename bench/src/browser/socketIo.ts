/**
 * Anchor of scenario 11: socket.io-client in Chromium (`page/socketIo.ts`) emitting to a socket.io server in this
 * process over a WebSocket on loopback, `window` acknowledgements outstanding at most, as `anchors/socketIo.ts` in
 * Node; the server's handler hands each message to the application and acks it.
 */
import * as Http from "node:http"
import { Server } from "socket.io"
import type { Watch } from "../anchors/harness.js"
import { indexOf, type Result } from "../Result.js"
import * as Browser from "./harness.js"

export interface Options extends Browser.Options {
  readonly window: number
}

export const run = async (options: Options): Promise<Result> => {
  const skipped = Browser.withoutChromium(options.messages)
  if (skipped !== undefined) return skipped
  // Set once the run starts; frames before that are the set-up's.
  const running: { watch?: Watch } = {}
  const http = Http.createServer()
  const server = new Server(http, {
    transports: ["websocket"],
    maxHttpBufferSize: Math.max(1e6, 2 * options.payloadBytes)
  })
  server.on("connection", (socket) => {
    socket.on("m", (bytes: Buffer, ack: () => void) => {
      running.watch?.delivered(indexOf(bytes), bytes)
      ack()
    })
  })
  await new Promise<void>((resolve, reject) => http.once("error", reject).listen(0, "127.0.0.1", resolve))
  const address = http.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  try {
    return await Browser.run(
      "socketIo",
      { url: `http://127.0.0.1:${port}`, window: String(options.window) },
      options,
      running
    )
  } finally {
    await server.close()
  }
}
