/**
 * The conformance suite of the `Network` contract (`@intersession/core/Network`). Every transport runs the same
 * suite: it provides a {@link NetworkFixture} that brings peers online, and calls {@link networkSuite} from a test
 * file. The suite runs on the live clock and waits on events (`connected.changes`, arriving frames), never on clock
 * steps, so it suits real sockets as well as the in-memory hub; its time limits only bound a test that would
 * otherwise hang.
 *
 * A transport over sockets also runs the suite's hostile-input tests at the socket level: random bytes, truncated,
 * oversized and premature frames, before and after authentication, against a peer's listener, while honest frames
 * flow. They need raw access to the listeners ({@link RawAccess}), which the fixture provides and the caller of
 * {@link networkSuite} declares with `{ raw: true }`; without it they are skipped, and their names say why.
 *
 * @since 0.1.0
 */
import { assert, describe, it } from "@effect/vitest"
import type { Inbound, Network } from "@intersession/core/Network"
import * as PeerId from "@intersession/core/PeerId"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as HashSet from "effect/HashSet"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { NotReachedError } from "./Eventually.js"
import { assertBytes, decoder, pattern, range, text } from "./internal/suiteKit.js"

/**
 * A raw connection to a peer's listener, as the hostile-input tests drive it.
 *
 * @since 0.3.0
 * @category fixtures
 */
export interface RawConnection {
  /** Writes bytes as they are, in order (over a message transport, one message per write); fails once closed. */
  readonly write: (bytes: Uint8Array) => Effect.Effect<void, unknown>
  /** Ends the connection from this side. */
  readonly end: Effect.Effect<void>
  /** Succeeds once the connection has closed, whichever side closed it. */
  readonly closed: Effect.Effect<void>
}

/**
 * Raw access to the listeners of a fixture's peers, for the socket-level hostile-input tests: connections that
 * carry whatever bytes the suite writes, and the transport's framing, so that the suite can write frames whole, cut
 * short or oversized without knowing the format.
 *
 * @since 0.3.0
 * @category fixtures
 */
export interface RawAccess {
  /**
   * A connection to the listener of `peer` (online), as a client that has not authenticated: the first bytes the
   * suite writes are the first the listener reads.
   */
  readonly connect: (peer: PeerId.PeerId) => Effect.Effect<RawConnection, unknown, Scope.Scope>
  /**
   * A connection to the listener of `peer` that has authenticated as `as`, an id the fixture lets in (in the address
   * book, holding the key) and that is not online otherwise: what the suite writes next comes from `as`.
   */
  readonly authenticated: (
    peer: PeerId.PeerId,
    as: PeerId.PeerId
  ) => Effect.Effect<RawConnection, unknown, Scope.Scope>
  /** The bytes of one frame carrying `payload`, as `send` writes it. */
  readonly frame: (payload: Uint8Array) => Uint8Array
  /** The largest payload a peer accepts in one frame: one byte more is oversized. */
  readonly maxFrameSize: number
  /**
   * How long a peer waits on a connection that sends nothing before it closes it (its handshake and idle timeouts):
   * the suite expects bad input to be refused within half of it, so that a refusal is not mistaken for a timeout.
   */
  readonly patience: Duration.Duration
}

/**
 * What the suite needs from a transport: `make` brings a peer online and gives its `Network`; closing the scope
 * takes it offline again, and a later `make` for the same id brings it back. Every network made by one fixture can
 * reach every other one that is online (a TCP fixture gives each a port and a shared address book), over links
 * that neither drop, duplicate nor reorder frames. Each test builds the fixture afresh.
 *
 * `raw` gives raw access to the peers' listeners, for the socket-level hostile-input tests. A transport without
 * sockets (the in-memory hub: its frames are values, and nothing authenticates) has none; it tests hostile frames at
 * its own level (`InMemoryNetwork`'s `inject`, used by the engine's hostile-input tests).
 *
 * @since 0.1.0
 * @category fixtures
 */
export class NetworkFixture extends Context.Tag("@intersession/testing/NetworkSuite/NetworkFixture")<
  NetworkFixture,
  {
    readonly make: (peer: PeerId.PeerId) => Effect.Effect<Network["Type"], unknown, Scope.Scope>
    readonly raw?: RawAccess | undefined
  }
>() {}

/**
 * How {@link networkSuite} runs.
 *
 * @since 0.3.0
 * @category suites
 */
export interface NetworkSuiteOptions {
  /**
   * The fixture gives raw access to its listeners (`NetworkFixture.raw`): the socket-level hostile-input tests run,
   * and fail if it does not. When absent or `false` they are skipped, and their names say why; every transport over
   * sockets should set it.
   */
  readonly raw?: boolean | undefined
}

const A = PeerId.make("peer-a")
const B = PeerId.make("peer-b")
const C = PeerId.make("peer-c")

/** How long a wait may take before the test fails instead of hanging. Only a failing test waits this long. */
const limit = Duration.seconds(30)

const labels = (from: PeerId.PeerId, to: PeerId.PeerId, first: number, last: number): Array<string> =>
  range(first, last).map((i) => `${from}->${to} ${i}`)

interface Node {
  readonly id: PeerId.PeerId
  readonly network: Network["Type"]
  /** Everything `network.inbound` delivered, read by one fiber for the node's whole life. */
  readonly mailbox: Queue.Queue<Inbound>
}

interface ClosableNode extends Node {
  /** Takes the peer offline. */
  readonly close: Effect.Effect<void>
}

const within = <A, E, R>(what: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | NotReachedError, R> =>
  Effect.timeoutFail(effect, { duration: limit, onTimeout: () => new NotReachedError({ what, after: limit }) })

/** A random generator of 32-bit values from `seed` (xorshift32), so that a failing case can be replayed. */
const random = (seed: number) => {
  let state = seed >>> 0 || 1
  return () => {
    state ^= state << 13
    state >>>= 0
    state ^= state >>> 17
    state ^= state << 5
    state >>>= 0
    return state
  }
}

const randomBytes = (next: () => number, size: number): Uint8Array =>
  Uint8Array.from({ length: size }, () => next() & 0xff)

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((size, part) => size + part.length, 0))
  let at = 0
  for (const part of parts) {
    out.set(part, at)
    at += part.length
  }
  return out
}

/** Brings `id` online for the rest of the scope and starts collecting what it receives. */
const start = (id: PeerId.PeerId): Effect.Effect<Node, unknown, NetworkFixture | Scope.Scope> =>
  Effect.gen(function*() {
    const fixture = yield* NetworkFixture
    const network = yield* fixture.make(id)
    const mailbox = yield* Queue.unbounded<Inbound>()
    yield* Effect.forkScoped(Stream.runForEach(network.inbound, (inbound) => Queue.offer(mailbox, inbound)))
    return { id, network, mailbox }
  })

/** Brings `id` online in a scope of its own, so that the test can take it offline. */
const startClosable = (id: PeerId.PeerId): Effect.Effect<ClosableNode, unknown, NetworkFixture | Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const node = yield* Scope.extend(start(id), scope)
    return { ...node, close: Scope.close(scope, Exit.void) }
  })

/** Waits until `node`'s `connected` satisfies `predicate`, watching its changes. */
const awaitConnected = (node: Node, what: string, predicate: (connected: HashSet.HashSet<PeerId.PeerId>) => boolean) =>
  Effect.flatMap(
    within(
      `${node.id} ${what}`,
      Stream.concat(Stream.fromEffect(node.network.connected.get), node.network.connected.changes).pipe(
        Stream.filter(predicate),
        Stream.runHead
      )
    ),
    (found) =>
      Option.isSome(found)
        ? Effect.void
        : Effect.fail(new NotReachedError({ what: `${node.id} ${what}`, after: limit }))
  )

/** Waits until every node has every other one in its `connected`. */
const awaitMesh = (nodes: ReadonlyArray<Node>) =>
  Effect.forEach(
    nodes.flatMap((node) => nodes.filter((other) => other.id !== node.id).map((other) => [node, other] as const)),
    ([node, other]) => awaitConnected(node, `sees ${other.id}`, HashSet.has(other.id)),
    { concurrency: "unbounded", discard: true }
  )

/** Takes the next `count` frames `node` received. */
const receive = (node: Node, count: number): Effect.Effect<ReadonlyArray<Inbound>, NotReachedError> =>
  Effect.map(
    within(`${node.id} receives ${count} frames`, Queue.takeN(node.mailbox, count)),
    Chunk.toReadonlyArray
  )

const sendLabels = (node: Node, to: PeerId.PeerId, first: number, last: number, perSend: number) =>
  Effect.forEach(
    Chunk.toReadonlyArray(Chunk.chunksOf(Chunk.fromIterable(labels(node.id, to, first, last)), perSend)),
    (batch) => node.network.send(to, Chunk.toReadonlyArray(batch).map(text)),
    { discard: true }
  )

const decoded = (frames: ReadonlyArray<Inbound>, from: PeerId.PeerId): Array<string> =>
  frames.filter((inbound) => inbound.from === from).map((inbound) => decoder.decode(inbound.frame))

/**
 * Checks that a `send` that cannot reach its peer settles: it succeeds (the frames are dropped) or fails with a
 * `NetworkError` for that peer. It never dies, is never interrupted and never hangs.
 */
const assertSendSettles = (node: Node, to: PeerId.PeerId, frames: ReadonlyArray<Uint8Array>, what: string) =>
  Effect.gen(function*() {
    const outcome = yield* Effect.timeoutOption(Effect.exit(node.network.send(to, frames)), limit)
    if (Option.isNone(outcome)) return assert.fail(`${what}: send did not settle within ${Duration.format(limit)}`)
    const exit = outcome.value
    if (Exit.isSuccess(exit)) return
    assert.isTrue(Option.isNone(Cause.dieOption(exit.cause)), `${what}: send died: ${Cause.pretty(exit.cause)}`)
    assert.isFalse(Cause.isInterrupted(exit.cause), `${what}: send was interrupted: ${Cause.pretty(exit.cause)}`)
    const failure = Cause.failureOption(exit.cause)
    if (Option.isNone(failure)) return assert.fail(`${what}: send failed without an error: ${Cause.pretty(exit.cause)}`)
    assert.strictEqual(failure.value._tag, "NetworkError", what)
    assert.strictEqual(failure.value.peer, to, `${what}: the error names the peer`)
  })

/**
 * Declares a `describe` block named `name` that checks the `Network` contract on the networks of the fixture
 * `layer`. Each test builds the fixture, runs on the live clock and takes its peers offline before the fixture closes.
 * With `{ raw: true }` it also runs the hostile-input tests at the socket level on the fixture's raw access.
 *
 * @example
 * ```ts
 * // test/InMemoryNetwork.test.ts: the suite on the in-memory hub. A transport of your own gives its fixture the same
 * // way: each test builds the fixture afresh, and `make` brings a peer online (a TCP fixture gives each peer a port
 * // and a shared address book). A transport over sockets also gives `raw` access to its listeners and calls
 * // `networkSuite(name, fixture, { raw: true })`, so that the hostile-input tests at the socket level run; the hub has
 * // no sockets, and they are skipped.
 * import { Network } from "@intersession/core/Network"
 * import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
 * import * as NetworkSuite from "@intersession/testing/NetworkSuite"
 * import * as Context from "effect/Context"
 * import * as Effect from "effect/Effect"
 * import * as Layer from "effect/Layer"
 *
 * const fixture = Layer.scoped(
 *   NetworkSuite.NetworkFixture,
 *   Effect.map(InMemoryNetwork.make(), (hub) =>
 *     NetworkSuite.NetworkFixture.of({
 *       make: (peer) => Effect.map(Layer.build(hub.layer(peer)), Context.get(Network))
 *     }))
 * )
 *
 * NetworkSuite.networkSuite("InMemoryNetwork", fixture)
 * ```
 *
 * @since 0.1.0
 * @category suites
 */
export const networkSuite = (
  name: string,
  fixture: Layer.Layer<NetworkFixture, unknown>,
  options: NetworkSuiteOptions = {}
): void => {
  describe(name, () => {
    const test = (title: string, body: () => Effect.Effect<void, unknown, NetworkFixture | Scope.Scope>) =>
      it.live(title, () => Effect.provide(Effect.scoped(Effect.suspend(body)), fixture))

    test("localPeer is the id the network was made for", () =>
      Effect.gen(function*() {
        const a = yield* start(A)
        const other = yield* start(PeerId.make("пир ü/😀"))
        assert.strictEqual(a.network.localPeer, A)
        assert.strictEqual(other.network.localPeer, "пир ü/😀")
      }))

    test("two peers appear in each other's connected, and never in their own", () =>
      Effect.gen(function*() {
        const a = yield* start(A)
        assert.isFalse(HashSet.has(yield* a.network.connected.get, A), "a lone peer does not see itself")
        const b = yield* start(B)
        yield* awaitMesh([a, b])
        assert.deepStrictEqual(Array.from(yield* a.network.connected.get), [B])
        assert.deepStrictEqual(Array.from(yield* b.network.connected.get), [A])
      }))

    test("frames arrive from the sender with exactly their bytes: empty, 1 byte, every byte value, 64 KiB, a view", () =>
      Effect.gen(function*() {
        const a = yield* start(A)
        const b = yield* start(B)
        yield* awaitMesh([a, b])
        const frames: ReadonlyArray<readonly [string, Uint8Array]> = [
          ["empty frame", new Uint8Array(0)],
          ["1-byte frame", new Uint8Array([0])],
          ["every byte value", Uint8Array.from({ length: 256 }, (_, i) => 255 - i)],
          ["64 KiB frame", pattern(64 * 1024, 1)],
          ["a view into a larger buffer", pattern(100, 3).subarray(17, 29)]
        ]
        const expected = frames.map(([what, frame]) => [what, frame.slice()] as const)
        // Each in a send of its own, then all of them in one send.
        for (const [, frame] of frames) yield* a.network.send(B, [frame])
        yield* a.network.send(B, frames.map(([, frame]) => frame))
        const received = yield* receive(b, 2 * frames.length)
        received.forEach((inbound, i) => {
          const [what, frame] = expected[i % expected.length]!
          assert.strictEqual(inbound.from, A, `${what}: from`)
          assertBytes(inbound.frame, frame, `${what} (${i < expected.length ? "alone" : "in one send"})`)
        })
        yield* b.network.send(A, [new Uint8Array([7])])
        const [back] = yield* receive(a, 1)
        assert.strictEqual(back!.from, B)
        assertBytes(back!.frame, new Uint8Array([7]), "the reply")
      }))

    test("many frames in one send arrive once each, in order", () =>
      Effect.gen(function*() {
        const a = yield* start(A)
        const b = yield* start(B)
        yield* awaitMesh([a, b])
        const frames = range(1, 200).map((i) => pattern(i * 13, i))
        yield* a.network.send(B, frames)
        const received = yield* receive(b, frames.length)
        received.forEach((inbound, i) => {
          assert.strictEqual(inbound.from, A)
          assertBytes(inbound.frame, frames[i]!, `frame ${i + 1}`)
        })
      }))

    test("1,000 frames sent one by one arrive once each, in order", () =>
      Effect.gen(function*() {
        const a = yield* start(A)
        const b = yield* start(B)
        yield* awaitMesh([a, b])
        yield* sendLabels(a, B, 1, 1000, 1)
        const received = yield* receive(b, 1000)
        assert.deepStrictEqual(decoded(received, A), labels(A, B, 1, 1000))
        yield* a.network.send(B, [text("end")])
        const [next] = yield* receive(b, 1)
        assert.strictEqual(decoder.decode(next!.frame), "end", "nothing arrived twice")
      }))

    test("both directions at once", () =>
      Effect.gen(function*() {
        const a = yield* start(A)
        const b = yield* start(B)
        yield* awaitMesh([a, b])
        yield* Effect.all([sendLabels(a, B, 1, 500, 10), sendLabels(b, A, 1, 500, 1)], {
          concurrency: "unbounded",
          discard: true
        })
        const [atA, atB] = yield* Effect.all([receive(a, 500), receive(b, 500)], { concurrency: "unbounded" })
        assert.deepStrictEqual(decoded(atB, A), labels(A, B, 1, 500))
        assert.deepStrictEqual(decoded(atA, B), labels(B, A, 1, 500))
      }))

    test("three peers all-to-all", () =>
      Effect.gen(function*() {
        const nodes = yield* Effect.forEach([A, B, C], start)
        yield* awaitMesh(nodes)
        for (const node of nodes) {
          assert.deepStrictEqual(
            Array.from(yield* node.network.connected.get).sort(),
            [A, B, C].filter((id) => id !== node.id),
            `${node.id} sees exactly the others`
          )
        }
        yield* Effect.forEach(
          nodes.flatMap((node) => nodes.filter((other) => other !== node).map((other) => [node, other] as const)),
          ([node, other]) => sendLabels(node, other.id, 1, 50, 7),
          { concurrency: "unbounded", discard: true }
        )
        for (const node of nodes) {
          const received = yield* receive(node, 100)
          for (const other of nodes) {
            if (other === node) {
              assert.deepStrictEqual(decoded(received, node.id), [], `${node.id} receives nothing from itself`)
            } else {
              assert.deepStrictEqual(decoded(received, other.id), labels(other.id, node.id, 1, 50))
            }
          }
        }
        // Nothing beyond what was sent: a last frame to each is the next one it gets.
        for (const node of nodes) {
          const sender = node === nodes[0] ? nodes[1]! : nodes[0]!
          yield* sender.network.send(node.id, [text("end")])
        }
        for (const node of nodes) {
          const [next] = yield* receive(node, 1)
          assert.strictEqual(decoder.decode(next!.frame), "end", `${node.id} got no extra frame`)
        }
      }))

    test("closing a peer's scope removes it from the others' connected, and a new network for its id reconnects", () =>
      Effect.gen(function*() {
        const a = yield* startClosable(A)
        const b = yield* start(B)
        const c = yield* start(C)
        yield* awaitMesh([a, b, c])
        yield* a.close
        yield* awaitConnected(b, `no longer sees ${A}`, (connected) => !HashSet.has(connected, A))
        yield* awaitConnected(c, `no longer sees ${A}`, (connected) => !HashSet.has(connected, A))
        assert.isTrue(HashSet.has(yield* b.network.connected.get, C), "the others stay connected")
        assert.isTrue(HashSet.has(yield* c.network.connected.get, B), "the others stay connected")
        const again = yield* start(A)
        yield* awaitMesh([again, b, c])
        yield* b.network.send(A, [text("welcome back")])
        yield* again.network.send(C, [text("hello again")])
        const [atA] = yield* receive(again, 1)
        assert.strictEqual(atA!.from, B)
        assert.strictEqual(decoder.decode(atA!.frame), "welcome back")
        const [atC] = yield* receive(c, 1)
        assert.strictEqual(atC!.from, A)
        assert.strictEqual(decoder.decode(atC!.frame), "hello again")
      }))

    test("send to a peer that was never online fails with NetworkError or drops, and never dies or hangs", () =>
      Effect.gen(function*() {
        const a = yield* start(A)
        const b = yield* start(B)
        yield* awaitMesh([a, b])
        const nobody = PeerId.make("peer-nobody")
        yield* assertSendSettles(a, nobody, [text("lost")], "first send")
        yield* assertSendSettles(a, nobody, [text("lost"), text("lost")], "second send")
        yield* assertSendSettles(a, nobody, [], "empty send")
        yield* a.network.send(B, [text("still works")])
        const [next] = yield* receive(b, 1)
        assert.strictEqual(decoder.decode(next!.frame), "still works")
      }))

    test("send to a peer that went offline fails with NetworkError or drops, and never dies or hangs", () =>
      Effect.gen(function*() {
        const a = yield* startClosable(A)
        const b = yield* start(B)
        yield* awaitMesh([a, b])
        yield* a.close
        yield* awaitConnected(b, `no longer sees ${A}`, (connected) => !HashSet.has(connected, A))
        for (let i = 1; i <= 3; i++) yield* assertSendSettles(b, A, [text(`lost ${i}`)], `send ${i}`)
        const c = yield* start(C)
        yield* awaitMesh([b, c])
        yield* b.network.send(C, [text("still works")])
        const [next] = yield* receive(c, 1)
        assert.strictEqual(next!.from, B)
        assert.strictEqual(decoder.decode(next!.frame), "still works")
      }))

    hostileInput(fixture, options)
  })
}

/** Peer-a, the target, and peer-b, an honest peer connected to it, with a watch on whether b ever left a's view. */
const honestPair = Effect.gen(function*() {
  const a = yield* start(A)
  const b = yield* start(B)
  yield* awaitMesh([a, b])
  const left = { count: 0 }
  yield* Effect.forkScoped(Stream.runForEach(a.network.connected.changes, (peers) =>
    Effect.sync(() => {
      if (!HashSet.has(peers, B)) left.count++
    })))
  /**
   * Frames still flow both ways, and they are the next frames each side receives: nothing the hostile connections
   * sent reached a or b, and b never left a's connected.
   */
  const assertHonest = (label: string) =>
    Effect.gen(function*() {
      yield* a.network.send(B, [text(`${label}: a to b`)])
      yield* b.network.send(A, [text(`${label}: b to a`)])
      const [atB] = yield* receive(b, 1)
      const [atA] = yield* receive(a, 1)
      assert.strictEqual(atB!.from, A, `${label}: from a`)
      assert.strictEqual(decoder.decode(atB!.frame), `${label}: a to b`, `${label}: b received nothing else`)
      assert.strictEqual(atA!.from, B, `${label}: from b`)
      assert.strictEqual(decoder.decode(atA!.frame), `${label}: b to a`, `${label}: a received nothing else`)
      assert.strictEqual(left.count, 0, `${label}: b never left a's connected`)
    })
  return { a, b, assertHonest }
})

/** The fixture's raw access, or a failure saying the fixture has none. */
const rawAccess = Effect.flatMap(NetworkFixture, (fixture) =>
  fixture.raw === undefined
    ? Effect.fail(new Error("networkSuite({ raw: true }) needs a fixture with raw access (NetworkFixture.raw)"))
    : Effect.succeed(fixture.raw))

/** Waits until the peer closed `connection`, within half the peer's patience: a refusal, not a timeout. */
const awaitRefused = (raw: RawAccess, connection: RawConnection, what: string) =>
  Effect.gen(function*() {
    const within = Duration.times(raw.patience, 0.5)
    const started = yield* Clock.currentTimeMillis
    yield* Effect.timeoutFail(connection.closed, {
      duration: within,
      onTimeout: () => new NotReachedError({ what: `the peer closes the connection: ${what}`, after: within })
    })
    return (yield* Clock.currentTimeMillis) - started
  })

/** A write the peer may refuse by closing the connection: its failure is the expected outcome, not an error. */
const writeIgnoring = (connection: RawConnection, bytes: Uint8Array) => Effect.ignore(connection.write(bytes))

/** The hostile-input tests at the socket level (see the module's description). */
const hostileInput = (fixture: Layer.Layer<NetworkFixture, unknown>, options: NetworkSuiteOptions) => {
  const group = "hostile input at the socket level"
  if (options.raw !== true) {
    describe.skip(`${group} (skipped: the fixture declares no raw access to its listeners)`, () => {
      it("needs networkSuite(name, fixture, { raw: true }) and NetworkFixture.raw", () => {})
    })
    return
  }
  describe(group, () => {
    const test = (title: string, body: () => Effect.Effect<void, unknown, NetworkFixture | Scope.Scope>) =>
      it.live(title, () => Effect.provide(Effect.scoped(Effect.suspend(body)), fixture))
    const X = PeerId.make("peer-x")
    const Zero = PeerId.make("peer-0")

    test("random bytes before authentication are refused, and honest frames keep flowing", () =>
      Effect.gen(function*() {
        const raw = yield* rawAccess
        const { assertHonest } = yield* honestPair
        const next = random(0x5eed)
        // 4 KiB and more: more than any frame a listener takes before authentication, so each is refused whatever
        // its bytes happen to announce.
        for (let i = 0; i < 8; i++) {
          yield* Effect.scoped(Effect.gen(function*() {
            const connection = yield* raw.connect(A)
            for (const size of [1 + (next() % 64), 1024 + (next() % 2048), 4096]) {
              yield* writeIgnoring(connection, randomBytes(next, size))
            }
            yield* awaitRefused(raw, connection, `random bytes, connection ${i + 1}`)
          }))
        }
        yield* assertHonest("after random bytes")
      }))

    test("a frame before authentication is refused and never delivered", () =>
      Effect.gen(function*() {
        const raw = yield* rawAccess
        const { assertHonest } = yield* honestPair
        for (const frames of [[text("before authentication")], [new Uint8Array(0), text("and another")]]) {
          yield* Effect.scoped(Effect.gen(function*() {
            const connection = yield* raw.connect(A)
            yield* writeIgnoring(connection, concat(frames.map(raw.frame)))
            yield* awaitRefused(raw, connection, `${frames.length} frame(s) before authentication`)
          }))
        }
        yield* assertHonest("after frames before authentication")
      }))

    test("truncated frames before and after authentication end only their connection", () =>
      Effect.gen(function*() {
        const raw = yield* rawAccess
        const { a, assertHonest } = yield* honestPair
        const whole = raw.frame(pattern(100, 9))
        const cuts = [1, 3, 4, 5, whole.length - 1]
        for (const cut of cuts) {
          yield* Effect.scoped(Effect.gen(function*() {
            const connection = yield* raw.connect(A)
            yield* writeIgnoring(connection, whole.subarray(0, cut))
            yield* connection.end
            yield* connection.closed
          }))
        }
        yield* assertHonest("after truncated frames before authentication")
        for (const [i, cut] of cuts.entries()) {
          const as = i % 2 === 0 ? X : Zero
          yield* Effect.scoped(Effect.gen(function*() {
            const connection = yield* raw.authenticated(A, as)
            yield* awaitConnected(a, `sees ${as}`, HashSet.has(as))
            yield* connection.write(concat([raw.frame(text(`whole ${i}`)), whole.subarray(0, cut)]))
            const [first] = yield* receive(a, 1)
            assert.strictEqual(first!.from, as, "the whole frame comes from the authenticated peer")
            assert.strictEqual(decoder.decode(first!.frame), `whole ${i}`)
            yield* connection.end
            yield* awaitConnected(a, `no longer sees ${as}`, (peers) => !HashSet.has(peers, as))
          }))
        }
        yield* assertHonest("after truncated frames after authentication")
      }))

    test("an oversized frame is refused as soon as it is announced, before and after authentication", () =>
      Effect.gen(function*() {
        const raw = yield* rawAccess
        const { a, assertHonest } = yield* honestPair
        const oversized = raw.frame(pattern(raw.maxFrameSize + 1, 5))
        // Only its first 64 KiB: the peer must refuse it from what it announces, not once it has it all.
        const announced = oversized.subarray(0, 64 * 1024)
        yield* Effect.scoped(Effect.gen(function*() {
          const connection = yield* raw.connect(A)
          yield* writeIgnoring(connection, announced)
          yield* awaitRefused(raw, connection, "an oversized frame before authentication")
        }))
        for (const [what, bytes] of [["announced", announced], ["whole", oversized]] as const) {
          yield* Effect.scoped(Effect.gen(function*() {
            const connection = yield* raw.authenticated(A, X)
            yield* awaitConnected(a, `sees ${X}`, HashSet.has(X))
            yield* writeIgnoring(connection, bytes)
            yield* awaitRefused(raw, connection, `an oversized frame after authentication (${what})`)
            yield* awaitConnected(a, `no longer sees ${X}`, (peers) => !HashSet.has(peers, X))
          }))
        }
        yield* assertHonest("after oversized frames")
      }))

    test("frames after authentication arrive from the authenticated peer; garbage then ends only that connection", () =>
      Effect.gen(function*() {
        const raw = yield* rawAccess
        const { a, assertHonest } = yield* honestPair
        const next = random(0xbad)
        for (const as of [X, Zero]) {
          yield* Effect.scoped(Effect.gen(function*() {
            const connection = yield* raw.authenticated(A, as)
            yield* awaitConnected(a, `sees ${as}`, HashSet.has(as))
            const frames = [text(`${as} 1`), new Uint8Array(0), pattern(3000, 2)]
            yield* connection.write(concat(frames.map(raw.frame)))
            const received = yield* receive(a, frames.length)
            received.forEach((inbound, i) => {
              assert.strictEqual(inbound.from, as, `frame ${i + 1} comes from the authenticated peer`)
              assertBytes(inbound.frame, frames[i]!, `frame ${i + 1}`)
            })
            // Random bytes whose first byte is not 0: the length they announce is over any frame limit.
            const garbage = randomBytes(next, 4096)
            garbage[0] = garbage[0]! | 0x80
            const fiber = yield* Effect.fork(awaitRefused(raw, connection, `garbage after authentication as ${as}`))
            yield* writeIgnoring(connection, garbage)
            yield* Fiber.join(fiber)
            yield* awaitConnected(a, `no longer sees ${as}`, (peers) => !HashSet.has(peers, as))
          }))
        }
        yield* assertHonest("after garbage after authentication")
      }))
  })
}
