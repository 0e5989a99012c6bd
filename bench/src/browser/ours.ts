/**
 * Scenario 11: a browser tab streaming to a Node peer over WebSocket, as `examples/browser` pairs them. The tab's
 * engine (`page/ours.ts`, in Chromium) keeps its store in IndexedDB; the Node peer keeps its store in SQLite
 * (synchronous NORMAL, as in scenario 2) and takes the tab as a client.
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import { Network } from "@intersession/core/Network"
import * as PeerId from "@intersession/core/PeerId"
import * as SqliteBackend from "@intersession/platform-node/SqliteBackend"
import * as WebSocketNetwork from "@intersession/platform-node/WebSocketNetwork"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { Watch } from "../anchors/harness.js"
import { indexOf, type Result } from "../Result.js"
import * as Browser from "./harness.js"

const server = PeerId.make("bench-node")

export const run = async (options: Browser.Options): Promise<Result> =>
  Browser.withoutChromium(options.messages) ?? Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    // Set once the run starts; the application hands each message to it.
    const running: { watch?: Watch } = {}
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(join(tmpdir(), "intersession-bench-"))),
      (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
    )
    const network = yield* WebSocketNetwork.make({
      peer: server,
      listen: { host: "127.0.0.1", port: 0 },
      peers: new Map(),
      // Any tab may connect as the id it claims: the case measures messaging, not a login.
      clients: { verify: (request) => Effect.succeed(request.claimed) }
    }).pipe(Effect.provide(NodeSocket.layerWebSocketConstructor))
    yield* Layer.buildWithScope(
      ILM.layer().pipe(
        Layer.provide(
          Layer.succeed(
            Delivery.Delivery,
            Delivery.Delivery.of({
              deliver: (message) =>
                Effect.sync(() => running.watch?.delivered(indexOf(message.payload), message.payload))
            })
          )
        ),
        Layer.provide(Layer.succeed(Network, network)),
        Layer.provide(SqliteBackend.layer({ filename: join(dir, `${server}.db`), synchronous: "NORMAL" }))
      ),
      yield* Effect.scope
    )
    // The browser is closed before the engine: the tab leaves first, as a tab closing would. No latency: the tab
    // stores messages faster than they are delivered, so their ages on delivery measure the queue in its store.
    return yield* Effect.promise(() =>
      Browser.run("ours", { ws: network.url, server }, { ...options, latency: false }, running)
    )
  })))
