/**
 * Anchor: MQTT through a broker, with MQTT.js (v5) clients in this process. A subscriber and a publisher, both with
 * persistent sessions (`clean: false`), on a topic of their own, at QoS 1 or 2; the publisher keeps at most
 * `window` publishes unacknowledged (PUBACK at QoS 1, PUBCOMP at QoS 2: the broker has taken responsibility), or,
 * with the window `"awaited"`, awaits each `publishAsync` before the next, as the simplest application would.
 * The broker is the local mosquitto on 127.0.0.1:1883 or an in-process aedes.
 */
import { Aedes } from "aedes"
import { connectAsync, type IClientOptions, type MqttClient } from "mqtt"
import { execFile } from "node:child_process"
import * as Net from "node:net"
import { indexOf, payload, type Result, Tally } from "../Result.js"
import { awaitEach, skipped, Watch, windowed } from "./harness.js"

export interface Options {
  readonly messages: number
  readonly payloadBytes: number
  readonly qos: 1 | 2
  readonly broker: "mosquitto" | "aedes"
  /** Publishes unacknowledged at most; `"awaited"`: one `publishAsync` at a time. */
  readonly window?: number | "awaited"
}

const mosquittoPort = 1883

const reachable = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = Net.connect(port, "127.0.0.1")
    const settle = (up: boolean) => {
      socket.destroy()
      resolve(up)
    }
    socket.setTimeout(1_000, () => settle(false))
    socket.once("connect", () => settle(true)).once("error", () => settle(false))
  })

/** Undefined when mosquitto listens on 127.0.0.1:1883 (starting it if it is installed), else why not. */
export const ensureMosquitto = async (): Promise<string | undefined> => {
  if (await reachable(mosquittoPort)) return undefined
  const started = await new Promise<string | undefined>((resolve) =>
    execFile("mosquitto", ["-d", "-c", "/etc/mosquitto/mosquitto.conf"], (error) =>
      resolve(
        error === null
          ? undefined
          : "code" in error && error.code === "ENOENT"
          ? "mosquitto is not installed and nothing listens on 127.0.0.1:1883"
          : `mosquitto failed to start: ${error.message}`
      ))
  )
  if (started !== undefined) return started
  for (let waited = 0; waited < 5_000; waited += 250) {
    if (await reachable(mosquittoPort)) return undefined
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  return "mosquitto was started but 127.0.0.1:1883 did not open within 5 s"
}

interface Broker {
  readonly url: string
  readonly close: () => Promise<void>
}

const aedesBroker = async (): Promise<Broker> => {
  const aedes = await Aedes.createBroker()
  const server = Net.createServer(aedes.handle)
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve))
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  return {
    url: `mqtt://127.0.0.1:${port}`,
    close: async () => {
      await new Promise<void>((resolve) => aedes.close(() => resolve()))
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

export const run = async (options: Options): Promise<Result> => {
  const { messages, payloadBytes, qos } = options
  const window = options.window ?? 64
  let broker: Broker
  if (options.broker === "mosquitto") {
    const reason = await ensureMosquitto()
    if (reason !== undefined) return skipped(messages, reason)
    broker = { url: `mqtt://127.0.0.1:${mosquittoPort}`, close: async () => {} }
  } else {
    broker = await aedesBroker()
  }

  // Unique per run, so no session or retained state of an earlier run interferes.
  const id = `bench-${process.pid}-${Date.now().toString(36)}`
  const topic = `bench/${id}`
  const clientOptions = (role: string): IClientOptions => ({ clientId: `${id}-${role}`, clean: false })
  const tally = new Tally(messages)
  // Set once the run starts; frames before that are the set-up's.
  const running: { watch?: Watch } = {}

  const subscriber = await connectAsync(broker.url, clientOptions("sub"))
  subscriber.on("message", (_topic, bytes) => running.watch?.delivered(indexOf(bytes), bytes))
  await subscriber.subscribeAsync(topic, { qos })
  const publisher = await connectAsync(broker.url, clientOptions("pub"))

  const current = new Watch(tally, messages)
  running.watch = current
  const message = (index: number): Buffer => {
    const bytes = payload(index, payloadBytes)
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }
  if (window === "awaited") {
    void awaitEach(messages, current, (index) => publisher.publishAsync(topic, message(index), { qos }))
  } else {
    windowed(messages, window, (index, done) => {
      publisher.publish(topic, message(index), { qos }, (error) => done(error === undefined || error === null))
    }, current)
  }
  await current.finished
  const result = current.result()

  await Promise.all([publisher.endAsync(true), subscriber.endAsync(true)])
  await forgetSessions(broker.url, [clientOptions("pub"), clientOptions("sub")])
  await broker.close()
  return result
}

/** Connects once more with `clean: true`, so the broker (mosquitto persists sessions) drops this run's sessions. */
const forgetSessions = (url: string, sessions: ReadonlyArray<IClientOptions>): Promise<unknown> =>
  Promise.all(sessions.map(async (session) => {
    const client: MqttClient = await connectAsync(url, { ...session, clean: true, reconnectPeriod: 0 })
    await client.endAsync()
  }))
