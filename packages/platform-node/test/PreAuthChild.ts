/**
 * Run by PreAuthFlood.test.ts in a child process, so that its memory is the listener's alone: peer-a on a TCP or
 * WebSocket network (the first argument), with peer-b of the test process at the port given as the second argument.
 * It sends every frame it receives back to its sender, samples its own memory every 20 ms, and speaks one JSON line at
 * a time: `{"result":"listening","port":…}` once it listens; on the line `baseline` it collects garbage (under
 * `--expose-gc`) and starts the peaks over; on the line `report` it prints the baseline, the peaks since and its
 * handshake counters.
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as PeerId from "@intersession/core/PeerId"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import * as TcpNetwork from "../src/TcpNetwork.js"
import * as WebSocketNetwork from "../src/WebSocketNetwork.js"

const [transport = "tcp", peerPort = "0", extra = "{}"] = process.argv.slice(2)
const A = PeerId.make("peer-a")
const B = PeerId.make("peer-b")
const key = Redacted.make("the pre-shared key of the network tests")
/** Options beyond the defaults (the caps, say), as JSON. */
const options = JSON.parse(extra) as Record<string, unknown>

interface Memory {
  readonly rss: number
  readonly heapUsed: number
  readonly external: number
  readonly arrayBuffers: number
}

const sample = (): Memory => {
  const { arrayBuffers, external, heapUsed, rss } = process.memoryUsage()
  return { rss, heapUsed, external, arrayBuffers }
}

const max = (a: Memory, b: Memory): Memory => ({
  rss: Math.max(a.rss, b.rss),
  heapUsed: Math.max(a.heapUsed, b.heapUsed),
  external: Math.max(a.external, b.external),
  arrayBuffers: Math.max(a.arrayBuffers, b.arrayBuffers)
})

const print = (line: Record<string, unknown>) => Effect.sync(() => process.stdout.write(`${JSON.stringify(line)}\n`))

const collect = () => {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc !== undefined) gc()
}

const start = transport === "websocket"
  ? Effect.map(
    WebSocketNetwork.make({
      ...options,
      peer: A,
      listen: { host: "127.0.0.1", port: 0, path: "/intersession" },
      peers: new Map([[B, `ws://127.0.0.1:${peerPort}/intersession`]]),
      key
    }).pipe(Effect.provide(NodeSocket.layerWebSocketConstructor)),
    (network) => ({ network, port: Number(new URL(network.url).port) })
  )
  : Effect.map(
    TcpNetwork.make({
      ...options,
      peer: A,
      listen: { host: "127.0.0.1", port: 0 },
      peers: new Map([[B, { host: "127.0.0.1", port: Number(peerPort) }]]),
      key
    }),
    (network) => ({ network, port: network.address.port })
  )

const program = Effect.scoped(Effect.gen(function*() {
  const { network, port } = yield* start
  yield* Effect.forkScoped(
    Stream.runForEach(network.inbound, (inbound) => Effect.ignore(network.send(inbound.from, [inbound.frame])))
  )
  let baseline = sample()
  let peak = baseline
  const timer = setInterval(() => {
    peak = max(peak, sample())
  }, 20)
  yield* Effect.addFinalizer(() => Effect.sync(() => clearInterval(timer)))
  yield* print({ result: "listening", port })
  const lines = Stream.fromAsyncIterable(process.stdin.setEncoding("utf8"), (error) => error).pipe(
    Stream.splitLines
  )
  yield* Stream.runForEach(lines, (line) =>
    Effect.gen(function*() {
      if (line === "baseline") {
        collect()
        baseline = sample()
        peak = baseline
        return yield* print({ result: "baseline", baseline })
      }
      if (line === "report") {
        peak = max(peak, sample())
        return yield* print({ result: "report", baseline, peak, now: sample(), handshakes: yield* network.handshakes })
      }
      return yield* print({ result: "unknown", line })
    }))
}))

Effect.runPromise(program).then(() => process.exit(0), (error) => {
  process.stdout.write(`${JSON.stringify({ result: "crashed", detail: String(error) })}\n`)
  process.exit(1)
})
