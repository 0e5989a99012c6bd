/**
 * What the Node server does to records, with `node:crypto`, for the tests that check the browser's WebCrypto code
 * against it; and the byte helpers they share.
 */
import * as ClientHandshake from "@intersession/core/ClientHandshake"
import * as Framing from "@intersession/core/Framing"
import * as Crypto from "node:crypto"

export const random = (size: number) => new Uint8Array(Crypto.randomBytes(size))

export const text = (value: string) => new TextEncoder().encode(value)

export const same = (a: Uint8Array | undefined, b: Uint8Array | undefined) =>
  a !== undefined && b !== undefined && Buffer.from(a).equals(Buffer.from(b))

/** `plaintext` sealed with AES-256-GCM under record number `counter`: ciphertext, then tag. */
export const nodeSeal = (key: Uint8Array, counter: number, plaintext: Uint8Array): Uint8Array => {
  const cipher = Crypto.createCipheriv("aes-256-gcm", key, Framing.recordNonce(counter))
  return new Uint8Array(Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]))
}

/** {@link nodeSeal}'s bytes behind their length header: a record as it goes on the wire. */
export const nodeRecord = (key: Uint8Array, counter: number, plaintext: Uint8Array): Uint8Array => {
  const sealed = nodeSeal(key, counter, plaintext)
  const record = new Uint8Array(Framing.headerSize + sealed.length)
  new DataView(record.buffer).setUint32(0, sealed.length)
  record.set(sealed, Framing.headerSize)
  return record
}

/** What `sealed` opens to under record number `counter`, or undefined when it fails authentication. */
export const nodeOpen = (key: Uint8Array, counter: number, sealed: Uint8Array): Uint8Array | undefined => {
  const decipher = Crypto.createDecipheriv("aes-256-gcm", key, Framing.recordNonce(counter))
  decipher.setAuthTag(sealed.subarray(sealed.length - Framing.tagSize))
  try {
    return new Uint8Array(
      Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - Framing.tagSize)), decipher.final()])
    )
  } catch {
    return undefined
  }
}

/** Each direction's key, as the Node server derives them from the ECDH secret, both nonces and both hellos. */
export const nodeKeys = (inputs: {
  readonly secret: Uint8Array
  readonly clientNonce: Uint8Array
  readonly serverNonce: Uint8Array
  readonly clientHello: Uint8Array
  readonly serverHello: Uint8Array
}) => {
  const hash = Crypto.createHash("sha256").update(ClientHandshake.transcript(inputs.clientHello, inputs.serverHello))
    .digest()
  const salt = ClientHandshake.salt(inputs.clientNonce, inputs.serverNonce)
  const derive = (sender: "client" | "server") =>
    new Uint8Array(Crypto.hkdfSync("sha256", inputs.secret, salt, ClientHandshake.info(sender, hash), 32))
  return { client: derive("client"), server: derive("server") }
}
