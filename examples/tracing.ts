import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import * as Delivery from "@intersession/core/Delivery"
import * as ILM from "@intersession/core/ILM"
import * as PeerId from "@intersession/core/PeerId"
import * as InMemoryBackend from "@intersession/testing/InMemoryBackend"
import * as InMemoryNetwork from "@intersession/testing/InMemoryNetwork"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

const alice = PeerId.make("alice")
const bob = PeerId.make("bob")

// Every span ends up here; in production, an OTLP exporter would send them to a collector.
const exporter = new InMemorySpanExporter()
const TracingLive = NodeSdk.layer(() => ({
  resource: { serviceName: "shop" },
  spanProcessor: new SimpleSpanProcessor(exporter)
}))

const peer = (network: InMemoryNetwork.Hub, id: PeerId.PeerId) =>
  ILM.layer().pipe(
    Layer.provideMerge(Delivery.layerInbox()),
    Layer.provide(network.layer(id)),
    Layer.provide(InMemoryBackend.layerFresh)
  )

const main = Effect.gen(function*() {
  const network = yield* InMemoryNetwork.make()
  const sender = Context.get(yield* Layer.build(peer(network, alice)), ILM.ILM)
  const inbox = Context.get(yield* Layer.build(peer(network, bob)), Delivery.Inbox)

  // The message carries the trace context of the span it is sent in.
  yield* sender.send(bob, new TextEncoder().encode("order 42")).pipe(Effect.withSpan("checkout"))
  const message = yield* inbox.take
  yield* Console.log(`bob got "${new TextDecoder().decode(message.payload)}" from ${message.source}`)
  yield* sender.drain("5 seconds")

  // The spans of that message, in the order they started: names stand for ids, which change with every run.
  const spans = exporter.getFinishedSpans()
    .filter((span) => span.name === "checkout" || span.name.startsWith("intersession."))
    .sort((a, b) => a.startTime[0] - b.startTime[0] || a.startTime[1] - b.startTime[1])
  const traces = [...new Set(spans.map((span) => span.spanContext().traceId))]
  const nameOf = (spanId: string) => spans.find((span) => span.spanContext().spanId === spanId)?.name
  for (const span of spans) {
    const parent = span.parentSpanContext === undefined ? "root" : `child of ${nameOf(span.parentSpanContext.spanId)}`
    const links = span.links.map((link) => `, linked to ${nameOf(link.context.spanId)}`).join("")
    const where = span.attributes["intersession.local_peer"] ?? "app"
    const trace = traces.indexOf(span.spanContext().traceId) + 1
    yield* Console.log(`${where}: ${span.name} (trace ${trace}, ${parent}${links})`)
  }
})

Effect.runPromise(Effect.scoped(main).pipe(Effect.provide(TracingLive)))
