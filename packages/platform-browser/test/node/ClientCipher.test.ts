/**
 * The browser's WebCrypto cipher against `node:crypto`, which the Node server uses: the same ECDH secret, the same
 * HKDF keys, the same records. Runs in Node (20 has `crypto.subtle`), not in the browser project.
 */
import { assert, describe, it } from "@effect/vitest"
import * as ClientHandshake from "@intersession/core/ClientHandshake"
import * as Framing from "@intersession/core/Framing"
import * as PeerId from "@intersession/core/PeerId"
import * as Effect from "effect/Effect"
import * as Crypto from "node:crypto"
import * as ClientCipher from "../../src/internal/clientCipher.js"
import { nodeKeys, nodeOpen, nodeSeal, random, same, text } from "./NodeCrypto.js"

/** A record's length header, checked, and what follows it. */
const body = (record: Uint8Array): Uint8Array => {
  const length = new DataView(record.buffer, record.byteOffset).getUint32(0)
  assert.strictEqual(length, record.length - Framing.headerSize)
  return record.subarray(Framing.headerSize)
}

/** Both hellos of a handshake, as the core encodes them, and a secret. */
const handshakeInputs = () => {
  const clientNonce = random(ClientHandshake.nonceSize)
  const serverNonce = random(ClientHandshake.nonceSize)
  const publicKey = Uint8Array.of(4, ...random(64))
  const clientHello = ClientHandshake.encodeClientHello({
    nonce: clientNonce,
    instance: random(ClientHandshake.instanceSize),
    last: undefined,
    from: PeerId.make("tab"),
    to: "server",
    publicKey
  })
  const serverHello = ClientHandshake.encodeServerHello({
    nonce: serverNonce,
    instance: random(ClientHandshake.instanceSize),
    from: PeerId.make("server"),
    publicKey
  })
  return { secret: random(32), clientNonce, serverNonce, clientHello, serverHello }
}

const sessions = Effect.gen(function*() {
  const inputs = handshakeInputs()
  return { client: yield* ClientCipher.session(inputs), node: nodeKeys(inputs) }
})

describe("client cipher", () => {
  it.effect("ECDH: WebCrypto and node:crypto reach the same 32-byte secret, both ways", () =>
    Effect.gen(function*() {
      const browser = yield* ClientCipher.generateKeyPair
      assert.strictEqual(browser.publicKey.length, ClientHandshake.publicKeySize)
      assert.strictEqual(browser.publicKey[0], 0x04)
      const node = Crypto.createECDH("prime256v1")
      const nodePublic = new Uint8Array(node.generateKeys())
      const ours = yield* ClientCipher.sharedSecret(browser.privateKey, nodePublic)
      const theirs = new Uint8Array(node.computeSecret(browser.publicKey))
      assert.strictEqual(ours.length, 32)
      assert.isTrue(same(ours, theirs))
      // Another pair agrees on another secret.
      const other = yield* ClientCipher.generateKeyPair
      assert.isFalse(same(yield* ClientCipher.sharedSecret(other.privateKey, nodePublic), theirs))
    }))

  it.effect("a public key that is not a P-256 point is refused", () =>
    Effect.gen(function*() {
      const { privateKey } = yield* ClientCipher.generateKeyPair
      const notAPoint = new Uint8Array(ClientHandshake.publicKeySize).fill(0x04)
      const error = yield* Effect.flip(ClientCipher.sharedSecret(privateKey, notAPoint))
      assert.strictEqual(error._tag, "CipherError")
    }))

  it.effect("HKDF: the client's key is node's hkdfSync key; what it seals opens with createDecipheriv", () =>
    Effect.gen(function*() {
      const { client, node } = yield* sessions
      for (let i = 0; i < 3; i++) {
        const plaintext = Framing.encode(Framing.FrameType.Data, text(`secret frame number ${i}`))
        const record = yield* ClientCipher.sealRecord(client.send, plaintext)
        assert.strictEqual(record.length, Framing.headerSize + plaintext.length + Framing.tagSize)
        assert.isFalse(Buffer.from(record).includes(Buffer.from("secret frame")))
        assert.isTrue(same(nodeOpen(node.client, i, body(record)), plaintext), `record ${i}`)
      }
      // The server's key does not open the client's records: each direction has its own.
      const record = yield* ClientCipher.sealRecord(client.send, text("\u0010x"))
      assert.isUndefined(nodeOpen(node.server, 3, body(record)))
    }))

  it.effect("what node:crypto seals with the server's key opens here, in order", () =>
    Effect.gen(function*() {
      const { client, node } = yield* sessions
      for (let i = 0; i < 5; i++) {
        const plaintext = Framing.encode(Framing.FrameType.Data, text(`from the server ${i}`))
        assert.isTrue(same(yield* ClientCipher.open(client.receive, nodeSeal(node.server, i, plaintext)), plaintext))
      }
      assert.strictEqual(client.receive.counter, 5)
    }))

  it.effect("a change of any byte, a cut and a forged record fail to open", () =>
    Effect.gen(function*() {
      const plaintext = text("\u0010twenty bytes of body")
      // Sealed by the server of another handshake.
      const forged = nodeSeal((yield* sessions).node.server, 0, plaintext)
      const inputs = handshakeInputs()
      const keys = nodeKeys(inputs)
      const record = nodeSeal(keys.server, 0, plaintext)
      // A fresh session for each try, so that each is the first record.
      const open = (bytes: Uint8Array) =>
        Effect.flatMap(ClientCipher.session(inputs), (session) => ClientCipher.open(session.receive, bytes))
      for (let at = 0; at < record.length; at++) {
        const altered = Uint8Array.from(record)
        altered[at] = altered[at]! ^ 0x01
        assert.isUndefined(yield* open(altered), `byte ${at}`)
      }
      assert.isUndefined(yield* open(record.subarray(0, record.length - 1)))
      assert.isUndefined(yield* open(record.subarray(1)))
      assert.isUndefined(yield* open(new Uint8Array(Framing.tagSize - 1)))
      assert.isUndefined(yield* open(forged), "sealed with another handshake's key")
      assert.isTrue(same(yield* open(record), plaintext))
    }))

  it.effect("a replayed, reordered or dropped record fails to open", () =>
    Effect.gen(function*() {
      const replayed = yield* sessions
      const first = nodeSeal(replayed.node.server, 0, text("\u0010one"))
      assert.isDefined(yield* ClientCipher.open(replayed.client.receive, first))
      assert.isUndefined(yield* ClientCipher.open(replayed.client.receive, first))

      const reordered = yield* sessions
      const second = nodeSeal(reordered.node.server, 1, text("\u0010two"))
      assert.isUndefined(yield* ClientCipher.open(reordered.client.receive, second))

      const dropped = yield* sessions
      const third = nodeSeal(dropped.node.server, 2, text("\u0010three"))
      assert.isDefined(
        yield* ClientCipher.open(dropped.client.receive, nodeSeal(dropped.node.server, 0, text("\u0010a")))
      )
      assert.isUndefined(yield* ClientCipher.open(dropped.client.receive, third))
    }))

  it.effect("seals started together take their counters in call order, whatever order WebCrypto finishes in", () =>
    Effect.gen(function*() {
      const { client, node } = yield* sessions
      const plaintexts = Array.from({ length: 32 }, (_, i) => text(`\u0010write ${i} ${"x".repeat(i * 997)}`))
      const records = yield* Effect.all(
        plaintexts.map((plaintext) => ClientCipher.sealRecord(client.send, plaintext)),
        {
          concurrency: "unbounded"
        }
      )
      records.forEach((record, i) =>
        assert.isTrue(same(nodeOpen(node.client, i, body(record)), plaintexts[i]!), `${i}`)
      )
    }))

  it.effect("an empty write seals to a tag alone, and opens", () =>
    Effect.gen(function*() {
      const { client, node } = yield* sessions
      const record = yield* ClientCipher.sealRecord(client.send, new Uint8Array(0))
      assert.strictEqual(record.length, Framing.headerSize + Framing.tagSize)
      assert.isTrue(same(nodeOpen(node.client, 0, body(record)), new Uint8Array(0)))
    }))
})
