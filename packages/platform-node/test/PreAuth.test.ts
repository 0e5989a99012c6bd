/**
 * What a client that has not authenticated can cost a listener, and learn from it: the caps on such connections (in
 * all and per remote address), the byte budget before authentication, the transport's deadline, refusals that destroy
 * the connection instead of closing it politely, and the same answer to every id until the proof. The flood that
 * measures memory is PreAuthFlood.test.ts.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Frame from "@intersession/core/Framing"
import * as PeerId from "@intersession/core/PeerId"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as Admission from "../src/internal/admission.js"
import * as Handshake from "../src/internal/handshake.js"
import * as NetKit from "./NetKit.js"

const A = PeerId.make("peer-a")
const B = PeerId.make("peer-b")
const C = PeerId.make("peer-c")

const test = (title: string, body: (logs: NetKit.LogTap) => Effect.Effect<void, unknown, Scope.Scope>) =>
  it.live(title, () => {
    const logs = NetKit.makeLogTap()
    return Effect.provide(Effect.scoped(Effect.suspend(() => body(logs))), logs.layer)
  })

// ---------------------------------------------------------------------------------------------------------------

describe("admission", () => {
  const limits = { maxUnauthenticated: 3, maxUnauthenticatedPerAddress: 2, deadline: 60_000 }
  const destroyed = () => {
    const calls = { count: 0 }
    return { calls, destroy: () => calls.count++ }
  }

  it("admits up to the cap per address and in all, and a connection that ends frees its place once", () => {
    const admission = Admission.make(limits)
    const one = admission.admit("10.0.0.1", () => {})
    const two = admission.admit("10.0.0.1", () => {})
    assert.isDefined(one)
    assert.isDefined(two)
    assert.isUndefined(admission.admit("10.0.0.1", () => {}), "over the cap of one address")
    const three = admission.admit("10.0.0.2", () => {})
    assert.isDefined(three)
    assert.isUndefined(admission.admit("10.0.0.3", () => {}), "over the cap in all")
    assert.deepStrictEqual(admission.stats(), { pending: 3, peak: 3, failed: { Busy: 2 } })
    one!.release()
    one!.release()
    assert.strictEqual(admission.stats().pending, 2, "a second release changes nothing")
    assert.isDefined(admission.admit("10.0.0.1", () => {}), "the place is free again")
    assert.isUndefined(admission.admit("10.0.0.1", () => {}), "but only one")
    two!.authenticated()
    assert.strictEqual(admission.stats().pending, 2, "an authenticated connection leaves the count")
    three!.release()
    assert.strictEqual(admission.stats().pending, 1)
    assert.strictEqual(admission.stats().peak, 3)
    for (const guard of [one!, two!, three!]) guard.release()
    assert.strictEqual(admission.stats().pending, 1, "releases after leaving change nothing")
  })

  it("destroys a connection once past the byte budget before authentication, and not after it", () => {
    const admission = Admission.make(limits)
    const first = destroyed()
    const guard = admission.admit("10.0.0.1", first.destroy)!
    guard.arrived(Admission.preAuthBytes)
    assert.strictEqual(first.calls.count, 0, "the budget itself is allowed")
    guard.arrived(1)
    assert.strictEqual(first.calls.count, 1, "one byte more is not")
    assert.strictEqual(guard.refusal(), "TooManyBytes")
    guard.arrived(1)
    guard.authenticated()
    assert.strictEqual(first.calls.count, 1, "destroyed once")
    assert.isFalse(guard.isAuthenticated(), "a refused connection does not authenticate")
    assert.deepStrictEqual(admission.stats(), { pending: 0, peak: 1, failed: { TooManyBytes: 1 } })

    const second = destroyed()
    const proven = admission.admit("10.0.0.1", second.destroy)!
    proven.started()
    proven.arrived(100)
    proven.authenticated()
    proven.arrived(10 * Admission.preAuthBytes)
    assert.strictEqual(second.calls.count, 0, "after authentication nothing is counted")

    const third = destroyed()
    const started = admission.admit("10.0.0.1", third.destroy)!
    started.started()
    started.arrived(Admission.preAuthBytes + 1)
    assert.strictEqual(third.calls.count, 1)
    assert.deepStrictEqual(
      admission.stats().failed,
      { TooManyBytes: 1 },
      "once the key handshake started, the network counts how it ended"
    )
  })

  it.live("destroys a connection that does not reach the key handshake by the deadline", () =>
    Effect.gen(function*() {
      const admission = Admission.make({ ...limits, deadline: 30 })
      const startedInTime = destroyed()
      const early = admission.admit("10.0.0.1", startedInTime.destroy)!
      early.started()
      const late = yield* Deferred.make<void>()
      const slow = admission.admit("10.0.0.1", () => Deferred.unsafeDone(late, Exit.void))!
      // Timers fire in the order they are due: when the second guard's deadline has passed, so has the first's.
      yield* NetKit.within("the slow connection is destroyed", Deferred.await(late))
      assert.strictEqual(slow.refusal(), "HandshakeTimeout")
      assert.strictEqual(startedInTime.calls.count, 0, "a connection that started its key handshake is left alone")
      assert.isUndefined(early.refusal())
      assert.deepStrictEqual(admission.stats(), { pending: 1, peak: 2, failed: { HandshakeTimeout: 1 } })
    }))

  it("wakes the network's reporter at a refusal over a cap, and hands over the count once", () => {
    const admission = Admission.make(limits)
    const woken = { count: 0 }
    admission.onBusy(() => woken.count++)
    admission.admit("10.0.0.1", () => {})
    admission.admit("10.0.0.1", () => {})
    assert.strictEqual(woken.count, 0)
    admission.admit("10.0.0.1", () => {})
    admission.admit("10.0.0.1", () => {})
    assert.strictEqual(woken.count, 1, "woken once")
    assert.strictEqual(admission.takeBusy(), 2)
    assert.strictEqual(admission.takeBusy(), 0)
    admission.admit("10.0.0.1", () => {})
    admission.onBusy(() => woken.count++)
    assert.strictEqual(woken.count, 2, "a refusal not yet taken wakes at once")
  })
})

// ---------------------------------------------------------------------------------------------------------------

/** Sends a `Hello` from `from` to `to` on a raw connection and returns it and the answer. */
const hello = (link: NetKit.RawLink, from: PeerId.PeerId, to: PeerId.PeerId) =>
  Effect.gen(function*() {
    const body = yield* NetKit.freshHello(from, to)
    yield* link.write(Frame.encode(Frame.FrameType.Hello, body))
    return { hello: body, answer: yield* link.next }
  })

const beforeAuthentication = <Address>(kit: NetKit.Kit<Address>) =>
  describe(`${kit.name} before authentication`, () => {
    test("connections over the caps are destroyed at once, and those that end or authenticate free their place", (logs) =>
      Effect.gen(function*() {
        const { book, port } = yield* NetKit.bookFor(kit, [A, B, C])
        const settings = {
          ...NetKit.fast,
          // Long enough that no waiting client is timed out during the test.
          handshakeTimeout: Duration.seconds(30),
          maxUnauthenticated: 6,
          maxUnauthenticatedPerAddress: 4
        }
        const a = yield* NetKit.startPeer(kit, { peer: A, port: port(A), book, settings })
        const b = yield* NetKit.startPeer(kit, { peer: B, port: port(B), book })
        yield* NetKit.awaitMesh([a, b])
        yield* NetKit.awaitHandshakes(a, "no handshake pending", (stats) => stats.pending === 0)

        const clients = yield* Scope.make()
        const waiting = yield* Effect.forEach(
          Array.from({ length: 4 }, () => "127.0.0.2"),
          (from) => Scope.extend(NetKit.plainClient(port(A), from), clients)
        )
        yield* NetKit.awaitHandshakes(a, "4 pending", (stats) => stats.pending === 4)
        const mark = logs.mark()
        const overAddress = yield* NetKit.plainClient(port(A), "127.0.0.2")
        yield* NetKit.within("the fifth client of 127.0.0.2 is destroyed", overAddress.closed)
        yield* logs.waitFor("A reports the refusal", NetKit.reason("Busy", A), mark)
        const others = yield* Effect.forEach(["127.0.0.3", "127.0.0.3"], (from) => NetKit.plainClient(port(A), from))
        yield* NetKit.awaitHandshakes(a, "6 pending", (stats) => stats.pending === 6)
        const overAll = yield* NetKit.plainClient(port(A), "127.0.0.4")
        yield* NetKit.within("a seventh client is destroyed", overAll.closed)

        const stats = yield* a.network.handshakes
        assert.strictEqual(stats.failed["Busy"], 2, "A counted both refusals")
        assert.strictEqual(stats.pending, 6)
        assert.strictEqual(stats.peak, 6, "never more than the cap")
        assert.strictEqual(overAddress.received().length, 0, "nothing written to a refused client")
        assert.strictEqual(overAll.received().length, 0, "nothing written to a refused client")
        assert.isFalse([...waiting, ...others].some((client) => client.isClosed()), "the admitted clients still wait")
        yield* NetKit.exchange(a, b, "while the caps are full")

        // The clients of 127.0.0.2 leave: a new peer can connect (from 127.0.0.1), and once authenticated it does
        // not count.
        yield* Scope.close(clients, Exit.void)
        yield* NetKit.awaitHandshakes(a, "2 pending", (stats) => stats.pending === 2)
        const c = yield* NetKit.startPeer(kit, { peer: C, port: port(C), book })
        yield* NetKit.awaitMesh([a, c])
        yield* NetKit.awaitHandshakes(a, "2 pending again", (stats) => stats.pending === 2)
        yield* NetKit.exchange(a, c, "a newcomer")
        assert.isFalse(NetKit.flapped(a, B), "B never left A's connected")
      }))

    test("an unknown id gets the same answer as a known one, and the same end at a wrong proof", (logs) =>
      Effect.gen(function*() {
        const { book, port } = yield* NetKit.bookFor(kit, [A, B])
        const a = yield* NetKit.startPeer(kit, { peer: A, port: port(A), book })
        const ask = (from: PeerId.PeerId) =>
          Effect.gen(function*() {
            const link = yield* NetKit.rawLink(kit, port(A))
            return { link, ...(yield* hello(link, from, A)) }
          })
        const known = yield* ask(B)
        const unknown = yield* ask(PeerId.make("peer-x"))
        for (const { answer } of [known, unknown]) assert.strictEqual(answer.type, Frame.FrameType.Challenge)
        assert.strictEqual(unknown.answer.body.length, known.answer.body.length, "the same size")
        // Version, then the nonce (random), then the same instance and id, then the MAC (random to the client).
        const fields = (body: Uint8Array) => Array.from(body.subarray(1 + Handshake.nonceSize, body.length - 32))
        assert.deepStrictEqual(fields(unknown.answer.body), fields(known.answer.body), "the same fields")
        assert.strictEqual(unknown.answer.body[0], known.answer.body[0], "the same version")

        const mark = logs.mark()
        const ends = yield* Effect.forEach([known, unknown], (asked) =>
          Effect.gen(function*() {
            const signed = asked.answer.body.subarray(0, asked.answer.body.length - 32)
            const proof = yield* Handshake.mac(NetKit.wrongKeyBytes, "dialler", asked.hello, signed)
            yield* asked.link.write(Frame.encode(Frame.FrameType.Proof, proof))
            return yield* Effect.flip(asked.link.next)
          }))
        assert.strictEqual(ends[1]!.reason, ends[0]!.reason, "both ends look alike")
        assert.include(["Closed", "Io"], ends[0]!.reason, "no frame after a wrong proof")
        yield* logs.waitFor("A refuses the wrong proof", NetKit.reason("Unauthenticated", A), mark)
        yield* logs.waitFor("A refuses the unknown id", NetKit.reason("UnknownPeer", A), mark)
        const { failed } = yield* a.network.handshakes
        assert.strictEqual(failed["Unauthenticated"], 1)
        assert.strictEqual(failed["UnknownPeer"], 1)
      }))
  })

beforeAuthentication(NetKit.tcpKit)
beforeAuthentication(NetKit.webSocketKit)

// ---------------------------------------------------------------------------------------------------------------

/** Upgrades a plain client to a WebSocket on `/intersession`, and returns the bytes received after the upgrade. */
const upgrade = (client: NetKit.PlainClient, port: number) =>
  Effect.gen(function*() {
    yield* client.write(
      "GET /intersession HTTP/1.1\r\n" +
        `Host: 127.0.0.1:${port}\r\n` +
        "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    const response = yield* NetKit.within(
      "the upgrade response",
      NetKit.poll(
        Effect.sync(() => client.received().toString("latin1")),
        (received) => received.includes("\r\n\r\n") || client.isClosed()
      )
    )
    const head = response.indexOf("\r\n\r\n") + 4
    assert.isTrue(response.startsWith("HTTP/1.1 101"), `upgraded: ${response.slice(0, 40)}`)
    return () => client.received().subarray(head)
  })

describe("WebSocketNetwork before authentication", () => {
  const kit = NetKit.webSocketKit

  test("a client announcing a large message is destroyed as its bytes arrive, without a close handshake", (logs) =>
    Effect.gen(function*() {
      const { book, port } = yield* NetKit.bookFor(kit, [A, B])
      // A handshake timeout far longer than the test: only the byte budget can stop the client.
      const settings = { ...NetKit.fast, handshakeTimeout: Duration.seconds(30) }
      const a = yield* NetKit.startPeer(kit, { peer: A, port: port(A), book, settings })
      const client = yield* NetKit.plainClient(port(A))
      const afterUpgrade = yield* upgrade(client, port(A))
      const announced = 4 * 1024 * 1024
      const chunk = new Uint8Array(4096)
      yield* client.write(NetKit.webSocketMessageHeader(announced))
      let sent = 0
      // A byte count, not a sleep: each chunk waits a millisecond so the listener reads as the client writes.
      while (!client.isClosed() && sent < announced) {
        yield* client.write(chunk)
        sent += chunk.length
        yield* Effect.sleep(Duration.millis(1))
      }
      assert.isTrue(client.isClosed(), "the listener ended the connection")
      assert.isBelow(sent, announced / 4, `destroyed long before the message was whole (${sent} bytes sent)`)
      assert.strictEqual(afterUpgrade().length, 0, "no close frame: destroyed, not closed politely")
      yield* logs.waitFor("A says why", NetKit.reason("TooManyBytes", A))
      assert.strictEqual((yield* a.network.handshakes).failed["TooManyBytes"], 1)
    }))

  test("a client refused for what it sent gets no close frame: its connection is destroyed", () =>
    Effect.gen(function*() {
      const { book, port } = yield* NetKit.bookFor(kit, [A, B])
      const a = yield* NetKit.startPeer(kit, { peer: A, port: port(A), book })
      const client = yield* NetKit.plainClient(port(A))
      const afterUpgrade = yield* upgrade(client, port(A))
      // A whole message of 64 bytes that announces a frame over the limit before authentication.
      const body = Buffer.alloc(64, 0xff)
      const header = Buffer.from([0x82, 0x80 | body.length, 0, 0, 0, 0])
      yield* client.write(Buffer.concat([header, body]))
      yield* NetKit.within("the listener ends the connection", client.closed)
      assert.strictEqual(afterUpgrade().length, 0, "no close frame")
      assert.strictEqual((yield* a.network.handshakes).failed["FrameTooLarge"], 1)
    }))

  test("a client that never upgrades is destroyed after handshakeTimeout", () =>
    Effect.gen(function*() {
      const { book, port } = yield* NetKit.bookFor(kit, [A, B])
      const a = yield* NetKit.startPeer(kit, { peer: A, port: port(A), book })
      const started = yield* Clock.currentTimeMillis
      const client = yield* NetKit.plainClient(port(A))
      yield* client.write("GET /intersession HTTP/1.1\r\n")
      yield* NetKit.awaitHandshakes(a, "the client is pending", (stats) => stats.pending === 1)
      yield* NetKit.within("the listener ends the connection", client.closed)
      const waited = yield* NetKit.elapsedSince(started)
      assert.isAtLeast(waited, Duration.toMillis(NetKit.fast.handshakeTimeout) * 0.8, "not before the timeout")
      const stats = yield* NetKit.awaitHandshakes(a, "none pending", (stats) => stats.pending === 0)
      assert.strictEqual(stats.failed["HandshakeTimeout"], 1)
    }))
})
