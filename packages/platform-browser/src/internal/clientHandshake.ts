/**
 * The client's side of the client handshake (the protocol is in `ClientHandshake` of the core): `ClientHello` and
 * `ServerHello` in the clear, an ECDH key agreement, then `Credentials` and the server's `Welcome` or `Refused`, sealed.
 *
 * @internal
 */
import * as ClientHandshake from "@intersession/core/ClientHandshake"
import { encode, type Frame, FrameType } from "@intersession/core/Framing"
import type { PeerId } from "@intersession/core/PeerId"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ClientCipher from "./clientCipher.js"
import type { ClientLink } from "./clientLink.js"
import { ConnectionError } from "./clientLink.js"

/**
 * The server refused the credential (or the client): its `Refused` frame, read.
 *
 * @internal
 */
export class RefusedError extends Data.TaggedError("RefusedError")<{
  readonly reason: ClientHandshake.RefusalReason
  readonly detail: string
}> {
  override get message(): string {
    return `Refused (${this.reason}): ${this.detail}`
  }
}

/**
 * The largest handshake frame read: above a hello (under 2 KiB), a `Welcome` and a `Refused` (under 1.1 KiB).
 *
 * @internal
 */
export const maxHandshakeFrame = 4 * 1024

/** @internal */
export interface Options {
  /** The id the credential is for. */
  readonly local: PeerId
  /** The id expected at the URL. */
  readonly server: PeerId
  /** Random, once per network: the server tells a restarted client from a reconnecting one. */
  readonly instance: Uint8Array
  /** The id of this network's last connection that was welcomed, if any. */
  readonly last: Uint8Array | undefined
  /** The credential, at most `ClientHandshake.maxCredentialBytes`. */
  readonly credential: Uint8Array
}

/**
 * A welcomed connection: its id (the client's nonce, which the next connection names as `last`) and the server's
 * instance.
 *
 * @internal
 */
export interface Welcomed {
  readonly id: Uint8Array
  readonly serverInstance: Uint8Array
}

const malformed = (detail: string) => new ConnectionError({ reason: "Malformed", detail })

const decoded = <A>(result: Either.Either<A, ClientHandshake.MalformedHandshakeError>) =>
  Either.mapLeft(result, (error) => malformed(error.detail))

const expect = (frame: Frame, type: number, name: string): Either.Either<Uint8Array, ConnectionError> =>
  frame.type === type
    ? Either.right(frame.body)
    : Either.left(malformed(`expected ${name}, got frame type ${frame.type}`))

const cipherFailed = (reason: "Malformed" | "Io") => (error: ClientCipher.CipherError) =>
  new ConnectionError({ reason, detail: error.detail, cause: error.cause })

/**
 * Runs the handshake on a fresh link. When it succeeds the link is protected and in use; when it fails with
 * `RefusedError` the server said why, otherwise the connection broke or the server is not the one expected.
 *
 * @internal
 */
export const run = (
  link: ClientLink,
  options: Options
): Effect.Effect<Welcomed, ConnectionError | RefusedError> =>
  Effect.gen(function*() {
    const nonce = yield* ClientCipher.randomBytes(ClientHandshake.nonceSize)
    const keys = yield* Effect.mapError(ClientCipher.generateKeyPair, cipherFailed("Io"))
    const clientHello = ClientHandshake.encodeClientHello({
      nonce,
      instance: options.instance,
      last: options.last,
      from: options.local,
      to: options.server,
      publicKey: keys.publicKey
    })
    yield* link.write(encode(FrameType.ClientHello, clientHello))

    const serverHelloBody = yield* Effect.flatMap(link.next, (frame) =>
      expect(frame, FrameType.ServerHello, "ServerHello"))
    const serverHello = yield* decoded(ClientHandshake.decodeServerHello(serverHelloBody))
    if (serverHello.from !== options.server) {
      return yield* new ConnectionError({
        reason: "WrongPeer",
        detail: `dialled ${JSON.stringify(options.server)}, reached ${JSON.stringify(serverHello.from)}`
      })
    }
    const secret = yield* Effect.mapError(
      ClientCipher.sharedSecret(keys.privateKey, serverHello.publicKey),
      cipherFailed("Malformed")
    )
    const session = yield* Effect.mapError(
      ClientCipher.session({
        secret,
        clientNonce: nonce,
        serverNonce: serverHello.nonce,
        clientHello,
        serverHello: serverHelloBody
      }),
      cipherFailed("Io")
    )
    // A tampered hello gives the server other keys: our first record fails to open there, theirs here (`Tampered`).
    link.protect(session)
    yield* link.write(encode(FrameType.Credentials, options.credential))

    const answer = yield* link.next
    if (answer.type === FrameType.Refused) {
      const refusal = yield* decoded(ClientHandshake.decodeRefused(answer.body))
      return yield* new RefusedError(refusal)
    }
    const bound = yield* Either.flatMap(expect(answer, FrameType.Welcome, "Welcome or Refused"), (body) =>
      decoded(ClientHandshake.decodeWelcome(body)))
    if (bound !== options.local) {
      return yield* new ConnectionError({
        reason: "WrongPeer",
        detail: `the credential is for ${JSON.stringify(bound)}, this client is ${JSON.stringify(options.local)}`
      })
    }
    return { id: nonce, serverInstance: serverHello.instance }
  })
