/**
 * What the TCP and WebSocket network tests share: a kit per transport, peers that record what they see, a logger
 * the tests can wait on, raw clients that speak (or break) the protocol, and the tests beyond the conformance suite.
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as Socket from "@effect/platform/Socket"
import { assert, describe, it } from "@effect/vitest"
import * as Delivery from "@intersession/core/Delivery"
import * as Frame from "@intersession/core/Framing"
import * as ILM from "@intersession/core/ILM"
import { type Inbound, Network } from "@intersession/core/Network"
import * as PeerId from "@intersession/core/PeerId"
import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
import { NetworkFixture, type RawAccess } from "@intersession/testing/NetworkSuite"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as HashMap from "effect/HashMap"
import * as HashSet from "effect/HashSet"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import * as NodeNet from "node:net"
import * as Handshake from "../src/internal/handshake.js"
import * as LinkCipher from "../src/internal/linkCipher.js"
import * as Net from "../src/internal/net.js"
import * as NetLink from "../src/internal/netLink.js"
import * as TcpNetwork from "../src/TcpNetwork.js"
import * as WebSocketNetwork from "../src/WebSocketNetwork.js"

export const key = Redacted.make("the pre-shared key of the network tests")
export const wrongKey = Redacted.make("not the key of the network tests!")
export const keyBytes = new TextEncoder().encode(Redacted.value(key))
export const wrongKeyBytes = new TextEncoder().encode(Redacted.value(wrongKey))

/** Short timeouts, so that the tests that wait for them stay fast. */
export const fast = {
  handshakeTimeout: Duration.millis(500),
  pingInterval: Duration.millis(50),
  idleTimeout: Duration.millis(500),
  reconnectBase: Duration.millis(10),
  reconnectMax: Duration.millis(100)
} satisfies Net.ConnectionOptions

/** How long a wait may take before the test fails instead of hanging. */
export const limit = Duration.seconds(10)

export type TestNetwork = Network["Type"] & {
  readonly connections: Net.NetworkWithConnections["connections"]
  readonly handshakes: Net.NetworkWithConnections["handshakes"]
  readonly tampered: Net.NetworkWithConnections["tampered"]
  /** The port it listens on. */
  readonly port: number
}

export type Book<A> = SubscriptionRef.SubscriptionRef<ReadonlyMap<PeerId.PeerId, A>>

/** One transport, as the tests drive it. */
export interface Kit<A> {
  readonly name: string
  /** The book entry of a peer listening on `port` on the loopback interface. */
  readonly address: (port: number) => A
  readonly make: (options: {
    readonly peer: PeerId.PeerId
    readonly port: number
    readonly book: Book<A>
    readonly key?: Net.Keys | undefined
    readonly settings?: Net.ConnectionOptions | undefined
  }) => Effect.Effect<TestNetwork, unknown, Scope.Scope>
  /** A raw socket to the peer listening on `port`; it connects when run. */
  readonly connect: (port: number) => Effect.Effect<Socket.Socket, unknown>
}

/** A free port on the loopback interface (free when asked, at least). */
export const freePort: Effect.Effect<number> = Effect.async<number>((resume) => {
  const server = NodeNet.createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = address !== null && typeof address === "object" ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** The TCP kit: peers on the loopback interface, raw clients as plain TCP sockets. */
export const tcpKit: Kit<TcpNetwork.Address> = {
  name: "TcpNetwork",
  address: (port) => ({ host: "127.0.0.1", port }),
  make: (options) =>
    Effect.map(
      TcpNetwork.make({
        ...options.settings,
        peer: options.peer,
        listen: { host: "127.0.0.1", port: options.port },
        peers: options.book,
        key: options.key ?? key
      }),
      (network) => ({ ...network, port: network.address.port })
    ),
  connect: (port) => NodeSocket.makeNet({ host: "127.0.0.1", port })
}

const wsUrl = (port: number) => `ws://127.0.0.1:${port}/intersession`

/** The WebSocket kit: peers at `ws://127.0.0.1:port/intersession`, raw clients as `ws` clients. */
export const webSocketKit: Kit<string> = {
  name: "WebSocketNetwork",
  address: wsUrl,
  make: (options) =>
    WebSocketNetwork.make({
      ...options.settings,
      peer: options.peer,
      listen: { host: "127.0.0.1", port: options.port, path: "/intersession" },
      peers: options.book,
      key: options.key ?? key
    }).pipe(
      Effect.map((network) => ({ ...network, port: Number(new URL(network.url).port) })),
      Effect.provide(NodeSocket.layerWebSocketConstructor)
    ),
  connect: (port) =>
    Effect.provide(
      Socket.makeWebSocket(wsUrl(port), { openTimeout: "5 seconds" }),
      NodeSocket.layerWebSocketConstructor
    )
}

/**
 * The settings of the conformance suite's peers: {@link fast}, but a handshake and idle timeout long enough that the
 * hostile-input tests tell a refusal (at once) from a timeout.
 */
export const suiteSettings = {
  ...fast,
  handshakeTimeout: Duration.seconds(5),
  idleTimeout: Duration.seconds(5)
} satisfies Net.ConnectionOptions

/**
 * The conformance suite's fixture: each peer gets a port on first start and keeps it when started again. Its raw
 * access opens raw clients to a peer's port; an authenticated one plays the handshake as an id that the fixture puts
 * in the address book first, at a free port where nothing listens.
 */
export const fixture = <A>(kit: Kit<A>): Layer.Layer<NetworkFixture> =>
  Layer.effect(
    NetworkFixture,
    Effect.gen(function*() {
      const book: Book<A> = yield* SubscriptionRef.make<ReadonlyMap<PeerId.PeerId, A>>(new Map())
      const ports = new Map<PeerId.PeerId, number>()
      const portOf = (peer: PeerId.PeerId) => {
        const port = ports.get(peer)
        return port === undefined ? Effect.fail(new Error(`${peer} was never online`)) : Effect.succeed(port)
      }
      const rawConnection = (link: NetLink.Link) => ({
        write: link.write,
        end: link.abort("the test ends the connection"),
        closed: link.closed
      })
      const raw: RawAccess = {
        connect: (peer) => Effect.map(Effect.flatMap(portOf(peer), (port) => rawLink(kit, port)), rawConnection),
        authenticated: (peer, as) =>
          Effect.gen(function*() {
            const port = yield* portOf(peer)
            if (!(yield* book.get).has(as)) {
              const nowhere = yield* freePort
              yield* SubscriptionRef.update(book, (entries) => new Map(entries).set(as, kit.address(nowhere)))
            }
            // `peer` dials `as` too (it is in the book), and while it does, it keeps its own dial if it decides for
            // the pair (the lower id), refusing this one: then try again once its dial failed.
            const link = yield* Effect.tap(rawLink(kit, port), (link) => authenticate(link, as, peer, keyBytes)).pipe(
              Effect.retry({
                while: (error) => error instanceof NetLink.ConnectionError && error.reason === "Rejected",
                schedule: Schedule.spaced("20 millis"),
                times: 50
              })
            )
            return rawConnection(link)
          }),
        frame: (payload) => Frame.encode(Frame.FrameType.Data, payload),
        maxFrameSize: Net.defaultMaxFrameSize,
        patience: Duration.min(suiteSettings.handshakeTimeout, suiteSettings.idleTimeout)
      }
      return NetworkFixture.of({
        make: (peer) =>
          Effect.gen(function*() {
            const network = yield* kit.make({ peer, port: ports.get(peer) ?? 0, book, settings: suiteSettings })
            if (!ports.has(peer)) {
              ports.set(peer, network.port)
              yield* SubscriptionRef.update(book, (entries) => new Map(entries).set(peer, kit.address(network.port)))
            }
            return network
          }),
        raw
      })
    })
  )

// ---------------------------------------------------------------------------------------------------------------
// logs

export interface LogRecord {
  readonly level: LogLevel.LogLevel
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
}

/** Keeps every log line and lets a test wait for one. */
export interface LogTap {
  readonly records: ReadonlyArray<LogRecord>
  /** The position of the next record, to wait only for records after it. */
  readonly mark: () => number
  readonly waitFor: (
    what: string,
    predicate: (record: LogRecord) => boolean,
    after?: number
  ) => Effect.Effect<LogRecord, Error>
  readonly layer: Layer.Layer<never>
}

export const makeLogTap = (): LogTap => {
  const records: Array<LogRecord> = []
  const listeners = new Set<(record: LogRecord) => void>()
  const logger = Logger.make(({ annotations, logLevel, message }) => {
    const parts = Array.isArray(message) ? message : [message]
    const record: LogRecord = {
      level: logLevel,
      message: parts.map((part) => (typeof part === "string" ? part : String(part))).join(" "),
      annotations: Object.fromEntries(HashMap.toEntries(annotations))
    }
    records.push(record)
    for (const listener of listeners) listener(record)
  })
  return {
    records,
    mark: () => records.length,
    waitFor: (what, predicate, after = 0) =>
      Effect.async<LogRecord>((resume) => {
        const found = records.slice(after).find(predicate)
        if (found !== undefined) return resume(Effect.succeed(found))
        const listener = (record: LogRecord) => {
          if (!predicate(record)) return
          listeners.delete(listener)
          resume(Effect.succeed(record))
        }
        listeners.add(listener)
        return Effect.sync(() => listeners.delete(listener))
      }).pipe(Effect.timeoutFail({ duration: limit, onTimeout: () => new Error(`no log line: ${what}`) })),
    layer: Layer.merge(Logger.replace(Logger.defaultLogger, logger), Logger.minimumLogLevel(LogLevel.Debug))
  }
}

export const reason = (value: string, local?: PeerId.PeerId) => (record: LogRecord) =>
  record.annotations["reason"] === value && (local === undefined || record.annotations["local"] === local)

// ---------------------------------------------------------------------------------------------------------------
// peers

export interface Peer {
  readonly id: PeerId.PeerId
  readonly network: TestNetwork
  readonly mailbox: Queue.Queue<Inbound>
  /** Every value `connected` took, in order, from the start. */
  readonly history: Array<ReadonlyArray<PeerId.PeerId>>
  readonly close: Effect.Effect<void>
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()
export const text = (value: string): Uint8Array => encoder.encode(value)

/** Starts a peer in a scope of its own (so `close` takes it offline) that records what it receives and sees. */
export const startPeer = <A>(
  kit: Kit<A>,
  options: {
    readonly peer: PeerId.PeerId
    readonly port: number
    readonly book: Book<A>
    readonly key?: Net.Keys | undefined
    readonly settings?: Net.ConnectionOptions | undefined
  }
): Effect.Effect<Peer, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const network = yield* Scope.extend(kit.make({ ...options, settings: options.settings ?? fast }), scope)
    const mailbox = yield* Queue.unbounded<Inbound>()
    const history: Array<ReadonlyArray<PeerId.PeerId>> = []
    yield* Effect.forkIn(Stream.runForEach(network.inbound, (inbound) => Queue.offer(mailbox, inbound)), scope)
    yield* Effect.forkIn(
      Stream.runForEach(
        network.connected.changes,
        (peers) => Effect.sync(() => history.push(Array.from(peers).sort()))
      ),
      scope
    )
    return { id: options.peer, network, mailbox, history, close: Scope.close(scope, Exit.void) }
  })

/** A book with an entry on a free port for each id. */
export const bookFor = <A>(kit: Kit<A>, ids: ReadonlyArray<PeerId.PeerId>) =>
  Effect.gen(function*() {
    const ports = new Map<PeerId.PeerId, number>()
    for (const id of ids) ports.set(id, yield* freePort)
    const book: Book<A> = yield* SubscriptionRef.make<ReadonlyMap<PeerId.PeerId, A>>(
      new Map(Array.from(ports, ([id, port]) => [id, kit.address(port)] as const))
    )
    return { book, port: (id: PeerId.PeerId) => ports.get(id)! }
  })

/** Fails with a readable error when `effect` does not finish within {@link limit}. */
export const within = <A, E, R>(what: string, effect: Effect.Effect<A, E, R>) =>
  Effect.timeoutFail(effect, {
    duration: limit,
    onTimeout: () => new Error(`not within ${Duration.format(limit)}: ${what}`)
  })

/** Waits until `peer`'s `connected` satisfies `predicate`. */
export const awaitConnected = (
  peer: Peer,
  what: string,
  predicate: (connected: HashSet.HashSet<PeerId.PeerId>) => boolean
) =>
  within(
    `${peer.id} ${what}`,
    Effect.asVoid(Stream.runHead(Stream.filter(peer.network.connected.changes, predicate)))
  )

export const awaitMesh = (peers: ReadonlyArray<Peer>) =>
  Effect.forEach(
    peers.flatMap((peer) => peers.filter((other) => other !== peer).map((other) => [peer, other] as const)),
    ([peer, other]) => awaitConnected(peer, `sees ${other.id}`, HashSet.has(other.id)),
    { concurrency: "unbounded", discard: true }
  )

/** Takes the next `count` frames `peer` received, as `from:text`. */
export const receive = (peer: Peer, count: number) =>
  within(
    `${peer.id} receives ${count} frames`,
    Effect.map(
      Queue.takeN(peer.mailbox, count),
      (frames) => Chunk.toReadonlyArray(frames).map((inbound) => `${inbound.from}:${decoder.decode(inbound.frame)}`)
    )
  )

export const connectionTo = (peer: Peer, other: PeerId.PeerId) =>
  Effect.map(peer.network.connections, (connections) => connections.filter((connection) => connection.peer === other))

/** Each side sends `count` numbered frames to the other and receives them in order. */
export const exchange = (a: Peer, b: Peer, label: string, count = 3) =>
  Effect.gen(function*() {
    const frames = (from: Peer) => Array.from({ length: count }, (_, i) => text(`${label} ${from.id} ${i + 1}`))
    yield* a.network.send(b.id, frames(a))
    yield* b.network.send(a.id, frames(b))
    const expected = (from: Peer) => Array.from({ length: count }, (_, i) => `${from.id}:${label} ${from.id} ${i + 1}`)
    assert.deepStrictEqual(yield* receive(b, count), expected(a), `${label}: ${a.id} → ${b.id}`)
    assert.deepStrictEqual(yield* receive(a, count), expected(b), `${label}: ${b.id} → ${a.id}`)
  })

/** Tells whether `other` ever left `peer`'s `connected` after first appearing in it. */
export const flapped = (peer: Peer, other: PeerId.PeerId): boolean => {
  const first = peer.history.findIndex((peers) => peers.includes(other))
  return first >= 0 && peer.history.slice(first).some((peers) => !peers.includes(other))
}

// ---------------------------------------------------------------------------------------------------------------
// raw clients

/** A raw connection, read as frames. */
export type RawLink = NetLink.Link

/** A raw connection to the peer on `port`, read as frames; protected once the handshake says so. */
export const rawLink = <A>(kit: Kit<A>, port: number) =>
  Effect.map(
    Effect.flatMap(kit.connect(port), (socket) => NetLink.make(socket, { limit: rawLimit, recordLimit: rawLimit })),
    rawProtection
  )

const rawLimit = 16 * 1024 * 1024

/**
 * A link that protects what it sends and receives itself once the handshake calls `protect`, independently of the
 * link's own protection, so that a raw client can still write what it likes: each write, whatever its bytes (whole
 * frames, a cut frame, garbage), goes out as one sealed record, as a peer's would. What it reads the plain link
 * decodes as frames: a record is one (its length header, then `type ‖ body` is the ciphertext and tag), opened here,
 * and the frames of its plaintext are decoded here.
 */
const rawProtection = (link: NetLink.Link): NetLink.Link => {
  let session: LinkCipher.Session | undefined = undefined
  const frames = new Frame.FrameDecoder(rawLimit)
  const tampered = new NetLink.ConnectionError({ reason: "Tampered", detail: "a record failed authentication" })
  const next: Effect.Effect<Frame.Frame, NetLink.ConnectionError> = Effect.suspend(() => {
    const current = session
    if (current === undefined) return link.next
    const decoded = frames.next()
    if (decoded instanceof Frame.FrameError) return Effect.fail(NetLink.fromFrameError(decoded))
    if (decoded !== undefined) return Effect.succeed(decoded)
    return Effect.flatMap(link.next, (record) => {
      const sealed = new Uint8Array(record.body.length + 1)
      sealed[0] = record.type
      sealed.set(record.body, 1)
      const opened = LinkCipher.open(current.receive, sealed)
      if (opened === undefined) return Effect.fail(tampered)
      frames.push(opened)
      return next
    })
  })
  return {
    ...link,
    next,
    nextBatch: Effect.map(next, (frame) => [frame]),
    write: (bytes) => {
      if (session === undefined) return link.write(bytes)
      const record = LinkCipher.sealRecord(session.send, bytes)
      return record === undefined ? Effect.fail(tampered) : link.write(record)
    },
    setLimit: (limit) => {
      frames.limit = limit
    },
    protect: (value) => {
      session = value
    }
  }
}

/** Plays a peer's side of the handshake as `local` with `key`, up to the verdict. */
export const authenticate = (link: NetLink.Link, local: PeerId.PeerId, expected: PeerId.PeerId, key: Uint8Array) =>
  Effect.gen(function*() {
    const authenticated = yield* Handshake.dial(link, {
      local,
      instance: yield* Handshake.randomBytes(Handshake.instanceSize),
      keys: [key],
      protect: true,
      decoy: yield* Handshake.randomBytes(32),
      knows: () => true,
      lastConnection: () => undefined
    }, expected)
    if (Handshake.decides(local, expected)) yield* Handshake.sendVerdict(link, true)
    else yield* Handshake.awaitVerdict(link)
    return authenticated
  })

/** Sends `Hello` and a `Proof` made with `key`, whatever the `Challenge` says. */
export const proveWithKey = (link: NetLink.Link, local: PeerId.PeerId, expected: PeerId.PeerId, key: Uint8Array) =>
  Effect.gen(function*() {
    const hello = Handshake.encodeHello({
      nonce: yield* Handshake.randomBytes(Handshake.nonceSize),
      instance: yield* Handshake.randomBytes(Handshake.instanceSize),
      last: undefined,
      from: local,
      to: expected
    })
    yield* link.write(Frame.encode(Frame.FrameType.Hello, hello))
    const challenge = yield* link.next
    assert.strictEqual(challenge.type, Frame.FrameType.Challenge)
    const signed = challenge.body.subarray(0, challenge.body.length - 32)
    yield* link.write(Frame.encode(Frame.FrameType.Proof, yield* Handshake.mac(key, "dialler", hello, signed)))
  })

/** A plain TCP client, below any transport: what it received, and whether the other side ended it. */
export interface PlainClient {
  readonly write: (bytes: Uint8Array | string) => Effect.Effect<void>
  /** Bytes received so far. */
  readonly received: () => Buffer
  readonly isClosed: () => boolean
  /** Succeeds once the connection has closed. */
  readonly closed: Effect.Effect<void>
}

/**
 * Connects to `port` on the loopback interface from `localAddress` (any of 127.0.0.0/8 on Linux, so that a test can
 * play several remote addresses), for the scope.
 */
export const plainClient = (port: number, localAddress = "127.0.0.1") =>
  Effect.gen(function*() {
    let closed = false
    let waiting: Array<() => void> = []
    let received = Buffer.alloc(0)
    const socket = yield* Effect.acquireRelease(
      Effect.async<NodeNet.Socket, Error>((resume) => {
        const socket = NodeNet.connect({ host: "127.0.0.1", port, localAddress })
        socket.on("data", (data: Buffer) => {
          received = Buffer.concat([received, data])
        })
        socket.on("error", () => {})
        socket.once("close", () => {
          closed = true
          for (const wake of waiting) wake()
          waiting = []
        })
        socket.once("connect", () => resume(Effect.succeed(socket)))
        socket.once("error", (error) => resume(Effect.fail(error)))
      }),
      (socket) => Effect.sync(() => socket.destroy())
    )
    return {
      write: (bytes) =>
        Effect.async<void>((resume) => {
          if (closed) return resume(Effect.void)
          socket.write(bytes, () => resume(Effect.void))
        }),
      received: () => received,
      isClosed: () => closed,
      closed: Effect.async<void>((resume) => {
        if (closed) return resume(Effect.void)
        waiting.push(() => resume(Effect.void))
      })
    } satisfies PlainClient
  })

/** A TCP proxy on the path to a peer: it records what goes through, and can rewrite one chunk. */
export interface Middle {
  readonly port: number
  /** Bytes from the dialler to the peer behind the proxy, so far, all connections. */
  readonly upstream: () => Buffer
  /** Bytes from the peer behind the proxy to the dialler, so far, all connections. */
  readonly downstream: () => Buffer
  /**
   * Rewrites the next chunk from the peer of at least `minBytes` into what `rewrite` returns (then forwards chunks as
   * they are again); succeeds once it has.
   */
  readonly rewriteNext: (minBytes: number, rewrite: (chunk: Buffer) => ReadonlyArray<Buffer>) => Effect.Effect<void>
}

/** A proxy on the loopback interface to `target`, for the scope. */
export const middle = (target: number) =>
  Effect.gen(function*() {
    const up: Array<Buffer> = []
    const down: Array<Buffer> = []
    let rewrite: { readonly minBytes: number; readonly apply: (chunk: Buffer) => ReadonlyArray<Buffer> } | undefined
    let rewritten: Array<() => void> = []
    const sockets = new Set<NodeNet.Socket>()
    const server = NodeNet.createServer((client) => {
      const server = NodeNet.connect({ host: "127.0.0.1", port: target })
      sockets.add(client).add(server)
      client.on("data", (chunk: Buffer) => {
        up.push(chunk)
        server.write(chunk)
      })
      server.on("data", (chunk: Buffer) => {
        down.push(chunk)
        const active = rewrite
        if (active === undefined || chunk.length < active.minBytes) return void client.write(chunk)
        rewrite = undefined
        for (const part of active.apply(chunk)) client.write(part)
        for (const wake of rewritten) wake()
        rewritten = []
      })
      const end = () => {
        client.destroy()
        server.destroy()
      }
      client.on("error", end).on("close", end)
      server.on("error", end).on("close", end)
    })
    const port = yield* Effect.acquireRelease(
      Effect.async<number>((resume) => {
        server.listen(0, "127.0.0.1", () => {
          const address = server.address()
          resume(Effect.succeed(address !== null && typeof address === "object" ? address.port : 0))
        })
      }),
      () =>
        Effect.sync(() => {
          for (const socket of sockets) socket.destroy()
          server.close()
        })
    )
    return {
      port,
      upstream: () => Buffer.concat(up),
      downstream: () => Buffer.concat(down),
      rewriteNext: (minBytes, apply) =>
        Effect.async<void>((resume) => {
          rewrite = { minBytes, apply }
          rewritten.push(() => resume(Effect.void))
        })
    } satisfies Middle
  })

/** Waits until the handshake counters of `peer` satisfy `predicate`, and returns them. */
export const awaitHandshakes = (
  peer: Peer,
  what: string,
  predicate: (stats: Net.HandshakeStats) => boolean
) => within(`${peer.id}: ${what}`, poll(peer.network.handshakes, predicate))

/** Runs `effect` every 5 ms until its value satisfies `predicate`, and returns that value. */
export const poll = <A, E, R>(effect: Effect.Effect<A, E, R>, predicate: (value: A) => boolean) =>
  Effect.gen(function*() {
    while (true) {
      const value = yield* effect
      if (predicate(value)) return value
      yield* Effect.sleep(Duration.millis(5))
    }
  })

/** Waits until the other side closed `link`. */
export const awaitClosed = (link: NetLink.Link, what: string) => within(what, link.closed)

export const elapsedSince = (start: number) => Effect.map(Clock.currentTimeMillis, (now) => now - start)

// ---------------------------------------------------------------------------------------------------------------
// the tests beyond the conformance suite

const A = PeerId.make("peer-a")
const B = PeerId.make("peer-b")
const C = PeerId.make("peer-c")

const test = (title: string, body: (logs: LogTap) => Effect.Effect<void, unknown, Scope.Scope>) =>
  it.live(title, () => {
    const logs = makeLogTap()
    return Effect.provide(Effect.scoped(Effect.suspend(() => body(logs))), logs.layer)
  })

export const networkBehaviour = <A>(kit: Kit<A>): void => {
  describe(`${kit.name} connections`, () => {
    test("both sides dialling at once end with one connection, and frames flow both ways (20 rounds)", () =>
      Effect.gen(function*() {
        for (let round = 1; round <= 20; round++) {
          yield* Effect.scoped(Effect.gen(function*() {
            const { book, port } = yield* bookFor(kit, [A, B])
            const [a, b] = yield* Effect.all([
              startPeer(kit, { peer: A, port: port(A), book }),
              startPeer(kit, { peer: B, port: port(B), book })
            ], { concurrency: "unbounded" })
            yield* awaitMesh([a, b])
            yield* exchange(a, b, `round ${round}`)
            const [atA, atB] = [yield* connectionTo(a, B), yield* connectionTo(b, A)]
            assert.strictEqual(atA.length, 1, "one connection at A")
            assert.strictEqual(atB.length, 1, "one connection at B")
            assert.strictEqual(atA[0]!.id, atB[0]!.id, "both ends use the same connection")
            assert.notStrictEqual(atA[0]!.dialled, atB[0]!.dialled, "one side dialled it, the other accepted it")
            assert.isFalse(flapped(a, B), "B never left A's connected")
            assert.isFalse(flapped(b, A), "A never left B's connected")
          }))
        }
      }))

    test("a peer restarting on the same port is dialled again and frames flow again", () =>
      Effect.gen(function*() {
        const { book, port } = yield* bookFor(kit, [A, B])
        const a = yield* startPeer(kit, { peer: A, port: port(A), book })
        const b = yield* startPeer(kit, { peer: B, port: port(B), book })
        yield* awaitMesh([a, b])
        yield* exchange(a, b, "before")
        const [before] = yield* connectionTo(b, A)
        yield* a.close
        yield* awaitConnected(b, "no longer sees A", (peers) => !HashSet.has(peers, A))
        const again = yield* startPeer(kit, { peer: A, port: port(A), book })
        yield* awaitMesh([again, b])
        yield* exchange(again, b, "after")
        const [after] = yield* connectionTo(b, A)
        assert.notStrictEqual(after!.id, before!.id, "a new connection")
      }))

    test("a restarted peer is taken at once although the old connection still looks alive", (logs) =>
      Effect.gen(function*() {
        // A raw client plays B restarted (a new instance) while the real B's connection is still up. A decides for
        // the pair and keeps the new connection; the real B, cut off, dials again and takes its place back.
        const { book, port } = yield* bookFor(kit, [A, B])
        const a = yield* startPeer(kit, { peer: A, port: port(A), book })
        const b = yield* startPeer(kit, { peer: B, port: port(B), book })
        yield* awaitMesh([a, b])
        const [first] = yield* connectionTo(a, B)
        const raw = yield* rawLink(kit, port(A))
        yield* authenticate(raw, B, A, keyBytes)
        yield* logs.waitFor(
          "A replaces its first connection with B",
          (record) => reason("Replaced", A)(record) && record.annotations["connection"] === first!.id
        )
        yield* awaitClosed(raw, "the stand-in is replaced by the real B in turn")
        yield* awaitMesh([a, b])
        yield* exchange(a, b, "after")
        const [atA] = yield* connectionTo(a, B)
        const [atB] = yield* connectionTo(b, A)
        assert.strictEqual(atA!.id, atB!.id, "A and the real B share a connection again")
      }))

    test("unauthenticated clients are refused and the legitimate peers are unaffected", (logs) =>
      Effect.gen(function*() {
        const Zero = PeerId.make("peer-0")
        const { book, port } = yield* bookFor(kit, [A, B, C, Zero])
        const a = yield* startPeer(kit, { peer: A, port: port(A), book })
        const b = yield* startPeer(kit, { peer: B, port: port(B), book })
        yield* awaitMesh([a, b])
        const [kept] = yield* connectionTo(a, B)

        // Garbage instead of a handshake: closed at once.
        const garbage = yield* rawLink(kit, port(A))
        yield* garbage.write(text("GET / HTTP/1.1\r\nHost: peer-a\r\n\r\n"))
        yield* awaitClosed(garbage, "the garbage client is closed")
        yield* logs.waitFor("A refuses the garbage", (record) =>
          record.annotations["local"] === A &&
          (record.annotations["reason"] === "FrameTooLarge" || record.annotations["reason"] === "Malformed"))

        // A client that sends nothing: closed after the handshake timeout.
        const silent = yield* rawLink(kit, port(A))
        const started = yield* Clock.currentTimeMillis
        yield* silent.write(new Uint8Array(0))
        yield* awaitClosed(silent, "the silent client is closed")
        const waited = yield* elapsedSince(started)
        assert.isAtLeast(waited, Duration.toMillis(fast.handshakeTimeout) * 0.8, "closed by the handshake timeout")
        yield* logs.waitFor("A times the silent client out", reason("HandshakeTimeout", A))

        // A handshake with the wrong key, claiming B: refused, and the real B stays connected.
        const impostor = yield* rawLink(kit, port(A))
        yield* proveWithKey(impostor, B, A, wrongKeyBytes)
        yield* awaitClosed(impostor, "the impostor is closed")
        yield* logs.waitFor("A refuses the impostor", reason("Unauthenticated", A))

        // A whole network with the wrong key, as C (in the book): never connected, either way.
        const c = yield* startPeer(kit, { peer: C, port: port(C), book, key: wrongKey })
        yield* logs.waitFor(
          "A refuses C",
          (record) => reason("Unauthenticated", A)(record) && record.annotations["peer"] === C
        )
        yield* logs.waitFor("C refuses A", reason("Unauthenticated", C))

        // An id that is not in the book gets a Challenge like any other, made with a decoy key: a client holding the
        // key sees that it does not check out.
        const stranger = yield* rawLink(kit, port(A))
        const unknown = yield* Effect.flip(authenticate(stranger, PeerId.make("peer-x"), A, keyBytes))
        assert.strictEqual(unknown.reason, "Unauthenticated", "the stranger's Challenge is not made with the key")
        // With the key, but not in the book: refused at the proof.
        const outsider = yield* rawLink(kit, port(A))
        yield* proveWithKey(outsider, PeerId.make("peer-y"), A, keyBytes)
        yield* awaitClosed(outsider, "the outsider is closed")
        yield* logs.waitFor("A refuses the outsider", reason("UnknownPeer", A))

        // Authenticated (as peer-0, which decides for its pairs), then a frame of an unknown type: closed.
        const rogue = yield* rawLink(kit, port(A))
        const beforeRogue = logs.mark()
        yield* authenticate(rogue, Zero, A, keyBytes)
        yield* rogue.write(Frame.encode(0x7f, text("what is this")))
        yield* awaitClosed(rogue, "the rogue client is closed")
        yield* logs.waitFor("A closes the rogue connection", reason("Malformed", A), beforeRogue)

        yield* exchange(a, b, "after the attacks")
        // A counted each refusal of a client that dialled it (C, without the key, gives up before a proof).
        const { failed } = yield* a.network.handshakes
        assert.isAtLeast((failed["FrameTooLarge"] ?? 0) + (failed["Malformed"] ?? 0), 1, "the garbage")
        assert.isAtLeast(failed["HandshakeTimeout"] ?? 0, 1, "the silent client")
        assert.strictEqual(failed["Unauthenticated"], 1, "the impostor")
        assert.strictEqual(failed["UnknownPeer"], 1, "the outsider")
        assert.deepStrictEqual(yield* connectionTo(a, B), [kept!], "A kept its connection with B throughout")
        assert.isFalse(flapped(a, B), "B never left A's connected")
        assert.isFalse(flapped(b, A), "A never left B's connected")
        assert.deepStrictEqual(Array.from(yield* c.network.connected.get), [], "C never connected")
      }))

    test("an oversized frame closes only its connection, and the peers connect again", (logs) =>
      Effect.gen(function*() {
        const { book, port } = yield* bookFor(kit, [A, B, C])
        const a = yield* startPeer(kit, { peer: A, port: port(A), book })
        const b = yield* startPeer(kit, { peer: B, port: port(B), book, settings: { ...fast, maxFrameSize: 1024 } })
        const c = yield* startPeer(kit, { peer: C, port: port(C), book })
        yield* awaitMesh([a, b, c])
        const [ab] = yield* connectionTo(b, A)
        const [cb] = yield* connectionTo(b, C)
        const [ac] = yield* connectionTo(a, C)

        // B sends nothing over its own limit.
        const tooLarge = yield* Effect.flip(b.network.send(A, [new Uint8Array(1025)]))
        assert.strictEqual(tooLarge.reason, "Io")

        yield* a.network.send(B, [new Uint8Array(4096)])
        yield* logs.waitFor("B closes the connection with A", reason("FrameTooLarge", B))
        yield* within(
          "A and B connect again",
          Effect.repeat(connectionTo(b, A), {
            until: (connections) => connections.length === 1 && connections[0]!.id !== ab!.id,
            schedule: Schedule.spaced("10 millis")
          })
        )
        yield* awaitMesh([a, b])
        yield* exchange(a, b, "after")
        assert.deepStrictEqual(yield* connectionTo(b, C), [cb!], "B kept its connection with C")
        assert.deepStrictEqual(yield* connectionTo(a, C), [ac!], "A kept its connection with C")
        assert.isFalse(flapped(b, C), "C never left B's connected")
        yield* exchange(b, c, "unaffected")
      }))

    test("a half-open connection is dropped within the idle timeout", () =>
      Effect.gen(function*() {
        // peer-0 decides for the pair (lower id); its book port has nothing listening, so A cannot dial it.
        const Zero = PeerId.make("peer-0")
        const { book, port } = yield* bookFor(kit, [A, Zero])
        const a = yield* startPeer(kit, { peer: A, port: port(A), book })
        const raw = yield* rawLink(kit, port(A))
        yield* authenticate(raw, Zero, A, keyBytes)
        yield* awaitConnected(a, "sees peer-0", HashSet.has(Zero))
        const started = yield* Clock.currentTimeMillis
        // peer-0 now answers nothing (A's pings pile up unread): A must give up on it.
        yield* awaitConnected(a, "drops peer-0", (peers) => !HashSet.has(peers, Zero))
        const waited = yield* elapsedSince(started)
        const idle = Duration.toMillis(fast.idleTimeout)
        assert.isAtLeast(waited, idle * 0.8, "not before the idle timeout")
        assert.isAtMost(waited, idle + 1000, "soon after the idle timeout")
        yield* awaitClosed(raw, "A closed the half-open connection")
        // A live peer in the same state is kept: pings keep a quiet connection open.
        const b = yield* startPeer(kit, { peer: B, port: yield* freePort, book })
        yield* SubscriptionRef.update(book, (entries) => new Map(entries).set(B, kit.address(b.network.port)))
        yield* awaitMesh([a, b])
        const [quiet] = yield* connectionTo(a, B)
        yield* Effect.sleep(Duration.times(fast.idleTimeout, 2))
        assert.deepStrictEqual(yield* connectionTo(a, B), [quiet!], "a quiet, live connection stays")
      }))

    test("two engines exchange 300 messages each way in order", () =>
      Effect.gen(function*() {
        const { book, port } = yield* bookFor(kit, [A, B])
        const engine = (peer: PeerId.PeerId) =>
          Layer.build(
            ILM.layer().pipe(
              Layer.provideMerge(Delivery.layerInbox()),
              Layer.provide(Layer.scoped(
                Network,
                kit.make({ peer, port: port(peer), book, settings: fast })
              )),
              Layer.provide(InMemoryBackend.layerFresh)
            )
          )
        const [one, two] = yield* Effect.all([engine(A), engine(B)], { concurrency: "unbounded" })
        const count = 300
        const send = (from: Context.Context<ILM.ILM>, to: PeerId.PeerId) =>
          Effect.forEach(
            Array.from({ length: count }, (_, i) => i + 1),
            (i) => Context.get(from, ILM.ILM).send(to, text(`${to} ${i}`)),
            { discard: true }
          )
        const take = (context: Context.Context<Delivery.Inbox>) =>
          Effect.map(
            Effect.replicateEffect(Context.get(context, Delivery.Inbox).take, count),
            (messages) => messages.map((message) => `${message.source}>${decoder.decode(message.payload)}`)
          )
        const [, , atB, atA] = yield* within(
          "every message arrives",
          Effect.all([send(one, B), send(two, A), take(two), take(one)], { concurrency: "unbounded" })
        )
        assert.deepStrictEqual(atB, Array.from({ length: count }, (_, i) => `${A}>${B} ${i + 1}`))
        assert.deepStrictEqual(atA, Array.from({ length: count }, (_, i) => `${B}>${A} ${i + 1}`))
        yield* within("everything is acknowledged", Context.get(one, ILM.ILM).drain("5 seconds"))
        yield* within("everything is acknowledged", Context.get(two, ILM.ILM).drain("5 seconds"))
      }))
  })

  describe(`${kit.name} frame protection`, () => {
    /**
     * A and B, A dialling B through a proxy: B's book has A where nothing listens, so the only connection between
     * them goes through the proxy (A has the lower id and keeps its own dial anyway).
     */
    const proxied = (settings: Net.ConnectionOptions = fast) =>
      Effect.gen(function*() {
        const [portA, portB, nowhere] = [yield* freePort, yield* freePort, yield* freePort]
        const bookOf = (entries: ReadonlyArray<readonly [PeerId.PeerId, number]>) =>
          SubscriptionRef.make<ReadonlyMap<PeerId.PeerId, A>>(
            new Map(entries.map(([peer, port]) => [peer, kit.address(port)] as const))
          )
        const b = yield* startPeer(kit, {
          peer: B,
          port: portB,
          book: yield* bookOf([[A, nowhere], [B, portB]]),
          settings
        })
        const proxy = yield* middle(portB)
        const a = yield* startPeer(kit, {
          peer: A,
          port: portA,
          book: yield* bookOf([[A, portA], [B, proxy.port]]),
          settings
        })
        yield* awaitMesh([a, b])
        return { a, b, proxy }
      })

    const secret = (label: string) => text(`${label}: plaintext nobody on the path may read ${"*".repeat(2000)}`)
    const contains = (haystack: Buffer, needle: string) => haystack.includes(Buffer.from(needle))

    /**
     * Sends numbered frames from `from` to `to` until one arrives (the connection may still be the old one, closed
     * under the sender), and returns every frame `to` received meanwhile, as `from:text`.
     */
    const deliverEventually = (from: Peer, to: Peer, label: string) =>
      within(
        `${from.id} reaches ${to.id} again`,
        Effect.gen(function*() {
          const received: Array<string> = []
          for (let i = 0;; i++) {
            yield* Effect.ignore(from.network.send(to.id, [text(`${label} ${i}`)]))
            const got = yield* Effect.timeout(Queue.take(to.mailbox), "200 millis").pipe(Effect.option)
            if (got._tag === "Some") {
              received.push(`${got.value.from}:${decoder.decode(got.value.frame)}`)
              const rest = yield* Queue.takeAll(to.mailbox)
              for (const inbound of rest) received.push(`${inbound.from}:${decoder.decode(inbound.frame)}`)
              return received
            }
          }
        })
      )

    test("frames are not readable on the path (and are with protectFrames: false)", () =>
      Effect.gen(function*() {
        const { a, b, proxy } = yield* proxied()
        yield* a.network.send(B, [secret("from a")])
        yield* b.network.send(A, [secret("from b")])
        assert.deepStrictEqual(yield* receive(b, 1), [`${A}:${decoder.decode(secret("from a"))}`])
        assert.deepStrictEqual(yield* receive(a, 1), [`${B}:${decoder.decode(secret("from b"))}`])
        assert.isFalse(contains(proxy.upstream(), "plaintext nobody"), "A's frame is not readable on the path")
        assert.isFalse(contains(proxy.downstream(), "plaintext nobody"), "B's frame is not readable on the path")
        assert.strictEqual((yield* a.network.connections)[0]?.keyIndex, 0)

        // The control: the same path without protection shows the frames (B → A; a WebSocket client masks its own).
        const plain = yield* proxied({ ...fast, protectFrames: false })
        yield* plain.b.network.send(A, [secret("plain from b")])
        assert.deepStrictEqual(yield* receive(plain.a, 1), [`${B}:${decoder.decode(secret("plain from b"))}`])
        assert.isTrue(contains(plain.proxy.downstream(), "plain from b: plaintext nobody"))
      }))

    test("a bit flipped on the path closes the connection, is counted, and nothing altered is delivered", (logs) =>
      Effect.gen(function*() {
        const { a, b, proxy } = yield* proxied()
        const mark = logs.mark()
        const original = secret("flipped")
        const flipped = yield* Effect.fork(proxy.rewriteNext(1000, (chunk) => {
          const altered = Buffer.from(chunk)
          altered[altered.length - 100] = altered[altered.length - 100]! ^ 0x04
          return [altered]
        }))
        yield* b.network.send(A, [original])
        yield* within("the proxy flips a bit", Fiber.join(flipped))
        yield* logs.waitFor(
          "A closes the connection",
          (record) => reason("Tampered", A)(record) && record.message.startsWith("connection closed"),
          mark
        )
        assert.isAtLeast(yield* a.network.tampered, 1)
        assert.strictEqual(yield* b.network.tampered, 0)
        // The connection is made again; what A received since is only what B sent after.
        const received = yield* deliverEventually(b, a, "after")
        assert.isTrue(received.length >= 1)
        for (const line of received) assert.match(line, new RegExp(`^${B}:after \\d+$`))
      }))

    test("a frame replayed on the path closes the connection and is delivered once", (logs) =>
      Effect.gen(function*() {
        const { a, b, proxy } = yield* proxied()
        const mark = logs.mark()
        const original = secret("replayed")
        const replayed = yield* Effect.fork(proxy.rewriteNext(1000, (chunk) => [chunk, Buffer.from(chunk)]))
        yield* b.network.send(A, [original])
        yield* within("the proxy replays a chunk", Fiber.join(replayed))
        assert.deepStrictEqual(yield* receive(a, 1), [`${B}:${decoder.decode(original)}`])
        yield* logs.waitFor("A closes the connection", (record) =>
          reason("Tampered", A)(record) && record.message.startsWith("connection closed"), mark)
        assert.isAtLeast(yield* a.network.tampered, 1)
        const received = yield* deliverEventually(b, a, "after")
        for (const line of received) {
          assert.match(line, new RegExp(`^${B}:after \\d+$`))
        }
      }))

    const newKey = Redacted.make("the next pre-shared key of the network tests")

    test("rotation: a peer with [new, old] links with a peer with [old], proving the old key", () =>
      Effect.gen(function*() {
        const { book, port } = yield* bookFor(kit, [A, B])
        const a = yield* startPeer(kit, { peer: A, port: port(A), book, key: [newKey, key] })
        const b = yield* startPeer(kit, { peer: B, port: port(B), book, key: [key] })
        yield* awaitMesh([a, b])
        yield* exchange(a, b, "rotating")
        const [atA] = yield* connectionTo(a, B)
        const [atB] = yield* connectionTo(b, A)
        assert.strictEqual(atA?.keyIndex, 1, "A proved its second key, the old one")
        assert.strictEqual(atB?.keyIndex, 0)
        // A list needs a key, and every key of it must be long enough.
        for (const keys of [[], [newKey, Redacted.make("short")]]) {
          const refused = yield* Effect.flip(kit.make({ peer: C, port: 0, book, key: keys }))
          assert.match(String(refused), /InvalidOptions|invalid/i)
        }
      }))

    test("rotation: a peer with [new] and a peer with [old] do not link", (logs) =>
      Effect.gen(function*() {
        const { book, port } = yield* bookFor(kit, [A, B])
        const a = yield* startPeer(kit, { peer: A, port: port(A), book, key: [newKey] })
        const b = yield* startPeer(kit, { peer: B, port: port(B), book, key })
        yield* logs.waitFor("A's dial fails", reason("Unauthenticated", A))
        yield* logs.waitFor("B's dial fails", reason("Unauthenticated", B))
        assert.strictEqual(HashSet.size(yield* a.network.connected.get), 0)
        assert.strictEqual(HashSet.size(yield* b.network.connected.get), 0)
      }))
  })
}

/** A client's binary WebSocket message header announcing `length` bytes, masked with a zero key. */
export const webSocketMessageHeader = (length: number) => {
  const header = Buffer.alloc(14)
  header[0] = 0x82
  header[1] = 0x80 | 127
  header.writeBigUInt64BE(BigInt(length), 2)
  return header
}

/** The body of a first `Hello` from `from` to `to`: fresh nonce and instance, no last connection. */
export const freshHello = (from: PeerId.PeerId, to: PeerId.PeerId) =>
  Effect.gen(function*() {
    return Handshake.encodeHello({
      nonce: yield* Handshake.randomBytes(Handshake.nonceSize),
      instance: yield* Handshake.randomBytes(Handshake.instanceSize),
      last: undefined,
      from,
      to
    })
  })
