/**
 * Every benchmark case, ours and the anchors', with its full and quick size. A case imports its module only when
 * it runs, so the child process that runs it loads nothing else.
 */
import type { Transport } from "./ours/peers.js"
import type { Result } from "./Result.js"

export interface Case {
  /** Stable and unique; `--only` matches a substring of it. */
  readonly id: string
  /** The issue's scenario number for ours, "anchor" for the others. */
  readonly scenario: string
  readonly label: string
  /** A shorter label for the chart, where the row has less room. */
  readonly short?: string
  readonly stack: "ours" | "anchor"
  /**
   * Set on a one-way stream of 128-byte messages between two peers: charted, and compared with the other stack's
   * cases of the same kind. A "stream" keeps many messages in flight; "awaited" sends one at a time, each awaited
   * before the next; "browser" streams from a browser tab to Node, where the browser's costs weigh in (so it is
   * compared with the browser's anchor only).
   */
  readonly compared?: Comparison | undefined
  /** The anchor needs mosquitto on 127.0.0.1:1883: `main` checks once instead of every child. */
  readonly needsMosquitto?: boolean
  /** Node flags the case's child process runs with. */
  readonly nodeArgs?: ReadonlyArray<string>
  readonly run: (quick: boolean) => Promise<Result>
}

export type Comparison = "stream" | "awaited" | "browser"

const normal: Transport = { _tag: "tcp-sqlite", synchronous: "NORMAL" }
const full: Transport = { _tag: "tcp-sqlite", synchronous: "FULL" }
/** Messages a throughput case moves in quick mode: enough to exercise it, not to measure it. */
const quickMessages = 2_000
/** Messages of the cases that send one at a time (scenario 10 and its anchor). */
const awaitedMessages = 20_000
const awaitedCount = `${awaitedMessages / 1_000}k`
/** Messages of the browser cases (scenario 11 and its anchor). */
const browserMessages = 20_000
const browserCount = `${browserMessages / 1_000}k`

/**
 * One of ours' streams; `short` is given to the 128-byte two-peer streams, charted and compared under it.
 * `oneAtATime` sends with one `send` call at a time, each awaited before the next, instead of `sendAll` calls, and
 * reports when the first message was delivered.
 */
const stream = (
  id: string,
  scenario: string,
  label: string,
  options: {
    transport: Transport
    messages: number
    quick?: number
    payloadBytes?: number
    receivers?: number
    window?: number
    receiverProcesses?: boolean
    oneAtATime?: boolean
  },
  short?: string
): Case => ({
  id,
  scenario,
  label,
  ...(short === undefined ? {} : { short, compared: options.oneAtATime === true ? "awaited" : "stream" }),
  stack: "ours",
  run: async (quick) =>
    (await import("./ours/stream.js")).run({
      transport: options.transport,
      messages: quick ? options.quick ?? quickMessages : options.messages,
      payloadBytes: options.payloadBytes ?? 128,
      receivers: options.receivers,
      window: options.window,
      receiverProcesses: options.receiverProcesses,
      ...(options.oneAtATime === true ? { send: { batch: 1, concurrency: 1 }, timeFirstDelivery: true } : {})
    })
})

/**
 * Window sizes of scenario 4 with their message counts: at a 10 ms round trip a window of w moves at most about
 * 100·w msg/s, so each count keeps a case to a few seconds (quick: about one).
 */
const windows: ReadonlyArray<readonly [window: number, messages: number, quick: number]> = [
  [1, 300, 100],
  [8, 3_000, 800],
  [64, 20_000, 4_000],
  [256, 50_000, 4_000],
  [1024, 100_000, 6_000]
]

const payloads: ReadonlyArray<readonly [name: string, bytes: number, messages: number]> = [
  ["16B", 16, 100_000],
  ["1KiB", 1024, 100_000],
  // 64 KiB × 100k would be 6.4 GB through SQLite: fewer messages keep the case to seconds.
  ["64KiB", 64 * 1024, 10_000]
]

const rawTcp = (
  id: string,
  label: string,
  mode: "pipelined" | "acked",
  payloadBytes: number,
  compared?: Comparison
): Case => ({
  id,
  scenario: "anchor",
  label,
  stack: "anchor",
  compared,
  run: async (quick) =>
    (await import("./anchors/rawTcp.js")).run({
      mode,
      messages: quick ? quickMessages : payloadBytes > 8 * 1024 ? 10_000 : 100_000,
      payloadBytes,
      window: 64
    })
})

/** MQTT's window: the anchor's author found 256 publishes in flight to be MQTT.js's best. */
const mqttWindow = 256

/** An MQTT anchor: `mqttWindow` publishes in flight, or (`awaited`) one `publishAsync` at a time, each awaited. */
const mqtt = (broker: "mosquitto" | "aedes", qos: 1 | 2, compared: Comparison = "stream"): Case => ({
  id: `anchor.mqtt.${broker}-qos${qos}${compared === "awaited" ? "-awaited" : ""}`,
  scenario: "anchor",
  label: `MQTT.js → ${broker} QoS ${qos}, clean:false, ${
    compared === "awaited" ? `one awaited publishAsync at a time, ${awaitedCount}` : `window ${mqttWindow}`
  }`,
  ...(compared === "awaited" ? { short: `MQTT.js → ${broker} QoS ${qos}, one awaited at a time` } : {}),
  stack: "anchor",
  compared,
  needsMosquitto: broker === "mosquitto",
  run: async (quick) =>
    (await import("./anchors/mqtt.js")).run({
      broker,
      qos,
      messages: quick ? quickMessages : compared === "awaited" ? awaitedMessages : 100_000,
      payloadBytes: 128,
      window: compared === "awaited" ? "awaited" : mqttWindow
    })
})

export const cases: ReadonlyArray<Case> = [
  stream("ours.s1.memory", "1", "in-memory network + backend, 100k", {
    transport: { _tag: "memory" },
    messages: 100_000
  }, "ours: in-memory network + backend"),
  stream(
    "ours.s2.tcp-sqlite-normal",
    "2",
    "TCP + SQLite NORMAL, 100k, receiver in its own process",
    { transport: normal, messages: 100_000, receiverProcesses: true },
    "ours: TCP + SQLite NORMAL"
  ),
  stream(
    "ours.s3.tcp-sqlite-full",
    "3",
    "TCP + SQLite FULL, 100k, receiver in its own process",
    { transport: full, messages: 100_000, receiverProcesses: true },
    "ours: TCP + SQLite FULL"
  ),
  ...windows.map(([window, messages, quick]) =>
    stream(`ours.s4.window-${window}`, "4", `window ${window}, 10 ms RTT, ${messages.toLocaleString("en")}`, {
      transport: { _tag: "memory", rttMillis: 10 },
      messages,
      quick,
      window
    })
  ),
  {
    id: "ours.s5.latency",
    scenario: "5",
    label: "latency at 1,000 msg/s for 10 s after 2 s warm-up, TCP + SQLite NORMAL",
    short: "ours: TCP + SQLite NORMAL",
    stack: "ours",
    run: async (quick) =>
      (await import("./ours/latency.js")).run({
        seconds: quick ? 1 : 10,
        warmupSeconds: quick ? 0.5 : 2,
        ratePerSecond: 1_000
      })
  },
  {
    id: "ours.s6.backlog",
    scenario: "6",
    label: "backlog of 100k for an absent peer, from its start",
    stack: "ours",
    run: async (quick) => (await import("./ours/backlog.js")).run({ messages: quick ? quickMessages : 100_000 })
  },
  {
    id: "ours.s7.memory",
    scenario: "7",
    label: "1M pending for an absent peer, SQLite, V8 old space capped at 64 MB: peak RSS",
    stack: "ours",
    // V8 grows its heap long before it collects: a cap makes the peak show what the process needs, not what the
    // collector has not yet reclaimed. With a backlog held in memory the process would die here.
    nodeArgs: ["--max-old-space-size=64"],
    run: async (quick) => (await import("./ours/memory.js")).run({ messages: quick ? 20_000 : 1_000_000 })
  },
  // Fan-out runs on the in-memory network: 101 peers on TCP dial one another (peers.ts gives each the whole
  // address book), and that setup alone outlasts the case; here the engine's cost of many streams is measured.
  stream("ours.s8.fanout-10", "8", "fan-out to 10 peers, 10k each, in-memory", {
    transport: { _tag: "memory" },
    messages: 10_000,
    quick: 200,
    receivers: 10
  }),
  stream("ours.s8.fanout-100", "8", "fan-out to 100 peers, 1k each, in-memory", {
    transport: { _tag: "memory" },
    messages: 1_000,
    quick: 50,
    receivers: 100
  }),
  ...payloads.map(([name, bytes, messages]) =>
    stream(`ours.s9.payload-${name}`, "9", `${name} payloads, TCP + SQLite NORMAL, ${messages.toLocaleString("en")}`, {
      transport: normal,
      messages,
      payloadBytes: bytes,
      receiverProcesses: true
    })
  ),
  stream("ours.s10.awaited-memory", "10", `one awaited send at a time, in-memory network + backend, ${awaitedCount}`, {
    transport: { _tag: "memory" },
    messages: awaitedMessages,
    oneAtATime: true
  }, "ours: in-memory, one awaited send at a time"),
  stream(
    "ours.s10.awaited-tcp-sqlite-normal",
    "10",
    `one awaited send at a time, TCP + SQLite NORMAL, ${awaitedCount}, receiver in its own process`,
    { transport: normal, messages: awaitedMessages, receiverProcesses: true, oneAtATime: true },
    "ours: TCP + SQLite NORMAL, one awaited send at a time"
  ),
  {
    id: "ours.s11.browser",
    scenario: "11",
    label: `browser tab (Chromium, IndexedDB) → Node (SQLite NORMAL) over WebSocket, ${browserCount}`,
    short: "ours: browser tab → Node, IndexedDB + SQLite",
    stack: "ours",
    compared: "browser",
    run: async (quick) =>
      (await import("./browser/ours.js")).run({ messages: quick ? quickMessages : browserMessages, payloadBytes: 128 })
  },
  rawTcp("anchor.rawTcp.pipelined", "raw TCP pipelined, no acks", "pipelined", 128, "stream"),
  rawTcp("anchor.rawTcp.acked", "raw TCP, ack per message, window 64", "acked", 128, "stream"),
  ...payloads.map(([name, bytes]) =>
    rawTcp(`anchor.rawTcp.acked-${name}`, `raw TCP acked, window 64, ${name} payloads`, "acked", bytes)
  ),
  mqtt("mosquitto", 1),
  mqtt("mosquitto", 2),
  mqtt("mosquitto", 1, "awaited"),
  mqtt("aedes", 1),
  mqtt("aedes", 2),
  {
    id: "anchor.socketIo",
    scenario: "anchor",
    label: "socket.io emitWithAck, window 64",
    stack: "anchor",
    compared: "stream",
    run: async (quick) =>
      (await import("./anchors/socketIo.js")).run({
        messages: quick ? quickMessages : 100_000,
        payloadBytes: 128,
        window: 64
      })
  },
  {
    id: "anchor.socketIo.browser",
    scenario: "anchor",
    label: `socket.io-client in Chromium → Node, emitWithAck, window 64, ${browserCount}`,
    short: "socket.io: browser tab → Node, window 64",
    stack: "anchor",
    compared: "browser",
    run: async (quick) =>
      (await import("./browser/socketIo.js")).run({
        messages: quick ? quickMessages : browserMessages,
        payloadBytes: 128,
        window: 64
      })
  }
]

export const caseById = (id: string): Case | undefined => cases.find((c) => c.id === id)
