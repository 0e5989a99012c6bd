/**
 * A `Network` over WebSocket, so that an HTTP proxy, a load balancer or a browser can sit between peers. It is the
 * TCP network's protocol carried in binary WebSocket messages: the same frames (one `send` is one message), the
 * same pre-shared-key handshake, the same rule that keeps one connection per pair of peers, the same back-off and
 * keep-alive. Peers are dialled at a `ws://` or `wss://` URL; the listening side is a `ws` server.
 *
 * Every frame after the handshake is encrypted and authenticated as over TCP (see `protectFrames`): a proxy on the
 * path sees neither the frames nor can it change, replay or drop one without the connection being closed.
 *
 * Before it authenticates, a connection costs bounded memory, as over TCP: at most `maxUnauthenticated` at once
 * (`maxUnauthenticatedPerAddress` from one address), counted from the TCP accept, before the HTTP upgrade; a connection
 * over a cap is destroyed at once. Each is allowed `handshakeTimeout` to upgrade, then as much for the key handshake,
 * and 16 KiB after the upgrade, counted on the TCP socket as the bytes arrive: the `ws` server buffers a whole message
 * (up to its `maxPayload`, which authenticated peers need large) before it hands it on, so the bytes are counted under
 * it, and a client that announces a large message is destroyed after 16 KiB, not after the message. A connection
 * refused before authentication is destroyed, without a WebSocket close handshake that would keep it for `ws`'s close
 * timeout. Behind a proxy every connection comes from the proxy's address: raise `maxUnauthenticatedPerAddress`.
 *
 * @since 0.1.0
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as NodeSocketServer from "@effect/platform-node/NodeSocketServer"
import * as Socket from "@effect/platform/Socket"
import { Network } from "@intersession/core/Network"
import type { PeerId } from "@intersession/core/PeerId"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import type * as Subscribable from "effect/Subscribable"
import * as Crypto from "node:crypto"
import * as Http from "node:http"
import type * as NodeNet from "node:net"
import type * as Admission from "./internal/admission.js"
import type * as ClientHandshake from "./internal/clientHandshake.js"
import * as Clients from "./internal/clients.js"
import * as Net from "./internal/net.js"

/**
 * Peer id → the URL the peer is reached at (`ws://host:port/path`), shared by all peers: a fixed map, or one that
 * changes while the network runs. Every peer in it but the local one is dialled; only peers in it may connect.
 *
 * @since 0.1.0
 * @category models
 */
export type AddressBook = ReadonlyMap<PeerId, string> | Subscribable.Subscribable<ReadonlyMap<PeerId, string>>

/**
 * Settings of a WebSocket network. Every setting but `peer`, `listen`, `peers` and `key` has a default (see
 * {@link defaults}). `maxUnauthenticated` and `maxUnauthenticatedPerAddress` bound the connections that have not
 * authenticated yet, in all and per remote address (behind a proxy, the proxy's); one more is destroyed as soon as it
 * is accepted.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends Net.ConnectionOptions {
  /** The local peer's id. */
  readonly peer: PeerId
  /** Where the WebSocket server listens. Port 0 picks a free port; {@link WebSocketNetwork.url} tells which. */
  readonly listen: {
    /** The interface to listen on; every interface when absent. */
    readonly host?: string | undefined
    readonly port: number
    /** The only path upgrades are accepted on, `/intersession` say; any path when absent. */
    readonly path?: string | undefined
  }
  readonly peers: AddressBook
  /**
   * The pre-shared key every peer of the deployment holds: at least 16 bytes, a string taken as UTF-8. Or, to rotate
   * keys, a list of keys, current first: a peer proves the first key of its list that the other side holds, and
   * `connections` tells which (`keyIndex`). The acceptor's challenge is made with its current key, which the dialler
   * must hold: to rotate, add the new key last on every peer, then move it first on every peer, then remove the old.
   *
   * A peer that only takes `clients` may leave it out: no peer can then connect to it, nor it to a peer.
   */
  readonly key?:
    | Redacted.Redacted<string>
    | Redacted.Redacted<Uint8Array>
    | ReadonlyArray<
      Redacted.Redacted<string> | Redacted.Redacted<Uint8Array>
    >
    | undefined
  /**
   * Takes clients: peers outside the address book, such as browser tabs (`@intersession/platform-browser`), that hold
   * no pre-shared key and present a credential instead, which `verify` checks and binds to a peer id. Without it, a
   * client is refused (`NotAccepted`). See {@link ClientOptions}.
   */
  readonly clients?: ClientOptions | undefined
}

/**
 * How a WebSocket network takes clients. A client dials in, agrees keys with this peer (ephemeral P-256 ECDH, so its
 * frames are encrypted and authenticated as a peer's are), then presents its credential (a token, say) under that
 * protection. `verify` checks it and succeeds with the peer id the credential is for, which must be the id the client
 * claims and must not be in the address book; any failure refuses the client, which is told only `Unauthorized`.
 *
 * Each client is held to limits: `maxConnections` at once (2; the newest replaces the one in use, so a reload never
 * waits), `maxPendingBytes` that arrived from it and that the engine has not taken yet (32 MiB; past it the
 * connection closes, and the client sends again once reconnected — keep its `windowBytes` below this), and
 * `maxStreams` lanes it may send on, counted since the network started (64; frames on any other lane are dropped
 * unseen, so they stay pending on the client's side, and a warning is logged once per lane).
 *
 * The key exchange does not authenticate this peer to the client: clients must dial a `wss://` URL, whose TLS does.
 *
 * @since 0.3.0
 * @category models
 */
export type ClientOptions = Clients.ClientOptions

/**
 * What `verify` is given: the credential's bytes (a string credential as UTF-8), the peer id the client claims, and
 * the address it connects from (`host:port`, a proxy's behind a proxy).
 *
 * @since 0.3.0
 * @category models
 */
export type ClientRequest = ClientHandshake.ClientRequest

/**
 * The same defaults as the TCP network's.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults: Net.Settings = Net.defaults

/**
 * A connection in use, for diagnostics. `id` is the same on both ends; `dialled` says whether this side dialled it.
 *
 * @since 0.1.0
 * @category models
 */
export type ConnectionInfo = Net.ConnectionInfo

/**
 * Accepted connections before they authenticate, for diagnostics: how many there are now (`pending`), the most at
 * once (`peak`), and how many ended before authenticating, by reason (`failed`: `Busy` for those refused over a cap,
 * `TooManyBytes`, `HandshakeTimeout`, `Unauthenticated`, `UnknownPeer`, `Malformed`…).
 *
 * @since 0.3.0
 * @category models
 */
export type HandshakeStats = Net.HandshakeStats

/**
 * A WebSocket network: the `Network` service, the URL it is reached at, and its connections.
 *
 * @since 0.1.0
 * @category models
 */
export type WebSocketNetwork = Network["Type"] & {
  /** `ws://host:port/path` of the listening server, with the port picked when `listen.port` was 0. */
  readonly url: string
  /** The connections in use now, one per connected peer. */
  readonly connections: Net.NetworkWithConnections["connections"]
  /** Accepted connections before they authenticate: how many now, the most at once, and how those that failed ended. */
  readonly handshakes: Net.NetworkWithConnections["handshakes"]
  /** How many frames failed authentication since the network started (see `protectFrames`); each closed its connection. */
  readonly tampered: Net.NetworkWithConnections["tampered"]
}

/**
 * The network could not start: its options are invalid, or it cannot listen on the address.
 *
 * @since 0.1.0
 * @category errors
 */
export class WebSocketNetworkError extends Data.TaggedError("WebSocketNetworkError")<{
  readonly reason: "InvalidOptions" | "Listen"
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return `The WebSocket network cannot start (${this.reason}): ${this.detail}`
  }
}

const invalid = (detail: string) => new WebSocketNetworkError({ reason: "InvalidOptions", detail })

const connectionSettings = (options: Options) => {
  if (options.key !== undefined) return Either.mapLeft(Net.checkOptions({ ...options, key: options.key }), invalid)
  if (options.clients === undefined) return Either.left(invalid("key is required unless the network takes clients"))
  // Only clients: a random key that no peer holds, so that no peer connects.
  const key = Redacted.make(new Uint8Array(Crypto.randomBytes(32)))
  return Either.mapLeft(Net.checkOptions({ ...options, key }), invalid)
}

const clientSettings = (options: Options) =>
  options.clients === undefined
    ? Either.right(undefined)
    : Either.mapLeft(Clients.settings(options.clients), (problems) => invalid(problems.join("; ")))

const urlHost = (host: string) => (host.includes(":") ? `[${host}]` : host)

/**
 * The HTTP server under the `ws` server, made here so that every TCP connection is guarded from its accept:
 * `connection` takes a guard (or destroys the connection), and `upgrade` starts counting the bytes that arrive on the
 * socket before `ws` reads them (this listener comes first), so a large message is stopped as it arrives instead of
 * after `ws` buffered it. A plain HTTP request is answered `426 Upgrade Required` and closed.
 */
const httpServer = (admission: Admission.Admission) =>
  Effect.gen(function*() {
    const guards = new WeakMap<object, Admission.Guard>()
    const open = new Set<NodeNet.Socket>()
    let closed = false
    const server = Http.createServer((_request, response) => {
      response.writeHead(426, { "Content-Type": "text/plain", Connection: "close" })
      response.end("Upgrade Required")
    })
    server.on("connection", (raw: NodeNet.Socket) => {
      if (closed) {
        raw.destroy()
        return
      }
      const guard = admission.admit(raw.remoteAddress ?? "unknown", () => raw.destroy())
      if (guard === undefined) {
        raw.destroy()
        return
      }
      guards.set(raw, guard)
      open.add(raw)
      raw.once("close", () => {
        open.delete(raw)
        guard.release()
      })
    })
    server.on("upgrade", (_request, raw) => {
      const guard = guards.get(raw)
      if (guard === undefined) {
        raw.destroy()
        return
      }
      raw.on("data", (chunk: Uint8Array) => guard.arrived(chunk.length))
    })
    yield* Effect.addFinalizer(() =>
      Effect.async<void>((resume) => {
        closed = true
        for (const raw of open) raw.destroy()
        open.clear()
        if (!server.listening) return resume(Effect.void)
        server.close(() => resume(Effect.void))
      })
    )
    return { server, guards }
  })

/**
 * Starts a WebSocket network in the current scope: listens, then dials the peers of the address book with the
 * `WebSocketConstructor` in context. Closing the scope closes every connection and the server.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<WebSocketNetwork, WebSocketNetworkError, Scope.Scope | Socket.WebSocketConstructor> =>
  Effect.gen(function*() {
    const { keys, settings } = yield* connectionSettings(options)
    const clients = yield* clientSettings(options)
    const construct = yield* Socket.WebSocketConstructor
    // Binary messages as `ArrayBuffer`s: a `Blob` would be read asynchronously, and messages could overtake each other.
    const constructor = Socket.WebSocketConstructor.of((url, protocols) => {
      const socket = construct(url, protocols)
      socket.binaryType = "arraybuffer"
      return socket
    })
    const admission = Net.admission(settings)
    const http = yield* httpServer(admission)
    // The platform's server waits for `listening` from the `ws` server, which passes on the HTTP server's. So the HTTP
    // server starts listening as the `ws` server attaches to it (`upgrade` is the last event it listens to), as `ws`
    // itself does when it makes its own server; `listening` and any error come on a later tick.
    const startListening = (event: string | symbol) => {
      if (event !== "upgrade") return
      http.server.off("newListener", startListening)
      http.server.listen({
        port: options.listen.port,
        ...(options.listen.host === undefined ? {} : { host: options.listen.host })
      })
    }
    http.server.on("newListener", startListening)
    const server = yield* NodeSocketServer.makeWebSocket({
      server: http.server,
      // What an authenticated peer may send in one message; before authentication the guard stops a client long
      // before this.
      maxPayload: Net.maxWriteBytes(settings),
      ...(options.listen.path === undefined ? {} : { path: options.listen.path })
    }).pipe(
      Effect.mapError((cause) =>
        new WebSocketNetworkError({
          reason: "Listen",
          detail: `cannot listen on ${options.listen.host ?? "*"}:${options.listen.port}`,
          cause
        })
      )
    )
    const listening = server.address
    const url = listening._tag === "TcpAddress"
      ? `ws://${urlHost(listening.hostname)}:${listening.port}${options.listen.path ?? "/"}`
      : listening.path
    const network = yield* Net.make<string>({
      name: "websocket",
      local: options.peer,
      keys,
      book: options.peers,
      settings,
      admission,
      clients,
      transport: {
        dial: (to) =>
          Effect.provideService(
            Socket.makeWebSocket(to, { openTimeout: settings.handshakeTimeout }),
            Socket.WebSocketConstructor,
            constructor
          ),
        serve: (handler) =>
          server.run((socket) =>
            Effect.flatMap(Effect.serviceOption(NodeSocketServer.IncomingMessage), (request) => {
              // The platform provides the upgrade request of every connection; without it (and its socket's guard)
              // nothing can be guarded, and returning closes the connection.
              const raw = Option.isSome(request) ? request.value.socket : undefined
              const guard = raw === undefined ? undefined : http.guards.get(raw)
              if (raw === undefined || guard === undefined) return Effect.void
              return handler(socket, { remote: `${raw.remoteAddress}:${raw.remotePort}`, guard, countsBytes: true })
            })
          ),
        addressKey: (to) => to
      }
    })
    return { ...network, url } satisfies WebSocketNetwork
  })

/**
 * The `Network` of a WebSocket peer as a layer, dialling with the `ws` package's WebSocket (or Node's own where it
 * has one).
 *
 * @example
 * ```ts
 * import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
 * import * as FileSystem from "@effect/platform/FileSystem"
 * import * as Delivery from "@intersession/core/Delivery"
 * import * as ILM from "@intersession/core/ILM"
 * import * as PeerId from "@intersession/core/PeerId"
 * import * as SqliteBackend from "@intersession/platform-node/SqliteBackend"
 * import * as WebSocketNetwork from "@intersession/platform-node/WebSocketNetwork"
 * import * as Context from "effect/Context"
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 * import * as Redacted from "effect/Redacted"
 *
 * const alice = PeerId.make("alice")
 * const bob = PeerId.make("bob")
 * // The URL each peer is reached at: through a proxy or a load balancer, it is the proxy's.
 * const peers = new Map([[alice, "ws://127.0.0.1:47411/intersession"], [bob, "ws://127.0.0.1:47412/intersession"]])
 * const key = Redacted.make("the deployment's pre-shared key")
 *
 * const peer = (id: PeerId.PeerId, port: number, directory: string) =>
 *   ILM.layer().pipe(
 *     Layer.provideMerge(Delivery.layerInbox()),
 *     Layer.provide(
 *       WebSocketNetwork.layer({ peer: id, listen: { host: "127.0.0.1", port, path: "/intersession" }, peers, key })
 *     ),
 *     Layer.provide(SqliteBackend.layer({ filename: `${directory}/${id}.db` }))
 *   )
 *
 * const program = Effect.gen(function*() {
 *   const directory = yield* Effect.flatMap(FileSystem.FileSystem, (fs) => fs.makeTempDirectoryScoped())
 *   const sender = Context.get(yield* Layer.build(peer(alice, 47411, directory)), ILM.ILM)
 *   const inbox = Context.get(yield* Layer.build(peer(bob, 47412, directory)), Delivery.Inbox)
 *
 *   yield* sender.send(bob, new TextEncoder().encode("over WebSocket"))
 *   const message = yield* inbox.take
 *   console.log(`${message.source}: ${new TextDecoder().decode(message.payload)}`) // alice: over WebSocket
 *   yield* sender.drain("5 seconds")
 * })
 *
 * Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(NodeFileSystem.layer)))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Network, WebSocketNetworkError> =>
  Layer.scoped(Network, make(options)).pipe(Layer.provide(NodeSocket.layerWebSocketConstructor))
