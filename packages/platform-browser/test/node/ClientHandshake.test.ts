/**
 * The browser's client handshake and network against a small server written here with `node:crypto` and the core's
 * codecs, over an in-memory socket pair. Runs in Node, not in the browser project.
 */
import * as Socket from "@effect/platform/Socket"
import { assert, describe, it } from "@effect/vitest"
import * as ClientHandshakeCodec from "@intersession/core/ClientHandshake"
import * as Framing from "@intersession/core/Framing"
import * as PeerId from "@intersession/core/PeerId"
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as HashSet from "effect/HashSet"
import * as Mailbox from "effect/Mailbox"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Ref from "effect/Ref"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as Crypto from "node:crypto"
import * as ClientHandshake from "../../src/internal/clientHandshake.js"
import * as ClientLink from "../../src/internal/clientLink.js"
import * as ClientNetwork from "../../src/internal/clientNetwork.js"
import * as WebSocketNetwork from "../../src/WebSocketNetwork.js"
import { nodeKeys, nodeOpen, nodeRecord, random, same, text } from "./NodeCrypto.js"

const tab = PeerId.make("tab")
const server = PeerId.make("server")
const token = "the tab's token"

const concat = (...parts: ReadonlyArray<Uint8Array>) => new Uint8Array(Buffer.concat(parts))

/**
 * One end of an in-memory connection: it reads what the other end writes. A close, or the end of `run` (the link's
 * scope closed), ends both directions, as a WebSocket's close does.
 */
const memorySocket = (incoming: Mailbox.Mailbox<Uint8Array>, outgoing: Mailbox.Mailbox<Uint8Array>): Socket.Socket => {
  const close = Effect.zipRight(incoming.end, outgoing.end)
  const run = <_, E, R>(handler: (data: Uint8Array) => Effect.Effect<_, E, R> | void) =>
    Effect.gen(function*() {
      while (true) {
        const [chunks, done] = yield* incoming.takeAll
        for (const chunk of chunks) {
          const result = handler(chunk)
          if (Effect.isEffect(result)) yield* result
        }
        if (done) return
      }
    }).pipe(Effect.ensuring(close))
  return Socket.Socket.of({
    [Socket.TypeId]: Socket.TypeId,
    run,
    runRaw: run,
    writer: Effect.succeed((chunk) =>
      Socket.isCloseEvent(chunk)
        ? close
        : typeof chunk === "string"
        ? Effect.void
        : Effect.asVoid(outgoing.offer(chunk))
    )
  })
}

const framesOf = (plaintext: Uint8Array): Array<Framing.Frame> => {
  const decoder = new Framing.FrameDecoder(Framing.maxBodyLimit)
  decoder.push(plaintext)
  const frames: Array<Framing.Frame> = []
  for (let frame = decoder.next(); frame !== undefined; frame = decoder.next()) {
    if (frame instanceof Framing.FrameError) throw frame
    frames.push(frame)
  }
  return frames
}

/** The server's end of a connection: plain frames, then sealed records with node:crypto. */
const serverEnd = (fromClient: Mailbox.Mailbox<Uint8Array>, toClient: Mailbox.Mailbox<Uint8Array>) => {
  const plain = new Framing.FrameDecoder(1 << 20)
  let records: Framing.FrameDecoder | undefined = undefined
  let keys: { readonly client: Uint8Array; readonly server: Uint8Array } | undefined = undefined
  let received = 0
  let sent = 0
  /** Takes chunks until `take` has something; fails with "closed" at the end of the stream. */
  const pull = <A>(take: () => A | Framing.FrameError | undefined): Effect.Effect<A, "closed"> =>
    Effect.suspend(() => {
      const got = take()
      if (got instanceof Framing.FrameError) return Effect.die(got)
      if (got !== undefined) return Effect.succeed(got)
      return Effect.flatMap(fromClient.takeAll, ([chunks, done]) => {
        for (const chunk of chunks) (records ?? plain).push(chunk)
        return done && Chunk.isEmpty(chunks) ? Effect.fail("closed" as const) : pull(take)
      })
    })
  return {
    readFrame: pull(() => plain.next()),
    /** The frames of the next record, or "tampered" when it fails to open. */
    readRecord: Effect.map(
      pull(() => records?.nextContent()),
      (record) => {
        const opened = nodeOpen(keys!.client, received++, record)
        return opened === undefined ? ("tampered" as const) : framesOf(opened)
      }
    ),
    writePlain: (bytes: Uint8Array) => Effect.asVoid(toClient.offer(bytes)),
    writeSealed: (...frames: ReadonlyArray<Uint8Array>) =>
      Effect.asVoid(toClient.offer(nodeRecord(keys!.server, sent++, concat(...frames)))),
    protect: (derived: { readonly client: Uint8Array; readonly server: Uint8Array }) => {
      keys = derived
      records = new Framing.FrameDecoder(1 << 24, "record")
      for (const bytes of plain.drain()) records.push(bytes)
    },
    close: Effect.zipRight(toClient.end, fromClient.end)
  }
}

type ServerEnd = ReturnType<typeof serverEnd>

const welcome = (peer: PeerId.PeerId) =>
  Framing.encode(Framing.FrameType.Welcome, ClientHandshakeCodec.encodeWelcome(peer))
const refused = (reason: ClientHandshakeCodec.RefusalReason, detail: string) =>
  Framing.encode(Framing.FrameType.Refused, ClientHandshakeCodec.encodeRefused({ reason, detail }))

/**
 * The server's side of the handshake, as the spec in `ClientHandshake` says: `answer` is what it sends once it read
 * the credential (`Welcome`, `Refused`, or anything else). `tamper` changes the ServerHello on its way, after the
 * server took it into its transcript.
 */
const serve = (
  end: ServerEnd,
  options: {
    readonly id?: PeerId.PeerId
    readonly answer?: Uint8Array
    readonly tamper?: boolean
    readonly hello?: (body: Uint8Array) => Uint8Array
  } = {}
) =>
  Effect.gen(function*() {
    const helloFrame = yield* end.readFrame
    assert.strictEqual(helloFrame.type, Framing.FrameType.ClientHello)
    const hello = Either.getOrThrow(ClientHandshakeCodec.decodeClientHello(helloFrame.body))
    const ecdh = Crypto.createECDH("prime256v1")
    const publicKey = new Uint8Array(ecdh.generateKeys())
    const secret = new Uint8Array(ecdh.computeSecret(hello.publicKey))
    const nonce = random(ClientHandshakeCodec.nonceSize)
    const body = ClientHandshakeCodec.encodeServerHello({
      nonce,
      instance: random(ClientHandshakeCodec.instanceSize),
      from: options.id ?? server,
      publicKey
    })
    const onWire = Uint8Array.from(body)
    if (options.tamper === true) onWire[1] = onWire[1]! ^ 0x01
    yield* end.writePlain(Framing.encode(Framing.FrameType.ServerHello, options.hello?.(onWire) ?? onWire))
    end.protect(
      nodeKeys({
        secret,
        clientNonce: hello.nonce,
        serverNonce: nonce,
        clientHello: helloFrame.body,
        serverHello: body
      })
    )
    const credentials = yield* Effect.either(end.readRecord)
    yield* end.writeSealed(options.answer ?? welcome(hello.from))
    const credential = Either.isLeft(credentials)
      ? credentials.left
      : credentials.right === "tampered"
      ? "tampered"
      : credentials.right
    return { hello, credential }
  })

/** A client link and the server's end of it. */
const connection = Effect.gen(function*() {
  const toServer = yield* Mailbox.make<Uint8Array>()
  const toClient = yield* Mailbox.make<Uint8Array>()
  const link = yield* ClientLink.make(memorySocket(toClient, toServer), {
    limit: ClientHandshake.maxHandshakeFrame,
    recordLimit: 1 << 24
  })
  return { link, end: serverEnd(toServer, toClient) }
})

const handshakeOptions = (overrides: Partial<ClientHandshake.Options> = {}): ClientHandshake.Options => ({
  local: tab,
  server,
  instance: random(16),
  last: undefined,
  credential: text(token),
  ...overrides
})

/** The client's handshake against `serve(options)`: how each side ended. */
const handshake = (serverOptions: Parameters<typeof serve>[1], overrides: Partial<ClientHandshake.Options> = {}) =>
  Effect.gen(function*() {
    const { end, link } = yield* connection
    const serverFiber = yield* Effect.fork(serve(end, serverOptions))
    const client = yield* Effect.either(ClientHandshake.run(link, handshakeOptions(overrides)))
    if (Either.isLeft(client)) yield* link.abort("failed")
    const served = yield* Fiber.join(serverFiber).pipe(Effect.either)
    return { client, served, link, end }
  })

describe("client handshake", () => {
  it.scoped("Welcome: the hello says who and where, the credential arrives sealed, then frames flow both ways", () =>
    Effect.gen(function*() {
      const instance = random(16)
      const last = random(32)
      const { client, end, link, served } = yield* handshake({}, { instance, last })
      assert.isTrue(Either.isRight(client))
      assert.isTrue(Either.isRight(served))
      if (Either.isLeft(client) || Either.isLeft(served)) return
      const { credential, hello } = served.right
      assert.strictEqual(hello.from, tab)
      assert.strictEqual(hello.to, server)
      assert.isTrue(same(hello.instance, instance))
      assert.isTrue(same(hello.last, last))
      assert.isTrue(same(client.right.id, hello.nonce))
      assert.strictEqual(hello.publicKey.length, 65)
      assert.notStrictEqual(credential, "tampered")
      assert.notStrictEqual(credential, "closed")
      if (typeof credential === "string") return
      assert.deepStrictEqual(credential.map((frame) => frame.type), [Framing.FrameType.Credentials])
      assert.isTrue(same(credential[0]!.body, text(token)))

      // Client → server: one write, one record of whole frames.
      yield* link.write(concat(...Framing.encodeAll(Framing.FrameType.Data, [text("one"), text("two")], 1 << 20)))
      const up = yield* end.readRecord
      assert.notStrictEqual(up, "tampered")
      if (up === "tampered") return
      assert.deepStrictEqual(up.map((frame) => new TextDecoder().decode(frame.body)), ["one", "two"])
      // Server → client: frames of one record come as one batch, in order.
      yield* end.writeSealed(
        Framing.encode(Framing.FrameType.Data, text("three")),
        Framing.encode(Framing.FrameType.Ping),
        Framing.encode(Framing.FrameType.Data, text("four"))
      )
      const down = yield* link.nextBatch
      assert.deepStrictEqual(down.map((frame) => frame.type), [
        Framing.FrameType.Data,
        Framing.FrameType.Ping,
        Framing.FrameType.Data
      ])
      assert.isTrue(same(down[2]!.body, text("four")))
    }))

  for (
    const reason of ["Unauthorized", "WrongPeer", "ReservedPeer", "TooManyConnections", "NotAccepted"] as const
  ) {
    it.scoped(`Refused (${reason}) fails with the reason and the detail`, () =>
      Effect.gen(function*() {
        const { client } = yield* handshake({ answer: refused(reason, `no, because ${reason}`) })
        assert.isTrue(Either.isLeft(client))
        if (Either.isRight(client)) return
        assert.strictEqual(client.left._tag, "RefusedError")
        if (client.left._tag !== "RefusedError") return
        assert.strictEqual(client.left.reason, reason)
        assert.strictEqual(client.left.detail, `no, because ${reason}`)
      }))
  }

  it.scoped("a server with another id is left before the credential is sent (WrongPeer)", () =>
    Effect.gen(function*() {
      const { client, served } = yield* handshake({ id: PeerId.make("mallory") })
      assert.isTrue(Either.isLeft(client))
      if (Either.isRight(client)) return
      assert.strictEqual(client.left._tag, "ConnectionError")
      if (client.left._tag !== "ConnectionError") return
      assert.strictEqual(client.left.reason, "WrongPeer")
      assert.include(client.left.detail, "mallory")
      // The server saw the connection close, and no credential.
      assert.isTrue(Either.isRight(served) && served.right.credential === "closed")
    }))

  it.scoped("a Welcome for another id fails (WrongPeer)", () =>
    Effect.gen(function*() {
      const { client } = yield* handshake({ answer: welcome(PeerId.make("someone-else")) })
      assert.isTrue(
        Either.isLeft(client) && client.left._tag === "ConnectionError" && client.left.reason === "WrongPeer"
      )
    }))

  it.scoped("a tampered ServerHello gives other keys: the credential does not open there, the Welcome not here", () =>
    Effect.gen(function*() {
      const { client, served } = yield* handshake({ tamper: true })
      assert.isTrue(Either.isRight(served) && served.right.credential === "tampered")
      assert.isTrue(
        Either.isLeft(client) && client.left._tag === "ConnectionError" && client.left.reason === "Tampered"
      )
    }))

  it.scoped("a ServerHello with a public key off the curve, or another frame than Welcome or Refused, is Malformed", () =>
    Effect.gen(function*() {
      const offCurve = yield* handshake({
        hello: (body) => {
          const altered = Uint8Array.from(body)
          altered.fill(0x07, altered.length - 64)
          return altered
        }
      })
      assert.isTrue(
        Either.isLeft(offCurve.client) && offCurve.client.left._tag === "ConnectionError" &&
          offCurve.client.left.reason === "Malformed"
      )
      const unexpected = yield* handshake({ answer: Framing.encode(Framing.FrameType.Data, text("too early")) })
      assert.isTrue(
        Either.isLeft(unexpected.client) && unexpected.client.left._tag === "ConnectionError" &&
          unexpected.client.left.reason === "Malformed"
      )
    }))

  it.scoped("a server that closes before it answers ends the handshake with Closed", () =>
    Effect.gen(function*() {
      const { end, link } = yield* connection
      yield* Effect.fork(Effect.zipRight(end.readFrame, end.close))
      const error = yield* Effect.flip(ClientHandshake.run(link, handshakeOptions()))
      assert.isTrue(error._tag === "ConnectionError" && error.reason === "Closed")
    }))
})

/** An event target that counts its listeners, to see them removed. */
class CountingTarget extends EventTarget {
  listeners = 0
  override addEventListener(...args: Parameters<EventTarget["addEventListener"]>) {
    this.listeners++
    super.addEventListener(...args)
  }
  override removeEventListener(...args: Parameters<EventTarget["removeEventListener"]>) {
    this.listeners--
    super.removeEventListener(...args)
  }
}

/** A network over in-memory sockets: every dial hands the server's end to `accepted`. */
const network = (
  overrides: Omit<WebSocketNetwork.Options, "peer" | "server" | "url" | "credential"> = {},
  credential: Effect.Effect<string | Uint8Array, string> = Effect.succeed(token)
) =>
  Effect.gen(function*() {
    const accepted = yield* Queue.unbounded<ServerEnd>()
    const events = new CountingTarget()
    const document = new CountingTarget()
    const visibility = { visible: true }
    const dial = Effect.gen(function*() {
      const toServer = yield* Mailbox.make<Uint8Array>()
      const toClient = yield* Mailbox.make<Uint8Array>()
      yield* Queue.offer(accepted, serverEnd(toServer, toClient))
      return memorySocket(toClient, toServer)
    })
    const net = yield* ClientNetwork.make({
      settings: Either.getOrThrow(
        ClientNetwork.settings({ peer: tab, server, url: "wss://server.test/", credential, ...overrides })
      ),
      local: tab,
      server,
      url: "wss://server.test/intersession",
      credential,
      dial,
      signals: { global: events, document, visible: () => visibility.visible }
    })
    const status = <Tag extends WebSocketNetwork.Status["_tag"]>(tag: Tag) =>
      net.status.changes.pipe(
        Stream.filter((current): current is Extract<WebSocketNetwork.Status, { _tag: Tag }> => current._tag === tag),
        Stream.runHead,
        Effect.map(Option.getOrThrow)
      )
    return { net, accepted, events, document, visibility, status }
  })

describe("client network", () => {
  it.scoped("connects, sends in one record, receives, and names the last connection on the next dial", () =>
    Effect.gen(function*() {
      const { accepted, net, status } = yield* network()
      assert.strictEqual((yield* net.status.get)._tag, "Connecting")
      const first = yield* Queue.take(accepted)
      const served = yield* serve(first)
      yield* status("Connected")
      assert.isTrue(HashSet.has(yield* net.connected.get, server))

      yield* net.send(server, [text("one"), text("two")])
      const up = yield* first.readRecord
      assert.isTrue(up !== "tampered" && up.length === 2 && up.every((frame) => frame.type === Framing.FrameType.Data))
      yield* first.writeSealed(
        Framing.encode(Framing.FrameType.Data, text("three")),
        Framing.encode(Framing.FrameType.Ping),
        Framing.encode(Framing.FrameType.Data, text("four"))
      )
      const inbound = yield* Stream.runCollect(Stream.take(net.inbound, 2))
      assert.deepStrictEqual(
        Chunk.toReadonlyArray(inbound).map((item) => [item.from, new TextDecoder().decode(item.frame)]),
        [[server, "three"], [server, "four"]]
      )

      yield* first.close
      const disconnected = yield* status("Disconnected")
      assert.strictEqual(disconnected.reason, "Closed")
      assert.isFalse(HashSet.has(yield* net.connected.get, server))
      const failed = yield* Effect.flip(net.send(server, [text("lost")]))
      assert.strictEqual(failed.reason, "Unreachable")
      yield* TestClock.adjust(disconnected.retryIn)
      const second = yield* Queue.take(accepted)
      const again = yield* serve(second)
      assert.isTrue(same(again.hello.last, served.hello.nonce))
      assert.isTrue(same(again.hello.instance, served.hello.instance))
    }))

  it.scoped("send refuses another peer and a frame over maxFrameSize", () =>
    Effect.gen(function*() {
      const { accepted, net, status } = yield* network({ maxFrameSize: 16 })
      yield* serve(yield* Queue.take(accepted))
      yield* status("Connected")
      assert.strictEqual((yield* Effect.flip(net.send(PeerId.make("other"), [text("x")]))).reason, "Unreachable")
      const oversized = yield* Effect.flip(net.send(server, [new Uint8Array(17)]))
      assert.strictEqual(oversized.reason, "Io")
      yield* net.send(server, [new Uint8Array(16)])
    }))

  it.scoped("a refusal is shown, waits at least reconnectMax, and the credential is asked for again", () =>
    Effect.gen(function*() {
      const asked = yield* Ref.make(0)
      const credential = Effect.as(Ref.update(asked, (n) => n + 1), token)
      const { accepted, net, status } = yield* network({}, credential)
      yield* serve(yield* Queue.take(accepted), { answer: refused("Unauthorized", "the token expired") })
      const refusal = yield* status("Refused")
      assert.strictEqual(refusal.reason, "Unauthorized")
      assert.strictEqual(refusal.detail, "the token expired")
      assert.isTrue(Duration.greaterThanOrEqualTo(refusal.retryIn, WebSocketNetwork.defaults.reconnectMax))
      yield* TestClock.adjust(Duration.subtract(refusal.retryIn, Duration.millis(1)))
      assert.strictEqual(yield* Queue.size(accepted), 0)
      yield* TestClock.adjust(Duration.millis(1))
      const second = yield* Queue.take(accepted)
      assert.deepStrictEqual(yield* net.status.get, WebSocketNetwork.Status.Connecting({ attempt: 2 }))
      yield* serve(second)
      yield* status("Connected")
      assert.strictEqual(yield* Ref.get(asked), 2)
    }))

  it.scoped("a credential that fails, is too long or does not come in time is a failed dial (Credential)", () =>
    Effect.gen(function*() {
      const failing = yield* network({}, Effect.fail("no token"))
      assert.strictEqual((yield* failing.status("Disconnected")).reason, "Credential")
      const long = yield* network({}, Effect.succeed(new Uint8Array(ClientHandshakeCodec.maxCredentialBytes + 1)))
      assert.strictEqual((yield* long.status("Disconnected")).reason, "Credential")
      assert.strictEqual(yield* Queue.size(long.accepted), 0)
      const hanging = yield* network({ handshakeTimeout: "2 seconds" }, Effect.never)
      const timedOut = yield* Effect.fork(hanging.status("Disconnected"))
      yield* TestClock.adjust("2 seconds")
      const late = yield* Fiber.join(timedOut)
      assert.strictEqual(late.reason, "Credential")
      assert.include(late.detail, "in time")
    }))

  it.scoped("silence for idleTimeout closes the connection (Idle); pings go out meanwhile", () =>
    Effect.gen(function*() {
      const { accepted, net, status } = yield* network({ pingInterval: "1 second", idleTimeout: "3 seconds" })
      const end = yield* Queue.take(accepted)
      yield* serve(end)
      yield* status("Connected")
      yield* TestClock.adjust("1 second")
      const ping = yield* end.readRecord
      assert.isTrue(ping !== "tampered" && ping[0]!.type === Framing.FrameType.Ping)
      yield* TestClock.adjust("1900 millis")
      assert.strictEqual((yield* net.status.get)._tag, "Connected")
      // Watched from before the clock moves on: the back-off after it may end within the same adjustment.
      const idle = yield* Effect.fork(status("Disconnected"))
      yield* TestClock.adjust("1100 millis")
      assert.strictEqual((yield* Fiber.join(idle)).reason, "Idle")
    }))

  it.scoped("a frame other than Data or Ping after the handshake ends the connection (Malformed)", () =>
    Effect.gen(function*() {
      const { accepted, status } = yield* network()
      const end = yield* Queue.take(accepted)
      yield* serve(end)
      yield* status("Connected")
      yield* end.writeSealed(Framing.encode(Framing.FrameType.Hello, text("?")))
      assert.strictEqual((yield* status("Disconnected")).reason, "Malformed")
    }))

  it.scoped("offline closes the connection at once; online cuts the back-off short", () =>
    Effect.gen(function*() {
      const { accepted, events, status } = yield* network({ reconnectBase: "1 minute", reconnectMax: "1 minute" })
      yield* serve(yield* Queue.take(accepted))
      yield* status("Connected")
      events.dispatchEvent(new Event("offline"))
      const offline = yield* status("Disconnected")
      assert.strictEqual(offline.reason, "Offline")
      assert.isTrue(Duration.greaterThanOrEqualTo(offline.retryIn, Duration.seconds(30)))
      events.dispatchEvent(new Event("online"))
      yield* serve(yield* Queue.take(accepted))
      yield* status("Connected")
    }))

  it.effect("a tab visible again cuts the back-off short; the listeners go with the scope", () =>
    Effect.gen(function*() {
      const { document, events } = yield* Effect.scoped(Effect.gen(function*() {
        const client = yield* network({ reconnectBase: "1 minute", reconnectMax: "1 minute" })
        yield* serve(yield* Queue.take(client.accepted), { answer: refused("NotAccepted", "not now") })
        yield* client.status("Refused")
        // Hidden: nothing happens.
        client.visibility.visible = false
        client.document.dispatchEvent(new Event("visibilitychange"))
        yield* TestClock.adjust("1 second")
        assert.strictEqual(yield* Queue.size(client.accepted), 0)
        client.visibility.visible = true
        client.document.dispatchEvent(new Event("visibilitychange"))
        yield* serve(yield* Queue.take(client.accepted))
        yield* client.status("Connected")
        assert.strictEqual(client.events.listeners, 2)
        assert.strictEqual(client.document.listeners, 1)
        return client
      }))
      assert.strictEqual(events.listeners, 0)
      assert.strictEqual(document.listeners, 0)
    }))

  it.effect("invalid options fail with every problem (InvalidOptions)", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        WebSocketNetwork.make({
          peer: "" as PeerId.PeerId,
          url: "https://server.test/",
          server,
          credential: Effect.succeed(token),
          pingInterval: "20 seconds",
          reconnectBase: "1 minute",
          maxFrameSize: 0,
          handshakeTimeout: 0
        }).pipe(Effect.scoped, Effect.provide(Socket.layerWebSocketConstructorGlobal))
      )
      assert.strictEqual(error.reason, "InvalidOptions")
      for (
        const problem of [
          "peer must be a valid peer id",
          "url must be a ws:// or wss:// URL",
          "handshakeTimeout must be a positive duration",
          "maxFrameSize must be an integer",
          "pingInterval must be shorter than idleTimeout",
          "reconnectMax must not be shorter than reconnectBase"
        ]
      ) assert.include(error.message, problem)
      const fragment = yield* Effect.flip(
        WebSocketNetwork.make({ peer: tab, url: "wss://server.test/#x", server, credential: Effect.succeed(token) })
          .pipe(
            Effect.scoped,
            Effect.provide(Socket.layerWebSocketConstructorGlobal)
          )
      )
      assert.include(fragment.message, "fragment")
      const same = yield* Effect.flip(
        WebSocketNetwork.make({ peer: tab, url: "ws://server.test/", server: tab, credential: Effect.succeed(token) })
          .pipe(
            Effect.scoped,
            Effect.provide(Socket.layerWebSocketConstructorGlobal)
          )
      )
      assert.include(same.message, "different")
    }))
})
