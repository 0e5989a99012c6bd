/**
 * The cryptography of a client link, with WebCrypto (a browser has no `node:crypto`): the P-256 key agreement of the
 * client handshake, the HKDF-SHA256 derivation of each direction's AES-256-GCM key (see `ClientHandshake`), and the
 * sealed records that carry every frame after the hellos, byte for byte those of a link between Node peers: a 4-byte
 * big-endian length (the ciphertext's length + 16), the ciphertext, the 16-byte tag, under the nonce
 * `Framing.recordNonce(counter)` with one counter per direction from 0.
 *
 * WebCrypto answers with promises, so a direction's counter is taken when `sealRecord` or `open` is called: the link
 * must seal records in the order they go on the wire and open them in the order they arrive.
 *
 * @internal
 */
import * as ClientHandshake from "@intersession/core/ClientHandshake"
import * as Framing from "@intersession/core/Framing"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"

/**
 * WebCrypto failed. It only does for input it cannot take (a public key that is not a P-256 point), or where it is
 * missing (a page that is not a secure context).
 *
 * @internal
 */
export class CipherError extends Data.TaggedError("CipherError")<{
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return this.detail
  }
}

/**
 * One direction of a connection: its key and the number of its next record. Every `sealRecord` or `open` advances the
 * counter, whether it succeeds or not (a failure ends the connection).
 *
 * @internal
 */
export interface Direction {
  readonly key: CryptoKey
  counter: number
}

/**
 * The client's end of a connection: it seals with the client's key and opens with the server's.
 *
 * @internal
 */
export interface Session {
  readonly send: Direction
  readonly receive: Direction
}

/**
 * Whether this runtime has WebCrypto. A browser offers `crypto.subtle` only to secure contexts (https, localhost).
 *
 * @internal
 */
export const isAvailable = (): boolean =>
  typeof globalThis.crypto === "object" && typeof globalThis.crypto.subtle === "object" &&
  typeof globalThis.crypto.getRandomValues === "function"

const webCrypto = <A>(detail: string, run: () => Promise<A>): Effect.Effect<A, CipherError> =>
  Effect.tryPromise({ try: run, catch: (cause) => new CipherError({ detail, cause }) })

/**
 * WebCrypto takes views of an `ArrayBuffer`; bytes on a `SharedArrayBuffer` (never, here) are copied.
 *
 * @internal
 */
export const bufferSource = (bytes: Uint8Array): Uint8Array<ArrayBuffer> =>
  bytes.buffer instanceof ArrayBuffer
    ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    : Uint8Array.from(bytes)

/** @internal */
export const randomBytes = (size: number): Effect.Effect<Uint8Array<ArrayBuffer>> =>
  Effect.sync(() => crypto.getRandomValues(new Uint8Array(size)))

/**
 * A fresh P-256 key pair for one handshake: the private key cannot leave WebCrypto; the public key (which WebCrypto
 * always lets out) in uncompressed form, 65 bytes.
 *
 * @internal
 */
export const generateKeyPair: Effect.Effect<
  { readonly privateKey: CryptoKey; readonly publicKey: Uint8Array },
  CipherError
> = webCrypto("cannot make a P-256 key pair", async () => {
  const pair = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, false, ["deriveBits"])
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey))
  return { privateKey: pair.privateKey, publicKey }
})

/**
 * The ECDH shared secret (32 bytes) of our private key and the other side's public key. Fails when that key is not a
 * point of the curve.
 *
 * @internal
 */
export const sharedSecret = (privateKey: CryptoKey, publicKey: Uint8Array): Effect.Effect<Uint8Array, CipherError> =>
  webCrypto("the public key is not a P-256 point", async () => {
    const theirs = await crypto.subtle.importKey(
      "raw",
      bufferSource(publicKey),
      { name: "ECDH", namedCurve: "P-256" },
      false,
      []
    )
    return new Uint8Array(await crypto.subtle.deriveBits({ name: "ECDH", public: theirs }, privateKey, 256))
  })

/**
 * The client's session: each direction's key is `HKDF-SHA256(secret, salt = client nonce ‖ server nonce, info =
 * label ‖ SHA-256(transcript))`, usable only to seal (ours) or to open (the server's).
 *
 * @internal
 */
export const session = (options: {
  readonly secret: Uint8Array
  readonly clientNonce: Uint8Array
  readonly serverNonce: Uint8Array
  /** The bodies of both hellos, as they went over the wire. */
  readonly clientHello: Uint8Array
  readonly serverHello: Uint8Array
}): Effect.Effect<Session, CipherError> =>
  webCrypto("cannot derive the link keys", async () => {
    const hash = new Uint8Array(
      await crypto.subtle.digest(
        "SHA-256",
        bufferSource(ClientHandshake.transcript(options.clientHello, options.serverHello))
      )
    )
    const base = await crypto.subtle.importKey("raw", bufferSource(options.secret), "HKDF", false, ["deriveKey"])
    const salt = ClientHandshake.salt(options.clientNonce, options.serverNonce)
    const derive = (sender: "client" | "server") =>
      crypto.subtle.deriveKey(
        {
          name: "HKDF",
          hash: "SHA-256",
          salt: bufferSource(salt),
          info: bufferSource(ClientHandshake.info(sender, hash))
        },
        base,
        { name: "AES-GCM", length: 256 },
        false,
        [sender === "client" ? "encrypt" : "decrypt"]
      )
    const [send, receive] = await Promise.all([derive("client"), derive("server")])
    return { send: { key: send, counter: 0 }, receive: { key: receive, counter: 0 } }
  })

/** The largest length a record header can state. */
const maxRecordLength = 0xffff_ffff

/** The next nonce of `direction`, or `undefined` once the counter is used up (never, in practice). */
const take = (direction: Direction): Uint8Array<ArrayBuffer> | undefined => {
  if (direction.counter >= Number.MAX_SAFE_INTEGER) return undefined
  return bufferSource(Framing.recordNonce(direction.counter++))
}

/**
 * Seals one write (whole frames; the cipher does not look inside) as the next record of `direction`, as it goes on
 * the wire: the 4-byte length, the ciphertext, the tag.
 *
 * @internal
 */
export const sealRecord = (direction: Direction, plaintext: Uint8Array): Effect.Effect<Uint8Array, CipherError> =>
  Effect.suspend(() => {
    if (plaintext.length + Framing.tagSize > maxRecordLength) {
      return Effect.fail(new CipherError({ detail: "a write too large for one record" }))
    }
    const nonce = take(direction)
    if (nonce === undefined) return Effect.fail(new CipherError({ detail: "the record counter is used up" }))
    return webCrypto("cannot seal a record", async () => {
      const sealed = await crypto.subtle.encrypt(
        { name: "AES-GCM", iv: nonce, tagLength: Framing.tagSize * 8 },
        direction.key,
        bufferSource(plaintext)
      )
      // WebCrypto returns ciphertext ‖ tag in a buffer of its own: one copy puts the length in front.
      const record = new Uint8Array(Framing.headerSize + sealed.byteLength)
      new DataView(record.buffer).setUint32(0, sealed.byteLength)
      record.set(new Uint8Array(sealed), Framing.headerSize)
      return record
    })
  })

/**
 * Opens the next record of `direction` (without its length header): its plaintext, or `undefined` when it fails
 * authentication (altered, replayed, reordered, dropped or forged).
 *
 * @internal
 */
export const open = (direction: Direction, sealed: Uint8Array): Effect.Effect<Uint8Array | undefined> =>
  Effect.suspend(() => {
    const nonce = take(direction)
    if (nonce === undefined || sealed.length < Framing.tagSize) return Effect.succeed(undefined)
    return Effect.promise(() =>
      crypto.subtle.decrypt(
        { name: "AES-GCM", iv: nonce, tagLength: Framing.tagSize * 8 },
        direction.key,
        bufferSource(sealed)
      ).then(
        (plaintext) => new Uint8Array(plaintext),
        // WebCrypto reports a tag that does not match by rejecting.
        () => undefined
      )
    )
  })
