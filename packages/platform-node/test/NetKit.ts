/**
 * What the TCP and WebSocket network tests share: a kit per transport, peers that record what they see, a logger
 * the tests can wait on, raw clients that speak (or break) the protocol, and the tests beyond the conformance suite.
 */
import type * as Socket from "@effect/platform/Socket"
import { assert, describe, it } from "@effect/vitest"
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import { type Inbound, Network } from "@intersession/core/Network"
import * as PeerId from "@intersession/core/PeerId"
import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
import { NetworkFixture } from "@intersession/testing/NetworkSuite"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
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
import * as Frame from "../src/internal/frame.js"
import * as Handshake from "../src/internal/handshake.js"
import type * as Net from "../src/internal/net.js"
import * as NetLink from "../src/internal/netLink.js"

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
    readonly key?: Redacted.Redacted<string> | undefined
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

/** The conformance suite's fixture: each peer gets a port on first start and keeps it when started again. */
export const fixture = <A>(kit: Kit<A>): Layer.Layer<NetworkFixture> =>
  Layer.effect(
    NetworkFixture,
    Effect.gen(function*() {
      const book: Book<A> = yield* SubscriptionRef.make<ReadonlyMap<PeerId.PeerId, A>>(new Map())
      const ports = new Map<PeerId.PeerId, number>()
      return NetworkFixture.of({
        make: (peer) =>
          Effect.gen(function*() {
            const network = yield* kit.make({ peer, port: ports.get(peer) ?? 0, book, settings: fast })
            if (!ports.has(peer)) {
              ports.set(peer, network.port)
              yield* SubscriptionRef.update(book, (entries) => new Map(entries).set(peer, kit.address(network.port)))
            }
            return network
          })
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
    readonly key?: Redacted.Redacted<string> | undefined
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

const within = <A, E, R>(what: string, effect: Effect.Effect<A, E, R>) =>
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

/** A raw connection to the peer on `port`, read as frames. */
export const rawLink = <A>(kit: Kit<A>, port: number) =>
  Effect.flatMap(kit.connect(port), (socket) => NetLink.make(socket, 16 * 1024 * 1024))

/** Plays a peer's side of the handshake as `local` with `key`, up to the verdict. */
export const authenticate = (link: NetLink.Link, local: PeerId.PeerId, expected: PeerId.PeerId, key: Uint8Array) =>
  Effect.gen(function*() {
    const authenticated = yield* Handshake.dial(link, {
      local,
      instance: yield* Handshake.randomBytes(Handshake.instanceSize),
      key,
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

        // The right key, but an id that is not in the book.
        const stranger = yield* rawLink(kit, port(A))
        const unknown = yield* Effect.flip(authenticate(stranger, PeerId.make("peer-x"), A, keyBytes))
        assert.strictEqual(unknown.reason, "Closed", "A closes on a stranger")
        yield* logs.waitFor("A refuses the stranger", reason("UnknownPeer", A))

        // Authenticated (as peer-0, which decides for its pairs), then a frame of an unknown type: closed.
        const rogue = yield* rawLink(kit, port(A))
        const beforeRogue = logs.mark()
        yield* authenticate(rogue, Zero, A, keyBytes)
        yield* rogue.write(Frame.encode(0x7f, text("what is this")))
        yield* awaitClosed(rogue, "the rogue client is closed")
        yield* logs.waitFor("A closes the rogue connection", reason("Malformed", A), beforeRogue)

        yield* exchange(a, b, "after the attacks")
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
}
