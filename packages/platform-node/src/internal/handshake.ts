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
 * After the handshake the peer with the lower id sends a `Verdict`: keep this connection or close it (see `net.ts`
 * for the rule). The other side uses the connection only once the verdict says keep.
 *
 * @internal
 */
import * as PeerId from "@intersession/core/PeerId"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import * as Crypto from "node:crypto"
import { encode, type Frame, FrameType } from "./frame.js"
import { ConnectionError, type Link } from "./netLink.js"

/** @internal */
export const version = 1

/** @internal */
export const nonceSize = 32

/** @internal */
export const instanceSize = 16

const macSize = 32

/**
 * The largest handshake frame: a `Hello` with two ids of 255 UTF-16 code units (3 UTF-8 bytes each at most).
 *
 * @internal
 */
export const maxHandshakeFrame = 1 + nonceSize + instanceSize + 1 + nonceSize + 2 * (2 + 3 * PeerId.maxLength)

const dialLabel = new TextEncoder().encode("intersession network handshake v1: dialler\0")
const acceptLabel = new TextEncoder().encode("intersession network handshake v1: acceptor\0")
const encoder = new TextEncoder()
const decoder = new TextDecoder("utf-8", { fatal: true })

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
  readonly key: Uint8Array
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
}

// ---------------------------------------------------------------------------------------------------------------
// encoding

class Writer {
  private readonly parts: Array<Uint8Array> = []
  private size = 0
  push(bytes: Uint8Array): this {
    this.parts.push(bytes)
    this.size += bytes.length
    return this
  }
  byte(value: number): this {
    return this.push(Uint8Array.of(value))
  }
  string(value: string): this {
    const bytes = encoder.encode(value)
    return this.push(Uint8Array.of(bytes.length >>> 8, bytes.length & 0xff)).push(bytes)
  }
  bytes(value: Uint8Array | undefined): this {
    return value === undefined ? this.byte(0) : this.byte(value.length).push(value)
  }
  done(): Uint8Array {
    const out = new Uint8Array(this.size)
    let at = 0
    for (const part of this.parts) {
      out.set(part, at)
      at += part.length
    }
    return out
  }
}

class Reader {
  private at = 0
  constructor(private readonly input: Uint8Array) {}
  fixed(size: number): Uint8Array | undefined {
    if (this.at + size > this.input.length) return undefined
    const out = this.input.subarray(this.at, this.at + size)
    this.at += size
    return out
  }
  byte(): number | undefined {
    return this.fixed(1)?.[0]
  }
  string(): string | undefined {
    const length = this.fixed(2)
    if (length === undefined) return undefined
    const bytes = this.fixed((length[0]! << 8) + length[1]!)
    if (bytes === undefined) return undefined
    try {
      return decoder.decode(bytes)
    } catch {
      return undefined
    }
  }
  bytes(): Uint8Array | undefined {
    const length = this.byte()
    return length === undefined ? undefined : this.fixed(length)
  }
  get atEnd(): boolean {
    return this.at === this.input.length
  }
}

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

const decodePeerId = (value: string | undefined, what: string): Either.Either<PeerId.PeerId, ConnectionError> =>
  value === undefined
    ? Either.left(malformed(`${what} is missing`))
    : isPeerId(value)
    ? Either.right(value)
    : Either.left(malformed(`${what} is not a valid peer id`))

const expect = (frame: Frame, type: number, what: string) =>
  frame.type === type
    ? Either.right(frame.body)
    : Either.left(malformed(`expected ${what}, got frame type ${frame.type}`))

const checkVersion = (value: number | undefined): Either.Either<void, ConnectionError> =>
  value === version
    ? Either.right(undefined)
    : Either.left(new ConnectionError({ reason: "Version", detail: `protocol version ${value}, expected ${version}` }))

/** @internal */
export const encodeHello = (hello: Omit<Hello, "to"> & { readonly to: PeerId.PeerId }): Uint8Array =>
  new Writer().byte(version).push(hello.nonce).push(hello.instance).bytes(hello.last).string(hello.from).string(
    hello.to
  ).done()

const decodeHello = (body: Uint8Array): Either.Either<Hello, ConnectionError> =>
  Either.gen(function*() {
    const reader = new Reader(body)
    yield* checkVersion(reader.byte())
    const nonce = reader.fixed(nonceSize)
    const instance = reader.fixed(instanceSize)
    const last = reader.bytes()
    const from = yield* decodePeerId(reader.string(), "the dialler's id")
    const to = reader.string()
    if (nonce === undefined || instance === undefined || last === undefined || to === undefined || !reader.atEnd) {
      return yield* Either.left(malformed("a Hello with missing or extra fields"))
    }
    return { nonce, instance, last: last.length === 0 ? undefined : last, from, to }
  })

const encodeChallengeSigned = (nonce: Uint8Array, instance: Uint8Array, from: PeerId.PeerId) =>
  new Writer().byte(version).push(nonce).push(instance).string(from).done()

const decodeChallenge = (body: Uint8Array): Either.Either<Challenge, ConnectionError> =>
  Either.gen(function*() {
    if (body.length < macSize) return yield* Either.left(malformed("a Challenge too short for its MAC"))
    const signed = body.subarray(0, body.length - macSize)
    const reader = new Reader(signed)
    yield* checkVersion(reader.byte())
    const nonce = reader.fixed(nonceSize)
    const instance = reader.fixed(instanceSize)
    const from = yield* decodePeerId(reader.string(), "the acceptor's id")
    if (nonce === undefined || instance === undefined || !reader.atEnd) {
      return yield* Either.left(malformed("a Challenge with missing or extra fields"))
    }
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
    const theirs = yield* mac(options.key, "acceptor", hello, challenge.signed)
    if (!sameMac(theirs, challenge.mac)) return yield* unauthenticated("the acceptor's MAC does not match the key")
    yield* link.write(encode(FrameType.Proof, yield* mac(options.key, "dialler", hello, challenge.signed)))
    if (decides(options.local, expected)) {
      yield* Effect.flatMap(link.next, (frame) => expect(frame, FrameType.Ready, "Ready"))
    }
    return {
      peer: expected,
      id: nonce,
      dialled: true,
      remoteInstance: challenge.instance,
      remoteLast: undefined
    } satisfies Authenticated
  })

/**
 * The acceptor's side: reads `Hello`, refuses ids not in the address book, and checks the dialler's proof.
 *
 * @internal
 */
export const accept = (link: Link, options: HandshakeOptions) =>
  Effect.gen(function*() {
    const helloBody = yield* Effect.flatMap(link.next, (frame) => expect(frame, FrameType.Hello, "Hello"))
    const hello = yield* decodeHello(helloBody)
    if (hello.to !== options.local) {
      return yield* new ConnectionError({
        reason: "WrongPeer",
        detail: `the dialler expects ${JSON.stringify(hello.to)}, this is ${JSON.stringify(options.local)}`
      })
    }
    if (hello.from === options.local || !options.knows(hello.from)) {
      return yield* new ConnectionError({
        reason: "UnknownPeer",
        detail: `${JSON.stringify(hello.from)} is not in the address book`
      })
    }
    const nonce = yield* randomBytes(nonceSize)
    const signed = encodeChallengeSigned(nonce, options.instance, options.local)
    const ours = yield* mac(options.key, "acceptor", helloBody, signed)
    const challenge = new Uint8Array(signed.length + macSize)
    challenge.set(signed)
    challenge.set(ours, signed.length)
    yield* link.write(encode(FrameType.Challenge, challenge))
    const proof = yield* Effect.flatMap(link.next, (frame) => expect(frame, FrameType.Proof, "Proof"))
    const expected = yield* mac(options.key, "dialler", helloBody, signed)
    if (!sameMac(expected, proof)) {
      return yield* unauthenticated(`${JSON.stringify(hello.from)} does not prove the key`)
    }
    if (decides(hello.from, options.local)) yield* link.write(encode(FrameType.Ready))
    return {
      peer: hello.from,
      id: hello.nonce,
      dialled: false,
      remoteInstance: hello.instance,
      remoteLast: hello.last
    } satisfies Authenticated
  })

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
