/**
 * The @intersession peers of a case: in this process, on the in-memory network or on TCP with SQLite, or a TCP
 * receiver in a process of its own (`remote.ts`).
 */
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import type * as IlmConfig from "@intersession/core/IlmConfig"
import type { Message } from "@intersession/core/Message"
import * as PeerId from "@intersession/core/PeerId"
import * as SqliteBackend from "@intersession/platform-node/SqliteBackend"
import * as TcpNetwork from "@intersession/platform-node/TcpNetwork"
import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import { mkdtempSync, rmSync } from "node:fs"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Remote from "./remote.js"

export type Transport =
  | { readonly _tag: "memory"; readonly rttMillis?: number | undefined }
  | { readonly _tag: "tcp-sqlite"; readonly synchronous: "NORMAL" | "FULL" }

export interface Cluster {
  /** Starts the engine of peer `id` delivering to `deliver`; its scope is the cluster's. */
  readonly start: (
    id: PeerId.PeerId,
    deliver: (message: Message) => void,
    config?: IlmConfig.Options
  ) => Effect.Effect<ILM.ILM["Type"], unknown>
  /**
   * Starts peer `id` in a process of its own (TCP only), as a real deployment runs it, counting what it receives;
   * it stops with the cluster's scope.
   */
  readonly startProcess: (id: PeerId.PeerId, options: Remote.Options) => Effect.Effect<Remote.Receiver, Error>
}

/** Where the peers of a TCP cluster listen and keep their stores. */
export interface TcpSetup {
  readonly addresses: ReadonlyArray<readonly [PeerId.PeerId, TcpNetwork.Address]>
  readonly dir: string
  readonly synchronous: "NORMAL" | "FULL"
}

/**
 * Whether TCP links seal their frames (the default). `BENCH_UNPROTECTED_FRAMES=1` turns it off in a run, and in its
 * receiver processes, which inherit the environment: to measure what the protection costs.
 */
const protectFrames = process.env["BENCH_UNPROTECTED_FRAMES"] !== "1"

/** The layer of one peer of a TCP cluster. */
export const tcpPeer = (
  setup: TcpSetup,
  id: PeerId.PeerId,
  deliver: (message: Message) => void,
  config?: IlmConfig.Options
) => {
  const addresses = new Map(setup.addresses)
  return ILM.layer(config).pipe(
    Layer.provide(deliveryOf(deliver)),
    Layer.provide(TcpNetwork.layer({ peer: id, listen: addresses.get(id)!, peers: addresses, key, protectFrames })),
    Layer.provide(SqliteBackend.layer({ filename: join(setup.dir, `${id}.db`), synchronous: setup.synchronous }))
  )
}

const deliveryOf = (deliver: (message: Message) => void) =>
  Layer.succeed(
    Delivery.Delivery,
    Delivery.Delivery.of({ deliver: (message) => Effect.sync(() => deliver(message)) })
  )

const freePort = Effect.async<number>((resume) => {
  const server = Net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

const key = Redacted.make("the benchmark's pre-shared key")

/** Peers `ids` on one transport. SQLite files live in a temporary directory removed with the scope. */
export const cluster = (
  transport: Transport,
  ids: ReadonlyArray<PeerId.PeerId>
): Effect.Effect<Cluster, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const build = <E>(layer: Layer.Layer<ILM.ILM, E>) =>
      Effect.map(Layer.buildWithScope(layer, scope), (context) => Context.get(context, ILM.ILM))

    if (transport._tag === "memory") {
      const hub = yield* InMemoryNetwork.make()
      if (transport.rttMillis !== undefined) yield* hub.setFaults({ delay: `${transport.rttMillis / 2} millis` })
      return {
        start: (id, deliver, config) =>
          build(
            ILM.layer(config).pipe(
              Layer.provide(deliveryOf(deliver)),
              Layer.provide(hub.layer(id)),
              Layer.provide(InMemoryBackend.layerFresh)
            )
          ),
        startProcess: () => Effect.fail(new Error("a peer of the in-memory network cannot run in another process"))
      }
    }
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(join(tmpdir(), "intersession-bench-"))),
      (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
    )
    const addresses: Array<readonly [PeerId.PeerId, TcpNetwork.Address]> = []
    for (const id of ids) addresses.push([id, { host: "127.0.0.1", port: yield* freePort }])
    const setup: TcpSetup = { addresses, dir, synchronous: transport.synchronous }
    return {
      start: (id, deliver, config) => build(tcpPeer(setup, id, deliver, config)),
      startProcess: (id, options) => Effect.provideService(Remote.start(setup, id, options), Scope.Scope, scope)
    }
  })

export const peerIds = (count: number, prefix: string): Array<PeerId.PeerId> =>
  Array.from({ length: count }, (_, i) => PeerId.make(`${prefix}${i}`))
