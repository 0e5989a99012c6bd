/**
 * Protection of what follows the handshake: each direction of a connection has its own AES-256-GCM key, derived with
 * HKDF-SHA256 from the pre-shared key the handshake proved, both nonces and both ids, and a 96-bit nonce that counts
 * the records of that direction (4 zero bytes, then the count as 8 bytes big-endian), starting at 0.
 *
 * One write of the link (a buffer of whole frames, as `frame.ts` encodes them) is sealed as one record, so the cost
 * of sealing is paid per write, not per frame. A record on the wire: a 4-byte big-endian length in the clear (the
 * ciphertext's length + 16), then the frames encrypted (their headers too), then the 16-byte tag. The length is
 * authenticated through the tag: a changed length cuts the ciphertext or the tag elsewhere. The reader opens a record
 * whole, then reads the frames out of its plaintext.
 *
 * The counter is not on the wire: the transport is ordered, so each side knows the number of the next record. A
 * record replayed, dropped, reordered, altered or made up fails authentication, and the connection is closed.
 *
 * @internal
 */
import * as Framing from "@intersession/core/Framing"
import * as Crypto from "node:crypto"

/** @internal */
export const tagSize = Framing.tagSize

const algorithm = "aes-256-gcm"
const headerSize = 4

/**
 * What a write grows by on the wire once sealed: the length header and the tag.
 *
 * @internal
 */
export const recordOverhead = headerSize + tagSize

/** The largest length a record header can state. */
const maxRecordLength = 0xffff_ffff

/**
 * One direction of a connection: its key and the number of the next record. Mutable: every `seal` or `open` advances
 * it, whether it succeeds or not (a failure ends the connection).
 *
 * @internal
 */
export interface Direction {
  readonly key: Uint8Array
  counter: number
}

/**
 * Both directions of one end of a connection.
 *
 * @internal
 */
export interface Session {
  readonly send: Direction
  readonly receive: Direction
}

const encoder = new TextEncoder()
const diallerLabel = encoder.encode("intersession/v1 link key: dialler to acceptor\0")
const acceptorLabel = encoder.encode("intersession/v1 link key: acceptor to dialler\0")

const lengthPrefixed = (bytes: Uint8Array): Uint8Array => {
  const out = new Uint8Array(4 + bytes.length)
  writeUint32(out, 0, bytes.length)
  out.set(bytes, 4)
  return out
}

/**
 * The key of the records that one role sends: `HKDF-SHA256(psk, salt = dialler nonce ‖ acceptor nonce, info = label
 * ‖ SHA-256(len ‖ dialler id ‖ len ‖ acceptor id))`. The ids are hashed because HKDF's `info` is at most 1 KiB.
 *
 * @internal
 */
export const deriveKey = (options: {
  readonly key: Uint8Array
  readonly sender: "dialler" | "acceptor"
  readonly diallerNonce: Uint8Array
  readonly acceptorNonce: Uint8Array
  readonly dialler: string
  readonly acceptor: string
}): Uint8Array => {
  const salt = new Uint8Array(options.diallerNonce.length + options.acceptorNonce.length)
  salt.set(options.diallerNonce)
  salt.set(options.acceptorNonce, options.diallerNonce.length)
  const ids = Crypto.createHash("sha256")
    .update(lengthPrefixed(encoder.encode(options.dialler)))
    .update(lengthPrefixed(encoder.encode(options.acceptor)))
    .digest()
  const label = options.sender === "dialler" ? diallerLabel : acceptorLabel
  const info = new Uint8Array(label.length + ids.length)
  info.set(label)
  info.set(ids, label.length)
  return new Uint8Array(Crypto.hkdfSync("sha256", options.key, salt, info, 32))
}

/**
 * The session of one end: what it sends under the key of its role, what it receives under the other's.
 *
 * @internal
 */
export const session = (options: {
  readonly key: Uint8Array
  readonly role: "dialler" | "acceptor"
  readonly diallerNonce: Uint8Array
  readonly acceptorNonce: Uint8Array
  readonly dialler: string
  readonly acceptor: string
}): Session => {
  const derive = (sender: "dialler" | "acceptor") => deriveKey({ ...options, sender })
  const other = options.role === "dialler" ? "acceptor" : "dialler"
  return { send: { key: derive(options.role), counter: 0 }, receive: { key: derive(other), counter: 0 } }
}

/** The next nonce of `direction`, or `undefined` once the counter is used up (never, in practice). */
const take = (direction: Direction): Uint8Array | undefined => {
  if (direction.counter >= Number.MAX_SAFE_INTEGER) return undefined
  return Framing.recordNonce(direction.counter++)
}

/**
 * Seals `plaintext` into `target` at `at`: ciphertext, then tag. Returns whether it could (the counter is not used
 * up).
 */
const sealInto = (direction: Direction, plaintext: Uint8Array, target: Uint8Array, at: number): boolean => {
  const nonce = take(direction)
  if (nonce === undefined) return false
  const cipher = Crypto.createCipheriv(algorithm, direction.key, nonce, { authTagLength: tagSize })
  const head = cipher.update(plaintext)
  const tail = cipher.final()
  target.set(head, at)
  target.set(tail, at + head.length)
  target.set(cipher.getAuthTag(), at + plaintext.length)
  return true
}

/**
 * Seals `plaintext` as the next of `direction`: ciphertext then tag, `plaintext.length + tagSize` bytes (a record
 * without its length header).
 *
 * @internal
 */
export const seal = (direction: Direction, plaintext: Uint8Array): Uint8Array | undefined => {
  const out = new Uint8Array(plaintext.length + tagSize)
  return sealInto(direction, plaintext, out, 0) ? out : undefined
}

/**
 * Opens what {@link seal} made (a record without its length header), the next in order: the plaintext, or
 * `undefined` when it fails authentication.
 *
 * @internal
 */
export const open = (direction: Direction, sealed: Uint8Array): Uint8Array | undefined => {
  const nonce = take(direction)
  if (nonce === undefined || sealed.length < tagSize) return undefined
  const decipher = Crypto.createDecipheriv(algorithm, direction.key, nonce, { authTagLength: tagSize })
  decipher.setAuthTag(sealed.subarray(sealed.length - tagSize))
  const head = decipher.update(sealed.subarray(0, sealed.length - tagSize))
  try {
    const tail = decipher.final()
    if (tail.length === 0) return new Uint8Array(head.buffer, head.byteOffset, head.byteLength)
    const out = new Uint8Array(head.length + tail.length)
    out.set(head)
    out.set(tail, head.length)
    return out
  } catch {
    // Node reports a tag that does not match by throwing.
    return undefined
  }
}

/**
 * Seals one write (whole frames, as `frame.ts` encodes them; the cipher does not look inside) into the record that
 * goes on the wire: the 4-byte length (`plaintext.length + tagSize`), the ciphertext, the tag. `undefined` when the
 * counter is used up or the record would be longer than a length header can state.
 *
 * @internal
 */
export const sealRecord = (direction: Direction, plaintext: Uint8Array): Uint8Array | undefined => {
  if (plaintext.length + tagSize > maxRecordLength) return undefined
  const out = new Uint8Array(headerSize + plaintext.length + tagSize)
  writeUint32(out, 0, plaintext.length + tagSize)
  return sealInto(direction, plaintext, out, headerSize) ? out : undefined
}

const writeUint32 = (target: Uint8Array, at: number, value: number): void => {
  target[at] = (value >>> 24) & 0xff
  target[at + 1] = (value >>> 16) & 0xff
  target[at + 2] = (value >>> 8) & 0xff
  target[at + 3] = value & 0xff
}
