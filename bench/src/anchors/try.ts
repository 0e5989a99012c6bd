/**
 * Runs one anchor once and prints its Result as JSON. From /work/main:
 *   node --import tsx bench/src/anchors/try.ts rawTcp <pipelined|acked> [messages] [payloadBytes] [window]
 *   node --import tsx bench/src/anchors/try.ts mqtt <mosquitto|aedes> <1|2> [messages] [payloadBytes] [window]
 *   node --import tsx bench/src/anchors/try.ts socketIo [messages] [payloadBytes] [window]
 * messages defaults to 100000, payloadBytes to 128, window to the anchor's default.
 */
import type { Result } from "../Result.js"

const [anchor, ...rest] = process.argv.slice(2)
const numbers = (args: ReadonlyArray<string>) => {
  const [messages = "100000", payloadBytes = "128", window] = args
  return { messages: Number(messages), payloadBytes: Number(payloadBytes), ...(window === undefined ? {} : { window: Number(window) }) }
}

const run = async (): Promise<Result> => {
  switch (anchor) {
    case "rawTcp": {
      const [mode, ...tail] = rest
      if (mode !== "pipelined" && mode !== "acked") throw new Error("rawTcp needs mode pipelined or acked")
      return (await import("./rawTcp.js")).run({ mode, ...numbers(tail) })
    }
    case "mqtt": {
      const [broker, qos, ...tail] = rest
      if (broker !== "mosquitto" && broker !== "aedes") throw new Error("mqtt needs broker mosquitto or aedes")
      if (qos !== "1" && qos !== "2") throw new Error("mqtt needs qos 1 or 2")
      return (await import("./mqtt.js")).run({ broker, qos: qos === "1" ? 1 : 2, ...numbers(tail) })
    }
    case "socketIo":
      return (await import("./socketIo.js")).run(numbers(rest))
    default:
      throw new Error(`unknown anchor ${anchor ?? "(none)"}: rawTcp, mqtt or socketIo`)
  }
}

console.log(JSON.stringify(await run()))
