/**
 * The handshake of a client (a browser tab, say) that dials a Node peer without the deployment's pre-shared key: it
 * presents a credential instead, which the Node peer's application checks, and the peer id that check returns is the
 * client's on that connection. The frames are those of `Framing`; only the byte layouts live here, so that every
 * platform speaks the same protocol with its own cryptography.
 *
 * 1. client → server `ClientHello`, in the clear: version, client nonce (32 random bytes), client instance (16
 *    random bytes per network), the id of the client's last connection to the server in this run (or none), the id
 *    the client claims, the id it expects the server to have, and a fresh P-256 ECDH public key (65 bytes,
 *    uncompressed).
 * 2. server → client `ServerHello`, in the clear: version, server nonce, server instance, the server's id, and its own
 *    fresh P-256 public key.
 * 3. Both compute the ECDH shared secret (32 bytes). Each direction's AES-256-GCM key is
 *    `HKDF-SHA256(secret, salt = client nonce ‖ server nonce, info = label ‖ SHA-256(transcript))`, where the
 *    transcript is `len ‖ ClientHello body ‖ len ‖ ServerHello body` ({@link transcript}) and the labels are
 *    {@link clientLabel} and {@link serverLabel}. Every later frame is sealed in records, as on a link between Node
 *    peers (`Framing.recordNonce`).
 * 4. client → server `Credentials`, sealed: the credential (a token, at most {@link maxCredentialBytes} bytes).
 * 5. server → client `Welcome`, sealed: the peer id the server's verifier bound to the credential, which equals the
 *    claimed one. Or `Refused`, sealed: a {@link RefusalReason} and a detail; then the server closes.
 * 6. Then `Data` and `Ping` frames both ways, sealed. There is no verdict: a client's newest connection replaces its
 *    older one.
 *
 * The keys depend on both public keys and on everything either side said, so tampering with the clear part of the
 * handshake makes the first sealed frame fail. The credential is only sent sealed. The ECDH exchange itself does not
 * authenticate the server: a client must reach it over `wss://`, whose TLS does (as it does for the page's own
 * scripts).
 *
 * @since 0.3.0
 */
import * as Data from "effect/Data"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import * as Binary from "./Binary.js"
import * as PeerId from "./PeerId.js"

/**
 * The client handshake's version, the first byte of `ClientHello` and `ServerHello`.
 *
 * @since 0.3.0
 * @category constants
 */
export const version = 1

/**
 * @since 0.3.0
 * @category constants
 */
export const nonceSize = 32

/**
 * @since 0.3.0
 * @category constants
 */
export const instanceSize = 16

/**
 * The size of a P-256 public key in uncompressed form (`0x04 ‖ x ‖ y`), as WebCrypto's `raw` export gives it.
 *
 * @since 0.3.0
 * @category constants
 */
export const publicKeySize = 65

/**
 * The largest credential a client may present.
 *
 * @since 0.3.0
 * @category constants
 */
export const maxCredentialBytes = 8 * 1024

/** The most UTF-8 bytes of a peer id: 255 UTF-16 code units of 3 bytes at most. */
const maxIdBytes = 3 * PeerId.maxLength

/** The longest detail a `Refused` carries. */
const maxDetailBytes = 1024

/**
 * The largest `ClientHello` or `ServerHello` body.
 *
 * @since 0.3.0
 * @category constants
 */
export const maxHelloBytes = 1 + nonceSize + instanceSize + Binary.uintSize(nonceSize) + nonceSize +
  2 * (Binary.uintSize(maxIdBytes) + maxIdBytes) + Binary.uintSize(publicKeySize) + publicKeySize

const encoder = new TextEncoder()

/**
 * The HKDF label of the key the client seals with.
 *
 * @since 0.3.0
 * @category key derivation
 */
export const clientLabel: Uint8Array = encoder.encode("intersession/v1 client link key: client to server\0")

/**
 * The HKDF label of the key the server seals with.
 *
 * @since 0.3.0
 * @category key derivation
 */
export const serverLabel: Uint8Array = encoder.encode("intersession/v1 client link key: server to client\0")

/**
 * What a client says first.
 *
 * @since 0.3.0
 * @category models
 */
export interface ClientHello {
  readonly nonce: Uint8Array
  readonly instance: Uint8Array
  /** The id of the client's last connection to this server in this run: its `ClientHello` nonce. */
  readonly last: Uint8Array | undefined
  /** The id the client claims; the verifier must bind the same. */
  readonly from: PeerId.PeerId
  /** The id the client expects the server to have. */
  readonly to: string
  readonly publicKey: Uint8Array
}

/**
 * The server's answer.
 *
 * @since 0.3.0
 * @category models
 */
export interface ServerHello {
  readonly nonce: Uint8Array
  readonly instance: Uint8Array
  readonly from: PeerId.PeerId
  readonly publicKey: Uint8Array
}

/**
 * Why a server refused a client, as `Refused` says it: the verifier refused the credential (`Unauthorized`), it bound
 * an id other than the claimed one (`WrongPeer`), the id belongs to a peer of the address book (`ReservedPeer`), the
 * client has too many connections (`TooManyConnections`), or the server takes no clients (`NotAccepted`).
 *
 * @since 0.3.0
 * @category models
 */
export type RefusalReason = "Unauthorized" | "WrongPeer" | "ReservedPeer" | "TooManyConnections" | "NotAccepted"

const refusalReasons: ReadonlySet<string> = new Set<RefusalReason>([
  "Unauthorized",
  "WrongPeer",
  "ReservedPeer",
  "TooManyConnections",
  "NotAccepted"
])

/**
 * A `Refused` frame's content.
 *
 * @since 0.3.0
 * @category models
 */
export interface Refusal {
  readonly reason: RefusalReason
  readonly detail: string
}

/**
 * Bytes that are not a valid message of this handshake.
 *
 * @since 0.3.0
 * @category errors
 */
export class MalformedHandshakeError extends Data.TaggedError("MalformedHandshakeError")<{
  readonly detail: string
}> {
  /**
   * @since 0.3.0
   */
  override get message(): string {
    return `Malformed client handshake: ${this.detail}`
  }
}

const malformed = (detail: string) => new MalformedHandshakeError({ detail })

const field = <A>(value: A | Binary.ReadError, what: string): Either.Either<A, MalformedHandshakeError> =>
  value instanceof Binary.ReadError ? Either.left(malformed(`${what}: ${value.detail}`)) : Either.right(value)

const isPeerId = Schema.is(PeerId.PeerId)

const isRefusalReason = (value: string): value is RefusalReason => refusalReasons.has(value)

const peerIdField = (value: string | Binary.ReadError, what: string) =>
  Either.flatMap(
    field(value, what),
    (id) => isPeerId(id) ? Either.right(id) : Either.left(malformed(`${what} is not a valid peer id`))
  )

const checkVersion = (value: number | Binary.ReadError) =>
  value === version
    ? Either.right(undefined)
    : Either.left(malformed(`client handshake version ${typeof value === "number" ? value : "missing"}, expected 1`))

const end = (reader: Binary.Reader, what: string) =>
  reader.remaining === 0 ? Either.right(undefined) : Either.left(malformed(`${what} with extra fields`))

const publicKeyField = (value: Uint8Array | Binary.ReadError, what: string) =>
  Either.flatMap(
    field(value, what),
    (key) =>
      key.length === publicKeySize && key[0] === 0x04
        ? Either.right(key)
        : Either.left(malformed(`${what} is not an uncompressed P-256 point`))
  )

/**
 * @since 0.3.0
 * @category encoding
 */
export const encodeClientHello = (hello: ClientHello): Uint8Array => {
  const writer = new Binary.Writer(maxHelloBytes)
  writer.byte(version)
  writer.raw(hello.nonce)
  writer.raw(hello.instance)
  writer.bytes(hello.last ?? new Uint8Array(0))
  writer.string(hello.from)
  writer.string(hello.to)
  writer.bytes(hello.publicKey)
  return writer.finish()
}

/**
 * @since 0.3.0
 * @category decoding
 */
export const decodeClientHello = (body: Uint8Array): Either.Either<ClientHello, MalformedHandshakeError> =>
  Either.gen(function*() {
    const reader = new Binary.Reader(body)
    yield* checkVersion(reader.byte())
    const nonce = yield* field(reader.raw(nonceSize), "the ClientHello's nonce")
    const instance = yield* field(reader.raw(instanceSize), "the ClientHello's instance")
    const last = yield* field(reader.bytes(), "the ClientHello's last connection")
    const from = yield* peerIdField(reader.string(maxIdBytes), "the client's id")
    const to = yield* field(reader.string(maxIdBytes), "the expected server's id")
    const publicKey = yield* publicKeyField(reader.bytes(), "the client's public key")
    yield* end(reader, "a ClientHello")
    return { nonce, instance, last: last.length === 0 ? undefined : last, from, to, publicKey }
  })

/**
 * @since 0.3.0
 * @category encoding
 */
export const encodeServerHello = (hello: ServerHello): Uint8Array => {
  const writer = new Binary.Writer(maxHelloBytes)
  writer.byte(version)
  writer.raw(hello.nonce)
  writer.raw(hello.instance)
  writer.string(hello.from)
  writer.bytes(hello.publicKey)
  return writer.finish()
}

/**
 * @since 0.3.0
 * @category decoding
 */
export const decodeServerHello = (body: Uint8Array): Either.Either<ServerHello, MalformedHandshakeError> =>
  Either.gen(function*() {
    const reader = new Binary.Reader(body)
    yield* checkVersion(reader.byte())
    const nonce = yield* field(reader.raw(nonceSize), "the ServerHello's nonce")
    const instance = yield* field(reader.raw(instanceSize), "the ServerHello's instance")
    const from = yield* peerIdField(reader.string(maxIdBytes), "the server's id")
    const publicKey = yield* publicKeyField(reader.bytes(), "the server's public key")
    yield* end(reader, "a ServerHello")
    return { nonce, instance, from, publicKey }
  })

/**
 * The bytes whose SHA-256 goes into each key's HKDF `info`: both hello bodies, each with its length as 4 bytes
 * big-endian.
 *
 * @since 0.3.0
 * @category key derivation
 */
export const transcript = (clientHello: Uint8Array, serverHello: Uint8Array): Uint8Array => {
  const out = new Uint8Array(8 + clientHello.length + serverHello.length)
  const view = new DataView(out.buffer)
  view.setUint32(0, clientHello.length)
  out.set(clientHello, 4)
  view.setUint32(4 + clientHello.length, serverHello.length)
  out.set(serverHello, 8 + clientHello.length)
  return out
}

/**
 * The HKDF salt: the client's nonce, then the server's.
 *
 * @since 0.3.0
 * @category key derivation
 */
export const salt = (clientNonce: Uint8Array, serverNonce: Uint8Array): Uint8Array => {
  const out = new Uint8Array(clientNonce.length + serverNonce.length)
  out.set(clientNonce)
  out.set(serverNonce, clientNonce.length)
  return out
}

/**
 * The HKDF `info` of one direction's key: its label, then the SHA-256 of the transcript.
 *
 * @since 0.3.0
 * @category key derivation
 */
export const info = (sender: "client" | "server", transcriptHash: Uint8Array): Uint8Array => {
  const label = sender === "client" ? clientLabel : serverLabel
  const out = new Uint8Array(label.length + transcriptHash.length)
  out.set(label)
  out.set(transcriptHash, label.length)
  return out
}

/**
 * The body of `Welcome`: the bound peer id.
 *
 * @since 0.3.0
 * @category encoding
 */
export const encodeWelcome = (peer: PeerId.PeerId): Uint8Array => {
  const writer = new Binary.Writer(Binary.stringSize(peer) + 8)
  writer.string(peer)
  return writer.finish()
}

/**
 * @since 0.3.0
 * @category decoding
 */
export const decodeWelcome = (body: Uint8Array): Either.Either<PeerId.PeerId, MalformedHandshakeError> =>
  Either.gen(function*() {
    const reader = new Binary.Reader(body)
    const peer = yield* peerIdField(reader.string(maxIdBytes), "the Welcome's peer id")
    yield* end(reader, "a Welcome")
    return peer
  })

/**
 * The body of `Refused`: the reason, then a detail (cut to 1 KiB).
 *
 * @since 0.3.0
 * @category encoding
 */
export const encodeRefused = (refusal: Refusal): Uint8Array => {
  const detail = refusal.detail.length > maxDetailBytes / 3
    ? refusal.detail.slice(0, maxDetailBytes / 3)
    : refusal.detail
  const writer = new Binary.Writer(64 + 3 * detail.length)
  writer.string(refusal.reason)
  writer.string(detail)
  return writer.finish()
}

/**
 * @since 0.3.0
 * @category decoding
 */
export const decodeRefused = (body: Uint8Array): Either.Either<Refusal, MalformedHandshakeError> =>
  Either.gen(function*() {
    const reader = new Binary.Reader(body)
    const reason = yield* field(reader.string(64), "the refusal's reason")
    if (!isRefusalReason(reason)) return yield* Either.left(malformed(`unknown refusal reason ${reason}`))
    const detail = yield* field(reader.string(maxDetailBytes), "the refusal's detail")
    yield* end(reader, "a Refused")
    return { reason, detail }
  })
