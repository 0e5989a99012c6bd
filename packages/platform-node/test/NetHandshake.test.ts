import { assert, describe, it } from "@effect/vitest"
import * as Frame from "@intersession/core/Framing"
import * as PeerId from "@intersession/core/PeerId"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import * as Handshake from "../src/internal/handshake.js"
import * as LinkCipher from "../src/internal/linkCipher.js"
import type { Link } from "../src/internal/netLink.js"
import { fromFrameError } from "../src/internal/netLink.js"
import * as NetKit from "./NetKit.js"

const A = PeerId.make("peer-a")
const B = PeerId.make("peer-b")
const C = PeerId.make("peer-c")
const key = new TextEncoder().encode("the key of the handshake tests")
const otherKey = new TextEncoder().encode("another key, not the tests' one")

/** A link over in-memory queues; `tamper` may rewrite what goes out. */
const link = (
  incoming: Queue.Queue<Uint8Array>,
  outgoing: Queue.Queue<Uint8Array>,
  tamper: (bytes: Uint8Array) => Uint8Array = (bytes) => bytes,
  sessions: Array<LinkCipher.Session> = []
): Link => {
  const decoder = new Frame.FrameDecoder(Handshake.maxHandshakeFrame)
  const next: Link["next"] = Effect.suspend(() => {
    const decoded = decoder.next()
    if (decoded instanceof Frame.FrameError) return Effect.fail(fromFrameError(decoded))
    if (decoded !== undefined) return Effect.succeed(decoded)
    return Effect.flatMap(Queue.take(incoming), (chunk) => {
      decoder.push(chunk)
      return next
    })
  })
  return {
    next,
    nextBatch: Effect.map(next, (frame) => [frame]),
    received: () => 0,
    write: (bytes) => Effect.asVoid(Queue.offer(outgoing, tamper(bytes))),
    abort: () => Effect.void,
    closed: Effect.never,
    setLimit: (value) => {
      decoder.limit = value
    },
    protect: (session) => {
      sessions.push(session)
    }
  }
}

const pair = (tamperAcceptor?: (bytes: Uint8Array) => Uint8Array) =>
  Effect.gen(function*() {
    const toAcceptor = yield* Queue.unbounded<Uint8Array>()
    const toDialler = yield* Queue.unbounded<Uint8Array>()
    return { dialler: link(toDialler, toAcceptor), acceptor: link(toAcceptor, toDialler, tamperAcceptor) }
  })

const options = (local: PeerId.PeerId, overrides: Partial<Handshake.HandshakeOptions> = {}) =>
  Effect.map(
    Effect.all([Handshake.randomBytes(Handshake.instanceSize), Handshake.randomBytes(32)]),
    ([instance, decoy]): Handshake.HandshakeOptions => ({
      local,
      instance,
      keys: [key],
      protect: true,
      decoy,
      knows: () => true,
      lastConnection: () => undefined,
      ...overrides
    })
  )

/**
 * A dialler that plays by hand: sends a `Hello` from `from` to `to`, takes the answer, and, when it is a
 * `Challenge`, sends a `Proof` made with `proofKey` whatever the Challenge's own MAC says.
 */
const handDial = (link: Link, from: PeerId.PeerId, to: PeerId.PeerId, proofKey: Uint8Array) =>
  Effect.gen(function*() {
    const hello = yield* NetKit.freshHello(from, to)
    yield* link.write(Frame.encode(Frame.FrameType.Hello, hello))
    const answer = yield* link.next
    const signed = answer.body.subarray(0, answer.body.length - 32)
    if (answer.type === Frame.FrameType.Challenge) {
      yield* link.write(Frame.encode(Frame.FrameType.Proof, yield* Handshake.mac(proofKey, "dialler", hello, signed)))
    }
    return { hello, answer, signed }
  })

/** Runs the acceptor and counts how often it declared the dialler proven. */
const acceptCounting = (acceptor: Link, options: Handshake.HandshakeOptions) =>
  Effect.gen(function*() {
    let proven = 0
    const result = yield* Effect.either(
      Handshake.accept(acceptor, options, Effect.sync(() => proven++))
    )
    return { result, proven }
  })

const both = <A, E, B, E2>(dialler: Effect.Effect<A, E>, acceptor: Effect.Effect<B, E2>) =>
  Effect.all([Effect.either(dialler), Effect.either(acceptor)], { concurrency: "unbounded" })

describe("handshake", () => {
  it.live("with several keys: proves the first shared one, says which, and both ends protect with it", () =>
    Effect.gen(function*() {
      const run = (diallerKeys: ReadonlyArray<Uint8Array>, acceptorKeys: ReadonlyArray<Uint8Array>) =>
        Effect.gen(function*() {
          const toAcceptor = yield* Queue.unbounded<Uint8Array>()
          const toDialler = yield* Queue.unbounded<Uint8Array>()
          const diallerSessions: Array<LinkCipher.Session> = []
          const acceptorSessions: Array<LinkCipher.Session> = []
          const [dialled, accepted] = yield* both(
            Handshake.dial(
              link(toDialler, toAcceptor, undefined, diallerSessions),
              yield* options(B, { keys: diallerKeys }),
              A
            ),
            Effect.timeout(
              Handshake.accept(
                link(toAcceptor, toDialler, undefined, acceptorSessions),
                yield* options(A, { keys: acceptorKeys })
              ),
              "200 millis"
            )
          )
          return { dialled, accepted, diallerSessions, acceptorSessions }
        })
      // The dialler holds the acceptor's current key second.
      const rotating = yield* run([otherKey, key], [key, otherKey])
      assert.isTrue(rotating.dialled._tag === "Right" && rotating.dialled.right.keyIndex === 1)
      assert.isTrue(rotating.accepted._tag === "Right" && rotating.accepted.right.keyIndex === 0)
      const [diallerSession] = rotating.diallerSessions
      const [acceptorSession] = rotating.acceptorSessions
      assert.isDefined(diallerSession)
      assert.isDefined(acceptorSession)
      const sealed = LinkCipher.seal(diallerSession!.send, Uint8Array.of(Frame.FrameType.Data, 1, 2, 3))!
      assert.deepStrictEqual(
        LinkCipher.open(acceptorSession!.receive, sealed),
        Uint8Array.of(Frame.FrameType.Data, 1, 2, 3)
      )
      const back = LinkCipher.seal(acceptorSession!.send, Uint8Array.of(Frame.FrameType.Ping))!
      assert.deepStrictEqual(LinkCipher.open(diallerSession!.receive, back), Uint8Array.of(Frame.FrameType.Ping))
      // The acceptor's current key is not the dialler's: refused, nothing protected.
      const stale = yield* run([otherKey], [key, otherKey])
      assert.isTrue(stale.dialled._tag === "Left" && stale.dialled.left.reason === "Unauthenticated")
      assert.strictEqual(stale.diallerSessions.length + stale.acceptorSessions.length, 0)
      // Protection off: no session.
      const toAcceptor = yield* Queue.unbounded<Uint8Array>()
      const toDialler = yield* Queue.unbounded<Uint8Array>()
      const unprotected: Array<LinkCipher.Session> = []
      const [plainDial, plainAccept] = yield* both(
        Handshake.dial(link(toDialler, toAcceptor, undefined, unprotected), yield* options(B, { protect: false }), A),
        Handshake.accept(link(toAcceptor, toDialler, undefined, unprotected), yield* options(A, { protect: false }))
      )
      assert.isTrue(plainDial._tag === "Right" && plainAccept._tag === "Right")
      assert.strictEqual(unprotected.length, 0)
    }))

  it.live("authenticates both ends, agrees on the connection id, and passes the dialler's last connection", () =>
    Effect.gen(function*() {
      const { acceptor, dialler } = yield* pair()
      const last = yield* Handshake.randomBytes(Handshake.nonceSize)
      const [dialled, accepted] = yield* both(
        Handshake.dial(dialler, yield* options(B, { lastConnection: () => last }), A),
        Handshake.accept(acceptor, yield* options(A))
      )
      assert.isTrue(dialled._tag === "Right" && accepted._tag === "Right")
      if (dialled._tag !== "Right" || accepted._tag !== "Right") return
      assert.strictEqual(dialled.right.peer, A)
      assert.strictEqual(accepted.right.peer, B)
      assert.deepStrictEqual(dialled.right.id, accepted.right.id)
      assert.isTrue(dialled.right.dialled)
      assert.isFalse(accepted.right.dialled)
      assert.deepStrictEqual(accepted.right.remoteLast, last)
    }))

  it.live("a dialler without the key cannot check the acceptor's Challenge, and sends no proof", () =>
    Effect.gen(function*() {
      const { acceptor, dialler } = yield* pair()
      const [dialled, accepted] = yield* both(
        Handshake.dial(dialler, yield* options(B, { keys: [otherKey] }), A),
        Effect.timeout(Handshake.accept(acceptor, yield* options(A)), "200 millis")
      )
      assert.isTrue(dialled._tag === "Left" && dialled.left.reason === "Unauthenticated")
      assert.isTrue(accepted._tag === "Left" && accepted.left._tag === "TimeoutException", "the acceptor still waits")
    }))

  it.live("the acceptor refuses a wrong proof itself, and declares only a right one proven", () =>
    Effect.gen(function*() {
      for (const [what, proofKey] of [["a proof made with another key", otherKey], ["the right proof", key]] as const) {
        const { acceptor, dialler } = yield* pair()
        const [, accepted] = yield* Effect.all([
          handDial(dialler, B, A, proofKey),
          acceptCounting(acceptor, yield* options(A))
        ], { concurrency: "unbounded" })
        if (proofKey === key) {
          assert.isTrue(accepted.result._tag === "Right" && accepted.result.right.peer === B, `${what}: accepted`)
          assert.strictEqual(accepted.proven, 1, `${what}: declared proven once`)
        } else {
          assert.isTrue(
            accepted.result._tag === "Left" && accepted.result.left.reason === "Unauthenticated",
            `${what}: refused by the acceptor`
          )
          assert.strictEqual(accepted.proven, 0, `${what}: never declared proven`)
        }
      }
    }))

  it.live("an acceptor with another key is refused by the dialler", () =>
    Effect.gen(function*() {
      const { acceptor, dialler } = yield* pair()
      const [dialled] = yield* both(
        Handshake.dial(dialler, yield* options(B), A),
        Effect.timeout(Handshake.accept(acceptor, yield* options(A, { keys: [otherKey] })), "200 millis")
      )
      assert.isTrue(dialled._tag === "Left" && dialled.left.reason === "Unauthenticated")
    }))

  it.live("a Challenge changed on the way (any byte) fails the dialler's check", () =>
    Effect.gen(function*() {
      for (const at of [5, 9, 40, 60, 75]) {
        let frames = 0
        const { acceptor, dialler } = yield* pair((bytes) => {
          if (frames++ !== 0) return bytes
          const changed = bytes.slice()
          changed[at] = changed[at]! ^ 1
          return changed
        })
        const [dialled] = yield* both(
          Handshake.dial(dialler, yield* options(B), A),
          Effect.timeout(Handshake.accept(acceptor, yield* options(A)), "200 millis")
        )
        assert.isTrue(dialled._tag === "Left", `byte ${at}`)
        if (dialled._tag === "Left") {
          assert.include(["Unauthenticated", "Malformed", "WrongPeer", "Version"], dialled.left.reason)
        }
      }
    }))

  it.live("each MAC covers every byte of both messages, and the two roles' MACs differ", () =>
    Effect.gen(function*() {
      const hello = Handshake.encodeHello({
        nonce: yield* Handshake.randomBytes(32),
        instance: yield* Handshake.randomBytes(16),
        last: undefined,
        from: B,
        to: A
      })
      const challenge = Uint8Array.from({ length: 60 }, (_, i) => i)
      const base = yield* Handshake.mac(key, "dialler", hello, challenge)
      assert.isFalse(Handshake.sameMac(base, yield* Handshake.mac(key, "acceptor", hello, challenge)))
      for (let i = 0; i < hello.length; i++) {
        const changed = hello.slice()
        changed[i] = changed[i]! ^ 0x80
        assert.isFalse(
          Handshake.sameMac(base, yield* Handshake.mac(key, "dialler", changed, challenge)),
          `hello byte ${i}`
        )
      }
      for (let i = 0; i < challenge.length; i++) {
        const changed = challenge.slice()
        changed[i] = changed[i]! ^ 0x80
        assert.isFalse(
          Handshake.sameMac(base, yield* Handshake.mac(key, "dialler", hello, changed)),
          `challenge byte ${i}`
        )
      }
      // Moving a byte from the end of Hello to the start of Challenge changes the MAC (lengths are covered).
      const moved = yield* Handshake.mac(
        key,
        "dialler",
        hello.subarray(0, hello.length - 1),
        Uint8Array.of(hello[hello.length - 1]!, ...challenge)
      )
      assert.isFalse(Handshake.sameMac(base, moved))
    }))

  it.live("an id not in the address book, or the local id, is challenged like a known one and refused at the proof", () =>
    Effect.gen(function*() {
      const knows = (peer: PeerId.PeerId) => peer !== C
      const answers: Array<{ readonly type: number; readonly length: number; readonly fields: Uint8Array }> = []
      const acceptorOptions = yield* options(A, { knows })
      for (const who of [B, C, A]) {
        const { acceptor, dialler } = yield* pair()
        // Every one of them sends a proof made with the key: only the known one is accepted.
        const [dialled, accepted] = yield* Effect.all([
          handDial(dialler, who, A, key),
          acceptCounting(acceptor, acceptorOptions)
        ], { concurrency: "unbounded" })
        // Type, size, and everything but the nonce and the MAC: the same for every id.
        const { answer, hello, signed } = dialled
        answers.push({ type: answer.type, length: answer.body.length, fields: answer.body.subarray(33, signed.length) })
        const macChecks = Handshake.sameMac(
          answer.body.subarray(signed.length),
          yield* Handshake.mac(key, "acceptor", hello, signed)
        )
        if (who === B) {
          assert.isTrue(accepted.result._tag === "Right", "the known id is accepted")
          assert.isTrue(macChecks, "the known id's Challenge is made with the key")
        } else {
          assert.isTrue(accepted.result._tag === "Left" && accepted.result.left.reason === "UnknownPeer", who)
          assert.strictEqual(accepted.proven, 0, `${who}: never declared proven`)
          assert.isFalse(macChecks, `${who}: the Challenge is made with the decoy key, not the key`)
        }
      }
      for (const answer of answers) {
        assert.strictEqual(answer.type, Frame.FrameType.Challenge)
        assert.strictEqual(answer.length, answers[0]!.length)
        assert.deepStrictEqual(answer.fields, answers[0]!.fields)
      }
    }))

  it.live("a dialler that reaches another peer than it dialled, or an acceptor dialled as someone else, refuses", () =>
    Effect.gen(function*() {
      const first = yield* pair()
      const [, accepted] = yield* both(
        Effect.timeout(Handshake.dial(first.dialler, yield* options(B), C), "100 millis"),
        Handshake.accept(first.acceptor, yield* options(A))
      )
      assert.isTrue(accepted._tag === "Left" && accepted.left.reason === "WrongPeer")
    }))

  it.live("a Hello of another version is refused", () =>
    Effect.gen(function*() {
      const { acceptor, dialler } = yield* pair()
      const hello = Handshake.encodeHello({
        nonce: yield* Handshake.randomBytes(32),
        instance: yield* Handshake.randomBytes(16),
        last: undefined,
        from: B,
        to: A
      })
      hello[0] = Handshake.version - 1
      yield* dialler.write(Frame.encode(Frame.FrameType.Hello, hello))
      const error = yield* Effect.flip(Handshake.accept(acceptor, yield* options(A)))
      assert.strictEqual(error.reason, "Version")
    }))

  it.live("ids of the greatest length in UTF-8 and a last connection fit the frame limit exactly, and pass", () =>
    Effect.gen(function*() {
      // 255 UTF-16 code units of 3 UTF-8 bytes each: the largest ids there are.
      const longDialler = PeerId.make("€".repeat(PeerId.maxLength))
      const longAcceptor = PeerId.make("ह".repeat(PeerId.maxLength))
      const last = yield* Handshake.randomBytes(Handshake.nonceSize)
      const hello = Handshake.encodeHello({
        nonce: yield* Handshake.randomBytes(Handshake.nonceSize),
        instance: yield* Handshake.randomBytes(Handshake.instanceSize),
        last,
        from: longDialler,
        to: longAcceptor
      })
      assert.strictEqual(hello.length, Handshake.maxHandshakeFrame)
      const { acceptor, dialler } = yield* pair()
      const [dialled, accepted] = yield* both(
        Handshake.dial(dialler, yield* options(longDialler, { lastConnection: () => last }), longAcceptor),
        Handshake.accept(acceptor, yield* options(longAcceptor))
      )
      assert.isTrue(dialled._tag === "Right" && dialled.right.peer === longAcceptor)
      assert.isTrue(accepted._tag === "Right" && accepted.right.peer === longDialler)
      if (accepted._tag === "Right") assert.deepStrictEqual(accepted.right.remoteLast, last)
    }))

  it.live("a Hello cut short anywhere, or with a byte more, is refused as Malformed (Version when empty)", () =>
    Effect.gen(function*() {
      const hello = Handshake.encodeHello({
        nonce: yield* Handshake.randomBytes(Handshake.nonceSize),
        instance: yield* Handshake.randomBytes(Handshake.instanceSize),
        last: yield* Handshake.randomBytes(Handshake.nonceSize),
        from: B,
        to: A
      })
      const cases = [
        ...Array.from({ length: hello.length }, (_, size) => hello.slice(0, size)),
        Uint8Array.of(...hello, 0)
      ]
      for (const body of cases) {
        const { acceptor, dialler } = yield* pair()
        yield* dialler.write(Frame.encode(Frame.FrameType.Hello, body))
        const error = yield* Effect.flip(Handshake.accept(acceptor, yield* options(A)))
        assert.strictEqual(error.reason, body.length === 0 ? "Version" : "Malformed", `${body.length} bytes`)
      }
    }))

  it.live("the verdict: keep, or close with Rejected", () =>
    Effect.gen(function*() {
      const { acceptor, dialler } = yield* pair()
      yield* Handshake.sendVerdict(acceptor, true)
      yield* Handshake.awaitVerdict(dialler)
      yield* Handshake.sendVerdict(acceptor, false)
      assert.strictEqual((yield* Effect.flip(Handshake.awaitVerdict(dialler))).reason, "Rejected")
      yield* acceptor.write(Frame.encode(Frame.FrameType.Data, Uint8Array.of(1)))
      assert.strictEqual((yield* Effect.flip(Handshake.awaitVerdict(dialler))).reason, "Malformed")
    }))
})
