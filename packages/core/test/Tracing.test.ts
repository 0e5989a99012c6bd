/**
 * Tracing: under a tracer that records spans, a stored batch, a network write and a delivery batch are spans, and a
 * message sent inside a span carries that span's trace context on the wire, so the receiver's delivery of it links
 * to the span it was sent in. A message sent outside any span carries none, and Effect's built-in tracer, which
 * records nothing, gets no spans and no trace context.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Frame from "@intersession/core/Frame"
import type { PeerId } from "@intersession/core/PeerId"
import { Eventually, InMemoryNetwork, TestPeer } from "@intersession/testing"
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import { A, awaitAcknowledged, awaitReceived, B, text } from "./helpers.js"

const builtIn = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/** A tracer that keeps every span it makes (the built-in tracer's spans, which hold what they are given). */
const recordingTracer = () => {
  const spans: Array<Tracer.Span> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind, options) => {
      const span = builtIn.span(name, parent, context, links, startTime, kind, options)
      spans.push(span)
      return span
    },
    context: (f) => f()
  })
  return { tracer, spans: (name: string) => spans.filter((span) => span.name === name) }
}

/** Every `Data` frame the hub carries, decoded. */
const tapData = (hub: InMemoryNetwork.Hub) =>
  Effect.gen(function*() {
    const frames: Array<{ readonly data: Frame.Data; readonly size: number }> = []
    yield* hub.setFaults({
      dropWhen: (bytes) => {
        const decoded = Frame.decode(bytes, 1 << 20)
        if (Either.isRight(decoded) && decoded.right._tag === "Data") {
          frames.push({ data: decoded.right, size: bytes.length })
        }
        return false
      }
    })
    return (payload: string) => frames.filter((frame) => new TextDecoder().decode(frame.data.payload) === payload)
  })

const awaitLinked = (running: TestPeer.Running, peer: PeerId) =>
  Eventually.eventually(
    `${running.id} is linked to ${peer}`,
    Effect.map(running.ilm.stats, (stats) => stats.peers.some((link) => link.peer === peer && link.linked))
  )

const attribute = (span: Tracer.Span, key: string) => span.attributes.get(key)

const parentId = (span: Tracer.Span) => Option.getOrUndefined(Option.map(span.parent, (parent) => parent.spanId))

describe("tracing", () => {
  it.scoped("a send batch, a transmission and a delivery are spans; the delivery links to the sender's span", () => {
    const recorder = recordingTracer()
    return Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a)
      yield* TestPeer.start(hub, b)
      const framesOf = yield* tapData(hub)
      yield* awaitLinked(ra, B)

      const checkout = yield* Effect.withSpan(
        Effect.zipLeft(Effect.orDie(Effect.currentSpan), ra.ilm.send(B, text("traced"))),
        "checkout"
      )
      yield* awaitReceived(b, 1)
      yield* awaitAcknowledged(a)
      yield* ra.ilm.send(B, text("untraced"))
      yield* awaitReceived(b, 2)
      yield* awaitAcknowledged(a)

      // The stored batch: a child of the span `send` ran in.
      const appends = recorder.spans("intersession.append")
      const append = appends.find((span) => parentId(span) === checkout.spanId)
      assert.isDefined(append, "the batch stored on the caller's fiber is a child of its span")
      assert.strictEqual(append!.traceId, checkout.traceId)
      assert.strictEqual(attribute(append!, "intersession.messages"), 1)
      assert.strictEqual(attribute(append!, "intersession.streams"), 1)
      assert.strictEqual(attribute(append!, "intersession.peers"), 1)
      assert.strictEqual(appends.length, 2, "one span per stored batch")

      // The network writes: roots, with the peer, the frames and their bytes.
      const transmits = recorder.spans("intersession.transmit").filter((span) =>
        attribute(span, "intersession.peer") === B
      )
      assert.isAtLeast(transmits.length, 2)
      for (const span of transmits) {
        assert.isTrue(Option.isNone(span.parent), "a transmission is a root span")
        assert.strictEqual(span.kind, "producer")
        assert.strictEqual(attribute(span, "intersession.local_peer"), A)
        assert.isAtLeast(attribute(span, "intersession.frames") as number, 1)
        assert.isAbove(attribute(span, "intersession.bytes") as number, 0)
        assert.isBoolean(attribute(span, "intersession.retransmission"))
      }
      // Those that carried the traced message link to the span it was sent in; the others link to nothing.
      const linked = transmits.filter((span) => span.links.length > 0)
      assert.isNotEmpty(linked)
      for (const span of linked) {
        assert.deepStrictEqual(span.links.map((link) => link.span.spanId), [checkout.spanId])
      }
      assert.isNotEmpty(transmits.filter((span) => span.links.length === 0), "the untraced message's write")

      // The deliveries: one batch span each, and a message span, linked to `checkout`, for the traced message only.
      const delivers = recorder.spans("intersession.deliver").filter((span) =>
        attribute(span, "intersession.local_peer") === B
      )
      assert.deepStrictEqual(
        delivers.map((span) => [
          attribute(span, "intersession.peer"),
          attribute(span, "intersession.lane"),
          attribute(span, "intersession.seq.first"),
          attribute(span, "intersession.seq.last"),
          attribute(span, "intersession.messages")
        ]),
        [[A, "default", 1, 1, 1], [A, "default", 2, 2, 1]]
      )
      const messages = recorder.spans("intersession.deliver.message")
      assert.strictEqual(messages.length, 1, "only the message sent in a span gets a span of its own")
      const message = messages[0]!
      assert.strictEqual(parentId(message), delivers[0]!.spanId, "the message span is inside its batch's span")
      assert.strictEqual(attribute(message, "intersession.seq"), 1)
      assert.deepStrictEqual(
        message.links.map((link) => [link.span.traceId, link.span.spanId, link.span.sampled]),
        [[checkout.traceId, checkout.spanId, true]]
      )

      // On the wire: the traced message carries the span's context, the other none, and is 25 bytes smaller.
      const [traced] = framesOf("traced")
      const [untraced] = framesOf("untraced")
      assert.deepStrictEqual(traced?.data.trace, { traceId: checkout.traceId, spanId: checkout.spanId, sampled: true })
      assert.isUndefined(untraced?.data.trace)
      assert.strictEqual(traced!.size - untraced!.size, 25 - 2, "24 bytes of ids and a flags byte; payloads differ")
    }).pipe(Effect.withTracer(recorder.tracer))
  })

  it.scoped("a message stored while its peer is away still carries its trace context when it is sent", () => {
    const recorder = recordingTracer()
    return Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a)
      yield* hub.partition(A, B)
      const sent = yield* Effect.withSpan(
        Effect.zipLeft(Effect.orDie(Effect.currentSpan), ra.ilm.sendAll(B, [text("one"), text("two")])),
        "batch job"
      )
      yield* TestPeer.start(hub, b)
      yield* hub.heal(A, B)
      yield* awaitReceived(b, 2)
      const links = recorder.spans("intersession.deliver.message").map((span) =>
        span.links.map((link) => link.span.spanId)
      )
      assert.deepStrictEqual(links, [[sent.spanId], [sent.spanId]])
    }).pipe(Effect.withTracer(recorder.tracer))
  })

  it.scoped("under Effect's built-in tracer, which records nothing, a message carries no trace context", () =>
    Effect.gen(function*() {
      const hub = yield* InMemoryNetwork.make()
      const a = yield* TestPeer.make(A)
      const b = yield* TestPeer.make(B)
      const ra = yield* TestPeer.start(hub, a)
      yield* TestPeer.start(hub, b)
      const framesOf = yield* tapData(hub)
      yield* Effect.withSpan(ra.ilm.send(B, text("in a span")), "checkout")
      yield* awaitReceived(b, 1)
      const frames = framesOf("in a span")
      assert.isNotEmpty(frames)
      for (const frame of frames) assert.isUndefined(frame.data.trace)
    }))
})
