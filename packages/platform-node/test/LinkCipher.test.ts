import { assert, describe, it } from "@effect/vitest"
import * as Crypto from "node:crypto"
import * as Frame from "../src/internal/frame.js"
import * as LinkCipher from "../src/internal/linkCipher.js"

const psk = new TextEncoder().encode("the pre-shared key of the link tests")
const diallerNonce = new Uint8Array(Crypto.randomBytes(32))
const acceptorNonce = new Uint8Array(Crypto.randomBytes(32))

/** Both ends of one connection. */
const ends = (overrides: { readonly diallerKey?: Uint8Array; readonly acceptorNonce?: Uint8Array } = {}) => {
  const common = { diallerNonce, acceptorNonce: overrides.acceptorNonce ?? acceptorNonce, dialler: "a", acceptor: "b" }
  return {
    dialler: LinkCipher.session({ ...common, key: overrides.diallerKey ?? psk, role: "dialler" }),
    acceptor: LinkCipher.session({ ...common, key: psk, role: "acceptor" })
  }
}

const text = (value: string) => new TextEncoder().encode(value)
const same = (a: Uint8Array | undefined, b: Uint8Array) => a !== undefined && Buffer.from(a).equals(Buffer.from(b))

describe("link cipher", () => {
  it("round trip, in order, both ways, and the ciphertext does not hold the plaintext", () => {
    const { acceptor, dialler } = ends()
    for (let i = 0; i < 5; i++) {
      const content = text(`\u0010secret frame number ${i}`)
      const sealed = LinkCipher.seal(dialler.send, content)!
      assert.strictEqual(sealed.length, content.length + LinkCipher.tagSize)
      assert.isFalse(Buffer.from(sealed).includes(Buffer.from("secret frame")))
      assert.isTrue(same(LinkCipher.open(acceptor.receive, sealed), content))
      const back = LinkCipher.seal(acceptor.send, content)!
      assert.isTrue(same(LinkCipher.open(dialler.receive, back), content))
    }
    const empty = Uint8Array.of(Frame.FrameType.Ping)
    assert.isTrue(same(LinkCipher.open(acceptor.receive, LinkCipher.seal(dialler.send, empty)!), empty))
  })

  it("a change of any byte (ciphertext or tag) fails", () => {
    const content = text("\u0010twenty bytes of body")
    const sealed = LinkCipher.seal(ends().dialler.send, content)!
    for (let at = 0; at < sealed.length; at++) {
      for (const bit of [0x01, 0x80]) {
        const altered = Uint8Array.from(sealed)
        altered[at] = altered[at]! ^ bit
        assert.isUndefined(LinkCipher.open(ends().acceptor.receive, altered), `byte ${at}, bit ${bit}`)
      }
    }
    // Cut or extended.
    assert.isUndefined(LinkCipher.open(ends().acceptor.receive, sealed.subarray(0, sealed.length - 1)))
    assert.isUndefined(LinkCipher.open(ends().acceptor.receive, sealed.subarray(1)))
    const longer = new Uint8Array(sealed.length + 1)
    longer.set(sealed)
    assert.isUndefined(LinkCipher.open(ends().acceptor.receive, longer))
    assert.isUndefined(LinkCipher.open(ends().acceptor.receive, new Uint8Array(LinkCipher.tagSize - 1)))
    // Unchanged, it opens.
    assert.isTrue(same(LinkCipher.open(ends().acceptor.receive, sealed), content))
  })

  it("a replayed frame fails", () => {
    const { acceptor, dialler } = ends()
    const first = LinkCipher.seal(dialler.send, text("\u0010one"))!
    assert.isDefined(LinkCipher.open(acceptor.receive, first))
    assert.isUndefined(LinkCipher.open(acceptor.receive, first))
  })

  it("a reordered or dropped frame fails", () => {
    const reordered = ends()
    const one = LinkCipher.seal(reordered.dialler.send, text("\u0010one"))!
    const two = LinkCipher.seal(reordered.dialler.send, text("\u0010two"))!
    assert.isUndefined(LinkCipher.open(reordered.acceptor.receive, two))
    const dropped = ends()
    LinkCipher.seal(dropped.dialler.send, text("\u0010lost"))
    const next = LinkCipher.seal(dropped.dialler.send, text("\u0010next"))!
    assert.isUndefined(LinkCipher.open(dropped.acceptor.receive, next))
    assert.isDefined(one)
  })

  it("each direction has its own key, and the keys depend on the key, the nonces and the ids", () => {
    const { acceptor, dialler } = ends()
    assert.isFalse(same(dialler.send.key, acceptor.send.key))
    assert.isTrue(same(dialler.send.key, acceptor.receive.key))
    assert.isTrue(same(acceptor.send.key, dialler.receive.key))
    // A frame reflected back to its sender does not open.
    const sealed = LinkCipher.seal(dialler.send, text("\u0010reflected"))!
    assert.isUndefined(LinkCipher.open(dialler.receive, sealed))
    const base = { key: psk, diallerNonce, acceptorNonce, dialler: "a", acceptor: "b", sender: "dialler" } as const
    const key = LinkCipher.deriveKey(base)
    for (
      const other of [
        { ...base, key: text("another pre-shared key, as long") },
        { ...base, diallerNonce: acceptorNonce },
        { ...base, acceptorNonce: diallerNonce },
        { ...base, dialler: "c" },
        { ...base, acceptor: "c" },
        // The ids are length-prefixed: moving a character from one to the other changes the key.
        { ...base, dialler: "ab", acceptor: "" }
      ]
    ) {
      assert.isFalse(same(LinkCipher.deriveKey(other), key))
    }
    // Another key on one side: nothing opens.
    const mismatched = ends({ diallerKey: text("another pre-shared key, as long") })
    assert.isUndefined(
      LinkCipher.open(mismatched.acceptor.receive, LinkCipher.seal(mismatched.dialler.send, text("x"))!)
    )
  })

  it("sealFrames seals each frame of a buffer in order, and refuses a buffer that is not whole frames", () => {
    const { acceptor, dialler } = ends()
    const bodies = [text("first"), new Uint8Array(0), text("third, a little longer")]
    const [plain] = Frame.encodeAll(Frame.FrameType.Data, bodies, 1024)
    const sealed = LinkCipher.sealFrames(dialler.send, plain!)!
    assert.strictEqual(sealed.length, plain!.length + bodies.length * LinkCipher.tagSize)
    const decoder = new Frame.FrameDecoder(1024)
    decoder.push(sealed)
    for (const body of bodies) {
      const content = decoder.nextContent()
      assert.instanceOf(content, Uint8Array)
      const opened = LinkCipher.open(acceptor.receive, content as Uint8Array)
      assert.isDefined(opened)
      const frame = Frame.toFrame(opened!)
      assert.strictEqual(frame.type, Frame.FrameType.Data)
      assert.isTrue(same(frame.body, body))
    }
    assert.isUndefined(decoder.nextContent())
    assert.isUndefined(LinkCipher.sealFrames(dialler.send, plain!.subarray(0, plain!.length - 1)))
    assert.isUndefined(LinkCipher.sealFrames(dialler.send, new Uint8Array(4)))
  })
})
