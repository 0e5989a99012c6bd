import { assert, describe, it } from "@effect/vitest"
import * as Frame from "@intersession/core/Framing"
import * as Crypto from "node:crypto"
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

  it("sealRecord seals a whole write as one record, which opens to the frames in order", () => {
    const { acceptor, dialler } = ends()
    const bodies = [text("first secret"), new Uint8Array(0), text("third secret, a little longer")]
    const [plain] = Frame.encodeAll(Frame.FrameType.Data, bodies, 1024)
    const record = LinkCipher.sealRecord(dialler.send, plain!)!
    // One length header and one tag for the whole write.
    assert.strictEqual(record.length, plain!.length + LinkCipher.recordOverhead)
    assert.strictEqual(Buffer.from(record).readUInt32BE(0), plain!.length + LinkCipher.tagSize)
    assert.isFalse(Buffer.from(record).includes(Buffer.from("secret")))
    assert.strictEqual(dialler.send.counter, 1, "one nonce per record, not per frame")
    // Read from the wire in chunks of 7 bytes, with the next record behind it.
    const second = LinkCipher.sealRecord(dialler.send, Frame.encode(Frame.FrameType.Ping))!
    const wire = Buffer.concat([record, second])
    const records = new Frame.FrameDecoder(plain!.length + LinkCipher.tagSize, "record")
    for (let at = 0; at < wire.length; at += 7) records.push(wire.subarray(at, at + 7))
    const sealed = records.nextContent()
    assert.instanceOf(sealed, Uint8Array)
    const opened = LinkCipher.open(acceptor.receive, sealed as Uint8Array)
    assert.isTrue(same(opened, plain!))
    const frames = new Frame.FrameDecoder(1024)
    frames.push(opened!)
    for (const body of bodies) {
      const frame = frames.next()
      assert.isDefined(frame)
      assert.notInstanceOf(frame, Frame.FrameError)
      assert.strictEqual((frame as Frame.Frame).type, Frame.FrameType.Data)
      assert.isTrue(same((frame as Frame.Frame).body, body))
    }
    assert.isUndefined(frames.next())
    const ping = LinkCipher.open(acceptor.receive, records.nextContent() as Uint8Array)
    assert.isTrue(same(ping, Frame.encode(Frame.FrameType.Ping)))
    assert.isUndefined(records.nextContent())
    // A record announcing more than the limit is refused from its header.
    const small = new Frame.FrameDecoder(16, "record")
    small.push(record.subarray(0, 4))
    const refused = small.nextContent()
    assert.instanceOf(refused, Frame.FrameError)
    assert.strictEqual((refused as Frame.FrameError).reason, "FrameTooLarge")
  })

  it("an altered, replayed or reordered record fails as a whole", () => {
    const { acceptor, dialler } = ends()
    const plain = Frame.encodeAll(Frame.FrameType.Data, [text("one"), text("two")], 1024)[0]!
    const first = LinkCipher.sealRecord(dialler.send, plain)!
    const second = LinkCipher.sealRecord(dialler.send, plain)!
    const body = (record: Uint8Array) => record.subarray(4)
    // Reordered: the second record where the first is expected.
    assert.isUndefined(LinkCipher.open(ends().acceptor.receive, body(second)))
    // Any byte after the length header changed.
    for (let at = 4; at < first.length; at++) {
      const altered = Uint8Array.from(first)
      altered[at] = altered[at]! ^ 0x01
      assert.isUndefined(LinkCipher.open(ends().acceptor.receive, body(altered)), `byte ${at}`)
    }
    assert.isTrue(same(LinkCipher.open(acceptor.receive, body(first)), plain))
    // Replayed.
    assert.isUndefined(LinkCipher.open(acceptor.receive, body(first)))
  })

  it("the drained bytes of a frame decoder are what followed its last frame", () => {
    const wire = Buffer.concat([Frame.encode(Frame.FrameType.Ready), Buffer.from([0, 0, 0, 9, 1, 2, 3])])
    for (const split of [1, 5, 6, 8, wire.length]) {
      const decoder = new Frame.FrameDecoder(1024)
      decoder.push(wire.subarray(0, split))
      decoder.push(wire.subarray(split))
      assert.strictEqual((decoder.next() as Frame.Frame).type, Frame.FrameType.Ready)
      // Begin reading the next frame's header (and, split across chunks, its body) before draining.
      assert.isUndefined(decoder.next())
      assert.isTrue(same(Buffer.concat(decoder.drain()), Uint8Array.from([0, 0, 0, 9, 1, 2, 3])), `split ${split}`)
      assert.strictEqual(decoder.pending, 0)
    }
  })
})
