/**
 * The part of the TCP and WebSocket networks that does not depend on the transport: settings, the address book,
 * dialling with back-off, the handshake and verdict on every connection, keep-alive, and the `Network` service.
 *
 * A connection goes through: open (dial or accept) → handshake (`handshake.ts`, bounded by `handshakeTimeout`) →
 * verdict of the lower peer id (`netRegistry.ts`) → in use: `Data` frames go to `inbound`, a `Ping` goes out every
 * `pingInterval`, and a connection on which nothing at all arrives for `idleTimeout` is closed (so a half-open
 * connection is found). Any error closes that connection only, with a log line saying why.
 *
 * Unless `protectFrames` is off, everything after the key handshake is encrypted and authenticated, one sealed record
 * per write (`linkCipher.ts`); a record that fails authentication closes its connection and is counted (`tampered`).
 *
 * Before the key handshake authenticates it, an accepted connection is held to the bounds of `admission.ts` (how many
 * at once, in total and per address; how many bytes; how long), and a connection refused before authentication is
 * destroyed, not closed politely: nothing of it lingers.
 *
 * @internal
 */
import type * as Socket from "@effect/platform/Socket"
import type * as SocketServer from "@effect/platform/SocketServer"
import * as CoreClientHandshake from "@intersession/core/ClientHandshake"
import * as EngineFrame from "@intersession/core/Frame"
import * as Frame from "@intersession/core/Framing"
import { type Inbound, type Network, NetworkError } from "@intersession/core/Network"
import type { PeerId } from "@intersession/core/PeerId"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberMap from "effect/FiberMap"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Subscribable from "effect/Subscribable"
import * as Admission from "./admission.js"
import * as ClientHandshake from "./clientHandshake.js"
import * as Clients from "./clients.js"
import * as Handshake from "./handshake.js"
import * as LinkCipher from "./linkCipher.js"
import * as NetLink from "./netLink.js"
import { ConnectionError } from "./netLink.js"
import * as NetRegistry from "./netRegistry.js"

/**
 * Settings shared by the TCP and WebSocket networks.
 *
 * @internal
 */
export interface ConnectionOptions {
  /**
   * Largest frame body sent or accepted, in bytes. A larger inbound frame closes its connection; `send` refuses a
   * larger outbound one. Keep it above the engine's `maxPayloadBytes` plus a few KiB on every peer.
   */
  readonly maxFrameSize?: number | undefined
  /** Time to open a connection and finish its handshake; a connection that takes longer is closed. */
  readonly handshakeTimeout?: Duration.DurationInput | undefined
  /** How often each side sends a `Ping` on an idle or busy connection. */
  readonly pingInterval?: Duration.DurationInput | undefined
  /** A connection on which nothing arrives for this long is closed: the other side or the path is gone. */
  readonly idleTimeout?: Duration.DurationInput | undefined
  /** First wait before dialling a peer again; it doubles, with jitter, up to `reconnectMax`. */
  readonly reconnectBase?: Duration.DurationInput | undefined
  /** Longest wait between two dials of one peer. */
  readonly reconnectMax?: Duration.DurationInput | undefined
  /**
   * Most accepted connections that have not authenticated yet, at once; one more is destroyed as soon as it is
   * accepted, and the refusals are logged once a second at most. Each costs a socket, a fiber and at most 16 KiB of
   * what it sent plus one socket read, for at most `handshakeTimeout` (twice that over TLS or WebSocket: the TLS
   * handshake or the HTTP upgrade first, then the key handshake). Connections already authenticated do not count.
   */
  readonly maxUnauthenticated?: number | undefined
  /**
   * Most of those from one remote address. Behind a proxy or a NAT every connection comes from the proxy's address:
   * raise it up to `maxUnauthenticated` there.
   */
  readonly maxUnauthenticatedPerAddress?: number | undefined
  /**
   * Encrypt and authenticate every frame after the key handshake (AES-256-GCM, one key per direction derived from
   * the pre-shared key, both nonces and both ids; a counter nonce, so a replayed, dropped, reordered, altered or forged
   * frame closes the connection, counted in `tampered`). Each write of frames is sealed as one record, so the cost is
   * paid per batch. On by default, with TLS too: TLS authenticates the deployment, this binds every frame to the peer
   * the key handshake proved. Set `false` only where the path is protected otherwise (TLS, a VPN) and the 20 bytes
   * and the cipher per write matter. Every peer of the deployment
   * must set the same value: a peer with it on and one with it off cannot talk.
   */
  readonly protectFrames?: boolean | undefined
}

/** @internal */
export interface Settings {
  readonly maxFrameSize: number
  readonly handshakeTimeout: Duration.Duration
  readonly pingInterval: Duration.Duration
  readonly idleTimeout: Duration.Duration
  readonly reconnectBase: Duration.Duration
  readonly reconnectMax: Duration.Duration
  readonly maxUnauthenticated: number
  readonly maxUnauthenticatedPerAddress: number
  readonly protectFrames: boolean
}

/**
 * 1 MiB (the engine's default largest payload) plus 64 KiB for the engine's own frame fields.
 *
 * @internal
 */
export const defaultMaxFrameSize = 1024 * 1024 + 64 * 1024

/** @internal */
export const defaults: Settings = {
  maxFrameSize: defaultMaxFrameSize,
  handshakeTimeout: Duration.seconds(10),
  pingInterval: Duration.seconds(5),
  idleTimeout: Duration.seconds(20),
  reconnectBase: Duration.millis(100),
  reconnectMax: Duration.seconds(10),
  maxUnauthenticated: 128,
  maxUnauthenticatedPerAddress: 32,
  protectFrames: true
}

/** @internal */
export const validPort = (port: number): boolean => Number.isSafeInteger(port) && port >= 0 && port <= 65535

/**
 * The shortest pre-shared key accepted, in bytes.
 *
 * @internal
 */
export const minKeyBytes = 16

/**
 * Fills in defaults and lists every problem with the options.
 *
 * @internal
 */
export const settings = (options: ConnectionOptions): Either.Either<Settings, ReadonlyArray<string>> => {
  const problems: Array<string> = []
  const duration = (
    key: Exclude<
      keyof Settings,
      "maxFrameSize" | "maxUnauthenticated" | "maxUnauthenticatedPerAddress" | "protectFrames"
    >
  ) => {
    const input = options[key]
    if (input === undefined) return defaults[key]
    const decoded = Duration.decodeUnknown(input)
    if (decoded._tag === "None" || !Duration.greaterThan(decoded.value, Duration.zero)) {
      problems.push(`${key} must be a positive duration`)
      return defaults[key]
    }
    return decoded.value
  }
  const result: Settings = {
    maxFrameSize: options.maxFrameSize ?? defaults.maxFrameSize,
    handshakeTimeout: duration("handshakeTimeout"),
    pingInterval: duration("pingInterval"),
    idleTimeout: duration("idleTimeout"),
    reconnectBase: duration("reconnectBase"),
    reconnectMax: duration("reconnectMax"),
    maxUnauthenticated: options.maxUnauthenticated ?? defaults.maxUnauthenticated,
    maxUnauthenticatedPerAddress: options.maxUnauthenticatedPerAddress ?? defaults.maxUnauthenticatedPerAddress,
    protectFrames: options.protectFrames ?? defaults.protectFrames
  }
  if (
    !Number.isSafeInteger(result.maxFrameSize) || result.maxFrameSize < 1 || result.maxFrameSize > Frame.maxBodyLimit
  ) {
    problems.push(`maxFrameSize must be an integer from 1 to ${Frame.maxBodyLimit}, got ${result.maxFrameSize}`)
  }
  for (const key of ["maxUnauthenticated", "maxUnauthenticatedPerAddress"] as const) {
    if (!Number.isSafeInteger(result[key]) || result[key] < 1) {
      problems.push(`${key} must be a positive integer, got ${result[key]}`)
    }
  }
  if (!Duration.lessThan(result.pingInterval, result.idleTimeout)) {
    problems.push("pingInterval must be shorter than idleTimeout")
  }
  if (Duration.lessThan(result.reconnectMax, result.reconnectBase)) {
    problems.push("reconnectMax must not be shorter than reconnectBase")
  }
  return problems.length === 0 ? Either.right(result) : Either.left(problems)
}

/**
 * A pre-shared key: a string (taken as UTF-8) or bytes.
 *
 * @internal
 */
export type Key = Redacted.Redacted<string> | Redacted.Redacted<Uint8Array>

/**
 * The `key` option: one key, or several for a rotation, current first.
 *
 * @internal
 */
export type Keys = Key | ReadonlyArray<Key>

/**
 * The pre-shared key as bytes (a string key is taken as UTF-8), or the problem with it.
 *
 * @internal
 */
export const keyBytes = (key: Key): Either.Either<Uint8Array, string> => {
  const value: string | Uint8Array = Redacted.value<string | Uint8Array>(key)
  const bytes = typeof value === "string" ? new TextEncoder().encode(value) : Uint8Array.from(value)
  return bytes.length >= minKeyBytes
    ? Either.right(bytes)
    : Either.left(`the key must have at least ${minKeyBytes} bytes, it has ${bytes.length}`)
}

const isKeyList = (keys: Keys): keys is ReadonlyArray<Key> => Array.isArray(keys)

/**
 * The pre-shared keys as bytes, current first, or the problem with them.
 *
 * @internal
 */
export const keysBytes = (keys: Keys): Either.Either<ReadonlyArray<Uint8Array>, string> => {
  const list: ReadonlyArray<Key> = isKeyList(keys) ? keys : [keys]
  if (list.length === 0) return Either.left("key must hold at least one key")
  return Either.all(
    list.map((key, i) =>
      Either.mapLeft(keyBytes(key), (problem) => list.length === 1 ? problem : `key ${i}: ${problem}`)
    )
  )
}

/**
 * The settings and key of a network's options, and its listening port checked, or what is wrong with them.
 *
 * @internal
 */
export const checkOptions = (
  options: ConnectionOptions & {
    readonly key: Keys
    readonly listen: { readonly port: number }
  }
): Either.Either<{ readonly settings: Settings; readonly keys: ReadonlyArray<Uint8Array> }, string> =>
  Either.gen(function*() {
    const checked = yield* Either.mapLeft(settings(options), (problems) => problems.join("; "))
    const keys = yield* keysBytes(options.key)
    if (!validPort(options.listen.port)) {
      return yield* Either.left(`listen.port must be an integer from 0 to 65535, got ${options.listen.port}`)
    }
    return { settings: checked, keys }
  })

/**
 * Peer id → address: a fixed map, or one that changes (a `SubscriptionRef`, say). Peers are dialled at their
 * address, and only peers in it may connect.
 *
 * @internal
 */
export type AddressBook<A> = ReadonlyMap<PeerId, A> | Subscribable.Subscribable<ReadonlyMap<PeerId, A>>

/**
 * An accepted connection, as its transport hands it on.
 *
 * @internal
 */
export interface Incoming {
  /** The other end, `host:port`, for logs. */
  readonly remote: string
  /** The guard the transport took from the network's admission when it accepted the connection. */
  readonly guard: Admission.Guard
  /**
   * Whether the transport tells the guard itself what arrives (on the socket under its messages, as a WebSocket
   * server must); otherwise the connection's reader does, chunk by chunk.
   */
  readonly countsBytes: boolean
}

/**
 * What a network needs from its transport.
 *
 * @internal
 */
export interface Transport<A> {
  /** A socket that connects when run. */
  readonly dial: (address: A) => Effect.Effect<Socket.Socket, Socket.SocketError>
  /**
   * Serves incoming connections until interrupted. Each connection takes a guard from the network's admission as
   * soon as it is accepted, and is destroyed at once when it gets none.
   */
  readonly serve: <R>(
    handler: (socket: Socket.Socket, incoming: Incoming) => Effect.Effect<void, never, R>
  ) => Effect.Effect<never, SocketServer.SocketServerError, R>
  /** A string that is equal for equal addresses, to see when an address changes. */
  readonly addressKey: (address: A) => string
}

/**
 * The connections in use, for diagnostics.
 *
 * @internal
 */
export interface ConnectionInfo {
  readonly peer: PeerId
  /** Hex; the same on both ends. */
  readonly id: string
  /** This side dialled the connection. */
  readonly dialled: boolean
  readonly remote: string
  /**
   * Which of the local keys the connection's handshake proved: its index in the `key` option (0 for a single key),
   * to see when every connection moved to the new key of a rotation. -1 for a client, which holds no key.
   */
  readonly keyIndex: number
  /** The other end is a client that presented a credential (`clients`), not a peer of the deployment. */
  readonly client: boolean
}

/**
 * Accepted connections before authentication, for diagnostics (see `admission.ts`).
 *
 * @internal
 */
export type HandshakeStats = Admission.Stats

/** @internal */
export type NetworkWithConnections = Network["Type"] & {
  /** The connections in use now. */
  readonly connections: Effect.Effect<ReadonlyArray<ConnectionInfo>>
  /** Accepted connections before authentication: how many now, the most at once, and how those that failed ended. */
  readonly handshakes: Effect.Effect<HandshakeStats>
  /** How many frames failed authentication since the network started; each closed its connection. */
  readonly tampered: Effect.Effect<number>
}

/**
 * The admission of a network's listener, made before the listener so that the transport can guard connections from
 * the moment it accepts them.
 *
 * @internal
 */
export const admission = (settings: Settings): Admission.Admission =>
  Admission.make({
    maxUnauthenticated: settings.maxUnauthenticated,
    maxUnauthenticatedPerAddress: settings.maxUnauthenticatedPerAddress,
    deadline: Math.max(1, Math.ceil(Duration.toMillis(settings.handshakeTimeout)))
  })

/** How many bytes of frames a `send` packs into one write (more only for one frame larger than that). */
const packBytes = 4 * 1024 * 1024

/** The most bytes of frames one write holds: `packBytes`, or one frame of `maxFrameSize` alone. */
const maxPlainWrite = (settings: Settings): number => Math.max(packBytes, settings.maxFrameSize + Frame.headerSize + 1)

/**
 * The most bytes one socket write carries, so a large batch does not become one huge buffer; a WebSocket server must
 * accept messages this large. On a protected link a write is one sealed record: its length header and tag on top.
 *
 * @internal
 */
export const maxWriteBytes = (settings: Settings): number =>
  maxPlainWrite(settings) + (settings.protectFrames ? LinkCipher.recordOverhead : 0)

/**
 * The largest length a record header may state on a protected link (the frames of one write and the tag): longer
 * closes the connection (`FrameTooLarge`) before it arrives. A sender packs at most `packBytes` of frames, more only
 * for one frame alone, which this peer would refuse anyway if it were longer than `maxFrameSize`.
 *
 * @internal
 */
export const maxRecordBytes = (settings: Settings): number => maxPlainWrite(settings) + LinkCipher.tagSize

/**
 * Lets the event loop go round once (socket reads, timers) before the sender goes on. A write the kernel takes at
 * once completes on `process.nextTick`, so a fiber that sends in a loop would otherwise keep the process in
 * microtasks: no socket of the process would be read and no timer would fire until it stopped, and idle timeouts
 * would then close healthy connections.
 */
const yieldToEventLoop: Effect.Effect<void> = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

/** Senders yield to the event loop at least this often while they send without pause. */
const yieldEveryMillis = 2

const hex = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex")

type Role =
  | { readonly _tag: "Dialler"; readonly peer: PeerId }
  | { readonly _tag: "Acceptor"; readonly incoming: Incoming }

/** An authenticated connection; a client's holds a connection slot, released when it ends. */
type Accepted = Handshake.Authenticated & { readonly release?: (() => void) | undefined }

/** Reasons that say something is wrong with the other side or the path, worth a warning. */
const warnings: ReadonlySet<ConnectionError["reason"]> = new Set([
  "Idle",
  "FrameTooLarge",
  "TooManyBytes",
  "Malformed",
  "HandshakeTimeout",
  "Unauthenticated",
  "UnknownPeer",
  "WrongPeer",
  "Version",
  "Tampered",
  "ClientRefused",
  "Overloaded"
])

/** The error a guard's refusal stands for, if it refused. */
const refusalError = (refusal: Admission.Refusal | undefined): ConnectionError | undefined => {
  switch (refusal) {
    case undefined:
      return undefined
    case "TooManyBytes":
      return new ConnectionError({
        reason: "TooManyBytes",
        detail: `more than ${Admission.preAuthBytes} bytes arrived before authentication`
      })
    case "HandshakeTimeout":
      return new ConnectionError({ reason: "HandshakeTimeout", detail: "the handshake did not finish in time" })
  }
}

const logEnd = (message: string, error: ConnectionError, peer: PeerId | undefined) => {
  const annotations = { reason: error.reason, ...(peer === undefined ? {} : { peer }) }
  return (warnings.has(error.reason)
    ? Effect.logWarning(message, error.detail)
    : Effect.logDebug(message, error.detail)).pipe(Effect.annotateLogs(annotations))
}

/**
 * Starts a network in the current scope: serves `transport`, dials every peer of `book` but `local`, and returns the
 * `Network` service. Closing the scope closes every connection and stops serving.
 *
 * @internal
 */
export const make = <A>(options: {
  readonly name: string
  readonly local: PeerId
  /** The pre-shared keys, current first; at least one. */
  readonly keys: ReadonlyArray<Uint8Array>
  readonly book: AddressBook<A>
  readonly transport: Transport<A>
  readonly settings: Settings
  /** The admission the transport guards accepted connections with (see {@link admission}). */
  readonly admission: Admission.Admission
  /** How clients with a credential are taken (`clients.ts`); without it, a client is told `NotAccepted`. */
  readonly clients?: Clients.ClientSettings | undefined
}): Effect.Effect<NetworkWithConnections, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { admission, local, settings, transport } = options
    const instance = yield* Handshake.randomBytes(Handshake.instanceSize)
    const decoy = yield* Handshake.randomBytes(32)
    const inbound = yield* Effect.acquireRelease(Queue.unbounded<Inbound>(), Queue.shutdown)
    const registry = yield* NetRegistry.make
    let book: ReadonlyMap<PeerId, A> = Subscribable.isSubscribable(options.book)
      ? yield* options.book.get
      : options.book

    const handshakeOptions: Handshake.HandshakeOptions = {
      local,
      instance,
      keys: options.keys,
      protect: settings.protectFrames,
      decoy,
      knows: (peer) => peer !== local && book.has(peer),
      lastConnection: registry.lastConnection
    }
    const clients = options.clients === undefined
      ? undefined
      : Clients.make(options.clients, (peer) => peer === local || book.has(peer))
    const ping = Frame.encode(Frame.FrameType.Ping)
    /** The key index of every connection, for `connections`. */
    const keyIndexes = new WeakMap<NetRegistry.Connection, number>()
    let tampered = 0
    const countTampered = (error: ConnectionError) =>
      Effect.sync(() => {
        if (error.reason === "Tampered") tampered++
      })

    /**
     * The acceptor's handshake: a peer's (`Hello`, the pre-shared key) or a client's (`ClientHello`, a credential).
     * A client's comes with the release of its connection slot.
     */
    const acceptAny = (link: NetLink.Link, incoming: Incoming) =>
      Effect.flatMap(link.next, (first): Effect.Effect<Accepted, ConnectionError> => {
        const proven = Effect.sync(incoming.guard.authenticated)
        if (first.type !== Frame.FrameType.ClientHello) {
          return Handshake.acceptFrom(link, handshakeOptions, first, proven)
        }
        return Effect.map(
          ClientHandshake.accept({
            link,
            helloBody: first.body,
            local,
            instance,
            remote: incoming.remote,
            policy: clients?.policy,
            proven
          }),
          (welcomed) => ({
            peer: welcomed.peer,
            id: welcomed.id,
            dialled: false,
            remoteInstance: welcomed.remoteInstance,
            remoteLast: undefined,
            keyIndex: -1,
            release: welcomed.release
          })
        )
      })

    /**
     * Handshake and verdict, bounded by `handshakeTimeout`. When this succeeds the connection is in the registry
     * (writes wait until `inUse` opens); when it fails the registry does not hold it. A client's connection has no
     * verdict: the newest replaces the one in use.
     */
    const establish = (
      link: NetLink.Link,
      role: Role,
      remote: string,
      closing: Deferred.Deferred<never, ConnectionError>
    ) =>
      Effect.gen(function*() {
        const authenticated: Accepted = role._tag === "Dialler"
          ? yield* Handshake.dial(link, handshakeOptions, role.peer)
          : yield* acceptAny(link, role.incoming)
        const inUse = yield* Effect.makeLatch(false)
        const connection: NetRegistry.Connection = {
          peer: authenticated.peer,
          id: authenticated.id,
          dialled: authenticated.dialled,
          remoteInstance: authenticated.remoteInstance,
          remote,
          write: (buffers) => inUse.whenOpen(Effect.forEach(buffers, link.write, { discard: true })),
          close: (reason) => Effect.asVoid(Deferred.fail(closing, reason))
        }
        keyIndexes.set(connection, authenticated.keyIndex)
        const release = authenticated.release
        yield* Effect.gen(function*() {
          if (release !== undefined) {
            yield* registry.install(connection)
          } else if (Handshake.decides(local, connection.peer)) {
            const keep = yield* registry.decide(connection, authenticated.remoteLast)
            yield* Handshake.sendVerdict(link, keep)
            if (!keep) {
              return yield* new ConnectionError({
                reason: "Rejected",
                detail: "another connection with the peer is kept"
              })
            }
          } else {
            yield* Handshake.awaitVerdict(link)
            yield* registry.install(connection)
          }
        }).pipe(
          Effect.onError(() => Effect.zipRight(registry.remove(connection), Effect.sync(() => release?.())))
        )
        return { connection, inUse, release }
      }).pipe(
        Effect.timeoutFail({
          duration: settings.handshakeTimeout,
          onTimeout: () =>
            new ConnectionError({ reason: "HandshakeTimeout", detail: "the handshake did not finish in time" })
        })
      )

    /**
     * Whether a client's `Data` frame goes on to the engine: on a lane within its `maxStreams` (else dropped, with a
     * warning the first time), and within its `maxPendingBytes` (else the connection fails with `Overloaded`).
     */
    const admitClientFrame = (limits: Clients.Clients, peer: PeerId, body: Uint8Array, refused: Array<string>) => {
      const lane = EngineFrame.laneOf(body)
      if (lane !== undefined) {
        const admitted = limits.admitLane(peer, lane)
        if (admitted === "new-refused") refused.push(lane)
        if (admitted !== "yes") return false
      }
      if (limits.arrived(peer, body.length)) return true
      return new ConnectionError({
        reason: "Overloaded",
        detail: `more than ${options.clients?.maxPendingBytes} bytes from the client wait for the engine`
      })
    }

    /** Reads frames until the connection ends; never succeeds. A client's frames are held to its limits. */
    const read = (link: NetLink.Link, peer: PeerId, client: boolean): Effect.Effect<never, ConnectionError> =>
      Effect.forever(Effect.flatMap(link.nextBatch, (frames) => {
        // Every frame of a read goes on in one offer, so the engine takes them as one batch.
        const data: Array<Inbound> = []
        const refused: Array<string> = []
        const limits = client ? clients : undefined
        for (const frame of frames) {
          if (frame.type === Frame.FrameType.Data) {
            const admitted = limits === undefined ? true : admitClientFrame(limits, peer, frame.body, refused)
            if (admitted === true) data.push({ from: peer, frame: frame.body })
            else if (admitted !== false) return Effect.zipRight(Queue.offerAll(inbound, data), Effect.fail(admitted))
          } else if (frame.type !== Frame.FrameType.Ping) {
            return Effect.zipRight(
              Queue.offerAll(inbound, data),
              Effect.fail(
                new ConnectionError({
                  reason: "Malformed",
                  detail: `unexpected frame type ${frame.type} after the handshake`
                })
              )
            )
          }
        }
        if (refused.length === 0) return Queue.offerAll(inbound, data)
        return Effect.zipRight(
          Effect.forEach(refused, (lane) =>
            Effect.logWarning(
              `dropped the client's frames on lane ${JSON.stringify(lane)}: it sends on more lanes than maxStreams`,
              `at most ${options.clients?.maxStreams}`
            ), { discard: true }),
          Queue.offerAll(inbound, data)
        )
      }))

    /** Fails with `Idle` once nothing arrived for `idleTimeout` (`Framing.watchIdle`). */
    const watch = (link: NetLink.Link): Effect.Effect<never, ConnectionError> =>
      Frame.watchIdle(link.received, settings.idleTimeout, () =>
        new ConnectionError({
          reason: "Idle",
          detail: `nothing arrived for ${Duration.format(settings.idleTimeout)}`
        }))

    /** A connection in use: reads, pings, watches for silence, and ends on the first error or when asked to close. */
    const serve = (
      link: NetLink.Link,
      connection: NetRegistry.Connection,
      inUse: Effect.Latch,
      closing: Deferred.Deferred<never, ConnectionError>,
      client: boolean
    ): Effect.Effect<never, ConnectionError> =>
      Effect.gen(function*() {
        link.setLimit(settings.maxFrameSize)
        yield* inUse.open
        yield* Effect.logDebug("connection in use").pipe(
          Effect.annotateLogs({
            keyIndex: keyIndexes.get(connection) ?? 0,
            protected: client || settings.protectFrames,
            client
          })
        )
        const pinger = Effect.forever(Effect.zipRight(Effect.sleep(settings.pingInterval), link.write(ping)))
        return yield* Effect.raceFirst(
          read(link, connection.peer, client),
          Effect.raceFirst(pinger, Effect.raceFirst(watch(link), Deferred.await(closing)))
        )
      }).pipe(Effect.annotateLogs({ peer: connection.peer, connection: hex(connection.id) }))

    /**
     * Runs one connection to its end and logs how it ended. Returns whether it came into use, so that a dialler
     * can reset its back-off.
     */
    const runConnection = (socket: Socket.Socket, role: Role, remote: string): Effect.Effect<boolean> =>
      Effect.scoped(Effect.gen(function*() {
        const guard = role._tag === "Acceptor" ? role.incoming.guard : undefined
        const link = yield* NetLink.make(socket, {
          // The first frame is a peer's `Hello` or, on the acceptor's side, a client's `ClientHello`.
          limit: Math.max(Handshake.maxHandshakeFrame, CoreClientHandshake.maxHelloBytes),
          recordLimit: maxRecordBytes(settings),
          onArrival: role._tag === "Acceptor" && !role.incoming.countsBytes ? role.incoming.guard.arrived : undefined
        })
        const closing = yield* Deferred.make<never, ConnectionError>()
        const established = yield* Effect.either(establish(link, role, remote, closing))
        if (Either.isLeft(established)) {
          if (guard !== undefined && !guard.isAuthenticated()) {
            // Refused before authentication: counted, and destroyed at once; but a client that completed the key
            // exchange was told why, and is closed politely so that the refusal reaches it.
            const error = refusalError(guard.refusal()) ?? established.left
            admission.failed(error.reason)
            if (error.reason === "ClientRefused") yield* link.abort(error.reason)
            else guard.destroy()
            yield* logEnd("handshake failed", error, undefined)
            return false
          }
          yield* countTampered(established.left)
          yield* logEnd("handshake failed", established.left, role._tag === "Dialler" ? role.peer : undefined)
          yield* link.abort(established.left.reason)
          return false
        }
        const { connection, inUse, release } = established.right
        const ended = yield* Effect.flip(
          serve(link, connection, inUse, closing, release !== undefined).pipe(
            Effect.ensuring(Effect.zipRight(registry.remove(connection), Effect.sync(() => release?.())))
          )
        )
        yield* countTampered(ended)
        yield* logEnd("connection closed", ended, connection.peer).pipe(
          Effect.annotateLogs({ connection: hex(connection.id) })
        )
        yield* link.abort(ended.reason)
        return true
      })).pipe(
        Effect.annotateLogs({
          network: options.name,
          local,
          remote,
          direction: role._tag === "Dialler" ? "out" : "in"
        })
      )

    const reconnect = Schedule.exponential(settings.reconnectBase, 2).pipe(
      Schedule.union(Schedule.spaced(settings.reconnectMax)),
      Schedule.jitteredWith({ min: 0.5, max: 1.5 })
    )

    /**
     * Dials `peer` whenever no connection with it is in use, waiting between attempts on the back-off schedule. The
     * back-off starts over after a connection that stayed in use for at least `reconnectMax`.
     */
    const dialLoop = (peer: PeerId, address: A) =>
      Effect.gen(function*() {
        const backoff = yield* Schedule.driver(reconnect)
        while (true) {
          yield* registry.awaitDisconnected(peer)
          if (!(yield* registry.startDialling(peer))) {
            yield* Effect.yieldNow()
            continue
          }
          const started = yield* Clock.currentTimeMillis
          const used = yield* transport.dial(address).pipe(
            Effect.matchEffect({
              onFailure: (cause) =>
                Effect.as(
                  logEnd("dial failed", new ConnectionError({ reason: "Io", detail: cause.message, cause }), peer),
                  false
                ),
              onSuccess: (socket) => runConnection(socket, { _tag: "Dialler", peer }, transport.addressKey(address))
            }),
            Effect.ensuring(registry.stopDialling(peer))
          )
          const lived = (yield* Clock.currentTimeMillis) - started
          if (used && lived >= Duration.toMillis(settings.reconnectMax)) yield* backoff.reset
          yield* Effect.ignore(backoff.next(undefined))
        }
      }).pipe(Effect.annotateLogs({ network: options.name, local, peer }))

    let lastYield = 0
    const dialers = yield* FiberMap.make<PeerId>()
    const dialled = new Map<PeerId, string>()
    const removed = new ConnectionError({ reason: "Removed", detail: "the peer left the address book" })

    /** Starts, restarts and stops diallers to follow the address book. */
    const follow = (next: ReadonlyMap<PeerId, A>) =>
      Effect.gen(function*() {
        book = next
        for (const peer of Array.from(dialled.keys())) {
          if (next.has(peer)) continue
          dialled.delete(peer)
          yield* FiberMap.remove(dialers, peer)
          const connection = registry.get(peer)
          if (connection !== undefined) yield* connection.close(removed)
        }
        for (const [peer, address] of next) {
          if (peer === local) continue
          const key = transport.addressKey(address)
          if (dialled.get(peer) === key) continue
          // A new address: stop dialling the old one (and close what was dialled there) before dialling the new.
          if (dialled.has(peer)) yield* FiberMap.remove(dialers, peer)
          dialled.set(peer, key)
          yield* FiberMap.run(dialers, peer, dialLoop(peer, address))
        }
      })

    /** Serves an accepted connection, unless its guard refused it already (and counted it). */
    const accept = (socket: Socket.Socket, incoming: Incoming) =>
      Effect.suspend(() => {
        incoming.guard.started()
        if (incoming.guard.refusal() !== undefined) return Effect.void
        return Effect.asVoid(runConnection(socket, { _tag: "Acceptor", incoming }, incoming.remote))
      }).pipe(Effect.ensuring(Effect.sync(incoming.guard.release)))

    /** Logs connections refused over a cap: one line for all of them, at most once a second. */
    const reportBusy = Effect.forever(Effect.gen(function*() {
      yield* Effect.async<void>((resume) => {
        const cancel = admission.onBusy(() => resume(Effect.void))
        return Effect.sync(cancel)
      })
      const count = admission.takeBusy()
      yield* Effect.logWarning(
        `refused ${count} connection(s) at once: too many connections have not authenticated yet`,
        `at most ${settings.maxUnauthenticated} in all, ${settings.maxUnauthenticatedPerAddress} per address`
      ).pipe(Effect.annotateLogs({ reason: "Busy", count }))
      yield* Effect.sleep(Duration.seconds(1))
    })).pipe(Effect.annotateLogs({ network: options.name, local }))
    yield* Effect.forkScoped(reportBusy)

    yield* transport.serve(accept).pipe(
      Effect.catchAll((error) =>
        Effect.zipRight(
          Effect.logError("the listener failed; the network stops receiving", error),
          Queue.shutdown(inbound)
        )
      ),
      Effect.annotateLogs({ network: options.name, local }),
      Effect.forkScoped
    )
    yield* follow(book)
    if (Subscribable.isSubscribable(options.book)) {
      yield* Effect.forkScoped(Stream.runForEach(options.book.changes, follow))
    }

    return {
      localPeer: local,
      send: (to, frames) =>
        Effect.suspend(() => {
          const connection = registry.get(to)
          if (connection === undefined) return Effect.fail(new NetworkError({ peer: to, reason: "Unreachable" }))
          if (frames.length === 0) return Effect.void
          const oversized = frames.find((frame) => frame.length > settings.maxFrameSize)
          if (oversized !== undefined) {
            return Effect.fail(
              new NetworkError({
                peer: to,
                reason: "Io",
                cause: new ConnectionError({
                  reason: "FrameTooLarge",
                  detail: `a frame of ${oversized.length} bytes exceeds maxFrameSize ${settings.maxFrameSize}`
                })
              })
            )
          }
          return connection.write(Frame.encodeAll(Frame.FrameType.Data, frames, packBytes)).pipe(
            Effect.mapError((cause) =>
              new NetworkError({ peer: to, reason: cause.reason === "Io" ? "Io" : "Closed", cause })
            ),
            Effect.zipLeft(Effect.flatMap(Clock.currentTimeMillis, (now) => {
              if (now - lastYield < yieldEveryMillis) return Effect.void
              lastYield = now
              return yieldToEventLoop
            }))
          )
        }),
      inbound: clients === undefined
        ? Stream.fromQueue(inbound)
        : Stream.mapChunks(Stream.fromQueue(inbound), (chunk) => {
          // What the engine takes from a client no longer counts against its `maxPendingBytes`.
          for (const item of chunk) if (clients.isClient(item.from)) clients.taken(item.from, item.frame.length)
          return chunk
        }),
      connected: registry.connected,
      handshakes: Effect.sync(admission.stats),
      tampered: Effect.sync(() => tampered),
      connections: Effect.sync(() =>
        registry.all().map((connection) => ({
          peer: connection.peer,
          id: hex(connection.id),
          dialled: connection.dialled,
          remote: connection.remote,
          keyIndex: keyIndexes.get(connection) ?? 0,
          client: clients?.isClient(connection.peer) ?? false
        }))
      )
    } satisfies NetworkWithConnections
  })
