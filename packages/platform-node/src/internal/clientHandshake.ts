/**
 * The server's side of a client's handshake (`@intersession/core/ClientHandshake`): a client without the pre-shared
 * key (a browser tab) presents a credential, which the application's verifier checks and binds to a peer id.
 *
 * The key exchange is ephemeral P-256 ECDH; each direction's AES-256-GCM key is derived with HKDF-SHA256 from the
 * shared secret, both nonces and a hash of both hellos, and every frame after the `ServerHello` is sealed as on a
 * link between peers (`linkCipher.ts`). The credential arrives sealed; the answer (`Welcome` or `Refused`) goes sealed.
 *
 * @internal
 */
import * as ClientHandshake from "@intersession/core/ClientHandshake"
import { encode, FrameType } from "@intersession/core/Framing"
import type * as PeerId from "@intersession/core/PeerId"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Crypto from "node:crypto"
import type * as LinkCipher from "./linkCipher.js"
import { ConnectionError, type Link } from "./netLink.js"

/**
 * What a verifier is given: the credential's bytes, the id the client claims, and where it connects from.
 *
 * @internal
 */
export interface ClientRequest {
  readonly credential: Uint8Array
  readonly claimed: PeerId.PeerId
  readonly remote: string
}

/**
 * How a network takes clients.
 *
 * @internal
 */
export interface ClientPolicy {
  /** Checks a credential; the peer id it succeeds with is the client's. Any failure refuses the client. */
  readonly verify: (request: ClientRequest) => Effect.Effect<PeerId.PeerId, unknown>
  /** Whether `peer` belongs to the deployment (its address book): a client may not take its id. */
  readonly reserved: (peer: PeerId.PeerId) => boolean
  /** Takes one of `peer`'s connection slots; `undefined` when it has them all, else the release. */
  readonly reserve: (peer: PeerId.PeerId) => (() => void) | undefined
}

/**
 * A client that was welcomed: its bound id, its connection's id (its `ClientHello` nonce), and the release of the
 * connection slot it holds, to call when the connection ends.
 *
 * @internal
 */
export interface Welcomed {
  readonly peer: PeerId.PeerId
  readonly id: Uint8Array
  readonly remoteInstance: Uint8Array
  readonly release: () => void
}

const malformed = (error: ClientHandshake.MalformedHandshakeError) =>
  new ConnectionError({ reason: "Malformed", detail: error.detail })

/** The server's session: it seals with the server's key and opens with the client's. */
const session = (
  secret: Uint8Array,
  clientHello: Uint8Array,
  serverHello: Uint8Array,
  clientNonce: Uint8Array,
  serverNonce: Uint8Array
): LinkCipher.Session => {
  const hash = Crypto.createHash("sha256").update(ClientHandshake.transcript(clientHello, serverHello)).digest()
  const salt = ClientHandshake.salt(clientNonce, serverNonce)
  const key = (sender: "client" | "server") =>
    new Uint8Array(Crypto.hkdfSync("sha256", secret, salt, ClientHandshake.info(sender, hash), 32))
  return { send: { key: key("server"), counter: 0 }, receive: { key: key("client"), counter: 0 } }
}

/** The ECDH secret with the client's public key; `undefined` for a point not on the curve. */
const agree = (ecdh: Crypto.ECDH, publicKey: Uint8Array): Uint8Array | undefined => {
  try {
    return new Uint8Array(ecdh.computeSecret(publicKey))
  } catch {
    // Node reports a public key that is not a point of the curve by throwing.
    return undefined
  }
}

/** Tells the client why it is refused (sealed), then fails the handshake; the caller closes the connection. */
const refuse = (link: Link, reason: ClientHandshake.RefusalReason, detail: string, logged?: unknown) =>
  Effect.gen(function*() {
    yield* Effect.ignore(link.write(encode(FrameType.Refused, ClientHandshake.encodeRefused({ reason, detail }))))
    return yield* new ConnectionError({ reason: "ClientRefused", detail: `${reason}: ${detail}`, cause: logged })
  })

/**
 * Answers a client whose `ClientHello` (`helloBody`) was the connection's first frame: key exchange, credential,
 * verifier, then `Welcome` or `Refused`. `policy` is `undefined` when the network takes no clients: the client is then
 * told `NotAccepted`. `proven` runs once the client is accepted, before `Welcome` is written.
 *
 * @internal
 */
export const accept = (options: {
  readonly link: Link
  readonly helloBody: Uint8Array
  readonly local: PeerId.PeerId
  readonly instance: Uint8Array
  readonly remote: string
  readonly policy: ClientPolicy | undefined
  readonly proven: Effect.Effect<void>
}): Effect.Effect<Welcomed, ConnectionError> =>
  Effect.gen(function*() {
    const { link, local, policy } = options
    const hello = yield* Either.mapLeft(ClientHandshake.decodeClientHello(options.helloBody), malformed)
    if (hello.to !== local) {
      return yield* new ConnectionError({
        reason: "WrongPeer",
        detail: `the client expects ${JSON.stringify(hello.to)}, this is ${JSON.stringify(local)}`
      })
    }
    const ecdh = Crypto.createECDH("prime256v1")
    const publicKey = new Uint8Array(ecdh.generateKeys())
    const secret = agree(ecdh, hello.publicKey)
    if (secret === undefined) {
      return yield* new ConnectionError({ reason: "Malformed", detail: "the client's public key is not on P-256" })
    }
    const nonce = new Uint8Array(Crypto.randomBytes(ClientHandshake.nonceSize))
    const serverHello = ClientHandshake.encodeServerHello({ nonce, instance: options.instance, from: local, publicKey })
    yield* link.write(encode(FrameType.ServerHello, serverHello))
    link.protect(session(secret, options.helloBody, serverHello, hello.nonce, nonce))
    link.setLimit(ClientHandshake.maxCredentialBytes)
    const credentials = yield* Effect.flatMap(link.next, (frame) =>
      frame.type === FrameType.Credentials
        ? Effect.succeed(frame.body)
        : Effect.fail(
          new ConnectionError({ reason: "Malformed", detail: `expected Credentials, got frame type ${frame.type}` })
        ))
    if (policy === undefined) return yield* refuse(link, "NotAccepted", "this peer takes no clients")
    const verified = yield* Effect.exit(
      policy.verify({ credential: credentials, claimed: hello.from, remote: options.remote })
    )
    if (verified._tag === "Failure") {
      return yield* refuse(link, "Unauthorized", "the credential was refused", Cause.squash(verified.cause))
    }
    const peer = verified.value
    if (peer !== hello.from) {
      return yield* refuse(
        link,
        "WrongPeer",
        `the credential is for ${JSON.stringify(peer)}, not ${JSON.stringify(hello.from)}`
      )
    }
    if (peer === local || policy.reserved(peer)) {
      return yield* refuse(link, "ReservedPeer", `${JSON.stringify(peer)} is a peer of the deployment`)
    }
    const release = policy.reserve(peer)
    if (release === undefined) {
      return yield* refuse(link, "TooManyConnections", `${JSON.stringify(peer)} has too many connections`)
    }
    yield* options.proven
    yield* link.write(encode(FrameType.Welcome, ClientHandshake.encodeWelcome(peer))).pipe(
      Effect.onError(() => Effect.sync(release))
    )
    return { peer, id: hello.nonce, remoteInstance: hello.instance, release } satisfies Welcomed
  })
