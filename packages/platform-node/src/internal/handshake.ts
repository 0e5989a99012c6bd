/**
 * The handshake that opens every connection of the TCP and WebSocket networks. It establishes which peer is at the
 * other end and proves that both ends hold the pre-shared key, without sending the key:
 *
 * 1. dialler → acceptor `Hello`: version, dialler nonce (32 random bytes), dialler instance (16 random bytes per
 *    network), the id of the last connection the dialler had with the acceptor in this run (or none), the dialler's
 *    id and the id it expects the acceptor to have.
 * 2. acceptor → dialler `Challenge`: version, acceptor nonce, acceptor instance, the acceptor's id, and
 *    `HMAC-SHA256(key, "…acceptor" ‖ Hello ‖ Challenge-without-MAC)`.
 * 3. dialler → acceptor `Proof`: `HMAC-SHA256(key, "…dialler" ‖ Hello ‖ Challenge-without-MAC)`.
 * 4. `Ready` from the acceptor, only when the dialler has the lower peer id (so the dialler knows it was accepted
 *    before it decides).
 *
 * Each MAC covers both nonces, both instances and both ids, and names the role that computed it, so a MAC cannot be
 * replayed on another connection or reflected back to its sender. MACs are compared in constant time.
 *
 * The acceptor answers every `Hello` addressed to it with a `Challenge`, whether the dialler's id is in its address
 * book or not, and refuses an unknown id only at the `Proof`: for an unknown id it computes the Challenge's MAC with a
 * decoy key (random, made once per network, never sent), so without the pre-shared key a client cannot tell a known
 * id from an unknown one (same frames, same sizes, same work, the same destroyed connection after the `Proof`). A
 * client that holds the key can tell, by checking the MAC: it is a member of the deployment already. The acceptor's
 * own id is no secret: its `Challenge` names it.
 *
 * Key rotation: each side may hold several keys (current first). The acceptor's `Challenge` MAC is made with its
 * current key; the dialler checks it against each of its keys and proves with the one that matched; the acceptor
 * checks the `Proof` against each of its keys (every comparison made, each in constant time). Both sides then know the
 * key they share, and use it for the link's keys.
 *
 * Unless protection is off, both sides then protect every later frame, starting with the `Verdict` (`linkCipher.ts`),
 * with keys derived from that key, both nonces and both ids.
 *
 * After the handshake the peer with the lower id sends a `Verdict`: keep this connection or close it (see `net.ts`
 * for the rule). The other side uses the connection only once the verdict says keep.
 *
 * @internal
 */
import * as Binary from "@intersession/core/Binary"
import { encode, type Frame, FrameType } from "@intersession/core/Framing"
import * as PeerId from "@intersession/core/PeerId"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import * as Crypto from "node:crypto"
import * as LinkCipher from "./linkCipher.js"
import { ConnectionError, type Link } from "./netLink.js"

/**
 * The handshake's version. 2: frames after the handshake are sealed with per-direction session keys, so a peer of
 * version 1 (no protection) is told `Version` instead of failing on its first sealed frame.
 *
 * @internal
 */
export const version = 2

/** @internal */
export const nonceSize = 32

/** @internal */
export const instanceSize = 16

const macSize = 32

/** The most UTF-8 bytes of a peer id: 255 UTF-16 code units of 3 bytes at most. */
const maxIdBytes = 3 * PeerId.maxLength

/**
 * The largest handshake frame: a `Hello` with a last connection id and two ids of {@link maxIdBytes} bytes.
 *
 * @internal
 */
export const maxHandshakeFrame = 1 + nonceSize + instanceSize + Binary.uintSize(nonceSize) + nonceSize +
  2 * (Binary.uintSize(maxIdBytes) + maxIdBytes)

const dialLabel = new TextEncoder().encode("intersession network handshake v1: dialler\0")
const acceptLabel = new TextEncoder().encode("intersession network handshake v1: acceptor\0")

/** @internal */
export const randomBytes = (size: number): Effect.Effect<Uint8Array> =>
  Effect.sync(() => new Uint8Array(Crypto.randomBytes(size)))

/**
 * Tells whether the local peer decides which connection of the pair is kept: the one with the lower id does.
 *
 * @internal
 */
export const decides = (local: PeerId.PeerId, remote: PeerId.PeerId): boolean => local < remote

/** @internal */
export interface HandshakeOptions {
  readonly local: PeerId.PeerId
  readonly instance: Uint8Array
  /** The pre-shared keys, current first; at least one. */
  readonly keys: ReadonlyArray<Uint8Array>
  /** Whether to protect the frames after the handshake (`linkCipher.ts`); both sides must agree. */
  readonly protect: boolean
  /**
   * The key the acceptor computes its `Challenge` with for an id it does not know: random, made once per network and
   * never sent, so the answer to an unknown id looks like the answer to a known one.
   */
  readonly decoy: Uint8Array
  /** Whether a peer id may connect (it is in the address book). */
  readonly knows: (peer: PeerId.PeerId) => boolean
  /** The id of the last connection kept with `peer` in this run. */
  readonly lastConnection: (peer: PeerId.PeerId) => Uint8Array | undefined
}

/**
 * A connection whose other end proved it holds the key. `id` is the dialler's nonce, the same on both ends.
 *
 * @internal
 */
export interface Authenticated {
  readonly peer: PeerId.PeerId
  readonly id: Uint8Array
  readonly dialled: boolean
  readonly remoteInstance: Uint8Array
  /** For a connection the remote side dialled: the last connection it kept with us, as it told us. */
  readonly remoteLast: Uint8Array | undefined
  /** The index, in the local list of keys, of the key both sides proved. */
  readonly keyIndex: number
}

// ---------------------------------------------------------------------------------------------------------------
// encoding: the library's binary layout (`@intersession/core/Binary`): varint lengths, fixed-size fields raw

interface Hello {
  readonly nonce: Uint8Array
  readonly instance: Uint8Array
  readonly last: Uint8Array | undefined
  readonly from: PeerId.PeerId
  readonly to: string
}

interface Challenge {
  readonly nonce: Uint8Array
  readonly instance: Uint8Array
  readonly from: PeerId.PeerId
  readonly mac: Uint8Array
  /** The bytes the MAC covers: the body without the MAC. */
  readonly signed: Uint8Array
}

const malformed = (detail: string) => new ConnectionError({ reason: "Malformed", detail })

const isPeerId = Schema.is(PeerId.PeerId)

/** A field read by `Binary.Reader`, its `ReadError` as a `Malformed` connection error naming the field. */
const field = <A>(value: A | Binary.ReadError, what: string): Either.Either<A, ConnectionError> =>
  value instanceof Binary.ReadError ? Either.left(malformed(`${what}: ${value.detail}`)) : Either.right(value)

const decodePeerId = (value: string | Binary.ReadError, what: string): Either.Either<PeerId.PeerId, ConnectionError> =>
  Either.flatMap(
    field(value, what),
    (id) => isPeerId(id) ? Either.right(id) : Either.left(malformed(`${what} is not a valid peer id`))
  )

const expect = (frame: Frame, type: number, what: string) =>
  frame.type === type
    ? Either.right(frame.body)
    : Either.left(malformed(`expected ${what}, got frame type ${frame.type}`))

const checkVersion = (value: number | Binary.ReadError): Either.Either<void, ConnectionError> =>
  value === version
    ? Either.right(undefined)
    : Either.left(
      new ConnectionError({
        reason: "Version",
        detail: `protocol version ${typeof value === "number" ? value : "missing"}, expected ${version}`
      })
    )

const noExtraFields = (reader: Binary.Reader, what: string): Either.Either<void, ConnectionError> =>
  reader.remaining === 0 ? Either.right(undefined) : Either.left(malformed(`${what} with extra fields`))

/** @internal */
export const encodeHello = (hello: Omit<Hello, "to"> & { readonly to: PeerId.PeerId }): Uint8Array => {
  const writer = new Binary.Writer(maxHandshakeFrame)
  writer.byte(version)
  writer.raw(hello.nonce)
  writer.raw(hello.instance)
  writer.bytes(hello.last ?? new Uint8Array(0))
  writer.string(hello.from)
  writer.string(hello.to)
  return writer.finish()
}

const decodeHello = (body: Uint8Array): Either.Either<Hello, ConnectionError> =>
  Either.gen(function*() {
    const reader = new Binary.Reader(body)
    yield* checkVersion(reader.byte())
    const nonce = yield* field(reader.raw(nonceSize), "the Hello's nonce")
    const instance = yield* field(reader.raw(instanceSize), "the Hello's instance")
    const last = yield* field(reader.bytes(), "the Hello's last connection")
    const from = yield* decodePeerId(reader.string(maxIdBytes), "the dialler's id")
    const to = yield* field(reader.string(maxIdBytes), "the expected acceptor's id")
    yield* noExtraFields(reader, "a Hello")
    return { nonce, instance, last: last.length === 0 ? undefined : last, from, to }
  })

const encodeChallengeSigned = (nonce: Uint8Array, instance: Uint8Array, from: PeerId.PeerId) => {
  const writer = new Binary.Writer(maxHandshakeFrame)
  writer.byte(version)
  writer.raw(nonce)
  writer.raw(instance)
  writer.string(from)
  return writer.finish()
}

const decodeChallenge = (body: Uint8Array): Either.Either<Challenge, ConnectionError> =>
  Either.gen(function*() {
    if (body.length < macSize) return yield* Either.left(malformed("a Challenge too short for its MAC"))
    const signed = body.subarray(0, body.length - macSize)
    const reader = new Binary.Reader(signed)
    yield* checkVersion(reader.byte())
    const nonce = yield* field(reader.raw(nonceSize), "the Challenge's nonce")
    const instance = yield* field(reader.raw(instanceSize), "the Challenge's instance")
    const from = yield* decodePeerId(reader.string(maxIdBytes), "the acceptor's id")
    yield* noExtraFields(reader, "a Challenge")
    return { nonce, instance, from, mac: body.subarray(body.length - macSize), signed }
  })

/**
 * `HMAC-SHA256(key, label ‖ len(hello) ‖ hello ‖ challenge)`, `len` as 4 bytes big-endian.
 *
 * @internal
 */
export const mac = (key: Uint8Array, role: "dialler" | "acceptor", hello: Uint8Array, challenge: Uint8Array) =>
  Effect.sync(() => {
    const hmac = Crypto.createHmac("sha256", key)
    hmac.update(role === "dialler" ? dialLabel : acceptLabel)
    hmac.update(
      Uint8Array.of(hello.length >>> 24, (hello.length >>> 16) & 0xff, (hello.length >>> 8) & 0xff, hello.length & 0xff)
    )
    hmac.update(hello)
    hmac.update(challenge)
    return new Uint8Array(hmac.digest())
  })

/**
 * Compares two MACs in constant time.
 *
 * @internal
 */
export const sameMac = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && Crypto.timingSafeEqual(a, b)

/**
 * The index of the first of `keys` whose MAC over `hello` and `challenge` is `expected`, or -1. Every key is tried, each
 * compared in constant time, so the time taken does not tell which one matched.
 */
const matchingKey = (
  keys: ReadonlyArray<Uint8Array>,
  role: "dialler" | "acceptor",
  hello: Uint8Array,
  challenge: Uint8Array,
  expected: Uint8Array
) =>
  Effect.sync(() => {
    let found = -1
    for (let i = 0; i < keys.length; i++) {
      const hmac = Crypto.createHmac("sha256", keys[i]!)
      hmac.update(role === "dialler" ? dialLabel : acceptLabel)
      hmac.update(
        Uint8Array.of(
          hello.length >>> 24,
          (hello.length >>> 16) & 0xff,
          (hello.length >>> 8) & 0xff,
          hello.length & 0xff
        )
      )
      hmac.update(hello)
      hmac.update(challenge)
      if (sameMac(new Uint8Array(hmac.digest()), expected) && found < 0) found = i
    }
    return found
  })

const unauthenticated = (detail: string) => new ConnectionError({ reason: "Unauthenticated", detail })

/**
 * The dialler's side: sends `Hello` to the peer expected at the dialled address and checks that the answer comes from
 * that peer, holding the key.
 *
 * @internal
 */
export const dial = (link: Link, options: HandshakeOptions, expected: PeerId.PeerId) =>
  Effect.gen(function*() {
    const nonce = yield* randomBytes(nonceSize)
    const hello = encodeHello({
      nonce,
      instance: options.instance,
      last: options.lastConnection(expected),
      from: options.local,
      to: expected
    })
    yield* link.write(encode(FrameType.Hello, hello))
    const challenge = yield* Effect.flatMap(link.next, (frame) => expect(frame, FrameType.Challenge, "Challenge"))
      .pipe(Effect.flatMap(decodeChallenge))
    if (challenge.from !== expected) {
      return yield* new ConnectionError({
        reason: "WrongPeer",
        detail: `dialled ${JSON.stringify(expected)}, reached ${JSON.stringify(challenge.from)}`
      })
    }
    const keyIndex = yield* matchingKey(options.keys, "acceptor", hello, challenge.signed, challenge.mac)
    if (keyIndex < 0) return yield* unauthenticated("the acceptor's MAC does not match any key")
    const key = options.keys[keyIndex]!
    yield* link.write(encode(FrameType.Proof, yield* mac(key, "dialler", hello, challenge.signed)))
    if (decides(options.local, expected)) {
      yield* Effect.flatMap(link.next, (frame) => expect(frame, FrameType.Ready, "Ready"))
    }
    if (options.protect) {
      link.protect(LinkCipher.session({
        key,
        role: "dialler",
        diallerNonce: nonce,
        acceptorNonce: challenge.nonce,
        dialler: options.local,
        acceptor: expected
      }))
    }
    return {
      peer: expected,
      id: nonce,
      dialled: true,
      remoteInstance: challenge.instance,
      remoteLast: undefined,
      keyIndex
    } satisfies Authenticated
  })

/**
 * The acceptor's side, from the connection's first frame (`first`): takes a `Hello`, answers it with a `Challenge` (made
 * with the decoy key for an id not in the address book), and checks the dialler's proof; an unknown id is refused only
 * then, with `UnknownPeer`. `proven` runs as soon as the proof checked out, before anything more is written.
 *
 * @internal
 */
export const acceptFrom = (
  link: Link,
  options: HandshakeOptions,
  first: Frame,
  proven: Effect.Effect<void> = Effect.void
) =>
  Effect.gen(function*() {
    const helloBody = yield* expect(first, FrameType.Hello, "Hello")
    const hello = yield* decodeHello(helloBody)
    if (hello.to !== options.local) {
      return yield* new ConnectionError({
        reason: "WrongPeer",
        detail: `the dialler expects ${JSON.stringify(hello.to)}, this is ${JSON.stringify(options.local)}`
      })
    }
    const known = hello.from !== options.local && options.knows(hello.from)
    const unknown = () =>
      new ConnectionError({ reason: "UnknownPeer", detail: `${JSON.stringify(hello.from)} is not in the address book` })
    // The Challenge is made with the current key; the dialler finds which of its keys that is.
    const key = known ? options.keys[0]! : options.decoy
    const nonce = yield* randomBytes(nonceSize)
    const signed = encodeChallengeSigned(nonce, options.instance, options.local)
    const ours = yield* mac(key, "acceptor", helloBody, signed)
    const challenge = new Uint8Array(signed.length + macSize)
    challenge.set(signed)
    challenge.set(ours, signed.length)
    yield* link.write(encode(FrameType.Challenge, challenge))
    const proof = yield* Effect.flatMap(link.next, (frame) => expect(frame, FrameType.Proof, "Proof")).pipe(
      // Whatever an unknown id does next, the id is what it is refused for.
      Effect.mapError((error) => known ? error : unknown())
    )
    // For an unknown id, as much work with the decoy key as with the keys.
    const keyIndex = yield* matchingKey(
      known ? options.keys : options.keys.map(() => options.decoy),
      "dialler",
      helloBody,
      signed,
      proof
    )
    if (!known) return yield* unknown()
    if (keyIndex < 0) return yield* unauthenticated(`${JSON.stringify(hello.from)} does not prove any key`)
    yield* proven
    if (decides(hello.from, options.local)) yield* link.write(encode(FrameType.Ready))
    if (options.protect) {
      link.protect(LinkCipher.session({
        key: options.keys[keyIndex]!,
        role: "acceptor",
        diallerNonce: hello.nonce,
        acceptorNonce: nonce,
        dialler: hello.from,
        acceptor: options.local
      }))
    }
    return {
      peer: hello.from,
      id: hello.nonce,
      dialled: false,
      remoteInstance: hello.instance,
      remoteLast: hello.last,
      keyIndex
    } satisfies Authenticated
  })

/**
 * {@link acceptFrom} the connection's first frame.
 *
 * @internal
 */
export const accept = (link: Link, options: HandshakeOptions, proven: Effect.Effect<void> = Effect.void) =>
  Effect.flatMap(link.next, (first) => acceptFrom(link, options, first, proven))

const accepted = encode(FrameType.Verdict, Uint8Array.of(1))
const rejected = encode(FrameType.Verdict, Uint8Array.of(0))

/**
 * The lower peer's decision on a connection: keep it or close it.
 *
 * @internal
 */
export const sendVerdict = (link: Link, keep: boolean): Effect.Effect<void, ConnectionError> =>
  link.write(keep ? accepted : rejected)

/**
 * The higher peer waits for the decision; a rejection fails with `Rejected`.
 *
 * @internal
 */
export const awaitVerdict = (link: Link): Effect.Effect<void, ConnectionError> =>
  Effect.flatMap(link.next, (frame) => {
    if (frame.type !== FrameType.Verdict || frame.body.length !== 1 || frame.body[0]! > 1) {
      return Effect.fail(malformed(`expected a Verdict, got frame type ${frame.type}`))
    }
    return frame.body[0] === 1
      ? Effect.void
      : Effect.fail(new ConnectionError({ reason: "Rejected", detail: "the lower peer keeps another connection" }))
  })
