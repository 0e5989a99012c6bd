/**
 * A `Network` over TCP. Each peer listens on an address, dials every other peer of a shared address book, and
 * accepts the peers that dial it; between two peers exactly one connection is in use at a time.
 *
 * - Frames are length-prefixed (4 bytes, big-endian) with a type byte; a frame over `maxFrameSize`, or bytes that
 *   are not frames, close that connection (with a log line saying why) and nothing else. One `send` is one socket
 *   write (split only past 4 MiB).
 * - Every connection starts with a handshake that proves both ends hold the pre-shared key (HMAC-SHA256 over nonces
 *   of both sides and both ids, compared in constant time), so a process without the key cannot claim any id.
 *   A peer id not in the address book is refused. `Inbound.from` is the peer the handshake authenticated.
 * - When both peers dial at once, the peer with the lower id decides which connection is kept (its own dial), and
 *   the other side uses a connection only once told to keep it.
 * - A lost peer is dialled again with exponential back-off and jitter. Both sides send a `Ping` every
 *   `pingInterval`; a connection on which nothing arrives for `idleTimeout` is closed, so a half-open connection
 *   is found.
 * - Before it authenticates, an accepted connection costs bounded memory: at most `maxUnauthenticated` of them at
 *   once (`maxUnauthenticatedPerAddress` from one address), each allowed 16 KiB and `handshakeTimeout` (over TLS:
 *   `handshakeTimeout` for the TLS handshake, then as much for the key handshake). Over a bound, a connection is
 *   destroyed at once, as is any connection refused before authentication; `handshakes` counts them by reason.
 * - A client learns nothing about the address book without the key: every `Hello` gets a `Challenge`, and an id
 *   that is not in the book is refused only at the proof, exactly as a wrong proof is.
 * - Every frame after the handshake is encrypted and authenticated (AES-256-GCM, a key per direction derived with
 *   HKDF from the pre-shared key, both nonces and both ids, a counter nonce; each write of frames is sealed as one
 *   record), so a frame read, altered, replayed, reordered, dropped or forged on the path is seen: the connection is
 *   closed and counted in `tampered`. The
 *   `protectFrames` option turns it off, for a path protected otherwise.
 * - With `tls` set, every connection is TLS with mutual authentication: each side presents its certificate and
 *   requires the other's to chain to the deployment's CA, and the pre-shared-key handshake still runs inside the TLS
 *   stream. The certificate proves membership of the deployment; the handshake establishes the peer id. Server
 *   names are not checked, so peers may be addressed by IP. A client whose TLS handshake fails (no certificate, one
 *   from another CA, plain TCP) is dropped with a `TlsHandshake` warning.
 *
 * @since 0.1.0
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as NodeSocketServer from "@effect/platform-node/NodeSocketServer"
import { Network } from "@intersession/core/Network"
import type { PeerId } from "@intersession/core/PeerId"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import type * as Subscribable from "effect/Subscribable"
import type * as Admission from "./internal/admission.js"
import * as Net from "./internal/net.js"
import * as Tls from "./internal/tls.js"

/**
 * PEM material for TLS with mutual authentication (see {@link Options.tls}): the peer's private key (`key`, a string
 * or bytes, optionally `Redacted`), its certificate chain (`cert`), and the CA the other peers' certificates must
 * chain to (`ca`).
 *
 * @since 0.1.0
 * @category models
 */
export type TlsOptions = Tls.TlsOptions

/**
 * Where a peer listens.
 *
 * @since 0.1.0
 * @category models
 */
export interface Address {
  readonly host: string
  readonly port: number
}

/**
 * Peer id → address, shared by all peers: a fixed map, or one that changes while the network runs (a
 * `SubscriptionRef`, say). Every peer in it but the local one is dialled; only peers in it may connect. A peer that
 * leaves it is disconnected; a peer whose address changes is dialled at the new one.
 *
 * @since 0.1.0
 * @category models
 */
export type AddressBook = ReadonlyMap<PeerId, Address> | Subscribable.Subscribable<ReadonlyMap<PeerId, Address>>

/**
 * Settings of a TCP network. Durations take any `Duration.DurationInput`; every setting but `peer`, `listen`,
 * `peers` and `key` has a default (see {@link defaults}). `maxUnauthenticated` and `maxUnauthenticatedPerAddress`
 * bound the connections that have not authenticated yet, in all and per remote address; one more is destroyed as soon
 * as it is accepted.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends Net.ConnectionOptions {
  /** The local peer's id. */
  readonly peer: PeerId
  /** Where to listen. Port 0 picks a free port; {@link TcpNetwork.address} tells which. */
  readonly listen: {
    /** The interface to listen on; every interface when absent. */
    readonly host?: string | undefined
    readonly port: number
  }
  readonly peers: AddressBook
  /**
   * The pre-shared key every peer of the deployment holds: at least 16 bytes, a string taken as UTF-8. Or, to rotate
   * keys, a list of keys, current first: a peer proves the first key of its list that the other side holds, and
   * `connections` tells which (`keyIndex`). The acceptor's challenge is made with its current key, which the dialler
   * must hold: to rotate, add the new key last on every peer, then move it first on every peer, then remove the old.
   */
  readonly key:
    | Redacted.Redacted<string>
    | Redacted.Redacted<Uint8Array>
    | ReadonlyArray<
      Redacted.Redacted<string> | Redacted.Redacted<Uint8Array>
    >
  /**
   * Run every connection over TLS with mutual authentication: this peer presents `cert` (with `key`) and requires
   * the other side's certificate to chain to `ca`. Every peer of the deployment must set it. The pre-shared-key
   * handshake still runs inside TLS and establishes the peer id; the server name is not checked. Plain TCP when
   * absent.
   */
  readonly tls?: TlsOptions | undefined
}

/**
 * The defaults: frames up to 1 MiB + 64 KiB (the engine's default largest payload plus room for its fields), 10 s
 * to open a connection and finish its handshake, a `Ping` every 5 s, connections closed after 20 s without
 * traffic, dialling again after 100 ms, doubling with jitter up to 10 s, and at most 128 connections that have not
 * authenticated yet, 32 of them from one address.
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
 * `TooManyBytes`, `HandshakeTimeout`, `Unauthenticated`, `UnknownPeer`, `Malformed`, `TlsHandshake`…).
 *
 * @since 0.3.0
 * @category models
 */
export type HandshakeStats = Net.HandshakeStats

/**
 * A TCP network: the `Network` service, the address it listens on, and its connections.
 *
 * @since 0.1.0
 * @category models
 */
export type TcpNetwork = Network["Type"] & {
  /** The address the network listens on, with the port picked when `listen.port` was 0. */
  readonly address: Address
  /** The connections in use now, one per connected peer. */
  readonly connections: Net.NetworkWithConnections["connections"]
  /** Accepted connections before they authenticate: how many now, the most at once, and how those that failed ended. */
  readonly handshakes: Net.NetworkWithConnections["handshakes"]
  /** How many records failed authentication since the network started (see `protectFrames`); each closed its connection. */
  readonly tampered: Net.NetworkWithConnections["tampered"]
}

/**
 * The network could not start: its options are invalid, or it cannot listen on the address.
 *
 * @since 0.1.0
 * @category errors
 */
export class TcpNetworkError extends Data.TaggedError("TcpNetworkError")<{
  readonly reason: "InvalidOptions" | "Listen"
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return `The TCP network cannot start (${this.reason}): ${this.detail}`
  }
}

const invalid = (detail: string) => new TcpNetworkError({ reason: "InvalidOptions", detail })

const connectionSettings = (options: Options) => Either.mapLeft(Net.checkOptions(options), invalid)

const addressKey = (to: Address) => `${to.host}:${to.port}`

/**
 * Plain TCP: the platform's listener and sockets. A connection takes its guard as its handler starts; one that gets
 * none is destroyed there and then.
 */
const plainListener = (
  options: Options,
  settings: Net.Settings,
  admission: Admission.Admission,
  listenError: (cause: unknown) => TcpNetworkError
) =>
  Effect.gen(function*() {
    const server = yield* NodeSocketServer.make({
      port: options.listen.port,
      noDelay: true,
      ...(options.listen.host === undefined ? {} : { host: options.listen.host })
    }).pipe(Effect.mapError(listenError))
    const listening = server.address
    const address: Address = listening._tag === "TcpAddress"
      ? { host: listening.hostname, port: listening.port }
      : { host: listening.path, port: 0 }
    const transport: Net.Transport<Address> = {
      dial: (to) =>
        NodeSocket.makeNet({ host: to.host, port: to.port, noDelay: true, openTimeout: settings.handshakeTimeout }),
      serve: (handler) =>
        server.run((socket) =>
          Effect.flatMap(Effect.serviceOption(NodeSocket.NetSocket), (net) => {
            // The platform provides the Node socket of every connection it accepts; without it nothing can be
            // guarded, and returning closes the connection.
            if (Option.isNone(net)) return Effect.void
            const conn = net.value
            const guard = admission.admit(conn.remoteAddress ?? "unknown", () => conn.destroy())
            if (guard === undefined) return Effect.sync(() => conn.destroy())
            return handler(socket, { remote: `${conn.remoteAddress}:${conn.remotePort}`, guard, countsBytes: false })
          })
        ),
      addressKey
    }
    return { address, transport }
  })

/**
 * Starts a TCP network in the current scope: listens, then dials the peers of the address book. Closing the scope
 * closes every connection and the listener.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<TcpNetwork, TcpNetworkError, Scope.Scope> =>
  Effect.gen(function*() {
    const { keys, settings } = yield* connectionSettings(options)
    const credentials = options.tls === undefined
      ? undefined
      : yield* Either.mapLeft(Tls.credentials(options.tls), invalid)
    const listenError = (cause: unknown) =>
      new TcpNetworkError({
        reason: "Listen",
        detail: `cannot listen on ${options.listen.host ?? "*"}:${options.listen.port}`,
        cause
      })
    const admission = Net.admission(settings)
    const listener: {
      readonly address: Address
      readonly transport: Net.Transport<Address>
    } = credentials === undefined
      ? yield* plainListener(options, settings, admission, listenError)
      : yield* Effect.map(
        Effect.mapError(
          Tls.listen({
            host: options.listen.host,
            port: options.listen.port,
            credentials,
            handshakeTimeout: settings.handshakeTimeout,
            admission
          }),
          listenError
        ),
        (tls) => ({
          address: tls.address,
          transport: {
            dial: (to: Address) => Tls.dial(to, credentials, settings.handshakeTimeout),
            serve: tls.serve,
            addressKey
          }
        })
      )
    const network = yield* Net.make<Address>({
      name: "tcp",
      local: options.peer,
      keys,
      book: options.peers,
      settings,
      transport: listener.transport,
      admission
    })
    const address = listener.address
    return { ...network, address } satisfies TcpNetwork
  })

/**
 * The `Network` of a TCP peer as a layer.
 *
 * @example
 * ```ts
 * import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
 * import * as FileSystem from "@effect/platform/FileSystem"
 * import * as Delivery from "@intersession/core/Delivery"
 * import * as ILM from "@intersession/core/ILM"
 * import * as PeerId from "@intersession/core/PeerId"
 * import * as SqliteBackend from "@intersession/platform-node/SqliteBackend"
 * import * as TcpNetwork from "@intersession/platform-node/TcpNetwork"
 * import * as Context from "effect/Context"
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 * import * as Redacted from "effect/Redacted"
 *
 * const alice = PeerId.make("alice")
 * const bob = PeerId.make("bob")
 * // Every peer of the deployment has the same address book and the same pre-shared key.
 * const peers = new Map([[alice, { host: "127.0.0.1", port: 47401 }], [bob, { host: "127.0.0.1", port: 47402 }]])
 * const key = Redacted.make("the deployment's pre-shared key")
 *
 * const peer = (id: PeerId.PeerId, directory: string) =>
 *   ILM.layer().pipe(
 *     Layer.provideMerge(Delivery.layerInbox()),
 *     Layer.provide(TcpNetwork.layer({ peer: id, listen: peers.get(id)!, peers, key })),
 *     Layer.provide(SqliteBackend.layer({ filename: `${directory}/${id}.db` }))
 *   )
 *
 * const program = Effect.gen(function*() {
 *   const directory = yield* Effect.flatMap(FileSystem.FileSystem, (fs) => fs.makeTempDirectoryScoped())
 *   const sender = Context.get(yield* Layer.build(peer(alice, directory)), ILM.ILM)
 *   const inbox = Context.get(yield* Layer.build(peer(bob, directory)), Delivery.Inbox)
 *
 *   yield* sender.send(bob, new TextEncoder().encode("over TCP"))
 *   const message = yield* inbox.take
 *   console.log(`${message.source}: ${new TextDecoder().decode(message.payload)}`) // alice: over TCP
 *   yield* sender.drain("5 seconds")
 * })
 *
 * Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(NodeFileSystem.layer)))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Network, TcpNetworkError> => Layer.scoped(Network, make(options))
